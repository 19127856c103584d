//! Producing Courier records: fire-and-forget for advisory events, acknowledged for
//! anything a commit depends on.
//!
//! The at-least-once guarantee hangs on [`Publisher::send_acked`]: a worker commits a
//! command's offset only after the broker acknowledged its final event, and that call
//! does not give up on transient errors (a broker restart, a leader move); it retries
//! with backoff until acknowledged or until the caller's token says the work is no
//! longer ours.

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use tokio_util::sync::CancellationToken;

use crate::envelope::HeaderMap;
use crate::kafka::{producer_config, KafkaArgs, KafkaSetupError};

/// Why a record was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("gave up publishing to {topic}: work was cancelled")]
    Abandoned { topic: String },
    #[error("publishing to {topic} failed: {source}")]
    Kafka { topic: String, source: rdkafka::error::KafkaError },
}

/// A record ready to produce.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub topic: String,
    pub key: String,
    pub value: Vec<u8>,
    pub headers: HeaderMap,
    pub partition: Option<i32>,
}

/// A shared idempotent producer.
#[derive(Clone)]
pub struct Publisher {
    producer: FutureProducer,
}

impl Publisher {
    pub fn new(args: &KafkaArgs) -> Result<Self, KafkaSetupError> {
        Ok(Publisher { producer: producer_config(args)?.create()? })
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// Enqueues a record without waiting for the broker. Used for `started` and
    /// `progress` events, which are advisory: losing one loses no outcome.
    pub fn send_advisory(&self, out: &Outgoing) {
        let headers = out.headers.to_kafka();
        let mut record = FutureRecord::to(&out.topic).key(&out.key).payload(&out.value).headers(headers);
        record.partition = out.partition;
        if let Err((e, _)) = self.producer.send_result(record) {
            tracing::warn!(topic = %out.topic, error = %e, "advisory event dropped");
        }
    }

    /// Produces a record and waits for the broker's acknowledgement, retrying
    /// transient failures until `cancel` fires.
    pub async fn send_acked(&self, out: &Outgoing, cancel: &CancellationToken) -> Result<(), PublishError> {
        self.send_all_acked(std::slice::from_ref(out), cancel).await
    }

    /// Produces records together and waits until every one is acknowledged, retrying
    /// transient failures (only the failed records) until `cancel` fires; a record the
    /// broker can never take fails the call once the others are acknowledged. One wait for
    /// the lot: a worker's final event and snapshot cost one round trip, not two.
    pub async fn send_all_acked(&self, outs: &[Outgoing], cancel: &CancellationToken) -> Result<(), PublishError> {
        let mut pending: Vec<&Outgoing> = outs.iter().collect();
        let mut permanent = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            let sends = futures::future::join_all(pending.iter().map(|out| {
                let headers = out.headers.to_kafka();
                let mut record = FutureRecord::to(&out.topic).key(&out.key).payload(&out.value).headers(headers);
                record.partition = out.partition;
                self.producer.send(record, Timeout::Never)
            }));
            let results = tokio::select! {
                r = sends => r,
                _ = cancel.cancelled() => return Err(PublishError::Abandoned { topic: pending[0].topic.clone() }),
            };
            let mut failed = Vec::new();
            for (out, result) in pending.iter().zip(results) {
                match result {
                    Ok(_) => {}
                    Err((e, _)) if is_permanent(&e) => {
                        permanent.get_or_insert(PublishError::Kafka { topic: out.topic.clone(), source: e });
                    }
                    Err((e, _)) => {
                        tracing::warn!(topic = %out.topic, error = %e, ?backoff, "publish failed; retrying");
                        failed.push(*out);
                    }
                }
            }
            if failed.is_empty() {
                return permanent.map_or(Ok(()), Err);
            }
            pending = failed;
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = cancel.cancelled() => return Err(PublishError::Abandoned { topic: pending[0].topic.clone() }),
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Enqueues records now and returns their pending acknowledgements, so the caller
    /// can go on and have them awaited elsewhere ([`Acks::wait`]). Waits only while
    /// librdkafka's queue is full.
    pub async fn enqueue_all(&self, outs: Vec<Outgoing>) -> Acks {
        let mut deliveries = Vec::with_capacity(outs.len());
        for out in &outs {
            let headers = out.headers.to_kafka();
            let mut record = FutureRecord::to(&out.topic).key(&out.key).payload(&out.value).headers(headers);
            record.partition = out.partition;
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => break deliveries.push(Some(delivery)),
                    Err((e, r)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) => {
                        tokio::time::sleep(QUEUE_FULL_WAIT).await;
                        record = r;
                    }
                    Err((e, _)) => {
                        // Not enqueued at all (an unknown partition, say): the wait
                        // retries it like a failed delivery, or reports it if permanent.
                        tracing::debug!(topic = %out.topic, error = %e, "enqueue failed");
                        break deliveries.push(None);
                    }
                }
            }
        }
        Acks { publisher: self.clone(), outs, deliveries }
    }

    /// Produces a record and waits for its acknowledgement once; librdkafka retries
    /// internally until `message.timeout.ms`, after which the error is the caller's.
    pub async fn send_once(&self, out: &Outgoing) -> Result<(), PublishError> {
        let headers = out.headers.to_kafka();
        let mut record = FutureRecord::to(&out.topic).key(&out.key).payload(&out.value).headers(headers);
        record.partition = out.partition;
        match self.producer.send(record, Timeout::Never).await {
            Ok(_) => Ok(()),
            Err((source, _)) => Err(PublishError::Kafka { topic: out.topic.clone(), source }),
        }
    }

    /// Waits until everything enqueued so far is delivered (or `timeout` passes).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(Timeout::After(timeout)) {
            tracing::warn!(error = %e, "producer flush incomplete");
        }
    }
}

/// How long to wait before offering a record again to a full producer queue.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(2);

/// Records already enqueued, with their pending acknowledgements.
pub struct Acks {
    publisher: Publisher,
    outs: Vec<Outgoing>,
    /// One per record; `None` if it could not even be enqueued.
    deliveries: Vec<Option<rdkafka::producer::DeliveryFuture>>,
}

impl Acks {
    /// Waits until every record is acknowledged, with [`Publisher::send_all_acked`]'s
    /// rules: transient failures are sent again until `cancel` fires, and a record the
    /// broker can never take fails the call once the others are acknowledged.
    pub async fn wait(self, cancel: &CancellationToken) -> Result<(), PublishError> {
        let Acks { publisher, outs, deliveries } = self;
        if outs.is_empty() {
            return Ok(());
        }
        let acked = futures::future::join_all(deliveries.into_iter().map(|d| async move {
            match d {
                Some(delivery) => delivery.await.ok().map(|r| r.map(|_| ()).map_err(|(e, _)| e)),
                None => None,
            }
        }));
        let results = tokio::select! {
            r = acked => r,
            _ = cancel.cancelled() => return Err(PublishError::Abandoned { topic: outs[0].topic.clone() }),
        };
        let mut permanent = None;
        let mut again = Vec::new();
        for (out, result) in outs.iter().zip(results) {
            match result {
                Some(Ok(())) => {}
                Some(Err(e)) if is_permanent(&e) => {
                    permanent.get_or_insert(PublishError::Kafka { topic: out.topic.clone(), source: e });
                }
                Some(Err(e)) => {
                    tracing::warn!(topic = %out.topic, error = %e, "publish failed; retrying");
                    again.push(out.clone());
                }
                // Not enqueued, or the producer went away: send it again.
                None => again.push(out.clone()),
            }
        }
        if !again.is_empty() {
            publisher.send_all_acked(&again, cancel).await?;
        }
        permanent.map_or(Ok(()), Err)
    }
}

/// Errors that retrying cannot fix: the record itself is unacceptable.
fn is_permanent(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::MessageSizeTooLarge
                | C::InvalidRecord
                | C::UnknownTopicOrPartition
                | C::TopicAuthorizationFailed
                // librdkafka's own verdicts from metadata: a partition (a caller's
                // reply partition, say) or topic the cluster does not have.
                | C::UnknownPartition
                | C::UnknownTopic
        )
    )
}

