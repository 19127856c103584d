//! What every worker must know beyond its own partitions: which commands were
//! cancelled (the control topic) and which already have a final event (the results
//! topic). Each is followed by the crate's whole-topic follower ([`crate::follow`]),
//! assigned to every partition, so the knowledge does not depend on who owns what.
//!
//! A worker waits for both followers to catch up (read every partition to its end)
//! before taking commands: that is what makes a cancel sent before a restart, or a
//! result published by a previous owner, count.

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

/// Follows the control topic from its beginning (every cancel must count) and the
/// last `tail` records of each results partition (enough to warm the dedupe cache)
/// until `stop`, into `on_control` and `on_result`. Returns once both have caught
/// up, or after `catch_up` with a warning: the worker takes no command before that.
pub async fn follow_both(
    kafka: &KafkaArgs,
    topics: &Topics,
    tail: u64,
    catch_up: Duration,
    stop: &CancellationToken,
    on_control: impl FnMut(Seen<'_>) + Send + 'static,
    on_result: impl FnMut(Seen<'_>) + Send + 'static,
) -> Result<(), KafkaSetupError> {
    let control = follow::spawn(kafka, &topics.control, StartAt::Beginning, stop.clone(), on_control).await.map_err(setup)?;
    let results = follow::spawn(kafka, &topics.results, StartAt::Tail(tail), stop.clone(), on_result).await.map_err(setup)?;
    let deadline = tokio::time::Instant::now() + catch_up;
    for (topic, following) in [(&topics.control, control), (&topics.results, results)] {
        match tokio::time::timeout_at(deadline, following.caught_up()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Ok(()), // stopped: the worker is stopping too
            Err(_) => tracing::warn!(%topic, "follower did not catch up in {catch_up:?}; continuing"),
        }
    }
    Ok(())
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

/// Records the ids of commands that have a final event. Reads two headers in place
/// (type and subject), nothing else: every worker reads every result, so this stays
/// cheap.
pub fn on_result(finished: Arc<RecentIds>) -> impl FnMut(Seen<'_>) + Send + 'static {
    move |seen| {
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
