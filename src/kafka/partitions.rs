//! Partition lists in and out of librdkafka, for the consumers that keep their own
//! offsets (worker, webhook dispatcher, retry relay).

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::{Offset, TopicPartitionList};

use super::TopicPartition;

/// The partitions of a list.
pub(crate) fn partitions_in(list: &TopicPartitionList) -> Vec<TopicPartition> {
    list.elements().iter().map(|e| TopicPartition::new(e.topic(), e.partition())).collect()
}

/// The partitions a consumer holds now (none if it cannot say).
pub(crate) fn assignment<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Vec<TopicPartition> {
    consumer.assignment().map(|a| partitions_in(&a)).unwrap_or_default()
}

/// Pauses (or resumes) fetching these partitions. A failure (a partition revoked
/// meanwhile, say) is only logged: the partition's next owner starts unpaused.
pub(crate) fn set_paused<C: ConsumerContext>(consumer: &BaseConsumer<C>, tps: &[TopicPartition], paused: bool) {
    if tps.is_empty() {
        return;
    }
    let mut list = TopicPartitionList::new();
    for tp in tps {
        list.add_partition(&tp.topic, tp.partition);
    }
    let r = if paused { consumer.pause(&list) } else { consumer.resume(&list) };
    if let Err(e) = r {
        tracing::debug!(error = %e, "tier pause/resume");
    }
}

/// A commit list: each partition at its offset (the next record to read there).
pub(crate) fn offset_list(points: &[(TopicPartition, i64)]) -> KafkaResult<TopicPartitionList> {
    let mut list = TopicPartitionList::new();
    for (tp, offset) in points {
        list.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*offset))?;
    }
    Ok(list)
}

/// A group commit of `points`; with none there is nothing to send.
pub(crate) fn commit_offsets<C: ConsumerContext>(consumer: &BaseConsumer<C>, points: &[(TopicPartition, i64)], mode: CommitMode) -> KafkaResult<()> {
    if points.is_empty() {
        return Ok(());
    }
    consumer.commit(&offset_list(points)?, mode)
}

/// What a commit callback was told did not take: every partition when the commit
/// failed as a whole, else those whose element carries an error (a commit can succeed
/// as a whole and fail for some partitions, during a rebalance say); with the error
/// (the first, when several). `None` when everything took.
pub(crate) fn failed_commits(result: &KafkaResult<()>, list: &TopicPartitionList) -> Option<(Vec<TopicPartition>, KafkaError)> {
    if let Err(e) = result {
        let all = partitions_in(list);
        return (!all.is_empty()).then(|| (all, e.clone()));
    }
    let mut first = None;
    let failed = list
        .elements()
        .iter()
        .filter_map(|e| {
            let error = e.error().err()?;
            first.get_or_insert(error);
            Some(TopicPartition::new(e.topic(), e.partition()))
        })
        .collect();
    first.map(|error| (failed, error))
}
