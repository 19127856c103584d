//! Where to call back, for final events that do not say.
//!
//! A final event written by a worker of envelope 1.1 or later carries its command's
//! callback URL (`ce_callbackurl`) or, by its absence, says there is none: the
//! dispatcher reads nothing else ([`ResultEvent::callback_echoed`]). Only an event of
//! an older writer needs a lookup, in the operation snapshots of the compacted status
//! topic (the gateway writes one at submission, workers one with every final event):
//! either in the on-disk operations view (`--store-dir`, the gateway's view,
//! [`crate::view`]) or by a point lookup that reads only the id's partition of the
//! status topic, from shortly before the time in its id. No table of the whole
//! topic is kept.
//!
//! The two topics are read separately, so a final event can be seen before the
//! snapshot written with it. A lookup therefore waits, up to a bound, for a *final*
//! snapshot of the command: only then does "no URL" mean "no webhook".

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::envelope::{OperationSnapshot, ResultEvent};
use crate::follow::{read_key_to_end, StartAt};
use crate::kafka::KafkaArgs;
use crate::view::{follow_status, Store, ViewError};

/// See the module docs.
pub struct Callbacks {
    kafka: KafkaArgs,
    /// The on-disk view, when there is one; else point lookups.
    view: Option<Arc<Store>>,
}

/// How long finished operations stay in a dispatcher's on-disk view: as long as the
/// results topic keeps their events by default (`topics create --retention-hours`).
const VIEW_RETENTION: Duration = Duration::from_secs(168 * 3600);

/// Between two point lookups of a command whose final snapshot is not there yet.
const LOOKUP_PAUSE: Duration = Duration::from_millis(200);

impl Callbacks {
    /// Follows the status topic into the on-disk view in `dir` (from where it left
    /// off); returns once it has read to the end.
    pub async fn follow_on_disk(kafka: &KafkaArgs, dir: &std::path::Path, cache_bytes: usize, stop: CancellationToken) -> Result<Arc<Self>, ViewError> {
        let status = kafka.topics().status;
        let store = Arc::new(Store::open(dir, cache_bytes, &status, VIEW_RETENTION, VIEW_RETENTION)?);
        follow_status(kafka, &status, store.clone(), stop.clone()).await?;
        crate::view::maintain(&store, VIEW_RETENTION, &stop);
        Ok(Arc::new(Callbacks { kafka: kafka.clone(), view: Some(store) }))
    }

    /// Point lookups in the status topic, nothing read ahead.
    pub fn point_lookups(kafka: &KafkaArgs) -> Arc<Self> {
        Arc::new(Callbacks { kafka: kafka.clone(), view: None })
    }

    /// The callback URL of a final event's command: the event's own, when its writer
    /// echoes them; else as soon as the command's final snapshot is known, or after
    /// `wait` with whatever is known by then.
    pub async fn url_of(&self, event: &ResultEvent, wait: Duration) -> Option<String> {
        if event.callback_url.is_some() || event.callback_echoed {
            return event.callback_url.clone();
        }
        let deadline = tokio::time::Instant::now() + wait;
        let id = event.command_id();
        match &self.view {
            Some(view) => lookup_in(view, id, deadline).await,
            None => self.point_lookup(id, deadline).await,
        }
    }

    /// Reads the id's partition of the status topic (from shortly before its time)
    /// until its final snapshot is there or `deadline`; a URL, once seen, is kept.
    async fn point_lookup(&self, id: Uuid, deadline: tokio::time::Instant) -> Option<String> {
        let status = self.kafka.topics().status;
        let key = id.to_string();
        let mut url = None;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let mut finished = false;
            let read = read_key_to_end(&self.kafka, &status, key.as_bytes(), StartAt::for_id(id), Some(left.max(LOOKUP_PAUSE)), |seen| {
                if seen.key() != Some(key.as_bytes()) {
                    return;
                }
                if let Ok(Some(snapshot)) = OperationSnapshot::decode(seen.value()) {
                    url = snapshot.callback_url.or(url.take());
                    finished |= snapshot.state.is_final();
                }
            })
            .await;
            if let Err(e) = read {
                tracing::warn!(%id, error = %e, "callback URL lookup failed");
            }
            if finished || tokio::time::Instant::now() + LOOKUP_PAUSE > deadline {
                if !finished {
                    tracing::debug!(%id, "no final snapshot seen in time; using what is known");
                }
                return url;
            }
            tokio::time::sleep(LOOKUP_PAUSE).await;
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
