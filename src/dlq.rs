//! Dead letters: records Courier could not process, kept with the reason why.
//!
//! A dead letter is the original record, value and headers untouched (so a replay
//! sends exactly what the caller sent), plus `courier_dlq_*` headers saying where it
//! came from and why it failed.

use chrono::{DateTime, Utc};

use crate::envelope::HeaderMap;
use crate::publish::Outgoing;

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
}

/// Why and where a record failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Stable reason code: `not_json`, `bad_headers`, `unknown_type`, ...
    pub reason: String,
    pub message: String,
    pub attempts: u32,
    pub first_failure: DateTime<Utc>,
    pub last_failure: DateTime<Utc>,
}

impl DeadLetter {
    pub fn new(topic: &str, partition: i32, offset: i64, reason: &str, message: &str, attempts: u32) -> Self {
        let now = Utc::now();
        DeadLetter {
            topic: topic.to_string(),
            partition,
            offset,
            reason: reason.to_string(),
            message: message.to_string(),
            attempts,
            first_failure: now,
            last_failure: now,
        }
    }

    /// The DLQ record: original key, value and headers, plus the reason headers.
    pub fn to_record(&self, dlq_topic: &str, key: Option<&[u8]>, value: Option<&[u8]>, original: &HeaderMap) -> Outgoing {
        use dlq_headers as d;
        let mut headers = original.clone();
        headers
            .set(d::REASON, self.reason.as_str())
            .set(d::MESSAGE, self.message.as_str())
            .set(d::TOPIC, self.topic.as_str())
            .set(d::PARTITION, self.partition.to_string())
            .set(d::OFFSET, self.offset.to_string())
            .set(d::ATTEMPTS, self.attempts.to_string())
            .set(d::FIRST_FAILURE, crate::envelope::rfc3339(self.first_failure))
            .set(d::LAST_FAILURE, crate::envelope::rfc3339(self.last_failure));
        Outgoing {
            topic: dlq_topic.to_string(),
            key: key.map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default(),
            value: value.map(<[u8]>::to_vec).unwrap_or_default(),
            headers,
            partition: None,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_headers_round_trip_and_original_kept() {
        let mut original = HeaderMap::new();
        original.insert("ce_id", "abc");
        let letter = DeadLetter::new("courier.commands", 3, 42, "not_json", "expected value", 1);
        let out = letter.to_record("courier.commands.dlq", Some(b"k"), Some(b"{bad"), &original);
        assert_eq!(out.value, b"{bad");
        assert_eq!(out.headers.get_str("ce_id").unwrap(), Some("abc"));
        let back = DeadLetter::from_headers(&out.headers).unwrap();
        assert_eq!(back.reason, "not_json");
        assert_eq!((back.partition, back.offset), (3, 42));
    }
}
