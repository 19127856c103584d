//! The worker: consumes commands in a consumer group, runs handlers, publishes results.
//!
//! Two halves meet in a shared [`Ledger`]:
//! - the **consumer thread** ([`consume`]) polls Kafka, admits each record to the
//!   ledger, stops taking records at the in-flight bound (each partition's prefetch
//!   is bounded, so nothing piles up and no partition is paused), commits the offsets
//!   the ledger says are safe, and handles rebalances (it owns the rdkafka consumer,
//!   whose callbacks are synchronous);
//! - **lane tasks** ([`execute`]) on the tokio runtime decode, run the handler and
//!   publish, then tell the ledger the record is finished.
//!
//! ```no_run
//! use courier::{Context, Handler, HandlerError, Router, Worker, WorkerConfig};
//! # struct Echo;
//! # impl Handler for Echo {
//! #     type Input = serde_json::Value;
//! #     type Output = serde_json::Value;
//! #     async fn handle(&self, v: serde_json::Value, _: Context) -> Result<serde_json::Value, HandlerError> { Ok(v) }
//! # }
//! # async fn run() -> Result<(), courier::WorkerError> {
//! let config = WorkerConfig::new("127.0.0.1:9092");
//! let worker = Worker::new(config, Router::new().route("echo", Echo))?;
//! worker.run(tokio_util::sync::CancellationToken::new()).await
//! # }
//! ```

mod acks;
mod consume;
mod execute;
mod followers;
pub mod ledger;
mod outcome;
mod sink;
mod txn;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::duration::parse_duration;
use crate::envelope::{Command, ErrorInfo, HeaderMap, OperationSnapshot, ResultData, ResultEvent, State, Timing};
use crate::kafka::{KafkaArgs, KafkaSetupError};
use crate::metrics::Metrics;
use crate::publish::{Outgoing, Publisher};
use crate::retry::RetryPolicy;
use followers::RecentIds;
use sink::Sink;
use crate::router::Router;
use crate::topics::Topics;
pub use ledger::Ordering;
use ledger::{Ledger, Tp};

/// Why a worker could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Setup(#[from] KafkaSetupError),
    #[error("no handlers registered: a worker needs at least one route")]
    NoRoutes,
    #[error("invalid worker config: {0}")]
    Config(String),
    #[error("metrics endpoint: {0}")]
    Metrics(std::io::Error),
    #[error("consumer thread failed: {0}")]
    Consumer(String),
    #[error("worker did not stop within {0:?} (--shutdown-grace + 15 s); left without a clean exit")]
    StopTimeout(Duration),
}

/// Worker settings, from flags or env vars.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerConfig {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Consumer group: workers sharing it split the partitions.
    #[arg(long, env = "COURIER_GROUP_ID", default_value = "courier-workers")]
    pub group_id: String,
    /// Most commands admitted and unfinished at once; at the bound the worker stops
    /// taking records until one finishes.
    #[arg(long, env = "COURIER_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,
    /// Which commands must wait for each other: same key, same partition, or none.
    #[arg(long, env = "COURIER_ORDERING", value_enum, default_value_t = Ordering::Key)]
    pub ordering: Ordering,
    /// On shutdown or revoke: how long running handlers get to finish.
    #[arg(long, env = "COURIER_SHUTDOWN_GRACE", value_parser = parse_duration, default_value = "20s")]
    pub shutdown_grace: Duration,
    /// Records with larger values are dead-lettered as `too_large`.
    #[arg(long, env = "COURIER_MAX_MESSAGE_BYTES", default_value_t = 1_000_000)]
    pub max_message_bytes: usize,
    /// Serve Prometheus metrics here (e.g. 0.0.0.0:9464); off when unset.
    #[arg(long, env = "COURIER_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Name in result events and logs; defaults to host name and pid.
    #[arg(long, env = "COURIER_WORKER_ID")]
    pub worker_id: Option<String>,
    #[command(flatten)]
    pub retry: RetryPolicy,
    /// Exactly-once mode: result events and consumed offsets commit in one Kafka
    /// transaction (readers use read_committed). Give each worker a stable
    /// --worker-id so a restart fences its predecessor at once.
    #[arg(long, env = "COURIER_EXACTLY_ONCE")]
    pub exactly_once: bool,
    /// Recent finished command ids remembered to skip duplicates.
    #[arg(long, env = "COURIER_DEDUPE_CAPACITY", default_value_t = 200_000)]
    pub dedupe_capacity: usize,
    /// A `started` event (and `started` snapshot) is sent once a handler has run this
    /// long, or before its first progress report; commands that finish sooner get
    /// only their final event, which halves the records a fast command costs (Celery
    /// does not track "started" by default at all). `0s` sends it for every command.
    #[arg(long, env = "COURIER_STARTED_AFTER", value_parser = parse_duration, default_value = "100ms")]
    pub started_after: Duration,
}

impl WorkerConfig {
    /// Defaults for everything but the bootstrap servers.
    pub fn new(bootstrap: impl Into<String>) -> Self {
        WorkerConfig {
            kafka: KafkaArgs::new(bootstrap, "courier"),
            group_id: "courier-workers".into(),
            max_in_flight: 1024,
            ordering: Ordering::Key,
            shutdown_grace: Duration::from_secs(20),
            max_message_bytes: 1_000_000,
            metrics_addr: None,
            worker_id: None,
            retry: RetryPolicy::default(),
            exactly_once: false,
            dedupe_capacity: 200_000,
            started_after: Duration::from_millis(100),
        }
    }

    fn validate(&self) -> Result<(), WorkerError> {
        if self.kafka.bootstrap.trim().is_empty() {
            return Err(WorkerError::Config("bootstrap servers are empty (--bootstrap / COURIER_BOOTSTRAP)".into()));
        }
        if self.max_in_flight == 0 {
            return Err(WorkerError::Config("--max-in-flight must be at least 1".into()));
        }
        if self.group_id.trim().is_empty() {
            return Err(WorkerError::Config("--group-id is empty".into()));
        }
        if self.retry.tiers.is_empty() || self.retry.max_attempts == 0 {
            return Err(WorkerError::Config("--retry-tiers needs at least one delay and --max-attempts at least 1".into()));
        }
        Ok(())
    }
}

/// A consumed record, owned, with the token that stops its processing.
#[derive(Debug)]
pub(crate) struct Record {
    pub tp: Tp,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: HeaderMap,
    /// Fires when the partition is revoked or the worker stops.
    pub stop: CancellationToken,
    /// Set when copying the record out of librdkafka failed (a panic there): the
    /// record is dead-lettered with this message rather than lost.
    pub fault: Option<String>,
}

impl Record {
    /// Its size as the broker counts it: key, value and headers.
    pub fn wire_size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len) + self.value.as_ref().map_or(0, Vec::len) + self.headers.wire_size()
    }
}

/// State shared by the consumer thread and the lane tasks.
pub(crate) struct Shared {
    pub config: WorkerConfig,
    pub router: Router,
    pub publisher: Publisher,
    /// Where outputs go: direct (at-least-once) or the transactional outbox.
    pub sink: Sink,
    pub topics: Topics,
    /// The largest record the producer takes (its `message.max.bytes`): outputs are
    /// checked against it before they are sent.
    pub output_limit: usize,
    pub metrics: Arc<Metrics>,
    pub worker_id: String,
    pub source: String,
    pub ledger: Mutex<Ledger<Record>>,
    /// Signalled whenever a record finishes or is abandoned.
    pub changed: Condvar,
    /// Commands with a final event (own or seen on the results topic).
    pub finished: Arc<RecentIds>,
    /// Commands a cancel was requested for (from the control topic).
    pub cancelled: Arc<RecentIds>,
    /// Cancel tokens of commands running on this worker, by id.
    pub running: Arc<Mutex<HashMap<Uuid, CancellationToken>>>,
    /// Records waiting for their final outputs' acknowledgements.
    pub(super) acks: acks::AckQueue,
}

impl Shared {
    /// A token that fires when a cancel for this command arrives.
    pub fn register_running(&self, id: Uuid) -> CancellationToken {
        let token = CancellationToken::new();
        self.running.lock().unwrap_or_else(|p| p.into_inner()).insert(id, token.clone());
        if self.cancelled.contains(&id) {
            token.cancel();
        }
        token
    }

    pub fn unregister_running(&self, id: &Uuid) {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    pub fn lock_ledger(&self) -> MutexGuard<'_, Ledger<Record>> {
        self.ledger.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A result event about `command`, from this worker.
    pub fn event(&self, command: &Command, state: State, result: Option<Value>, error: Option<ErrorInfo>, timing: Timing) -> ResultEvent {
        ResultEvent::about(command, &self.source, &self.worker_id, state, result, error, timing)
    }

    /// The status-topic snapshot matching a result event about `command`.
    pub fn snapshot_record(&self, command: &Command, data: &ResultData) -> Outgoing {
        let snapshot = OperationSnapshot::after(command, data, &self.worker_id);
        let (key, value, headers) = snapshot.encode(&self.source);
        Outgoing::new(self.topics.status.clone(), key, value, headers)
    }
}

/// A configured worker, ready to run.
pub struct Worker {
    shared: Arc<Shared>,
    acks: tokio::sync::mpsc::UnboundedReceiver<acks::AckJob>,
}

impl Worker {
    pub fn new(config: WorkerConfig, router: Router) -> Result<Self, WorkerError> {
        Self::with_metrics(config, router, Metrics::new())
    }

    /// Like [`Worker::new`], recording into an existing metrics registry.
    pub fn with_metrics(config: WorkerConfig, router: Router, metrics: Arc<Metrics>) -> Result<Self, WorkerError> {
        config.validate()?;
        if router.is_empty() {
            return Err(WorkerError::NoRoutes);
        }
        let worker_id = config.worker_id.clone().unwrap_or_else(default_worker_id);
        let config_capacity = config.dedupe_capacity;
        let publisher = Publisher::new(&config.kafka)?;
        let output_limit = crate::kafka::producer_config(&config.kafka)?
            .get("message.max.bytes")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(LIBRDKAFKA_MESSAGE_MAX_BYTES);
        let sink = if config.exactly_once { transactional_sink(&config, &worker_id)? } else { Sink::Direct(publisher.clone()) };
        let (acks, acks_rx) = acks::AckQueue::new();
        let shared = Shared {
            acks,
            publisher,
            sink,
            topics: config.kafka.topics(),
            output_limit,
            source: format!("//courier/worker/{worker_id}"),
            worker_id,
            router,
            metrics,
            config,
            ledger: Mutex::new(Ledger::new()),
            changed: Condvar::new(),
            finished: Arc::new(RecentIds::new(config_capacity)),
            cancelled: Arc::new(RecentIds::new(config_capacity)),
            running: Arc::default(),
        };
        Ok(Worker { shared: Arc::new(shared), acks: acks_rx })
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// Runs until `shutdown` fires, then stops fetching, lets running handlers finish
    /// within the grace period, commits, and leaves the group.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let Worker { shared, acks: ack_jobs } = self;
        if let Some(addr) = shared.config.metrics_addr {
            crate::metrics::serve(shared.metrics.clone(), addr, shutdown.clone()).await.map_err(WorkerError::Metrics)?;
        }
        tracing::info!(worker = %shared.worker_id, group = %shared.config.group_id,
            topic = %shared.topics.commands, ordering = ?shared.config.ordering, "worker starting");
        let runtime = tokio::runtime::Handle::current();
        let background = CancellationToken::new();
        let _stop_background = background.clone().drop_guard();
        init_transactions(&shared.sink).await?;
        start_background(&shared, &runtime, &background).await?;
        tokio::spawn(acks::collect(shared.clone(), ack_jobs, background.clone()));
        let thread_shared = shared.clone();
        let thread_stop = shutdown.clone();
        let consumer = std::thread::Builder::new()
            .name("courier-consumer".into())
            .spawn(move || consume::run(thread_shared, runtime, thread_stop))
            .map_err(|e| WorkerError::Consumer(e.to_string()))?;
        let stopped = async {
            let joined = tokio::task::spawn_blocking(move || consumer.join()).await;
            let flushing = shared.publisher.clone();
            let _ = tokio::task::spawn_blocking(move || flushing.flush(STOP_FLUSH)).await;
            joined
        };
        let bound = shared.config.shutdown_grace + STOP_SLACK;
        let watchdog = async {
            shutdown.cancelled().await;
            tokio::time::sleep(bound).await;
        };
        let joined = tokio::select! {
            joined = stopped => joined,
            _ = watchdog => {
                // A broker that stops answering mid-stop (a commit, leaving the group)
                // must not hold the process: uncommitted work is run again elsewhere.
                tracing::error!(?bound, "worker did not stop within its bound; leaving without a clean exit");
                return Err(WorkerError::StopTimeout(bound));
            }
        };
        let result = joined
            .map_err(|e| WorkerError::Consumer(e.to_string()))?
            .map_err(|_| WorkerError::Consumer("consumer thread panicked".into()))?;
        tracing::info!(worker = %shared.worker_id, "worker stopped");
        result
    }
}

/// How much longer than `--shutdown-grace` a stop may take in all: abandoned handlers
/// get 5 s to notice their token, then the final commit, leaving the group and
/// flushing the producer share the rest. Past it the worker returns anyway.
pub const STOP_SLACK: Duration = Duration::from_secs(15);
/// The part of a stop given to delivering what is still queued in the producer.
const STOP_FLUSH: Duration = Duration::from_secs(5);

/// librdkafka's default `message.max.bytes`, the producer's limit unless set.
const LIBRDKAFKA_MESSAGE_MAX_BYTES: usize = 1_000_000;

fn transactional_sink(config: &WorkerConfig, worker_id: &str) -> Result<Sink, WorkerError> {
    let mut cfg = crate::kafka::producer_config(&config.kafka)?;
    cfg.set("transactional.id", format!("courier-{}-{worker_id}", config.group_id));
    // Short, so a crashed worker's open transaction stops blocking read_committed
    // readers soon even when no successor reuses its id.
    crate::kafka::set_default(&mut cfg, "transaction.timeout.ms", "10000");
    if cfg.get("message.timeout.ms").is_some_and(|v| v == "30000") {
        cfg.set("message.timeout.ms", "10000");
    }
    let producer: rdkafka::producer::FutureProducer = cfg.create().map_err(KafkaSetupError::from)?;
    Ok(Sink::Transactional { producer, outbox: Arc::default() })
}

/// Registers this worker's transactional id, fencing any predecessor with the same id.
async fn init_transactions(sink: &Sink) -> Result<(), WorkerError> {
    let Sink::Transactional { producer, .. } = sink else { return Ok(()) };
    let producer = producer.clone();
    tokio::task::spawn_blocking(move || {
        use rdkafka::producer::Producer;
        producer.init_transactions(Duration::from_secs(30))
    })
    .await
    .map_err(|e| WorkerError::Consumer(e.to_string()))?
    .map_err(|e| WorkerError::Setup(KafkaSetupError::from(e)))
}

/// Followers of the control and results topics (caught up before this returns), and
/// the retry relay: the worker's view of the world beyond its own partitions.
async fn start_background(shared: &Arc<Shared>, runtime: &tokio::runtime::Handle, stop: &CancellationToken) -> Result<(), WorkerError> {
    let (kafka, topics) = (shared.config.kafka.clone(), shared.topics.clone());
    let catch_up = Duration::from_secs(30);
    let tail = (shared.config.dedupe_capacity / 8).max(1000) as u64;
    let on_control = followers::on_control(shared.cancelled.clone(), shared.running.clone());
    let on_result = followers::on_result(shared.finished.clone());
    let tiers = shared.config.retry.tier_topics(&shared.topics);
    tokio::task::spawn_blocking(move || crate::kafka::require_topics(&kafka, [&topics.commands, &topics.results, &topics.status, &topics.dlq].into_iter().chain(&tiers)))
        .await
        .map_err(|e| WorkerError::Consumer(e.to_string()))??;
    followers::follow_both(&shared.config.kafka, &shared.topics, tail, catch_up, stop, on_control, on_result).await?;
    let (relay_shared, relay_rt, relay_stop) = (shared.clone(), runtime.clone(), stop.clone());
    std::thread::Builder::new()
        .name("courier-retry-relay".into())
        .spawn(move || {
            let c = &relay_shared.config;
            // Parked keys wait for the relay: it must not stay down.
            crate::supervise::restarting("retry relay", &relay_stop, || {
                crate::retry::run_relay(&c.kafka, &c.group_id, &c.retry, relay_shared.publisher.clone(), relay_rt.clone(), relay_stop.clone())
            });
        })
        .map_err(|e| WorkerError::Consumer(e.to_string()))?;
    Ok(())
}

fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "worker".into());
    format!("{host}-{}", std::process::id())
}
