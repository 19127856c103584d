//! `Idempotency-Key`, with Stripe's semantics: the same key with the same body
//! replays the first answer and creates nothing; the same key with a different body is
//! refused (`422`); a second request while the first is still being accepted is told
//! to retry (`409`).
//!
//! The index holds no state of its own that a restart could lose: every accepted
//! request leaves a `queued` snapshot on the status topic carrying its key and the
//! hash of its body, so a gateway reading that topic from the start rebuilds the index
//! exactly (see [`IdempotencyIndex::record`]). Only `Pending` claims are local, and
//! they last for the milliseconds between the claim and that snapshot's ack.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::envelope::{OperationSnapshot, State, Timing};

/// The operation as it was when first accepted: what an idempotent replay answers.
///
/// Derived from any later snapshot of the same command (the fields it keeps never
/// change), so the first answer can be repeated byte for byte after a restart even if
/// compaction has dropped the `queued` snapshot it was made from.
pub fn initial_view(s: &OperationSnapshot) -> OperationSnapshot {
    OperationSnapshot {
        state: State::Queued,
        attempt: 1,
        progress: None,
        result: None,
        error: None,
        timing: Timing::default(),
        updated: s.created,
        worker: None,
        deferred: None,
        ..s.clone()
    }
}

/// What the index says about a request carrying a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Never seen: the caller now holds the key and must accept or [`release`] it.
    ///
    /// [`release`]: IdempotencyIndex::release
    Fresh,
    /// Seen with the same body: answer with this first-answer view again.
    Replay(Box<OperationSnapshot>),
    /// Seen with a different body.
    Mismatch { id: Uuid },
    /// Another request with this key is being accepted right now.
    InProgress,
}

/// What is known of an accepted request's key: the first answer, and the hash of
/// the body it was given for. Stored as it is by the disk-backed view.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Known {
    pub first: Box<OperationSnapshot>,
    pub request_hash: Option<String>,
}

impl Known {
    /// The answer to a request with this key whose body hashes to `request_hash`.
    pub fn claim(&self, request_hash: &str) -> Claim {
        // A snapshot without a hash (its `queued` snapshot compacted away and the
        // worker's copy lacking it) cannot prove a mismatch: replay, never duplicate.
        if self.request_hash.as_deref().is_none_or(|h| h == request_hash) {
            Claim::Replay(self.first.clone())
        } else {
            Claim::Mismatch { id: self.first.command_id }
        }
    }

    /// What snapshot `s` makes of what is known of its key (`known`): the new entry
    /// to keep, or `None` when nothing changes. The earliest command with a key owns
    /// it: a later one (two gateways racing, or a client re-using a key outside the
    /// gateway) does not replace it.
    pub fn learn(known: Option<&Known>, s: &OperationSnapshot) -> Option<Known> {
        let fresh = || Known { first: Box::new(initial_view(s)), request_hash: s.request_hash.clone() };
        match known {
            None => Some(fresh()),
            Some(k) if k.first.command_id == s.command_id => {
                (k.request_hash.is_none() && s.request_hash.is_some()).then(|| Known { request_hash: s.request_hash.clone(), ..k.clone() })
            }
            Some(k) => ((s.created, s.command_id) < (k.first.created, k.first.command_id)).then(fresh),
        }
    }
}

#[derive(Debug, Clone)]
enum Slot {
    Pending,
    Known(Known),
}

/// Where a tenant's key lives in the index: each tenant has its own key space, so one
/// tenant's `Idempotency-Key` can neither replay nor block another's. (NUL cannot be
/// in a key, which is visible ASCII.)
pub fn scoped_key(tenant: Option<&str>, key: &str) -> String {
    match tenant {
        None => key.to_string(),
        Some(t) => format!("{t}\u{0}{key}"),
    }
}

/// Keys of accepted requests, kept for at least `ttl` after the request.
#[derive(Debug)]
pub struct IdempotencyIndex {
    slots: HashMap<String, Slot>,
    ttl: chrono::Duration,
}

impl IdempotencyIndex {
    pub fn new(ttl: Duration) -> Self {
        IdempotencyIndex { slots: HashMap::new(), ttl: chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX) }
    }

    /// Looks `key` up for a request whose canonical body hashes to `request_hash`.
    pub fn claim(&mut self, key: &str, request_hash: &str) -> Claim {
        match self.slots.get(key) {
            None => {
                self.slots.insert(key.to_string(), Slot::Pending);
                Claim::Fresh
            }
            Some(Slot::Pending) => Claim::InProgress,
            Some(Slot::Known(known)) => known.claim(request_hash),
        }
    }

    /// Gives up a `Fresh` claim whose request was not accepted after all. A key that
    /// has meanwhile been recorded is left alone.
    pub fn release(&mut self, key: &str) {
        if matches!(self.slots.get(key), Some(Slot::Pending)) {
            self.slots.remove(key);
        }
    }

    /// Learns from a snapshot (read from the status topic, or just written). The
    /// earliest command with a key owns it: a later one (two gateways racing, or a
    /// client re-using a key outside the gateway) does not replace it.
    pub fn record(&mut self, s: &OperationSnapshot) {
        let Some(key) = s.idempotency_key.as_deref() else { return };
        let key = scoped_key(s.tenant.as_deref(), key);
        let known = match self.slots.get(&key) {
            Some(Slot::Known(k)) => Some(k),
            None | Some(Slot::Pending) => None,
        };
        if let Some(learned) = Known::learn(known, s) {
            self.slots.insert(key, Slot::Known(learned));
        }
    }

    /// Forgets keys whose request is older than the ttl.
    /// Forgets the keys whose operation `gone` picks (a view dropping partitions it
    /// no longer holds); keys being claimed stay.
    pub fn forget(&mut self, gone: impl Fn(&Uuid) -> bool) {
        self.slots.retain(|_, slot| match slot {
            Slot::Pending => true,
            Slot::Known(known) => !gone(&known.first.command_id),
        });
    }

    pub fn evict(&mut self, now: DateTime<Utc>) {
        let oldest = crate::duration::before(now, self.ttl);
        self.slots.retain(|_, slot| match slot {
            Slot::Pending => true,
            Slot::Known(known) => known.first.created >= oldest,
        });
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::test_snapshot;

    fn queued(key: &str, hash: Option<&str>) -> OperationSnapshot {
        OperationSnapshot {
            idempotency_key: Some(key.into()),
            request_hash: hash.map(str::to_string),
            ..test_snapshot(State::Queued)
        }
    }

    #[test]
    fn same_body_replays_and_different_body_is_refused() {
        let mut index = IdempotencyIndex::new(Duration::from_secs(60));
        assert_eq!(index.claim("k", "h1"), Claim::Fresh);
        assert_eq!(index.claim("k", "h1"), Claim::InProgress);
        let s = queued("k", Some("h1"));
        index.record(&s);
        assert_eq!(index.claim("k", "h1"), Claim::Replay(Box::new(s.clone())));
        assert_eq!(index.claim("k", "h2"), Claim::Mismatch { id: s.command_id });
    }

    #[test]
    fn a_released_claim_frees_the_key() {
        let mut index = IdempotencyIndex::new(Duration::from_secs(60));
        assert_eq!(index.claim("k", "h"), Claim::Fresh);
        index.release("k");
        assert_eq!(index.claim("k", "h"), Claim::Fresh);
    }

    #[test]
    fn later_snapshots_keep_the_hash_and_the_first_command_wins() {
        let mut index = IdempotencyIndex::new(Duration::from_secs(60));
        let first = queued("k", Some("h"));
        index.record(&first);
        let mut done = first.clone();
        done.state = State::Completed;
        done.request_hash = None;
        index.record(&done);
        let mut rival = queued("k", Some("other"));
        rival.created = first.created + chrono::Duration::seconds(1);
        index.record(&rival);
        assert_eq!(index.claim("k", "other"), Claim::Mismatch { id: first.command_id });
        assert_eq!(index.claim("k", "h"), Claim::Replay(Box::new(first)));
    }

    #[test]
    fn initial_view_forgets_everything_after_acceptance() {
        let mut s = test_snapshot(State::Completed);
        s.idempotency_key = Some("k".into());
        let first = initial_view(&s);
        assert_eq!(first.state, State::Queued);
        assert_eq!(first.updated, s.created);
        assert_eq!(initial_view(&first), first);
        assert_eq!(first.idempotency_key, s.idempotency_key);
    }

    #[test]
    fn keys_expire_after_the_ttl() {
        let mut index = IdempotencyIndex::new(Duration::from_secs(60));
        index.record(&queued("k", Some("h")));
        index.evict(Utc::now());
        assert_eq!(index.len(), 1);
        index.evict(Utc::now() + chrono::Duration::seconds(61));
        assert_eq!(index.len(), 0);
    }
}
