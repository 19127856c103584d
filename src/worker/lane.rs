//! The life of one record on a worker, top to bottom. Start here.
//!
//! A lane is the queue a record waits in (same key, under key ordering): the
//! consumer thread admits a record to the ledger and, if its lane is idle, starts
//! a task for it ([`Lanes::start`]). [`process`] then takes the record through five steps:
//!
//! 1. **Read**: size check and [`Command::decode`]; a record that is not a command
//!    Courier can run is decided at once (a dead letter with its reason).
//! 2. **Admit**: what the worker knows before running it: a final event exists
//!    (duplicate), no handler for its type, a cancel seen, a deadline already past.
//! 3. **Run** the handler ([`super::handler`]): its route's tower layers, raced
//!    against the deadline, a cancel and the partition's stop, panics caught.
//! 4. **Decide** what that means: a [`Disposition`], a plain value
//!    ([`super::disposition`] holds the table and its tests).
//! 5. **Emit** it ([`super::emit`]): records to the sink. At-least-once, their
//!    record settles off the lane when their delivery reports are in
//!    ([`Lanes::when_acknowledged`]); exactly-once, the outbox takes them and the
//!    record settles at once.
//!
//! Then **settle** ([`settle`]): the ledger marks the record finished, parked (away in
//! a retry tier) or abandoned, and hands back the next record of the same lane, which
//! runs in the same task, or in a new one started where the record settled. Either way it
//! starts only after its predecessor settled: that is the per-key order.
//!
//! One shortcut: a final event at-least-once hands its lane on as soon as it is
//! enqueued ([`Lanes::run`], [`super::emit::Pending::hand_on`]), before the broker has
//! acknowledged it. The next record of the key then runs at once, and its outputs
//! queue behind its predecessor's on the same results partition, in order (the
//! idempotent producer keeps it); the predecessor stays running and pending in the
//! ledger until acknowledged, so no commit passes it and a drain waits for it. What
//! it costs: after a crash, a command whose final event was not yet acknowledged runs
//! again after its successor ran; and a final event whose delivery failed for good
//! (after `message.timeout.ms` of retries) and is sent again lands after its
//! successor's. Without it, a key's commands were spaced by a produce round trip each,
//! and that, not the CPU, bounded throughput (see the bench figures in the README).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use chrono::Utc;
use futures::FutureExt;
use tracing::{info_span, Instrument};

use super::disposition::{self, Disposition, Known, Letter};
use super::emit::{emit, Emitted, Pending, Settled};
use crate::offsets::Entry;
use super::state::{Record, WorkerState};
use crate::envelope::{Command, Completion, DecodeError, Reason, Timing};

/// Starts lanes: what the consumer thread and the delivery reports share to run a
/// record (the worker's state and the runtime).
#[derive(Clone)]
pub(crate) struct Lanes {
    pub shared: Arc<WorkerState>,
    pub(super) runtime: tokio::runtime::Handle,
}

impl Lanes {
    pub fn new(shared: Arc<WorkerState>, runtime: tokio::runtime::Handle) -> Self {
        Lanes { shared, runtime }
    }

    /// Runs `entry` (whose lane the ledger just made busy) in a task of its own.
    pub fn start(&self, entry: Entry<Record>) {
        self.runtime.spawn(self.clone().run(entry));
    }

    /// Runs `entry`, then every record queued behind it in its lane.
    async fn run(self, mut entry: Entry<Record>) {
        let shared = &self.shared;
        loop {
            let span = info_span!("command", partition = entry.tp.partition, offset = entry.offset, id = tracing::field::Empty);
            let settled = match process_guarded(shared, &entry.job).instrument(span).await {
                Emitted::Settled(settled) => settled,
                Emitted::Pending(pending) => {
                    if !pending.hand_on(shared) {
                        self.when_acknowledged(entry, pending, false);
                        return;
                    }
                    let next = hand_on(shared, &entry);
                    self.when_acknowledged(entry, pending, true);
                    match next {
                        Some(next) => {
                            entry = next;
                            continue;
                        }
                        None => return,
                    }
                }
            };
            match settle(shared, entry, settled, false) {
                Some(next) => entry = next,
                None => return,
            }
        }
    }

    /// Settles a record whose outputs are enqueued once the broker has answered for
    /// them (`handed_on`: its lane already went on). The common case, every output
    /// acknowledged, settles right on the publisher's polling thread as the last
    /// report is counted; the rest (retries, refusals) goes on in a task. The
    /// partition's stop does not cut the wait short: reports come within
    /// `message.timeout.ms`, a drain waits for them within its grace and the abandon
    /// wait, and a partition released first is never committed past them (a report
    /// that comes later meets a stale epoch and changes nothing).
    fn when_acknowledged(&self, entry: Entry<Record>, pending: Pending, handed_on: bool) {
        let lanes = self.clone();
        pending.when_acknowledged(self.shared.clone(), move |acknowledged| match acknowledged {
            Ok(settled) => {
                let settling = AssertUnwindSafe(|| lanes.settled(entry, settled, handed_on));
                if let Err(panic) = std::panic::catch_unwind(settling) {
                    // A bug; the record stays pending (no commit passes it) until its
                    // partition moves, and is run again there.
                    lanes.panicked_settling(panic.as_ref());
                }
            }
            Err(rest) => {
                let runtime = lanes.runtime.clone();
                runtime.spawn(async move {
                    match AssertUnwindSafe(rest.settle(&lanes.shared, &entry.job)).catch_unwind().await {
                        Ok(settled) => lanes.settled(entry, settled, handed_on),
                        Err(panic) => lanes.panicked_settling(panic.as_ref()),
                    }
                });
            }
        });
    }

    /// Books how a record settled, and starts the next record of its lane.
    fn settled(&self, entry: Entry<Record>, settled: Settled, handed_on: bool) {
        if let Some(next) = settle(&self.shared, entry, settled, handed_on) {
            self.start(next);
        }
    }

    fn panicked_settling(&self, panic: &(dyn std::any::Any + Send)) {
        tracing::error!(panic = %crate::supervise::panic_text(panic), "panic settling an acknowledged record; it stays unsettled until its partition moves");
        self.shared.metrics.panics.get_or_create(&vec![("where".into(), "acks".into())]).inc();
    }
}

/// [`process`], with a panic in Courier's own per-record code (not the handler's,
/// caught where it runs) turned into a dead letter: a bug must not leave a record
/// unfinished, which would stop its partition's commits.
async fn process_guarded(shared: &Arc<WorkerState>, record: &Record) -> Emitted {
    let fault = match &record.fault {
        Some(fault) => fault.clone(),
        None => match AssertUnwindSafe(process(shared, record)).catch_unwind().await {
            Ok(emitted) => return emitted,
            Err(panic) => {
                shared.metrics.panics.get_or_create(&vec![("where".into(), "record".into())]).inc();
                format!("worker panicked processing this record: {}", crate::supervise::panic_text(panic.as_ref()))
            }
        },
    };
    tracing::error!(message = %fault);
    Box::pin(emit(shared, record, None, Letter::new(Reason::InternalError, fault).into())).await
}

/// Steps 1 to 5 for one record.
async fn process(shared: &Arc<WorkerState>, record: &Record) -> Emitted {
    if Completion::is_completion(&record.headers) {
        // Rare, and a large future: boxed, so the lane's own future stays small
        // (it is moved into a new task for most commands).
        return Box::pin(process_completion(shared, record)).await;
    }
    // 1. Read.
    let mut command = match read(shared, record) {
        Ok(command) => command,
        Err(error) => return Box::pin(emit(shared, record, None, disposition::unreadable(&error))).await,
    };
    tracing::Span::current().record("id", tracing::field::display(command.id));
    let route = shared.router.get(&command.command_type);
    if command.deadline.is_none() {
        command.deadline = route.and_then(|r| r.default_deadline).and_then(|d| default_deadline(command.time, d));
    }
    // 2. Admit.
    let queued_ms = command.time.map(|t| (Utc::now() - t).num_milliseconds().max(0) as u64).unwrap_or(0);
    let mut timing = Timing { queued_ms, execution_ms: 0, attempts: command.attempt };
    let known = Known {
        finished: shared.finished.contains(&command.id),
        replayed: crate::envelope::is_replay(&record.headers),
        cancelled: shared.cancelled.contains(&command.id),
        past_deadline: command.deadline.is_some_and(|d| d <= Utc::now()),
        handed_off: shared.deferrals.covers(&command.id, command.attempt),
    };
    let route = match disposition::before_run(&command.command_type, route, known, timing.clone()) {
        Ok(route) => route,
        Err(decided) => return Box::pin(emit(shared, record, Some(&command), decided)).await,
    };
    // 3. Run. The payload moves into the handler; events about the command never carry it.
    // A handler that may take the command over leaves a copy, for a later retry.
    let input = std::mem::take(&mut command.data);
    let kept = route.hands_off.then(|| input.clone());
    let command = Arc::new(command);
    let (ran, took) = super::handler::run(shared, &command, route, input, queued_ms, record).await;
    timing.execution_ms = took.as_millis() as u64;
    // 4. Decide.
    let max_attempts = route.retry_policy(&shared.config.retry).max_attempts;
    let decided = disposition::after_run(ran, record.stop.is_cancelled(), command.attempt, max_attempts, timing.clone());
    // 5. Emit.
    if decided == Disposition::Deferred {
        return Box::pin(super::emit::hand_off(shared, record, &command, kept.unwrap_or_default(), timing)).await;
    }
    emit(shared, record, Some(&command), decided).await
}

/// A handed-off command's outcome ([`Completion`]), in its lane like a command: the
/// first one for the attempt handed off writes the final event (or the retry)
/// exactly as the handler's answer would have; any other is a duplicate or stale.
async fn process_completion(shared: &Arc<WorkerState>, record: &Record) -> Emitted {
    let done = match Completion::decode(record.value.as_deref()) {
        Ok(done) => done,
        Err(error) => return emit(shared, record, None, disposition::unreadable(&error)).await,
    };
    let id = done.deferral.command_id;
    tracing::Span::current().record("id", tracing::field::display(id));
    let current = shared.deferrals.get(&id).filter(|d| d.attempt == done.deferral.attempt);
    let held = current.as_ref().map(|d| (done.at - d.since).num_milliseconds().max(0) as u64).unwrap_or(0);
    let queued_ms = current.as_ref().and_then(|d| d.sent.map(|t| (d.since - t).num_milliseconds().max(0) as u64)).unwrap_or(0);
    let timing = Timing { queued_ms, execution_ms: held, attempts: done.deferral.attempt };
    let max_attempts = shared.retry_policy(&done.deferral.command_type).max_attempts;
    let decided = disposition::completion(&done, shared.finished.contains(&id), current.is_some(), max_attempts, timing);
    let Some(deferral) = current else {
        return emit(shared, record, None, decided).await;
    };
    tracing::info!(state = done.state.as_str(), attempt = deferral.attempt, "completion of a handed-off command");
    // The command's own record, rebuilt: a retry or a dead letter then carries the
    // command (replayable), not the completion.
    let command = deferral.command();
    let (key, value, headers) = command.encode();
    let own = Record { tp: record.tp.clone(), offset: record.offset, key: Some(key), value: Some(value), headers, stop: record.stop.clone(), fault: None };
    emit(shared, &own, Some(&Command { data: serde_json::Value::Null, ..command }), decided).await
}

/// A type's default deadline for a command sent without one: `within` after it was
/// sent (or from now, when the producer did not say when).
fn default_deadline(sent: Option<chrono::DateTime<Utc>>, within: std::time::Duration) -> Option<chrono::DateTime<Utc>> {
    sent.unwrap_or_else(Utc::now).checked_add_signed(chrono::Duration::from_std(within).ok()?)
}

/// The record as a command, within the size the worker accepts.
fn read(shared: &WorkerState, record: &Record) -> Result<Command, DecodeError> {
    let limit = shared.config.max_message_bytes;
    let size = record.value.as_ref().map_or(0, Vec::len).max(record.wire_size());
    if size > limit {
        return Err(DecodeError::TooLarge { size, limit });
    }
    Command::decode(record.key.as_deref(), record.value.as_deref(), &record.headers)
}

/// Lets the lane of a record whose final event is enqueued go on to its next
/// record ([`super::emit::Pending::hand_on`]); the record itself settles later.
fn hand_on(shared: &WorkerState, entry: &Entry<Record>) -> Option<Entry<Record>> {
    shared.lock_ledger().hand_on(&entry.tp, entry.epoch, &entry.lane)
}

/// Books a record's fate in the ledger and returns the next record of its lane, if
/// one is queued and may start now (`handed_on`: its lane already went on).
pub(crate) fn settle(shared: &WorkerState, entry: Entry<Record>, settled: Settled, handed_on: bool) -> Option<Entry<Record>> {
    let next = {
        let mut ledger = shared.lock_ledger();
        let next = match settled {
            Settled::Finished(_durable) if handed_on => {
                ledger.finish_handed_on(&entry.tp, entry.offset, entry.epoch, entry.origin);
                None
            }
            Settled::Finished(_durable) => ledger.finish(&entry.tp, entry.offset, entry.epoch, &entry.lane, entry.origin),
            Settled::Parked(id) => {
                ledger.park(&entry, id);
                None
            }
            Settled::Deferred(id) => {
                ledger.defer(&entry, id);
                None
            }
            // Back to waiting as before the record resumed the lane: behind a retry
            // (it took the original's offset along), or behind the hand-off.
            Settled::Stale(id) if entry.origin.is_some() => {
                ledger.park(&entry, id);
                None
            }
            Settled::Stale(id) if shared.deferrals.get(&id).is_some() => {
                ledger.defer(&entry, id);
                None
            }
            Settled::Stale(_) => ledger.finish(&entry.tp, entry.offset, entry.epoch, &entry.lane, entry.origin),
            Settled::Abandoned => {
                ledger.abandon(&entry.tp, entry.epoch);
                None
            }
        };
        shared.metrics.in_flight.set(ledger.in_flight() as i64);
        next
    };
    shared.changed.notify_all();
    next
}
