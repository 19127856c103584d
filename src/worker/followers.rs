//! What a worker must know beyond the records it runs: which commands were
//! cancelled (the control topic, followed whole by every worker, so the knowledge
//! does not depend on who owns what) and which already have a final event (the
//! results topic, co-partitioned with the commands topic, read only where the worker
//! owns commands).
//!
//! A worker waits for the control follower to catch up (read every partition to its
//! end) before taking commands: that is what makes a cancel sent before a restart
//! count. Each assignment first reads the matching results partitions to their end
//! ([`warm_up`]), before any of their commands is admitted: that is what makes a
//! result published by a previous owner count. After that, only the partition's
//! owner writes final events there (its own are recorded as it writes them), so
//! nothing more is read: the results topic is read once per assignment, not once per
//! worker.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::registry::Deferrals;
use crate::envelope::{header_names, is_final_record, ControlRecord};
use crate::metrics::Metrics;
use crate::follow::{self, FollowError, Seen, StartAt};
use crate::kafka::{KafkaArgs, KafkaSetupError};
use crate::topics::Topics;

/// How long a follower or a duplicate check's warm-up may take to read to the end
/// before the worker goes on without it (with a warning).
pub const CATCH_UP: Duration = Duration::from_secs(30);

/// A bounded set of recent ids; the oldest are forgotten first.
pub struct RecentIds {
    inner: Mutex<(HashSet<Uuid>, VecDeque<Uuid>)>,
    capacity: usize,
}

impl RecentIds {
    pub fn new(capacity: usize) -> Self {
        RecentIds { inner: Mutex::new((HashSet::new(), VecDeque::new())), capacity: capacity.max(1) }
    }

    pub fn insert(&self, id: Uuid) {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (set, order) = &mut *guard;
        if set.insert(id) {
            order.push_back(id);
            while order.len() > self.capacity {
                if let Some(old) = order.pop_front() {
                    set.remove(&old);
                }
            }
        }
    }

    /// Forgets an id. Its slot in the age order stays, so if it is inserted again it
    /// may be forgotten early: this is a cache, a miss costs a duplicate check by the
    /// broker's records, not correctness.
    pub fn remove(&self, id: &Uuid) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0.remove(id);
    }

    pub fn contains(&self, id: &Uuid) -> bool {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0.contains(id)
    }
}

/// Follows the control topic from its beginning (every cancel must count) until
/// `stop`, into `on_control`. Returns once it has caught up, or after `catch_up` with
/// a warning: the worker takes no command before that.
pub async fn follow_control(
    kafka: &KafkaArgs,
    topics: &Topics,
    catch_up: Duration,
    stop: &CancellationToken,
    on_control: impl FnMut(Seen<'_>) + Send + 'static,
) -> Result<(), KafkaSetupError> {
    let control = follow::spawn(kafka, &topics.control, StartAt::Beginning, stop.clone(), on_control).await.map_err(setup)?;
    match tokio::time::timeout(catch_up, control.caught_up()).await {
        Ok(_) => {} // caught up, or stopped: the worker is stopping too
        Err(_) => tracing::warn!(topic = %topics.control, "follower did not catch up in {catch_up:?}; continuing"),
    }
    Ok(())
}

/// How many of a results partition's last records the warm-up reads: an eighth of
/// the finished set's capacity (a worker often owns several), at least 1,000.
pub fn tail_of(dedupe_capacity: usize) -> u64 {
    (dedupe_capacity / 8).max(1000) as u64
}

/// Reads the last `tail` records of these results partitions (those numbered like
/// the commands partitions just assigned) to their end into `finished`. Within
/// `within`; past it, or on an error, the worker goes on with a warning: the set is
/// a cache, and a miss runs a command again, as at-least-once allows.
pub async fn warm_up(kafka: &KafkaArgs, results: &str, partitions: &[i32], tail: u64, within: Duration, finished: Arc<RecentIds>, metrics: Arc<Metrics>) {
    if partitions.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    let on_record = on_result(finished, metrics.clone());
    let before = metrics.dedupe_read_records.get();
    match follow::read_partitions_to_end(kafka, results, partitions, StartAt::Tail(tail), Some(within), on_record).await {
        Ok(()) => {
            let read = metrics.dedupe_read_records.get() - before;
            tracing::info!(topic = %results, ?partitions, read, took = ?started.elapsed(), "duplicate check warmed up");
        }
        Err(e) => tracing::warn!(topic = %results, ?partitions, error = %e, "duplicate check not warmed up; continuing"),
    }
}

/// A follower that could not start, as the worker's setup error. `spawn` fails only
/// while setting up (`Setup`, `Kafka`); the last arm is for completeness.
fn setup(e: FollowError) -> KafkaSetupError {
    match e {
        FollowError::Setup(e) => e,
        FollowError::Kafka { source, .. } => KafkaSetupError::Client(source),
        other => KafkaSetupError::Thread(other.to_string()),
    }
}

/// Records cancels in `cancelled` (and fires the token of a running command), and
/// hand-offs and their releases in `deferrals`.
pub fn on_control(
    cancelled: Arc<RecentIds>,
    running: Arc<Mutex<std::collections::HashMap<Uuid, CancellationToken>>>,
    deferrals: Arc<Deferrals>,
    metrics: Arc<Metrics>,
) -> impl FnMut(Seen<'_>) + Send + 'static {
    move |seen| {
        match ControlRecord::decode(seen.value(), &seen.headers()) {
            Ok(ControlRecord::Cancel(req)) => {
                cancelled.insert(req.command_id);
                if let Some(token) = running.lock().unwrap_or_else(|p| p.into_inner()).get(&req.command_id) {
                    tracing::info!(id = %req.command_id, "cancelling running command");
                    token.cancel();
                }
            }
            Ok(ControlRecord::Deferred(d)) => deferrals.insert(*d),
            Ok(ControlRecord::Released(r)) => deferrals.release(&r.command_id, r.attempt),
            Err(e) => tracing::debug!(error = %e, "ignoring unreadable control record"),
        }
        metrics.deferred.set(deferrals.len() as i64);
    }
}

/// Records the ids of commands that have a final event, and counts what it read.
/// Reads two headers in place (type and subject), nothing else.
pub fn on_result(finished: Arc<RecentIds>, metrics: Arc<Metrics>) -> impl FnMut(Seen<'_>) + Send + 'static {
    move |seen| {
        metrics.dedupe_read_records.inc();
        metrics.dedupe_read_bytes.inc_by(seen.wire_size() as u64);
        if !is_final_record(seen.kafka_headers()) {
            return;
        }
        let subject = seen.header(header_names::SUBJECT).and_then(|s| std::str::from_utf8(s).ok());
        if let Some(id) = subject.and_then(|s| Uuid::parse_str(s).ok()) {
            finished.insert(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_ids_forget_the_oldest() {
        let ids = RecentIds::new(2);
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        ids.insert(a);
        ids.insert(b);
        ids.insert(a);
        ids.insert(c);
        assert!(!ids.contains(&a) && ids.contains(&b) && ids.contains(&c));
    }
}
