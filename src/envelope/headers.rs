//! Kafka headers as the envelope sees them, and the ways reading them can fail.

use rdkafka::message::{Header, Headers, OwnedHeaders};

/// Names of the Kafka headers Courier reads and writes.
///
/// CloudEvents extension attributes use the same `ce_` prefix as core attributes
/// (Kafka protocol binding, section 3.2.3). The two `kafka_` headers are Spring
/// Kafka's request/reply headers, honoured so `ReplyingKafkaTemplate` callers work
/// unchanged.
pub mod header_names {
    pub const SPEC_VERSION: &str = "ce_specversion";
    pub const ID: &str = "ce_id";
    pub const SOURCE: &str = "ce_source";
    pub const TYPE: &str = "ce_type";
    pub const TIME: &str = "ce_time";
    pub const SUBJECT: &str = "ce_subject";
    pub const CONTENT_TYPE: &str = "content-type";
    pub const VERSION: &str = "ce_courierversion";
    pub const DEADLINE: &str = "ce_deadline";
    pub const REPLY_TO: &str = "ce_replyto";
    pub const CALLBACK_URL: &str = "ce_callbackurl";
    pub const IDEMPOTENCY_KEY: &str = "ce_idempotencykey";
    pub const ATTEMPT: &str = "ce_attempt";
    pub const TRACEPARENT: &str = "ce_traceparent";
    pub const BATCH_ID: &str = "ce_batchid";
    pub const REQUEST_HASH: &str = "ce_courierrequesthash";
    pub const SPRING_REPLY_TOPIC: &str = "kafka_replyTopic";
    pub const SPRING_REPLY_PARTITION: &str = "kafka_replyPartition";
    pub const SPRING_CORRELATION_ID: &str = "kafka_correlationId";
}

/// Why a record could not be read as a Courier envelope.
///
/// Each variant maps to a stable reason code ([`DecodeError::reason`]) that lands in
/// the dead-letter record, so an operator can filter and replay by cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record has no value")]
    EmptyValue,
    #[error("value is not UTF-8")]
    NotUtf8,
    #[error("value is not JSON: {0}")]
    NotJson(String),
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("header {name} is invalid: {reason}")]
    BadHeader { name: &'static str, reason: String },
    #[error("unsupported envelope version {0} (this build reads 1.x)")]
    UnsupportedVersion(String),
    #[error("value is {size} bytes, over the {limit} byte limit")]
    TooLarge { size: usize, limit: usize },
}

impl DecodeError {
    /// A stable, machine-readable reason code for dead letters and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::EmptyValue | DecodeError::NotJson(_) => "not_json",
            DecodeError::NotUtf8 => "not_utf8",
            DecodeError::MissingHeader(_) | DecodeError::BadHeader { .. } => "bad_headers",
            DecodeError::UnsupportedVersion(_) => "unsupported_version",
            DecodeError::TooLarge { .. } => "too_large",
        }
    }
}

/// An owned, ordered copy of a record's headers.
///
/// Owned so a record can outlive the consumer's buffer and be re-published verbatim
/// (to a dead-letter topic, for instance); ordered and multi-valued because Kafka
/// headers are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderMap {
    /// Every name and value back to back, in order: a record's headers cost two
    /// allocations, not two per header (a worker copies every consumed record's).
    bytes: Vec<u8>,
    /// Where each header ends in `bytes`: (end of name, end of value).
    ends: Vec<(u32, u32)>,
}

impl HeaderMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Copies headers out of any rdkafka header view.
    pub fn from_kafka<H: Headers>(headers: Option<&H>) -> Self {
        let mut map = HeaderMap::new();
        if let Some(headers) = headers {
            map.ends.reserve_exact(headers.count());
            for h in headers.iter() {
                map.insert(h.key, h.value.unwrap_or_default());
            }
        }
        map
    }

    /// Appends a header; Kafka allows repeats, and the last one wins on read.
    pub fn insert(&mut self, name: impl AsRef<str>, value: impl AsRef<[u8]>) -> &mut Self {
        self.bytes.extend_from_slice(name.as_ref().as_bytes());
        let name_end = self.bytes.len() as u32;
        self.bytes.extend_from_slice(value.as_ref());
        self.ends.push((name_end, self.bytes.len() as u32));
        self
    }

    /// Replaces every header of that name with one value.
    pub fn set(&mut self, name: &str, value: impl AsRef<[u8]>) -> &mut Self {
        if self.iter().any(|(n, _)| n == name) {
            let mut kept = HeaderMap::new();
            for (n, v) in self.iter().filter(|(n, _)| *n != name) {
                kept.insert(n, v);
            }
            *self = kept;
        }
        self.insert(name, value)
    }

    /// The last value of a header, as raw bytes.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        // Compares bytes: decoding reads several headers per record, and checking every
        // name it passes for UTF-8 on the way was a few percent of a worker's CPU.
        (0..self.ends.len()).rev().find(|&i| self.name_bytes(i) == name.as_bytes()).map(|i| self.entry(i).1)
    }

    /// The last value of a header as text; `Err` if present but not UTF-8.
    pub fn get_str(&self, name: &'static str) -> Result<Option<&str>, DecodeError> {
        match self.get(name) {
            None => Ok(None),
            Some(bytes) => std::str::from_utf8(bytes).map(Some).map_err(|_| {
                DecodeError::BadHeader { name, reason: "not UTF-8".into() }
            }),
        }
    }

    /// Like [`HeaderMap::get_str`] but the header must be present and non-empty.
    pub fn require(&self, name: &'static str) -> Result<&str, DecodeError> {
        match self.get_str(name)? {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(DecodeError::MissingHeader(name)),
        }
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&str, &[u8])> {
        (0..self.ends.len()).map(|i| self.entry(i))
    }

    fn entry(&self, i: usize) -> (&str, &[u8]) {
        let (name_end, value_end) = (self.ends[i].0 as usize, self.ends[i].1 as usize);
        // Names only ever come from `&str`, so this cannot fail.
        let name = std::str::from_utf8(self.name_bytes(i)).unwrap_or_default();
        (name, &self.bytes[name_end..value_end])
    }

    fn name_bytes(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1].1 as usize };
        &self.bytes[start..self.ends[i].0 as usize]
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn to_kafka(&self) -> OwnedHeaders {
        self.iter().fold(OwnedHeaders::new_with_capacity(self.len()), |acc, (k, v)| acc.insert(Header { key: k, value: Some(v) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_keep_order_repeats_and_empty_values() {
        let mut h = HeaderMap::new();
        h.insert("a", "1").insert("b", "").insert("a", "2").insert("ü", [0xffu8]);
        assert_eq!(h.iter().collect::<Vec<_>>(), vec![("a", &b"1"[..]), ("b", &b""[..]), ("a", &b"2"[..]), ("ü", &[0xffu8][..])]);
        assert_eq!(h.get("a"), Some(&b"2"[..]), "the last value wins");
        assert_eq!(h.get("b"), Some(&b""[..]));
        assert_eq!(h.get("c"), None);
        assert!(h.get_str("ü").is_err(), "not UTF-8");
        h.set("a", "3");
        assert_eq!(h.iter().collect::<Vec<_>>(), vec![("b", &b""[..]), ("ü", &[0xffu8][..]), ("a", &b"3"[..])]);
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn headers_survive_a_trip_through_kafka_headers() {
        let mut h = HeaderMap::new();
        h.insert("ce_id", "x").insert("ce_type", "t").insert("ce_id", "y");
        assert_eq!(HeaderMap::from_kafka(Some(&h.to_kafka())), h);
        assert!(HeaderMap::from_kafka::<OwnedHeaders>(None).is_empty());
    }
}
