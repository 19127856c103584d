//! Reading a whole topic, every partition, with no consumer group: the one reader
//! behind everything in Courier that needs the complete picture of a topic rather
//! than a share of it.
//!
//! | reader | topic, start | how |
//! |---|---|---|
//! | gateway store, webhook callbacks | status, [`StartAt::Beginning`] | [`follow`] |
//! | webhook endpoints, delivery log | their topics, `Beginning` | [`follow`] |
//! | worker: cancels, finished ids | control `Beginning`, results [`StartAt::Tail`] | [`spawn`], waits for both |
//! | `courier dlq`, `webhooks replay`, `Client::status` | DLQs, status, `Beginning` | [`read_to_end`] |
//! | `Client::subscribe`, `wait_for`, `wait`, the `submit_and_wait` listener | results, status | a stream, or [`spawn`] at [`StartAt::Now`] |
//! | bench | results, `Beginning`, until n records | the reader itself |
//!
//! One consumer setup for all of them: assigned to every partition (no group to
//! join, nothing committed), `read_committed` (records written in exactly-once mode
//! count only once their transaction does), and librdkafka's partition EOF as
//! "caught up". EOF is reported at the last stable offset, so a topic that ends in a
//! transaction marker does not look unread forever (comparing offsets with the high
//! watermark would), and an empty partition is caught up at once.
//!
//! Callbacks run under `supervise::guard`: a panic skips that record, and
//! the reader goes on.
//!
//! Not a reader of this kind, on purpose: consumers in a group (the worker, the
//! webhook dispatcher, the retry relay, the bench's raw loop), which share a topic
//! and commit; and the test harness's own raw reader (`tests/common`), an independent
//! check of the bytes on the broker.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::Stream;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedHeaders, BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::envelope::HeaderMap;
use crate::kafka::{partitions_of, set_default, watermarks, KafkaArgs, KafkaSetupError};

/// Where a reader starts in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// Everything the topic still retains.
    Beginning,
    /// Only records written from now on: each partition's end, resolved to an offset
    /// before the reader is handed back, so nothing written after that is missed.
    Now,
    /// The last `n` records of each partition (all of it if it holds fewer): enough
    /// to warm a cache without reading a long history.
    Tail(u64),
    /// From each partition's first record written at or after this time (its end if
    /// there is none): a lookup of something created then reads no older history.
    Since(chrono::DateTime<chrono::Utc>),
}

impl StartAt {
    /// Where a lookup of command `id`'s records starts: a little before the time its
    /// UUIDv7 id carries (records about it are written after it was made; the margin
    /// covers clocks that disagree), else the beginning (an id of another version
    /// carries no time).
    pub fn for_id(id: uuid::Uuid) -> StartAt {
        const CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(5);
        let Some(ts) = id.get_timestamp() else { return StartAt::Beginning };
        let (secs, nanos) = ts.to_unix();
        match chrono::DateTime::from_timestamp(secs as i64, nanos) {
            Some(made) => StartAt::Since(made - CLOCK_SKEW),
            None => StartAt::Beginning,
        }
    }
}

/// Why a topic could not be followed.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(transparent)]
    Setup(#[from] KafkaSetupError),
    #[error("reading {topic}: {source}")]
    Kafka { topic: String, source: KafkaError },
    #[error("stopped before {0} was read to its end")]
    Stopped(String),
    #[error("{topic} was not read to its end within {within:?}")]
    TooSlow { topic: String, within: Duration },
}

/// One record as a reader hands it on, borrowed from the consumer for the call.
pub struct Seen<'a> {
    message: BorrowedMessage<'a>,
}

impl Seen<'_> {
    pub fn partition(&self) -> i32 {
        self.message.partition()
    }

    pub fn offset(&self) -> i64 {
        self.message.offset()
    }

    pub fn key(&self) -> Option<&[u8]> {
        self.message.key()
    }

    pub fn value(&self) -> Option<&[u8]> {
        self.message.payload()
    }

    /// The record's timestamp in milliseconds since the epoch, if it has one (the
    /// bench's span measurement).
    #[cfg_attr(not(feature = "cli"), allow(dead_code))]
    pub fn timestamp_millis(&self) -> Option<i64> {
        self.message.timestamp().to_millis()
    }

    /// Every header, copied (names and values as bytes).
    pub fn headers(&self) -> HeaderMap {
        HeaderMap::from_kafka(self.message.headers())
    }

    /// The last value of one header, read in place: for readers that look at one or
    /// two headers of every record and should not copy them all.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        crate::envelope::last_kafka_header(self.message.headers(), name)
    }

    /// What the record weighs: key, value and headers, as a reader's bytes are counted
    /// (the worker's duplicate check reports what it read).
    pub(crate) fn wire_size(&self) -> usize {
        let (key, value) = (self.key().map_or(0, <[u8]>::len), self.value().map_or(0, <[u8]>::len));
        key + value + crate::envelope::kafka_headers_size(self.message.headers())
    }

    /// librdkafka's header list, for the envelope's in-place readers
    /// ([`crate::envelope::is_final_record`]). Never iterate it with rdkafka's own
    /// accessors: they panic on a header name that is not UTF-8.
    pub(crate) fn kafka_headers(&self) -> Option<&BorrowedHeaders> {
        self.message.headers()
    }
}

/// What [`Reader::next`] found.
pub(crate) enum Next<'a> {
    Record(Seen<'a>),
    /// Every partition has been read to its end (once, the first time).
    CaughtUp,
}

/// Which partitions of a topic a reader is assigned.
enum Which {
    All,
    /// The one where records with this key land.
    Key(Vec<u8>),
    /// These (a worker's own, say).
    Partitions(Vec<i32>),
}

/// A consumer assigned to every partition of one topic at a [`StartAt`].
pub(crate) struct Reader {
    consumer: StreamConsumer,
    topic: String,
    /// Partitions not yet read to their end (from the start, those that began there
    /// are not); caught up once empty.
    unread: HashSet<i32>,
    caught_up: bool,
}

impl Reader {
    /// A reader of `topic`, positioned at `start` in every partition.
    pub(crate) async fn open(kafka: &KafkaArgs, topic: &str, start: StartAt) -> Result<Reader, FollowError> {
        Self::open_in(kafka, topic, start, Which::All).await
    }

    /// A reader of the one partition of `topic` where records keyed `key` land (under
    /// the partitioner `kafka`'s options name; every partition for one it cannot
    /// compute), positioned at `start`: a point lookup that reads a fraction of the topic.
    pub(crate) async fn open_for_key(kafka: &KafkaArgs, topic: &str, key: &[u8], start: StartAt) -> Result<Reader, FollowError> {
        Self::open_in(kafka, topic, start, Which::Key(key.to_vec())).await
    }

    /// A reader of `topic` resuming where a view left off: each partition in
    /// `positions` at its offset (the next record to read), any other at `start`.
    pub(crate) async fn open_resuming(kafka: &KafkaArgs, topic: &str, start: StartAt, positions: HashMap<i32, i64>) -> Result<Reader, FollowError> {
        Self::open_with(kafka, topic, start, Which::All, positions).await
    }

    async fn open_in(kafka: &KafkaArgs, topic: &str, start: StartAt, which: Which) -> Result<Reader, FollowError> {
        Self::open_with(kafka, topic, start, which, HashMap::new()).await
    }

    async fn open_with(kafka: &KafkaArgs, topic: &str, start: StartAt, which: Which, positions: HashMap<i32, i64>) -> Result<Reader, FollowError> {
        let consumer = consumer(kafka)?;
        let name = topic.to_string();
        let partitioner = crate::kafka::Partitioner::configured(&kafka.kafka_opts);
        // The topic's partitions are 0..n; metadata may leave out one that has no leader
        // right now, so n is the highest id seen plus one, and a key whose partition is
        // not among those seen reads them all (see `assign`).
        let only = move |partitions: &[i32]| -> Option<Vec<i32>> {
            match which {
                Which::All => None,
                Which::Key(key) => Some(vec![partitioner?.partition(&key, partitions.iter().max()? + 1)?]),
                Which::Partitions(wanted) => Some(wanted),
            }
        };
        let (consumer, unread) = tokio::task::spawn_blocking(move || assign(consumer, &name, start, only, &positions))
            .await
            .map_err(|e| KafkaSetupError::Thread(e.to_string()))??;
        Ok(Reader { consumer, topic: topic.to_string(), unread, caught_up: false })
    }

    /// The next record, or [`Next::CaughtUp`] when the last unread partition reaches
    /// its end. Waits for either; errors other than EOF are logged and passed over.
    pub(crate) async fn next(&mut self) -> Next<'_> {
        if self.unread.is_empty() && !self.caught_up {
            // Every partition started at its end.
            self.caught_up = true;
            return Next::CaughtUp;
        }
        loop {
            // A topic with a backlog is always ready: give the runtime's other tasks
            // their turn now and then.
            tokio::task::coop::consume_budget().await;
            match self.consumer.recv().await {
                Ok(message) => return Next::Record(Seen { message }),
                Err(KafkaError::PartitionEOF(p)) => {
                    self.unread.remove(&p);
                    if self.unread.is_empty() && !self.caught_up {
                        self.caught_up = true;
                        return Next::CaughtUp;
                    }
                }
                Err(e) => tracing::warn!(topic = %self.topic, error = %e, "topic follower error"),
            }
        }
    }

    /// Every record as `decode` makes it, records it makes nothing of skipped; never
    /// ends. Dropping the stream drops the consumer.
    pub(crate) fn into_stream<T, F>(self, decode: F) -> impl Stream<Item = T> + Send + 'static
    where
        T: Send + 'static,
        F: FnMut(Seen<'_>) -> Option<T> + Send + 'static,
    {
        futures::stream::unfold((self, decode), |(mut reader, mut decode)| async move {
            loop {
                let item = match reader.next().await {
                    Next::Record(seen) => decode(seen),
                    Next::CaughtUp => None,
                };
                if let Some(item) = item {
                    return Some((item, (reader, decode)));
                }
            }
        })
    }

    /// Runs [`Reader::run`] in a task of its own.
    fn spawn(self, stop: CancellationToken, on_record: impl FnMut(Seen<'_>) + Send + 'static) -> Following {
        let topic = self.topic.clone();
        let (ready_tx, ready) = oneshot::channel();
        let task = tokio::spawn(self.run(stop.clone(), on_record, ready_tx));
        Following { topic, ready, stop, task }
    }

    /// Calls `on_record` for every record until `stop`; says so on `ready` when
    /// caught up.
    async fn run(mut self, stop: CancellationToken, mut on_record: impl FnMut(Seen<'_>), ready: oneshot::Sender<()>) {
        let what = format!("follower of {}", self.topic);
        let mut ready = Some(ready);
        loop {
            let next = tokio::select! {
                next = self.next() => next,
                _ = stop.cancelled() => return,
            };
            match next {
                Next::Record(seen) => {
                    crate::supervise::guard(&what, || on_record(seen));
                }
                Next::CaughtUp => {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                }
            }
        }
    }
}

/// The one consumer setup: no group to join (librdkafka wants a `group.id`, so a
/// fresh one), no commits, `read_committed` unless `--kafka-opt` says otherwise, and
/// partition EOF reported.
fn consumer(kafka: &KafkaArgs) -> Result<StreamConsumer, KafkaSetupError> {
    let mut cfg = kafka.client_config()?;
    cfg.set("group.id", crate::kafka::follower_group(&kafka.prefix));
    cfg.set("enable.auto.commit", "false");
    cfg.set("enable.partition.eof", "true");
    set_default(&mut cfg, "isolation.level", "read_committed");
    // Prefetch bounded as the worker's is: a view catching up on a large topic would
    // otherwise queue up to librdkafka's default of 64 MB per partition.
    crate::kafka::set_fetch_defaults(&mut cfg);
    Ok(cfg.create()?)
}

/// Assigns every partition of `topic` (or the one `only` picks from them) at
/// `start`, resolved to offsets now. Blocking.
fn assign(
    consumer: StreamConsumer,
    topic: &str,
    start: StartAt,
    only: impl FnOnce(&[i32]) -> Option<Vec<i32>>,
    positions: &HashMap<i32, i64>,
) -> Result<(StreamConsumer, HashSet<i32>), FollowError> {
    let mut partitions = partitions_of(&consumer, topic)?;
    partitions.sort_unstable();
    if let Some(wanted) = only(&partitions) {
        let found: Vec<i32> = wanted.iter().copied().filter(|p| partitions.contains(p)).collect();
        if found.len() < wanted.len() {
            tracing::warn!(%topic, ?wanted, ?found, "partitions missing from the topic's metadata; reading those it lists");
        }
        if !found.is_empty() {
            partitions = found;
        }
    }
    let kafka = |source| FollowError::Kafka { topic: topic.to_string(), source };
    let since = match start {
        StartAt::Since(at) => Some(offsets_since(&consumer, topic, &partitions, at).map_err(kafka)?),
        _ => None,
    };
    let mut tpl = TopicPartitionList::new();
    // Partitions starting at their end now: read to it already (waiting for their
    // end-of-partition would wait out a fetch).
    let mut at_end = HashSet::new();
    for p in &partitions {
        if let Some(at) = positions.get(p) {
            tpl.add_partition_offset(topic, *p, Offset::Offset(resumed(&consumer, topic, *p, *at).map_err(kafka)?)).map_err(kafka)?;
            continue;
        }
        let offset = match start {
            StartAt::Beginning => Offset::Beginning,
            StartAt::Now => {
                let high = watermarks(&consumer, topic, *p).map_err(kafka)?.1;
                at_end.insert(*p);
                Offset::Offset(high)
            }
            StartAt::Tail(n) => {
                let (low, high) = watermarks(&consumer, topic, *p).map_err(kafka)?;
                let at = high.saturating_sub(i64::try_from(n).unwrap_or(i64::MAX)).max(low);
                if at >= high {
                    at_end.insert(*p);
                }
                Offset::Offset(at)
            }
            StartAt::Since(_) => match since.as_ref().and_then(|s| s.get(p)) {
                Some(o) => Offset::Offset(*o),
                None => Offset::Offset(watermarks(&consumer, topic, *p).map_err(kafka)?.1),
            },
        };
        tpl.add_partition_offset(topic, *p, offset).map_err(kafka)?;
    }
    consumer.assign(&tpl).map_err(kafka)?;
    Ok((consumer, partitions.into_iter().filter(|p| !at_end.contains(p)).collect()))
}

/// Where to resume a partition a view had read up to `at`: there, or at the
/// partition's first record if those before `at` are gone (retention); from the start
/// if `at` is past its end, which a recreated topic does (the view is then older than
/// the topic, and reading it all again is the one way to be right).
fn resumed(consumer: &StreamConsumer, topic: &str, partition: i32, at: i64) -> Result<i64, KafkaError> {
    let (low, high) = watermarks(consumer, topic, partition)?;
    if at > high {
        tracing::warn!(topic, partition, at, end = high, "a stored position is past the partition's end; reading the partition from its start");
        return Ok(low);
    }
    Ok(at.max(low))
}

/// Each partition's first offset at or after `at` (a partition with none is left
/// out: the caller starts it at its end). Blocking.
///
/// A broker that cannot search by time (librdkafka's mock cluster, which `courier
/// dev` runs) answers "none" for every partition, as a real one does for a partition
/// with nothing that recent. Those answers are probed with time 0, which a real
/// broker answers for any partition holding records: a partition it cannot answer
/// even then is read from its start instead.
fn offsets_since(consumer: &StreamConsumer, topic: &str, partitions: &[i32], at: chrono::DateTime<chrono::Utc>) -> Result<std::collections::HashMap<i32, i64>, rdkafka::error::KafkaError> {
    let query = |partitions: &[i32], ms: i64| -> Result<std::collections::HashMap<i32, i64>, rdkafka::error::KafkaError> {
        let mut list = TopicPartitionList::new();
        for p in partitions {
            list.add_partition_offset(topic, *p, Offset::Offset(ms))?;
        }
        let found = consumer.offsets_for_times(list, Duration::from_secs(10))?;
        Ok(found
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) if e.error().is_ok() => Some((e.partition(), o)),
                _ => None,
            })
            .collect())
    };
    let mut found = query(partitions, at.timestamp_millis().max(0))?;
    let none: Vec<i32> = partitions.iter().copied().filter(|p| !found.contains_key(p)).collect();
    if !none.is_empty() {
        let probed = query(&none, 0)?;
        for p in none.into_iter().filter(|p| !probed.contains_key(p)) {
            found.insert(p, watermarks(consumer, topic, p)?.0);
        }
    }
    Ok(found)
}

/// A follower running in a task of its own, until its stop token fires.
pub struct Following {
    topic: String,
    ready: oneshot::Receiver<()>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Following {
    /// Resolves once every partition has been read to its end; `Stopped` if the
    /// follower's stop fired first. Dropping this does not stop the follower.
    pub async fn caught_up(self) -> Result<(), FollowError> {
        self.split().0.await
    }

    /// [`Following::caught_up`] beside the follower's task: for an owner that waits
    /// for the one and, having stopped the follower, must know that no record is
    /// being taken in any more before it goes on (it awaits the other).
    pub(crate) fn split(self) -> (impl std::future::Future<Output = Result<(), FollowError>> + Send, tokio::task::JoinHandle<()>) {
        let Following { topic, ready, stop, task } = self;
        let caught_up = async move {
            tokio::select! {
                ready = ready => ready.map_err(|_| FollowError::Stopped(topic)),
                _ = stop.cancelled() => Err(FollowError::Stopped(topic)),
            }
        };
        (caught_up, task)
    }

    /// The follower's task, which ends (its consumer closed) once the stop fires: for
    /// an owner that must know the broker connection is gone before it goes on.
    pub fn into_task(self) -> tokio::task::JoinHandle<()> {
        self.task
    }
}

/// Starts following `topic` from `start` until `stop`, calling `on_record` for each
/// record in a task of its own; returns once the reader is positioned (so nothing
/// written after this returns is missed), before it has caught up.
pub async fn spawn(
    kafka: &KafkaArgs,
    topic: &str,
    start: StartAt,
    stop: CancellationToken,
    on_record: impl FnMut(Seen<'_>) + Send + 'static,
) -> Result<Following, FollowError> {
    Ok(Reader::open(kafka, topic, start).await?.spawn(stop, on_record))
}

/// Like [`spawn`], in `partitions` only, each resuming at its offset in `positions`
/// and any other from its beginning: the status partitions a gateway of a group owns.
pub(crate) async fn spawn_partitions(
    kafka: &KafkaArgs,
    topic: &str,
    partitions: &[i32],
    positions: HashMap<i32, i64>,
    stop: CancellationToken,
    on_record: impl FnMut(Seen<'_>) + Send + 'static,
) -> Result<Following, FollowError> {
    Ok(Reader::open_with(kafka, topic, StartAt::Beginning, Which::Partitions(partitions.to_vec()), positions).await?.spawn(stop, on_record))
}

/// Follows `topic` from `start` until `stop`, calling `on_record` for each record;
/// returns once every partition has been read to its end.
pub async fn follow(
    kafka: &KafkaArgs,
    topic: &str,
    start: StartAt,
    stop: CancellationToken,
    on_record: impl FnMut(Seen<'_>) + Send + 'static,
) -> Result<(), FollowError> {
    let started = std::time::Instant::now();
    spawn(kafka, topic, start, stop, on_record).await?.caught_up().await?;
    tracing::debug!(topic, elapsed = ?started.elapsed(), "topic read to its end");
    Ok(())
}

/// Like [`follow`], resuming each partition in `positions` at its offset (see
/// [`Reader::open_resuming`]) and any other from its beginning.
pub async fn follow_from(
    kafka: &KafkaArgs,
    topic: &str,
    positions: HashMap<i32, i64>,
    stop: CancellationToken,
    on_record: impl FnMut(Seen<'_>) + Send + 'static,
) -> Result<(), FollowError> {
    Reader::open_resuming(kafka, topic, StartAt::Beginning, positions).await?.spawn(stop, on_record).caught_up().await
}

/// Reads `topic` from `start` to its end once, calling `on_record` for each record
/// in the caller's task, and stops: a one-off scan (a DLQ listing, one command's
/// status). Past `within`, if given, it gives up with `TooSlow`.
pub async fn read_to_end(
    kafka: &KafkaArgs,
    topic: &str,
    start: StartAt,
    within: Option<Duration>,
    on_record: impl FnMut(Seen<'_>),
) -> Result<(), FollowError> {
    read_in_to_end(kafka, topic, start, Which::All, within, on_record).await
}

/// Like [`read_to_end`], in the one partition where records keyed `key` land (see
/// [`Reader::open_for_key`]): one operation's snapshots, say.
pub async fn read_key_to_end(
    kafka: &KafkaArgs,
    topic: &str,
    key: &[u8],
    start: StartAt,
    within: Option<Duration>,
    on_record: impl FnMut(Seen<'_>),
) -> Result<(), FollowError> {
    read_in_to_end(kafka, topic, start, Which::Key(key.to_vec()), within, on_record).await
}

/// Like [`read_to_end`], in these partitions only: a worker warming its duplicate
/// check with the results partitions of the commands partitions it was assigned.
pub(crate) async fn read_partitions_to_end(
    kafka: &KafkaArgs,
    topic: &str,
    partitions: &[i32],
    start: StartAt,
    within: Option<Duration>,
    on_record: impl FnMut(Seen<'_>),
) -> Result<(), FollowError> {
    read_in_to_end(kafka, topic, start, Which::Partitions(partitions.to_vec()), within, on_record).await
}

async fn read_in_to_end(
    kafka: &KafkaArgs,
    topic: &str,
    start: StartAt,
    which: Which,
    within: Option<Duration>,
    mut on_record: impl FnMut(Seen<'_>),
) -> Result<(), FollowError> {
    let read = async {
        let mut reader = Reader::open_in(kafka, topic, start, which).await?;
        let what = format!("reader of {topic}");
        while let Next::Record(seen) = reader.next().await {
            crate::supervise::guard(&what, || on_record(seen));
        }
        Ok(())
    };
    match within {
        None => read.await,
        Some(within) => tokio::time::timeout(within, read).await.map_err(|_| FollowError::TooSlow { topic: topic.to_string(), within })?,
    }
}
