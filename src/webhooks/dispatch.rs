//! The dispatcher's consumer thread: results and retry tiers in, delivery tasks out,
//! offsets committed behind them.
//!
//! One consumer in the dispatchers' group reads `<prefix>.results` and every webhook
//! tier topic. A result record is handed to a delivery task at once (non-final events
//! are passed over on their headers alone); a tier record is held until due
//! ([`TierHold`]), then handed over the same way. Tasks run concurrently, up to
//! `max_in_flight`, so one slow endpoint never holds up the others; when all slots
//! are taken the thread waits for one (that is the backpressure).
//!
//! Completion is out of order, so commits use the [`Ledger`] the worker uses too
//! (every record in a free lane): the committed offset of a partition is its lowest
//! unfinished record. Commits go out every 500 ms, and every point again every 10 s; a
//! commit that fails after it was sent, wholly or for some partitions, is sent again
//! next round ([`DispatchContext`], the same handling as the worker's). On shutdown the thread stops reading, gives running deliveries
//! the grace period, commits what finished, and leaves; anything unfinished is read
//! again by the next owner.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{ClientContext, TopicPartitionList};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::{outcome, DispatcherState, WebhookError};
use crate::envelope::is_final_record;
use crate::kafka::{assignment, commit_offsets, failed_commits, KafkaSetupError, TopicPartition};
use crate::offsets::{self, lock, Cadence, Lane, Ledger, TierHold};
use crate::publish::PublishError;
use crate::retry::{hold_record, release_due};

const CHECK_ASSIGNMENT_EVERY: Duration = Duration::from_millis(250);

/// The group consumer: results and the tiers, with the ledger its commits come from.
pub(super) type GroupConsumer = BaseConsumer<DispatchContext>;

/// Connects the consumer's commit callback to the ledger, so a commit that fails
/// after it was sent (an async one, or one that took for some partitions only) is
/// sent again next round rather than lost.
pub(super) struct DispatchContext {
    ledger: Arc<Mutex<Ledger<()>>>,
}

impl ClientContext for DispatchContext {}

impl ConsumerContext for DispatchContext {
    fn commit_callback(&self, result: KafkaResult<()>, list: &TopicPartitionList) {
        if let Some((failed, error)) = failed_commits(&result, list) {
            offsets::commit_failed(&self.ledger, &failed, &error);
        }
    }
}

/// The group consumer, subscribed to results and the tiers.
pub(super) fn consumer(ctx: &DispatcherState) -> Result<GroupConsumer, WebhookError> {
    let mut cfg = ctx.config.kafka.client_config()?;
    cfg.set("group.id", &ctx.config.group_id);
    cfg.set("enable.auto.commit", "false");
    cfg.set("auto.offset.reset", "earliest");
    cfg.set("queued.max.messages.kbytes", "4096");
    // A dispatcher that dies is noticed in seconds, not librdkafka's default 45 s: its
    // partitions' deliveries wait that long for a new owner.
    crate::kafka::set_default(&mut cfg, "session.timeout.ms", "10000");
    crate::kafka::set_default(&mut cfg, "heartbeat.interval.ms", "1000");
    crate::kafka::set_default(&mut cfg, "isolation.level", "read_committed");
    let context = DispatchContext { ledger: Arc::default() };
    let consumer: GroupConsumer = cfg.create_with_context(context).map_err(KafkaSetupError::from)?;
    let mut topics = vec![ctx.topics.results.clone()];
    topics.extend(ctx.schedule.tier_topics(&ctx.topics));
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&refs).map_err(KafkaSetupError::from)?;
    Ok(consumer)
}

/// Hands records to delivery tasks and keeps their offsets.
struct Tasks {
    ctx: Arc<DispatcherState>,
    ledger: Arc<Mutex<Ledger<()>>>,
    slots: Arc<Semaphore>,
    runtime: tokio::runtime::Handle,
    /// Fires when the shutdown grace is over: unfinished tasks stop publishing.
    abandon: CancellationToken,
}

impl Tasks {
    fn start(&self, m: OwnedMessage) {
        let tp = TopicPartition::of(&m);
        let from_results = m.topic() == self.ctx.topics.results;
        let entry = {
            let mut ledger = lock(&self.ledger);
            if !ledger.is_assigned(&tp) {
                ledger.assign(tp.clone());
            }
            match ledger.admit(tp, m.offset(), Lane::Free, None, ()) {
                Ok(Some(entry)) => entry,
                _ => return,
            }
        };
        let (tp, epoch) = (entry.tp.clone(), entry.epoch);
        let finish = {
            let ledger = self.ledger.clone();
            move || {
                lock(&ledger).finish(&entry.tp, entry.offset, entry.epoch, &Lane::Free, None);
            }
        };
        // Result events that are not final need no webhook: decided on the type header.
        if from_results && !is_final_record(m.headers()) {
            finish();
            return;
        }
        let Ok(slot) = self.runtime.block_on(self.slots.clone().acquire_owned()) else { return };
        let (ctx, abandon, ledger) = (self.ctx.clone(), self.abandon.clone(), self.ledger.clone());
        self.runtime.spawn(async move {
            ctx.metrics.in_flight.inc();
            let delivery = async {
                if from_results {
                    outcome::on_result(&ctx, &m, &abandon).await
                } else {
                    outcome::on_tier(&ctx, &m, &abandon).await
                }
            };
            // A panic would end this task with the record still admitted, and no
            // commit of its partition would ever pass it again: caught and reported.
            let done = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(delivery)).await.unwrap_or_else(|panic| {
                tracing::error!(panic = %crate::supervise::panic_text(panic.as_ref()), topic = m.topic(), offset = m.offset(),
                    "panic delivering a webhook; the record is skipped");
                Ok(())
            });
            ctx.metrics.in_flight.dec();
            match done {
                Err(PublishError::Abandoned { .. }) => lock(&ledger).abandon(&tp, epoch),
                Err(e) => {
                    // Unpublishable (a topic deleted under us): not retried forever, so
                    // the partition is not wedged; the error is the record of it.
                    tracing::error!(error = %e, "webhook delivery records could not be published");
                    finish();
                }
                Ok(()) => finish(),
            }
            drop(slot);
        });
    }

    fn running(&self) -> usize {
        lock(&self.ledger).running_total()
    }
}

/// Runs the consumer loop on the current thread until `stop`, then drains.
pub(super) fn run(ctx: Arc<DispatcherState>, consumer: GroupConsumer, runtime: tokio::runtime::Handle, stop: CancellationToken) {
    let grace = ctx.config.shutdown_grace;
    let slots = Arc::new(Semaphore::new(ctx.config.max_in_flight));
    let ledger = consumer.context().ledger.clone();
    let tasks = Tasks { ctx, ledger, slots, runtime, abandon: CancellationToken::new() };
    let mut hold = TierHold::default();
    let (mut cadence, mut last_check) = (Cadence::new(), Instant::now());
    while !stop.is_cancelled() {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) if m.topic() == tasks.ctx.topics.results => tasks.start(m.detach()),
            Some(Ok(m)) => hold_record(&consumer, &mut hold, m.detach()),
            Some(Err(e)) => tracing::warn!(error = %e, "webhook consumer error"),
            None => {}
        }
        release_due(&consumer, &mut hold, |head, _| {
            tasks.start(head.clone());
            true
        });
        if last_check.elapsed() >= CHECK_ASSIGNMENT_EVERY {
            follow_assignment(&consumer, &tasks.ledger, &mut hold);
            last_check = Instant::now();
        }
        cadence.tick(&tasks.ledger, || offsets::commit(&tasks.ledger, None, |points| commit_offsets(&consumer, points, CommitMode::Async)));
    }
    let until = Instant::now() + grace;
    while tasks.running() > 0 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    tasks.abandon.cancel();
    offsets::commit(&tasks.ledger, None, |points| commit_offsets(&consumer, points, CommitMode::Sync));
    tracing::info!(unfinished = tasks.running(), "webhook dispatcher stopped");
}

/// Forgets partitions this consumer no longer holds (their stragglers are ignored by
/// the ledger's epochs; what is held for them is dropped, to be read by the new owner).
fn follow_assignment(consumer: &GroupConsumer, ledger: &Mutex<Ledger<()>>, hold: &mut TierHold<OwnedMessage>) {
    let now = assignment(consumer);
    let mut ledger = lock(ledger);
    let gone: Vec<_> = ledger.assigned().into_iter().filter(|tp| !now.contains(tp)).collect();
    if !gone.is_empty() {
        ledger.release(&gone);
    }
    hold.keep_assigned(&now);
}
