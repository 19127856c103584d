//! Turning a [`Disposition`] into records, and settling the record once they are on
//! the broker.
//!
//! The one place outputs leave a lane. Every kind goes the same way: the records are
//! handed to the [`Sink`] without waiting; at-least-once, the record settles off the
//! lane once their delivery reports are in ([`Pending::when_acknowledged`], called by
//! [`super::lane`]); exactly-once, the records wait in the outbox for the transaction
//! that commits their offset, and the record settles at once.
//!
//! The ledger only lets a record go with a [`Durable`], and only this module makes
//! one: from an acknowledged final event, an acknowledged dead letter, a transaction
//! that will carry its outputs, or a final event seen before (a duplicate). So no
//! path can finish a record whose fate is not on the broker.
//!
//! Outputs are checked against the producer's size limit before anything is sent.
//! One that can never be written (too large, refused for good) falls back: a final
//! event or retry record to a dead letter (`output_too_large` / `unpublishable`); a
//! dead letter to a minimal one that always fits; and when even that is refused, the
//! record is held: retried with backoff, counted in `held_records`, logged, never
//! finished and never dropped.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use super::disposition::{Disposition, Final, Letter};
use super::state::{Record, WorkerState};
use crate::envelope::DeadLetter;
use crate::envelope::{header_names, Command, Deferral, NewCommand, OperationSnapshot, Reason, Released, ResultData, ResultEvent, State, Timing};
use crate::publish::{Acks, Outgoing, PublishError};
use crate::retry::{retry_headers, retry_record, FailedRecord};
use crate::router::HandlerError;

/// Proof that a record's fate is on the broker, so the ledger may finish it (and a
/// commit pass it). Made only in this module.
pub(crate) struct Durable(());

/// What the ledger is told about a record.
pub(crate) enum Settled {
    /// Its final event or dead letter is durable: its offset may be committed.
    Finished(Durable),
    /// Sent to a retry tier; its lane waits for this command id to come back.
    Parked(Uuid),
    /// Handed off to its handler, the hand-off durable: the record is finished and
    /// its lane waits for this command id's completion.
    Deferred(Uuid),
    /// About an attempt already handed off: nothing written; the lane goes back to
    /// waiting for this command id as it was.
    Stale(Uuid),
    /// Not finished here: the partition is going away, and the next owner runs it.
    Abandoned,
}

/// What emitting left to do.
pub(crate) enum Emitted {
    /// Nothing to wait for.
    Settled(Settled),
    /// Records enqueued; the record settles once the broker has acknowledged them.
    Pending(Pending),
}

/// Records on their way, and what their acknowledgement means.
pub(crate) struct Pending {
    acks: Acks,
    then: Then,
}

pub(crate) enum Then {
    /// A final event (with snapshot and reply copy): the record is finished.
    /// `released`: the handed-off attempt it ends.
    Final { id: Uuid, command_type: String, state: State, released: Option<u32> },
    /// A retry record: the lane parks; refused, the command is dead-lettered instead.
    Retry { id: Uuid, error: HandlerError, released: Option<u32> },
    /// The hand-off: `started` event, snapshot and deferral record.
    Deferred { deferral: Box<Deferral> },
    /// A dead letter (`minimal`: the fallback that always fits), then its `failed`
    /// event. `held`: a minimal letter was refused at least once.
    Letter { letter: Box<DeadLetter>, minimal: bool, held: Option<Duration>, failed: Option<Box<(Command, Letter)>> },
    /// The `failed` event after a durable dead letter: the record is finished
    /// whatever the broker says about it.
    FailedEvent { id: Uuid, command_type: String, released: Option<u32> },
}

/// Writes what `disposition` says. `command` is `None` when the record did not decode.
pub(crate) async fn emit(shared: &WorkerState, record: &Record, command: Option<&Command>, disposition: Disposition) -> Emitted {
    match (disposition, command) {
        (Disposition::Duplicate, _) => {
            tracing::info!("duplicate of a finished command; skipped");
            shared.metrics.duplicates.inc();
            if let Some(id) = command.map(|c| c.id).or_else(|| Command::peek_id(&record.headers)) {
                release_duplicate(shared, id);
            }
            Emitted::Settled(Settled::Finished(Durable(())))
        }
        (Disposition::Abandoned, _) => {
            tracing::info!("partition stopped while the handler ran; abandoned for the next owner");
            Emitted::Settled(Settled::Abandoned)
        }
        (Disposition::Stale, _) => {
            tracing::info!("about an attempt already handed off to its handler; skipped");
            shared.metrics.duplicates.inc();
            let id = command.map(|c| c.id).or_else(|| Command::peek_id(&record.headers)).unwrap_or_default();
            Emitted::Settled(Settled::Stale(id))
        }
        // The rare kinds are boxed: a lane's future holds room for the largest kind it
        // awaits inline, and it is moved into a new task for most commands.
        (Disposition::Deferred, Some(command)) => Box::pin(hand_off(shared, record, command, Value::Null, Timing::default())).await,
        (Disposition::Deferred, None) => {
            let letter = Letter::new(Reason::InternalError, "a hand-off was decided for a record that did not decode");
            Box::pin(dead_letter(shared, record, None, letter)).await
        }
        (Disposition::Final(end), Some(command)) => final_event(shared, record, command, end).await,
        (Disposition::Retry(error), Some(command)) => Box::pin(retry(shared, record, command, error)).await,
        (Disposition::DeadLetter(letter), command) => Box::pin(dead_letter(shared, record, command, letter)).await,
        (Disposition::Final(_) | Disposition::Retry(_), None) => {
            let letter = Letter::new(Reason::InternalError, "a final event or retry was decided for a record that did not decode");
            Box::pin(dead_letter(shared, record, None, letter)).await
        }
    }
}

/// The hand-off of `command` (payload `data`) to its handler: a `started` event, a
/// snapshot naming the deferral, and the deferral on the control topic, which every
/// worker reads (so the key stays held back after a rebalance or a crash). Once they
/// are acknowledged the record is finished: its partition commits past it.
pub(crate) async fn hand_off(shared: &WorkerState, record: &Record, command: &Command, data: Value, timing: Timing) -> Emitted {
    let heartbeat = shared.router.get(&command.command_type).and_then(|r| r.heartbeat);
    let deferral = Deferral::of(command, data, record.tp.partition, heartbeat);
    let event = event(shared, command, State::Started, None, None, timing);
    let (key, value, headers) = event.encode();
    let started = Outgoing::new(shared.topics.results.clone(), key, value, headers);
    let mut snapshot = OperationSnapshot::after(command, event.data, &shared.worker_id);
    snapshot.deferred = Some(deferral.without_data());
    let (key, value, headers) = snapshot.encode(&shared.source);
    let status = Outgoing::new(shared.topics.status.clone(), key, value, headers);
    let (key, value, headers) = deferral.encode(&shared.source);
    let mut control = Outgoing::new(shared.topics.control.clone(), key, value, headers);
    if control.wire_size() > shared.output_limit {
        // Without its payload it always fits; what is lost is only a later retry's input.
        tracing::warn!(limit = shared.output_limit, "deferral record too large with its payload; a retry of this command would run with null");
        let (key, value, headers) = deferral.without_data().encode(&shared.source);
        control = Outgoing::new(shared.topics.control.clone(), key, value, headers);
    }
    tracing::info!(attempt = command.attempt, "handed off to its handler; completes through the gateway");
    send(shared, record, vec![started, status, control], Then::Deferred { deferral: Box::new(deferral) }).await
}

/// The control record that frees a handed-off command's key, when `command` is the
/// attempt handed off: part of its final event or retry.
fn release_record(shared: &WorkerState, command: &Command) -> Option<(Outgoing, u32)> {
    shared.deferrals.get(&command.id).filter(|d| d.attempt == command.attempt)?;
    let (key, value, headers) = Released::new(command.id, command.attempt).encode(&shared.source);
    Some((Outgoing::new(shared.topics.control.clone(), key, value, headers), command.attempt))
}

/// After a duplicate: a handed-off command whose final event exists holds its key
/// no longer (the release was lost with a previous owner). Advisory: the lease check
/// would end it again and land here again.
fn release_duplicate(shared: &WorkerState, id: Uuid) {
    if let Some(d) = shared.deferrals.get(&id) {
        let (key, value, headers) = Released::new(id, d.attempt).encode(&shared.source);
        shared.publisher.send_advisory(&Outgoing::new(shared.topics.control.clone(), key, value, headers));
        shared.deferrals.release(&id, d.attempt);
    }
}

/// A result event about `command`, from this worker.
pub(crate) fn event(shared: &WorkerState, command: &Command, state: State, result: Option<Value>, error: Option<crate::envelope::ErrorInfo>, timing: Timing) -> ResultEvent {
    ResultEvent::about(command, &shared.source, &shared.worker_id, state, result, error, timing)
}

/// The status-topic snapshot matching a result event about `command`.
/// Takes the event's data: encode the event first.
pub(crate) fn snapshot_record(shared: &WorkerState, command: &Command, data: ResultData) -> Outgoing {
    let snapshot = OperationSnapshot::after(command, data, &shared.worker_id);
    let (key, value, headers) = snapshot.encode(&shared.source);
    Outgoing::new(shared.topics.status.clone(), key, value, headers)
}

/// The records a final event is made of: the event, its snapshot, and its copy to
/// `reply_to` when the command names another topic.
fn final_records(shared: &WorkerState, command: &Command, end: Final) -> Vec<Outgoing> {
    let Final { state, result, error, timing } = end;
    let event = event(shared, command, state, result, error, timing);
    let (key, value, headers) = event.encode();
    let out = Outgoing::new(shared.topics.results.clone(), key, value, headers);
    let status = snapshot_record(shared, command, event.data);
    let reply = command.reply_to.as_ref().filter(|t| **t != shared.topics.results);
    let reply = reply.map(|topic| Outgoing { topic: topic.clone(), partition: command.reply_partition, ..out.clone() });
    [Some(out), Some(status), reply].into_iter().flatten().collect()
}

/// The final event (and its copy to `reply_to`) and the snapshot, enqueued together,
/// acknowledged together. Too large to publish (a huge result, say): the command is
/// dead-lettered instead, with a `failed` event.
async fn final_event(shared: &WorkerState, record: &Record, command: &Command, end: Final) -> Emitted {
    let state = end.state;
    let mut sends = final_records(shared, command, end);
    if let Some(big) = sends.iter().take(2).find(|o| o.wire_size() > shared.output_limit) {
        let message = format!("the {state:?} outputs ({} bytes) exceed the {} byte record limit", big.wire_size(), shared.output_limit);
        return Box::pin(dead_letter(shared, record, Some(command), Letter::new(Reason::OutputTooLarge, message))).await;
    }
    if sends.get(2).is_some_and(|reply| reply.wire_size() > shared.output_limit) {
        tracing::error!(limit = shared.output_limit, "reply copy too large; only the results topic gets the final event");
        refused_output(shared, "reply");
        sends.truncate(2);
    }
    let released = release_record(shared, command).map(|(out, attempt)| {
        sends.push(out);
        attempt
    });
    let then = Then::Final { id: command.id, command_type: command.command_type.clone(), state, released };
    send(shared, record, sends, then).await
}

/// A retryable failure with attempts left: to the next retry tier.
async fn retry(shared: &WorkerState, record: &Record, command: &Command, error: HandlerError) -> Emitted {
    let policy = shared.retry_policy(&command.command_type);
    let failed = FailedRecord { partition: record.tp.partition, key: record.key.as_deref(), value: record.value.as_deref(), headers: &record.headers };
    let out = retry_record(&shared.topics, policy, &failed, command.attempt, &error.to_string(), error.retry_after);
    if out.wire_size() > shared.output_limit {
        let message = format!("retry record over the {} byte limit; last error: {}", shared.output_limit, error.message);
        let letter = Letter { reason: Reason::OutputTooLarge, message, error: Some(error.into_info()) };
        return dead_letter(shared, record, Some(command), letter).await;
    }
    tracing::info!(attempt = command.attempt, tier = %out.topic, %error, "retrying later");
    let mut outs = vec![out];
    let released = release_record(shared, command).map(|(out, attempt)| {
        outs.push(out);
        attempt
    });
    send(shared, record, outs, Then::Retry { id: command.id, error, released }).await
}

/// A record that cannot be processed: to the DLQ (whole if it fits, else minimal),
/// then a `failed` event when its command id is readable.
async fn dead_letter(shared: &WorkerState, record: &Record, command: Option<&Command>, why: Letter) -> Emitted {
    let (outs, then) = letter_records(shared, record, command, why);
    send(shared, record, outs, then).await
}

fn letter_records(shared: &WorkerState, record: &Record, command: Option<&Command>, why: Letter) -> (Vec<Outgoing>, Then) {
    tracing::warn!(reason = %why.reason, message = %crate::envelope::bounds::truncate(&why.message, 512), "dead-lettering record");
    let attempts = command.map(|c| c.attempt).unwrap_or(1);
    let mut letter = DeadLetter::new(&record.tp.topic, record.tp.partition, record.offset, why.reason, &why.message, attempts);
    if let Some(first) = record.headers.get_str(retry_headers::FIRST_FAILURE).ok().flatten() {
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(first) {
            letter.first_failure = t.with_timezone(&chrono::Utc);
        }
    }
    let failed = match command {
        Some(c) => Some(c.clone()),
        None => Command::peek_id(&record.headers).map(|id| partial_command(id, record)),
    };
    let whole = letter.to_record_within(&shared.topics.dlq, record.key.as_deref(), record.value.as_deref(), &record.headers, shared.output_limit);
    (vec![whole], Then::Letter { letter: Box::new(letter), minimal: false, held: None, failed: failed.map(|c| Box::new((c, why))) })
}

/// The one way out: hand the records to the sink, and settle now (the outbox
/// carries them) or once they are acknowledged.
async fn send(shared: &WorkerState, record: &Record, mut outs: Vec<Outgoing>, mut then: Then) -> Emitted {
    loop {
        shared.co_partition(&mut outs, record.tp.partition);
        match shared.sink.emit(&record.tp, record.offset, outs).await {
            Some(acks) => return Emitted::Pending(Pending { acks, then }),
            None => match then.acknowledged(shared) {
                Step::Done(settled) => return Emitted::Settled(settled),
                // Exactly-once: the failed event after a letter goes into the outbox too.
                Step::Send(more, next) => (outs, then) = (more, next),
            },
        }
    }
}

/// What is left of a record's emit once its first records were answered for.
pub(crate) enum Unsettled {
    /// Some were refused or failed: retried or reported by [`Pending::settle`].
    Pending(Pending),
    /// Acknowledged, and they lead to more records (a dead letter's `failed` event).
    Unsent(Vec<Outgoing>, Then),
}

impl Unsettled {
    /// Finishes the emit, then says how the record settles.
    pub async fn settle(self, shared: &WorkerState, record: &Record) -> Settled {
        let pending = match self {
            Unsettled::Pending(pending) => pending,
            Unsettled::Unsent(outs, then) => match send(shared, record, outs, then).await {
                Emitted::Settled(settled) => return settled,
                Emitted::Pending(pending) => pending,
            },
        };
        pending.settle(shared, record).await
    }
}

/// After an acknowledgement (or refusal): settled, or more records to send.
enum Step {
    Done(Settled),
    Send(Vec<Outgoing>, Then),
}

impl Pending {
    /// Whether the record's lane may go on before the acknowledgement
    /// ([`super::lane`]): yes for a final event at-least-once, whose command then
    /// counts as decided here. The final event is enqueued ahead of anything a later
    /// record of the same key writes, on the same results partition, and the
    /// idempotent producer keeps that order; only the commit point still waits for
    /// it. The id joins the finished set now, so a second copy of the command queued
    /// right behind it is a duplicate, not a second run; it leaves it again if the
    /// record is abandoned.
    pub fn hand_on(&self, shared: &WorkerState) -> bool {
        match &self.then {
            Then::Final { id, .. } => {
                shared.finished.insert(*id);
                true
            }
            _ => false,
        }
    }

    /// Calls `next` once the broker has answered for every record. When all were
    /// acknowledged and that settles the record (a final event, the common case),
    /// `next` gets how it settles, on the publisher's polling thread; otherwise it
    /// gets the rest, for [`Unsettled::settle`] to finish on the runtime (retries,
    /// a refusal, the `failed` event after a dead letter). `next` must not block.
    pub fn when_acknowledged(self, shared: Arc<WorkerState>, next: impl FnOnce(Result<Settled, Unsettled>) + Send + 'static) {
        let Pending { acks, then } = self;
        acks.when_acknowledged(move |acked| match acked {
            Ok(()) => match then.acknowledged(&shared) {
                Step::Done(settled) => next(Ok(settled)),
                Step::Send(outs, then) => next(Err(Unsettled::Unsent(outs, then))),
            },
            Err(acks) => next(Err(Unsettled::Pending(Pending { acks, then }))),
        });
    }

    /// Waits for the acknowledgements (transient failures are retried until the
    /// record's stop token fires) and for whatever they lead to, then says how the
    /// record settles.
    pub async fn settle(self, shared: &WorkerState, record: &Record) -> Settled {
        let Pending { mut acks, mut then } = self;
        loop {
            let step = match acks.wait(&record.stop).await {
                Ok(()) => then.acknowledged(shared),
                Err(PublishError::Abandoned { .. }) => then.abandoned(shared),
                Err(PublishError::Kafka { topic, source }) => then.refused(shared, record, &topic, &source).await,
            };
            match step {
                Step::Done(settled) => return settled,
                Step::Send(outs, next) => match send(shared, record, outs, next).await {
                    Emitted::Settled(settled) => return settled,
                    Emitted::Pending(more) => (acks, then) = (more.acks, more.then),
                },
            }
        }
    }
}

impl Then {
    fn acknowledged(self, shared: &WorkerState) -> Step {
        match self {
            Then::Final { id, command_type, state, released } => {
                if let Some(attempt) = released {
                    shared.deferrals.release(&id, attempt);
                }
                Step::Done(final_recorded(shared, id, &command_type, state))
            }
            Then::Retry { id, released, .. } => {
                if let Some(attempt) = released {
                    shared.deferrals.release(&id, attempt);
                }
                shared.metrics.retries.inc();
                Step::Done(Settled::Parked(id))
            }
            Then::Deferred { deferral } => {
                let id = deferral.command_id;
                shared.deferrals.insert(*deferral);
                shared.metrics.handed_off.inc();
                shared.metrics.deferred.set(shared.deferrals.len() as i64);
                Step::Done(Settled::Deferred(id))
            }
            Then::Letter { letter, held, failed, .. } => {
                if held.is_some() {
                    shared.metrics.held_records.dec();
                }
                shared.metrics.dead_letters.get_or_create(&vec![("reason".into(), letter.reason.clone())]).inc();
                match failed {
                    None => Step::Done(Settled::Finished(Durable(()))),
                    Some(failed) => {
                        let (command, why) = *failed;
                        failed_event(shared, command, &why)
                    }
                }
            }
            Then::FailedEvent { id, command_type, released } => {
                if let Some(attempt) = released {
                    shared.deferrals.release(&id, attempt);
                }
                Step::Done(final_recorded(shared, id, &command_type, State::Failed))
            }
        }
    }

    fn abandoned(self, shared: &WorkerState) -> Step {
        match self {
            // The dead letter is durable already; only its follow-up event was cut short.
            Then::FailedEvent { .. } => Step::Done(Settled::Finished(Durable(()))),
            Then::Letter { held: Some(_), .. } => {
                shared.metrics.held_records.dec();
                Step::Done(Settled::Abandoned)
            }
            Then::Final { id, .. } => {
                // Counted as decided when its lane went on ([`Pending::hand_on`]), but
                // not on the broker: the next owner must run it, and so must this
                // worker if the partition comes back.
                shared.finished.remove(&id);
                Step::Done(Settled::Abandoned)
            }
            _ => Step::Done(Settled::Abandoned),
        }
    }

    async fn refused(self, shared: &WorkerState, record: &Record, topic: &str, error: &rdkafka::error::KafkaError) -> Step {
        match self {
            Then::Final { id, command_type, state, released } if topic != shared.topics.results => {
                // A refused snapshot, reply copy or release is reported; the event
                // stands (a lost release is repaired by the lease check's duplicate).
                refused(shared, if topic == shared.topics.status { "snapshot" } else { "reply" }, topic, error);
                if let Some(attempt) = released {
                    shared.deferrals.release(&id, attempt);
                }
                Step::Done(final_recorded(shared, id, &command_type, state))
            }
            Then::Deferred { .. } => {
                refused(shared, "deferral", topic, error);
                let message = format!("the hand-off to its handler could not be recorded: {error}");
                let command = Command::decode(record.key.as_deref(), record.value.as_deref(), &record.headers).ok();
                letter_step(shared, record, command.as_ref(), Letter::new(Reason::Unpublishable, message))
            }
            Then::Final { .. } => {
                refused(shared, "final", topic, error);
                let message = format!("the final event could not be published: {error}");
                let command = Command::decode(record.key.as_deref(), record.value.as_deref(), &record.headers).ok();
                letter_step(shared, record, command.as_ref(), Letter::new(Reason::Unpublishable, message))
            }
            Then::Retry { error: last, .. } => {
                refused(shared, "retry", topic, error);
                let message = format!("retry tier {topic} refused the record ({error}); last error: {}", last.message);
                let command = Command::decode(record.key.as_deref(), record.value.as_deref(), &record.headers).ok();
                letter_step(shared, record, command.as_ref(), Letter { reason: Reason::Unpublishable, message, error: Some(last.into_info()) })
            }
            Then::Letter { letter, minimal, held, failed } => {
                let held = if !minimal {
                    // Try a minimal letter at once: it leaves out what may be the cause.
                    refused(shared, "dead_letter", topic, error);
                    None
                } else {
                    let backoff = held.unwrap_or_else(|| {
                        shared.metrics.held_records.inc();
                        Duration::from_secs(1)
                    });
                    tracing::error!(%topic, %error, ?backoff, partition = record.tp.partition, offset = record.offset,
                        "not even a minimal dead letter could be written; the record is held and retried");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = record.stop.cancelled() => {
                            shared.metrics.held_records.dec();
                            return Step::Done(Settled::Abandoned);
                        }
                    }
                    Some((backoff * 2).min(Duration::from_secs(60)))
                };
                let limit = shared.output_limit;
                let out = letter.minimal_record(&shared.topics.dlq, record.key.as_deref(), record.value.as_deref(), &record.headers, limit);
                Step::Send(vec![out], Then::Letter { letter, minimal: true, held, failed })
            }
            Then::FailedEvent { .. } => {
                refused(shared, "final", topic, error);
                Step::Done(Settled::Finished(Durable(())))
            }
        }
    }
}

/// A dead letter decided after an output was refused for good.
fn letter_step(shared: &WorkerState, record: &Record, command: Option<&Command>, why: Letter) -> Step {
    let (outs, then) = letter_records(shared, record, command, why);
    Step::Send(outs, then)
}

/// The `failed` event (and snapshot) that follows a durable dead letter. Its echoes
/// are bounded; if its record key alone is too large, it is keyed by the command id.
fn failed_event(shared: &WorkerState, command: Command, why: &Letter) -> Step {
    let timing = Timing { queued_ms: 0, execution_ms: 0, attempts: command.attempt };
    let end = Final { state: State::Failed, result: None, error: Some(why.failed_error()), timing };
    let mut sends = final_records(shared, &command, end);
    if sends[0].wire_size() > shared.output_limit {
        tracing::warn!("record key too large for its failed event; keyed by the command id instead");
        sends[0].key = Some(command.id.to_string().into_bytes());
    }
    sends.retain(|o| o.wire_size() <= shared.output_limit);
    let released = release_record(shared, &command).map(|(out, attempt)| {
        sends.push(out);
        attempt
    });
    Step::Send(sends, Then::FailedEvent { id: command.id, command_type: command.command_type, released })
}

fn refused(shared: &WorkerState, kind: &str, topic: &str, error: &rdkafka::error::KafkaError) {
    tracing::error!(%topic, %error, kind, "the broker refused an output for good");
    refused_output(shared, kind);
}

fn refused_output(shared: &WorkerState, kind: &str) {
    shared.metrics.refused_outputs.get_or_create(&vec![("kind".into(), kind.into())]).inc();
}

/// Bookkeeping once a final event is safely out (or in the transaction's outbox).
fn final_recorded(shared: &WorkerState, id: Uuid, command_type: &str, state: State) -> Settled {
    shared.finished.insert(id);
    shared.metrics.outcome(command_type, state.as_str());
    tracing::debug!(%id, state = state.as_str(), "final event acknowledged");
    Settled::Finished(Durable(()))
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
