//! The view held in the process: what `courier gateway` keeps without `--store-dir`.
//! Everything the status topic retains is in memory and read again at every start.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use uuid::Uuid;

use crate::envelope::OperationSnapshot;
use super::idempotency::{Claim, IdempotencyIndex};

use super::merge::{merged, DoneFlag};

struct Entry {
    snapshot: OperationSnapshot,
    done: DoneFlag,
}

#[derive(Default)]
struct Inner {
    ops: BTreeMap<Uuid, Entry>,
    batches: HashMap<String, BTreeSet<Uuid>>,
}

pub(super) struct Memory {
    inner: Mutex<Inner>,
    index: Mutex<IdempotencyIndex>,
}

impl Memory {
    pub fn new(idempotency_ttl: Duration) -> Self {
        Memory { inner: Mutex::default(), index: Mutex::new(IdempotencyIndex::new(idempotency_ttl)) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_index(&self) -> MutexGuard<'_, IdempotencyIndex> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn apply(&self, s: OperationSnapshot) {
        self.lock_index().record(&s);
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
                let Some(s) = merged(&entry.snapshot, s) else { return };
                let done = s.state.is_final();
                entry.snapshot = s;
                entry.done.send_if_modified(|d| std::mem::replace(d, done) != done);
            }
        }
    }

    pub fn record_key(&self, s: &OperationSnapshot) {
        self.lock_index().record(s);
    }

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

    pub fn watch(&self, id: &Uuid) -> Option<watch::Receiver<bool>> {
        Some(self.lock().ops.get(id)?.done.subscribe())
    }

    /// Up to `n` operations `wanted` picks, newest first, older than `after`.
    pub fn newest(&self, after: Option<Uuid>, wanted: impl Fn(&OperationSnapshot) -> bool, n: usize) -> Vec<OperationSnapshot> {
        let inner = self.lock();
        let range = match after {
            Some(a) => inner.ops.range(..a),
            None => inner.ops.range(..),
        };
        range.rev().map(|(_, e)| &e.snapshot).filter(|s| wanted(s)).take(n).cloned().collect()
    }

    pub fn batch(&self, batch_id: &str) -> Option<Vec<OperationSnapshot>> {
        let inner = self.lock();
        let members = inner.batches.get(batch_id)?;
        Some(members.iter().filter_map(|id| inner.ops.get(id)).map(|e| e.snapshot.clone()).collect())
    }

    pub fn claim_key(&self, key: &str, request_hash: &str) -> Claim {
        self.lock_index().claim(key, request_hash)
    }

    pub fn release_key(&self, key: &str) {
        self.lock_index().release(key)
    }

    pub fn evict(&self, now: DateTime<Utc>, oldest: DateTime<Utc>) {
        self.lock_index().evict(now);
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

    /// Drops the operations `gone` picks, and their idempotency keys.
    pub fn forget(&self, gone: impl Fn(&Uuid) -> bool) {
        self.lock_index().forget(&gone);
        let ids: Vec<Uuid> = self.lock().ops.keys().filter(|id| gone(id)).copied().collect();
        for id in ids {
            self.remove(id);
        }
    }

    pub fn sizes(&self) -> (usize, usize) {
        (self.lock().ops.len(), self.lock_index().len())
    }
}
