//! Topic names, and creating topics with the right settings.
//!
//! Courier never relies on broker auto-create: partitions, compaction and retention
//! matter (the status topic must be compacted; the DLQ must keep records long enough
//! to be looked at), so `courier topics create` makes them explicitly.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::kafka::{KafkaArgs, KafkaSetupError};

/// The names of all of a deployment's topics, derived from one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub commands: String,
    pub results: String,
    pub status: String,
    pub dlq: String,
    pub control: String,
    pub retry_prefix: String,
}

impl Topics {
    pub fn new(prefix: &str) -> Self {
        Topics {
            commands: format!("{prefix}.commands"),
            results: format!("{prefix}.results"),
            status: format!("{prefix}.status"),
            dlq: format!("{prefix}.commands.dlq"),
            control: format!("{prefix}.control"),
            retry_prefix: format!("{prefix}.commands.retry."),
        }
    }
}

/// How to create the topics.
#[derive(Debug, Clone, clap::Args)]
pub struct TopicSpec {
    /// Partitions of the commands and results topics: the most workers that can share
    /// the load.
    #[arg(long, env = "COURIER_PARTITIONS", default_value_t = 6)]
    pub partitions: i32,
    #[arg(long, env = "COURIER_REPLICATION", default_value_t = 1)]
    pub replication: i32,
    /// Retention of commands and results, in hours.
    #[arg(long, default_value_t = 168)]
    pub retention_hours: u64,
    /// Retry delay tiers to create topics for (match the workers' --retry-tiers).
    #[arg(long = "retry-tiers", value_delimiter = ',', value_parser = crate::duration::parse_duration, default_value = "1s,10s,60s")]
    pub retry_tiers: Vec<Duration>,
}

impl Default for TopicSpec {
    fn default() -> Self {
        TopicSpec { partitions: 6, replication: 1, retention_hours: 168, retry_tiers: crate::retry::default_tiers() }
    }
}

/// Creates every Courier topic; topics that already exist are left as they are.
/// Returns the names that were newly created.
pub async fn create_topics(args: &KafkaArgs, spec: &TopicSpec) -> Result<Vec<String>, KafkaSetupError> {
    let admin: AdminClient<DefaultClientContext> = args.client_config()?.create()?;
    let topics = args.topics();
    let retention = (spec.retention_hours * 3_600_000).to_string();
    let dlq_retention = (30u64 * 24 * 3_600_000).to_string();
    let repl = || TopicReplication::Fixed(spec.replication);
    let mut wanted = vec![
        NewTopic::new(&topics.commands, spec.partitions, repl()).set("retention.ms", &retention),
        NewTopic::new(&topics.results, spec.partitions, repl()).set("retention.ms", &retention),
        NewTopic::new(&topics.status, spec.partitions, repl()).set("cleanup.policy", "compact"),
        NewTopic::new(&topics.dlq, spec.partitions, repl()).set("retention.ms", &dlq_retention),
        NewTopic::new(&topics.control, spec.partitions, repl()).set("retention.ms", &retention),
    ];
    let tier_names: Vec<String> = spec.retry_tiers.iter().map(|d| crate::retry::tier_topic(&topics, *d)).collect();
    for name in &tier_names {
        wanted.push(NewTopic::new(name, spec.partitions, repl()).set("retention.ms", &retention));
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let mut created = Vec::new();
    for outcome in admin.create_topics(&wanted, &opts).await? {
        match outcome {
            Ok(name) => created.push(name),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                tracing::error!(topic = %name, error = %code, "topic creation failed");
                return Err(KafkaSetupError::Client(rdkafka::error::KafkaError::AdminOp(code)));
            }
        }
    }
    tracing::info!(created = ?created, "topics ready");
    Ok(created)
}
