//! The life of one record on a worker: decode -> dispatch -> handle -> publish.
//!
//! Runs as a tokio task per lane: when a record finishes, the next record queued in
//! the same lane (same key, under key ordering) runs in the same task, so ordering
//! needs no extra hand-off. How each outcome is published lives in [`super::outcome`].

use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;
use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use tracing::{info_span, Instrument};

use super::acks::AckJob;
use super::outcome::{dead_letter, publish_final, retry_or_fail, Durable, Final, Processed};
use super::{Record, Shared};
use crate::envelope::{Command, DecodeError, ErrorInfo, Progress, State, Timing};
use crate::offsets::Entry;
use crate::publish::Outgoing;
use crate::router::{Context, HandlerError, HandlerFuture, ProgressSink, Route};

/// How long a handler gets to return after its token fires before it is dropped.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// Runs `entry` and then every record queued behind it in its lane.
pub(super) async fn run_lane(shared: Arc<Shared>, mut entry: Entry<Record>) {
    loop {
        let span = info_span!("command", partition = entry.tp.partition, offset = entry.offset, id = tracing::field::Empty);
        let outcome = process_guarded(&shared, &entry.job).instrument(span).await;
        match settle(&shared, entry, outcome) {
            Some(n) => entry = n,
            None => return,
        }
    }
}

/// Books a record's outcome in the ledger and returns the next record of its lane, if
/// one is queued and may start now. A record still waiting for acknowledgements goes
/// to the ack collector instead, which settles it later.
pub(super) fn settle(shared: &Shared, entry: Entry<Record>, outcome: Processed) -> Option<Entry<Record>> {
    let next = {
        let mut ledger = shared.lock_ledger();
        let next = match outcome {
            Processed::Finished(_durable) => ledger.finish(&entry.tp, entry.offset, entry.epoch, &entry.lane, entry.origin),
            Processed::Parked(id) => {
                ledger.park(&entry, id);
                None
            }
            Processed::Abandoned => {
                ledger.abandon(&entry.tp, entry.epoch);
                None
            }
            Processed::Acking(acking) => {
                drop(ledger);
                shared.acks.send(AckJob { entry, acking });
                return None;
            }
        };
        shared.metrics.in_flight.set(ledger.in_flight() as i64);
        next
    };
    shared.changed.notify_all();
    next
}

/// [`process`], with any panic in Courier's own per-record code (not the handler's,
/// which is caught where it runs) turned into a dead letter for that record: a bug
/// must not leave a record unfinished, which would stop its partition's commits.
async fn process_guarded(shared: &Arc<Shared>, record: &Record) -> Processed {
    if let Some(fault) = &record.fault {
        return dead_letter(shared, record, INTERNAL_ERROR, fault, None, None).await;
    }
    match AssertUnwindSafe(process(shared, record)).catch_unwind().await {
        Ok(processed) => processed,
        Err(panic) => {
            let msg = format!("worker panicked processing this record: {}", crate::supervise::panic_text(panic.as_ref()));
            tracing::error!(message = %msg);
            shared.metrics.panics.get_or_create(&vec![("where".into(), "record".into())]).inc();
            dead_letter(shared, record, INTERNAL_ERROR, &msg, None, None).await
        }
    }
}

/// Dead-letter reason: Courier itself failed on this record (a bug; see the log).
pub(super) const INTERNAL_ERROR: &str = "internal_error";

async fn process(shared: &Arc<Shared>, record: &Record) -> Processed {
    let limit = shared.config.max_message_bytes;
    let size = record.value.as_ref().map_or(0, Vec::len).max(record.wire_size());
    if size > limit {
        let reason = DecodeError::TooLarge { size, limit };
        return dead_letter(shared, record, reason.reason(), &reason.to_string(), None, None).await;
    }
    let mut command = match Command::decode(record.key.as_deref(), record.value.as_deref(), &record.headers) {
        Ok(c) => c,
        Err(e) => return dead_letter(shared, record, e.reason(), &e.to_string(), None, None).await,
    };
    tracing::Span::current().record("id", tracing::field::display(command.id));
    if shared.finished.contains(&command.id) && !crate::dlq::is_replay(&record.headers) {
        tracing::info!("duplicate of a finished command; skipped");
        shared.metrics.duplicates.inc();
        return Processed::Finished(Durable::seen_before());
    }
    let Some(route) = shared.router.get(&command.command_type) else {
        let msg = format!("no handler for command type {:?}", command.command_type);
        return dead_letter(shared, record, "unknown_type", &msg, Some(&command), None).await;
    };
    let queued_ms = command.time.map(|t| (Utc::now() - t).num_milliseconds().max(0) as u64).unwrap_or(0);
    let timing = Timing { queued_ms, execution_ms: 0, attempts: command.attempt };
    if shared.cancelled.contains(&command.id) {
        let err = ErrorInfo { code: "cancelled".into(), message: "cancelled before it ran".into(), retryable: false };
        return publish_final(shared, record, &command, Final::error(State::Cancelled, err, timing)).await;
    }
    if command.deadline.is_some_and(|d| d <= Utc::now()) {
        let err = ErrorInfo { code: "deadline_exceeded".into(), message: "deadline passed before pickup".into(), retryable: false };
        return publish_final(shared, record, &command, Final::error(State::TimedOut, err, timing)).await;
    }
    // The payload moves into the handler; the events about the command never carry it.
    let data = std::mem::take(&mut command.data);
    run_handler(shared, record, &Arc::new(command), route, data, timing).await
}

async fn run_handler(shared: &Arc<Shared>, record: &Record, command: &Arc<Command>, route: &Route, data: Value, mut timing: Timing) -> Processed {
    let stop = &record.stop;
    let announce = Arc::new(Announce { shared: shared.clone(), command: command.clone(), queued_ms: timing.queued_ms, sent: AtomicBool::new(false) });
    let started_after = shared.config.started_after;
    if started_after.is_zero() {
        announce.send();
    }
    let started = Instant::now();
    let handler_token = stop.child_token();
    let cancel = shared.register_running(command.id);
    let ctx = Context::new(
        command.id,
        command.command_type.clone(),
        command.key.clone(),
        command.attempt,
        command.deadline,
        handler_token.clone(),
        progress_sink(announce.clone()),
    );
    // Polled here, not spawned: a handler that returns at once (validation, a cache
    // hit, a no-op) then costs no task, timer or waiter. A panic is caught like a
    // spawned task's would be.
    let mut handler = AssertUnwindSafe(route.call(data, ctx)).catch_unwind();
    let ran = match futures::poll!(&mut handler) {
        Poll::Ready(returned) => Ran::Returned(returned),
        Poll::Pending => {
            let ran = wait_for(&mut handler, command, &cancel, stop, &announce, started_after).await;
            if !matches!(ran, Ran::Returned(_)) {
                handler_token.cancel();
                if tokio::time::timeout(CANCEL_GRACE, &mut handler).await.is_err() {
                    tracing::warn!("handler ignored its cancellation token; dropped after the grace period");
                }
            }
            ran
        }
    };
    shared.unregister_running(&command.id);
    if stop.is_cancelled() && !matches!(ran, Ran::Returned(Ok(Ok(_)))) {
        // The partition is going away (revoke, or shutdown past its grace): a handler
        // that returned an error now most likely did so because its token fired with
        // the stop, not because the command failed. Nothing is published; the next
        // owner runs it again.
        tracing::info!("partition stopped while the handler ran; abandoned for the next owner");
        return Processed::Abandoned;
    }
    timing.execution_ms = started.elapsed().as_millis() as u64;
    shared
        .metrics
        .handler_seconds
        .get_or_create(&vec![("command_type".into(), command.command_type.clone())])
        .observe(started.elapsed().as_secs_f64());
    match ran {
        Ran::Returned(Ok(Ok(value))) => publish_final(shared, record, command, Final::completed(value, timing)).await,
        Ran::Returned(Ok(Err(e))) if e.code == "invalid_payload" => {
            dead_letter(shared, record, "schema_violation", &e.message, Some(command), None).await
        }
        Ran::Returned(Ok(Err(e))) if e.retryable => retry_or_fail(shared, record, command, e).await,
        Ran::Returned(Ok(Err(e))) => publish_final(shared, record, command, Final::error(State::Failed, e.into_info(), timing)).await,
        Ran::Returned(Err(panic)) => {
            let msg = format!("handler panicked: {}", crate::supervise::panic_text(panic.as_ref()));
            tracing::error!(message = %msg);
            dead_letter(shared, record, "handler_panic", &msg, Some(command), None).await
        }
        Ran::DeadlinePassed => {
            let err = HandlerError::permanent("deadline_exceeded", "handler was still running at the deadline");
            publish_final(shared, record, command, Final::error(State::TimedOut, err.into_info(), timing)).await
        }
        Ran::Cancelled => {
            let err = HandlerError::permanent("cancelled", "cancelled while running");
            publish_final(shared, record, command, Final::error(State::Cancelled, err.into_info(), timing)).await
        }
        Ran::Stopped => Processed::Abandoned,
    }
}

/// Waits for a handler that did not return on its first poll, sending the `started`
/// announcement once it has run `started_after`.
async fn wait_for(
    handler: &mut HandlerRun,
    command: &Command,
    cancel: &CancellationToken,
    stop: &CancellationToken,
    announce: &Announce,
    started_after: Duration,
) -> Ran {
    let announce_at = tokio::time::sleep(started_after);
    tokio::pin!(announce_at);
    let deadline = deadline_sleep(command);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            // Biased: when the stop fires together with the handler's token, the
            // stop is what happened.
            biased;
            _ = stop.cancelled() => return Ran::Stopped,
            returned = &mut *handler => return Ran::Returned(returned),
            _ = &mut deadline => return Ran::DeadlinePassed,
            _ = cancel.cancelled() => return Ran::Cancelled,
            _ = &mut announce_at, if !announce.is_sent() => announce.send(),
        }
    }
}

type HandlerRun = futures::future::CatchUnwind<AssertUnwindSafe<HandlerFuture>>;

enum Ran {
    Returned(Result<Result<Value, HandlerError>, Box<dyn std::any::Any + Send>>),
    DeadlinePassed,
    Cancelled,
    Stopped,
}

async fn deadline_sleep(command: &Command) {
    match command.deadline {
        Some(d) => tokio::time::sleep((d - Utc::now()).to_std().unwrap_or_default()).await,
        None => std::future::pending().await,
    }
}


/// A command's `started` event and snapshot, sent at most once: when the handler has
/// run for `--started-after`, or just before its first progress report (so the order
/// started, progress..., final always holds).
struct Announce {
    shared: Arc<Shared>,
    command: Arc<Command>,
    queued_ms: u64,
    sent: AtomicBool,
}

impl Announce {
    fn is_sent(&self) -> bool {
        self.sent.load(AtomicOrdering::Acquire)
    }

    fn send(&self) {
        if !self.sent.swap(true, AtomicOrdering::AcqRel) {
            self.publish(State::Started, None);
        }
    }

    /// A `started` or `progress` event and its snapshot, both advisory.
    fn publish(&self, state: State, progress: Option<Progress>) {
        let (shared, command) = (&self.shared, &self.command);
        let timing = Timing { queued_ms: self.queued_ms, execution_ms: 0, attempts: command.attempt };
        let mut event = shared.event(command, state, None, None, timing);
        event.data.progress = progress;
        shared.sink.advise(shared.snapshot_record(command, &event.data));
        let (key, value, headers) = event.encode();
        shared.sink.advise(Outgoing::new(shared.topics.results.clone(), key, value, headers));
    }
}

/// Progress reports become `progress` events and snapshots, built only when a handler
/// reports (most never do).
fn progress_sink(announce: Arc<Announce>) -> ProgressSink {
    Arc::new(move |p: Progress| {
        announce.send();
        announce.publish(State::Progress, Some(p));
    })
}
