//! Partition lists in and out of librdkafka, for the consumers that keep their own
//! offsets (worker, webhook dispatcher, retry relay).

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::TopicPartitionList;

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
