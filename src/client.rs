//! The caller's side: submit commands, wait for their outcome, watch results.
//!
//! Waiting needs no reply topic per caller and no in-memory pending map on the
//! worker side: results are keyed events on one shared topic, and the client reads
//! them, through the crate's whole-topic follower (`follow.rs`). One background
//! listener per [`Client`] serves every `submit_and_wait`; it starts at the results
//! topic's end *before* the first command is sent, so no result can slip past it.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::{oneshot, OnceCell};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::envelope::{Command, NewCommand, OperationSnapshot, ResultEvent};
use crate::follow::{Reader, Seen};
use crate::kafka::{KafkaArgs, KafkaSetupError};
use crate::publish::{Outgoing, PublishError, Publisher};
use crate::topics::Topics;

/// Where a subscription starts reading: the crate's one start position.
pub use crate::follow::StartAt;
/// Dead letters as [`Client::dead_letters`] reads them back.
pub use crate::dlq::{DeadLetterFilter, DeadLetterRecord};

/// What can go wrong for a caller.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Setup(#[from] KafkaSetupError),
    #[error("submit failed: {0}")]
    Publish(#[from] PublishError),
    #[error("no final result for command {id} within {timeout:?}")]
    Timeout { id: Uuid, timeout: Duration },
    #[error("result listener stopped")]
    ListenerGone,
    #[error(transparent)]
    Follow(#[from] crate::follow::FollowError),
}

type Waiters = Arc<Mutex<HashMap<Uuid, oneshot::Sender<ResultEvent>>>>;

/// Submits commands and learns their outcomes. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    args: KafkaArgs,
    topics: Topics,
    publisher: Publisher,
    source: String,
    waiters: Waiters,
    listener: Arc<OnceCell<Listener>>,
}

/// The result listener every clone of a client shares; stopped when the last clone
/// goes, or by [`Client::close`].
struct Listener {
    stop: CancellationToken,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Client {
    pub fn new(args: KafkaArgs) -> Result<Self, ClientError> {
        Ok(Client {
            topics: args.topics(),
            publisher: Publisher::new(&args)?,
            source: format!("//courier/client/{}", std::process::id()),
            args,
            waiters: Arc::default(),
            listener: Arc::default(),
        })
    }

    /// Sets `ce_source` on submitted commands (default `//courier/client/<pid>`).
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }

    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Sends a command and returns its id once the broker has acknowledged it.
    pub async fn submit(&self, command: NewCommand) -> Result<Uuid, ClientError> {
        self.submit_command(command.into_command(&self.source)).await
    }

    /// Sends a command whose id was stamped beforehand: the HTTP gateway records an
    /// operation under that id before the command exists, so the id must not change.
    pub async fn submit_command(&self, cmd: Command) -> Result<Uuid, ClientError> {
        let (key, value, headers) = cmd.encode();
        let out = Outgoing::new(self.topics.commands.clone(), key, value, headers);
        self.publisher.send_once(&out).await?;
        tracing::debug!(id = %cmd.id, r#type = %cmd.command_type, "command submitted");
        Ok(cmd.id)
    }

    /// Sends many commands, waiting for all acks together (much faster than one by
    /// one). Ids come back in input order.
    pub async fn submit_batch(&self, commands: Vec<NewCommand>) -> Result<Vec<Uuid>, ClientError> {
        let futures = commands.into_iter().map(|c| self.submit(c));
        futures::future::try_join_all(futures).await
    }

    /// Sends a command and waits for its final event (completed, failed, cancelled or
    /// timed_out). A `failed` outcome is a successful wait: inspect the event.
    pub async fn submit_and_wait(&self, command: NewCommand, timeout: Duration) -> Result<ResultEvent, ClientError> {
        self.ensure_listener().await?;
        let cmd = command.into_command(&self.source);
        let id = cmd.id;
        let (tx, rx) = oneshot::channel();
        self.lock_waiters().insert(id, tx);
        let (key, value, headers) = cmd.encode();
        let out = Outgoing::new(self.topics.commands.clone(), key, value, headers);
        if let Err(e) = self.publisher.send_once(&out).await {
            self.lock_waiters().remove(&id);
            return Err(e.into());
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(event)) => Ok(event),
            Ok(Err(_)) => Err(ClientError::ListenerGone),
            Err(_) => {
                self.lock_waiters().remove(&id);
                Err(ClientError::Timeout { id, timeout })
            }
        }
    }

    /// Asks every worker to cancel a command: skipped if not started yet, its
    /// cancellation token fired if running. Durable: it is a record on the control
    /// topic, honoured by workers that start or take over later.
    pub async fn cancel(&self, id: Uuid, reason: Option<String>) -> Result<(), ClientError> {
        let (key, value, headers) = crate::envelope::CancelRequest::new(id, reason).encode(&self.source);
        let out = Outgoing::new(self.topics.control.clone(), key, value, headers);
        self.publisher.send_once(&out).await?;
        Ok(())
    }

    /// Waits for the final event of a command submitted earlier, by anyone; reads the
    /// results topic from `start` (`StartAt::Beginning` finds one that already ended).
    pub async fn wait_for(&self, id: Uuid, start: StartAt, timeout: Duration) -> Result<ResultEvent, ClientError> {
        let mut events = self.subscribe(start).await?;
        let found = async {
            while let Some(ev) = events.next().await {
                if ev.command_id() == id && ev.state().is_final() {
                    return Some(ev);
                }
            }
            None
        };
        match tokio::time::timeout(timeout, found).await {
            Ok(Some(ev)) => Ok(ev),
            Ok(None) => Err(ClientError::ListenerGone),
            Err(_) => Err(ClientError::Timeout { id, timeout }),
        }
    }

    /// Waits for the final state of any command, even one submitted before this
    /// process started: the compacted status topic keeps the latest snapshot of every
    /// operation, so reading it finds one that already ended, and following it on
    /// finds one that ends later. Reads only the id's partition (snapshots are keyed
    /// by id), from a little before the time in its UUIDv7 id: a lookup costs the
    /// records written since the command was made, in one partition, not the topic.
    pub async fn wait(&self, id: Uuid, timeout: Duration) -> Result<OperationSnapshot, ClientError> {
        let key = id.to_string();
        let final_snapshot = move |seen: Seen<'_>| {
            if seen.key() != Some(key.as_bytes()) {
                return None;
            }
            OperationSnapshot::decode(seen.value()).ok().flatten().filter(|s| s.state.is_final())
        };
        let reader = Reader::open_for_key(&self.args, &self.topics.status, id.to_string().as_bytes(), StartAt::for_id(id)).await?;
        let mut finals = Box::pin(reader.into_stream(final_snapshot));
        match tokio::time::timeout(timeout, finals.next()).await {
            Ok(Some(snapshot)) => Ok(snapshot),
            Ok(None) => Err(ClientError::ListenerGone),
            Err(_) => Err(ClientError::Timeout { id, timeout }),
        }
    }

    /// The latest snapshot of a command now, whatever its state (`None` if the status
    /// topic has none): what `courier status` prints. Reads the id's partition of the
    /// status topic to its end from the id's time (as [`Client::wait`] does).
    pub async fn status(&self, id: Uuid) -> Result<Option<OperationSnapshot>, ClientError> {
        let mut latest = None;
        let key = id.to_string();
        crate::follow::read_key_to_end(&self.args, &self.topics.status, key.as_bytes(), StartAt::for_id(id), None, |seen| {
            if seen.key() == Some(key.as_bytes()) {
                latest = OperationSnapshot::decode(seen.value()).ok().flatten();
            }
        })
        .await?;
        Ok(latest)
    }

    /// The dead letters in the DLQ now (up to its end) that `filter` picks: what an
    /// operator looks at before replaying. Records without reason headers are not
    /// dead letters and are skipped.
    pub async fn dead_letters(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetterRecord>, ClientError> {
        Ok(crate::dlq::read_all(&self.args).await?.into_iter().filter(|r| filter.matches(r)).collect())
    }

    /// Sends dead letters back to the commands topic for another try, each exactly as
    /// its caller sent it (attempt reset, marked as replayed so the duplicate check
    /// lets it through although its command already has a failed final event).
    pub async fn replay_dead_letters(&self, letters: &[DeadLetterRecord]) -> Result<(), ClientError> {
        for letter in letters {
            self.publisher.send_once(&letter.replay_record(&self.topics.commands)).await?;
        }
        Ok(())
    }

    /// Stops the result listener this client and its clones share, and waits until it
    /// has let go of the broker: for a clean exit before the broker goes away (the
    /// embedded one of `courier demo`). Waits in progress, and any `submit_and_wait`
    /// after this, end with `ListenerGone`: a closed client is for submitting only.
    pub async fn close(&self) {
        let Some(listener) = self.listener.get() else { return };
        listener.stop.cancel();
        let task = listener.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        self.lock_waiters().clear();
    }

    /// A stream of every result event (all states), from `start`.
    pub async fn subscribe(&self, start: StartAt) -> Result<Pin<Box<dyn Stream<Item = ResultEvent> + Send>>, ClientError> {
        let reader = Reader::open(&self.args, &self.topics.results, start).await?;
        Ok(Box::pin(reader.into_stream(|seen| decode_result(&seen))))
    }

    fn lock_waiters(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, oneshot::Sender<ResultEvent>>> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the one listener every `submit_and_wait` shares, at the results topic's
    /// end, on first use. It runs as long as the process.
    async fn ensure_listener(&self) -> Result<(), ClientError> {
        let listener = self.listener
            .get_or_try_init(|| async {
                let waiters = self.waiters.clone();
                let stop = CancellationToken::new();
                let following =
                    crate::follow::spawn(&self.args, &self.topics.results, StartAt::Now, stop.clone(), move |seen| hand_over(&waiters, &seen)).await?;
                Ok::<_, ClientError>(Listener { stop, task: Mutex::new(Some(following.into_task())) })
            })
            .await?;
        // Closed: nothing would ever answer a wait.
        if listener.stop.is_cancelled() {
            return Err(ClientError::ListenerGone);
        }
        Ok(())
    }
}

/// Gives a final event to whoever waits for its command.
fn hand_over(waiters: &Waiters, seen: &Seen<'_>) {
    let Some(event) = decode_result(seen) else { return };
    if !event.state().is_final() {
        return;
    }
    let waiter = waiters.lock().unwrap_or_else(|p| p.into_inner()).remove(&event.command_id());
    if let Some(tx) = waiter {
        let _ = tx.send(event);
    }
}

fn decode_result(seen: &Seen<'_>) -> Option<ResultEvent> {
    match ResultEvent::decode(seen.key(), seen.value(), &seen.headers()) {
        Ok(ev) => Some(ev),
        Err(e) => {
            tracing::debug!(error = %e, "skipping unreadable result record");
            None
        }
    }
}
