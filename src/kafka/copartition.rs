//! The commands and results topics are co-partitioned: a command's result events go
//! to the results partition numbered like the partition the command was read from,
//! so a worker checks for duplicates by reading only the results partitions of the
//! commands partitions it owns. That needs the two topics to have as many partitions;
//! `courier topics create` makes them so, and a worker refuses to start without it
//! ([`crate::topics::check_co_partitioned`]).

use rdkafka::consumer::BaseConsumer;

use super::{partitions_of, KafkaArgs, KafkaSetupError};

/// The commands and results topics' partition counts, when they differ.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{commands} has {commands_partitions} partitions and {results} has {results_partitions}: they must have as many (a command's results go to the results partition numbered like the command's). {}", self.remedy())]
pub struct PartitionMismatch {
    pub commands: String,
    pub commands_partitions: usize,
    pub results: String,
    pub results_partitions: usize,
}

impl PartitionMismatch {
    /// What an operator can do: results partitions can be added; they cannot be taken
    /// away, and adding commands partitions moves keys to other partitions.
    fn remedy(&self) -> String {
        if self.results_partitions < self.commands_partitions {
            format!("Run `courier topics create`, which adds the missing partitions to {}", self.results)
        } else {
            format!(
                "Raise {} to {} partitions (kafka-topics --alter; keys then move to other partitions, so let the topic drain first), or recreate {} with {}",
                self.commands, self.results_partitions, self.results, self.commands_partitions
            )
        }
    }
}

/// How many partitions `topic` has. Blocking (a metadata request).
pub fn partition_count(kafka: &KafkaArgs, topic: &str) -> Result<usize, KafkaSetupError> {
    let consumer: BaseConsumer = kafka.client_config()?.create()?;
    // Partition ids are 0..n; a partition without a leader right now may be left out
    // of the metadata, so n is the highest id seen plus one.
    let highest = partitions_of(&consumer, topic)?.into_iter().max().unwrap_or(-1);
    Ok(usize::try_from(highest + 1).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mismatch(commands_partitions: usize, results_partitions: usize) -> PartitionMismatch {
        PartitionMismatch { commands: "p.commands".into(), commands_partitions, results: "p.results".into(), results_partitions }
    }

    #[test]
    fn the_remedy_depends_on_which_topic_has_more() {
        let fewer = mismatch(6, 3).to_string();
        assert!(fewer.contains("p.commands has 6 partitions and p.results has 3") && fewer.contains("courier topics create"), "{fewer}");
        let more = mismatch(6, 12).to_string();
        assert!(more.contains("Raise p.commands to 12") && more.contains("recreate p.results with 6"), "{more}");
    }
}
