//! Header schemas of the records Courier writes, for the contract. Headers travel as
//! Kafka header bytes; the schemas describe their UTF-8 text.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The CloudEvents type of a result event.
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
    /// Always `1.0`.
    pub ce_specversion: String,
    /// Event id (UUIDv7): unique per event, the dedupe key for consumers.
    pub ce_id: uuid::Uuid,
    /// The worker that produced it, e.g. `//courier/worker/host-42`.
    pub ce_source: String,
    pub ce_type: ResultType,
    /// RFC 3339 time of the event.
    pub ce_time: chrono::DateTime<chrono::Utc>,
    /// The command id this event is about.
    pub ce_subject: uuid::Uuid,
    /// Always `application/json`.
    #[serde(rename = "content-type")]
    pub content_type: String,
    /// Envelope version, `1.0`.
    pub ce_courierversion: String,
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
    pub ce_specversion: String,
    pub ce_id: uuid::Uuid,
    pub ce_source: String,
    /// `courier.control.cancel` or `courier.operation.snapshot`.
    pub ce_type: String,
    pub ce_time: chrono::DateTime<chrono::Utc>,
    /// The command id.
    pub ce_subject: uuid::Uuid,
    #[serde(rename = "content-type")]
    pub content_type: String,
    pub ce_courierversion: String,
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
    pub courier_dlq_partition: String,
    pub courier_dlq_offset: String,
    pub courier_dlq_attempts: String,
    pub courier_dlq_first_failure: chrono::DateTime<chrono::Utc>,
    pub courier_dlq_last_failure: chrono::DateTime<chrono::Utc>,
}
