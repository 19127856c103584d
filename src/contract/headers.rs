//! Header schemas of the records Courier writes, for the contract. Headers travel as
//! Kafka header bytes; the schemas describe their UTF-8 text.
//!
//! The field names must equal the header-name constants the code writes with
//! (`envelope::header_names`, `retry::retry_headers`, `envelope::dlq_headers`); the tests
//! below compare them, so a renamed header cannot leave the contract behind.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The CloudEvents type of a result event: `courier.command.<state>`. `queued` has no
/// event; it only appears in status snapshots.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
pub enum ResultType {
    #[serde(rename = "courier.command.started")]
    Started,
    #[serde(rename = "courier.command.progress")]
    Progress,
    #[serde(rename = "courier.command.completed")]
    Completed,
    #[serde(rename = "courier.command.failed")]
    Failed,
    #[serde(rename = "courier.command.cancelled")]
    Cancelled,
    #[serde(rename = "courier.command.timed_out")]
    TimedOut,
}

/// Headers of a result event (CloudEvents binary mode).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ResultHeaders {
    /// CloudEvents spec version: `1.0`.
    #[schemars(extend("const" = "1.0"))]
    pub ce_specversion: String,
    /// Event id (UUIDv7): unique per event, the dedupe key for consumers.
    pub ce_id: uuid::Uuid,
    /// The worker that produced it, e.g. `//courier/worker/host-42`.
    pub ce_source: String,
    /// `courier.command.<state>`; each result message pins one.
    pub ce_type: ResultType,
    /// RFC 3339 time of the event.
    pub ce_time: chrono::DateTime<chrono::Utc>,
    /// The command id this event is about.
    pub ce_subject: uuid::Uuid,
    /// The value is JSON: `application/json`.
    #[serde(rename = "content-type")]
    #[schemars(extend("const" = "application/json"))]
    pub content_type: String,
    /// Envelope version: `1.1` today; any `1.x` is compatible (see docs/CONTRACT.md).
    /// From `1.1` on, a final event without `ce_callbackurl` is about a command that
    /// had none.
    #[schemars(regex(pattern = r"^1\.[0-9]+$"))]
    pub ce_courierversion: String,
    /// The command's callback URL, copied from it onto its final event (from envelope
    /// `1.1`): where the webhook dispatcher POSTs the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_callbackurl: Option<String>,
    /// W3C trace context, copied from the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_traceparent: Option<String>,
    /// Spring's correlation id, echoed from the command.
    #[serde(default, rename = "kafka_correlationId", skip_serializing_if = "Option::is_none")]
    pub kafka_correlation_id: Option<String>,
}

/// Headers of control and status records.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct EventHeaders {
    /// CloudEvents spec version: `1.0`.
    #[schemars(extend("const" = "1.0"))]
    pub ce_specversion: String,
    /// Event id (UUIDv7), unique per record.
    pub ce_id: uuid::Uuid,
    /// Who wrote it: the client, gateway or worker.
    pub ce_source: String,
    /// `courier.control.cancel`, `courier.control.deferred`, `courier.control.released`,
    /// `courier.completion` or `courier.operation.snapshot`.
    pub ce_type: String,
    /// RFC 3339 time the record was written.
    pub ce_time: chrono::DateTime<chrono::Utc>,
    /// The command id.
    pub ce_subject: uuid::Uuid,
    /// The value is JSON: `application/json`.
    #[serde(rename = "content-type")]
    #[schemars(extend("const" = "application/json"))]
    pub content_type: String,
    /// Envelope version: `1.1` today; any `1.x` is compatible.
    #[schemars(regex(pattern = r"^1\.[0-9]+$"))]
    pub ce_courierversion: String,
}

/// Headers Courier adds when it re-publishes a command itself: through a retry tier
/// and back, or from the DLQ by `courier dlq replay`. Producers never set them; workers
/// use them for bookkeeping, and a reader may use them to explain a delay.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RedeliveryHeaders {
    /// RFC 3339 time before which a retry tier relay holds the command back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub courier_not_before: Option<chrono::DateTime<chrono::Utc>>,
    /// The commands-topic partition the command came from; the relay sends it back
    /// there so key order holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+$"))]
    pub courier_origin_partition: Option<String>,
    /// RFC 3339 time of the first failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub courier_first_failure: Option<chrono::DateTime<chrono::Utc>>,
    /// The last attempt's error, as `code: message`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub courier_last_error: Option<String>,
    /// RFC 3339 time an operator sent it back from the DLQ; such a command runs even
    /// though its id already has a final event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub courier_replayed_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Headers Courier adds to a dead-lettered record; the original headers stay as sent.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DeadLetterHeaders {
    /// Reason code: not_utf8, not_json, bad_headers, unknown_type, schema_violation,
    /// too_large, unsupported_version, handler_panic, retries_exhausted.
    pub courier_dlq_reason: String,
    pub courier_dlq_message: String,
    /// Where the record was consumed from.
    pub courier_dlq_topic: String,
    #[schemars(regex(pattern = r"^-?[0-9]+$"))]
    pub courier_dlq_partition: String,
    #[schemars(regex(pattern = r"^-?[0-9]+$"))]
    pub courier_dlq_offset: String,
    /// Attempts made before giving up.
    #[schemars(regex(pattern = r"^[0-9]+$"))]
    pub courier_dlq_attempts: String,
    pub courier_dlq_first_failure: chrono::DateTime<chrono::Utc>,
    pub courier_dlq_last_failure: chrono::DateTime<chrono::Utc>,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::envelope::dlq_headers as d;
    use crate::envelope::header_names as h;
    use crate::retry::retry_headers as r;

    fn names<T: JsonSchema>() -> BTreeSet<String> {
        let schema = schemars::schema_for!(T);
        schema.get("properties").and_then(|p| p.as_object()).map(|p| p.keys().cloned().collect()).unwrap_or_default()
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn header_schemas_name_the_headers_the_code_writes() {
        let event = [h::SPEC_VERSION, h::ID, h::SOURCE, h::TYPE, h::TIME, h::SUBJECT, h::CONTENT_TYPE, h::VERSION];
        assert_eq!(names::<EventHeaders>(), set(&event));
        let mut result = event.to_vec();
        result.extend([h::TRACEPARENT, h::SPRING_CORRELATION_ID, h::CALLBACK_URL]);
        assert_eq!(names::<ResultHeaders>(), set(&result));
        let redelivery = [r::NOT_BEFORE, r::PARTITION, r::FIRST_FAILURE, r::LAST_ERROR, d::REPLAYED_AT];
        assert_eq!(names::<RedeliveryHeaders>(), set(&redelivery));
        let dead = [d::REASON, d::MESSAGE, d::TOPIC, d::PARTITION, d::OFFSET, d::ATTEMPTS, d::FIRST_FAILURE, d::LAST_FAILURE];
        assert_eq!(names::<DeadLetterHeaders>(), set(&dead));
    }
}
