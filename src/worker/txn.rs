//! Exactly-once mode: result events and consumed offsets in one Kafka transaction.
//!
//! The rule that makes it exact: **a record's output and the offset that passes it
//! are committed in the same transaction.** Outputs are therefore not produced when a
//! handler finishes; they wait in the [`Outbox`] under their record's offset. Every
//! cycle, the consumer thread takes the ledger's commit points, and produces exactly
//! the outputs of records below them, sends those offsets with the consumer's group
//! metadata, and commits. Outputs of records finished above a commit point (completion
//! is out of order) wait for a later cycle. A crash aborts the open transaction:
//! neither its events nor its offsets exist, and the next owner redoes the records.
//!
//! Zombie fencing relies on the group generation carried in the group metadata
//! (KIP-447); a worker restarted with the same `--worker-id` reuses its
//! `transactional.id`, which also aborts its predecessor's open transaction at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::producer::{FutureProducer, Producer};

use crate::kafka::{offset_list, TopicPartition};
use crate::publish::Outgoing;

const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// Advisory events (started, progress) kept at most, between cycles.
const MAX_ADVISORY: usize = 10_000;

/// Outputs waiting for the transaction that commits their records' offsets.
#[derive(Default)]
pub struct Outbox {
    finals: Mutex<HashMap<TopicPartition, BTreeMap<i64, Vec<Outgoing>>>>,
    advisory: Mutex<Vec<Outgoing>>,
}

/// Why a transaction cycle failed.
#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    #[error("transaction aborted, will retry: {0}")]
    Aborted(rdkafka::error::KafkaError),
    #[error("producer fenced or fatally failed: {0}")]
    Fatal(rdkafka::error::KafkaError),
}

impl Outbox {
    /// Records the outputs of a finished record.
    pub fn put(&self, tp: &TopicPartition, offset: i64, outs: Vec<Outgoing>) {
        let mut finals = self.finals.lock().unwrap_or_else(|p| p.into_inner());
        finals.entry(tp.clone()).or_default().entry(offset).or_default().extend(outs);
    }

    /// Advisory events ride along with the next transaction (dropped beyond a bound).
    pub fn advise(&self, out: Outgoing) {
        let mut advisory = self.advisory.lock().unwrap_or_else(|p| p.into_inner());
        if advisory.len() < MAX_ADVISORY {
            advisory.push(out);
        }
    }

    /// Takes the outputs of records below each commit point.
    fn take_below(&self, commits: &[(TopicPartition, i64)]) -> Vec<(TopicPartition, i64, Vec<Outgoing>)> {
        let mut finals = self.finals.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (tp, point) in commits {
            let Some(by_offset) = finals.get_mut(tp) else { continue };
            let above = by_offset.split_off(point);
            for (offset, outs) in std::mem::replace(by_offset, above) {
                out.push((tp.clone(), offset, outs));
            }
        }
        out
    }

    /// Puts outputs back after an aborted transaction.
    fn restore(&self, taken: Vec<(TopicPartition, i64, Vec<Outgoing>)>) {
        for (tp, offset, outs) in taken {
            self.put(&tp, offset, outs);
        }
    }

    /// Forgets outputs of partitions that were released unfinished.
    pub fn forget(&self, tps: &[TopicPartition]) {
        let mut finals = self.finals.lock().unwrap_or_else(|p| p.into_inner());
        for tp in tps {
            finals.remove(tp);
        }
    }

    fn take_advisory(&self) -> Vec<Outgoing> {
        std::mem::take(&mut *self.advisory.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// One transaction: outputs below the commit points, the offsets, commit. On an
/// abortable error everything is put back for the next cycle.
pub fn cycle<C: ConsumerContext>(
    producer: &FutureProducer,
    consumer: &BaseConsumer<C>,
    outbox: &Outbox,
    commits: &[(TopicPartition, i64)],
) -> Result<(), TxnError> {
    let advisory = outbox.take_advisory();
    if commits.is_empty() && advisory.is_empty() {
        return Ok(());
    }
    let taken = outbox.take_below(commits);
    let result = produce_and_commit(producer, consumer, &advisory, &taken, commits);
    if let Err(e) = &result {
        tracing::warn!(error = %e, "transaction failed");
        outbox.restore(taken);
        if matches!(e, TxnError::Aborted(_)) {
            if let Err(abort) = producer.abort_transaction(TXN_TIMEOUT) {
                tracing::error!(error = %abort, "abort_transaction failed");
            }
        }
    }
    result
}

fn produce_and_commit<C: ConsumerContext>(
    producer: &FutureProducer,
    consumer: &BaseConsumer<C>,
    advisory: &[Outgoing],
    taken: &[(TopicPartition, i64, Vec<Outgoing>)],
    commits: &[(TopicPartition, i64)],
) -> Result<(), TxnError> {
    producer.begin_transaction().map_err(classify)?;
    let outs = advisory.iter().chain(taken.iter().flat_map(|(_, _, outs)| outs.iter()));
    for out in outs {
        enqueue(producer, out).map_err(classify)?;
    }
    if !commits.is_empty() {
        let tpl = offset_list(commits).map_err(classify)?;
        let metadata = consumer
            .group_metadata()
            .ok_or(TxnError::Aborted(rdkafka::error::KafkaError::MessageConsumption(rdkafka::types::RDKafkaErrorCode::State)))?;
        producer.send_offsets_to_transaction(&tpl, &metadata, TXN_TIMEOUT).map_err(classify)?;
    }
    await_deliveries(producer, TXN_TIMEOUT);
    producer.commit_transaction(TXN_TIMEOUT).map_err(classify)
}

/// Waits, in steps of a millisecond, until the producer has nothing in flight (or
/// `timeout` passes), so `commit_transaction` finds its flush already done.
///
/// rdkafka's `commit_transaction` flushes first, and its flush, when records are
/// still in flight, polls the producer's event queue for up to 100 ms at a time;
/// a `FutureProducer`'s own thread serves that queue, so the poll waits out the
/// full 100 ms. Every transaction cost at least that: at a low rate an exactly-once
/// round trip took 160 to 180 ms where the broker needed under 15.
fn await_deliveries(producer: &FutureProducer, timeout: Duration) {
    use rdkafka::producer::Producer as _;
    let until = std::time::Instant::now() + timeout;
    while producer.in_flight_count() > 0 && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Enqueues without waiting; a full queue is drained by polling, then retried.
fn enqueue(producer: &FutureProducer, out: &Outgoing) -> Result<(), rdkafka::error::KafkaError> {
    loop {
        match producer.send_result(crate::publish::future_record(out)) {
            Ok(_delivery) => return Ok(()),
            Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(50));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

fn classify(e: rdkafka::error::KafkaError) -> TxnError {
    match &e {
        rdkafka::error::KafkaError::Transaction(t) if t.is_fatal() => TxnError::Fatal(e),
        _ => TxnError::Aborted(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::HeaderMap;

    fn out(n: i64) -> Outgoing {
        Outgoing::new("r", n.to_string(), vec![], HeaderMap::new())
    }

    #[test]
    fn only_outputs_below_the_commit_point_are_taken() {
        let ob = Outbox::default();
        let tp = TopicPartition::new("c", 0);
        for o in [3, 4, 7] {
            ob.put(&tp, o, vec![out(o)]);
        }
        let taken = ob.take_below(&[(tp.clone(), 5)]);
        assert_eq!(taken.iter().map(|t| t.1).collect::<Vec<_>>(), vec![3, 4]);
        ob.restore(taken);
        assert_eq!(ob.take_below(&[(tp, 8)]).len(), 3);
    }
}
