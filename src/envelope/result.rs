//! Result events: what happened to a command.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::bounds::{echo_header, truncate, KeyEcho, MAX_MESSAGE_ECHO, MAX_NAME_ECHO};
use super::headers::{header_names as h, DecodeError, HeaderMap};
use super::{event_headers, new_id, RESULT_TYPE_PREFIX};

/// The life cycle of a command. The last four are final: exactly one of them ends every
/// command that was not dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Queued,
    Started,
    Progress,
    Completed,
    Failed,
    Cancelled,
    TimedOut,
}

impl State {
    pub fn is_final(self) -> bool {
        matches!(self, State::Completed | State::Failed | State::Cancelled | State::TimedOut)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Started => "started",
            State::Progress => "progress",
            State::Completed => "completed",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
            State::TimedOut => "timed_out",
        }
    }

    /// The CloudEvents type of an event in this state, e.g. `courier.command.completed`.
    pub fn event_type(self) -> String {
        format!("{RESULT_TYPE_PREFIX}{}", self.as_str())
    }

    /// The state named by a CloudEvents type such as `courier.command.completed`.
    pub fn from_event_type(t: &str) -> Option<State> {
        let s = t.strip_prefix(RESULT_TYPE_PREFIX)?;
        serde_json::from_value(Value::String(s.to_string())).ok()
    }
}

/// Whether a record is a final result event, from its last `ce_type` header, read in
/// place: for readers that pass over every other record (the webhook dispatcher, the
/// bench) and should not copy headers to find out.
pub fn is_final_record<H: super::headers::KafkaHeaders + ?Sized>(headers: Option<&H>) -> bool {
    super::headers::last_kafka_header(headers, h::TYPE)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(State::from_event_type)
        .is_some_and(State::is_final)
}

/// Why a command failed, in a form a caller can branch on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorInfo {
    /// Stable machine-readable code, e.g. `invalid_payload`, `handler_panic`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// Whether trying again later could succeed.
    pub retryable: bool,
}

impl ErrorInfo {
    /// The same error with code and message cut to their echo bounds: a handler's or
    /// a parser's message can be as long as the input that caused it.
    pub fn bounded(self) -> Self {
        ErrorInfo { code: truncate(&self.code, MAX_NAME_ECHO), message: truncate(&self.message, MAX_MESSAGE_ECHO), retryable: self.retryable }
    }
}

/// A handler's report of how far it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Progress {
    /// 0 to 100.
    pub percent: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Where the time went, so callers can tell a slow queue from a slow handler.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Timing {
    /// From submission (`ce_time`) to the worker picking it up.
    pub queued_ms: u64,
    /// Time spent in the handler.
    pub execution_ms: u64,
    /// Attempts so far, including this one.
    pub attempts: u32,
}

/// The JSON value of a result event record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResultData {
    pub command_id: Uuid,
    pub command_type: String,
    pub state: State,
    /// The command's key, if it had one and it is UTF-8 (up to 1 KiB; the record key
    /// always carries it whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The command's key in standard base64, instead of `key`, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_base64: Option<String>,
    /// The handler's output; present on `completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Present on `failed`, `cancelled` and `timed_out`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// Present on `progress`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    pub timing: Timing,
    /// The worker that produced this event.
    #[serde(default)]
    pub worker: String,
}

/// One record of the results topic: CloudEvents attributes plus [`ResultData`].
#[derive(Debug, Clone, PartialEq)]
pub struct ResultEvent {
    /// `ce_id`: unique per event; consumers dedupe on it.
    pub id: Uuid,
    pub source: String,
    pub time: DateTime<Utc>,
    pub data: ResultData,
    /// The Kafka key, copied byte for byte from the command.
    pub key: Vec<u8>,
    /// Spring's correlation id, echoed from the command.
    pub correlation_id: Option<Vec<u8>>,
    /// Trace context, propagated from the command.
    pub traceparent: Option<String>,
    /// `ce_couriertenant`, echoed from the command.
    pub tenant: Option<String>,
    /// `ce_callbackurl`, echoed from the command on final events: where the webhook
    /// dispatcher POSTs the outcome, with no lookup.
    pub callback_url: Option<String>,
    /// Whether its writer echoes callback URLs on final events (envelope 1.1 and
    /// later; so are events made here): a final event without one then means the
    /// command had none. An older writer's events say nothing about it.
    pub callback_echoed: bool,
}

impl ResultEvent {
    pub fn new(key: Vec<u8>, source: &str, data: ResultData) -> Self {
        ResultEvent {
            id: new_id(),
            source: source.to_string(),
            time: Utc::now(),
            data,
            key,
            correlation_id: None,
            traceparent: None,
            tenant: None,
            callback_url: None,
            callback_echoed: true,
        }
    }

    /// An event about `command` from `worker`: keyed like the command and carrying its
    /// correlation id and trace context, so every consumer can match it to the request.
    /// What it echoes of the command is bounded ([`super::bounds`]).
    pub fn about(command: &super::Command, source: &str, worker: &str, state: State, result: Option<Value>, error: Option<ErrorInfo>, timing: Timing) -> Self {
        let echo = KeyEcho::of(command.key.as_deref());
        let data = ResultData {
            command_id: command.id,
            command_type: truncate(&command.command_type, MAX_NAME_ECHO),
            state,
            key: echo.text,
            key_base64: echo.base64,
            result,
            error: error.map(ErrorInfo::bounded),
            progress: None,
            timing,
            worker: worker.to_string(),
        };
        let mut ev = ResultEvent::new(command.partition_key(), source, data);
        ev.correlation_id = echo_header(command.correlation_id.clone());
        ev.traceparent = echo_header(command.traceparent.clone());
        ev.tenant = echo_header(command.tenant.clone());
        // Whole, never cut (a URL cut short would be called), and only one the
        // dispatcher could call: over `MAX_URL_BYTES` it is refused anyway, and left
        // out here so it cannot make the final event too large to publish.
        let callable = command.callback_url.clone().filter(|u| u.len() <= crate::urlpolicy::MAX_URL_BYTES);
        ev.callback_url = if state.is_final() { callable } else { None };
        ev
    }

    /// The key's bytes as the JSON shows them (`key` or `key_base64`).
    pub fn shown_key(&self) -> Option<Vec<u8>> {
        KeyEcho::bytes(self.data.key.as_deref(), self.data.key_base64.as_deref())
    }

    pub fn state(&self) -> State {
        self.data.state
    }

    pub fn command_id(&self) -> Uuid {
        self.data.command_id
    }

    /// Encodes this event as (key, value, headers) for the results topic.
    pub fn encode(&self) -> (Vec<u8>, Vec<u8>, HeaderMap) {
        let mut headers = event_headers(self.id, &self.source, &self.data.state.event_type(), self.time, self.data.command_id);
        if let Some(tp) = &self.traceparent {
            headers.insert(h::TRACEPARENT, tp.as_str());
        }
        if let Some(c) = &self.correlation_id {
            headers.insert(h::SPRING_CORRELATION_ID, c.clone());
        }
        if let Some(t) = &self.tenant {
            headers.insert(h::TENANT, t.as_str());
        }
        if let Some(url) = &self.callback_url {
            headers.insert(h::CALLBACK_URL, url.as_str());
        }
        let value = super::json_bytes(&self.data);
        (self.key.clone(), value, headers)
    }

    /// Decodes a result event; never panics on any input.
    pub fn decode(key: Option<&[u8]>, value: Option<&[u8]>, headers: &HeaderMap) -> Result<Self, DecodeError> {
        let ty = headers.require(h::TYPE)?;
        let state = State::from_event_type(ty)
            .ok_or_else(|| DecodeError::BadHeader { name: h::TYPE, reason: format!("{ty:?} is not a result type") })?;
        let id = Uuid::parse_str(headers.require(h::ID)?)
            .map_err(|e| DecodeError::BadHeader { name: h::ID, reason: e.to_string() })?;
        let bytes = value.filter(|v| !v.is_empty()).ok_or(DecodeError::EmptyValue)?;
        let data: ResultData = serde_json::from_slice(bytes).map_err(|e| DecodeError::NotJson(e.to_string()))?;
        if data.state != state {
            return Err(DecodeError::BadHeader { name: h::TYPE, reason: "disagrees with data.state".into() });
        }
        let time = headers
            .get_str(h::TIME)?
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(Utc::now);
        Ok(ResultEvent {
            id,
            source: headers.get_str(h::SOURCE)?.unwrap_or_default().to_string(),
            time,
            data,
            key: key.map(<[u8]>::to_vec).unwrap_or_default(),
            correlation_id: headers.get(h::SPRING_CORRELATION_ID).map(<[u8]>::to_vec),
            traceparent: headers.get_str(h::TRACEPARENT)?.map(str::to_string),
            tenant: headers.get_str(h::TENANT)?.map(str::to_string),
            callback_url: headers.get_str(h::CALLBACK_URL)?.map(str::to_string),
            callback_echoed: echoes_callbacks(headers.get_str(h::VERSION)?),
        })
    }
}

/// Whether an event of this `ce_courierversion` echoes callback URLs on final
/// events: 1.1 and later of major 1 (see [`super::ENVELOPE_VERSION`]).
fn echoes_callbacks(version: Option<&str>) -> bool {
    let Some((major, minor)) = version.and_then(|v| v.split_once('.')) else { return false };
    let minor = minor.split('.').next().and_then(|m| m.parse::<u32>().ok());
    major == "1" && minor.is_some_and(|m| m >= 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn callback_urls_ride_on_final_events_only() {
        let mut command = crate::envelope::NewCommand::new("t", json!({})).callback_url("https://h/cb?x=1").into_command("//t");
        for (state, url) in [(State::Started, None), (State::Progress, None), (State::Completed, Some("https://h/cb?x=1")), (State::TimedOut, Some("https://h/cb?x=1"))] {
            let (key, value, headers) = ResultEvent::about(&command, "//w", "w", state, None, None, Timing::default()).encode();
            let back = ResultEvent::decode(Some(&key), Some(&value), &headers).expect("decodes");
            assert_eq!((back.callback_url.as_deref(), back.callback_echoed), (url, true), "{state:?}");
        }
        command.callback_url = Some(format!("https://h/{}", "a".repeat(crate::urlpolicy::MAX_URL_BYTES)));
        let too_long = ResultEvent::about(&command, "//w", "w", State::Completed, None, None, Timing::default());
        assert_eq!(too_long.callback_url, None, "a URL no dispatcher would call is not copied");
        command.callback_url = None;
        let (key, value, mut headers) = ResultEvent::about(&command, "//w", "w", State::Failed, None, None, Timing::default()).encode();
        let back = ResultEvent::decode(Some(&key), Some(&value), &headers).expect("decodes");
        assert_eq!((back.callback_url, back.callback_echoed), (None, true), "1.1 without one: the command had none");
        for (version, echoed) in [("1.0", false), ("", false), ("1.2", true), ("1.10.3", true), ("2.1", false), ("x", false)] {
            headers.set(h::VERSION, version);
            let back = ResultEvent::decode(Some(&key), Some(&value), &headers).expect("decodes");
            assert_eq!(back.callback_echoed, echoed, "{version:?}");
        }
        assert!(!echoes_callbacks(None), "no version: an older writer");
    }

    #[test]
    fn round_trip() {
        let data = ResultData {
            command_id: new_id(),
            command_type: "t".into(),
            state: State::TimedOut,
            key: Some("k".into()),
            key_base64: None,
            result: None,
            error: Some(ErrorInfo { code: "deadline".into(), message: "late".into(), retryable: false }),
            progress: None,
            timing: Timing { queued_ms: 1, execution_ms: 2, attempts: 1 },
            worker: "w".into(),
        };
        let ev = ResultEvent::new("k".into(), "//w", data);
        let (key, value, headers) = ev.encode();
        assert_eq!(headers.get_str(h::TYPE).unwrap(), Some("courier.command.timed_out"));
        let back = ResultEvent::decode(Some(&key), Some(&value), &headers).unwrap();
        assert_eq!(back.data, ev.data);
        assert_eq!(back.id, ev.id);
        assert!(back.state().is_final());
        let _ = json!(null);
    }
}
