//! Commands handed off to their handlers (deferred completion), as every worker knows
//! them, and the lease check the owner of each one's partition runs.
//!
//! The registry ([`super::registry::Deferrals`]) is rebuilt from the control topic (read from the start, like
//! cancels): a [`Deferral`] adds or renews a command, a [`Released`] removes it. It
//! answers two questions: which key a newly assigned partition must hold back
//! (its deferred command has not completed), and whether a record is about the
//! attempt that was handed off.
//!
//! The lease check ([`watch`]) runs on every worker but acts only for partitions the
//! worker owns, so one worker at a time decides about a command. When a handed-off
//! command's lease lapses, its deadline passes or a cancel arrives, it writes a
//! [`Completion`] into the command's partition; the partition's owner then runs it in
//! key order like any completion from the gateway, and the first completion of an
//! attempt is the only one: a second (from a previous owner after a rebalance, or the
//! handler calling back at the same moment) finds the final event and is a duplicate.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::lane::Lanes;
use super::state::WorkerState;
use crate::envelope::{Completion, Deferral, ErrorInfo, State};
use crate::kafka::TopicPartition;
use crate::offsets::Entry;
use crate::publish::Outgoing;

/// What the lease check decided about one handed-off command.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ending {
    pub state: State,
    pub error: ErrorInfo,
}

/// Whether a handed-off command must end now, and how: cancelled, past its
/// deadline, or its lease lapsed (retried when `retries` says the type has its own
/// retry policy, else `timed_out`). Pure, for the tests.
pub(crate) fn ending(d: &Deferral, cancelled: bool, retries: bool, now: chrono::DateTime<Utc>) -> Option<Ending> {
    let error = |code: &str, message: String, retryable: bool| ErrorInfo { code: code.into(), message, retryable };
    if cancelled {
        return Some(Ending { state: State::Cancelled, error: error("cancelled", "cancelled while its handler held it".into(), false) });
    }
    if d.deadline.is_some_and(|at| at <= now) {
        return Some(Ending { state: State::TimedOut, error: error("deadline_exceeded", "the deadline passed while its handler held it".into(), false) });
    }
    if d.lease_ends_at().is_some_and(|at| at <= now) {
        let message = format!("no heartbeat or progress from its handler for {} ms", d.heartbeat_ms.unwrap_or_default());
        let state = if retries { State::Failed } else { State::TimedOut };
        return Some(Ending { state, error: error("heartbeat_lapsed", message, retries) });
    }
    None
}

/// How often the lease check runs.
const TICK: Duration = Duration::from_secs(1);
/// How long the check waits for a completion it wrote to be run before writing it
/// again (it may have been lost with a partition's previous owner).
const REWRITE_AFTER: Duration = Duration::from_secs(30);

/// The lease check, until `stop`: ends handed-off commands of this worker's
/// partitions whose lease lapsed, whose deadline passed or that were cancelled
/// (telling the handler's `cancel_url`), and lets go of keys held for a command
/// that ended elsewhere.
pub(crate) async fn watch(lanes: Lanes, stop: CancellationToken) {
    let shared = lanes.shared.clone();
    let client = crate::router::push::push_client().ok();
    let mut written: HashMap<Uuid, Instant> = HashMap::new();
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        for entry in release_stale(&shared) {
            lanes.start(entry);
        }
        if shared.deferrals.len() == 0 {
            written.clear();
            continue;
        }
        let now = Utc::now();
        written.retain(|_, at| at.elapsed() < REWRITE_AFTER);
        for d in shared.deferrals.all() {
            if written.contains_key(&d.command_id) || !owns(&shared, d.partition) {
                continue;
            }
            let route = shared.router.get(&d.command_type);
            let retries = route.is_some_and(|r| r.retry.is_some());
            let Some(end) = ending(&d, shared.cancelled.contains(&d.command_id), retries, now) else { continue };
            tracing::info!(id = %d.command_id, attempt = d.attempt, state = end.state.as_str(), code = %end.error.code, "ending a handed-off command");
            let (id, command_type, attempt) = (d.command_id, d.command_type.clone(), d.attempt);
            let completion = Completion { deferral: d, state: end.state, result: None, error: Some(end.error), at: now };
            let (partition, key, value, headers) = completion.encode(&shared.source);
            let out = Outgoing { partition: Some(partition), ..Outgoing::new(shared.topics.commands.clone(), key, value, headers) };
            match shared.publisher.send_acked(out, &stop).await {
                Ok(()) => {
                    written.insert(id, Instant::now());
                    shared.metrics.lease_endings.get_or_create(&vec![("state".into(), end.state.as_str().into())]).inc();
                }
                Err(e) => tracing::warn!(%id, error = %e, "could not write the completion of a handed-off command; trying again"),
            }
            if end.state == State::Cancelled {
                if let (Some(hook), Some(client)) = (route.and_then(|r| r.cancel.clone()), client.clone()) {
                    tokio::spawn(async move {
                        match hook.send(&client, id, &command_type, attempt).await {
                            Ok(status) => tracing::info!(%id, status = status.as_u16(), "told the handler of the cancel"),
                            Err(e) => tracing::warn!(%id, error = %e, "could not tell the handler of the cancel"),
                        }
                    });
                }
            }
        }
    }
}

/// Whether this worker owns commands partition `partition` now.
fn owns(shared: &WorkerState, partition: i32) -> bool {
    shared.lock_ledger().is_assigned(&TopicPartition::new(shared.topics.commands.clone(), partition))
}

/// Keys held back for commands the registry no longer has (they ended under a
/// previous owner, which this worker learnt from the control topic after holding
/// the key): their next records, to start now.
fn release_stale(shared: &WorkerState) -> Vec<Entry<super::state::Record>> {
    let mut ledger = shared.lock_ledger();
    let stale: Vec<Uuid> = ledger.deferred_ids().into_iter().filter(|id| shared.deferrals.get(id).is_none()).collect();
    stale.into_iter().filter_map(|id| ledger.unhold(id)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::test_deferral;

    #[test]
    fn a_command_ends_when_cancelled_past_its_deadline_or_its_lease() {
        let now = Utc::now();
        let d = test_deferral(Some(60_000), None);
        assert_eq!(ending(&d, false, false, now), None);
        assert_eq!(ending(&d, true, false, now).unwrap().state, State::Cancelled);
        let later = now + chrono::Duration::seconds(61);
        let lapsed = ending(&d, false, false, later).unwrap();
        assert_eq!((lapsed.state, lapsed.error.code.as_str(), lapsed.error.retryable), (State::TimedOut, "heartbeat_lapsed", false));
        let retried = ending(&d, false, true, later).unwrap();
        assert_eq!((retried.state, retried.error.retryable), (State::Failed, true));
        let due = test_deferral(None, Some(now - chrono::Duration::seconds(1)));
        assert_eq!(ending(&due, false, false, now).unwrap().error.code, "deadline_exceeded");
        assert_eq!(ending(&test_deferral(None, None), false, false, later + chrono::Duration::days(30)), None, "no lease, no deadline: never");
    }
}
