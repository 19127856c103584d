//! Producing Courier records: fire-and-forget for advisory events, acknowledged for
//! anything a commit depends on.
//!
//! The at-least-once guarantee hangs on [`Publisher::send_acked`]: a worker commits a
//! command's offset only after the broker acknowledged its final event, and that call
//! does not give up on transient errors (a broker restart, a leader move); it retries
//! with backoff until acknowledged or until the caller's token says the work is no
//! longer ours.

use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
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
    /// Bytes, and optional: a record is written back (dead letter, retry, replay)
    /// with exactly the key it came with, a missing key included.
    pub key: Option<Vec<u8>>,
    /// `None` is a null value (a tombstone), kept as such when a record is written back.
    pub value: Option<Vec<u8>>,
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

    /// Enqueues a record without waiting for the broker. Used for `started` and
    /// `progress` events, which are advisory: losing one loses no outcome.
    pub fn send_advisory(&self, out: &Outgoing) {
        if let Err((e, _)) = self.producer.send_result(future_record(out)) {
            tracing::warn!(topic = %out.topic, error = %e, "advisory event dropped");
        }
    }

    /// Produces a record and waits for the broker's acknowledgement, retrying
    /// transient failures until `cancel` fires.
    pub async fn send_acked(&self, out: Outgoing, cancel: &CancellationToken) -> Result<(), PublishError> {
        self.send_all_acked(vec![out], cancel).await
    }

    /// Produces records together and waits until every one is acknowledged, retrying
    /// transient failures (only the failed records) until `cancel` fires; a record the
    /// broker can never take fails the call once the others are acknowledged. One wait for
    /// the lot: a worker's final event and snapshot cost one round trip, not two.
    pub async fn send_all_acked(&self, outs: Vec<Outgoing>, cancel: &CancellationToken) -> Result<(), PublishError> {
        let Some(topic) = outs.first().map(|o| o.topic.clone()) else { return Ok(()) };
        let acks = tokio::select! {
            acks = self.enqueue_all(outs) => acks,
            _ = cancel.cancelled() => return Err(PublishError::Abandoned { topic }),
        };
        acks.wait(cancel).await
    }

    /// Enqueues records now and returns their pending acknowledgements, so the caller
    /// can go on and have them awaited elsewhere ([`Acks::wait`]). Waits only while
    /// librdkafka's queue is full.
    pub async fn enqueue_all(&self, outs: Vec<Outgoing>) -> Acks {
        let mut deliveries = Vec::with_capacity(outs.len());
        for out in &outs {
            let mut record = future_record(out);
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => break deliveries.push(Ok(delivery)),
                    Err((e, r)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) => {
                        tokio::time::sleep(QUEUE_FULL_WAIT).await;
                        record = r;
                    }
                    // Not enqueued at all (an unknown partition, say): judged by the
                    // wait like a failed delivery, retried or reported.
                    Err((e, _)) => break deliveries.push(Err(e)),
                }
            }
        }
        Acks { publisher: self.clone(), outs, deliveries }
    }

    /// Produces a record and waits for its acknowledgement once; librdkafka retries
    /// internally until `message.timeout.ms`, after which the error is the caller's.
    pub async fn send_once(&self, out: &Outgoing) -> Result<(), PublishError> {
        match self.producer.send(future_record(out), Timeout::Never).await {
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

/// The producer record for `out`.
pub(crate) fn future_record(out: &Outgoing) -> FutureRecord<'_, [u8], Vec<u8>> {
    let mut record = FutureRecord::to(&out.topic).headers(out.headers.to_kafka());
    record.payload = out.value.as_ref();
    record.key = out.key.as_deref();
    record.partition = out.partition;
    record
}

impl Outgoing {
    /// A record for `topic` with this key, value and headers, partitioned by key.
    pub fn new(topic: impl Into<String>, key: impl Into<Vec<u8>>, value: Vec<u8>, headers: HeaderMap) -> Self {
        Outgoing { topic: topic.into(), key: Some(key.into()), value: Some(value), headers, partition: None }
    }

    /// What this record weighs against the producer's `message.max.bytes`: key,
    /// value, headers and the record's own framing (librdkafka counts the same parts).
    pub fn wire_size(&self) -> usize {
        RECORD_FRAMING + self.key.as_ref().map_or(0, Vec::len) + self.value.as_ref().map_or(0, Vec::len) + self.headers.wire_size()
    }
}

/// A record's framing on the wire beyond its parts (librdkafka reserves up to 61
/// bytes of v2 record overhead; rounded up).
const RECORD_FRAMING: usize = 128;

/// Records already enqueued, with their pending acknowledgements.
pub struct Acks {
    publisher: Publisher,
    outs: Vec<Outgoing>,
    /// One per record; an error if it could not even be enqueued.
    deliveries: Vec<Result<DeliveryFuture, KafkaError>>,
}

impl Acks {
    /// Waits until every record is acknowledged, retrying transient failures (only
    /// the failed records, with backoff) until `cancel` fires; a record the broker can
    /// never take fails the call once the others are acknowledged.
    pub async fn wait(self, cancel: &CancellationToken) -> Result<(), PublishError> {
        let Acks { publisher, mut outs, mut deliveries } = self;
        let mut permanent = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            let Some(first) = outs.first() else { return permanent.map_or(Ok(()), Err) };
            let acked = futures::future::join_all(deliveries.into_iter().map(|d| async move {
                match d {
                    Ok(delivery) => match delivery.await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err((e, _))) => Err(e),
                        // The producer dropped the report (it is going away): retried.
                        Err(_) => Err(KafkaError::Canceled),
                    },
                    Err(e) => Err(e),
                }
            }));
            let results = tokio::select! {
                r = acked => r,
                _ = cancel.cancelled() => return Err(PublishError::Abandoned { topic: first.topic.clone() }),
            };
            let mut failed = Vec::new();
            for (out, result) in outs.into_iter().zip(results) {
                match result {
                    Ok(()) => {}
                    Err(e) if is_permanent(&e) => {
                        permanent.get_or_insert(PublishError::Kafka { topic: out.topic, source: e });
                    }
                    Err(e) => {
                        tracing::warn!(topic = %out.topic, error = %e, ?backoff, "publish failed; retrying");
                        failed.push(out);
                    }
                }
            }
            let Some(first) = failed.first() else { return permanent.map_or(Ok(()), Err) };
            let topic = first.topic.clone();
            let again = async {
                tokio::time::sleep(backoff).await;
                publisher.enqueue_all(failed).await
            };
            Acks { outs, deliveries, .. } = tokio::select! {
                acks = again => acks,
                _ = cancel.cancelled() => return Err(PublishError::Abandoned { topic }),
            };
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
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


/// Against the real broker: records enqueued now and acknowledged later (the path of
/// every final event) all arrive, and a record the broker can never take fails the
/// wait by name without holding back the others.
#[cfg(test)]
mod broker_tests {
    use super::*;
    use crate::testing::{fresh_kafka, keys_and_headers};

    fn record(topic: &str, key: &str, partition: Option<i32>) -> Outgoing {
        let mut headers = HeaderMap::default();
        headers.insert("n", key);
        Outgoing { topic: topic.to_string(), key: Some(key.into()), value: Some(key.as_bytes().to_vec()), headers, partition }
    }

    #[tokio::test]
    async fn enqueued_records_are_all_acknowledged_and_read_back() {
        let kafka = fresh_kafka("acks", 3).await;
        let topics = kafka.topics();
        let publisher = Publisher::new(&kafka).expect("publisher");
        let never = CancellationToken::new();
        let mut waits = Vec::new();
        for i in 0..200 {
            let outs = vec![record(&topics.results, &format!("r{i}"), None), record(&topics.status, &format!("s{i}"), None)];
            waits.push(publisher.enqueue_all(outs).await);
        }
        for acks in waits {
            acks.wait(&never).await.expect("acknowledged");
        }
        let results = keys_and_headers(&kafka, &topics.results).await;
        let status = keys_and_headers(&kafka, &topics.status).await;
        assert_eq!((results.len(), status.len()), (200, 200));
        let header_is_key = |(key, headers): &(Option<Vec<u8>>, HeaderMap)| headers.get("n") == key.as_deref();
        assert!(results.iter().chain(&status).all(header_is_key));
    }

    #[tokio::test]
    async fn a_record_the_broker_cannot_take_fails_the_wait_after_the_others_land() {
        let kafka = fresh_kafka("acks-bad", 3).await;
        let topics = kafka.topics();
        let publisher = Publisher::new(&kafka).expect("publisher");
        // Partition 99 does not exist: the record is refused, permanently.
        let outs = vec![record(&topics.results, "good", None), record(&topics.status, "bad", Some(99))];
        let acks = publisher.enqueue_all(outs).await;
        let waited = tokio::time::timeout(Duration::from_secs(60), acks.wait(&CancellationToken::new())).await.expect("no hang");
        match waited {
            Err(PublishError::Kafka { topic, .. }) => assert_eq!(topic, topics.status),
            other => panic!("expected a permanent failure for the status record, got {other:?}"),
        }
        assert_eq!(keys_and_headers(&kafka, &topics.results).await.len(), 1, "the good record still arrived");
    }

    #[tokio::test]
    async fn a_cancelled_wait_gives_up_as_abandoned() {
        let kafka = fresh_kafka("acks-cancel", 1).await;
        let publisher = Publisher::new(&kafka).expect("publisher");
        let cancel = CancellationToken::new();
        cancel.cancel();
        // A topic that does not exist: the record can never be acknowledged, so only the
        // token can end the wait.
        let acks = publisher.enqueue_all(vec![record(&format!("{}.missing", kafka.prefix), "x", None)]).await;
        let waited = tokio::time::timeout(Duration::from_secs(60), acks.wait(&cancel)).await.expect("no hang");
        assert!(matches!(waited, Err(PublishError::Abandoned { .. })), "{waited:?}");
    }
}
