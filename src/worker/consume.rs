//! The consumer thread: poll, admit, flow control, commit, rebalance.
//!
//! It is a plain OS thread, not a tokio task, because librdkafka runs rebalance
//! callbacks synchronously inside `poll`, and a revoke must *wait* for running
//! handlers (within the grace period) before committing and letting go. Blocking
//! there is fine on a thread of its own; on a runtime thread it would starve the very
//! tasks it waits for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};

use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::message::Message;
use rdkafka::{ClientContext, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::sink::Sink;
use super::txn::{self, TxnError};
use super::config::WorkerError;
use super::followers;
use super::lane::Lanes;
use super::state::{Record, WorkerState};
use crate::envelope::HeaderMap;
use crate::kafka::{commit_offsets, failed_commits, partitions_in, set_default, set_fetch_defaults, TopicPartition};
use crate::offsets::{self, Cadence, Lane};

/// Main-queue wait when no partition queue had records: bounds pickup latency.
const IDLE_POLL: Duration = Duration::from_millis(2);
/// Records taken from one partition queue before moving to the next.
const PER_PARTITION_ROUND: usize = 64;
/// After the grace period, how long abandoned handlers get to notice their token.
const ABANDON_WAIT: Duration = Duration::from_secs(6);

/// Connects rebalance callbacks to the ledger.
pub(super) struct WorkerContext {
    shared: Arc<WorkerState>,
    /// One token per assigned partition; cancelling it abandons that partition's work.
    tokens: Mutex<HashMap<TopicPartition, CancellationToken>>,
    /// Parent of every partition token: cancelled only to abandon everything, after
    /// the grace period (shutdown itself is a separate signal, so handlers first
    /// get their grace period).
    stop: CancellationToken,
    /// Set by an assignment: the consumer thread then gives every assigned partition
    /// its own queue (it needs the consumer's `Arc`, which callbacks do not get).
    reassigned: AtomicBool,
    /// Fired when the worker cannot go on (a fenced transactional producer).
    fatal: CancellationToken,
    /// Where the duplicate check's warm-up runs, while the callback waits for it.
    runtime: tokio::runtime::Handle,
}

impl ClientContext for WorkerContext {}

impl ConsumerContext for WorkerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let tps = partitions_in(tpl);
                tracing::info!(partitions = ?tps, "partitions revoked; draining");
                self.shared.metrics.rebalances.get_or_create(&vec![("kind".into(), "revoke".into())]).inc();
                self.drain(consumer, &tps);
            }
            // Before the partitions are assigned, so nothing is fetched for them while
            // this waits: records fetched before their partition gets its own queue
            // would pile up in the main queue.
            Rebalance::Assign(tpl) => self.warm_up(&partitions_in(tpl)),
            Rebalance::Error(_) => {}
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let tps = partitions_in(tpl);
            tracing::info!(partitions = ?tps, "partitions assigned");
            self.shared.metrics.rebalances.get_or_create(&vec![("kind".into(), "assign".into())]).inc();
            let mut ledger = self.shared.lock_ledger();
            let mut tokens = self.lock_tokens();
            for tp in &tps {
                ledger.assign(tp.clone());
                tokens.insert(tp.clone(), self.stop.child_token());
            }
            drop((ledger, tokens));
            let _ = consumer;
            self.reassigned.store(true, AtomicOrdering::SeqCst);
            self.shared.joined.cancel();
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, list: &TopicPartitionList) {
        if let Some((failed, error)) = failed_commits(&result, list) {
            offsets::commit_failed(&self.shared.ledger, &failed, &error);
        }
    }
}

impl WorkerContext {
    /// The duplicate check learns what previous owners of these partitions finished:
    /// the matching results partitions, read to their end ([`followers::warm_up`]),
    /// before any of their records can be admitted (this thread admits them).
    fn warm_up(&self, tps: &[TopicPartition]) {
        let shared = &self.shared;
        let partitions: Vec<i32> = tps.iter().map(|tp| tp.partition).collect();
        let tail = followers::tail_of(shared.config.dedupe_capacity);
        let (finished, metrics) = (shared.finished.clone(), shared.metrics.clone());
        self.runtime.block_on(followers::warm_up(&shared.config.kafka, &shared.topics.results, &partitions, tail, followers::CATCH_UP, finished, metrics));
    }

    fn lock_tokens(&self) -> std::sync::MutexGuard<'_, HashMap<TopicPartition, CancellationToken>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets go of partitions: drop queued work, wait (within the grace period) for
    /// running work, abandon what is left, commit what finished, forget them.
    fn drain(&self, consumer: &BaseConsumer<Self>, tps: &[TopicPartition]) {
        let shared = &self.shared;
        let mut ledger = shared.lock_ledger();
        let dropped = ledger.drop_queued(tps);
        let until = Instant::now() + shared.config.shutdown_grace;
        ledger = wait_until_idle(shared, ledger, tps, until);
        let still_running = ledger.running_in(tps);
        if still_running > 0 {
            tracing::warn!(still_running, "grace period over; abandoning running handlers");
            drop(ledger);
            for tp in tps {
                if let Some(token) = self.lock_tokens().get(tp) {
                    token.cancel();
                }
            }
            ledger = wait_until_idle(shared, shared.lock_ledger(), tps, Instant::now() + ABANDON_WAIT);
        }
        let commits = ledger.take_commits(Some(tps));
        ledger.release(tps);
        shared.metrics.in_flight.set(ledger.in_flight() as i64);
        drop(ledger);
        for tp in tps {
            if let Some(token) = self.lock_tokens().remove(tp) {
                token.cancel();
            }
        }
        if consumer.assignment_lost() {
            tracing::warn!("assignment lost; not committing");
        } else {
            offsets::commit_taken(&shared.ledger, &commits, send_commits(shared, consumer, CommitMode::Sync));
        }
        if let Sink::Transactional { outbox, .. } = &shared.sink {
            outbox.forget(tps);
        }
        tracing::info!(dropped_queued = dropped, committed = ?commits, "partitions released");
    }
}

fn wait_until_idle<'a>(
    shared: &'a WorkerState,
    mut ledger: std::sync::MutexGuard<'a, crate::offsets::Ledger<Record>>,
    tps: &[TopicPartition],
    until: Instant,
) -> std::sync::MutexGuard<'a, super::Ledger<Record>> {
    while ledger.running_in(tps) > 0 {
        let now = Instant::now();
        if now >= until {
            break;
        }
        ledger = match shared.changed.wait_timeout(ledger, until - now) {
            Ok((g, _)) => g,
            Err(p) => p.into_inner().0,
        };
    }
    ledger
}

/// The consumer thread's body; returns when `stop` fires and the group is left.
pub(super) fn run(lanes: Lanes, stop: CancellationToken) -> Result<(), WorkerError> {
    let shared = lanes.shared.clone();
    let context = WorkerContext {
        shared: shared.clone(),
        tokens: Mutex::new(HashMap::new()),
        stop: CancellationToken::new(),
        reassigned: AtomicBool::new(false),
        fatal: CancellationToken::new(),
        runtime: lanes.runtime.clone(),
    };
    let consumer: Arc<BaseConsumer<WorkerContext>> = Arc::new(
        consumer_config(&shared)?.create_with_context(context).map_err(|e| WorkerError::Setup(e.into()))?,
    );
    consumer
        .subscribe(&[shared.topics.commands.as_str()])
        .map_err(|e| WorkerError::Setup(e.into()))?;
    let mut queues: Vec<(TopicPartition, PartitionQueue<WorkerContext>)> = Vec::new();
    let mut cadence = Cadence::new();
    let exactly_once = matches!(shared.sink, Sink::Transactional { .. });
    let mut busy = false;
    while !stop.is_cancelled() && !consumer.context().fatal.is_cancelled() {
        // The main queue carries rebalances, errors, and records fetched before their
        // partition got its own queue; polled every round, briefly when idle.
        match consumer.poll(if busy { Duration::ZERO } else { IDLE_POLL }) {
            Some(Ok(msg)) => admit(&lanes, &consumer, &msg),
            Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
            None => {}
        }
        if consumer.context().reassigned.swap(false, AtomicOrdering::SeqCst) {
            queues = split_queues(&consumer);
            // Records fetched before their partition got its own queue are older than
            // any in it: admitted now, before the new queues are read, so a key's
            // records are admitted in offset order.
            while let Some(next) = consumer.poll(Duration::ZERO) {
                match next {
                    Ok(msg) => admit(&lanes, &consumer, &msg),
                    Err(e) => tracing::warn!(error = %e, "consumer error"),
                }
            }
        }
        busy = take_from_queues(&lanes, &consumer, &queues);
        let commit = || offsets::commit(&shared.ledger, None, send_commits(&shared, &consumer, CommitMode::Async));
        // Exactly-once, results are visible only once their transaction commits:
        // with nothing in flight, commit what finished now instead of at the next round.
        if exactly_once && !busy && shared.lock_ledger().in_flight() == 0 {
            cadence.tick_idle(&shared.ledger, commit);
        } else {
            cadence.tick(&shared.ledger, commit);
        }
    }
    let fatal = consumer.context().fatal.is_cancelled();
    drop(queues);
    shutdown(&shared, consumer);
    if fatal {
        return Err(WorkerError::Consumer("transactional producer fenced or failed; see the log".into()));
    }
    Ok(())
}

/// Gives every assigned partition its own queue, so the worker can stop taking
/// records (at its in-flight bound) without pausing partitions: librdkafka keeps a
/// bounded prefetch per partition, and nothing is thrown away and fetched again.
fn split_queues(consumer: &Arc<BaseConsumer<WorkerContext>>) -> Vec<(TopicPartition, PartitionQueue<WorkerContext>)> {
    let Ok(assignment) = consumer.assignment() else { return Vec::new() };
    assignment
        .elements()
        .iter()
        .filter_map(|e| {
            let q = consumer.split_partition_queue(e.topic(), e.partition())?;
            Some((TopicPartition::new(e.topic(), e.partition()), q))
        })
        .collect()
}

/// Admits records from the partition queues while the in-flight bound allows, a
/// fair share per partition per round. Returns whether anything was admitted.
fn take_from_queues(
    lanes: &Lanes,
    consumer: &BaseConsumer<WorkerContext>,
    queues: &[(TopicPartition, PartitionQueue<WorkerContext>)],
) -> bool {
    let mut admitted = false;
    for (_, queue) in queues {
        for _ in 0..PER_PARTITION_ROUND {
            if !has_capacity(&lanes.shared) {
                return admitted;
            }
            match queue.poll(Duration::ZERO) {
                Some(Ok(msg)) => {
                    admit(lanes, consumer, &msg);
                    admitted = true;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "partition queue error");
                    break;
                }
                None => break,
            }
        }
    }
    admitted
}

/// Room for another record: under the in-flight bound, or nothing running at all
/// (everything admitted waits behind keys parked for a retry, and only consuming
/// further can bring those retries back).
fn has_capacity(shared: &WorkerState) -> bool {
    let ledger = shared.lock_ledger();
    ledger.in_flight() < shared.config.max_in_flight || ledger.running_total() == 0
}

fn consumer_config(shared: &WorkerState) -> Result<rdkafka::ClientConfig, WorkerError> {
    let mut cfg = shared.config.kafka.client_config()?;
    cfg.set("group.id", &shared.config.group_id);
    cfg.set("enable.auto.commit", "false");
    cfg.set("enable.auto.offset.store", "false");
    set_default(&mut cfg, "auto.offset.reset", "earliest");
    set_default(&mut cfg, "partition.assignment.strategy", "cooperative-sticky");
    set_default(&mut cfg, "session.timeout.ms", "10000");
    set_default(&mut cfg, "heartbeat.interval.ms", "1000");
    set_default(&mut cfg, "max.poll.interval.ms", "300000");
    // Bounds memory under any backlog: with a queue per partition, librdkafka
    // prefetches at most this much per assigned partition.
    set_fetch_defaults(&mut cfg);
    set_default(&mut cfg, "client.id", &format!("courier-worker-{}", shared.worker_id));
    Ok(cfg)
}

fn admit(lanes: &Lanes, consumer: &BaseConsumer<WorkerContext>, msg: &rdkafka::message::BorrowedMessage<'_>) {
    let shared = &lanes.shared;
    let tp = TopicPartition::of(msg);
    let Some(stop) = consumer.context().lock_tokens().get(&tp).cloned() else {
        tracing::debug!(?tp, "record for an unassigned partition ignored");
        return;
    };
    let lane = lane_of(shared, &tp, msg);
    // Copying out must never take the consumer thread down (and with it the worker,
    // on the same record after every restart): a panic here dead-letters the record.
    let copied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        (msg.key().map(<[u8]>::to_vec), msg.payload().map(<[u8]>::to_vec), HeaderMap::from_kafka(msg.headers()))
    }));
    let ((key, value, headers), fault) = match copied {
        Ok(parts) => (parts, None),
        Err(_) => {
            tracing::error!(?tp, offset = msg.offset(), "panic copying a record out of librdkafka; dead-lettering it");
            shared.metrics.panics.get_or_create(&vec![("where".into(), "consumer".into())]).inc();
            ((None, None, HeaderMap::new()), Some("the record could not be read from librdkafka".to_string()))
        }
    };
    let record = Record { tp: tp.clone(), offset: msg.offset(), key, value, headers, stop, fault };
    let admitted = {
        let mut ledger = shared.lock_ledger();
        let id = crate::envelope::Command::peek_id(&record.headers);
        if let Lane::Key(_, key) = &lane {
            // A key a handed-off command (of a previous owner) still holds back.
            if let Some(holder) = shared.deferrals.holder(tp.partition, key).filter(|h| Some(*h) != id) {
                ledger.hold(&lane, holder);
            }
        }
        let a = ledger.admit(tp, msg.offset(), lane, id, record);
        shared.metrics.in_flight.set(ledger.in_flight() as i64);
        a
    };
    if let Ok(Some(entry)) = admitted {
        lanes.start(entry);
    }
}

/// The lane a record queues in: by the worker's `--ordering`, unless its type's
/// route runs in no order (`ordering: none` in the --config file; read from the
/// `ce_type` header only when some route asks for it).
fn lane_of(shared: &WorkerState, tp: &TopicPartition, msg: &rdkafka::message::BorrowedMessage<'_>) -> Lane {
    if shared.any_unordered {
        let ty = crate::envelope::last_kafka_header(msg.headers(), crate::envelope::header_names::TYPE);
        let route = ty.and_then(|t| std::str::from_utf8(t).ok()).and_then(|t| shared.router.get(t));
        if route.is_some_and(|r| r.unordered) {
            return Lane::Free;
        }
    }
    Lane::for_record(shared.config.ordering, tp, msg.key())
}

/// How the worker sends commit points: a group commit, or in exactly-once mode a
/// transaction carrying the outputs of the records they pass ([`txn::cycle`], run
/// even with no points, for the advisory events waiting). A fenced producer stops the
/// worker. Failures are retried by [`offsets::commit`].
fn send_commits<'a>(
    shared: &'a WorkerState,
    consumer: &'a BaseConsumer<WorkerContext>,
    mode: CommitMode,
) -> impl FnOnce(&[(TopicPartition, i64)]) -> Result<(), CommitError> + 'a {
    move |points| {
        let sent = match &shared.sink {
            Sink::Direct(_) => commit_offsets(consumer, points, mode).map_err(CommitError::Group),
            Sink::Transactional { producer, outbox } => txn::cycle(producer, consumer, outbox, points).map_err(|e| match e {
                TxnError::Fatal(e) => {
                    tracing::error!(error = %e, "transactional producer failed fatally; stopping");
                    consumer.context().fatal.cancel();
                    CommitError::Fatal(e)
                }
                aborted => CommitError::Txn(aborted),
            }),
        };
        if sent.is_ok() && !points.is_empty() {
            shared.metrics.commits.inc();
        }
        sent
    }
}

/// Why commit points were not sent (logged; they are sent again next round).
#[derive(Debug, thiserror::Error)]
enum CommitError {
    #[error(transparent)]
    Group(rdkafka::error::KafkaError),
    #[error(transparent)]
    Txn(TxnError),
    /// The transactional producer is fenced or failed for good: the worker stops.
    #[error(transparent)]
    Fatal(rdkafka::error::KafkaError),
}

/// Graceful stop: drain every partition (as a revoke would), then leave the group.
fn shutdown(shared: &WorkerState, consumer: Arc<BaseConsumer<WorkerContext>>) {
    tracing::info!(in_flight = shared.lock_ledger().in_flight(), "stopping: draining in-flight work");
    let tps = shared.lock_ledger().assigned();
    consumer.context().drain(&consumer, &tps);
    consumer.unsubscribe();
    drop(consumer);
}
