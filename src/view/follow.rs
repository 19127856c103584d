//! Reading the status topic into the [`Store`]: every partition, no consumer group
//! (each gateway keeps its own complete view), through the shared whole-topic
//! follower ([`crate::follow`]); from the beginning into a view in memory, from the
//! positions it checkpointed into one on disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use uuid::Uuid;

use super::{Store, ViewError};
use crate::envelope::OperationSnapshot;
use crate::follow::{follow, follow_from, Seen, StartAt};
use crate::kafka::KafkaArgs;

/// Starts following `topic` into `store` until `stop` fires, and returns once every
/// partition has been read to its end.
pub async fn follow_status(
    kafka: &KafkaArgs,
    topic: &str,
    store: Arc<Store>,
    stop: tokio_util::sync::CancellationToken,
) -> Result<(), ViewError> {
    let started = std::time::Instant::now();
    let sink = store.clone();
    let read = Arc::new(AtomicU64::new(0));
    let counted = read.clone();
    let on_record = move |seen: Seen<'_>| {
        counted.fetch_add(1, Ordering::Relaxed);
        apply(&sink, &seen)
    };
    let resumed = store.positions()?;
    let from = if resumed.as_ref().is_some_and(|p| !p.is_empty()) { "stored-positions" } else { "topic-start" };
    match resumed {
        Some(positions) => follow_from(kafka, topic, positions, stop, on_record).await?,
        None => follow(kafka, topic, StartAt::Beginning, stop, on_record).await?,
    }
    store.flush();
    let (ops, keys) = store.sizes();
    tracing::info!(operations = ops, idempotency_keys = keys, records_read = read.load(Ordering::Relaxed), %from, elapsed = ?started.elapsed(), "status topic read to its end");
    Ok(())
}

/// Takes one record of the status topic into `store`: a snapshot, a tombstone, or a
/// record that changes nothing but is read past.
pub(crate) fn apply(store: &Store, seen: &Seen<'_>) {
    let at = (seen.partition(), seen.offset());
    let Some(id) = seen.key().and_then(|k| std::str::from_utf8(k).ok()).and_then(|k| Uuid::parse_str(k).ok()) else {
        tracing::debug!(offset = seen.offset(), "status record without a command id key; skipped");
        store.skip_at(at);
        return;
    };
    match OperationSnapshot::decode(seen.value()) {
        Ok(Some(snapshot)) if snapshot.command_id == id => store.apply_at(snapshot, Some(at)),
        Ok(Some(_)) => {
            tracing::debug!(%id, "status record keyed by another id; skipped");
            store.skip_at(at);
        }
        Ok(None) => store.remove_at(id, Some(at)),
        Err(e) => {
            tracing::debug!(%id, error = %e, "unreadable status record; skipped");
            store.skip_at(at);
        }
    }
}
