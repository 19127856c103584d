//! One way to commit offsets, for the worker and the webhook dispatcher: take the
//! ledger's commit points, send them, and if that fails forget they were committed,
//! so the next round sends them again.
//!
//! How points are sent is the caller's (`send`): a group commit, or in exactly-once
//! mode a transaction that also carries the outputs of the records they pass. Two
//! more ways a commit is lost are covered here too: a commit that fails later, for
//! some of its partitions, as reported to the consumer's commit callback
//! ([`commit_failed`]); and one the group coordinator drops without an error (seen
//! around cooperative rebalances), which [`Cadence`] repairs by sending every point
//! again now and then.
//!
//! No I/O of its own: the callers own consumers and producers, and pass them in `send`.

use std::fmt::Display;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::Ledger;
use crate::kafka::TopicPartition;

/// How often commit points are sent.
pub(crate) const COMMIT_EVERY: Duration = Duration::from_millis(500);
/// How often every assigned partition's commit point is sent again even if it did not
/// move: a commit the group coordinator dropped without an error (seen around
/// cooperative rebalances) must not leave a partition's progress uncommitted forever.
pub(crate) const COMMIT_REFRESH: Duration = Duration::from_secs(10);
/// How soon after the last round a loop with nothing in flight commits again
/// ([`Cadence::tick_idle`]).
pub(crate) const COMMIT_IDLE: Duration = Duration::from_millis(5);

/// The ledger behind its mutex. A panic elsewhere while holding it leaves the books
/// as consistent as each short call left them, so a poisoned lock is taken anyway.
pub(crate) fn lock<J>(ledger: &Mutex<Ledger<J>>) -> MutexGuard<'_, Ledger<J>> {
    ledger.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Takes the commit points of the partitions in `scope` (all, for `None`) and sends
/// them with `send`, which is called even when there are none (a transaction may
/// carry other outputs). A failure is logged and the points are sent again next round.
pub(crate) fn commit<J, E: Display>(
    ledger: &Mutex<Ledger<J>>,
    scope: Option<&[TopicPartition]>,
    send: impl FnOnce(&[(TopicPartition, i64)]) -> Result<(), E>,
) {
    let points = lock(ledger).take_commits(scope);
    commit_taken(ledger, &points, send);
}

/// Like [`commit`], for points already taken: a revoke takes them under the same lock
/// that releases the partitions (forgetting a released partition's commit is a no-op).
pub(crate) fn commit_taken<J, E: Display>(
    ledger: &Mutex<Ledger<J>>,
    points: &[(TopicPartition, i64)],
    send: impl FnOnce(&[(TopicPartition, i64)]) -> Result<(), E>,
) {
    match send(points) {
        Ok(()) if points.is_empty() => {}
        Ok(()) => tracing::debug!(commits = ?points, "offsets committed"),
        Err(e) => {
            tracing::warn!(error = %e, "commit failed; will retry");
            let mut ledger = lock(ledger);
            for (tp, _) in points {
                ledger.uncommit(tp);
            }
        }
    }
}

/// A commit that failed after it was sent, for `failed` (all of its partitions, or
/// only some: a commit can succeed as a whole and fail per partition, during a
/// rebalance say), as a commit callback learns. Those partitions are committed again
/// next round, or their progress would be lost.
pub(crate) fn commit_failed<J>(ledger: &Mutex<Ledger<J>>, failed: &[TopicPartition], error: &impl Display) {
    if failed.is_empty() {
        return;
    }
    tracing::warn!(%error, partitions = ?failed, "offset commit failed; will retry");
    let mut ledger = lock(ledger);
    for tp in failed {
        ledger.uncommit(tp);
    }
}

/// When a consumer loop commits: every [`COMMIT_EVERY`], and every [`COMMIT_REFRESH`]
/// each assigned partition's point again, moved or not.
pub(crate) struct Cadence {
    last_commit: Instant,
    last_refresh: Instant,
}

impl Cadence {
    pub fn new() -> Self {
        let now = Instant::now();
        Cadence { last_commit: now, last_refresh: now }
    }

    /// Called every turn of the loop: runs `commit` when a round is due (the next one
    /// is due [`COMMIT_EVERY`] after it returns). When a refresh is due, first forgets
    /// every commit the ledger remembers, so the next round sends every point.
    pub fn tick<J>(&mut self, ledger: &Mutex<Ledger<J>>, commit: impl FnOnce()) {
        self.tick_with(ledger, Instant::now, COMMIT_EVERY, commit);
    }

    /// [`Cadence::tick`] for a loop with nothing in flight: a round is due
    /// [`COMMIT_IDLE`] after the last, so what finished while the loop is idle is
    /// committed now rather than up to [`COMMIT_EVERY`] later. An exactly-once
    /// worker's results are visible to `read_committed` readers only once committed:
    /// at a low rate this is its round trip (a transaction every 500 ms made it about
    /// 440 ms at the median). Under load there is always something in flight, and the
    /// rounds stay [`COMMIT_EVERY`] apart.
    pub fn tick_idle<J>(&mut self, ledger: &Mutex<Ledger<J>>, commit: impl FnOnce()) {
        self.tick_with(ledger, Instant::now, COMMIT_IDLE, commit);
    }

    fn tick_with<J>(&mut self, ledger: &Mutex<Ledger<J>>, now: impl Fn() -> Instant, every: Duration, commit: impl FnOnce()) {
        if now().duration_since(self.last_refresh) >= COMMIT_REFRESH {
            let mut ledger = lock(ledger);
            for tp in ledger.assigned() {
                ledger.uncommit(&tp);
            }
            drop(ledger);
            self.last_refresh = now();
        }
        if now().duration_since(self.last_commit) >= every {
            commit();
            self.last_commit = now();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use super::*;
    use crate::offsets::Lane;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    /// A ledger with partitions 0 and 1, each with offsets 0..3 finished.
    fn ledger() -> Mutex<Ledger<()>> {
        let mut l = Ledger::new();
        for p in 0..2 {
            l.assign(tp(p));
            for offset in 0..3 {
                let e = l.admit(tp(p), offset, Lane::Free, None, ()).unwrap().unwrap();
                l.finish(&e.tp, e.offset, e.epoch, &Lane::Free, None);
            }
        }
        Mutex::new(l)
    }

    /// What `send` was given, sorted, and whether it then fails.
    fn sent(ledger: &Mutex<Ledger<()>>, scope: Option<&[TopicPartition]>, fails: bool) -> Vec<(TopicPartition, i64)> {
        let seen = RefCell::new(Vec::new());
        commit(ledger, scope, |points| {
            seen.borrow_mut().extend_from_slice(points);
            if fails { Err("refused") } else { Ok(()) }
        });
        let mut seen = seen.into_inner();
        seen.sort();
        seen
    }

    #[test]
    fn a_sent_point_is_not_sent_again_until_it_moves() {
        let l = ledger();
        assert_eq!(sent(&l, Some(&[tp(1)]), false), vec![(tp(1), 3)], "only the scope");
        assert_eq!(sent(&l, None, false), vec![(tp(0), 3)]);
        assert_eq!(sent(&l, None, false), vec![], "send still runs, with nothing");
    }

    #[test]
    fn a_failed_send_is_sent_again_next_round() {
        let l = ledger();
        assert_eq!(sent(&l, None, true), vec![(tp(0), 3), (tp(1), 3)]);
        assert_eq!(sent(&l, None, false), vec![(tp(0), 3), (tp(1), 3)]);
        assert_eq!(sent(&l, None, false), vec![]);
    }

    #[test]
    fn points_taken_before_a_release_can_still_fail_harmlessly() {
        let l = ledger();
        let points = lock(&l).take_commits(Some(&[tp(0)]));
        lock(&l).release(&[tp(0)]);
        commit_taken(&l, &points, |_| Err("refused"));
        assert_eq!(sent(&l, None, false), vec![(tp(1), 3)], "the released partition is gone");
    }

    #[test]
    fn a_partition_that_failed_later_is_sent_again() {
        let l = ledger();
        assert_eq!(sent(&l, None, false).len(), 2);
        commit_failed(&l, &[tp(1)], &"not the coordinator");
        assert_eq!(sent(&l, None, false), vec![(tp(1), 3)]);
    }

    #[test]
    fn the_cadence_commits_every_interval_and_refreshes_everything_now_and_then() {
        let l = ledger();
        let start = Instant::now();
        let clock = Cell::new(start);
        let mut cadence = Cadence { last_commit: start, last_refresh: start };
        let rounds = RefCell::new(Vec::new());
        let mut tick_at = |after: Duration| {
            clock.set(start + after);
            cadence.tick_with(&l, || clock.get(), COMMIT_EVERY, || rounds.borrow_mut().push(sent(&l, None, false)));
        };
        let both = vec![(tp(0), 3), (tp(1), 3)];
        tick_at(COMMIT_EVERY / 2);
        assert!(rounds.borrow().is_empty(), "not yet");
        tick_at(COMMIT_EVERY);
        assert_eq!(*rounds.borrow(), vec![both.clone()]);
        tick_at(COMMIT_EVERY * 3 / 2);
        assert_eq!(rounds.borrow().len(), 1, "the interval counts from the last round");
        tick_at(COMMIT_EVERY * 2);
        assert_eq!(rounds.borrow()[1], vec![], "nothing moved");
        tick_at(COMMIT_REFRESH);
        assert_eq!(rounds.borrow()[2], both, "a refresh sends every point again");
    }

    #[test]
    fn an_idle_loop_commits_soon_after_the_last_round() {
        let l = ledger();
        let start = Instant::now();
        let mut cadence = Cadence { last_commit: start, last_refresh: start };
        let rounds = Cell::new(0);
        let mut tick_at = |after: Duration, every: Duration| {
            cadence.tick_with(&l, || start + after, every, || rounds.set(rounds.get() + 1));
        };
        tick_at(COMMIT_IDLE / 2, COMMIT_IDLE);
        assert_eq!(rounds.get(), 0, "not within the idle spacing");
        tick_at(COMMIT_IDLE, COMMIT_IDLE);
        assert_eq!(rounds.get(), 1, "idle: due long before the busy interval");
        tick_at(COMMIT_IDLE * 3 / 2, COMMIT_EVERY);
        assert_eq!(rounds.get(), 1, "busy again: the usual interval from the last round");
    }
}
