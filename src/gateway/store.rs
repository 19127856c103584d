//! The gateway's view of every operation: the compacted status topic, materialized in
//! memory.
//!
//! The status topic holds the latest snapshot per command id; a gateway reads it from
//! the beginning at start and then follows it, so several gateways each hold the same
//! view and a restarted one loses nothing. The store adds what the topic cannot
//! answer quickly: recent operations in id order (UUIDv7 ids sort by creation time),
//! the members of each batch, the idempotency index, and a way to wait for one
//! operation to finish without polling (a `watch` channel per operation).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use uuid::Uuid;

use crate::duration::before;
use crate::envelope::{OperationSnapshot, State};

use super::idempotency::{Claim, IdempotencyIndex};

/// Which operations a listing wants.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// A state name (`queued`, `completed`, ...), or `running` (started or progress),
    /// or `done` (any final state).
    pub state: Option<String>,
    pub command_type: Option<String>,
    /// Only this tenant's operations (None: the unnamed tenant's). Always applied:
    /// a listing never crosses tenants.
    pub tenant: Option<String>,
}

impl Filter {
    /// Whether a state filter names something real; checked before listing.
    pub fn valid_state(name: &str) -> bool {
        matches!(name, "running" | "done") || parse_state(name).is_some()
    }

    fn matches(&self, s: &OperationSnapshot) -> bool {
        let state_ok = match self.state.as_deref() {
            None => true,
            Some("running") => matches!(s.state, State::Started | State::Progress),
            Some("done") => s.state.is_final(),
            Some(name) => parse_state(name) == Some(s.state),
        };
        state_ok && self.command_type.as_deref().is_none_or(|t| t == s.command_type) && self.tenant == s.tenant
    }
}

fn parse_state(name: &str) -> Option<State> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
}

struct Entry {
    snapshot: OperationSnapshot,
    /// `true` once the operation is done; long polls wait on it.
    done: watch::Sender<bool>,
}

#[derive(Default)]
struct Inner {
    ops: BTreeMap<Uuid, Entry>,
    batches: HashMap<String, BTreeSet<Uuid>>,
}

/// Every known operation, plus the idempotency index.
pub struct Store {
    inner: Mutex<Inner>,
    index: Mutex<IdempotencyIndex>,
    retention: chrono::Duration,
}

impl Store {
    /// Done operations are kept for `retention` after their last update; idempotency
    /// keys for `idempotency_ttl` after their request.
    pub fn new(retention: Duration, idempotency_ttl: Duration) -> Self {
        Store {
            inner: Mutex::default(),
            index: Mutex::new(IdempotencyIndex::new(idempotency_ttl)),
            retention: chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_index(&self) -> MutexGuard<'_, IdempotencyIndex> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes in a snapshot, from the status topic or just written by this gateway.
    ///
    /// Later snapshots win, with two exceptions that keep the view true when records
    /// arrive late or twice: a final state is never replaced by a non-final one, and
    /// what only the gateway's own `queued` snapshot knows (the request hash, the
    /// idempotency key, the batch) is kept when a worker's snapshot lacks it.
    pub fn apply(&self, mut s: OperationSnapshot) {
        self.lock_index().record(&s);
        if s.state.is_final() && s.updated < before(Utc::now(), self.retention) {
            self.remove(s.command_id);
            return;
        }
        let mut inner = self.lock();
        if let Some(batch) = &s.batch_id {
            inner.batches.entry(batch.clone()).or_default().insert(s.command_id);
        }
        match inner.ops.get_mut(&s.command_id) {
            None => {
                let (done, _) = watch::channel(s.state.is_final());
                inner.ops.insert(s.command_id, Entry { snapshot: s, done });
            }
            Some(entry) => {
                let old = &entry.snapshot;
                if old.state.is_final() && !s.state.is_final() {
                    return;
                }
                s.request_hash = s.request_hash.take().or_else(|| old.request_hash.clone());
                s.idempotency_key = s.idempotency_key.take().or_else(|| old.idempotency_key.clone());
                s.batch_id = s.batch_id.take().or_else(|| old.batch_id.clone());
                s.tenant = s.tenant.take().or_else(|| old.tenant.clone());
                s.callback_url = s.callback_url.take().or_else(|| old.callback_url.clone());
                s.created = s.created.min(old.created);
                let done = s.state.is_final();
                entry.snapshot = s;
                entry.done.send_if_modified(|d| std::mem::replace(d, done) != done);
            }
        }
    }

    /// A tombstone: the operation was deleted from the topic.
    pub fn remove(&self, id: Uuid) {
        let mut inner = self.lock();
        if let Some(entry) = inner.ops.remove(&id) {
            if let Some(batch) = &entry.snapshot.batch_id {
                if let Some(members) = inner.batches.get_mut(batch) {
                    members.remove(&id);
                    if members.is_empty() {
                        inner.batches.remove(batch);
                    }
                }
            }
        }
    }

    pub fn get(&self, id: &Uuid) -> Option<OperationSnapshot> {
        self.lock().ops.get(id).map(|e| e.snapshot.clone())
    }

    /// The operation once it is done, or as it is when `timeout` passes or `stop`
    /// fires; `None` if unknown.
    pub async fn wait_done(
        &self,
        id: &Uuid,
        timeout: Duration,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Option<OperationSnapshot> {
        let mut done = self.lock().ops.get(id)?.done.subscribe();
        tokio::select! {
            _ = tokio::time::timeout(timeout, done.wait_for(|d| *d)) => {}
            _ = stop.cancelled() => {}
        }
        self.get(id)
    }

    /// Up to `limit` operations matching `filter`, newest first, starting after
    /// (older than) `after`; and the id to continue after, if more may follow.
    pub fn list(&self, filter: &Filter, after: Option<Uuid>, limit: usize) -> (Vec<OperationSnapshot>, Option<Uuid>) {
        let inner = self.lock();
        let range = match after {
            Some(a) => inner.ops.range(..a),
            None => inner.ops.range(..),
        };
        let mut page: Vec<OperationSnapshot> =
            range.rev().map(|(_, e)| &e.snapshot).filter(|s| filter.matches(s)).take(limit + 1).cloned().collect();
        if page.len() <= limit {
            return (page, None);
        }
        page.truncate(limit);
        let next = page.last().map(|s| s.command_id);
        (page, next)
    }

    /// The operations of a batch, in submission order; `None` if unknown.
    pub fn batch(&self, batch_id: &str) -> Option<Vec<OperationSnapshot>> {
        let inner = self.lock();
        let members = inner.batches.get(batch_id)?;
        Some(members.iter().filter_map(|id| inner.ops.get(id)).map(|e| e.snapshot.clone()).collect())
    }

    /// Ids of the operations of one type still waiting for a worker.
    pub fn queued_of_type(&self, command_type: &str) -> Vec<Uuid> {
        let inner = self.lock();
        inner.ops.values().map(|e| &e.snapshot).filter(|s| s.state == State::Queued && s.command_type == command_type).map(|s| s.command_id).collect()
    }

    pub fn claim_key(&self, key: &str, request_hash: &str) -> Claim {
        self.lock_index().claim(key, request_hash)
    }

    pub fn release_key(&self, key: &str) {
        self.lock_index().release(key)
    }

    /// Forgets done operations past the retention and keys past their ttl.
    pub fn evict(&self, now: DateTime<Utc>) {
        self.lock_index().evict(now);
        let oldest = before(now, self.retention);
        let expired: Vec<Uuid> = self
            .lock()
            .ops
            .values()
            .filter(|e| e.snapshot.state.is_final() && e.snapshot.updated < oldest)
            .map(|e| e.snapshot.command_id)
            .collect();
        for id in expired {
            self.remove(id);
        }
    }

    /// (operations, idempotency keys) held.
    pub fn sizes(&self) -> (usize, usize) {
        (self.lock().ops.len(), self.lock_index().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::new_id;
    use crate::envelope::test_snapshot;

    fn snap(id: Uuid, state: State, t: &str) -> OperationSnapshot {
        OperationSnapshot { command_id: id, command_type: t.into(), ..test_snapshot(state) }
    }

    #[test]
    fn final_states_stick_and_gateway_fields_survive_worker_snapshots() {
        let store = Store::new(Duration::from_secs(60), Duration::from_secs(60));
        let id = new_id();
        let mut queued = snap(id, State::Queued, "echo");
        queued.request_hash = Some("h".into());
        queued.batch_id = Some("b".into());
        store.apply(queued);
        store.apply(snap(id, State::Completed, "echo"));
        store.apply(snap(id, State::Started, "echo"));
        let now = store.get(&id).unwrap();
        assert_eq!(now.state, State::Completed);
        assert_eq!(now.request_hash.as_deref(), Some("h"));
        assert_eq!(store.batch("b").unwrap().len(), 1);
    }

    #[test]
    fn lists_newest_first_in_pages_with_filters() {
        let store = Store::new(Duration::from_secs(60), Duration::from_secs(60));
        let ids: Vec<Uuid> = (0..5).map(|_| new_id()).collect();
        for (i, id) in ids.iter().enumerate() {
            store.apply(snap(*id, if i % 2 == 0 { State::Completed } else { State::Queued }, "echo"));
        }
        let all = Filter::default();
        let (page, next) = store.list(&all, None, 2);
        assert_eq!(page.iter().map(|s| s.command_id).collect::<Vec<_>>(), vec![ids[4], ids[3]]);
        let (page, next) = store.list(&all, next, 2);
        assert_eq!(page[0].command_id, ids[2]);
        let (page, next) = store.list(&all, next, 2);
        assert_eq!((page.len(), next), (1, None));
        let done = Filter { state: Some("completed".into()), command_type: Some("echo".into()), tenant: None };
        assert_eq!(store.list(&done, None, 10).0.len(), 3);
        assert_eq!(store.queued_of_type("echo").len(), 2);
        assert!(!Filter::valid_state("nope"));
    }

    #[test]
    fn done_operations_are_evicted_after_the_retention() {
        let store = Store::new(Duration::from_secs(60), Duration::from_secs(60));
        let (a, b) = (new_id(), new_id());
        store.apply(snap(a, State::Completed, "echo"));
        store.apply(snap(b, State::Queued, "echo"));
        store.evict(Utc::now() + chrono::Duration::seconds(120));
        assert!(store.get(&a).is_none() && store.get(&b).is_some());
    }

    #[test]
    fn a_retention_longer_than_time_itself_keeps_everything() {
        let store = Store::new(Duration::MAX, Duration::MAX);
        let a = new_id();
        store.apply(snap(a, State::Completed, "echo"));
        store.evict(Utc::now());
        assert!(store.get(&a).is_some());
    }

    #[tokio::test]
    async fn waiting_ends_when_the_operation_is_done() {
        let store = std::sync::Arc::new(Store::new(Duration::from_secs(60), Duration::from_secs(60)));
        let id = new_id();
        store.apply(snap(id, State::Started, "echo"));
        let stop = tokio_util::sync::CancellationToken::new();
        let waiter = {
            let store = store.clone();
            tokio::spawn(async move { store.wait_done(&id, Duration::from_secs(10), &stop).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        store.apply(snap(id, State::Completed, "echo"));
        let done = tokio::time::timeout(Duration::from_secs(2), waiter).await.unwrap().unwrap();
        assert_eq!(done.unwrap().state, State::Completed);
    }
}
