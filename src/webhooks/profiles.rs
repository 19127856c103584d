//! Payload profiles: the body a receiver gets, in the shape it already understands.
//!
//! The same final event can be posted as a CloudEvent (the default: structured-mode
//! JSON, so any CloudEvents SDK reads it), or in the shape of a platform whose
//! receivers are already written: Ouro, RunPod, or a minimal job-status object. The
//! profile is a dispatcher setting; the signature headers are the same for all.

use serde_json::{json, Value};

use crate::envelope::{rfc3339, ResultEvent, State, CONTENT_TYPE, SPEC_VERSION};

/// Header carrying the configured token for the `ouro` profile: the one an Ouro
/// service also sends its callback token in (one name for both directions).
pub use crate::router::push::OURO_WEBHOOK_TOKEN as OURO_TOKEN_HEADER;

/// Which body shape to post.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Profile {
    /// CloudEvents 1.0 structured mode: `{specversion, id, source, type, subject,
    /// time, datacontenttype, data}`, `content-type: application/cloudevents+json`.
    #[default]
    Cloudevents,
    /// `{status, ouro_action_id, ouro_route_id, response}` plus the
    /// `ouro-webhook-token` header.
    Ouro,
    /// RunPod's job webhook: `{id, status, delayTime, executionTime, output}`.
    Runpod,
    /// `{job_id, status, timestamp, result | error}`.
    Simple,
}

impl Profile {
    /// The `content-type` of a body in this profile.
    pub fn content_type(self) -> &'static str {
        match self {
            Profile::Cloudevents => "application/cloudevents+json",
            _ => CONTENT_TYPE,
        }
    }

    /// The body for a final event.
    pub fn body(self, event: &ResultEvent) -> Value {
        match self {
            Profile::Cloudevents => cloudevent(event),
            Profile::Ouro => ouro(event),
            Profile::Runpod => runpod(event),
            Profile::Simple => simple(event),
        }
    }
}

fn cloudevent(event: &ResultEvent) -> Value {
    json!({
        "specversion": SPEC_VERSION,
        "id": event.id,
        "source": event.source,
        "type": event.state().event_type(),
        "subject": event.command_id(),
        "time": rfc3339(event.time),
        "datacontenttype": CONTENT_TYPE,
        "data": event.data,
    })
}

/// The handler's output when it completed, else the error object.
fn output_or_error(event: &ResultEvent) -> Value {
    match (&event.data.result, &event.data.error) {
        (Some(result), _) => result.clone(),
        (None, Some(error)) => json!({ "error": error }),
        (None, None) => Value::Null,
    }
}

fn ouro(event: &ResultEvent) -> Value {
    let status = match event.state() {
        State::Completed => "success",
        other => other.as_str(),
    };
    json!({
        "status": status,
        "ouro_action_id": event.command_id(),
        "ouro_route_id": event.data.command_type,
        "response": output_or_error(event),
    })
}

fn runpod(event: &ResultEvent) -> Value {
    let status = match event.state() {
        State::Completed => "COMPLETED",
        State::Cancelled => "CANCELLED",
        State::TimedOut => "TIMED_OUT",
        _ => "FAILED",
    };
    let mut body = json!({
        "id": event.command_id(),
        "status": status,
        "delayTime": event.data.timing.queued_ms,
        "executionTime": event.data.timing.execution_ms,
    });
    match (&event.data.result, &event.data.error) {
        (Some(output), _) => body["output"] = output.clone(),
        (None, Some(error)) => body["error"] = Value::String(error.message.clone()),
        (None, None) => {}
    }
    body
}

fn simple(event: &ResultEvent) -> Value {
    let mut body = json!({
        "job_id": event.command_id(),
        "status": event.state().as_str(),
        "timestamp": rfc3339(event.time),
    });
    match (&event.data.result, &event.data.error) {
        (Some(result), _) => body["result"] = result.clone(),
        (None, Some(error)) => body["error"] = json!(error),
        (None, None) => {}
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{ErrorInfo, ResultData, Timing};

    fn event(state: State) -> ResultEvent {
        let (result, error) = match state {
            State::Completed => (Some(json!({"n": 1})), None),
            _ => (None, Some(ErrorInfo { code: "boom".into(), message: "it broke".into(), retryable: false })),
        };
        let data = ResultData {
            command_id: uuid::Uuid::now_v7(),
            command_type: "echo".into(),
            state,
            key: None,
            key_base64: None,
            result,
            error,
            progress: None,
            timing: Timing { queued_ms: 7, execution_ms: 11, attempts: 1 },
            worker: "w".into(),
        };
        ResultEvent::new("k".into(), "//courier/worker/w", data)
    }

    fn keys(v: &Value) -> Vec<&str> {
        let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        k.sort_unstable();
        k
    }

    #[test]
    fn cloudevents_is_structured_mode() {
        let ev = event(State::Completed);
        let body = Profile::Cloudevents.body(&ev);
        assert_eq!(keys(&body), ["data", "datacontenttype", "id", "source", "specversion", "subject", "time", "type"]);
        assert_eq!(body["type"], "courier.command.completed");
        assert_eq!(body["id"], ev.id.to_string());
        assert_eq!(body["subject"], ev.command_id().to_string());
        assert_eq!(body["data"]["result"], json!({"n": 1}));
        assert_eq!(Profile::Cloudevents.content_type(), "application/cloudevents+json");
    }

    #[test]
    fn ouro_names_action_route_and_response() {
        let ev = event(State::Completed);
        let body = Profile::Ouro.body(&ev);
        assert_eq!(keys(&body), ["ouro_action_id", "ouro_route_id", "response", "status"]);
        assert_eq!((body["status"].as_str(), body["ouro_route_id"].as_str()), (Some("success"), Some("echo")));
        assert_eq!(body["response"], json!({"n": 1}));
        let failed = Profile::Ouro.body(&event(State::Failed));
        assert_eq!(failed["status"], "failed");
        assert_eq!(failed["response"]["error"]["code"], "boom");
    }

    #[test]
    fn runpod_uses_its_status_words_and_timings() {
        let body = Profile::Runpod.body(&event(State::Completed));
        assert_eq!(keys(&body), ["delayTime", "executionTime", "id", "output", "status"]);
        assert_eq!((body["status"].as_str(), body["delayTime"].as_u64(), body["executionTime"].as_u64()), (Some("COMPLETED"), Some(7), Some(11)));
        for (state, word) in [(State::Failed, "FAILED"), (State::Cancelled, "CANCELLED"), (State::TimedOut, "TIMED_OUT")] {
            let body = Profile::Runpod.body(&event(state));
            assert_eq!(body["status"], word);
            assert_eq!(body["error"], "it broke");
        }
    }

    #[test]
    fn simple_has_result_or_error() {
        let ok = Profile::Simple.body(&event(State::Completed));
        assert_eq!(keys(&ok), ["job_id", "result", "status", "timestamp"]);
        let timed_out = Profile::Simple.body(&event(State::TimedOut));
        assert_eq!(keys(&timed_out), ["error", "job_id", "status", "timestamp"]);
        assert_eq!(timed_out["status"], "timed_out");
    }
}
