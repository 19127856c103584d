//! Turning accepted requests into commands, in the one order that cannot lose an
//! operation: the `queued` snapshot first (acknowledged), then the command.
//!
//! Written the other way round, a worker could finish the command before its
//! operation existed, or a gateway crash between the two could leave a command
//! running that no `GET /v1/operations/{id}` knows about. In this order the worst case
//! is an operation with no command, which is marked `failed` (`submit_failed`) when
//! the command's send fails.

use std::sync::Arc;

use axum::http::StatusCode;
use chrono::SubsecRound;
use uuid::Uuid;

use crate::view::idempotency::Claim;
use crate::view::Store;
use super::ApiError;
use crate::envelope::{Command, ErrorInfo, NewCommand, OperationSnapshot, State, Timing};
use crate::publish::{Outgoing, Publisher};
use crate::Client;

/// What the caller is told about an accepted request.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The operation as accepted (`queued`).
    pub snapshot: OperationSnapshot,
    /// `true` when this is an idempotent replay of an earlier request.
    pub replayed: bool,
}

/// A validated command with the hash of the request it came from.
pub struct Validated {
    pub command: NewCommand,
    pub request_hash: String,
}

/// Records operations and sends their commands.
pub struct Submitter {
    client: Client,
    publisher: Publisher,
    store: Arc<Store>,
    status_topic: String,
    source: String,
    /// In a group: where an idempotency key's operation lives, and which operations
    /// this gateway's view holds.
    cluster: Option<Arc<super::cluster::Cluster>>,
}

impl Submitter {
    pub fn new(client: Client, publisher: Publisher, store: Arc<Store>, source: String, cluster: Option<Arc<super::cluster::Cluster>>) -> Self {
        let status_topic = client.topics().status.clone();
        Submitter { client, publisher, store, status_topic, source, cluster }
    }

    /// The client commands and cancels are sent with (and point lookups made).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Accepts one command, honouring an `Idempotency-Key` if the caller sent one.
    pub async fn accept(&self, mut one: Validated, idempotency_key: Option<String>) -> Result<Accepted, ApiError> {
        let Some(key) = idempotency_key else {
            return Ok(Accepted { snapshot: self.submit(vec![one], None).await?.remove(0), replayed: false });
        };
        let slot = crate::view::idempotency::scoped_key(one.command.tenant.as_deref(), &key);
        match self.store.claim_key(&slot, &one.request_hash) {
            Claim::Replay(first) => Ok(Accepted { snapshot: *first, replayed: true }),
            Claim::Mismatch { id } => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                format!("Idempotency-Key {key:?} was already used with a different request (operations/{id})"),
            )),
            Claim::InProgress => Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_in_use",
                format!("a request with Idempotency-Key {key:?} is being processed; retry shortly"),
            )),
            Claim::Fresh => {
                let _release = ReleaseOnDrop { store: &self.store, key: &slot };
                one.command.idempotency_key = Some(key.clone());
                // In a group the key's owner answers for it (`forward.rs`): the
                // operation goes in the key's partition, which that owner reads.
                let id = self.cluster.as_ref().map(|c| c.id_in(c.partition_of(slot.as_bytes())));
                Ok(Accepted { snapshot: self.record(vec![one], None, id).await?.remove(0), replayed: false })
            }
        }
    }

    /// Records and sends commands (all in `batch_id`, if given); returns their `queued`
    /// snapshots in input order.
    pub async fn submit(&self, items: Vec<Validated>, batch_id: Option<String>) -> Result<Vec<OperationSnapshot>, ApiError> {
        self.record(items, batch_id, None).await
    }

    /// [`Submitter::submit`], the one command getting the id `id` if given.
    async fn record(&self, items: Vec<Validated>, batch_id: Option<String>, id: Option<Uuid>) -> Result<Vec<OperationSnapshot>, ApiError> {
        let (commands, snapshots): (Vec<Command>, Vec<OperationSnapshot>) = items
            .into_iter()
            .map(|mut v| {
                v.command.batch_id = batch_id.clone();
                let mut command = v.command.into_command(&self.source);
                if let Some(id) = id {
                    command.id = id;
                }
                // ce_time travels with millisecond precision: stamp it that way, so the
                // gateway's snapshot and the worker's agree on `created` exactly.
                command.time = command.time.map(|t| t.trunc_subsecs(3));
                command.request_hash = Some(v.request_hash.clone());
                let snapshot = queued_snapshot(&command, v.request_hash);
                (command, snapshot)
            })
            .unzip();
        let recorded = futures::future::join_all(snapshots.iter().map(|s| self.publish_snapshot(s))).await;
        if let Some(Err(e)) = recorded.into_iter().find(Result::is_err) {
            tracing::error!(error = %e, "could not record operations on the status topic");
            self.abandon(snapshots, "the operation could not be recorded").await;
            return Err(ApiError::unavailable(format!("could not record the operation: {e}")));
        }
        for s in &snapshots {
            self.keep(s.clone());
        }
        let sent = futures::future::join_all(commands.into_iter().map(|c| self.client.submit_command(c))).await;
        let unsent: Vec<OperationSnapshot> =
            snapshots.iter().zip(&sent).filter(|(_, r)| r.is_err()).map(|(s, _)| s.clone()).collect();
        if let Some(Err(e)) = sent.iter().find(|r| r.is_err()) {
            tracing::error!(error = %e, unsent = unsent.len(), "could not send commands");
            let message = format!("{} of {} command(s) could not be sent: {e}", unsent.len(), snapshots.len());
            self.abandon(unsent, "the command could not be sent").await;
            return Err(ApiError::unavailable(message));
        }
        tracing::debug!(count = snapshots.len(), "commands accepted");
        Ok(snapshots)
    }

    /// Where this gateway's records say they come from.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn topics(&self) -> &crate::topics::Topics {
        self.client.topics()
    }

    /// Sends `outs` and waits until the broker has every one: `503` otherwise.
    pub async fn publish(&self, outs: Vec<Outgoing>) -> Result<(), ApiError> {
        let never = tokio_util::sync::CancellationToken::new();
        match tokio::time::timeout(std::time::Duration::from_secs(30), self.publisher.send_all_acked(outs, &never)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ApiError::unavailable(format!("could not publish to Kafka: {e}"))),
            Err(_) => Err(ApiError::unavailable("Kafka did not acknowledge in 30s")),
        }
    }

    /// Asks workers to cancel an operation.
    pub async fn cancel(&self, id: Uuid) -> Result<(), ApiError> {
        self.client
            .cancel(id, Some("cancelled through the HTTP gateway".into()))
            .await
            .map_err(|e| ApiError::unavailable(format!("could not send the cancel request: {e}")))
    }

    /// Takes a snapshot this gateway wrote into its view, unless another gateway of
    /// its group holds the operation's partition (that one reads it from the topic).
    fn keep(&self, s: OperationSnapshot) {
        let elsewhere = self.cluster.as_ref().is_some_and(|c| c.owner(c.partition_of_id(&s.command_id)) != super::cluster::Owner::Me);
        if !elsewhere {
            self.store.apply(s);
        }
    }

    async fn publish_snapshot(&self, s: &OperationSnapshot) -> Result<(), crate::publish::PublishError> {
        let (key, value, headers) = s.encode(&self.source);
        let out = Outgoing::new(self.status_topic.clone(), key, value, headers);
        self.publisher.send_once(&out).await
    }

    /// Marks operations whose command will never run as `failed` (best effort: if the
    /// status topic is unreachable too, they stay `queued` until retention).
    async fn abandon(&self, snapshots: Vec<OperationSnapshot>, why: &str) {
        let failed: Vec<OperationSnapshot> = snapshots
            .into_iter()
            .map(|mut s| {
                s.state = State::Failed;
                s.error = Some(ErrorInfo { code: "submit_failed".into(), message: why.into(), retryable: true });
                s.updated = chrono::Utc::now();
                s
            })
            .collect();
        let _ = futures::future::join_all(failed.iter().map(|s| self.publish_snapshot(s))).await;
        for s in failed {
            self.keep(s);
        }
    }
}

/// The snapshot that creates an operation. Its id, times and metadata are exactly the
/// command's, so the worker's later snapshots describe the same operation.
fn queued_snapshot(cmd: &Command, request_hash: String) -> OperationSnapshot {
    let created = cmd.time.unwrap_or_else(chrono::Utc::now);
    let key = crate::envelope::bounds::KeyEcho::of(cmd.key.as_deref());
    OperationSnapshot {
        command_id: cmd.id,
        command_type: cmd.command_type.clone(),
        state: State::Queued,
        key: key.text,
        key_base64: key.base64,
        attempt: cmd.attempt,
        progress: None,
        result: None,
        error: None,
        timing: Timing::default(),
        created,
        updated: created,
        callback_url: cmd.callback_url.clone(),
        idempotency_key: cmd.idempotency_key.clone(),
        request_hash: Some(request_hash),
        batch_id: cmd.batch_id.clone(),
        tenant: cmd.tenant.clone(),
        worker: None,
        deferred: None,
    }
}

/// Frees a claimed idempotency key if the request ends without recording its
/// operation (an error, or the client hanging up mid-request).
struct ReleaseOnDrop<'a> {
    store: &'a Store,
    key: &'a str,
}

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        self.store.release_key(self.key);
    }
}
