//! Tier records held until they are due, per partition, in offset order.
//!
//! A delay tier is FIFO with (nearly) the same delay for every record, so only each
//! partition's head needs watching. While anything of a partition is held the caller
//! keeps that partition paused, which holds memory to what was already fetched and
//! lets every other partition go on; [`TierHold::hold`] says when to pause, and
//! [`TierHold::release_due`] when to resume. Shared by the command retry relay and
//! the webhook dispatcher's retry tiers; what "going on" means is the caller's.
//!
//! Bookkeeping only: the caller owns the consumer, and passes the clock in.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};

use crate::kafka::TopicPartition;

/// See the module docs. `M` is the held record (an rdkafka `OwnedMessage` in use).
pub(crate) struct TierHold<M> {
    held: HashMap<TopicPartition, VecDeque<Held<M>>>,
}

struct Held<M> {
    due: DateTime<Utc>,
    record: M,
}

impl<M> Default for TierHold<M> {
    fn default() -> Self {
        TierHold { held: HashMap::new() }
    }
}

/// What a release round leaves the caller to do.
#[derive(Debug, Default, PartialEq)]
#[must_use = "emptied partitions stay paused unless resumed"]
pub(crate) struct Released {
    /// Partitions now holding nothing: resume them.
    pub resume: Vec<TopicPartition>,
    /// `go_on` refused a head (the caller is stopping); that head is still held.
    pub stopped: bool,
}

impl<M> TierHold<M> {
    /// Holds `record` of `tp`, due at `due`, behind the earlier ones of its partition.
    /// Returns whether it is the only one held there: the caller then pauses `tp`.
    #[must_use = "the first record held for a partition means: pause it"]
    pub fn hold(&mut self, tp: TopicPartition, due: DateTime<Utc>, record: M) -> bool {
        let queue = self.held.entry(tp).or_default();
        queue.push_back(Held { due, record });
        queue.len() == 1
    }

    /// Drops what is held for partitions no longer assigned: their next owner reads
    /// those records again from the committed offset.
    pub fn keep_assigned(&mut self, assigned: &[TopicPartition]) {
        self.held.retain(|tp, _| assigned.contains(tp));
    }

    /// Hands every head due by `now`, in order, to `go_on`, which returns false to
    /// stop the caller (shutting down); a head is released only once `go_on` took it.
    pub fn release_due(&mut self, now: DateTime<Utc>, mut go_on: impl FnMut(&M) -> bool) -> Released {
        let mut released = Released::default();
        'partitions: for (tp, queue) in self.held.iter_mut() {
            while let Some(head) = queue.front() {
                if head.due > now {
                    break;
                }
                if !go_on(&head.record) {
                    released.stopped = true;
                    break 'partitions;
                }
                queue.pop_front();
            }
            if queue.is_empty() {
                released.resume.push(tp.clone());
            }
        }
        self.held.retain(|_, q| !q.is_empty());
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("tier", p)
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn the_first_record_of_a_partition_pauses_it() {
        let mut hold = TierHold::default();
        assert!(hold.hold(tp(0), at(0), 1));
        assert!(!hold.hold(tp(0), at(0), 2), "already paused");
        assert!(hold.hold(tp(1), at(0), 3));
    }

    #[test]
    fn due_heads_go_in_order_and_a_head_not_yet_due_holds_back_the_rest() {
        let mut hold = TierHold::default();
        for (offset, due) in [(1, -1), (2, -1), (3, 60), (4, -1)] {
            let _ = hold.hold(tp(0), at(due), offset);
        }
        let mut released = Vec::new();
        let round = hold.release_due(at(0), |&offset| {
            released.push(offset);
            true
        });
        assert_eq!(released, vec![1, 2], "the head not yet due holds back the due record behind it");
        assert_eq!(round, Released { resume: vec![], stopped: false }, "still holding: stays paused");
        released.clear();
        let round = hold.release_due(at(60), |&offset| {
            released.push(offset);
            true
        });
        assert_eq!(released, vec![3, 4]);
        assert_eq!(round.resume, vec![tp(0)], "emptied: resume it");
        assert!(hold.hold(tp(0), at(0), 5), "held again after emptying: paused again");
    }

    #[test]
    fn a_refusal_stops_the_caller_and_keeps_the_refused_head() {
        let mut hold = TierHold::default();
        let _ = hold.hold(tp(1), at(-1), 7);
        assert!(hold.release_due(at(0), |_| false).stopped, "a refusal stops the caller");
        let round = hold.release_due(at(0), |_| false);
        assert_eq!(round, Released { resume: vec![], stopped: true }, "and the refused head is still held");
        let mut released = Vec::new();
        let round = hold.release_due(at(0), |&o| {
            released.push(o);
            true
        });
        assert_eq!((released, round.resume), (vec![7], vec![tp(1)]));
    }

    #[test]
    fn nothing_is_held_for_unassigned_partitions() {
        let mut hold = TierHold::default();
        let _ = hold.hold(tp(0), at(-1), 1);
        let _ = hold.hold(tp(1), at(-1), 2);
        hold.keep_assigned(&[tp(1)]);
        let mut released = Vec::new();
        let round = hold.release_due(at(0), |&o| {
            released.push(o);
            true
        });
        assert_eq!(released, vec![2]);
        assert_eq!(round.resume, vec![tp(1)]);
        hold.keep_assigned(&[]);
        assert_eq!(hold.release_due(at(0), |_| panic!("nothing is held")), Released::default());
    }
}
