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

use uuid::Uuid;

use crate::kafka::TopicPartition;

/// How records are serialized before they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OrderBy {
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
    Key(TopicPartition, Vec<u8>),
    Partition(TopicPartition),
    /// No ordering constraint: never waits for another record.
    Free,
}

impl Lane {
    pub fn for_record(ordering: OrderBy, tp: &TopicPartition, key: Option<&[u8]>) -> Lane {
        match (ordering, key) {
            (OrderBy::Key, Some(k)) => Lane::Key(tp.clone(), k.to_vec()),
            (OrderBy::Key, None) | (OrderBy::None, _) => Lane::Free,
            (OrderBy::Partition, _) => Lane::Partition(tp.clone()),
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
    pub tp: TopicPartition,
    pub offset: i64,
    pub epoch: u64,
    pub lane: Lane,
    /// For a retried command resuming its parked lane: the offset of the original
    /// record, kept pending until this attempt finishes.
    pub origin: Option<i64>,
    pub job: J,
}

/// A busy lane: records waiting, and whether it is parked for a retry.
#[derive(Debug)]
struct LaneState<J> {
    queue: VecDeque<Entry<J>>,
    /// Set while the lane's command is away: (command id, offset of its original
    /// record). In a retry tier the original stays pending (`Some`); handed off to a
    /// handler that completes it later (deferred), nothing does (`None`): the
    /// partition commits past it, and the worker's deferral registry (rebuilt from
    /// the control topic) is what remembers the key waits. Only a record carrying
    /// that command id (its retry, its completion) resumes the lane.
    parked: Option<(Uuid, Option<i64>)>,
}

impl<J> LaneState<J> {
    fn new() -> Self {
        LaneState { queue: VecDeque::new(), parked: None }
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct Ledger<J> {
    books: HashMap<TopicPartition, PartitionBook>,
    /// Busy lanes: records waiting behind a running (or parked) record of the same
    /// lane. A lane present here, even with an empty queue, is busy.
    lanes: HashMap<Lane, LaneState<J>>,
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
    pub fn assign(&mut self, tp: TopicPartition) {
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        self.books.insert(tp, PartitionBook { epoch, pending: BTreeSet::new(), next: -1, committed: -1, running: 0 });
    }

    pub fn is_assigned(&self, tp: &TopicPartition) -> bool {
        self.books.contains_key(tp)
    }

    /// Admitted and not finished, running or queued: the number bounded by the
    /// in-flight limit.
    pub fn in_flight(&self) -> usize {
        self.books.values().map(|b| b.pending.len()).sum()
    }

    /// Admits a consumed record. Returns it back if it may start now; otherwise it is
    /// queued behind its lane and will be handed out by [`Ledger::finish`]. A record
    /// carrying the id its lane is parked for resumes the lane at once.
    /// Records of unassigned partitions are refused (`Err`), unstarted.
    pub fn admit(&mut self, tp: TopicPartition, offset: i64, lane: Lane, id: Option<Uuid>, job: J) -> Result<Option<Entry<J>>, J> {
        let Some(book) = self.books.get_mut(&tp) else { return Err(job) };
        if book.next < 0 {
            // The first record shows where consumption resumed: already committed.
            book.committed = offset;
        }
        book.pending.insert(offset);
        book.next = book.next.max(offset + 1);
        let mut entry = Entry { tp, offset, epoch: book.epoch, lane, origin: None, job };
        if entry.lane == Lane::Free {
            book.running += 1;
            return Ok(Some(entry));
        }
        match self.lanes.get_mut(&entry.lane) {
            Some(state) => match state.parked {
                Some((parked_id, origin)) if Some(parked_id) == id => {
                    state.parked = None;
                    entry.origin = origin;
                    book.running += 1;
                    Ok(Some(entry))
                }
                _ => {
                    state.queue.push_back(entry);
                    Ok(None)
                }
            },
            None => {
                self.lanes.insert(entry.lane.clone(), LaneState::new());
                book.running += 1;
                Ok(Some(entry))
            }
        }
    }

    /// Parks a running record's lane while its command waits in a retry tier: later
    /// records of the lane keep waiting, every other lane goes on. The original
    /// record stays pending (so a crash replays it, in order); a retry copy's own
    /// offset is released. Free lanes cannot park: their record simply finishes.
    pub fn park(&mut self, entry: &Entry<J>, id: Uuid) {
        if entry.lane == Lane::Free {
            self.finish(&entry.tp, entry.offset, entry.epoch, &entry.lane, entry.origin);
            return;
        }
        let Some(book) = self.books.get_mut(&entry.tp).filter(|b| b.epoch == entry.epoch) else { return };
        book.running = book.running.saturating_sub(1);
        let origin = entry.origin.unwrap_or(entry.offset);
        if origin != entry.offset {
            book.pending.remove(&entry.offset);
        }
        if let Some(state) = self.lanes.get_mut(&entry.lane) {
            state.parked = Some((id, Some(origin)));
        }
    }

    /// Parks a running record's lane behind a command handed off for deferred
    /// completion: the record (and the original it resumed, if any) is finished, so
    /// commits pass it, yet later records of the lane keep waiting until a record
    /// carrying `id` (its completion) resumes it. A free lane simply finishes.
    pub fn defer(&mut self, entry: &Entry<J>, id: Uuid) {
        if entry.lane == Lane::Free {
            self.finish(&entry.tp, entry.offset, entry.epoch, &entry.lane, entry.origin);
            return;
        }
        self.finish_handed_on(&entry.tp, entry.offset, entry.epoch, entry.origin);
        if self.books.get(&entry.tp).is_some_and(|b| b.epoch == entry.epoch) {
            if let Some(state) = self.lanes.get_mut(&entry.lane) {
                state.parked = Some((id, None));
            }
        }
    }

    /// Parks an idle lane behind deferred command `id`, known from the control topic
    /// (a previous owner handed it off): for a partition just assigned, before its
    /// records are admitted. A busy lane is left alone.
    pub fn hold(&mut self, lane: &Lane, id: Uuid) {
        let assigned = match lane {
            Lane::Key(tp, _) | Lane::Partition(tp) => self.books.contains_key(tp),
            Lane::Free => false,
        };
        if assigned && !self.lanes.contains_key(lane) {
            self.lanes.insert(lane.clone(), LaneState { queue: VecDeque::new(), parked: Some((id, None)) });
        }
    }

    /// Lets a lane parked behind deferred command `id` go on, when the command
    /// ended elsewhere (its completion was run by a previous owner): the next queued
    /// record, to start now, if any.
    pub fn unhold(&mut self, id: Uuid) -> Option<Entry<J>> {
        let lane = self.lanes.iter().find(|(_, s)| s.parked == Some((id, None))).map(|(l, _)| l.clone())?;
        let state = self.lanes.get_mut(&lane)?;
        state.parked = None;
        match state.queue.pop_front() {
            Some(next) => {
                if let Some(book) = self.books.get_mut(&next.tp) {
                    book.running += 1;
                }
                Some(next)
            }
            None => {
                self.lanes.remove(&lane);
                None
            }
        }
    }

    /// Ids lanes are parked behind for deferred completion.
    pub fn deferred_ids(&self) -> Vec<Uuid> {
        self.lanes.values().filter_map(|s| match s.parked {
            Some((id, None)) => Some(id),
            _ => None,
        }).collect()
    }

    /// Lanes currently parked for a retry.
    #[cfg(test)]
    pub fn parked(&self) -> usize {
        self.lanes.values().filter(|s| s.parked.is_some()).count()
    }

    /// Records running now, over all partitions.
    pub fn running_total(&self) -> usize {
        self.books.values().map(|b| b.running).sum()
    }

    /// Marks a running record finished and hands out the next record of its lane.
    /// A record from an earlier assignment of its partition is ignored.
    pub fn finish(&mut self, tp: &TopicPartition, offset: i64, epoch: u64, lane: &Lane, origin: Option<i64>) -> Option<Entry<J>> {
        self.finish_handed_on(tp, offset, epoch, origin);
        self.hand_on(tp, epoch, lane)
    }

    /// Lets the next record of a running record's lane start while the record itself
    /// stays running and pending (so drains wait for it and no commit passes it):
    /// its final outputs are enqueued, in order ahead of anything the next record
    /// writes, and only their acknowledgement is outstanding. Finish it later with
    /// [`Ledger::finish_handed_on`].
    pub fn hand_on(&mut self, tp: &TopicPartition, epoch: u64, lane: &Lane) -> Option<Entry<J>> {
        let book = self.books.get_mut(tp).filter(|b| b.epoch == epoch)?;
        if *lane == Lane::Free {
            return None;
        }
        let state = self.lanes.get_mut(lane)?;
        match state.queue.pop_front() {
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

    /// Marks a record whose lane was already handed on ([`Ledger::hand_on`]) finished.
    pub fn finish_handed_on(&mut self, tp: &TopicPartition, offset: i64, epoch: u64, origin: Option<i64>) {
        let Some(book) = self.books.get_mut(tp).filter(|b| b.epoch == epoch) else { return };
        if book.pending.remove(&offset) {
            book.running = book.running.saturating_sub(1);
        }
        if let Some(o) = origin {
            book.pending.remove(&o);
        }
    }

    /// Marks a running record given up (its partition is being revoked or the worker
    /// is stopping): no longer running, but still pending, so its offset is never
    /// committed and the next owner runs it again.
    pub fn abandon(&mut self, tp: &TopicPartition, epoch: u64) {
        if let Some(book) = self.books.get_mut(tp).filter(|b| b.epoch == epoch) {
            book.running = book.running.saturating_sub(1);
        }
    }

    /// Offsets to commit: for each partition whose commit point moved, that point.
    /// Marks them committed; call [`Ledger::uncommit`] if the commit then fails.
    pub fn take_commits(&mut self, only: Option<&[TopicPartition]>) -> Vec<(TopicPartition, i64)> {
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
    pub fn uncommit(&mut self, tp: &TopicPartition) {
        if let Some(book) = self.books.get_mut(tp) {
            book.committed = -1;
        }
    }

    /// Records of these partitions still running (queued ones excluded).
    pub fn running_in(&self, tps: &[TopicPartition]) -> usize {
        tps.iter().filter_map(|tp| self.books.get(tp)).map(|b| b.running).sum()
    }

    /// Drops queued (unstarted) records of these partitions; they will be consumed
    /// again by whoever owns the partition next. They stay pending, so no commit
    /// passes them. Returns how many were dropped.
    pub fn drop_queued(&mut self, tps: &[TopicPartition]) -> usize {
        let mut dropped = 0;
        for state in self.lanes.values_mut() {
            let before = state.queue.len();
            state.queue.retain(|e| !tps.contains(&e.tp));
            dropped += before - state.queue.len();
        }
        dropped
    }

    /// Stops tracking partitions; stragglers that finish later are ignored.
    pub fn release(&mut self, tps: &[TopicPartition]) {
        self.drop_queued(tps);
        for tp in tps {
            self.books.remove(tp);
        }
        self.lanes.retain(|lane, _| match lane {
            Lane::Key(tp, _) | Lane::Partition(tp) => !tps.contains(tp),
            Lane::Free => true,
        });
    }

    pub fn assigned(&self) -> Vec<TopicPartition> {
        self.books.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    fn key(k: &str) -> Lane {
        Lane::Key(tp(0), k.as_bytes().to_vec())
    }

    #[test]
    fn same_key_waits_other_keys_run() {
        let mut l = Ledger::new();
        l.assign(tp(0));
        let a0 = l.admit(tp(0), 0, key("a"), None, "a0").unwrap().unwrap();
        assert!(l.admit(tp(0), 1, key("a"), None, "a1").unwrap().is_none());
        assert!(l.admit(tp(0), 2, key("b"), None, "b2").unwrap().is_some());
        assert_eq!(l.in_flight(), 3);
        let next = l.finish(&tp(0), 0, a0.epoch, &a0.lane, None).unwrap();
        assert_eq!(next.job, "a1");
        assert_eq!(l.in_flight(), 2);
    }

    #[test]
    fn a_handed_on_record_lets_its_lane_go_on_but_holds_the_commit_and_the_drain() {
        let mut l = Ledger::new();
        l.assign(tp(0));
        let a0 = l.admit(tp(0), 0, key("a"), None, "a0").unwrap().unwrap();
        assert!(l.admit(tp(0), 1, key("a"), None, "a1").unwrap().is_none());
        let a1 = l.hand_on(&tp(0), a0.epoch, &a0.lane).unwrap();
        assert_eq!(a1.job, "a1");
        assert_eq!(l.running_in(&[tp(0)]), 2, "a drain still waits for a0's acknowledgement");
        // a1 finishes first: the commit point stays at a0.
        assert!(l.finish(&tp(0), 1, a1.epoch, &a1.lane, None).is_none());
        assert_eq!(l.take_commits(None), vec![]);
        l.finish_handed_on(&tp(0), 0, a0.epoch, None);
        assert_eq!(l.take_commits(None), vec![(tp(0), 2)]);
        assert_eq!((l.in_flight(), l.running_total()), (0, 0));
        // The lane is free again: the next record of the key starts at once.
        assert!(l.admit(tp(0), 2, key("a"), None, "a2").unwrap().is_some());
    }

    #[test]
    fn commit_point_is_lowest_unfinished() {
        let mut l = Ledger::new();
        l.assign(tp(0));
        let e: Vec<_> = (0..4).map(|o| l.admit(tp(0), o, Lane::Free, None, o).unwrap().unwrap()).collect();
        assert_eq!(l.take_commits(None), vec![]);
        l.finish(&tp(0), 2, e[2].epoch, &Lane::Free, None);
        l.finish(&tp(0), 1, e[1].epoch, &Lane::Free, None);
        assert_eq!(l.take_commits(None), vec![]);
        l.finish(&tp(0), 0, e[0].epoch, &Lane::Free, None);
        assert_eq!(l.take_commits(None), vec![(tp(0), 3)]);
        assert_eq!(l.take_commits(None), vec![], "no change, no commit");
        l.finish(&tp(0), 3, e[3].epoch, &Lane::Free, None);
        assert_eq!(l.take_commits(None), vec![(tp(0), 4)]);
    }

    #[test]
    fn partition_ordering_is_one_at_a_time() {
        let mut l = Ledger::new();
        l.assign(tp(0));
        let lane = Lane::for_record(OrderBy::Partition, &tp(0), Some(b"x"));
        let first = l.admit(tp(0), 0, lane.clone(), None, 0).unwrap().unwrap();
        assert!(l.admit(tp(0), 1, Lane::for_record(OrderBy::Partition, &tp(0), Some(b"y")), None, 1).unwrap().is_none());
        assert_eq!(l.finish(&tp(0), 0, first.epoch, &lane, None).unwrap().job, 1);
    }

    #[test]
    fn revoke_drops_queued_and_ignores_stragglers() {
        let mut l = Ledger::new();
        l.assign(tp(0));
        l.assign(tp(1));
        let run = l.admit(tp(0), 0, key("a"), None, 0).unwrap().unwrap();
        assert!(l.admit(tp(0), 1, key("a"), None, 1).unwrap().is_none());
        l.admit(tp(1), 0, Lane::Free, None, 2).unwrap().unwrap();
        assert_eq!(l.running_in(&[tp(0)]), 1);
        assert_eq!(l.drop_queued(&[tp(0)]), 1);
        assert_eq!(l.in_flight(), 3, "dropped records stay pending");
        assert!(l.take_commits(Some(&[tp(0)])).is_empty());
        l.release(&[tp(0)]);
        assert_eq!(l.in_flight(), 1);
        l.assign(tp(0));
        assert!(l.finish(&tp(0), 0, run.epoch, &run.lane, None).is_none(), "old epoch ignored");
        assert_eq!(l.in_flight(), 1);
        assert!(l.admit(TopicPartition::new("other", 0), 0, Lane::Free, None, 9).is_err());
    }

    #[test]
    fn parked_lane_waits_for_its_retry_and_keeps_the_origin_pending() {
        let mut l = Ledger::new();
        l.assign(tp(0));
        let id = Uuid::now_v7();
        let first = l.admit(tp(0), 0, key("a"), Some(id), "try1").unwrap().unwrap();
        l.park(&first, id);
        assert_eq!(l.parked(), 1);
        assert!(l.admit(tp(0), 1, key("a"), None, "later-a").unwrap().is_none(), "same key waits");
        assert!(l.admit(tp(0), 2, key("b"), None, "b").unwrap().is_some(), "other keys go on");
        assert!(l.take_commits(None).is_empty(), "origin offset 0 stays pending");
        let retry = l.admit(tp(0), 3, key("a"), Some(id), "try2").unwrap().expect("the retry resumes the lane");
        assert_eq!(retry.origin, Some(0));
        let next = l.finish(&tp(0), 3, retry.epoch, &retry.lane, retry.origin).unwrap();
        assert_eq!(next.job, "later-a");
        assert_eq!(l.take_commits(None), vec![(tp(0), 1)]);
    }

    #[test]
    fn a_deferred_lane_commits_past_its_record_and_waits_for_the_completion() {
        let mut l = Ledger::new();
        l.assign(tp(0));
        let id = Uuid::now_v7();
        let first = l.admit(tp(0), 0, key("a"), Some(id), "run").unwrap().unwrap();
        l.defer(&first, id);
        assert_eq!(l.take_commits(None), vec![(tp(0), 1)], "the hand-off is committed past");
        assert_eq!(l.deferred_ids(), vec![id]);
        assert!(l.admit(tp(0), 1, key("a"), None, "later-a").unwrap().is_none(), "same key waits");
        assert!(l.admit(tp(0), 2, key("b"), None, "b").unwrap().is_some(), "other keys go on");
        let done = l.admit(tp(0), 3, key("a"), Some(id), "completion").unwrap().expect("the completion resumes the lane");
        assert_eq!(done.origin, None);
        let next = l.finish(&tp(0), 3, done.epoch, &done.lane, done.origin).unwrap();
        assert_eq!(next.job, "later-a");
        assert!(l.deferred_ids().is_empty());
    }

    #[test]
    fn a_new_owner_holds_a_deferred_key_and_a_late_release_lets_it_go() {
        let mut l = Ledger::new();
        l.hold(&key("a"), Uuid::now_v7());
        assert!(l.deferred_ids().is_empty(), "unassigned partitions hold nothing");
        l.assign(tp(0));
        let id = Uuid::now_v7();
        l.hold(&key("a"), id);
        assert!(l.admit(tp(0), 7, key("a"), None, "later-a").unwrap().is_none());
        assert_eq!(l.take_commits(None), vec![], "the waiting record is pending");
        let next = l.unhold(id).expect("the waiting record starts");
        assert_eq!((next.job, l.running_total()), ("later-a", 1));
        assert!(l.unhold(id).is_none());
        l.hold(&key("b"), id);
        assert!(l.unhold(id).is_none());
        assert!(l.admit(tp(0), 8, key("b"), None, "b").unwrap().is_some(), "an unheld idle lane is free");
    }

    #[test]
    fn a_retry_that_fails_again_parks_on_the_same_origin() {
        let mut l = Ledger::new();
        l.assign(tp(0));
        let id = Uuid::now_v7();
        let first = l.admit(tp(0), 5, key("a"), Some(id), 1).unwrap().unwrap();
        l.park(&first, id);
        let second = l.admit(tp(0), 9, key("a"), Some(id), 2).unwrap().unwrap();
        l.park(&second, id);
        assert_eq!(l.in_flight(), 1, "only the origin stays pending");
        assert_eq!(l.running_total(), 0);
        let third = l.admit(tp(0), 12, key("a"), Some(id), 3).unwrap().unwrap();
        assert_eq!(third.origin, Some(5));
    }
}
