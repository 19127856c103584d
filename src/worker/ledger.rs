//! The ledger: which records a worker holds, which may start, and what may be committed.
//!
//! Two rules meet here. **Ordering**: records that share a lane (same partition and key
//! under `ordering = key`) run one at a time, in offset order; records in different
//! lanes run concurrently, even inside one partition. **Commit safety**: completion is
//! out of order, so the offset committed for a partition is the lowest one not yet
//! finished (or one past the highest seen, when all are done). A crash therefore
//! replays only records that had not finished, never skips one.
//!
//! Pure bookkeeping, no I/O: the consumer thread and the handler tasks share it behind
//! a mutex and hold that lock only for these short calls.

use std::collections::{BTreeSet, HashMap, VecDeque};

/// A topic partition.
pub type Tp = (String, i32);

/// How records are serialized before they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Ordering {
    /// Same key: one at a time, in order. Different keys: concurrently.
    #[default]
    Key,
    /// One record at a time per partition (classic Kafka consumer behaviour).
    Partition,
    /// Everything concurrently, bounded only by the in-flight limit.
    None,
}

/// The lane a record queues in, derived from the ordering mode.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Lane {
    Key(Tp, Vec<u8>),
    Partition(Tp),
    /// No ordering constraint: never waits for another record.
    Free,
}

impl Lane {
    pub fn for_record(ordering: Ordering, tp: &Tp, key: Option<&[u8]>) -> Lane {
        match (ordering, key) {
            (Ordering::Key, Some(k)) => Lane::Key(tp.clone(), k.to_vec()),
            (Ordering::Key, None) | (Ordering::None, _) => Lane::Free,
            (Ordering::Partition, _) => Lane::Partition(tp.clone()),
        }
    }
}

/// Book-keeping for one assigned partition.
#[derive(Debug)]
struct PartitionBook {
    /// Distinguishes this assignment from an earlier one of the same partition, so a
    /// straggler from before a revoke cannot touch the new book.
    epoch: u64,
    /// Offsets admitted and not finished.
    pending: BTreeSet<i64>,
    /// One past the highest offset admitted.
    next: i64,
    /// The last offset committed (or -1).
    committed: i64,
    /// Offsets currently running (a subset of `pending`).
    running: usize,
}

impl PartitionBook {
    fn commit_point(&self) -> Option<i64> {
        let point = self.pending.iter().next().copied().unwrap_or(self.next);
        (point > self.committed && point >= 0).then_some(point)
    }
}

/// A record with its ledger coordinates.
#[derive(Debug)]
pub struct Entry<J> {
    pub tp: Tp,
    pub offset: i64,
    pub epoch: u64,
    pub lane: Lane,
    pub job: J,
}

/// See the module docs.
#[derive(Debug)]
pub struct Ledger<J> {
    books: HashMap<Tp, PartitionBook>,
    /// Records waiting behind a running record of the same lane. A lane present
    /// here (even with an empty queue) is busy.
    lanes: HashMap<Lane, VecDeque<Entry<J>>>,
    next_epoch: u64,
}

impl<J> Default for Ledger<J> {
    fn default() -> Self {
        Ledger { books: HashMap::new(), lanes: HashMap::new(), next_epoch: 1 }
    }
}

impl<J> Ledger<J> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts tracking a newly assigned partition.
    pub fn assign(&mut self, tp: Tp) {
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        self.books.insert(tp, PartitionBook { epoch, pending: BTreeSet::new(), next: -1, committed: -1, running: 0 });
    }

    pub fn is_assigned(&self, tp: &Tp) -> bool {
        self.books.contains_key(tp)
    }

    /// Admitted and not finished, running or queued: the number bounded by the
    /// in-flight limit.
    pub fn in_flight(&self) -> usize {
        self.books.values().map(|b| b.pending.len()).sum()
    }

    /// Admits a consumed record. Returns it back if it may start now; otherwise it is
    /// queued behind its lane and will be handed out by [`Ledger::finish`].
    /// Records of unassigned partitions are refused (`Err`), unstarted.
    pub fn admit(&mut self, tp: Tp, offset: i64, lane: Lane, job: J) -> Result<Option<Entry<J>>, J> {
        let Some(book) = self.books.get_mut(&tp) else { return Err(job) };
        book.pending.insert(offset);
        book.next = book.next.max(offset + 1);
        let entry = Entry { tp, offset, epoch: book.epoch, lane, job };
        if entry.lane == Lane::Free {
            book.running += 1;
            return Ok(Some(entry));
        }
        match self.lanes.get_mut(&entry.lane) {
            Some(queue) => {
                queue.push_back(entry);
                Ok(None)
            }
            None => {
                self.lanes.insert(entry.lane.clone(), VecDeque::new());
                book.running += 1;
                Ok(Some(entry))
            }
        }
    }

    /// Marks a running record finished and hands out the next record of its lane.
    /// A record from an earlier assignment of its partition is ignored.
    pub fn finish(&mut self, tp: &Tp, offset: i64, epoch: u64, lane: &Lane) -> Option<Entry<J>> {
        let book = self.books.get_mut(tp).filter(|b| b.epoch == epoch)?;
        if book.pending.remove(&offset) {
            book.running = book.running.saturating_sub(1);
        }
        if *lane == Lane::Free {
            return None;
        }
        let queue = self.lanes.get_mut(lane)?;
        match queue.pop_front() {
            Some(next) => {
                book.running += 1;
                Some(next)
            }
            None => {
                self.lanes.remove(lane);
                None
            }
        }
    }

    /// Marks a running record given up (its partition is being revoked or the worker
    /// is stopping): no longer running, but still pending, so its offset is never
    /// committed and the next owner runs it again.
    pub fn abandon(&mut self, tp: &Tp, epoch: u64) {
        if let Some(book) = self.books.get_mut(tp).filter(|b| b.epoch == epoch) {
            book.running = book.running.saturating_sub(1);
        }
    }

    /// Offsets to commit: for each partition whose commit point moved, that point.
    /// Marks them committed; call [`Ledger::uncommit`] if the commit then fails.
    pub fn take_commits(&mut self, only: Option<&[Tp]>) -> Vec<(Tp, i64)> {
        let mut out = Vec::new();
        for (tp, book) in self.books.iter_mut() {
            if only.is_some_and(|o| !o.contains(tp)) {
                continue;
            }
            if let Some(point) = book.commit_point() {
                book.committed = point;
                out.push((tp.clone(), point));
            }
        }
        out
    }

    /// Forgets that a commit happened, so the next round retries it.
    pub fn uncommit(&mut self, tp: &Tp) {
        if let Some(book) = self.books.get_mut(tp) {
            book.committed = -1;
        }
    }

    /// Records of these partitions still running (queued ones excluded).
    pub fn running_in(&self, tps: &[Tp]) -> usize {
        tps.iter().filter_map(|tp| self.books.get(tp)).map(|b| b.running).sum()
    }

    /// Drops queued (unstarted) records of these partitions; they will be consumed
    /// again by whoever owns the partition next. They stay pending, so no commit
    /// passes them. Returns how many were dropped.
    pub fn drop_queued(&mut self, tps: &[Tp]) -> usize {
        let mut dropped = 0;
        for queue in self.lanes.values_mut() {
            let before = queue.len();
            queue.retain(|e| !tps.contains(&e.tp));
            dropped += before - queue.len();
        }
        dropped
    }

    /// Stops tracking partitions; stragglers that finish later are ignored.
    pub fn release(&mut self, tps: &[Tp]) {
        self.drop_queued(tps);
        for tp in tps {
            self.books.remove(tp);
        }
        self.lanes.retain(|lane, _| match lane {
            Lane::Key(tp, _) | Lane::Partition(tp) => !tps.contains(tp),
            Lane::Free => true,
        });
    }

    pub fn assigned(&self) -> Vec<Tp> {
        self.books.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> Tp {
        ("t".to_string(), p)
    }

    fn key(k: &str) -> Lane {
        Lane::Key(tp(0), k.as_bytes().to_vec())
    }

    #[test]
    fn same_key_waits_other_keys_run() {
        let mut l = Ledger::new();
        l.assign(tp(0));
        let a0 = l.admit(tp(0), 0, key("a"), "a0").unwrap().unwrap();
        assert!(l.admit(tp(0), 1, key("a"), "a1").unwrap().is_none());
        assert!(l.admit(tp(0), 2, key("b"), "b2").unwrap().is_some());
        assert_eq!(l.in_flight(), 3);
        let next = l.finish(&tp(0), 0, a0.epoch, &a0.lane).unwrap();
        assert_eq!(next.job, "a1");
        assert_eq!(l.in_flight(), 2);
    }

    #[test]
    fn commit_point_is_lowest_unfinished() {
        let mut l = Ledger::new();
        l.assign(tp(0));
        let e: Vec<_> = (0..4).map(|o| l.admit(tp(0), o, Lane::Free, o).unwrap().unwrap()).collect();
        assert_eq!(l.take_commits(None), vec![]);
        l.finish(&tp(0), 2, e[2].epoch, &Lane::Free);
        l.finish(&tp(0), 1, e[1].epoch, &Lane::Free);
        assert_eq!(l.take_commits(None), vec![]);
        l.finish(&tp(0), 0, e[0].epoch, &Lane::Free);
        assert_eq!(l.take_commits(None), vec![(tp(0), 3)]);
        assert_eq!(l.take_commits(None), vec![], "no change, no commit");
        l.finish(&tp(0), 3, e[3].epoch, &Lane::Free);
        assert_eq!(l.take_commits(None), vec![(tp(0), 4)]);
    }

    #[test]
    fn partition_ordering_is_one_at_a_time() {
        let mut l = Ledger::new();
        l.assign(tp(0));
        let lane = Lane::for_record(Ordering::Partition, &tp(0), Some(b"x"));
        let first = l.admit(tp(0), 0, lane.clone(), 0).unwrap().unwrap();
        assert!(l.admit(tp(0), 1, Lane::for_record(Ordering::Partition, &tp(0), Some(b"y")), 1).unwrap().is_none());
        assert_eq!(l.finish(&tp(0), 0, first.epoch, &lane).unwrap().job, 1);
    }

    #[test]
    fn revoke_drops_queued_and_ignores_stragglers() {
        let mut l = Ledger::new();
        l.assign(tp(0));
        l.assign(tp(1));
        let run = l.admit(tp(0), 0, key("a"), 0).unwrap().unwrap();
        assert!(l.admit(tp(0), 1, key("a"), 1).unwrap().is_none());
        l.admit(tp(1), 0, Lane::Free, 2).unwrap().unwrap();
        assert_eq!(l.running_in(&[tp(0)]), 1);
        assert_eq!(l.drop_queued(&[tp(0)]), 1);
        assert_eq!(l.in_flight(), 3, "dropped records stay pending");
        assert!(l.take_commits(Some(&[tp(0)])).is_empty());
        l.release(&[tp(0)]);
        assert_eq!(l.in_flight(), 1);
        l.assign(tp(0));
        assert!(l.finish(&tp(0), 0, run.epoch, &run.lane).is_none(), "old epoch ignored");
        assert_eq!(l.in_flight(), 1);
        assert!(l.admit(("other".into(), 0), 0, Lane::Free, 9).is_err());
    }
}
