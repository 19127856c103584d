//! The worker: consumes commands in a consumer group, runs handlers, publishes results.
//!
//! Two halves meet in a shared ledger (`offsets::Ledger`):
//! - the **consumer thread** (`consume.rs`) polls Kafka, admits each record to the
//!   ledger, stops taking records at the in-flight bound (each partition's prefetch
//!   is bounded, so nothing piles up and no partition is paused), commits the offsets
//!   the ledger says are safe, and handles rebalances (it owns the rdkafka consumer,
//!   whose callbacks are synchronous);
//! - **lane tasks** (`lane.rs`) on the tokio runtime take one record through read,
//!   admit, run, decide and emit, then tell the ledger how it settled.
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

mod config;
mod consume;
mod deferrals;
mod disposition;
mod emit;
mod followers;
mod handler;
mod lane;
mod registry;
mod sink;
mod state;
mod txn;

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use config::{WorkerConfig, WorkerError};
use followers::RecentIds;
pub use crate::offsets::OrderBy;
pub use crate::retry::RetryPolicy;
use crate::offsets::Ledger;
use sink::Sink;
use state::WorkerState;
use crate::kafka::KafkaSetupError;
pub use crate::metrics::Metrics;
use crate::publish::Publisher;
use crate::router::Router;

/// Whether a [`Worker`] has joined its group; cheap to clone.
#[derive(Clone, Debug)]
pub struct Ready(CancellationToken);

impl Ready {
    /// Resolves once the worker has joined (at once if it has).
    pub async fn wait(&self) {
        self.0.cancelled().await;
    }

    /// The same, without waiting: what a readiness probe answers.
    pub fn is_ready(&self) -> bool {
        self.0.is_cancelled()
    }
}

/// A configured worker, to be run.
pub struct Worker {
    shared: Arc<WorkerState>,
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
        let router = router.instrumented(metrics.clone());
        let worker_id = config.worker_id.clone().unwrap_or_else(default_worker_id);
        let config_capacity = config.dedupe_capacity;
        let publisher = Publisher::new(&config.kafka)?;
        let output_limit = crate::kafka::producer_config(&config.kafka)?
            .get("message.max.bytes")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(LIBRDKAFKA_MESSAGE_MAX_BYTES);
        let sink = if config.exactly_once { transactional_sink(&config, &worker_id)? } else { Sink::Direct(publisher.clone()) };
        let any_unordered = router.routes().any(|(_, r)| r.unordered);
        let shared = WorkerState {
            any_unordered,
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
            deferrals: Arc::default(),
            running: Arc::default(),
            joined: CancellationToken::new(),
        };
        Ok(Worker { shared: Arc::new(shared) })
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics.clone()
    }

    /// Tells when the running worker has joined its consumer group (its first
    /// assignment, even an empty one): a caller that times commands, or a readiness
    /// probe, starts from there rather than counting the group join.
    pub fn ready(&self) -> Ready {
        Ready(self.shared.joined.clone())
    }

    /// Runs until `shutdown` fires, then stops fetching, lets running handlers finish
    /// within the grace period, commits, and leaves the group.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let Worker { shared } = self;
        if let Some(addr) = shared.config.metrics_addr {
            let access = shared.config.metrics_access.clone();
            let guard = move |app: axum::Router| app.layer(axum::middleware::from_fn_with_state(access, crate::auth::authenticate));
            crate::metrics::serve(shared.metrics.clone(), addr, guard, shutdown.clone()).await.map_err(WorkerError::Metrics)?;
        }
        tracing::info!(worker = %shared.worker_id, group = %shared.config.group_id,
            topic = %shared.topics.commands, ordering = ?shared.config.ordering, "worker starting");
        let runtime = tokio::runtime::Handle::current();
        let background = CancellationToken::new();
        let _stop_background = background.clone().drop_guard();
        init_transactions(&shared.sink, &transactional_id(&shared.config, &shared.worker_id)).await?;
        start_background(&shared, &runtime, &background).await?;
        let lanes = lane::Lanes::new(shared.clone(), runtime.clone());
        tokio::spawn(deferrals::watch(lanes.clone(), background.clone()));
        let thread_stop = shutdown.clone();
        let consumer = std::thread::Builder::new()
            .name("courier-consumer".into())
            .spawn(move || consume::run(lanes, thread_stop))
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

/// A worker's transactional id: unique per worker, under a prefix per group (an ACL
/// on the prefix `courier-<group>-` grants a group's workers theirs).
fn transactional_id(config: &WorkerConfig, worker_id: &str) -> String {
    format!("courier-{}-{worker_id}", config.group_id)
}

fn transactional_sink(config: &WorkerConfig, worker_id: &str) -> Result<Sink, WorkerError> {
    let cfg = crate::kafka::transactional_producer_config(&config.kafka, &transactional_id(config, worker_id))?;
    let producer: rdkafka::producer::FutureProducer = cfg.create().map_err(KafkaSetupError::from)?;
    Ok(Sink::Transactional { producer, outbox: Arc::default() })
}

/// Registers this worker's transactional id, fencing any predecessor with the same id.
async fn init_transactions(sink: &Sink, id: &str) -> Result<(), WorkerError> {
    let Sink::Transactional { producer, .. } = sink else { return Ok(()) };
    let producer = producer.clone();
    let done = tokio::task::spawn_blocking(move || {
        use rdkafka::producer::Producer;
        producer.init_transactions(Duration::from_secs(30))
    })
    .await
    .map_err(|e| WorkerError::Consumer(e.to_string()))?;
    done.map_err(|e| match e.rdkafka_error_code() {
        Some(rdkafka::types::RDKafkaErrorCode::TransactionalIdAuthorizationFailed) => {
            WorkerError::Setup(KafkaSetupError::Denied { missing: format!("WRITE on transactional id {id}") })
        }
        _ => WorkerError::Setup(KafkaSetupError::from(e)),
    })
}

/// What a worker does to which topics and groups (README, "Secured Kafka", lists the
/// ACLs that allow it): checked at start so a missing grant stops it there.
fn needs(topics: &crate::topics::Topics, group: &str, tiers: &[String]) -> crate::kafka::Needs {
    use crate::kafka::Operation::{Read, Write};
    let needs = crate::kafka::Needs::new()
        // Commands are consumed, and deferred or retried ones are sent back.
        .topic(&topics.commands, &[Read, Write])
        .topic(&topics.results, &[Read, Write])
        .topic(&topics.status, &[Write])
        .topic(&topics.dlq, &[Write])
        .topic(&topics.control, &[Read, Write])
        .topics(tiers, &[Read, Write])
        .group(group);
    if tiers.is_empty() { needs } else { needs.group(format!("{group}.retry")) }
}

/// The checks at start (grants, co-partitioned topics), the control topic's follower
/// (caught up before this returns), and the retry relay: the worker's view of the
/// world beyond its own partitions.
async fn start_background(shared: &Arc<WorkerState>, runtime: &tokio::runtime::Handle, stop: &CancellationToken) -> Result<(), WorkerError> {
    let (kafka, topics) = (shared.config.kafka.clone(), shared.topics.clone());
    let on_control = followers::on_control(shared.cancelled.clone(), shared.running.clone(), shared.deferrals.clone(), shared.metrics.clone());
    let tiers = shared.tier_topics();
    let relay_tiers = tiers.clone();
    crate::kafka::check(&kafka, needs(&topics, &shared.config.group_id, &tiers).followers(&kafka.prefix)).await?;
    let (co_kafka, co_topics) = (kafka.clone(), topics.clone());
    tokio::task::spawn_blocking(move || crate::topics::check_co_partitioned(&co_kafka, &co_topics))
        .await
        .map_err(|e| WorkerError::Consumer(e.to_string()))??;
    followers::follow_control(&kafka, &topics, followers::CATCH_UP, stop, on_control).await?;
    let (relay_shared, relay_rt, relay_stop) = (shared.clone(), runtime.clone(), stop.clone());
    std::thread::Builder::new()
        .name("courier-retry-relay".into())
        .spawn(move || {
            let c = &relay_shared.config;
            // Parked keys wait for the relay: it must not stay down.
            crate::supervise::restarting("retry relay", &relay_stop, || {
                crate::retry::run_relay(&c.kafka, &c.group_id, &relay_tiers, relay_shared.publisher.clone(), relay_rt.clone(), relay_stop.clone())
            });
        })
        .map_err(|e| WorkerError::Consumer(e.to_string()))?;
    Ok(())
}

fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "worker".into());
    format!("{host}-{}", std::process::id())
}
