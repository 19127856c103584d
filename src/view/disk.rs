//! The view on local disk (`--store-dir`): an embedded redb database holding every
//! operation's latest snapshot, the batches' members, the idempotency keys, and the
//! status topic positions the view reflects, all written in the same transactions.
//!
//! Writes go to a small overlay first and reach the database in one transaction per
//! [`FLUSH_AT`] changes (or when the gateway flushes, every few milliseconds), with the
//! positions of the records they came from: after a crash the database is at some
//! earlier transaction, positions included, and reading the topic on from there
//! brings it back (applying a snapshot twice changes nothing). Reads see the overlay
//! first. Memory is the overlay plus redb's page cache, whatever the number of
//! operations.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use redb::{Database, Durability, MultimapTableDefinition, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::watch;
use uuid::Uuid;

use crate::envelope::OperationSnapshot;
use super::idempotency::{scoped_key, Claim, Known};

use super::merge::{merged, DoneFlag, Positions};

/// Snapshots by command id (as a big-endian u128, so UUIDv7 ids sort by time).
const OPS: TableDefinition<u128, &[u8]> = TableDefinition::new("operations");
/// Done operations by (last update in ms, id): what the retention removes, in order.
const EXPIRY: TableDefinition<(i64, u128), ()> = TableDefinition::new("expiry");
const BATCHES: MultimapTableDefinition<&str, u128> = MultimapTableDefinition::new("batches");
/// Idempotency keys (scoped by tenant) and what is known of each.
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
/// Keys by (first request's creation in ms, key): what the ttl removes.
const KEY_EXPIRY: TableDefinition<(i64, &str), ()> = TableDefinition::new("key_expiry");
/// The next status topic offset to read, per partition.
const OFFSETS: TableDefinition<i32, i64> = TableDefinition::new("offsets");
/// `topic`: the status topic this store is the view of.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

/// Changes held in the overlay before they are written in one transaction.
const FLUSH_AT: usize = 2048;
/// Expired operations removed per eviction transaction (the next pass takes the rest).
const EVICT_BATCH: usize = 50_000;

/// Why the disk-backed view failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the operations store {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("operations store: {0}")]
    Db(Box<redb::Error>),
    #[error("operations store: a stored record does not decode: {0}")]
    Corrupt(String),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(Box::new(e.into()))
            }
        }
    )*};
}
from_redb!(redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

#[derive(Default)]
struct Overlay {
    /// `None`: removed.
    ops: BTreeMap<Uuid, Option<OperationSnapshot>>,
    keys: HashMap<String, Known>,
    offsets: BTreeMap<i32, i64>,
}

pub(super) struct Disk {
    db: Database,
    overlay: Mutex<Overlay>,
    /// Keys claimed by requests being accepted right now (never stored).
    claims: Mutex<HashSet<String>>,
    /// Long polls' flags, only for operations someone waits on.
    watchers: Mutex<HashMap<Uuid, DoneFlag>>,
    key_ttl: chrono::Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl Disk {
    pub fn open(dir: &Path, cache_bytes: usize, topic: &str, key_ttl: chrono::Duration) -> Result<Self, StoreError> {
        let path = dir.join("operations.redb");
        let failed = |reason: String| StoreError::Open { path: path.display().to_string(), reason };
        std::fs::create_dir_all(dir).map_err(|e| failed(format!("cannot create the directory {}: {e}", dir.display())))?;
        let db = Database::builder().set_cache_size(cache_bytes).create(&path).map_err(|e| {
            failed(match e {
                redb::DatabaseError::DatabaseAlreadyOpen => "another process has it open (each gateway and dispatcher needs a directory of its own)".into(),
                other => format!("{other} (the store is a cache of the status topic: remove the directory to rebuild it)"),
            })
        })?;
        let txn = db.begin_write()?;
        let stored = txn.open_table(META)?.get("topic")?.map(|t| t.value().to_string());
        if stored.as_deref().is_some_and(|t| t != topic) {
            tracing::warn!(path = %path.display(), was = ?stored, now = %topic, "the operations store was the view of another status topic; emptied");
            txn.delete_table(OPS)?;
            txn.delete_table(EXPIRY)?;
            txn.delete_multimap_table(BATCHES)?;
            txn.delete_table(KEYS)?;
            txn.delete_table(KEY_EXPIRY)?;
            txn.delete_table(OFFSETS)?;
        }
        txn.open_table(META)?.insert("topic", topic)?;
        // Every table exists from here on, so readers need not ask.
        txn.open_table(OPS)?;
        txn.open_table(EXPIRY)?;
        txn.open_multimap_table(BATCHES)?;
        txn.open_table(KEYS)?;
        txn.open_table(KEY_EXPIRY)?;
        txn.open_table(OFFSETS)?;
        txn.commit()?;
        Ok(Disk { db, overlay: Mutex::default(), claims: Mutex::default(), watchers: Mutex::default(), key_ttl })
    }

    pub fn positions(&self) -> Result<Positions, StoreError> {
        self.flush()?;
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OFFSETS)?;
        let mut positions = Positions::new();
        for row in table.iter()? {
            let (p, o) = row?;
            positions.insert(p.value(), o.value());
        }
        Ok(positions)
    }

    fn stored_op(&self, id: &Uuid) -> Result<Option<OperationSnapshot>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OPS)?;
        let found = table.get(id.as_u128())?;
        found.map(|v| decode(v.value())).transpose()
    }

    fn stored_key(&self, key: &str) -> Result<Option<Known>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(KEYS)?;
        let found = table.get(key)?;
        found.map(|v| decode(v.value())).transpose()
    }

    /// The operation as the overlay, else the database, has it.
    fn current(&self, overlay: &Overlay, id: &Uuid) -> Result<Option<OperationSnapshot>, StoreError> {
        match overlay.ops.get(id) {
            Some(held) => Ok(held.clone()),
            None => self.stored_op(id),
        }
    }

    fn known_key(&self, overlay: &Overlay, key: &str) -> Result<Option<Known>, StoreError> {
        match overlay.keys.get(key) {
            Some(k) => Ok(Some(k.clone())),
            None => self.stored_key(key),
        }
    }

    fn learn_key(&self, overlay: &mut Overlay, s: &OperationSnapshot) -> Result<(), StoreError> {
        let Some(key) = s.idempotency_key.as_deref() else { return Ok(()) };
        let key = scoped_key(s.tenant.as_deref(), key);
        if let Some(learned) = Known::learn(self.known_key(overlay, &key)?.as_ref(), s) {
            overlay.keys.insert(key.clone(), learned);
        }
        lock(&self.claims).remove(&key);
        Ok(())
    }

    pub fn record_key(&self, s: &OperationSnapshot) -> Result<(), StoreError> {
        let mut overlay = lock(&self.overlay);
        self.learn_key(&mut overlay, s)
    }

    pub fn apply(&self, s: OperationSnapshot, at: Option<(i32, i64)>) -> Result<(), StoreError> {
        let mut overlay = lock(&self.overlay);
        self.learn_key(&mut overlay, &s)?;
        let id = s.command_id;
        let new = match self.current(&overlay, &id)? {
            None => Some(s),
            Some(old) => merged(&old, s),
        };
        if let Some(new) = new {
            let done = new.state.is_final();
            overlay.ops.insert(id, Some(new));
            if done {
                self.wake(&id);
            }
        }
        self.advance(&mut overlay, at)
    }

    pub fn remove(&self, id: Uuid, at: Option<(i32, i64)>) -> Result<(), StoreError> {
        let mut overlay = lock(&self.overlay);
        overlay.ops.insert(id, None);
        self.wake(&id);
        self.advance(&mut overlay, at)
    }

    pub fn skip(&self, at: (i32, i64)) {
        let mut overlay = lock(&self.overlay);
        let _ = self.advance(&mut overlay, Some(at));
    }

    /// Notes the position read past, and writes the overlay out once it is full.
    fn advance(&self, overlay: &mut Overlay, at: Option<(i32, i64)>) -> Result<(), StoreError> {
        if let Some((partition, offset)) = at {
            overlay.offsets.insert(partition, offset + 1);
        }
        if overlay.ops.len() + overlay.keys.len() >= FLUSH_AT {
            self.write_out(overlay)?;
        }
        Ok(())
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        let mut overlay = lock(&self.overlay);
        self.write_out(&mut overlay)
    }

    /// One transaction with everything in the overlay, positions included.
    fn write_out(&self, overlay: &mut Overlay) -> Result<(), StoreError> {
        if overlay.ops.is_empty() && overlay.keys.is_empty() && overlay.offsets.is_empty() {
            return Ok(());
        }
        let mut txn = self.db.begin_write()?;
        // Not fsynced per transaction: a crash loses only transactions whose records
        // the topic still holds, and the positions go back with them.
        txn.set_durability(Durability::Eventual);
        {
            let mut ops = txn.open_table(OPS)?;
            let mut expiry = txn.open_table(EXPIRY)?;
            let mut batches = txn.open_multimap_table(BATCHES)?;
            for (id, snapshot) in &overlay.ops {
                let k = id.as_u128();
                let old: Option<OperationSnapshot> = ops.get(k)?.map(|v| decode(v.value())).transpose()?;
                if let Some(old) = &old {
                    if old.state.is_final() {
                        expiry.remove((millis(old.updated), k))?;
                    }
                    if let (Some(b), None) = (&old.batch_id, snapshot) {
                        batches.remove(b.as_str(), k)?;
                    }
                }
                match snapshot {
                    None => {
                        ops.remove(k)?;
                    }
                    Some(s) => {
                        ops.insert(k, encode(s)?.as_slice())?;
                        if s.state.is_final() {
                            expiry.insert((millis(s.updated), k), ())?;
                        }
                        if let Some(b) = &s.batch_id {
                            batches.insert(b.as_str(), k)?;
                        }
                    }
                }
            }
            let mut keys = txn.open_table(KEYS)?;
            let mut key_expiry = txn.open_table(KEY_EXPIRY)?;
            for (key, known) in &overlay.keys {
                let old: Option<Known> = keys.get(key.as_str())?.map(|v| decode(v.value())).transpose()?;
                if let Some(old) = old {
                    key_expiry.remove((millis(old.first.created), key.as_str()))?;
                }
                keys.insert(key.as_str(), encode(known)?.as_slice())?;
                key_expiry.insert((millis(known.first.created), key.as_str()), ())?;
            }
            let mut offsets = txn.open_table(OFFSETS)?;
            for (partition, offset) in &overlay.offsets {
                offsets.insert(*partition, *offset)?;
            }
        }
        txn.commit()?;
        *overlay = Overlay::default();
        Ok(())
    }

    pub fn get(&self, id: &Uuid) -> Result<Option<OperationSnapshot>, StoreError> {
        let overlay = lock(&self.overlay);
        self.current(&overlay, id)
    }

    /// A flag that turns `true` once `id` is done; `None` if `id` is unknown.
    pub fn watch(&self, id: &Uuid) -> Result<Option<watch::Receiver<bool>>, StoreError> {
        let rx = lock(&self.watchers).entry(*id).or_insert_with(|| watch::channel(false).0).subscribe();
        // Read after subscribing: a final state applied in between is seen here.
        match self.get(id)? {
            None => {
                self.unwatch(id);
                Ok(None)
            }
            Some(s) => {
                if s.state.is_final() {
                    self.wake(id);
                }
                Ok(Some(rx))
            }
        }
    }

    /// Drops `id`'s flag once nobody waits on it.
    pub fn unwatch(&self, id: &Uuid) {
        let mut watchers = lock(&self.watchers);
        if watchers.get(id).is_some_and(|tx| tx.receiver_count() == 0) {
            watchers.remove(id);
        }
    }

    fn wake(&self, id: &Uuid) {
        if let Some(tx) = lock(&self.watchers).remove(id) {
            tx.send_replace(true);
        }
    }

    pub fn newest(&self, after: Option<Uuid>, wanted: impl Fn(&OperationSnapshot) -> bool, n: usize) -> Result<Vec<OperationSnapshot>, StoreError> {
        self.flush()?;
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OPS)?;
        let rows = match after {
            Some(a) => table.range(..a.as_u128())?,
            None => table.range::<u128>(..)?,
        };
        let mut found = Vec::new();
        for row in rows.rev() {
            if found.len() >= n {
                break;
            }
            let s: OperationSnapshot = decode(row?.1.value())?;
            if wanted(&s) {
                found.push(s);
            }
        }
        Ok(found)
    }

    pub fn batch(&self, batch_id: &str) -> Result<Option<Vec<OperationSnapshot>>, StoreError> {
        self.flush()?;
        let txn = self.db.begin_read()?;
        let (members, ops) = (txn.open_multimap_table(BATCHES)?, txn.open_table(OPS)?);
        let mut found = Vec::new();
        for member in members.get(batch_id)? {
            if let Some(v) = ops.get(member?.value())? {
                found.push(decode(v.value())?);
            }
        }
        Ok((!found.is_empty()).then_some(found))
    }

    pub fn claim_key(&self, key: &str, request_hash: &str) -> Result<Claim, StoreError> {
        let overlay = lock(&self.overlay);
        if let Some(known) = self.known_key(&overlay, key)? {
            return Ok(known.claim(request_hash));
        }
        let mut claims = lock(&self.claims);
        Ok(if claims.insert(key.to_string()) { Claim::Fresh } else { Claim::InProgress })
    }

    pub fn release_key(&self, key: &str) {
        lock(&self.claims).remove(key);
    }

    /// Removes done operations last updated before `oldest`, and keys past their ttl.
    pub fn evict(&self, now: DateTime<Utc>, oldest: DateTime<Utc>) -> Result<(), StoreError> {
        self.flush()?;
        let _held = lock(&self.overlay);
        let txn = self.db.begin_write()?;
        {
            let mut expiry = txn.open_table(EXPIRY)?;
            let mut ops = txn.open_table(OPS)?;
            let mut batches = txn.open_multimap_table(BATCHES)?;
            let due: Vec<(i64, u128)> = expiry.range(..(millis(oldest), 0u128))?.take(EVICT_BATCH).map(|r| r.map(|(k, _)| k.value())).collect::<Result<_, _>>()?;
            for (at, id) in due {
                expiry.remove((at, id))?;
                let old: Option<OperationSnapshot> = ops.remove(id)?.map(|v| decode(v.value())).transpose()?;
                if let Some(b) = old.and_then(|o| o.batch_id) {
                    batches.remove(b.as_str(), id)?;
                }
            }
            let mut key_expiry = txn.open_table(KEY_EXPIRY)?;
            let mut keys = txn.open_table(KEYS)?;
            let cutoff = millis(crate::duration::before(now, self.key_ttl));
            let due: Vec<(i64, String)> =
                key_expiry.range(..(cutoff, ""))?.take(EVICT_BATCH).map(|r| r.map(|(k, _)| (k.value().0, k.value().1.to_string()))).collect::<Result<_, _>>()?;
            for (at, key) in due {
                key_expiry.remove((at, key.as_str()))?;
                keys.remove(key.as_str())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    pub fn sizes(&self) -> Result<(usize, usize), StoreError> {
        let txn = self.db.begin_read()?;
        let ops = txn.open_table(OPS)?.len()?;
        let keys = txn.open_table(KEYS)?.len()?;
        Ok((ops as usize, keys as usize))
    }
}
