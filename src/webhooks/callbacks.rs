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
//! early), in a bounded, oldest-first-forgotten table; or, with `--store-dir`, in
//! the on-disk operations view the gateway uses too ([`crate::view`]), which forgets
//! nothing for lack of room and, restarted, reads only the tail of the topic.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::follow::{follow, FollowError, StartAt};
use crate::view::{follow_status, Store, ViewError};
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
    /// The on-disk view, when there is one: then the table stays empty.
    view: Option<Arc<Store>>,
}

/// How long finished operations stay in a dispatcher's on-disk view: as long as the
/// results topic keeps their events by default (`topics create --retention-hours`).
const VIEW_RETENTION: Duration = Duration::from_secs(168 * 3600);

impl Callbacks {
    /// Remembers at most `capacity` commands.
    pub fn new(capacity: usize) -> Self {
        Callbacks { table: Mutex::default(), changed: tokio::sync::Notify::new(), capacity: capacity.max(1), view: None }
    }

    /// Follows the status topic into the on-disk view in `dir` (from where it left
    /// off); returns once it has read to the end.
    pub async fn follow_on_disk(kafka: &KafkaArgs, dir: &std::path::Path, cache_bytes: usize, stop: CancellationToken) -> Result<Arc<Self>, ViewError> {
        let status = kafka.topics().status;
        let store = Arc::new(Store::open(dir, cache_bytes, &status, VIEW_RETENTION, VIEW_RETENTION)?);
        follow_status(kafka, &status, store.clone(), stop.clone()).await?;
        crate::view::maintain(&store, VIEW_RETENTION, &stop);
        Ok(Arc::new(Callbacks { view: Some(store), ..Callbacks::new(1) }))
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
        if let Some(view) = &self.view {
            return lookup_in(view, id, deadline).await;
        }
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

/// [`Callbacks::lookup`] in the on-disk view: waits for the operation to appear
/// (the view notifies only about known ones, so this polls, briefly), then for it to
/// be done.
async fn lookup_in(view: &Store, id: Uuid, deadline: tokio::time::Instant) -> Option<String> {
    let never = CancellationToken::new();
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(now) = view.get(&id) {
            if now.state.is_final() {
                return now.callback_url;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let done = view.wait_done(&id, left, &never).await;
            return done.or(Some(now)).and_then(|s| s.callback_url);
        }
        if tokio::time::Instant::now() + pause > deadline {
            tracing::debug!(%id, "no snapshot seen in time; no callback URL");
            return None;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
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
