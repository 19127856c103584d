//! How a command looks over HTTP: a long-running operation in the shape of Google's
//! AIP-151 (`name`, `metadata`, `done`, then `response` or `error`).
//!
//! The shape is borrowed rather than invented because generic LRO clients (Google's
//! own libraries, Terraform providers, hand-written pollers) already know it: poll
//! `name` until `done`, then read `response` or `error`. The error is a
//! `google.rpc.Status`: a canonical code a client can branch on without knowing
//! Courier, and Courier's own code in `details`.

use serde::Serialize;
use serde_json::{json, Value};

use crate::envelope::{rfc3339, ErrorInfo, OperationSnapshot, Reason, State};

/// `google.rpc.Code` values Courier maps its outcomes to.
pub mod rpc_code {
    pub const CANCELLED: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const DEADLINE_EXCEEDED: i32 = 4;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
}

/// An operation resource, as `GET /v1/operations/{id}` returns it.
#[derive(Debug, Clone, Serialize)]
pub struct Operation {
    /// `operations/{command id}`.
    pub name: String,
    pub metadata: Metadata,
    pub done: bool,
    /// The handler's result; present when the command completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<Value>,
    /// Present when the command failed, was cancelled or timed out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcStatus>,
}

/// Where the operation is; the AIP leaves `metadata` to the service.
#[derive(Debug, Clone, Serialize)]
pub struct Metadata {
    #[serde(rename = "type")]
    pub command_type: String,
    /// Courier's state: `queued`, `started`, `progress`, `completed`, `failed`, ...
    pub state: &'static str,
    pub progress_percent: Option<f32>,
    pub progress_message: Option<String>,
    pub attempt: u32,
    pub created: String,
    pub updated: String,
    pub queued_ms: u64,
    pub execution_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A key that is not UTF-8, in standard base64 (as on the status topic).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
}

/// `google.rpc.Status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RpcStatus {
    pub code: i32,
    pub message: String,
    pub details: Vec<Value>,
}

impl Operation {
    pub fn from_snapshot(s: &OperationSnapshot) -> Self {
        let done = s.state.is_final();
        let progress_percent = match s.state {
            State::Completed => Some(100.0),
            _ => s.progress.as_ref().map(|p| p.percent),
        };
        Operation {
            name: format!("operations/{}", s.command_id),
            metadata: Metadata {
                command_type: s.command_type.clone(),
                state: s.state.as_str(),
                progress_percent,
                progress_message: s.progress.as_ref().and_then(|p| p.message.clone()),
                attempt: s.attempt,
                created: rfc3339(s.created),
                updated: rfc3339(s.updated),
                queued_ms: s.timing.queued_ms,
                execution_ms: s.timing.execution_ms,
                // Workers read the record key back, which is the id when none was given.
                key: s.key.clone().filter(|k| *k != s.command_id.to_string()),
                key_base64: s.key_base64.clone(),
                batch_id: s.batch_id.clone(),
            },
            done,
            response: (s.state == State::Completed).then(|| s.result.clone().unwrap_or(Value::Null)),
            error: if done { rpc_status(s.state, s.error.as_ref()) } else { None },
        }
    }
}

/// The `google.rpc.Status` of a finished command; `None` when it completed.
pub fn rpc_status(state: State, error: Option<&ErrorInfo>) -> Option<RpcStatus> {
    if state == State::Completed {
        return None;
    }
    let fallback = |code: &str, message: &str| ErrorInfo { code: code.into(), message: message.into(), retryable: false };
    let info = match (state, error) {
        (_, Some(e)) => e.clone(),
        (State::Cancelled, None) => fallback("cancelled", "cancelled"),
        (State::TimedOut, None) => fallback("deadline_exceeded", "deadline exceeded"),
        (_, None) => fallback("unknown", "failed"),
    };
    let code = match state {
        State::Cancelled => rpc_code::CANCELLED,
        State::TimedOut => rpc_code::DEADLINE_EXCEEDED,
        _ => code_for_failure(&info),
    };
    let details = vec![json!({
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": info.code,
        "domain": "courier",
        "metadata": { "retryable": info.retryable.to_string() },
    })];
    Some(RpcStatus { code, message: info.message, details })
}

/// A `failed` command's canonical code, from Courier's error code (the worker's
/// reason codes, or a handler's own code, which maps to UNKNOWN).
fn code_for_failure(info: &ErrorInfo) -> i32 {
    match (info.code.as_str(), Reason::from_code(&info.code)) {
        ("cancelled", _) => rpc_code::CANCELLED,
        ("deadline_exceeded", _) => rpc_code::DEADLINE_EXCEEDED,
        // A handler's own typed-input failure (older workers) reads like a schema violation.
        ("invalid_payload", _) => rpc_code::INVALID_ARGUMENT,
        (_, Some(r)) if r.is_bad_input() => rpc_code::INVALID_ARGUMENT,
        (_, Some(Reason::UnknownType | Reason::UnsupportedVersion)) => rpc_code::UNIMPLEMENTED,
        (_, Some(Reason::HandlerPanic | Reason::InternalError)) => rpc_code::INTERNAL,
        ("submit_failed", _) => rpc_code::UNAVAILABLE,
        _ if info.retryable => rpc_code::UNAVAILABLE,
        _ => rpc_code::UNKNOWN,
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{test_snapshot, Timing};

    fn snapshot(state: State, error: Option<ErrorInfo>) -> OperationSnapshot {
        OperationSnapshot {
            attempt: 2,
            result: Some(json!({"echo": 1})),
            error,
            timing: Timing { queued_ms: 5, execution_ms: 7, attempts: 2 },
            idempotency_key: Some("k".into()),
            worker: Some("w".into()),
            deferred: None,
            ..test_snapshot(state)
        }
    }

    fn err(code: &str, retryable: bool) -> Option<ErrorInfo> {
        Some(ErrorInfo { code: code.into(), message: "m".into(), retryable })
    }

    #[test]
    fn completed_has_a_response_and_no_error() {
        let op = Operation::from_snapshot(&snapshot(State::Completed, None));
        assert!(op.done && op.error.is_none());
        assert_eq!(op.response, Some(json!({"echo": 1})));
        assert_eq!(op.metadata.progress_percent, Some(100.0));
    }

    #[test]
    fn outcomes_map_to_canonical_codes() {
        let code = |state, e| Operation::from_snapshot(&snapshot(state, e)).error.map(|s| s.code);
        assert_eq!(code(State::Cancelled, err("cancelled", false)), Some(rpc_code::CANCELLED));
        assert_eq!(code(State::Cancelled, None), Some(rpc_code::CANCELLED));
        assert_eq!(code(State::TimedOut, err("deadline_exceeded", false)), Some(rpc_code::DEADLINE_EXCEEDED));
        assert_eq!(code(State::Failed, err("boom", false)), Some(rpc_code::UNKNOWN));
        assert_eq!(code(State::Failed, err("flaky", true)), Some(rpc_code::UNAVAILABLE));
        assert_eq!(code(State::Failed, err("schema_violation", false)), Some(rpc_code::INVALID_ARGUMENT));
        assert_eq!(code(State::Started, None), None);
    }

    #[test]
    fn details_carry_the_courier_code() {
        let op = Operation::from_snapshot(&snapshot(State::Failed, err("boom", false)));
        let status = op.error.unwrap();
        assert_eq!(status.details[0]["reason"], "boom");
        assert!(op.response.is_none());
    }

}
