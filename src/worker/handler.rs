//! Running one handler: what the core guarantees around every call, whatever tower
//! layers the route has.
//!
//! Four concerns live here and not in layers, because they decide what Courier
//! publishes and must hold for every route: the **deadline** (`timed_out`), a
//! **cancel** (`cancelled`), the partition's **stop** (abandoned, nothing published)
//! and a **panic** (a `handler_panic` dead letter). A layer could swallow any of them;
//! the core cannot. The `started` announcement and progress events are here too, as
//! they follow the handler's own clock.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::FutureExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::disposition::Ran;
use super::emit::{event, snapshot_record};
use super::state::{Record, WorkerState};
use crate::envelope::{Command, Progress, State, Timing};
use crate::publish::Outgoing;
use crate::router::{Context, HandlerFuture, ProgressSink, Route};

/// How long a handler gets to return after its token fires before it is dropped.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// Runs `route`'s handler on `input` under the command's deadline, its cancel and
/// the stop of `record`'s partition; returns how it ended and how long it ran.
pub(crate) async fn run(
    shared: &Arc<WorkerState>,
    command: &Arc<Command>,
    route: &Route,
    input: Value,
    queued_ms: u64,
    record: &Record,
) -> (Ran, Duration) {
    let stop = &record.stop;
    let partition = record.tp.partition;
    let announce = Arc::new(Announce { shared: shared.clone(), command: command.clone(), partition, queued_ms, sent: AtomicBool::new(false) });
    let started_after = shared.config.started_after;
    if started_after.is_zero() {
        announce.send();
    }
    let started = Instant::now();
    let handler_token = stop.child_token();
    let cancel = shared.register_running(command.id);
    let progress = progress_sink(announce.clone());
    let ctx = Context::new(command, handler_token.clone(), progress);
    // Polled here, not spawned: a handler that returns at once (validation, a cache
    // hit, a no-op) then costs no task, timer or waiter. A panic is caught like a
    // spawned task's would be.
    let mut handler = AssertUnwindSafe(route.call(input, ctx)).catch_unwind();
    let ran = match futures::poll!(&mut handler) {
        Poll::Ready(returned) => returned_or_panicked(returned),
        // Boxed, with their timers: only a handler that did not return at once needs
        // them, and a lane's future stays small without them.
        Poll::Pending => {
            let ran = Box::pin(race(&mut handler, command, &cancel, stop, &announce, started_after)).await;
            if !matches!(ran, Ran::Returned(_) | Ran::Panicked(_)) {
                handler_token.cancel();
                if Box::pin(tokio::time::timeout(CANCEL_GRACE, &mut handler)).await.is_err() {
                    tracing::warn!("handler ignored its cancellation token; dropped after the grace period");
                }
            }
            ran
        }
    };
    // Dropped now, not after publishing: the route's layers let go of what they hold
    // (a concurrency permit), and handler_seconds is observed at this point.
    drop(handler);
    shared.unregister_running(&command.id);
    (ran, started.elapsed())
}

type HandlerRun = futures::future::CatchUnwind<AssertUnwindSafe<HandlerFuture>>;
type Returned = Result<<HandlerFuture as std::future::Future>::Output, Box<dyn std::any::Any + Send>>;

fn returned_or_panicked(returned: Returned) -> Ran {
    match returned {
        Ok(result) => Ran::Returned(result),
        Err(panic) => {
            let text = crate::supervise::panic_text(panic.as_ref());
            tracing::error!(message = %format!("handler panicked: {text}"));
            Ran::Panicked(text.to_string())
        }
    }
}

/// Waits for a handler that did not return on its first poll, sending the `started`
/// announcement once it has run `started_after`.
async fn race(
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
            returned = &mut *handler => return returned_or_panicked(returned),
            _ = &mut deadline => return Ran::DeadlinePassed,
            _ = cancel.cancelled() => return Ran::Cancelled,
            _ = &mut announce_at, if !announce.is_sent() => announce.send(),
        }
    }
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
    shared: Arc<WorkerState>,
    command: Arc<Command>,
    /// The commands partition it was read from: its events go to the same one.
    partition: i32,
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
        let (shared, command) = (&*self.shared, &self.command);
        let timing = Timing { queued_ms: self.queued_ms, execution_ms: 0, attempts: command.attempt };
        let mut event = event(shared, command, state, None, None, timing);
        event.data.progress = progress;
        let (key, value, headers) = event.encode();
        shared.sink.advise(snapshot_record(shared, command, event.data));
        let mut out = [Outgoing::new(shared.topics.results.clone(), key, value, headers)];
        shared.co_partition(&mut out, self.partition);
        let [out] = out;
        shared.sink.advise(out);
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
