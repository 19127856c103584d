//! What a worker's consumer thread and its lane tasks share, and the record they
//! pass between them.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::config::WorkerConfig;
use super::followers::RecentIds;
use super::sink::Sink;
use crate::envelope::HeaderMap;
use crate::metrics::Metrics;
use crate::kafka::TopicPartition;
use crate::offsets::Ledger;
use crate::publish::{Outgoing, Publisher};
use crate::router::Router;
use crate::topics::Topics;

/// A consumed record, owned, with the token that stops its processing.
#[derive(Debug)]
pub(crate) struct Record {
    pub tp: TopicPartition,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: HeaderMap,
    /// Fires when the partition is revoked or the worker stops.
    pub stop: CancellationToken,
    /// Set when copying the record out of librdkafka failed (a panic there): the
    /// record is dead-lettered with this message rather than lost.
    pub fault: Option<String>,
}

impl Record {
    /// Its size as the broker counts it: key, value and headers.
    pub fn wire_size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len) + self.value.as_ref().map_or(0, Vec::len) + self.headers.wire_size()
    }
}

/// A running worker's state, shared by its consumer thread, its lane tasks and the
/// publisher's polling thread, where acknowledged records settle (one per worker; a
/// command's own view of it is the handler's `Context`).
pub(crate) struct WorkerState {
    pub config: WorkerConfig,
    pub router: Router,
    pub publisher: Publisher,
    /// Where outputs go: direct (at-least-once) or the transactional outbox.
    pub sink: Sink,
    pub topics: Topics,
    /// The largest record the producer takes (its `message.max.bytes`): outputs are
    /// checked against it before they are sent.
    pub output_limit: usize,
    pub metrics: Arc<Metrics>,
    pub worker_id: String,
    pub source: String,
    pub ledger: Mutex<Ledger<Record>>,
    /// Signalled whenever a record finishes or is abandoned.
    pub changed: Condvar,
    /// Commands with a final event: this worker's own, and those read from the
    /// results partitions of the commands partitions it was assigned.
    pub finished: Arc<RecentIds>,
    /// Commands a cancel was requested for (from the control topic).
    pub cancelled: Arc<RecentIds>,
    /// Some route runs in no key order (`Route::unordered`): the consumer thread
    /// then reads each record's type before choosing its lane.
    pub any_unordered: bool,
    /// Commands handed off to their handlers (from the control topic and own).
    pub deferrals: Arc<super::registry::Deferrals>,
    /// Cancel tokens of commands running on this worker, by id.
    pub running: Arc<Mutex<HashMap<Uuid, CancellationToken>>>,
    /// Fired by the first assignment: the worker is in its group and takes commands.
    pub joined: CancellationToken,
}

impl WorkerState {
    /// The retry policy of `command_type`: its route's own, else the worker's.
    pub fn retry_policy(&self, command_type: &str) -> &crate::retry::RetryPolicy {
        self.router.get(command_type).map_or(&self.config.retry, |r| r.retry_policy(&self.config.retry))
    }

    /// Every retry tier topic a command may be sent to: the worker's and its routes'.
    pub fn tier_topics(&self) -> Vec<String> {
        let mut names = self.config.retry.tier_topics(&self.topics);
        for (_, route) in self.router.routes() {
            names.extend(route.retry.iter().flat_map(|p| p.tier_topics(&self.topics)));
        }
        names.sort();
        names.dedup();
        names
    }

    /// A token that fires when a cancel for this command arrives.
    pub fn register_running(&self, id: Uuid) -> CancellationToken {
        let token = CancellationToken::new();
        self.running.lock().unwrap_or_else(|p| p.into_inner()).insert(id, token.clone());
        if self.cancelled.contains(&id) {
            token.cancel();
        }
        token
    }

    pub fn unregister_running(&self, id: &Uuid) {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// Puts the result events among `outs` in the results partition numbered like
    /// `partition`, the commands partition their command was read from (see
    /// [`crate::topics::check_co_partitioned`]): that partition's owner, and only it,
    /// reads them for its duplicate check. Other outputs keep their placement.
    pub fn co_partition(&self, outs: &mut [Outgoing], partition: i32) {
        for out in outs.iter_mut().filter(|o| o.topic == self.topics.results) {
            out.partition = Some(partition);
        }
    }

    pub fn lock_ledger(&self) -> MutexGuard<'_, Ledger<Record>> {
        self.ledger.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
