//! Push profiles: the request and completion shapes of platforms whose handler
//! services already exist, so such a service runs behind Courier unchanged. A type
//! picks one with `http.profile` in its `--config` file.
//!
//! | profile | the request adds | a synchronous answer | a later completion (`:complete`) |
//! |---|---|---|---|
//! | `courier` (default) | nothing | the body is the result | `{"result"}` or `{"error"}` |
//! | `ouro` | `ouro-webhook-url` (the operation's `:complete` URL), `ouro-webhook-token`, `ouro-action-id` (the command id), `ouro-route-id` (the type) | the body is the result | also Ouro's `{status, ouro_action_id, response}`, the token in `ouro-webhook-token` |
//! | `runpod` | the body becomes RunPod's job request `{id, input, webhook}`, `webhook` the `:complete` URL with `?token=` | RunPod's status body: `COMPLETED` gives `output`, `FAILED` its `error`, `IN_QUEUE`/`IN_PROGRESS` is the hand-off | also RunPod's status body; `IN_PROGRESS` renews the lease |
//!
//! Every profile keeps the CloudEvents and `courier-*` headers: a service may read
//! either. The gateway accepts the token from `Authorization: Bearer`,
//! `ouro-webhook-token` or `?token=` for any type; it is the same capability.

use serde_json::{json, Value};

use super::HandlerError;
use crate::envelope::{ErrorInfo, State};

/// The header an Ouro service finds its callback token in, and sends it back in.
pub const OURO_WEBHOOK_TOKEN: &str = "ouro-webhook-token";

/// The shape of one push type's requests and completions (see the module's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PushProfile {
    /// CloudEvents binary mode, the payload as the body.
    #[default]
    Courier,
    /// Ouro's long-running routes.
    Ouro,
    /// RunPod's serverless job request and status body.
    Runpod,
}

impl PushProfile {
    /// The profile named `name` in a config file.
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "courier" => Some(PushProfile::Courier),
            "ouro" => Some(PushProfile::Ouro),
            "runpod" => Some(PushProfile::Runpod),
            _ => None,
        }
    }

    /// Where a handler of this profile posts its completion: the operation's URL
    /// with `:complete` (and, for RunPod, whose webhooks carry no header, the token
    /// in the query).
    pub fn webhook(self, operation_url: &str, token: &str) -> String {
        match self {
            PushProfile::Runpod => format!("{operation_url}:complete?token={token}"),
            _ => format!("{operation_url}:complete"),
        }
    }

    /// The profile's own request headers, from the callback URL and token (when the
    /// deployment has a `callbacks` block).
    pub fn headers(self, command_id: uuid::Uuid, command_type: &str, callback: Option<(&str, &str)>) -> Vec<(&'static str, String)> {
        match self {
            PushProfile::Ouro => {
                let mut headers = vec![("ouro-action-id", command_id.to_string()), ("ouro-route-id", command_type.to_string())];
                if let Some((url, token)) = callback {
                    headers.push(("ouro-webhook-url", self.webhook(url, token)));
                    headers.push((OURO_WEBHOOK_TOKEN, token.to_string()));
                }
                headers
            }
            _ => Vec::new(),
        }
    }

    /// The request body for `input`.
    pub fn body(self, command_id: uuid::Uuid, input: &Value, callback: Option<(&str, &str)>) -> Value {
        match self {
            PushProfile::Runpod => {
                let mut job = json!({ "id": command_id, "input": input });
                if let Some((url, token)) = callback {
                    job["webhook"] = Value::String(self.webhook(url, token));
                }
                job
            }
            _ => input.clone(),
        }
    }

    /// A successful synchronous answer's meaning: `Ok(Some(result))`, `Ok(None)`
    /// for a hand-off, or a failure the body reports.
    pub fn answer(self, body: Value) -> Result<Option<Value>, HandlerError> {
        if self != PushProfile::Runpod {
            return Ok(Some(body));
        }
        match runpod_status(&body) {
            None => Ok(Some(body)),
            Some(Reported::Working) => Ok(None),
            Some(Reported::Ended { state: State::Completed, result, .. }) => Ok(Some(result.unwrap_or(Value::Null))),
            Some(Reported::Ended { error, .. }) => {
                let e = error.unwrap_or_else(|| ErrorInfo { code: "handler_failed".into(), message: String::new(), retryable: false });
                Err(if e.retryable { HandlerError::retryable(e.code, e.message) } else { HandlerError::permanent(e.code, e.message) })
            }
        }
    }

    /// A completion body in this profile's own shape, when it is one (`None`: read
    /// it as Courier's `{"result"}`/`{"error"}`). `Err` names what is wrong with it.
    pub fn completion(self, command_id: uuid::Uuid, body: &Value) -> Option<Result<Reported, String>> {
        match self {
            PushProfile::Courier => None,
            PushProfile::Ouro => body.get("status").map(|_| ouro_completion(command_id, body)),
            PushProfile::Runpod => body.get("status").map(|_| runpod_status(body).ok_or_else(|| "status is not one of RunPod's".to_string())),
        }
    }
}

/// What a handler reported in a platform's shape.
#[derive(Debug, Clone, PartialEq)]
pub enum Reported {
    /// Still working: the lease is renewed.
    Working,
    /// Done: a final state (`completed` with its result, else `failed` with an error).
    Ended { state: State, result: Option<Value>, error: Option<ErrorInfo> },
}

fn failed(code: &str, message: String, retryable: bool) -> Reported {
    let message = crate::envelope::bounds::truncate(&message, crate::envelope::bounds::MAX_MESSAGE_ECHO).to_string();
    Reported::Ended { state: State::Failed, result: None, error: Some(ErrorInfo { code: code.into(), message, retryable }) }
}

/// Text of an error that may be a string, an object with a message, or anything.
fn message_of(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.get("message").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| v.to_string()),
    }
}

/// RunPod's status body: `{id?, status, output?, error?}`.
fn runpod_status(body: &Value) -> Option<Reported> {
    let status = body.get("status")?.as_str()?;
    Some(match status {
        "COMPLETED" => Reported::Ended { state: State::Completed, result: Some(body.get("output").cloned().unwrap_or(Value::Null)), error: None },
        "IN_QUEUE" | "IN_PROGRESS" => Reported::Working,
        "FAILED" => failed("handler_failed", message_of(body.get("error")), false),
        "CANCELLED" => failed("handler_cancelled", message_of(body.get("error")), false),
        "TIMED_OUT" => failed("handler_timed_out", message_of(body.get("error")), true),
        _ => return None,
    })
}

/// Ouro's completion body: `{status, ouro_action_id?, response?}`; a `success`
/// status completes with `response` as the result, any other fails.
fn ouro_completion(command_id: uuid::Uuid, body: &Value) -> Result<Reported, String> {
    let status = body.get("status").and_then(Value::as_str).ok_or("status must be a text such as \"success\"")?;
    if let Some(action) = body.get("ouro_action_id") {
        if action.as_str() != Some(command_id.to_string().as_str()) {
            return Err("ouro_action_id is another operation's".into());
        }
    }
    let response = body.get("response");
    Ok(match status {
        "success" | "succeeded" | "completed" | "complete" => Reported::Ended { state: State::Completed, result: Some(response.cloned().unwrap_or(Value::Null)), error: None },
        "in_progress" | "running" | "pending" => Reported::Working,
        other => {
            let error = response.and_then(|r| r.get("error")).or(response);
            let code = error.and_then(|e| e.get("code")).and_then(Value::as_str).filter(|c| !c.is_empty() && c.len() <= 256);
            let code = code.map(str::to_string).unwrap_or_else(|| format!("ouro_{}", other.chars().filter(char::is_ascii_alphanumeric).take(32).collect::<String>()));
            failed(&code, message_of(error), false)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ouro_adds_its_headers_and_posts_back_to_the_complete_url() {
        let id = uuid::Uuid::now_v7();
        let h = PushProfile::Ouro.headers(id, "resize", Some(("http://gw/v1/operations/x", "tok")));
        let get = |n: &str| h.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("ouro-webhook-url"), Some("http://gw/v1/operations/x:complete"));
        assert_eq!(get("ouro-webhook-token"), Some("tok"));
        assert_eq!(get("ouro-action-id"), Some(id.to_string().as_str()));
        assert_eq!(get("ouro-route-id"), Some("resize"));
        assert!(PushProfile::Courier.headers(id, "resize", Some(("u", "t"))).is_empty());
        assert_eq!(PushProfile::Ouro.body(id, &json!({"a": 1}), None), json!({"a": 1}));
    }

    #[test]
    fn ouro_completions_succeed_or_fail_and_must_name_their_own_action() {
        let id = uuid::Uuid::now_v7();
        let done = PushProfile::Ouro.completion(id, &json!({"status": "success", "ouro_action_id": id, "response": {"url": "s3://x"}})).unwrap().unwrap();
        assert_eq!(done, Reported::Ended { state: State::Completed, result: Some(json!({"url": "s3://x"})), error: None });
        let Reported::Ended { state, error: Some(e), .. } = PushProfile::Ouro.completion(id, &json!({"status": "error", "response": {"error": {"code": "gpu_oom", "message": "no memory"}}})).unwrap().unwrap() else { panic!() };
        assert_eq!((state, e.code.as_str(), e.message.as_str()), (State::Failed, "gpu_oom", "no memory"));
        let Reported::Ended { error: Some(e), .. } = PushProfile::Ouro.completion(id, &json!({"status": "failed", "response": "disk full"})).unwrap().unwrap() else { panic!() };
        assert_eq!((e.code.as_str(), e.message.as_str()), ("ouro_failed", "disk full"));
        assert!(PushProfile::Ouro.completion(id, &json!({"status": "success", "ouro_action_id": uuid::Uuid::now_v7()})).unwrap().is_err());
        assert!(PushProfile::Ouro.completion(id, &json!({"result": 1})).is_none(), "Courier's own shape is read as such");
        assert!(PushProfile::Courier.completion(id, &json!({"status": "success"})).is_none());
    }

    #[test]
    fn runpod_wraps_the_input_and_reads_its_status_bodies() {
        let id = uuid::Uuid::now_v7();
        let job = PushProfile::Runpod.body(id, &json!({"prompt": "a cat"}), Some(("http://gw/v1/operations/x", "tok")));
        assert_eq!(job, json!({"id": id, "input": {"prompt": "a cat"}, "webhook": "http://gw/v1/operations/x:complete?token=tok"}));
        assert_eq!(PushProfile::Runpod.answer(json!({"id": "j", "status": "COMPLETED", "output": [1]})).unwrap(), Some(json!([1])));
        assert_eq!(PushProfile::Runpod.answer(json!({"id": "j", "status": "IN_QUEUE"})).unwrap(), None, "the job runs on: a hand-off");
        let e = PushProfile::Runpod.answer(json!({"status": "FAILED", "error": "CUDA error"})).unwrap_err();
        assert_eq!((e.code.as_str(), e.message.as_str(), e.retryable), ("handler_failed", "CUDA error", false));
        assert!(PushProfile::Runpod.answer(json!({"status": "TIMED_OUT"})).unwrap_err().retryable);
        assert_eq!(PushProfile::Runpod.answer(json!({"plain": true})).unwrap(), Some(json!({"plain": true})), "no status: the body is the result");
        assert_eq!(PushProfile::Runpod.completion(id, &json!({"status": "IN_PROGRESS"})).unwrap().unwrap(), Reported::Working);
        assert!(PushProfile::Runpod.completion(id, &json!({"status": "DONE"})).unwrap().is_err());
    }
}
