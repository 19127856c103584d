//! The gateway's view of every operation: the compacted status topic, materialized.
//!
//! The status topic holds the latest snapshot per command id; a gateway reads it and
//! then follows it, so several gateways each hold the same view and a restarted one
//! loses nothing. The view adds what the topic cannot answer quickly: recent
//! operations in id order (UUIDv7 ids sort by creation time), the members of each
//! batch, the idempotency index, and a way to wait for one operation to finish
//! without polling.
//!
//! Two backends hold it. [`memory`] keeps everything in the process and reads the
//! topic from its start at every start: memory and start-up time grow with the
//! operations retained. [`disk`] (`--store-dir`) keeps it in an embedded database
//! on local disk, with the topic positions it reflects checkpointed in the same
//! transactions, so a restart reads only the tail and memory is bounded by the
//! page cache (`--store-cache`), not by the number of operations.

mod disk;
mod memory;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use uuid::Uuid;

use crate::envelope::{OperationSnapshot, State};

use super::idempotency::Claim;

pub use disk::StoreError;

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

/// What a newer snapshot `s` makes of the one held (`old`): `None` when it changes
/// nothing. Later snapshots win, with two exceptions that keep the view true when
/// records arrive late or twice: a final state is never replaced by a non-final one,
/// and what only the gateway's own `queued` snapshot knows (the request hash, the
/// idempotency key, the batch, the tenant, the callback) is kept when a worker's
/// snapshot lacks it.
fn merged(old: &OperationSnapshot, mut s: OperationSnapshot) -> Option<OperationSnapshot> {
    if old.state.is_final() && !s.state.is_final() {
        return None;
    }
    s.request_hash = s.request_hash.take().or_else(|| old.request_hash.clone());
    s.idempotency_key = s.idempotency_key.take().or_else(|| old.idempotency_key.clone());
    s.batch_id = s.batch_id.take().or_else(|| old.batch_id.clone());
    s.tenant = s.tenant.take().or_else(|| old.tenant.clone());
    s.callback_url = s.callback_url.take().or_else(|| old.callback_url.clone());
    s.created = s.created.min(old.created);
    Some(s)
}

/// Where the view stands in the status topic: the next offset to read per partition.
pub type Positions = HashMap<i32, i64>;

enum Backend {
    Memory(memory::Memory),
    Disk(disk::Disk),
}

/// Every known operation, plus the idempotency index.
pub struct Store {
    backend: Backend,
    retention: chrono::Duration,
}

impl Store {
    /// In memory. Done operations are kept for `retention` after their last update;
    /// idempotency keys for `idempotency_ttl` after their request.
    pub fn new(retention: Duration, idempotency_ttl: Duration) -> Self {
        Store { backend: Backend::Memory(memory::Memory::new(idempotency_ttl)), retention: chrono_span(retention) }
    }

    /// On disk in `dir` (created if need be), caching at most `cache_bytes` of it,
    /// as the view of `topic`: a store made for another topic is emptied first.
    pub fn open(dir: &Path, cache_bytes: usize, topic: &str, retention: Duration, idempotency_ttl: Duration) -> Result<Self, StoreError> {
        let disk = disk::Disk::open(dir, cache_bytes, topic, chrono_span(idempotency_ttl))?;
        Ok(Store { backend: Backend::Disk(disk), retention: chrono_span(retention) })
    }

    /// Where to resume reading the status topic: `None` for a view kept in memory
    /// (read from the start), the checkpointed positions for one on disk.
    pub fn positions(&self) -> Result<Option<Positions>, StoreError> {
        match &self.backend {
            Backend::Memory(_) => Ok(None),
            Backend::Disk(d) => d.positions().map(Some),
        }
    }

    /// Takes in a snapshot read from the status topic at `at` (partition, offset), or
    /// just written by this gateway (`None`).
    pub fn apply_at(&self, s: OperationSnapshot, at: Option<(i32, i64)>) {
        if s.state.is_final() && s.updated < crate::duration::before(Utc::now(), self.retention) {
            // Past the retention already; its key may still be within its ttl.
            match &self.backend {
                Backend::Memory(m) => m.record_key(&s),
                Backend::Disk(d) => or_logged("key", d.record_key(&s), ()),
            }
            self.remove_at(s.command_id, at);
            return;
        }
        match &self.backend {
            Backend::Memory(m) => m.apply(s),
            Backend::Disk(d) => or_logged("apply", d.apply(s, at), ()),
        }
    }

    /// A snapshot this gateway just wrote.
    pub fn apply(&self, s: OperationSnapshot) {
        self.apply_at(s, None)
    }

    /// A tombstone at `at`: the operation was deleted from the topic.
    pub fn remove_at(&self, id: Uuid, at: Option<(i32, i64)>) {
        match &self.backend {
            Backend::Memory(m) => m.remove(id),
            Backend::Disk(d) => or_logged("remove", d.remove(id, at), ()),
        }
    }

    /// A record at `at` that changes no operation (unreadable, or not a snapshot):
    /// the view has still read past it.
    pub fn skip_at(&self, at: (i32, i64)) {
        if let Backend::Disk(d) = &self.backend {
            d.skip(at);
        }
    }

    /// Writes what is buffered to disk (a no-op in memory). The follower calls it
    /// when caught up, the gateway every few milliseconds.
    pub fn flush(&self) {
        if let Backend::Disk(d) = &self.backend {
            or_logged("flush", d.flush(), ());
        }
    }

    pub fn get(&self, id: &Uuid) -> Option<OperationSnapshot> {
        match &self.backend {
            Backend::Memory(m) => m.get(id),
            Backend::Disk(d) => or_logged("get", d.get(id), None),
        }
    }

    /// The operation once it is done, or as it is when `timeout` passes or `stop`
    /// fires; `None` if unknown.
    pub async fn wait_done(&self, id: &Uuid, timeout: Duration, stop: &tokio_util::sync::CancellationToken) -> Option<OperationSnapshot> {
        let mut done = match &self.backend {
            Backend::Memory(m) => m.watch(id)?,
            Backend::Disk(d) => or_logged("watch", d.watch(id), None)?,
        };
        tokio::select! {
            _ = tokio::time::timeout(timeout, done.wait_for(|d| *d)) => {}
            _ = stop.cancelled() => {}
        }
        drop(done);
        if let Backend::Disk(d) = &self.backend {
            d.unwatch(id);
        }
        self.get(id)
    }

    /// Up to `limit` operations matching `filter`, newest first, starting after
    /// (older than) `after`; and the id to continue after, if more may follow.
    pub fn list(&self, filter: &Filter, after: Option<Uuid>, limit: usize) -> (Vec<OperationSnapshot>, Option<Uuid>) {
        let mut page = match &self.backend {
            Backend::Memory(m) => m.newest(after, |s| filter.matches(s), limit + 1),
            Backend::Disk(d) => or_logged("list", d.newest(after, |s| filter.matches(s), limit + 1), Vec::new()),
        };
        if page.len() <= limit {
            return (page, None);
        }
        page.truncate(limit);
        let next = page.last().map(|s| s.command_id);
        (page, next)
    }

    /// The operations of a batch, in submission order; `None` if unknown.
    pub fn batch(&self, batch_id: &str) -> Option<Vec<OperationSnapshot>> {
        match &self.backend {
            Backend::Memory(m) => m.batch(batch_id),
            Backend::Disk(d) => or_logged("batch", d.batch(batch_id), None),
        }
    }

    /// Ids of the operations of one type still waiting for a worker.
    pub fn queued_of_type(&self, command_type: &str) -> Vec<Uuid> {
        let queued = |s: &OperationSnapshot| s.state == State::Queued && s.command_type == command_type;
        let found = match &self.backend {
            Backend::Memory(m) => m.newest(None, queued, usize::MAX),
            Backend::Disk(d) => or_logged("queued", d.newest(None, queued, usize::MAX), Vec::new()),
        };
        found.into_iter().map(|s| s.command_id).collect()
    }

    pub fn claim_key(&self, key: &str, request_hash: &str) -> Claim {
        match &self.backend {
            Backend::Memory(m) => m.claim_key(key, request_hash),
            // A key the store cannot read is not known to be new: the caller retries.
            Backend::Disk(d) => or_logged("claim", d.claim_key(key, request_hash), Claim::InProgress),
        }
    }

    pub fn release_key(&self, key: &str) {
        match &self.backend {
            Backend::Memory(m) => m.release_key(key),
            Backend::Disk(d) => d.release_key(key),
        }
    }

    /// Forgets done operations past the retention and keys past their ttl.
    pub fn evict(&self, now: DateTime<Utc>) {
        let oldest = crate::duration::before(now, self.retention);
        match &self.backend {
            Backend::Memory(m) => m.evict(now, oldest),
            Backend::Disk(d) => or_logged("evict", d.evict(now, oldest), ()),
        }
    }

    /// (operations, idempotency keys) held.
    pub fn sizes(&self) -> (usize, usize) {
        match &self.backend {
            Backend::Memory(m) => m.sizes(),
            Backend::Disk(d) => or_logged("sizes", d.sizes(), (0, 0)),
        }
    }
}

/// Parses a size: bytes, or a number with `KB`, `MB`, `GB` (powers of 1000) or
/// `KiB`, `MiB`, `GiB` (powers of 1024); `--store-cache 64MB`.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: usize = digits.parse().map_err(|_| format!("{text:?} is not a size (e.g. 64MB, 1GiB, 1048576)"))?;
    let scale: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return Err(format!("{text:?}: unknown unit (B, KB, MB, GB, KiB, MiB, GiB)")),
    };
    n.checked_mul(scale).ok_or_else(|| format!("{text:?} is too large"))
}

fn chrono_span(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// A store failure is logged, not answered: the view is a cache of the topic, and
/// the caller's answer falls back to `fallback` ("not known (yet)").
fn or_logged<T>(what: &'static str, r: Result<T, StoreError>, fallback: T) -> T {
    r.unwrap_or_else(|e| {
        tracing::error!(operation = what, error = %e, "operations store");
        fallback
    })
}

/// A `true` once an operation is done; long polls wait on it.
type DoneFlag = watch::Sender<bool>;

#[cfg(test)]
mod tests;
