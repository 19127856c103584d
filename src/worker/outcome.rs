//! How a record's outcome leaves the worker: a final event, a retry, or a dead letter.
//!
//! The ledger only lets a record go with a [`Durable`], and only this module makes
//! one: from an acknowledged final event on the results topic, an acknowledged dead
//! letter, a transaction that will carry its outputs, or a final event seen before (a
//! duplicate). So no path can finish a record whose fate is not on the broker.
//!
//! Outputs are checked against the producer's size limit before anything is sent.
//! One that can never be written (too large, refused for good) falls back: a final
//! event to a dead letter (`output_too_large` / `unpublishable`) plus a minimal
//! `failed` event; a dead letter to a minimal one that always fits; and when even that
//! is refused, the record is held: retried with backoff, counted in `held_records`,
//! logged, never finished and never dropped.

use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use super::{Record, Shared};
use crate::dlq::DeadLetter;
use crate::envelope::{header_names, Command, ErrorInfo, NewCommand, State, Timing};
use crate::publish::{Acks, Outgoing, PublishError};
use crate::retry::{retry_headers, retry_record, FailedRecord};
use crate::router::HandlerError;

/// Dead-letter reason: an output of this command is larger than the producer takes.
pub(super) const OUTPUT_TOO_LARGE: &str = "output_too_large";
/// Dead-letter reason: the broker refused an output for good (topic gone, denied).
pub(super) const UNPUBLISHABLE: &str = "unpublishable";

/// Proof that a record's fate is on the broker, so the ledger may finish it (and a
/// commit pass it). Made only in this module.
pub(crate) struct Durable(());

impl Durable {
    /// The command already has a final event (seen on the results topic).
    pub(super) fn seen_before() -> Self {
        Durable(())
    }
}

/// What became of a record.
pub(crate) enum Processed {
    /// Its final event or dead letter is durable: its offset may be committed.
    Finished(Durable),
    /// Sent to a retry tier; its lane waits for this command id to come back.
    Parked(Uuid),
    /// The partition is going away or the worker is stopping: the record was not
    /// finished here and will be consumed again by the next owner.
    Abandoned,
    /// Its final event and snapshot are enqueued; it finishes when the broker has
    /// acknowledged them (awaited off the lane, in [`super::acks`]).
    Acking(Acking),
}

/// A final event on its way: what must still be acknowledged, and what to record once
/// it is.
pub(crate) struct Acking {
    acks: Acks,
    id: Uuid,
    command_type: String,
    state: State,
}

impl Acking {
    /// Waits for the acknowledgements (retrying transient failures until the record's
    /// stop token fires). A final event the broker refuses for good becomes a dead
    /// letter; a refused snapshot or reply copy is reported, the event stands.
    pub async fn wait(self, shared: &Shared, record: &Record) -> Processed {
        match self.acks.wait(&record.stop).await {
            Ok(()) => final_recorded(shared, self.id, &self.command_type, self.state),
            Err(PublishError::Abandoned { .. }) => Processed::Abandoned,
            Err(PublishError::Kafka { topic, source }) if topic == shared.topics.results => {
                refused(shared, "final", &topic, &source);
                let message = format!("the final event could not be published: {source}");
                let command = Command::decode(record.key.as_deref(), record.value.as_deref(), &record.headers).ok();
                dead_letter(shared, record, UNPUBLISHABLE, &message, command.as_ref(), None).await
            }
            Err(PublishError::Kafka { topic, source }) => {
                let kind = if topic == shared.topics.status { "snapshot" } else { "reply" };
                refused(shared, kind, &topic, &source);
                final_recorded(shared, self.id, &self.command_type, self.state)
            }
        }
    }
}

fn refused(shared: &Shared, kind: &str, topic: &str, error: &rdkafka::error::KafkaError) {
    tracing::error!(%topic, %error, kind, "the broker refused an output for good");
    shared.metrics.refused_outputs.get_or_create(&vec![("kind".into(), kind.into())]).inc();
}

/// Bookkeeping once a final event is safely out (or in the transaction's outbox).
fn final_recorded(shared: &Shared, id: Uuid, command_type: &str, state: State) -> Processed {
    shared.finished.insert(id);
    shared.metrics.outcome(command_type, state.as_str());
    tracing::debug!(%id, state = state.as_str(), "final event acknowledged");
    Processed::Finished(Durable(()))
}

/// How a command ended.
pub(super) struct Final {
    pub state: State,
    pub result: Option<Value>,
    pub error: Option<ErrorInfo>,
    pub timing: Timing,
}

impl Final {
    pub fn completed(result: Value, timing: Timing) -> Self {
        Final { state: State::Completed, result: Some(result), error: None, timing }
    }

    pub fn error(state: State, error: ErrorInfo, timing: Timing) -> Self {
        Final { state, result: None, error: Some(error), timing }
    }
}

/// The records a final event is made of: the event, its snapshot, and its copy to
/// `reply_to` when the command names another topic.
fn final_records(shared: &Shared, command: &Command, end: Final) -> Vec<Outgoing> {
    let Final { state, result, error, timing } = end;
    let event = shared.event(command, state, result, error, timing);
    let status = shared.snapshot_record(command, &event.data);
    let (key, value, headers) = event.encode();
    let out = Outgoing::new(shared.topics.results.clone(), key, value, headers);
    let reply = command.reply_to.as_ref().filter(|t| **t != shared.topics.results);
    let reply = reply.map(|topic| Outgoing { topic: topic.clone(), partition: command.reply_partition, ..out.clone() });
    [Some(out), Some(status), reply].into_iter().flatten().collect()
}

/// Publishes the final event (and its copy to `reply_to`) and the snapshot: enqueued
/// together, acknowledged together, one round trip for all. Too large to publish (a
/// huge result, say): the command is dead-lettered instead, with a `failed` event.
pub(super) async fn publish_final(shared: &Shared, record: &Record, command: &Command, end: Final) -> Processed {
    let state = end.state;
    let mut sends = final_records(shared, command, end);
    if let Some(big) = sends.iter().take(2).find(|o| o.wire_size() > shared.output_limit) {
        let message = format!("the {state:?} outputs ({} bytes) exceed the {} byte record limit", big.wire_size(), shared.output_limit);
        return dead_letter(shared, record, OUTPUT_TOO_LARGE, &message, Some(command), None).await;
    }
    if sends.get(2).is_some_and(|reply| reply.wire_size() > shared.output_limit) {
        tracing::error!(limit = shared.output_limit, "reply copy too large; only the results topic gets the final event");
        shared.metrics.refused_outputs.get_or_create(&vec![("kind".into(), "reply".into())]).inc();
        sends.truncate(2);
    }
    match shared.sink.emit_deferred(&record.tp, record.offset, sends).await {
        Some(acks) => Processed::Acking(Acking { acks, id: command.id, command_type: command.command_type.clone(), state }),
        None => final_recorded(shared, command.id, &command.command_type, state),
    }
}

/// A retryable failure: to the next retry tier, or, past the attempt limit, a final
/// `failed` event plus a dead letter (`retries_exhausted`). A retry record the broker
/// cannot take ends the command the same way, with the reason why.
pub(super) async fn retry_or_fail(shared: &Shared, record: &Record, command: &Command, e: HandlerError) -> Processed {
    let policy = &shared.config.retry;
    if command.attempt >= policy.max_attempts {
        let msg = format!("gave up after {} attempts: {}", command.attempt, e.message);
        return dead_letter(shared, record, "retries_exhausted", &msg, Some(command), Some(e.into_info())).await;
    }
    let failed = FailedRecord {
        partition: record.tp.partition,
        key: record.key.as_deref(),
        value: record.value.as_deref(),
        headers: &record.headers,
    };
    let out = retry_record(&shared.topics, policy, &failed, command.attempt, &e.to_string());
    if out.wire_size() > shared.output_limit {
        let msg = format!("retry record over the {} byte limit; last error: {}", shared.output_limit, e.message);
        return dead_letter(shared, record, OUTPUT_TOO_LARGE, &msg, Some(command), Some(e.into_info())).await;
    }
    tracing::info!(attempt = command.attempt, tier = %out.topic, error = %e, "retrying later");
    match shared.sink.emit(&record.tp, record.offset, vec![out], &record.stop).await {
        Ok(()) => {
            shared.metrics.retries.inc();
            Processed::Parked(command.id)
        }
        Err(PublishError::Abandoned { .. }) => Processed::Abandoned,
        Err(PublishError::Kafka { topic, source }) => {
            refused(shared, "retry", &topic, &source);
            let msg = format!("retry tier {topic} refused the record ({source}); last error: {}", e.message);
            dead_letter(shared, record, UNPUBLISHABLE, &msg, Some(command), Some(e.into_info())).await
        }
    }
}

/// Sends a record that cannot be processed to the DLQ, then a `failed` event when its
/// command id is readable. The dead letter is what makes the record durable; the
/// event after it is reported if refused, never a reason to hold the record.
pub(super) async fn dead_letter(
    shared: &Shared,
    record: &Record,
    reason: &str,
    message: &str,
    command: Option<&Command>,
    error: Option<ErrorInfo>,
) -> Processed {
    tracing::warn!(reason, message = %crate::envelope::bounds::truncate(message, 512), "dead-lettering record");
    let attempts = command.map(|c| c.attempt).unwrap_or(1);
    let mut letter = DeadLetter::new(&record.tp.topic, record.tp.partition, record.offset, reason, message, attempts);
    if let Some(first) = record.headers.get_str(retry_headers::FIRST_FAILURE).ok().flatten() {
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(first) {
            letter.first_failure = t.with_timezone(&chrono::Utc);
        }
    }
    let Some(durable) = send_letter(shared, record, &letter).await else { return Processed::Abandoned };
    shared.metrics.dead_letters.get_or_create(&vec![("reason".into(), letter.reason.clone())]).inc();
    let failed_for = match command {
        Some(c) => Some(c.clone()),
        None => Command::peek_id(&record.headers).map(|id| partial_command(id, record)),
    };
    let Some(command) = failed_for else { return Processed::Finished(durable) };
    let err = error.unwrap_or(ErrorInfo { code: letter.reason.clone(), message: letter.message.clone(), retryable: false });
    let timing = Timing { queued_ms: 0, execution_ms: 0, attempts: command.attempt };
    failed_after_letter(shared, record, &command, err, timing).await;
    Processed::Finished(durable)
}

/// Writes the dead letter, whole if it fits, else minimal; a minimal one the broker
/// refuses is retried with backoff for as long as the record is ours. `None`: the
/// record was abandoned (it stays pending; the next owner tries again).
async fn send_letter(shared: &Shared, record: &Record, letter: &DeadLetter) -> Option<Durable> {
    let (dlq, limit) = (&shared.topics.dlq, shared.output_limit);
    let (key, value) = (record.key.as_deref(), record.value.as_deref());
    let whole = letter.to_record_within(dlq, key, value, &record.headers, limit);
    match shared.sink.emit(&record.tp, record.offset, vec![whole], &record.stop).await {
        Ok(()) => return Some(Durable(())),
        Err(PublishError::Abandoned { .. }) => return None,
        Err(PublishError::Kafka { topic, source }) => refused(shared, "dead_letter", &topic, &source),
    }
    let mut backoff = Duration::from_secs(1);
    let mut held = false;
    let done = loop {
        let minimal = letter.minimal_record(dlq, key, value, &record.headers, limit);
        match shared.sink.emit(&record.tp, record.offset, vec![minimal], &record.stop).await {
            Ok(()) => break Some(Durable(())),
            Err(PublishError::Abandoned { .. }) => break None,
            Err(PublishError::Kafka { topic, source }) => {
                tracing::error!(%topic, error = %source, ?backoff, partition = record.tp.partition, offset = record.offset,
                    "not even a minimal dead letter could be written; the record is held and retried");
            }
        }
        if !held {
            held = true;
            shared.metrics.held_records.inc();
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = record.stop.cancelled() => break None,
        }
        backoff = (backoff * 2).min(Duration::from_secs(60));
    };
    if held {
        shared.metrics.held_records.dec();
    }
    done
}

/// The `failed` event (and snapshot) that follows a dead letter. Its echoes are
/// bounded; if its record key alone is too large, it is keyed by the command id.
async fn failed_after_letter(shared: &Shared, record: &Record, command: &Command, err: ErrorInfo, timing: Timing) {
    let mut sends = final_records(shared, command, Final::error(State::Failed, err, timing));
    if sends[0].wire_size() > shared.output_limit {
        tracing::warn!("record key too large for its failed event; keyed by the command id instead");
        sends[0].key = Some(command.id.to_string().into_bytes());
    }
    sends.retain(|o| o.wire_size() <= shared.output_limit);
    let acks = match shared.sink.emit_deferred(&record.tp, record.offset, sends).await {
        Some(acks) => acks.wait(&record.stop).await,
        None => Ok(()),
    };
    match acks {
        Ok(()) => {
            final_recorded(shared, command.id, &command.command_type, State::Failed);
        }
        Err(PublishError::Abandoned { .. }) => {}
        Err(PublishError::Kafka { topic, source }) => refused(shared, "final", &topic, &source),
    }
}

/// The parts of an undecodable command that a `failed` event needs.
fn partial_command(id: Uuid, record: &Record) -> Command {
    let header = |name: &'static str| record.headers.get_str(name).ok().flatten().filter(|v| !v.is_empty()).map(str::to_string);
    let mut cmd = NewCommand::new(header(header_names::TYPE).unwrap_or_default(), Value::Null).into_command("");
    cmd.id = id;
    cmd.key = record.key.clone();
    cmd.correlation_id = record.headers.get(header_names::SPRING_CORRELATION_ID).map(<[u8]>::to_vec);
    cmd.reply_to = header(header_names::REPLY_TO).or_else(|| header(header_names::SPRING_REPLY_TOPIC));
    cmd.reply_partition = Command::peek_reply_partition(&record.headers);
    cmd
}
