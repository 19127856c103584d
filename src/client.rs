//! The caller's side: submit commands, wait for their outcome, watch results.
//!
//! Waiting needs no reply topic per caller and no in-memory pending map on the
//! worker side: results are keyed events on one shared topic, and the client reads
//! them. One background listener per [`Client`] serves every `submit_and_wait`; it
//! starts at the results topic's end *before* the first command is sent, so no
//! result can slip past it.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{oneshot, OnceCell};
use uuid::Uuid;

use crate::envelope::{Command, HeaderMap, NewCommand, OperationSnapshot, ResultEvent};
use crate::kafka::{set_default, KafkaArgs, KafkaSetupError};
use crate::publish::{Outgoing, PublishError, Publisher};
use crate::topics::Topics;

/// What can go wrong for a caller.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Setup(#[from] KafkaSetupError),
    #[error("submit failed: {0}")]
    Publish(#[from] PublishError),
    #[error("no final result for command {id} within {timeout:?}")]
    Timeout { id: Uuid, timeout: Duration },
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("result listener stopped")]
    ListenerGone,
    #[error(transparent)]
    Follow(#[from] crate::follow::FollowError),
}

/// Where a subscription starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// Only events published from now on.
    Now,
    /// Everything the results topic still retains.
    Beginning,
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
    listener: Arc<OnceCell<()>>,
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
    /// operation, so reading it from the beginning finds one that already ended, and
    /// following it on finds one that ends later.
    pub async fn wait(&self, id: Uuid, timeout: Duration) -> Result<OperationSnapshot, ClientError> {
        let consumer = self.consumer_at(&self.topics.status, StartAt::Beginning).await?;
        let key = id.to_string();
        let found = async {
            loop {
                match consumer.recv().await {
                    Ok(msg) if msg.key() == Some(key.as_bytes()) => {
                        if let Ok(Some(s)) = OperationSnapshot::decode(msg.payload()) {
                            if s.state.is_final() {
                                return s;
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "status consumer error"),
                }
            }
        };
        tokio::time::timeout(timeout, found).await.map_err(|_| ClientError::Timeout { id, timeout })
    }

    /// The latest snapshot of a command now, whatever its state (`None` if the status
    /// topic has none): what `courier status` prints. Reads the compacted status topic
    /// to its end, so it costs a scan; use [`Client::wait`] to follow one command.
    pub async fn status(&self, id: Uuid) -> Result<Option<OperationSnapshot>, ClientError> {
        let latest: Arc<Mutex<Option<OperationSnapshot>>> = Arc::default();
        let sink = latest.clone();
        let key = id.to_string();
        let stop = tokio_util::sync::CancellationToken::new();
        let _stop_reader = stop.clone().drop_guard();
        crate::follow::follow(&self.args, &self.topics.status, stop, move |seen| {
            if seen.key == Some(key.as_bytes()) {
                let snapshot = OperationSnapshot::decode(seen.value).ok().flatten();
                *sink.lock().unwrap_or_else(|p| p.into_inner()) = snapshot;
            }
        })
        .await?;
        let found = latest.lock().unwrap_or_else(|p| p.into_inner()).take();
        Ok(found)
    }

    /// A stream of every result event (all states), from `start`.
    pub async fn subscribe(&self, start: StartAt) -> Result<Pin<Box<dyn Stream<Item = ResultEvent> + Send>>, ClientError> {
        let consumer = self.results_consumer(start).await?;
        let stream = futures::stream::unfold(consumer, |consumer| async move {
            loop {
                match consumer.recv().await {
                    Ok(msg) => {
                        if let Some(ev) = decode_result(&msg) {
                            return Some((ev, consumer));
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "results consumer error"),
                }
            }
        });
        Ok(Box::pin(stream))
    }

    fn lock_waiters(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, oneshot::Sender<ResultEvent>>> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn ensure_listener(&self) -> Result<(), ClientError> {
        self.listener
            .get_or_try_init(|| async {
                let consumer = self.results_consumer(StartAt::Now).await?;
                let waiters = self.waiters.clone();
                tokio::spawn(listen(consumer, waiters));
                Ok::<(), ClientError>(())
            })
            .await?;
        Ok(())
    }

    /// A consumer assigned to every partition of the results topic, positioned at
    /// `start` before this returns (no group, no commits: readers are independent).
    async fn results_consumer(&self, start: StartAt) -> Result<StreamConsumer, ClientError> {
        self.consumer_at(&self.topics.results, start).await
    }

    /// Like [`Client::results_consumer`], for any topic.
    async fn consumer_at(&self, topic: &str, start: StartAt) -> Result<StreamConsumer, ClientError> {
        let mut cfg = self.args.client_config()?;
        cfg.set("group.id", format!("courier-client-{}", crate::envelope::new_id()));
        cfg.set("enable.auto.commit", "false");
        set_default(&mut cfg, "isolation.level", "read_committed");
        let consumer: StreamConsumer = cfg.create()?;
        let topic = topic.to_string();
        let consumer = tokio::task::spawn_blocking(move || position(consumer, &topic, start))
            .await
            .map_err(|_| ClientError::ListenerGone)??;
        Ok(consumer)
    }
}

/// Assigns all partitions at the current end (or beginning), resolved to concrete
/// offsets now, so that later events are never missed.
fn position(consumer: StreamConsumer, topic: &str, start: StartAt) -> Result<StreamConsumer, ClientError> {
    let partitions = crate::kafka::partitions_of(&consumer, topic)?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        let offset = match start {
            StartAt::Beginning => Offset::Beginning,
            StartAt::Now => Offset::Offset(crate::kafka::watermarks(&consumer, topic, p)?.1),
        };
        tpl.add_partition_offset(topic, p, offset)?;
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

async fn listen(consumer: StreamConsumer, waiters: Waiters) {
    let mut stream = consumer.stream();
    while let Some(next) = stream.next().await {
        let msg = match next {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "results listener error");
                continue;
            }
        };
        let Some(event) = decode_result(&msg) else { continue };
        if !event.state().is_final() {
            continue;
        }
        let waiter = waiters.lock().unwrap_or_else(|p| p.into_inner()).remove(&event.command_id());
        if let Some(tx) = waiter {
            let _ = tx.send(event);
        }
    }
}

fn decode_result<M: Message>(msg: &M) -> Option<ResultEvent>
where
    M::Headers: crate::envelope::KafkaHeaders,
{
    let headers = HeaderMap::from_kafka(msg.headers());
    match ResultEvent::decode(msg.key(), msg.payload(), &headers) {
        Ok(ev) => Some(ev),
        Err(e) => {
            tracing::debug!(error = %e, "skipping unreadable result record");
            None
        }
    }
}
