//! The view of every operation: the compacted status topic, materialized, for the
//! gateway (operations, batches, idempotency keys, long polls) and the webhook
//! dispatcher (callback URLs).
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
mod follow;
pub(crate) mod idempotency;
mod memory;
mod merge;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::envelope::{OperationSnapshot, State};

use idempotency::Claim;

pub use disk::StoreError;
pub use merge::Positions;

pub(crate) use follow::{apply as apply_record, follow_status};

/// Why a view could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error(transparent)]
    Follow(#[from] crate::follow::FollowError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether an operation is in a partition a listing covers.
pub type PartitionTest = std::sync::Arc<dyn Fn(&uuid::Uuid) -> bool + Send + Sync>;

/// Which operations a listing wants.
#[derive(Clone, Default)]
pub struct Filter {
    /// A state name (`queued`, `completed`, ...), or `running` (started or progress),
    /// or `done` (any final state).
    pub state: Option<String>,
    pub command_type: Option<String>,
    /// Only this tenant's operations (None: the unnamed tenant's). Always applied:
    /// a listing never crosses tenants.
    pub tenant: Option<String>,
    /// Only operations whose status partition (computed from the id) passes this: a
    /// gateway of a group answers a listing for the partitions it owns.
    pub partition: Option<PartitionTest>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter")
            .field("state", &self.state)
            .field("command_type", &self.command_type)
            .field("tenant", &self.tenant)
            .field("partition", &self.partition.as_ref().map(|_| "some"))
            .finish()
    }
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
        state_ok
            && self.command_type.as_deref().is_none_or(|t| t == s.command_type)
            && self.tenant == s.tenant
            && self.partition.as_ref().is_none_or(|owns| owns(&s.command_id))
    }
}

fn parse_state(name: &str) -> Option<State> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
}

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

    /// Drops the operations `gone` picks (those of partitions a gateway of a group no
    /// longer owns), if the view is in memory, and says whether it did: a view on disk
    /// keeps them, with its positions, to resume from should the partitions return.
    pub fn forget(&self, gone: impl Fn(&Uuid) -> bool) -> bool {
        match &self.backend {
            Backend::Memory(m) => {
                m.forget(gone);
                true
            }
            Backend::Disk(_) => false,
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

/// Starts what keeps `store` true over time, until `stop`: eviction past the
/// retention (`shortest` of the retention and the key ttl), and for a store on disk
/// the periodic flush.
pub(crate) fn maintain(store: &Arc<Store>, shortest: Duration, stop: &CancellationToken) {
    tokio::spawn(evict_periodically(store.clone(), shortest, stop.clone()));
    if matches!(store.backend, Backend::Disk(_)) {
        tokio::spawn(flush_periodically(store.clone(), stop.clone()));
    }
}

/// Writes the on-disk view's overlay out every few milliseconds, and once more at
/// shutdown: what the follower took in reaches disk (with its positions) soon even
/// when too little arrives to fill an overlay.
async fn flush_periodically(store: Arc<Store>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = stop.cancelled() => {
                let _ = tokio::task::spawn_blocking(move || store.flush()).await;
                return;
            }
        }
        let store = store.clone();
        let _ = tokio::task::spawn_blocking(move || store.flush()).await;
    }
}

/// Forgets expired operations and keys, a few times per retention period (at most
/// once a minute, at least once a second).
async fn evict_periodically(store: Arc<Store>, shortest: Duration, stop: CancellationToken) {
    let every = (shortest / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => store.evict(chrono::Utc::now()),
            _ = stop.cancelled() => return,
        }
    }
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


#[cfg(test)]
mod tests;
