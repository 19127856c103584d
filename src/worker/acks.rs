//! Waiting for the broker off the lane (at-least-once). A lane task enqueues a
//! command's final event and snapshot and hands their acknowledgements here; one task
//! awaits them all and only then settles the record in the ledger, which starts the
//! next record of its lane.
//!
//! Nothing about ordering or commits changes: the record stays in flight, and below
//! any commit point, until its outputs are acknowledged, exactly as if its lane had
//! waited. The lane task just does not sit parked in between, which spares a wake-up,
//! a re-poll and a tracing span re-entry per command.

use std::sync::Arc;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::execute::{run_lane, settle};
use super::outcome::{Acking, Processed};
use super::{Record, Shared};
use crate::offsets::Entry;

/// A record whose final outputs are enqueued and not yet acknowledged.
pub(crate) struct AckJob {
    pub entry: Entry<Record>,
    pub acking: Acking,
}

/// Where lane tasks hand over [`AckJob`]s. Unbounded on purpose: every job is a
/// record the ledger already counts in flight, so `max_in_flight` bounds it.
pub(crate) struct AckQueue(mpsc::UnboundedSender<AckJob>);

impl AckQueue {
    pub fn new() -> (Self, mpsc::UnboundedReceiver<AckJob>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (AckQueue(tx), rx)
    }

    pub fn send(&self, job: AckJob) {
        if let Err(mpsc::error::SendError(job)) = self.0.send(job) {
            // Only after the collector stopped, i.e. the worker is exiting: the record
            // is not committed and the next owner runs it.
            tracing::debug!(partition = job.entry.tp.partition, offset = job.entry.offset, "worker stopping; acknowledgement not awaited");
        }
    }
}

/// Awaits every job's acknowledgements and settles each record as they land, until
/// `stop` (the worker has drained and committed by then).
pub(super) async fn collect(shared: Arc<Shared>, mut jobs: mpsc::UnboundedReceiver<AckJob>, stop: CancellationToken) {
    let mut waiting = FuturesUnordered::new();
    loop {
        tokio::select! {
            job = jobs.recv() => match job {
                Some(job) => waiting.push(acknowledged(&shared, job)),
                None => return,
            },
            Some((entry, outcome)) = waiting.next(), if !waiting.is_empty() => {
                if let Some(next) = settle(&shared, entry, outcome) {
                    tokio::spawn(run_lane(shared.clone(), next));
                }
            }
            _ = stop.cancelled() => return,
        }
    }
}

async fn acknowledged(shared: &Shared, job: AckJob) -> (Entry<Record>, Processed) {
    let AckJob { entry, acking } = job;
    let waited = std::panic::AssertUnwindSafe(acking.wait(shared, &entry.job));
    let outcome = match futures::FutureExt::catch_unwind(waited).await {
        Ok(outcome) => outcome,
        Err(panic) => {
            // A bug; the record stays pending (no commit passes it) until its
            // partition moves, and is run again there.
            tracing::error!(panic = %crate::supervise::panic_text(panic.as_ref()), "panic awaiting acknowledgements; record abandoned");
            shared.metrics.panics.get_or_create(&vec![("where".into(), "acks".into())]).inc();
            Processed::Abandoned
        }
    };
    (entry, outcome)
}
