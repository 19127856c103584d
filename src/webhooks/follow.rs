//! Reading a whole topic, every partition, with no consumer group, and keeping up
//! with it: how a dispatcher learns callback URLs (status topic), which endpoints are
//! disabled (endpoints topic) and what was attempted (delivery log), and how `replay`
//! reads the webhook DLQ.
//!
//! Every dispatcher needs the complete picture, not a share of it, so there is no
//! group. "Caught up" is librdkafka's partition EOF, reported at the last stable
//! offset, so a topic that ends in a transaction marker does not look unread forever.

use std::collections::HashSet;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::WebhookError;
use crate::envelope::HeaderMap;
use crate::kafka::{partitions_of, set_default, KafkaArgs};

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
) -> Result<(), WebhookError> {
    let mut cfg = kafka.client_config()?;
    cfg.set("group.id", format!("courier-webhooks-follower-{}", crate::envelope::new_id()));
    cfg.set("enable.auto.commit", "false");
    cfg.set("enable.partition.eof", "true");
    set_default(&mut cfg, "isolation.level", "read_committed");
    let consumer: StreamConsumer = cfg.create().map_err(crate::kafka::KafkaSetupError::from)?;
    let name = topic.to_string();
    let (consumer, unread) = tokio::task::spawn_blocking(move || assign_all(consumer, &name))
        .await
        .map_err(|e| WebhookError::Config(format!("follower of {topic} did not start: {e}")))??;
    let (ready_tx, ready_rx) = oneshot::channel();
    tokio::spawn(run(consumer, unread, stop.clone(), on_record, ready_tx));
    tokio::select! {
        ready = ready_rx => ready.map_err(|_| WebhookError::Stopped),
        _ = stop.cancelled() => Err(WebhookError::Stopped),
    }
}

fn assign_all(consumer: StreamConsumer, topic: &str) -> Result<(StreamConsumer, HashSet<i32>), WebhookError> {
    let partitions = partitions_of(&consumer, topic)?;
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning).map_err(crate::kafka::KafkaSetupError::from)?;
    }
    consumer.assign(&tpl).map_err(crate::kafka::KafkaSetupError::from)?;
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
            Ok(m) => on_record(Seen {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key(),
                value: m.payload(),
                headers: HeaderMap::from_kafka(m.headers()),
            }),
            Err(KafkaError::PartitionEOF(p)) => {
                unread.remove(&p);
            }
            Err(e) => tracing::warn!(error = %e, "webhook follower error"),
        }
        if unread.is_empty() {
            if let Some(tx) = ready.take() {
                let _ = tx.send(());
            }
        }
    }
}
