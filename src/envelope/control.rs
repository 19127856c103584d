//! Control messages: requests about a command already sent, read by every worker.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::headers::{header_names as h, DecodeError, HeaderMap};
use super::json_event;

/// CloudEvents type of a cancel request on the control topic.
pub const CANCEL_TYPE: &str = "courier.control.cancel";

/// Asks every worker to cancel a command: skipped if still queued, its token fired if
/// running. Keyed by command id on the control topic, which workers read from the
/// start, so a cancel outlives worker restarts and rebalances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CancelRequest {
    pub command_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub requested_at: DateTime<Utc>,
}

impl CancelRequest {
    pub fn new(command_id: Uuid, reason: Option<String>) -> Self {
        CancelRequest { command_id, reason, requested_at: Utc::now() }
    }

    /// (key, value, headers) for the control topic.
    pub fn encode(&self, source: &str) -> (Vec<u8>, Vec<u8>, HeaderMap) {
        let (value, headers) = json_event(source, CANCEL_TYPE, self.requested_at, self.command_id, self);
        (self.command_id.to_string().into_bytes(), value, headers)
    }

    pub fn decode(value: Option<&[u8]>, headers: &HeaderMap) -> Result<Self, DecodeError> {
        let ty = headers.require(h::TYPE)?;
        if ty != CANCEL_TYPE {
            return Err(DecodeError::BadHeader { name: h::TYPE, reason: format!("{ty:?} is not a control type") });
        }
        let bytes = value.filter(|v| !v.is_empty()).ok_or(DecodeError::EmptyValue)?;
        serde_json::from_slice(bytes).map_err(|e| DecodeError::NotJson(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let req = CancelRequest::new(crate::envelope::new_id(), Some("user asked".into()));
        let (key, value, headers) = req.encode("//test");
        assert_eq!(key, req.command_id.to_string().into_bytes());
        assert_eq!(CancelRequest::decode(Some(&value), &headers).unwrap(), req);
    }
}
