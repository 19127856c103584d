//! Deferred completion on the wire: a command a handler took over (`202`) and
//! completes later through the gateway.
//!
//! Three records carry it. On the control topic (keyed by command id, read by every
//! worker from the start): a [`Deferral`] when a worker hands a command off, restated
//! with a later `beat` at every heartbeat or progress report (which also keeps it
//! inside the topic's retention), and a [`Released`] when the command has its final
//! event. On the commands topic, in the partition the command was read from and with
//! its key: a [`Completion`], which the worker owning that partition turns into the
//! final event in key order, so the first completion of an attempt is the only one.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::headers::{header_names as h, DecodeError, HeaderMap};
use super::{event_headers, json_bytes, json_event, CancelRequest, Command, ErrorInfo, State, CANCEL_TYPE};

/// CloudEvents type of a [`Deferral`] on the control topic.
pub const DEFERRED_TYPE: &str = "courier.control.deferred";
/// CloudEvents type of a [`Released`] on the control topic.
pub const RELEASED_TYPE: &str = "courier.control.released";
/// CloudEvents type of a [`Completion`] on the commands topic.
pub const COMPLETION_TYPE: &str = "courier.completion";

/// A command handed off to a handler that answered `202`: everything about it but its
/// payload, so that whoever ends it (a completion, a lapsed lease, a cancel) writes
/// the same final event the worker would have, and the partition and key its later
/// commands wait on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Deferral {
    pub command_id: Uuid,
    pub command_type: String,
    /// The attempt handed off; a callback token names it.
    pub attempt: u32,
    /// The commands-topic partition the command was read from: completions go there.
    pub partition: i32,
    /// The command's record key, standard base64 (any bytes, whole).
    pub key_base64: String,
    pub source: String,
    /// When the command was sent (`ce_time`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// The lease: past `beat` plus this with no heartbeat or progress, the command
    /// ends `timed_out` (or is retried, when its type says so). None: no lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
    /// When it was handed off.
    pub since: DateTime<Utc>,
    /// The last sign of life: the hand-off, a heartbeat or a progress report.
    pub beat: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_partition: Option<i32>,
    /// Spring's `kafka_correlationId`, standard base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The payload, on the control topic (a retry needs it: the command's own record
    /// is committed past); left out of snapshots and completions.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
}

impl Deferral {
    /// The hand-off of `command` (whose payload is `data`), read from `partition`, now.
    pub fn of(command: &Command, data: Value, partition: i32, heartbeat: Option<std::time::Duration>) -> Self {
        let now = Utc::now();
        Deferral {
            command_id: command.id,
            command_type: command.command_type.clone(),
            attempt: command.attempt,
            partition,
            key_base64: STANDARD.encode(command.key.as_deref().unwrap_or_default()),
            source: command.source.clone(),
            sent: command.time,
            deadline: command.deadline,
            heartbeat_ms: heartbeat.map(|d| d.as_millis().min(u64::MAX as u128) as u64),
            since: now,
            beat: now,
            callback_url: command.callback_url.clone(),
            idempotency_key: command.idempotency_key.clone(),
            request_hash: command.request_hash.clone(),
            batch_id: command.batch_id.clone(),
            reply_to: command.reply_to.clone(),
            reply_partition: command.reply_partition,
            correlation_id_base64: command.correlation_id.as_deref().map(|c| STANDARD.encode(c)),
            traceparent: command.traceparent.clone(),
            tenant: command.tenant.clone(),
            data,
        }
    }

    /// The same, without its payload: what snapshots and completions carry.
    pub fn without_data(&self) -> Self {
        Deferral { data: Value::Null, ..self.clone() }
    }

    /// The command's record key, as bytes (empty if the field was tampered with).
    pub fn key(&self) -> Vec<u8> {
        STANDARD.decode(&self.key_base64).unwrap_or_default()
    }

    /// The command it stands for (with its payload when this is the control topic's
    /// copy): what a final event or a retry is made from.
    pub fn command(&self) -> Command {
        Command {
            id: self.command_id,
            command_type: self.command_type.clone(),
            source: self.source.clone(),
            time: self.sent,
            key: Some(self.key()),
            data: self.data.clone(),
            deadline: self.deadline,
            reply_to: self.reply_to.clone(),
            callback_url: self.callback_url.clone(),
            idempotency_key: self.idempotency_key.clone(),
            attempt: self.attempt,
            traceparent: self.traceparent.clone(),
            correlation_id: self.correlation_id_base64.as_deref().and_then(|c| STANDARD.decode(c).ok()),
            reply_partition: self.reply_partition,
            batch_id: self.batch_id.clone(),
            request_hash: self.request_hash.clone(),
            tenant: self.tenant.clone(),
        }
    }

    /// When the lease lapses: the last beat plus the heartbeat timeout. None: no lease.
    pub fn lease_ends_at(&self) -> Option<DateTime<Utc>> {
        self.heartbeat_ms.and_then(|ms| self.beat.checked_add_signed(chrono::Duration::milliseconds(ms.min(i64::MAX as u64) as i64)))
    }

    /// (key, value, headers) for the control topic.
    pub fn encode(&self, source: &str) -> (Vec<u8>, Vec<u8>, HeaderMap) {
        let (value, headers) = json_event(source, DEFERRED_TYPE, self.beat, self.command_id, self);
        (self.command_id.to_string().into_bytes(), value, headers)
    }
}

/// A handed-off attempt ended (a final event, or a retry): its key's later commands
/// go on, and a heartbeat for it arriving later is ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Released {
    pub command_id: Uuid,
    pub attempt: u32,
    pub at: DateTime<Utc>,
}

impl Released {
    pub fn new(command_id: Uuid, attempt: u32) -> Self {
        Released { command_id, attempt, at: Utc::now() }
    }

    /// (key, value, headers) for the control topic.
    pub fn encode(&self, source: &str) -> (Vec<u8>, Vec<u8>, HeaderMap) {
        let (value, headers) = json_event(source, RELEASED_TYPE, self.at, self.command_id, self);
        (self.command_id.to_string().into_bytes(), value, headers)
    }
}

/// A record on the control topic.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlRecord {
    Cancel(CancelRequest),
    Deferred(Box<Deferral>),
    Released(Released),
}

impl ControlRecord {
    pub fn decode(value: Option<&[u8]>, headers: &HeaderMap) -> Result<Self, DecodeError> {
        let ty = headers.require(h::TYPE)?;
        let bytes = || value.filter(|v| !v.is_empty()).ok_or(DecodeError::EmptyValue);
        let json = |e: serde_json::Error| DecodeError::NotJson(e.to_string());
        match ty {
            CANCEL_TYPE => CancelRequest::decode(value, headers).map(ControlRecord::Cancel),
            DEFERRED_TYPE => serde_json::from_slice(bytes()?).map(|d| ControlRecord::Deferred(Box::new(d))).map_err(json),
            RELEASED_TYPE => serde_json::from_slice(bytes()?).map(ControlRecord::Released).map_err(json),
            other => Err(DecodeError::BadHeader { name: h::TYPE, reason: format!("{other:?} is not a control type") }),
        }
    }
}

/// How a deferred attempt ended, sent by the gateway (the handler called back) or by
/// the worker owning its partition (lease lapsed, deadline passed, cancel). Written
/// to the commands topic, in the command's partition with its key, so it queues in
/// the command's lane; its `ce_id` is the command id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Completion {
    /// The command, as handed off.
    pub deferral: Deferral,
    /// `completed`, `failed`, `cancelled` or `timed_out`.
    pub state: State,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// For anything but `completed`. `retryable: true` asks for another attempt
    /// (when the type has attempts left).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    pub at: DateTime<Utc>,
}

impl Completion {
    /// (partition, key, value, headers) for the commands topic.
    pub fn encode(&self, source: &str) -> (i32, Vec<u8>, Vec<u8>, HeaderMap) {
        let id = self.deferral.command_id;
        let headers = event_headers(id, source, COMPLETION_TYPE, self.at, id);
        (self.deferral.partition, self.deferral.key(), json_bytes(self), headers)
    }

    /// Whether a record is a completion (read before decoding it as a command).
    pub fn is_completion(headers: &HeaderMap) -> bool {
        headers.get(h::TYPE) == Some(COMPLETION_TYPE.as_bytes())
    }

    pub fn decode(value: Option<&[u8]>) -> Result<Self, DecodeError> {
        let bytes = value.filter(|v| !v.is_empty()).ok_or(DecodeError::EmptyValue)?;
        let completion: Completion = serde_json::from_slice(bytes).map_err(|e| DecodeError::NotJson(e.to_string()))?;
        if !completion.state.is_final() {
            return Err(DecodeError::NotJson(format!("a completion must end the command, not leave it {}", completion.state.as_str())));
        }
        Ok(completion)
    }
}

/// A hand-off of a `job` command keyed `k` on partition 2, for the tests: with this
/// lease (milliseconds) and deadline.
#[cfg(test)]
pub(crate) fn test_deferral(heartbeat_ms: Option<u64>, deadline: Option<DateTime<Utc>>) -> Deferral {
    let mut c = super::NewCommand::new("job", serde_json::Value::Null).into_command("//t");
    c.key = Some(b"k".to_vec());
    c.deadline = deadline;
    Deferral::of(&c, serde_json::Value::Null, 2, heartbeat_ms.map(std::time::Duration::from_millis))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::NewCommand;

    fn command() -> Command {
        let mut c = NewCommand::new("resize", serde_json::json!({"x": 1})).into_command("//test");
        c.key = Some(vec![0xff, 0x00, b'k']);
        c.callback_url = Some("http://127.0.0.1:9/cb".into());
        c.correlation_id = Some(vec![1, 2, 3]);
        c.reply_to = Some("replies".into());
        c
    }

    #[test]
    fn a_deferral_keeps_every_fact_but_the_payload() {
        let c = command();
        let d = Deferral::of(&c, c.data.clone(), 3, Some(std::time::Duration::from_secs(60)));
        let (key, value, headers) = d.encode("//w");
        assert_eq!(key, c.id.to_string().into_bytes());
        let ControlRecord::Deferred(back) = ControlRecord::decode(Some(&value), &headers).unwrap() else { panic!("not a deferral") };
        assert_eq!(*back, d);
        let again = back.command();
        assert_eq!(again, c);
        assert_eq!(d.without_data().command(), Command { data: Value::Null, ..c });
        assert_eq!(d.lease_ends_at(), Some(d.beat + chrono::Duration::seconds(60)));
    }

    #[test]
    fn without_a_heartbeat_there_is_no_lease() {
        assert_eq!(Deferral::of(&command(), Value::Null, 0, None).lease_ends_at(), None);
    }

    #[test]
    fn completions_go_to_the_commands_partition_with_the_key_and_the_command_id() {
        let d = Deferral::of(&command(), Value::Null, 4, None);
        let done = Completion { deferral: d.clone(), state: State::Completed, result: Some(serde_json::json!({"ok": true})), error: None, at: Utc::now() };
        let (partition, key, value, headers) = done.encode("//gateway");
        assert_eq!((partition, key), (4, vec![0xff, 0x00, b'k']));
        assert_eq!(Command::peek_id(&headers), Some(d.command_id));
        assert!(Completion::is_completion(&headers));
        assert_eq!(Completion::decode(Some(&value)).unwrap(), done);
        let running = Completion { state: State::Started, ..done };
        assert!(Completion::decode(Some(&json_bytes(&running))).is_err());
    }

    #[test]
    fn control_records_decode_by_type() {
        let released = Released::new(Uuid::now_v7(), 1);
        let (_, value, headers) = released.encode("//g");
        assert_eq!(ControlRecord::decode(Some(&value), &headers).unwrap(), ControlRecord::Released(released));
        let cancel = CancelRequest::new(Uuid::now_v7(), None);
        let (_, value, headers) = cancel.encode("//g");
        assert_eq!(ControlRecord::decode(Some(&value), &headers).unwrap(), ControlRecord::Cancel(cancel));
    }
}
