//! Producing Courier records: fire-and-forget for advisory events, acknowledged for
//! anything a commit depends on.
//!
//! The at-least-once guarantee hangs on [`Acks`]: a worker commits a command's offset
//! only after the broker acknowledged its final event, and [`Acks::wait`] does not
//! give up on transient errors (a broker restart, a leader move); it retries with
//! backoff until acknowledged or until the caller's token says the work is no longer
//! ours.
//!
//! Acknowledgements are counted, not awaited one by one: the records enqueued
//! together share one [`Deliveries`] tally, which librdkafka's delivery reports
//! count down on the publisher's polling thread. The last report of a set either
//! wakes its waiter or runs the continuation a worker left with it
//! ([`Acks::when_acknowledged`]), right there: a command's path from enqueued to
//! settled takes no future, channel or task of its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, FutureRecord, Producer, ProducerContext};
use rdkafka::util::Timeout;
use rdkafka::ClientContext;
use tokio::sync::Notify;
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

/// A shared idempotent producer. Clones share one producer and its polling thread,
/// which stops once the last clone is gone.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    producer: Arc<BaseProducer<Reports>>,
    /// Tells the polling thread to stop. It is never joined: a continuation running
    /// on it may hold the last clone of the publisher.
    stop: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// How long one poll of the delivery reports may wait; bounds how late the polling
/// thread notices that its publisher is gone.
const POLL_WAIT: Duration = Duration::from_millis(100);

impl Publisher {
    pub fn new(args: &KafkaArgs) -> Result<Self, KafkaSetupError> {
        let producer: Arc<BaseProducer<Reports>> = Arc::new(producer_config(args)?.create_with_context(Reports)?);
        let stop = Arc::new(AtomicBool::new(false));
        let (polled, stopped) = (producer.clone(), stop.clone());
        std::thread::Builder::new()
            .name("courier-acks".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    polled.poll(POLL_WAIT);
                }
            })
            .map_err(|e| KafkaSetupError::Thread(e.to_string()))?;
        Ok(Publisher { inner: Arc::new(Inner { producer, stop }) })
    }

    /// Enqueues a record without waiting for the broker. Used for `started` and
    /// `progress` events, which are advisory: losing one loses no outcome (a failed
    /// delivery is logged).
    pub fn send_advisory(&self, out: &Outgoing) {
        let tally = Deliveries::new(1, true);
        if let Err((e, _)) = self.inner.producer.send(base_record(out, tally)) {
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
    /// can go on and have them awaited elsewhere ([`Acks::wait`]) or acted on when
    /// they land ([`Acks::when_acknowledged`]). Waits only while librdkafka's queue is
    /// full. librdkafka copies each record, so `outs` is not kept: a record that fails
    /// is rebuilt from its delivery report.
    pub async fn enqueue_all(&self, outs: Vec<Outgoing>) -> Acks {
        let tally = Deliveries::new(outs.len(), false);
        let topic = outs.first().map(|o| o.topic.clone()).unwrap_or_default();
        let producer = &self.inner.producer;
        for out in outs {
            let mut record = base_record(&out, tally.clone());
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((e, r)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) => {
                        drop(r);
                        // Boxed: a timer is large, and this future is part of every lane's.
                        Box::pin(tokio::time::sleep(QUEUE_FULL_WAIT)).await;
                        record = base_record(&out, tally.clone());
                    }
                    // Not enqueued at all (an unknown partition, say): counted like a
                    // failed delivery, then retried or reported by the wait.
                    Err((e, r)) => {
                        drop(r);
                        tally.count(Some((out, e)));
                        break;
                    }
                }
            }
        }
        Acks { publisher: self.clone(), tally, topic }
    }

    /// Produces a record and waits for its acknowledgement once; librdkafka retries
    /// internally until `message.timeout.ms`, after which the error is the caller's.
    pub async fn send_once(&self, out: &Outgoing) -> Result<(), PublishError> {
        let acks = self.enqueue_all(vec![out.clone()]).await;
        acks.tally.landed().await;
        let failed = acks.tally.lock().failed.pop();
        match failed {
            None => Ok(()),
            Some((failed, source)) => Err(PublishError::Kafka { topic: failed.topic, source }),
        }
    }

    /// Waits until everything enqueued so far is delivered (or `timeout` passes).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.inner.producer.flush(Timeout::After(timeout)) {
            tracing::warn!(error = %e, "producer flush incomplete");
        }
    }
}

/// How long to wait before offering a record again to a full producer queue.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(2);

/// The producer record for `out`, counted in `tally` when its report comes.
fn base_record(out: &Outgoing, tally: Arc<Deliveries>) -> BaseRecord<'_, [u8], [u8], Arc<Deliveries>> {
    let mut record = BaseRecord::with_opaque_to(&out.topic, tally).headers(out.headers.to_kafka());
    record.payload = out.value.as_deref();
    record.key = out.key.as_deref();
    record.partition = out.partition;
    record
}

/// The producer record for `out`, for a `FutureProducer` (the exactly-once outbox's).
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

    /// The record a failed delivery report describes, to be sent again as it was.
    /// The partition it was placed in is kept, which is where its key sends it anyway.
    fn of_report(message: &rdkafka::message::BorrowedMessage<'_>) -> Self {
        Outgoing {
            topic: message.topic().to_string(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers: HeaderMap::from_kafka(message.headers()),
            partition: (message.partition() >= 0).then(|| message.partition()),
        }
    }
}

/// A record's framing on the wire beyond its parts (librdkafka reserves up to 61
/// bytes of v2 record overhead; rounded up).
const RECORD_FRAMING: usize = 128;

/// The publisher's producer context: each delivery report counts down the tally of
/// the set its record was enqueued with.
struct Reports;

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = Arc<Deliveries>;

    fn delivery(&self, result: &DeliveryResult<'_>, tally: Arc<Deliveries>) {
        let failure = match result {
            Ok(_) => None,
            Err((e, message)) if tally.advisory => {
                tracing::warn!(topic = %message.topic(), error = %e, "advisory event dropped");
                None
            }
            Err((e, message)) => Some((Outgoing::of_report(message), e.clone())),
        };
        tally.count(failure);
    }
}

/// The delivery reports still to come for a set of records enqueued together, the
/// records that failed, and what to do once the last one lands.
struct Deliveries {
    tally: Mutex<Tally>,
    /// Wakes [`Acks::wait`] once nothing is left to come.
    landed: Notify,
    /// Failures are logged, not kept: nobody waits for these records.
    advisory: bool,
}

struct Tally {
    remaining: usize,
    failed: Vec<(Outgoing, KafkaError)>,
    then: Option<Continuation>,
}

/// Run on the thread that counts the last report (or at once, if it already came).
type Continuation = Box<dyn FnOnce() + Send>;

impl Deliveries {
    fn new(remaining: usize, advisory: bool) -> Arc<Self> {
        let tally = Tally { remaining, failed: Vec::new(), then: None };
        Arc::new(Deliveries { tally: Mutex::new(tally), landed: Notify::new(), advisory })
    }

    fn lock(&self) -> MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one record's report (`failure`: it was refused, or never enqueued).
    fn count(&self, failure: Option<(Outgoing, KafkaError)>) {
        let then = {
            let mut tally = self.lock();
            tally.remaining = tally.remaining.saturating_sub(1);
            tally.failed.extend(failure);
            if tally.remaining > 0 {
                return;
            }
            tally.then.take()
        };
        self.landed.notify_one();
        if let Some(then) = then {
            // On the polling thread: a panic must not end it, or no report would
            // ever be counted again.
            if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(then)) {
                tracing::error!(panic = %crate::supervise::panic_text(panic.as_ref()), "panic in what followed an acknowledgement");
            }
        }
    }

    /// Resolves once every report has come.
    async fn landed(&self) {
        loop {
            let landed = self.landed.notified();
            if self.lock().remaining == 0 {
                return;
            }
            landed.await;
        }
    }
}

/// Records already enqueued, with their pending acknowledgements.
pub struct Acks {
    publisher: Publisher,
    tally: Arc<Deliveries>,
    /// The first record's topic, to name in an [`PublishError::Abandoned`].
    topic: String,
}

impl Acks {
    /// Waits until every record is acknowledged, retrying transient failures (only
    /// the failed records, with backoff) until `cancel` fires; a record the broker can
    /// never take fails the call once the others are acknowledged.
    pub async fn wait(self, cancel: &CancellationToken) -> Result<(), PublishError> {
        let Acks { publisher, mut tally, mut topic } = self;
        let mut permanent = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            tokio::select! {
                () = tally.landed() => {}
                _ = cancel.cancelled() => return Err(PublishError::Abandoned { topic }),
            }
            let failed = std::mem::take(&mut tally.lock().failed);
            let mut again = Vec::new();
            for (out, e) in failed {
                if is_permanent(&e) {
                    permanent.get_or_insert(PublishError::Kafka { topic: out.topic, source: e });
                } else {
                    tracing::warn!(topic = %out.topic, error = %e, ?backoff, "publish failed; retrying");
                    again.push(out);
                }
            }
            let Some(first) = again.first() else { return permanent.map_or(Ok(()), Err) };
            topic.clone_from(&first.topic);
            let retried = async {
                tokio::time::sleep(backoff).await;
                publisher.enqueue_all(again).await
            };
            Acks { tally, .. } = tokio::select! {
                acks = retried => acks,
                _ = cancel.cancelled() => return Err(PublishError::Abandoned { topic }),
            };
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Runs `then` once every report has come, on the thread that counts the last one
    /// (the publisher's polling thread), or at once if they all came already: `Ok`
    /// when every record was acknowledged, else these acks, for [`Acks::wait`] to
    /// retry or report the failures. `then` must be quick and must not block: the
    /// reports of every other record wait behind it.
    pub fn when_acknowledged(self, then: impl FnOnce(Result<(), Acks>) + Send + 'static) {
        let tally = self.tally.clone();
        let mut counted = tally.lock();
        if counted.remaining > 0 {
            counted.then = Some(Box::new(move || self.resolve(then)));
            return;
        }
        drop(counted);
        self.resolve(then);
    }

    fn resolve(self, then: impl FnOnce(Result<(), Acks>)) {
        let failed = !self.tally.lock().failed.is_empty();
        then(if failed { Err(self) } else { Ok(()) });
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

    /// The worker's path: what follows the acknowledgements runs once, whether it is
    /// left before or after the last report came, and says whether any failed.
    #[tokio::test]
    async fn what_follows_the_acknowledgements_runs_once_with_their_verdict() {
        let kafka = fresh_kafka("acks-then", 3).await;
        let topics = kafka.topics();
        let publisher = Publisher::new(&kafka).expect("publisher");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..100 {
            let acks = publisher.enqueue_all(vec![record(&topics.results, &format!("r{i}"), None), record(&topics.status, &format!("s{i}"), None)]).await;
            if i % 2 == 1 {
                // Left after the reports came: it runs at once.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let tx = tx.clone();
            acks.when_acknowledged(move |acked| {
                let _ = tx.send((i, acked.is_ok()));
            });
        }
        // Partition 99 does not exist: refused, and handed back to be waited on.
        let bad = publisher.enqueue_all(vec![record(&topics.results, "good", None), record(&topics.status, "bad", Some(99))]).await;
        let (btx, brx) = tokio::sync::oneshot::channel();
        bad.when_acknowledged(move |acked| {
            let _ = btx.send(acked.err());
        });
        drop(tx);
        let mut seen = Vec::new();
        while let Some((i, ok)) = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await.expect("no hang") {
            assert!(ok, "record set {i} acknowledged");
            seen.push(i);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<_>>(), "each continuation ran exactly once");
        let refused = brx.await.expect("ran").expect("a failure is handed back");
        match refused.wait(&CancellationToken::new()).await {
            Err(PublishError::Kafka { topic, .. }) => assert_eq!(topic, topics.status),
            other => panic!("expected the status record refused for good, got {other:?}"),
        }
        assert_eq!(keys_and_headers(&kafka, &topics.results).await.len(), 101, "every good record arrived");
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
