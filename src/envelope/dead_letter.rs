//! Dead letters: records Courier could not process, kept with the reason why.
//!
//! A dead letter is the original record, value and headers untouched (so a replay
//! sends exactly what the caller sent), plus `courier_dlq_*` headers saying where it
//! came from and why it failed. These headers are part of the contract (the AsyncAPI
//! `dlq.record` message); writing and reading the DLQ topic is `crate::dlq`'s.

use chrono::{DateTime, Utc};

use super::{HeaderMap, Reason};

/// Header names added to dead-lettered records.
pub mod dlq_headers {
    pub const REASON: &str = "courier_dlq_reason";
    pub const MESSAGE: &str = "courier_dlq_message";
    pub const TOPIC: &str = "courier_dlq_topic";
    pub const PARTITION: &str = "courier_dlq_partition";
    pub const OFFSET: &str = "courier_dlq_offset";
    pub const ATTEMPTS: &str = "courier_dlq_attempts";
    pub const FIRST_FAILURE: &str = "courier_dlq_first_failure";
    pub const LAST_FAILURE: &str = "courier_dlq_last_failure";
    /// Set on a record sent back by `courier dlq replay`: it runs even though its
    /// command id already has a (failed) final event.
    pub const REPLAYED_AT: &str = "courier_replayed_at";
    /// Set on a *minimal* dead letter: the whole record did not fit, so its value
    /// and/or original headers were left out (read them at topic/partition/offset).
    pub const TRUNCATED: &str = "courier_dlq_truncated";
    /// On a minimal dead letter: the byte sizes of the original key and value.
    pub const KEY_BYTES: &str = "courier_dlq_key_bytes";
    pub const VALUE_BYTES: &str = "courier_dlq_value_bytes";
}

/// Whether a command record was sent back from the DLQ by an operator.
pub fn is_replay(headers: &HeaderMap) -> bool {
    headers.get(dlq_headers::REPLAYED_AT).is_some()
}

/// Why and where a record failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Stable reason code ([`Reason`]); read back from a record as written, so a
    /// code from a newer or foreign writer survives a replay.
    pub reason: String,
    pub message: String,
    pub attempts: u32,
    pub first_failure: DateTime<Utc>,
    pub last_failure: DateTime<Utc>,
}

impl DeadLetter {
    /// Reason and message are cut to their echo bounds: a message quotes the input
    /// that failed, and the letter must still fit beside that input.
    pub fn new(topic: &str, partition: i32, offset: i64, reason: Reason, message: &str, attempts: u32) -> Self {
        use super::bounds::{truncate, MAX_MESSAGE_ECHO};
        let now = Utc::now();
        DeadLetter {
            topic: topic.to_string(),
            partition,
            offset,
            reason: reason.as_str().to_string(),
            message: truncate(message, MAX_MESSAGE_ECHO),
            attempts,
            first_failure: now,
            last_failure: now,
        }
    }

    /// Adds the reason headers to a record's own: how a dead letter is marked, by
    /// Courier or by a foreign tool that writes to the DLQ.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        use dlq_headers as d;
        headers
            .set(d::REASON, self.reason.as_str())
            .set(d::MESSAGE, self.message.as_str())
            .set(d::TOPIC, self.topic.as_str())
            .set(d::PARTITION, self.partition.to_string())
            .set(d::OFFSET, self.offset.to_string())
            .set(d::ATTEMPTS, self.attempts.to_string())
            .set(d::FIRST_FAILURE, super::rfc3339(self.first_failure))
            .set(d::LAST_FAILURE, super::rfc3339(self.last_failure));
    }

    /// Reads the reason headers back from a DLQ record.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        use dlq_headers as d;
        let s = |n: &'static str| headers.get_str(n).ok().flatten().map(str::to_string);
        let t = |n: &'static str| s(n).and_then(|v| DateTime::parse_from_rfc3339(&v).ok()).map(|v| v.with_timezone(&Utc));
        Some(DeadLetter {
            reason: s(d::REASON)?,
            message: s(d::MESSAGE).unwrap_or_default(),
            topic: s(d::TOPIC).unwrap_or_default(),
            partition: s(d::PARTITION).and_then(|v| v.parse().ok()).unwrap_or(-1),
            offset: s(d::OFFSET).and_then(|v| v.parse().ok()).unwrap_or(-1),
            attempts: s(d::ATTEMPTS).and_then(|v| v.parse().ok()).unwrap_or(1),
            first_failure: t(d::FIRST_FAILURE).unwrap_or_else(Utc::now),
            last_failure: t(d::LAST_FAILURE).unwrap_or_else(Utc::now),
        })
    }
}

