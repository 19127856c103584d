//! Operation snapshots: the latest known state of one command, on the compacted
//! status topic (key = command id). Whoever reads the topic from the start (a
//! gateway, say) rebuilds every operation's state without replaying the results.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::headers::{DecodeError, HeaderMap};
use super::{json_event, ErrorInfo, Progress, ResultData, State, Timing};

/// CloudEvents type of a status snapshot.
pub const SNAPSHOT_TYPE: &str = "courier.operation.snapshot";

/// The latest state of one command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OperationSnapshot {
    pub command_id: Uuid,
    pub command_type: String,
    pub state: State,
    /// The command's key when UTF-8 (up to 1 KiB), as in [`super::ResultData`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The command's key in standard base64 when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_base64: Option<String>,
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    pub timing: Timing,
    /// When the command was submitted.
    #[serde(serialize_with = "super::time::serialize")]
    pub created: DateTime<Utc>,
    /// When this snapshot was written.
    #[serde(serialize_with = "super::time::serialize")]
    pub updated: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Hash of the request body that created it (for idempotent re-submission).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    /// The tenant the operation belongs to (from the command's `ce_couriertenant`):
    /// a gateway shows it only to that tenant's principals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The worker that wrote it (absent for snapshots written at submission).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Set while a handler that answered `202` owns the command (state `started`):
    /// what a completion through the gateway is checked against and written from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred: Option<super::Deferral>,
}

impl OperationSnapshot {
    /// The snapshot that goes with result event `data` about `command`: the
    /// command's request facts (callback, idempotency, batch) with the event's state.
    /// Takes the data, so a caller encodes the event first and hands its data on: the
    /// event and its snapshot then cost one copy of the result, not two.
    pub fn after(command: &super::Command, data: ResultData, worker: &str) -> Self {
        OperationSnapshot {
            command_id: command.id,
            command_type: data.command_type,
            state: data.state,
            key: data.key,
            key_base64: data.key_base64,
            attempt: command.attempt,
            progress: data.progress,
            result: data.result,
            error: data.error,
            timing: data.timing,
            created: command.time.unwrap_or_else(Utc::now),
            updated: Utc::now(),
            callback_url: command.callback_url.clone(),
            idempotency_key: command.idempotency_key.clone(),
            request_hash: command.request_hash.clone(),
            batch_id: command.batch_id.clone(),
            tenant: command.tenant.clone(),
            worker: Some(worker.to_string()),
            deferred: None,
        }
    }

    /// (key, value, headers) for the status topic.
    pub fn encode(&self, source: &str) -> (Vec<u8>, Vec<u8>, HeaderMap) {
        let (value, headers) = json_event(source, SNAPSHOT_TYPE, self.updated, self.command_id, self);
        (self.command_id.to_string().into_bytes(), value, headers)
    }

    /// Decodes a snapshot; `Ok(None)` for a tombstone (a deleted operation).
    pub fn decode(value: Option<&[u8]>) -> Result<Option<Self>, DecodeError> {
        match value {
            None => Ok(None),
            Some([]) => Ok(None),
            Some(v) => serde_json::from_slice(v).map(Some).map_err(|e| DecodeError::NotJson(e.to_string())),
        }
    }
}

/// A fresh `echo` snapshot in `state`, for unit tests (gateway, webhooks).
#[cfg(test)]
pub(crate) fn test_snapshot(state: State) -> OperationSnapshot {
    let now = chrono::Utc::now();
    OperationSnapshot {
        command_id: super::new_id(),
        command_type: "echo".into(),
        state,
        key: None,
        key_base64: None,
        attempt: 1,
        progress: None,
        result: None,
        error: None,
        timing: Timing::default(),
        created: now,
        updated: now,
        callback_url: None,
        idempotency_key: None,
        request_hash: None,
        batch_id: None,
        tenant: None,
        worker: None,
        deferred: None,
    }
}
