//! Reading a whole topic, every partition, with no consumer group, and keeping up
//! with it: how a gateway materializes operations (status topic), how a webhook
//! dispatcher learns callback URLs, disabled endpoints and past attempts, and how
//! `courier webhooks replay` reads the webhook DLQ.
//!
//! Each reader needs the complete picture, not a share of it, so there is no group.
//! Records are read `read_committed`: snapshots written in exactly-once mode count
//! only once their transaction does. "Caught up" is librdkafka's partition EOF,
//! reported at the last stable offset, so a topic that ends in a transaction marker
//! does not look unread forever (comparing with the high watermark would).

use std::collections::HashSet;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::envelope::HeaderMap;
use crate::kafka::{partitions_of, set_default, KafkaArgs, KafkaSetupError};

/// Why a topic could not be followed.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(transparent)]
    Setup(#[from] KafkaSetupError),
    #[error("reading {topic}: {source}")]
    Kafka { topic: String, source: rdkafka::error::KafkaError },
    #[error("stopped before {0} was read to its end")]
    Stopped(String),
}

/// One record as a follower hands it on.
pub struct Seen<'a> {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: HeaderMap,
}

/// Follows `topic` from its beginning until `stop`, calling `on_record` for each
/// record; returns once every partition has been read to its end.
pub async fn follow(
    kafka: &KafkaArgs,
    topic: &str,
    stop: CancellationToken,
    on_record: impl FnMut(Seen<'_>) + Send + 'static,
) -> Result<(), FollowError> {
    let mut cfg = kafka.client_config()?;
    cfg.set("group.id", format!("courier-follower-{}", crate::envelope::new_id()));
    cfg.set("enable.auto.commit", "false");
    cfg.set("enable.partition.eof", "true");
    set_default(&mut cfg, "isolation.level", "read_committed");
    let consumer: StreamConsumer = cfg.create().map_err(KafkaSetupError::from)?;
    let name = topic.to_string();
    let (consumer, unread) = tokio::task::spawn_blocking(move || assign_all(consumer, &name))
        .await
        .map_err(|e| KafkaSetupError::Thread(e.to_string()))??;
    let (ready_tx, ready_rx) = oneshot::channel();
    let started = std::time::Instant::now();
    tokio::spawn(run(consumer, unread, stop.clone(), on_record, ready_tx));
    let stopped = || FollowError::Stopped(topic.to_string());
    tokio::select! {
        ready = ready_rx => ready.map_err(|_| stopped())?,
        _ = stop.cancelled() => return Err(stopped()),
    }
    tracing::debug!(topic, elapsed = ?started.elapsed(), "topic read to its end");
    Ok(())
}

fn assign_all(consumer: StreamConsumer, topic: &str) -> Result<(StreamConsumer, HashSet<i32>), FollowError> {
    let partitions = partitions_of(&consumer, topic)?;
    let mut tpl = TopicPartitionList::new();
    let kafka = |source| FollowError::Kafka { topic: topic.to_string(), source };
    for p in &partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning).map_err(kafka)?;
    }
    consumer.assign(&tpl).map_err(kafka)?;
    Ok((consumer, partitions.into_iter().collect()))
}

async fn run(
    consumer: StreamConsumer,
    mut unread: HashSet<i32>,
    stop: CancellationToken,
    mut on_record: impl FnMut(Seen<'_>),
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    loop {
        let next = tokio::select! {
            next = consumer.recv() => next,
            _ = stop.cancelled() => break,
        };
        match next {
            Ok(m) => {
                let seen = || Seen {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key(),
                    value: m.payload(),
                    headers: HeaderMap::from_kafka(m.headers()),
                };
                crate::supervise::guard("topic follower", || on_record(seen()));
            }
            Err(KafkaError::PartitionEOF(p)) => {
                unread.remove(&p);
            }
            Err(e) => tracing::warn!(error = %e, "topic follower error"),
        }
        if unread.is_empty() {
            if let Some(tx) = ready.take() {
                let _ = tx.send(());
            }
        }
    }
}
