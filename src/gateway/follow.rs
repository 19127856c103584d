//! Reading the status topic into the [`Store`]: from the beginning, every partition,
//! no consumer group (each gateway keeps its own complete view), `read_committed`
//! (snapshots written in exactly-once mode count only once their transaction does).
//!
//! Catching up is detected with librdkafka's partition-EOF events rather than by
//! comparing offsets with the high watermark: EOF is reported at the last stable
//! offset, past transaction markers, so a topic ending in a commit marker does not
//! look forever unread.

use std::collections::HashSet;
use std::sync::Arc;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::store::Store;
use super::GatewayError;
use crate::envelope::OperationSnapshot;
use crate::kafka::{partitions_of, set_default, KafkaArgs};

/// Starts following `topic` into `store` until `stop` fires, and returns once every
/// partition has been read to its end.
pub async fn follow_status(
    kafka: &KafkaArgs,
    topic: &str,
    store: Arc<Store>,
    stop: CancellationToken,
) -> Result<(), GatewayError> {
    let mut cfg = kafka.client_config()?;
    cfg.set("group.id", format!("courier-gateway-{}", crate::envelope::new_id()));
    cfg.set("enable.auto.commit", "false");
    cfg.set("enable.partition.eof", "true");
    set_default(&mut cfg, "isolation.level", "read_committed");
    let consumer: StreamConsumer = cfg.create()?;
    let name = topic.to_string();
    let (consumer, partitions) = tokio::task::spawn_blocking(move || assign_all(consumer, &name))
        .await
        .map_err(|e| GatewayError::Config(format!("status reader did not start: {e}")))??;
    let (ready_tx, ready_rx) = oneshot::channel();
    tokio::spawn(run(consumer, partitions, store, stop.clone(), ready_tx));
    tokio::select! {
        ready = ready_rx => ready.map_err(|_| GatewayError::Stopped),
        _ = stop.cancelled() => Err(GatewayError::Stopped),
    }
}

fn assign_all(consumer: StreamConsumer, topic: &str) -> Result<(StreamConsumer, HashSet<i32>), GatewayError> {
    let partitions = partitions_of(&consumer, topic)?;
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    Ok((consumer, partitions.into_iter().collect()))
}

async fn run(
    consumer: StreamConsumer,
    mut unread: HashSet<i32>,
    store: Arc<Store>,
    stop: CancellationToken,
    ready: oneshot::Sender<()>,
) {
    let started = std::time::Instant::now();
    let mut ready = Some(ready);
    loop {
        let next = tokio::select! {
            next = consumer.recv() => next,
            _ = stop.cancelled() => break,
        };
        match next {
            Ok(msg) => apply(&store, &msg),
            Err(KafkaError::PartitionEOF(p)) => {
                unread.remove(&p);
            }
            Err(e) => tracing::warn!(error = %e, "status topic reader error"),
        }
        if unread.is_empty() {
            if let Some(tx) = ready.take() {
                let (ops, keys) = store.sizes();
                tracing::info!(operations = ops, idempotency_keys = keys, elapsed = ?started.elapsed(), "status topic read to its end");
                let _ = tx.send(());
            }
        }
    }
}

fn apply(store: &Store, msg: &BorrowedMessage<'_>) {
    let Some(id) = msg.key().and_then(|k| std::str::from_utf8(k).ok()).and_then(|k| Uuid::parse_str(k).ok()) else {
        tracing::debug!(offset = msg.offset(), "status record without a command id key; skipped");
        return;
    };
    match OperationSnapshot::decode(msg.payload()) {
        Ok(Some(snapshot)) if snapshot.command_id == id => store.apply(snapshot),
        Ok(Some(_)) => tracing::debug!(%id, "status record keyed by another id; skipped"),
        Ok(None) => store.remove(id),
        Err(e) => tracing::debug!(%id, error = %e, "unreadable status record; skipped"),
    }
}
