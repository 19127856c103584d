//! Where to call back: command id -> callback URL, learned from the status topic.
//!
//! A result event does not carry its command's callback URL; the operation snapshots
//! on the compacted status topic do (the gateway writes one at submission, workers
//! write one with every final event, in the same send as the event). The dispatcher
//! reads that topic from the beginning and keeps following it.
//!
//! The two topics are read separately, so a final event can be seen before the
//! snapshot written with it. [`Callbacks::lookup`] therefore waits, up to a bound,
//! for a *final* snapshot of the command: only then does "no URL" mean "no webhook".
//! Finished commands without a URL are remembered too (that is how the wait ends
//! early), in a bounded, oldest-first-forgotten table.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::follow::{follow, FollowError, StartAt};
use crate::envelope::OperationSnapshot;
use crate::kafka::KafkaArgs;

#[derive(Debug, Clone, Default)]
struct Known {
    url: Option<String>,
    finished: bool,
}

#[derive(Default)]
struct Table {
    by_id: HashMap<Uuid, Known>,
    order: VecDeque<Uuid>,
}

/// See the module docs.
pub struct Callbacks {
    table: Mutex<Table>,
    changed: tokio::sync::Notify,
    capacity: usize,
}

impl Callbacks {
    /// Remembers at most `capacity` commands.
    pub fn new(capacity: usize) -> Self {
        Callbacks { table: Mutex::default(), changed: tokio::sync::Notify::new(), capacity: capacity.max(1) }
    }

    /// Follows the status topic into a new table; returns once it has read to the end.
    pub async fn follow(kafka: &KafkaArgs, capacity: usize, stop: CancellationToken) -> Result<Arc<Self>, FollowError> {
        let callbacks = Arc::new(Callbacks::new(capacity));
        let sink = callbacks.clone();
        follow(kafka, &kafka.topics().status, StartAt::Beginning, stop, move |seen| match OperationSnapshot::decode(seen.value()) {
            Ok(Some(snapshot)) => sink.apply(&snapshot),
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "unreadable status record; skipped"),
        })
        .await?;
        Ok(callbacks)
    }

    /// Learns from one snapshot. A URL, once known, is kept: later snapshots written
    /// without one (a worker that could not read the command, say) do not erase it.
    pub fn apply(&self, snapshot: &OperationSnapshot) {
        let finished = snapshot.state.is_final();
        if snapshot.callback_url.is_none() && !finished {
            return;
        }
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let Table { by_id, order } = &mut *table;
        let known = by_id.entry(snapshot.command_id).or_insert_with(|| {
            order.push_back(snapshot.command_id);
            Known::default()
        });
        if snapshot.callback_url.is_some() {
            known.url.clone_from(&snapshot.callback_url);
        }
        known.finished |= finished;
        while order.len() > self.capacity {
            if let Some(old) = order.pop_front() {
                by_id.remove(&old);
            }
        }
        drop(table);
        self.changed.notify_waiters();
    }

    fn get(&self, id: &Uuid) -> Option<Known> {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).by_id.get(id).cloned()
    }

    /// The callback URL of a command that has a final event: as soon as its final
    /// snapshot is known, or after `wait` with whatever is known by then.
    pub async fn lookup(&self, id: Uuid, wait: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let known = self.get(&id);
            if known.as_ref().is_some_and(|k| k.finished) {
                return known.and_then(|k| k.url);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                tracing::debug!(%id, "no final snapshot seen in time; using what is known");
                return known.and_then(|k| k.url);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{test_snapshot, State};

    fn snapshot(id: Uuid, state: State, url: Option<&str>) -> OperationSnapshot {
        OperationSnapshot { command_id: id, callback_url: url.map(str::to_string), ..test_snapshot(state) }
    }

    #[tokio::test]
    async fn waits_for_the_final_snapshot_and_keeps_a_known_url() {
        let callbacks = Arc::new(Callbacks::new(10));
        let id = Uuid::now_v7();
        callbacks.apply(&snapshot(id, State::Queued, Some("http://h/x")));
        let later = callbacks.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            later.apply(&snapshot(id, State::Completed, None));
        });
        let started = std::time::Instant::now();
        assert_eq!(callbacks.lookup(id, Duration::from_secs(5)).await.as_deref(), Some("http://h/x"));
        assert!(started.elapsed() < Duration::from_secs(2), "the final snapshot ended the wait");
        let none = Uuid::now_v7();
        callbacks.apply(&snapshot(none, State::Failed, None));
        assert_eq!(callbacks.lookup(none, Duration::from_secs(5)).await, None);
        assert_eq!(callbacks.lookup(Uuid::now_v7(), Duration::from_millis(20)).await, None);
    }

    #[test]
    fn forgets_the_oldest_beyond_capacity() {
        let callbacks = Callbacks::new(2);
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        for id in &ids {
            callbacks.apply(&snapshot(*id, State::Completed, Some("http://h/")));
        }
        assert!(callbacks.get(&ids[0]).is_none());
        assert!(callbacks.get(&ids[2]).is_some());
    }
}
