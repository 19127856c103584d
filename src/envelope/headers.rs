//! Kafka headers as the envelope sees them, and the ways reading them can fail.

use std::ffi::{c_char, c_void};

use rdkafka::bindings as rd;
use rdkafka::message::{BorrowedHeaders, OwnedHeaders};
use super::reason::Reason;

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
    pub const TENANT: &str = "ce_couriertenant";
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
    /// A header Courier reads as text (its `ce_*` and Spring's) holds bytes that are
    /// not UTF-8. A reason of its own: the producer's encoding is broken, not its
    /// envelope.
    #[error("header {0} is not UTF-8")]
    NotUtf8Header(&'static str),
    #[error("unsupported envelope version {0} (this build reads 1.x)")]
    UnsupportedVersion(String),
    #[error("value is {size} bytes, over the {limit} byte limit")]
    TooLarge { size: usize, limit: usize },
}

impl DecodeError {
    /// A stable, machine-readable reason code for dead letters and metrics.
    pub fn reason(&self) -> Reason {
        match self {
            DecodeError::EmptyValue | DecodeError::NotJson(_) => Reason::NotJson,
            DecodeError::NotUtf8 => Reason::NotUtf8,
            DecodeError::MissingHeader(_) | DecodeError::BadHeader { .. } => Reason::BadHeaders,
            DecodeError::NotUtf8Header(_) => Reason::BadHeader,
            DecodeError::UnsupportedVersion(_) => Reason::UnsupportedVersion,
            DecodeError::TooLarge { .. } => Reason::TooLarge,
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

    /// Copies headers out of a consumed record, names and values as bytes.
    ///
    /// Reads librdkafka's header list directly: rdkafka's own iterator unwraps each
    /// name as UTF-8 and panics on any other bytes, which any producer can send. A
    /// name is a C string there, so a name with a NUL byte reads up to the NUL.
    pub fn from_kafka<H: KafkaHeaders + ?Sized>(headers: Option<&H>) -> Self {
        let mut map = HeaderMap::new();
        let Some(headers) = headers else { return map };
        let native = native_list(headers.borrowed());
        for idx in 0.. {
            let Some((name, value)) = raw_header(native, idx) else { break };
            map.insert(name, value);
        }
        map
    }

    /// Appends a header; Kafka allows repeats, and the last one wins on read.
    pub fn insert(&mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> &mut Self {
        self.bytes.extend_from_slice(name.as_ref());
        let name_end = self.bytes.len() as u32;
        self.bytes.extend_from_slice(value.as_ref());
        self.ends.push((name_end, self.bytes.len() as u32));
        self
    }

    /// Replaces every header of that name with one value.
    pub fn set(&mut self, name: &str, value: impl AsRef<[u8]>) -> &mut Self {
        if self.iter().any(|(n, _)| n == name.as_bytes()) {
            let mut kept = HeaderMap::new();
            for (n, v) in self.iter().filter(|(n, _)| *n != name.as_bytes()) {
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
        (0..self.ends.len()).rev().find(|&i| self.name_bytes(i) == name.as_bytes()).map(|i| &self.bytes[self.ends[i].0 as usize..self.ends[i].1 as usize])
    }

    /// The last value of a header as text; `Err` if present but not UTF-8.
    pub fn get_str(&self, name: &'static str) -> Result<Option<&str>, DecodeError> {
        match self.get(name) {
            None => Ok(None),
            Some(bytes) => std::str::from_utf8(bytes).map(Some).map_err(|_| DecodeError::NotUtf8Header(name)),
        }
    }

    /// Like [`HeaderMap::get_str`] but the header must be present and non-empty.
    pub fn require(&self, name: &'static str) -> Result<&str, DecodeError> {
        match self.get_str(name)? {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(DecodeError::MissingHeader(name)),
        }
    }

    /// Every header in order, name and value as bytes: names need not be UTF-8
    /// (Kafka does not require it), and a header Courier does not read is carried
    /// through as it came.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&[u8], &[u8])> {
        (0..self.ends.len()).map(|i| (self.name_bytes(i), &self.bytes[self.ends[i].0 as usize..self.ends[i].1 as usize]))
    }

    fn name_bytes(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1].1 as usize };
        &self.bytes[start..self.ends[i].0 as usize]
    }

    /// Bytes this map adds to a record on the wire, for size checks against the
    /// producer's `message.max.bytes` (names, values and each header's framing).
    pub fn wire_size(&self) -> usize {
        self.bytes.len() + self.ends.len() * HEADER_FRAMING
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The headers for a produced record, names written as the bytes they are.
    pub fn to_kafka(&self) -> OwnedHeaders {
        let headers = OwnedHeaders::new_with_capacity(self.len());
        // rdkafka's `insert` takes names as `&str` only; a name read from a foreign
        // record may be any bytes, and is written back unchanged. `as_borrowed` is the
        // native list itself (rdkafka's own accessors use the same cast).
        let native = native_list(headers.as_borrowed()) as *mut rd::rd_kafka_headers_t;
        for (name, value) in self.iter() {
            // SAFETY: `native` is the live list `headers` owns; librdkafka copies name
            // and value (sizes given, no NUL needed) before returning.
            unsafe {
                rd::rd_kafka_header_add(
                    native,
                    name.as_ptr() as *const c_char,
                    name.len() as isize,
                    value.as_ptr() as *const c_void,
                    value.len() as isize,
                );
            }
        }
        headers
    }
}

/// rdkafka's two header lists (a consumed record's, an owned copy's), read the same
/// way: as librdkafka's native list.
pub trait KafkaHeaders {
    fn borrowed(&self) -> &BorrowedHeaders;
}

impl KafkaHeaders for BorrowedHeaders {
    fn borrowed(&self) -> &BorrowedHeaders {
        self
    }
}

impl KafkaHeaders for OwnedHeaders {
    fn borrowed(&self) -> &BorrowedHeaders {
        self.as_borrowed()
    }
}

/// librdkafka's header list behind a `BorrowedHeaders`: rdkafka's type is that
/// pointer itself (its own accessors make the same cast).
fn native_list(headers: &BorrowedHeaders) -> *const rd::rd_kafka_headers_t {
    headers as *const BorrowedHeaders as *const rd::rd_kafka_headers_t
}

/// Per-header framing on the wire (varint lengths), generously rounded up.
const HEADER_FRAMING: usize = 10;

/// Header `idx` of a native header list as (name, value) bytes; `None` past the end.
fn raw_header<'a>(native: *const rd::rd_kafka_headers_t, idx: usize) -> Option<(&'a [u8], &'a [u8])> {
    let (mut name, mut value, mut size) = (std::ptr::null::<c_char>(), std::ptr::null::<c_void>(), 0usize);
    // SAFETY: `native` comes from a live `BorrowedHeaders`, which outlives `'a` at
    // every call site (the returned slices are copied before it goes away).
    let err = unsafe { rd::rd_kafka_header_get_all(native, idx, &mut name, &mut value, &mut size) };
    if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
        return None;
    }
    // SAFETY: librdkafka keeps names NUL-terminated and values `size` bytes long.
    let name = unsafe { std::ffi::CStr::from_ptr(name) }.to_bytes();
    let value = if value.is_null() { &[][..] } else { unsafe { std::slice::from_raw_parts(value as *const u8, size) } };
    Some((name, value))
}

/// The last value of header `name` in a consumed record, read in place: for readers
/// that pass over most records (the webhook dispatcher) and should not copy them.
pub fn last_kafka_header<'a, H: KafkaHeaders + ?Sized>(headers: Option<&'a H>, name: &str) -> Option<&'a [u8]> {
    let native = native_list(headers?.borrowed());
    let mut last = None;
    for idx in 0.. {
        let Some((n, v)) = raw_header(native, idx) else { break };
        if n == name.as_bytes() {
            last = Some(v);
        }
    }
    last
}

/// Bytes of a record's headers on the wire (names, values and each header's
/// framing, as [`HeaderMap::wire_size`] counts them), read in place.
pub(crate) fn kafka_headers_size<H: KafkaHeaders + ?Sized>(headers: Option<&H>) -> usize {
    let Some(headers) = headers else { return 0 };
    let native = native_list(headers.borrowed());
    (0..).map_while(|idx| raw_header(native, idx)).map(|(n, v)| n.len() + v.len() + HEADER_FRAMING).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_keep_order_repeats_and_empty_values() {
        let mut h = HeaderMap::new();
        h.insert("a", "1").insert("b", "").insert("a", "2").insert("ü", [0xffu8]);
        let all = |h: &HeaderMap| h.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect::<Vec<_>>();
        let pairs = |p: &[(&str, &[u8])]| p.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.to_vec())).collect::<Vec<_>>();
        assert_eq!(all(&h), pairs(&[("a", b"1"), ("b", b""), ("a", b"2"), ("ü", &[0xff])]));
        assert_eq!(h.get("a"), Some(&b"2"[..]), "the last value wins");
        assert_eq!(h.get("b"), Some(&b""[..]));
        assert_eq!(h.get("c"), None);
        assert_eq!(h.get_str("ü"), Err(DecodeError::NotUtf8Header("ü")), "not UTF-8");
        h.set("a", "3");
        assert_eq!(all(&h), pairs(&[("b", b""), ("ü", &[0xff]), ("a", b"3")]));
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn headers_survive_a_trip_through_kafka_headers() {
        let mut h = HeaderMap::new();
        h.insert("ce_id", "x").insert("ce_type", "t").insert("ce_id", "y");
        assert_eq!(HeaderMap::from_kafka(Some(&h.to_kafka())), h);
        assert!(HeaderMap::from_kafka::<OwnedHeaders>(None).is_empty());
    }

    #[test]
    fn names_that_are_not_utf8_survive_a_trip_through_kafka_headers() {
        let mut h = HeaderMap::new();
        h.insert(b"\xff\xfe-x", b"v").insert("", "empty name").insert("ce_type", [0xc3u8]);
        let back = HeaderMap::from_kafka(Some(&h.to_kafka()));
        assert_eq!(back, h);
        assert_eq!(back.get_str("ce_type").unwrap_err().reason().as_str(), "bad_header");
        assert_eq!(last_kafka_header(Some(&h.to_kafka()), "ce_type"), Some(&[0xc3u8][..]));
    }
}
