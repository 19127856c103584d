//! What every worker must know beyond its own partitions: which commands were
//! cancelled (the control topic) and which already have a final event (the results
//! topic). Each is followed by a group-less reader on its own thread, assigned to
//! every partition, so the knowledge does not depend on who owns what.
//!
//! A worker waits for both readers to catch up with the topic ends it saw at start
//! before taking commands: that is what makes a cancel sent before a restart, or a
//! result published by a previous owner, count.

use std::collections::{HashSet, VecDeque};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::envelope::{header_names, CancelRequest, HeaderMap, State};
use crate::kafka::{KafkaArgs, KafkaSetupError};

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

    pub fn contains(&self, id: &Uuid) -> bool {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).0.contains(id)
    }
}

/// Where a follower starts in each partition.
#[derive(Debug, Clone, Copy)]
pub enum From {
    /// Everything retained (cancels must all count).
    Beginning,
    /// The last `n` records of each partition (enough to warm a dedupe cache).
    Tail(i64),
}

/// Follows `topic` until `stop`, calling `on_record` for each record. Returns once
/// the follower has caught up with the ends it saw at start (or after `catch_up`).
pub fn follow(
    args: &KafkaArgs,
    topic: &str,
    from: From,
    catch_up: Duration,
    stop: CancellationToken,
    mut on_record: impl FnMut(Option<&[u8]>, Option<&[u8]>, &HeaderMap) + Send + 'static,
) -> Result<(), KafkaSetupError> {
    let mut cfg = args.client_config()?;
    cfg.set("group.id", format!("courier-follower-{}", crate::envelope::new_id()));
    cfg.set("enable.auto.commit", "false");
    cfg.set("isolation.level", "read_committed");
    let consumer: BaseConsumer = cfg.create()?;
    let ends = position(&consumer, topic, from)?;
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let name = topic.to_string();
    std::thread::Builder::new()
        .name(format!("courier-follow-{name}"))
        .spawn(move || {
            let mut behind: Vec<(i32, i64)> = ends;
            let mut ready = Some(ready_tx);
            while !stop.is_cancelled() {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => {
                        crate::supervise::guard(&name, || on_record(m.key(), m.payload(), &HeaderMap::from_kafka(m.headers())));
                        behind.retain(|(p, end)| !(*p == m.partition() && m.offset() + 1 >= *end));
                    }
                    Some(Err(e)) => tracing::warn!(topic = %name, error = %e, "follower error"),
                    None => {}
                }
                if behind.is_empty() {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                }
            }
        })
        .map_err(|e| KafkaSetupError::Thread(e.to_string()))?;
    if ready_rx.recv_timeout(catch_up).is_err() {
        tracing::warn!(%topic, "follower did not catch up in {catch_up:?}; continuing");
    }
    Ok(())
}

/// Assigns every partition at its start offset; returns the partitions that have
/// records to catch up on, with their end offsets.
fn position(consumer: &BaseConsumer, topic: &str, from: From) -> Result<Vec<(i32, i64)>, KafkaSetupError> {
    let partitions = crate::kafka::partitions_of(consumer, topic)?;
    let mut tpl = TopicPartitionList::new();
    let mut behind = Vec::new();
    for p in partitions {
        let (low, high) = crate::kafka::watermarks(consumer, topic, p)?;
        let start = match from {
            From::Beginning => low,
            From::Tail(n) => (high - n).max(low),
        };
        tpl.add_partition_offset(topic, p, Offset::Offset(start))?;
        if high > start {
            behind.push((p, high));
        }
    }
    consumer.assign(&tpl)?;
    Ok(behind)
}

/// Records cancels in `cancelled` and fires the token of a running command.
pub fn on_control(
    cancelled: Arc<RecentIds>,
    running: Arc<Mutex<std::collections::HashMap<Uuid, CancellationToken>>>,
) -> impl FnMut(Option<&[u8]>, Option<&[u8]>, &HeaderMap) + Send + 'static {
    move |_key, value, headers| match CancelRequest::decode(value, headers) {
        Ok(req) => {
            cancelled.insert(req.command_id);
            if let Some(token) = running.lock().unwrap_or_else(|p| p.into_inner()).get(&req.command_id) {
                tracing::info!(id = %req.command_id, "cancelling running command");
                token.cancel();
            }
        }
        Err(e) => tracing::debug!(error = %e, "ignoring unreadable control record"),
    }
}

/// Records the ids of commands that have a final event. Reads headers only (type and
/// subject): every worker reads every result, so this stays cheap.
pub fn on_result(finished: Arc<RecentIds>) -> impl FnMut(Option<&[u8]>, Option<&[u8]>, &HeaderMap) + Send + 'static {
    move |_key, _value, headers| {
        let final_type = headers.get_str(header_names::TYPE).ok().flatten().and_then(State::from_event_type).is_some_and(State::is_final);
        if !final_type {
            return;
        }
        if let Some(id) = headers.get_str(header_names::SUBJECT).ok().flatten().and_then(|s| Uuid::parse_str(s).ok()) {
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
