//! The life of one record on a worker: decode -> dispatch -> handle -> publish.
//!
//! Runs as a tokio task per lane: when a record finishes, the next record queued in
//! the same lane (same key, under key ordering) runs in the same task, so ordering
//! needs no extra hand-off.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{info_span, Instrument};

use super::ledger::Entry;
use super::{Record, Shared};
use crate::dlq::DeadLetter;
use crate::envelope::{Command, ErrorInfo, Progress, State, Timing};
use crate::publish::{Outgoing, PublishError};
use crate::router::{Context, HandlerError, ProgressSink};

/// How long a handler gets to return after its token fires before it is dropped.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// What became of a record.
enum Processed {
    /// Its final event (or dead letter) is acknowledged: its offset may be committed.
    Finished,
    /// The partition is going away or the worker is stopping: the record was not
    /// finished here and will be consumed again by the next owner.
    Abandoned,
}

/// Runs `entry` and then every record queued behind it in its lane.
pub(super) async fn run_lane(shared: Arc<Shared>, mut entry: Entry<Record>) {
    loop {
        let span = info_span!("command", partition = entry.tp.1, offset = entry.offset, id = tracing::field::Empty);
        let outcome = process(&shared, &entry.job).instrument(span).await;
        let next = {
            let mut ledger = shared.lock_ledger();
            let next = match outcome {
                Processed::Finished => ledger.finish(&entry.tp, entry.offset, entry.epoch, &entry.lane),
                Processed::Abandoned => {
                    ledger.abandon(&entry.tp, entry.epoch);
                    None
                }
            };
            shared.metrics.in_flight.set(ledger.in_flight() as i64);
            next
        };
        shared.changed.notify_all();
        match next {
            Some(n) => entry = n,
            None => return,
        }
    }
}

async fn process(shared: &Shared, record: &Record) -> Processed {
    let stop = &record.stop;
    if let Some(size) = record.value.as_ref().map(Vec::len).filter(|n| *n > shared.config.max_message_bytes) {
        let reason = crate::envelope::DecodeError::TooLarge { size, limit: shared.config.max_message_bytes };
        return dead_letter(shared, record, reason.reason(), &reason.to_string(), None).await;
    }
    let command = match Command::decode(record.key.as_deref(), record.value.as_deref(), &record.headers) {
        Ok(c) => c,
        Err(e) => return dead_letter(shared, record, e.reason(), &e.to_string(), None).await,
    };
    tracing::Span::current().record("id", tracing::field::display(command.id));
    let Some(route) = shared.router.get(&command.command_type).cloned() else {
        let msg = format!("no handler for command type {:?}", command.command_type);
        return dead_letter(shared, record, "unknown_type", &msg, Some(&command)).await;
    };
    let queued_ms = command.time.map(|t| (Utc::now() - t).num_milliseconds().max(0) as u64).unwrap_or(0);
    if command.deadline.is_some_and(|d| d <= Utc::now()) {
        let err = ErrorInfo { code: "deadline_exceeded".into(), message: "deadline passed before pickup".into(), retryable: false };
        let timing = Timing { queued_ms, execution_ms: 0, attempts: command.attempt };
        return publish_final(shared, &command, State::TimedOut, None, Some(err), timing, stop).await;
    }
    let timing = Timing { queued_ms, execution_ms: 0, attempts: command.attempt };
    shared.publisher.send_advisory(&shared.event_record(&command, State::Started, None, None, timing));

    let started = Instant::now();
    let handler_token = stop.child_token();
    let ctx = Context::new(
        command.id,
        command.command_type.clone(),
        command.key.clone(),
        command.attempt,
        command.deadline,
        handler_token.clone(),
        progress_sink(shared, &command),
    );
    let mut task = tokio::spawn(route.call(command.data.clone(), ctx).in_current_span());
    let deadline = deadline_sleep(&command);
    let ran = tokio::select! {
        joined = &mut task => Ran::Returned(joined),
        _ = deadline => Ran::DeadlinePassed,
        _ = stop.cancelled() => Ran::Stopped,
    };
    let ran = match ran {
        Ran::Returned(r) => Ran::Returned(r),
        other => {
            handler_token.cancel();
            if tokio::time::timeout(CANCEL_GRACE, &mut task).await.is_err() {
                task.abort();
            }
            other
        }
    };
    let execution_ms = started.elapsed().as_millis() as u64;
    shared
        .metrics
        .handler_seconds
        .get_or_create(&vec![("command_type".into(), command.command_type.clone())])
        .observe(started.elapsed().as_secs_f64());
    let timing = Timing { queued_ms, execution_ms, attempts: command.attempt };
    match ran {
        Ran::Returned(Ok(Ok(value))) => publish_final(shared, &command, State::Completed, Some(value), None, timing, stop).await,
        Ran::Returned(Ok(Err(e))) if e.code == "invalid_payload" => {
            dead_letter(shared, record, "schema_violation", &e.message, Some(&command)).await
        }
        Ran::Returned(Ok(Err(e))) => publish_final(shared, &command, State::Failed, None, Some(e.into_info()), timing, stop).await,
        Ran::Returned(Err(join)) => {
            let msg = format!("handler panicked: {}", panic_message(join));
            tracing::error!(message = %msg);
            dead_letter(shared, record, "handler_panic", &msg, Some(&command)).await
        }
        Ran::DeadlinePassed => {
            let err = HandlerError::permanent("deadline_exceeded", "handler was still running at the deadline");
            publish_final(shared, &command, State::TimedOut, None, Some(err.into_info()), timing, stop).await
        }
        Ran::Stopped => Processed::Abandoned,
    }
}

enum Ran {
    Returned(Result<Result<Value, HandlerError>, tokio::task::JoinError>),
    DeadlinePassed,
    Stopped,
}

async fn deadline_sleep(command: &Command) {
    match command.deadline {
        Some(d) => tokio::time::sleep((d - Utc::now()).to_std().unwrap_or_default()).await,
        None => std::future::pending().await,
    }
}

fn panic_message(err: tokio::task::JoinError) -> String {
    match err.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic".into()),
        Err(e) => e.to_string(),
    }
}

fn progress_sink(shared: &Shared, command: &Command) -> ProgressSink {
    let publisher = shared.publisher.clone();
    let topic = shared.topics.results.clone();
    let timing = Timing { queued_ms: 0, execution_ms: 0, attempts: command.attempt };
    let template = shared.event(command, State::Progress, None, None, timing);
    Arc::new(move |p: Progress| {
        let mut ev = template.clone();
        ev.id = crate::envelope::new_id();
        ev.time = Utc::now();
        ev.data.progress = Some(p);
        let (key, value, headers) = ev.encode();
        publisher.send_advisory(&Outgoing { topic: topic.clone(), key, value, headers, partition: None });
    })
}

/// Publishes the final event (and its copy to `reply_to`) and waits for both acks.
async fn publish_final(
    shared: &Shared,
    command: &Command,
    state: State,
    result: Option<Value>,
    error: Option<ErrorInfo>,
    timing: Timing,
    stop: &CancellationToken,
) -> Processed {
    let out = shared.event_record(command, state, result, error, timing);
    let mut sends = vec![out.clone()];
    if let Some(reply_to) = command.reply_to.as_ref().filter(|t| **t != shared.topics.results) {
        sends.push(Outgoing { topic: reply_to.clone(), partition: command.reply_partition, ..out });
    }
    for out in &sends {
        if let Err(e) = shared.publisher.send_acked(out, stop).await {
            return publish_failed(e);
        }
    }
    shared.metrics.outcome(&command.command_type, state.as_str());
    tracing::debug!(state = state.as_str(), "final event acknowledged");
    Processed::Finished
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

/// Sends a record that cannot be processed to the DLQ, plus a `failed` event when
/// its command id is readable, and waits for both acks.
async fn dead_letter(shared: &Shared, record: &Record, reason: &str, message: &str, command: Option<&Command>) -> Processed {
    tracing::warn!(reason, message, "dead-lettering record");
    let letter = DeadLetter::new(&record.tp.0, record.tp.1, record.offset, reason, message, 1);
    let out = letter.to_record(&shared.topics.dlq, record.key.as_deref(), record.value.as_deref(), &record.headers);
    if let Err(e) = shared.publisher.send_acked(&out, &record.stop).await {
        return publish_failed(e);
    }
    shared.metrics.dead_letters.get_or_create(&vec![("reason".into(), reason.into())]).inc();
    let failed_for = match command {
        Some(c) => Some(c.clone()),
        None => Command::peek_id(&record.headers).map(|id| partial_command(id, record)),
    };
    let Some(command) = failed_for else { return Processed::Finished };
    let err = ErrorInfo { code: reason.to_string(), message: message.to_string(), retryable: false };
    let timing = Timing { queued_ms: 0, execution_ms: 0, attempts: command.attempt };
    publish_final(shared, &command, State::Failed, None, Some(err), timing, &record.stop).await
}

/// The parts of an undecodable command that a `failed` event needs.
fn partial_command(id: uuid::Uuid, record: &Record) -> Command {
    let header = |name: &'static str| record.headers.get_str(name).ok().flatten().map(str::to_string);
    let mut cmd = crate::envelope::NewCommand::new(header(crate::envelope::header_names::TYPE).unwrap_or_default(), Value::Null)
        .into_command("");
    cmd.id = id;
    cmd.key = record.key.as_ref().map(|k| String::from_utf8_lossy(k).into_owned());
    cmd.correlation_id = record.headers.get(crate::envelope::header_names::SPRING_CORRELATION_ID).map(<[u8]>::to_vec);
    cmd
}
