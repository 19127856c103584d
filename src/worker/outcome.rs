//! How a record's outcome leaves the worker: a final event, a retry, or a dead letter.
//! Each path waits for the broker's acknowledgement before the record counts as
//! finished, which is what makes the commit after it safe; a final event's wait
//! happens off the lane ([`Processed::Acking`]).

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Record, Shared};
use crate::dlq::DeadLetter;
use crate::envelope::{header_names, Command, ErrorInfo, NewCommand, State, Timing};
use crate::publish::{Acks, Outgoing, PublishError};
use crate::retry::{retry_headers, retry_record, FailedRecord};
use crate::router::HandlerError;

/// What became of a record.
pub(crate) enum Processed {
    /// Its final event (or dead letter) is acknowledged: its offset may be committed.
    Finished,
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
    /// Waits for the acknowledgements (retrying transient failures until `stop`).
    pub async fn wait(self, shared: &Shared, stop: &CancellationToken) -> Processed {
        match self.acks.wait(stop).await {
            Ok(()) => final_recorded(shared, self.id, &self.command_type, self.state),
            Err(e) => publish_failed(e),
        }
    }
}

/// Bookkeeping once a final event is safely out.
fn final_recorded(shared: &Shared, id: Uuid, command_type: &str, state: State) -> Processed {
    shared.finished.insert(id);
    shared.metrics.outcome(command_type, state.as_str());
    tracing::debug!(%id, state = state.as_str(), "final event acknowledged");
    Processed::Finished
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

/// Publishes the final event (and its copy to `reply_to`) and the snapshot: enqueued
/// together, acknowledged together, one round trip for all.
pub(super) async fn publish_final(shared: &Shared, record: &Record, command: &Command, end: Final) -> Processed {
    let Final { state, result, error, timing } = end;
    let event = shared.event(command, state, result, error, timing);
    let status = shared.snapshot_record(command, &event.data);
    let (key, value, headers) = event.encode();
    let out = Outgoing::new(shared.topics.results.clone(), key, value, headers);
    let reply = command.reply_to.as_ref().filter(|t| **t != shared.topics.results);
    let reply = reply.map(|topic| Outgoing { topic: topic.clone(), partition: command.reply_partition, ..out.clone() });
    let sends: Vec<Outgoing> = [Some(out), Some(status), reply].into_iter().flatten().collect();
    match shared.sink.emit_deferred(&record.tp, record.offset, sends).await {
        Some(acks) => Processed::Acking(Acking { acks, id: command.id, command_type: command.command_type.clone(), state }),
        None => final_recorded(shared, command.id, &command.command_type, state),
    }
}

fn publish_failed(e: PublishError) -> Processed {
    match e {
        PublishError::Abandoned { .. } => Processed::Abandoned,
        PublishError::Kafka { .. } => {
            // A permanently unpublishable event (reply topic missing, say) must not
            // wedge the partition; the results-topic copy went first, so the outcome
            // is recorded there.
            tracing::error!(error = %e, "final event copy could not be published");
            Processed::Finished
        }
    }
}

/// A retryable failure: to the next retry tier, or, past the attempt limit, a final
/// `failed` event plus a dead letter (`retries_exhausted`).
pub(super) async fn retry_or_fail(shared: &Shared, record: &Record, command: &Command, e: HandlerError) -> Processed {
    let policy = &shared.config.retry;
    if command.attempt >= policy.max_attempts {
        let msg = format!("gave up after {} attempts: {}", command.attempt, e.message);
        return dead_letter(shared, record, "retries_exhausted", &msg, Some(command), Some(e.into_info())).await;
    }
    let failed = FailedRecord {
        partition: record.tp.1,
        key: record.key.as_deref(),
        value: record.value.as_deref(),
        headers: &record.headers,
    };
    let out = retry_record(&shared.topics, policy, &failed, command.attempt, &e.to_string());
    tracing::info!(attempt = command.attempt, tier = %out.topic, error = %e, "retrying later");
    match shared.sink.emit(&record.tp, record.offset, vec![out], &record.stop).await {
        Ok(()) => {
            shared.metrics.retries.inc();
            Processed::Parked(command.id)
        }
        Err(e) => publish_failed(e),
    }
}

/// Sends a record that cannot be processed to the DLQ, plus a `failed` event when
/// its command id is readable, and waits for both acks.
pub(super) async fn dead_letter(
    shared: &Shared,
    record: &Record,
    reason: &str,
    message: &str,
    command: Option<&Command>,
    error: Option<ErrorInfo>,
) -> Processed {
    tracing::warn!(reason, message, "dead-lettering record");
    let attempts = command.map(|c| c.attempt).unwrap_or(1);
    let mut letter = DeadLetter::new(&record.tp.0, record.tp.1, record.offset, reason, message, attempts);
    if let Some(first) = record.headers.get_str(retry_headers::FIRST_FAILURE).ok().flatten() {
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(first) {
            letter.first_failure = t.with_timezone(&chrono::Utc);
        }
    }
    let out = letter.to_record(&shared.topics.dlq, record.key.as_deref(), record.value.as_deref(), &record.headers);
    if let Err(e) = shared.sink.emit(&record.tp, record.offset, vec![out], &record.stop).await {
        return publish_failed(e);
    }
    shared.metrics.dead_letters.get_or_create(&vec![("reason".into(), reason.into())]).inc();
    let failed_for = match command {
        Some(c) => Some(c.clone()),
        None => Command::peek_id(&record.headers).map(|id| partial_command(id, record)),
    };
    let Some(command) = failed_for else { return Processed::Finished };
    let err = error.unwrap_or(ErrorInfo { code: reason.to_string(), message: message.to_string(), retryable: false });
    let timing = Timing { queued_ms: 0, execution_ms: 0, attempts: command.attempt };
    publish_final(shared, record, &command, Final::error(State::Failed, err, timing)).await
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
