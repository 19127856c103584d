//! Reading the status topic into the [`Store`]: from the beginning, every partition,
//! no consumer group (each gateway keeps its own complete view), through the shared
//! whole-topic follower ([`crate::follow`]).

use std::sync::Arc;

use uuid::Uuid;

use super::store::Store;
use super::GatewayError;
use crate::envelope::OperationSnapshot;
use crate::follow::{follow, Seen, StartAt};
use crate::kafka::KafkaArgs;

/// Starts following `topic` into `store` until `stop` fires, and returns once every
/// partition has been read to its end.
pub async fn follow_status(
    kafka: &KafkaArgs,
    topic: &str,
    store: Arc<Store>,
    stop: tokio_util::sync::CancellationToken,
) -> Result<(), GatewayError> {
    let started = std::time::Instant::now();
    let sink = store.clone();
    follow(kafka, topic, StartAt::Beginning, stop, move |seen| apply(&sink, &seen)).await?;
    let (ops, keys) = store.sizes();
    tracing::info!(operations = ops, idempotency_keys = keys, elapsed = ?started.elapsed(), "status topic read to its end");
    Ok(())
}

fn apply(store: &Store, seen: &Seen<'_>) {
    let Some(id) = seen.key().and_then(|k| std::str::from_utf8(k).ok()).and_then(|k| Uuid::parse_str(k).ok()) else {
        tracing::debug!(offset = seen.offset(), "status record without a command id key; skipped");
        return;
    };
    match OperationSnapshot::decode(seen.value()) {
        Ok(Some(snapshot)) if snapshot.command_id == id => store.apply(snapshot),
        Ok(Some(_)) => tracing::debug!(%id, "status record keyed by another id; skipped"),
        Ok(None) => store.remove(id),
        Err(e) => tracing::debug!(%id, error = %e, "unreadable status record; skipped"),
    }
}
