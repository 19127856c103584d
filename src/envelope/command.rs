//! Commands: what a caller asks a worker to do.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::headers::{header_names as h, DecodeError, HeaderMap};
use super::{new_id, CONTENT_TYPE, ENVELOPE_VERSION, SPEC_VERSION};

/// A command as a worker sees it after decoding one record of the commands topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// `ce_id`: unique per command; result events name it in `ce_subject`.
    pub id: Uuid,
    /// `ce_type`: selects the handler.
    pub command_type: String,
    /// `ce_source`: who sent it, for tracing and audit.
    pub source: String,
    /// `ce_time`: when it was submitted; queue time is measured from here.
    pub time: Option<DateTime<Utc>>,
    /// The Kafka record key, as bytes (Kafka keys need not be text): commands with one
    /// key run one at a time, in order, and every event about them carries it unchanged.
    pub key: Option<Vec<u8>>,
    /// The record value: the handler's input.
    pub data: Value,
    /// `ce_deadline`: past it the command is `timed_out` instead of run.
    pub deadline: Option<DateTime<Utc>>,
    /// `ce_replyto` (or Spring's `kafka_replyTopic`): an extra topic for the final event.
    pub reply_to: Option<String>,
    /// `ce_callbackurl`: where the webhook dispatcher POSTs the outcome.
    pub callback_url: Option<String>,
    /// `ce_idempotencykey`: the caller's own dedupe key, carried through.
    pub idempotency_key: Option<String>,
    /// `ce_attempt`: 1 on first delivery, incremented by each retry.
    pub attempt: u32,
    /// `ce_traceparent`: W3C trace context, propagated to result events.
    pub traceparent: Option<String>,
    /// Spring's `kafka_correlationId`, echoed verbatim on the reply.
    pub correlation_id: Option<Vec<u8>>,
    /// Spring's `kafka_replyPartition`, honoured when replying to `reply_to`.
    pub reply_partition: Option<i32>,
    /// `ce_batchid`: the batch this command was submitted in, if any.
    pub batch_id: Option<String>,
    /// `ce_courierrequesthash`: hash of the HTTP request that created it, carried into
    /// every status snapshot so idempotency checks survive compaction.
    pub request_hash: Option<String>,
    /// `ce_couriertenant`: the tenant of the principal that submitted it (set by the
    /// gateway), carried into every event and snapshot so that a tenant sees only its
    /// own operations, even after compaction.
    pub tenant: Option<String>,
}

/// The headers of a command record, as documented in the AsyncAPI contract.
///
/// This type exists for the contract: it is what a producer in any language must set.
/// Workers decode headers with [`Command::decode`], which also accepts the Spring
/// request/reply headers.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "CommandHeaders")]
pub struct CommandHeaders {
    /// CloudEvents spec version; must be `1.0`.
    pub ce_specversion: String,
    /// Command id: a UUID (Courier writes UUIDv7). Result events carry it in `ce_subject`.
    #[schemars(with = "Uuid")]
    pub ce_id: String,
    /// URI-reference of the sender, e.g. `//billing-service`.
    pub ce_source: String,
    /// Command type, routed to the handler registered for it.
    pub ce_type: String,
    /// RFC 3339 submission time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_time: Option<DateTime<Utc>>,
    /// Always `application/json`: the record value is the JSON payload.
    #[serde(rename = "content-type")]
    pub content_type: String,
    /// Envelope version; major versions other than 1 are dead-lettered. Defaults to 1.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_courierversion: Option<String>,
    /// RFC 3339 deadline; a command picked up after it ends `timed_out` unrun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_deadline: Option<DateTime<Utc>>,
    /// Extra topic that also receives the final result event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_replyto: Option<String>,
    /// Webhook URL notified of the final result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_callbackurl: Option<String>,
    /// Caller's idempotency key, carried through to results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_idempotencykey: Option<String>,
    /// Delivery attempt, starting at 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_attempt: Option<String>,
    /// W3C trace context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_traceparent: Option<String>,
    /// Batch the command belongs to (set by the HTTP gateway's batch endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_batchid: Option<String>,
    /// Hash of the HTTP request that created the command (set by the gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_courierrequesthash: Option<String>,
    /// Tenant of the submitting principal (set by the gateway); echoed on every result
    /// event and in every status snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_couriertenant: Option<String>,
    /// Spring Kafka reply topic (ReplyingKafkaTemplate).
    #[serde(default, rename = "kafka_replyTopic", skip_serializing_if = "Option::is_none")]
    pub kafka_reply_topic: Option<String>,
    /// Spring Kafka correlation id, echoed on the reply.
    #[serde(default, rename = "kafka_correlationId", skip_serializing_if = "Option::is_none")]
    pub kafka_correlation_id: Option<String>,
}

impl Command {
    /// The Kafka key for this command: its key if it has one, else its id.
    pub fn partition_key(&self) -> Vec<u8> {
        self.key.clone().unwrap_or_else(|| self.id.to_string().into_bytes())
    }

    /// Reads just the command id from headers, for failure reports about records that
    /// cannot be decoded whole.
    pub fn peek_id(headers: &HeaderMap) -> Option<Uuid> {
        headers.get_str(h::ID).ok().flatten().and_then(|s| Uuid::parse_str(s).ok())
    }

    /// Reads just Spring's pinned reply partition, so a failure report about a record
    /// that cannot be decoded whole still reaches a `ReplyingKafkaTemplate` waiting on
    /// one partition.
    pub fn peek_reply_partition(headers: &HeaderMap) -> Option<i32> {
        spring_reply_partition(headers)
    }

    /// Decodes a command from one record. Never panics on any input.
    pub fn decode(key: Option<&[u8]>, value: Option<&[u8]>, headers: &HeaderMap) -> Result<Self, DecodeError> {
        check_version(headers)?;
        let spec = headers.require(h::SPEC_VERSION)?;
        if spec != SPEC_VERSION {
            return Err(DecodeError::BadHeader { name: h::SPEC_VERSION, reason: format!("expected 1.0, got {spec}") });
        }
        let id = headers.require(h::ID)?;
        let id = Uuid::parse_str(id).map_err(|e| DecodeError::BadHeader { name: h::ID, reason: e.to_string() })?;
        let command_type = headers.require(h::TYPE)?.to_string();
        let source = headers.require(h::SOURCE)?.to_string();
        let data = decode_json(value)?;
        Ok(Command {
            id,
            command_type,
            source,
            time: optional_time(headers, h::TIME)?,
            key: key.map(<[u8]>::to_vec),
            data,
            deadline: optional_time(headers, h::DEADLINE)?,
            reply_to: optional_string(headers, h::REPLY_TO)?
                .filter(|t| !t.is_empty())
                .or(optional_string(headers, h::SPRING_REPLY_TOPIC)?.filter(|t| !t.is_empty())),
            callback_url: optional_string(headers, h::CALLBACK_URL)?,
            idempotency_key: optional_string(headers, h::IDEMPOTENCY_KEY)?,
            attempt: optional_attempt(headers)?,
            traceparent: optional_string(headers, h::TRACEPARENT)?,
            correlation_id: headers.get(h::SPRING_CORRELATION_ID).map(<[u8]>::to_vec),
            reply_partition: spring_reply_partition(headers),
            batch_id: optional_string(headers, h::BATCH_ID)?,
            request_hash: optional_string(headers, h::REQUEST_HASH)?,
            tenant: optional_string(headers, h::TENANT)?,
        })
    }

    /// Encodes this command as (key, value, headers) for the commands topic.
    pub fn encode(&self) -> (Vec<u8>, Vec<u8>, HeaderMap) {
        let mut headers = HeaderMap::new();
        headers
            .insert(h::SPEC_VERSION, SPEC_VERSION)
            .insert(h::ID, self.id.to_string())
            .insert(h::SOURCE, self.source.as_str())
            .insert(h::TYPE, self.command_type.as_str())
            .insert(h::CONTENT_TYPE, CONTENT_TYPE)
            .insert(h::VERSION, ENVELOPE_VERSION)
            .insert(h::ATTEMPT, self.attempt.to_string());
        let optional = [
            (h::TIME, self.time.map(rfc3339)),
            (h::DEADLINE, self.deadline.map(rfc3339)),
            (h::REPLY_TO, self.reply_to.clone()),
            (h::CALLBACK_URL, self.callback_url.clone()),
            (h::IDEMPOTENCY_KEY, self.idempotency_key.clone()),
            (h::TRACEPARENT, self.traceparent.clone()),
            (h::BATCH_ID, self.batch_id.clone()),
            (h::REQUEST_HASH, self.request_hash.clone()),
            (h::TENANT, self.tenant.clone()),
        ];
        for (name, value) in optional {
            if let Some(v) = value {
                headers.insert(name, v);
            }
        }
        if let Some(c) = &self.correlation_id {
            headers.insert(h::SPRING_CORRELATION_ID, c.clone());
        }
        let value = serde_json::to_vec(&self.data).unwrap_or_else(|_| b"null".to_vec());
        (self.partition_key(), value, headers)
    }
}

/// What a caller fills in to send a command; the rest (id, time, attempt) is stamped
/// by [`NewCommand::into_command`].
#[derive(Debug, Clone, Default)]
pub struct NewCommand {
    pub command_type: String,
    pub payload: Value,
    pub key: Option<Vec<u8>>,
    pub deadline: Option<DateTime<Utc>>,
    pub callback_url: Option<String>,
    pub idempotency_key: Option<String>,
    pub reply_to: Option<String>,
    pub traceparent: Option<String>,
    pub batch_id: Option<String>,
    /// The tenant the command belongs to: only that tenant's principals see its
    /// operation through a gateway.
    pub tenant: Option<String>,
}

impl NewCommand {
    pub fn new(command_type: impl Into<String>, payload: Value) -> Self {
        NewCommand { command_type: command_type.into(), payload, ..Default::default() }
    }

    /// Commands sharing a key run one at a time, in submission order. Any bytes:
    /// a text key or a binary one (a serialized id, say) travel unchanged.
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Past this moment the command ends `timed_out` rather than running late.
    pub fn deadline(mut self, deadline: DateTime<Utc>) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Deadline relative to now.
    pub fn deadline_in(self, within: std::time::Duration) -> Self {
        // Saturates: `Utc::now() + TimeDelta::MAX` would panic, and "no deadline to
        // speak of" is what a caller asking for `Duration::MAX` means.
        let delta = chrono::Duration::from_std(within).unwrap_or(chrono::Duration::MAX);
        self.deadline(Utc::now().checked_add_signed(delta).unwrap_or(DateTime::<Utc>::MAX_UTC))
    }

    pub fn callback_url(mut self, url: impl Into<String>) -> Self {
        self.callback_url = Some(url.into());
        self
    }

    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Stamps id, source, time and attempt 1.
    pub fn into_command(self, source: &str) -> Command {
        Command {
            id: new_id(),
            command_type: self.command_type,
            source: source.to_string(),
            time: Some(Utc::now()),
            key: self.key,
            data: self.payload,
            deadline: self.deadline,
            reply_to: self.reply_to,
            callback_url: self.callback_url,
            idempotency_key: self.idempotency_key,
            attempt: 1,
            traceparent: self.traceparent,
            correlation_id: None,
            reply_partition: None,
            batch_id: self.batch_id,
            request_hash: None,
            tenant: self.tenant,
        }
    }
}

/// RFC 3339 with millisecond precision and a `Z`, the form CloudEvents examples use.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    super::time::millis(t)
}

fn check_version(headers: &HeaderMap) -> Result<(), DecodeError> {
    match headers.get_str(h::VERSION)? {
        None => Ok(()),
        Some(v) if v.split('.').next() == Some("1") => Ok(()),
        Some(v) => Err(DecodeError::UnsupportedVersion(v.to_string())),
    }
}

fn decode_json(value: Option<&[u8]>) -> Result<Value, DecodeError> {
    let bytes = value.filter(|v| !v.is_empty()).ok_or(DecodeError::EmptyValue)?;
    let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8)?;
    serde_json::from_str(text).map_err(|e| DecodeError::NotJson(e.to_string()))
}

fn optional_string(headers: &HeaderMap, name: &'static str) -> Result<Option<String>, DecodeError> {
    Ok(headers.get_str(name)?.filter(|s| !s.is_empty()).map(str::to_string))
}

fn optional_time(headers: &HeaderMap, name: &'static str) -> Result<Option<DateTime<Utc>>, DecodeError> {
    match headers.get_str(name)?.filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|e| DecodeError::BadHeader { name, reason: format!("not RFC 3339: {e}") }),
    }
}

fn optional_attempt(headers: &HeaderMap) -> Result<u32, DecodeError> {
    match headers.get_str(h::ATTEMPT)?.filter(|s| !s.is_empty()) {
        None => Ok(1),
        Some(s) => match s.parse::<u32>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(DecodeError::BadHeader { name: h::ATTEMPT, reason: format!("{s:?} is not a positive integer") }),
        },
    }
}

/// Spring writes `kafka_replyPartition` as a 4-byte big-endian int.
fn spring_reply_partition(headers: &HeaderMap) -> Option<i32> {
    let bytes: [u8; 4] = headers.get(h::SPRING_REPLY_PARTITION)?.try_into().ok()?;
    Some(i32::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Command {
        NewCommand::new("email.send", json!({"to": "a@b.c"})).key("user-1").into_command("//test")
    }

    #[test]
    fn encode_then_decode_is_identity() {
        let cmd = sample();
        let (key, value, headers) = cmd.encode();
        let back = Command::decode(Some(&key), Some(&value), &headers).unwrap();
        let mut expected = cmd.clone();
        expected.time = cmd.time.map(|t| DateTime::parse_from_rfc3339(&rfc3339(t)).unwrap().with_timezone(&Utc));
        assert_eq!(back, expected);
    }

    #[test]
    fn key_defaults_to_id() {
        let cmd = NewCommand::new("x", json!(null)).into_command("//t");
        assert_eq!(cmd.encode().0, cmd.id.to_string().into_bytes());
    }

    #[test]
    fn every_kind_of_bad_record_has_a_reason() {
        let (_, value, headers) = sample().encode();
        let cases: Vec<(Option<&[u8]>, HeaderMap, &str)> = vec![
            (Some(b"\xff\xfe"), headers.clone(), "not_utf8"),
            (Some(b"{not json"), headers.clone(), "not_json"),
            (None, headers.clone(), "not_json"),
            (Some(&value), HeaderMap::new(), "bad_headers"),
            (Some(&value), { let mut m = headers.clone(); m.set(h::ID, "nope"); m }, "bad_headers"),
            (Some(&value), { let mut m = headers.clone(); m.set(h::DEADLINE, "tomorrow"); m }, "bad_headers"),
            (Some(&value), { let mut m = headers.clone(); m.set(h::ATTEMPT, "0"); m }, "bad_headers"),
            (Some(&value), { let mut m = headers.clone(); m.set(h::VERSION, "2.0"); m }, "unsupported_version"),
        ];
        for (value, headers, reason) in cases {
            let err = Command::decode(None, value, &headers).unwrap_err();
            assert_eq!(err.reason().as_str(), reason, "{err}");
        }
    }

    #[test]
    fn minor_versions_and_unknown_headers_are_accepted() {
        let (_, value, mut headers) = sample().encode();
        headers.set(h::VERSION, "1.7");
        headers.insert("ce_somethingnew", "x");
        assert!(Command::decode(None, Some(&value), &headers).is_ok());
    }

    #[test]
    fn spring_headers_are_honoured() {
        let (_, value, mut headers) = sample().encode();
        headers.insert(h::SPRING_REPLY_TOPIC, "replies");
        headers.insert(h::SPRING_CORRELATION_ID, vec![1u8, 2, 3]);
        headers.insert(h::SPRING_REPLY_PARTITION, 2i32.to_be_bytes());
        let cmd = Command::decode(None, Some(&value), &headers).unwrap();
        assert_eq!(cmd.reply_to.as_deref(), Some("replies"));
        assert_eq!(cmd.correlation_id, Some(vec![1, 2, 3]));
        assert_eq!(cmd.reply_partition, Some(2));
    }
}
