//! Topic names, and creating topics with the right settings.
//!
//! Courier never relies on broker auto-create: partitions, compaction and retention
//! matter (the status topic must be compacted; the DLQ must keep records long enough
//! to be looked at), so `courier topics create` makes them explicitly.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication, TopicResult};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::kafka::{partition_count, KafkaArgs, KafkaSetupError, PartitionMismatch};

/// The names of all of a deployment's topics, derived from one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    pub commands: String,
    pub results: String,
    pub status: String,
    pub dlq: String,
    pub control: String,
    pub retry_prefix: String,
    /// Webhook deliveries waiting for their next attempt: `<prefix>.webhooks.retry.<delay>`.
    pub webhooks_retry_prefix: String,
    /// Webhook deliveries given up on.
    pub webhooks_dlq: String,
    /// Log of webhook delivery attempts, keyed by command id.
    pub webhooks_log: String,
    /// Webhook endpoint state (disabled URLs), compacted, keyed by URL.
    pub webhooks_endpoints: String,
}

impl KafkaArgs {
    /// The topics of the deployment these args name, by their prefix. Defined here
    /// rather than in `kafka`: connection settings know nothing of topic names.
    pub fn topics(&self) -> Topics {
        Topics::new(&self.prefix)
    }
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
            webhooks_retry_prefix: format!("{prefix}.webhooks.retry."),
            webhooks_dlq: format!("{prefix}.webhooks.dlq"),
            webhooks_log: format!("{prefix}.webhooks.log"),
            webhooks_endpoints: format!("{prefix}.webhooks.endpoints"),
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
    #[arg(long = "retry-tiers", value_delimiter = ',', value_parser = crate::duration::parse_duration, default_value = DEFAULT_RETRY_TIERS)]
    pub retry_tiers: Vec<Duration>,
    /// Webhook retry schedule to create delay topics for (match `courier webhooks`).
    #[arg(long = "webhook-schedule", value_delimiter = ',', value_parser = crate::duration::parse_duration, default_value = DEFAULT_WEBHOOK_SCHEDULE)]
    pub webhook_schedule: Vec<Duration>,
}

/// [`default_retry_tiers`] as the flags of `topics create` and `worker` spell their
/// default, so the two cannot disagree.
pub const DEFAULT_RETRY_TIERS: &str = "1s,10s,60s";

/// The command retry delay tiers: attempt n waits in tier n-1.
pub fn default_retry_tiers() -> Vec<Duration> {
    [1, 10, 60].into_iter().map(Duration::from_secs).collect()
}

/// The tier topic for command retries after `delay`: `<prefix>.commands.retry.<delay>`.
pub fn retry_tier_topic(topics: &Topics, delay: Duration) -> String {
    format!("{}{}", topics.retry_prefix, crate::duration::format_duration(delay))
}

/// [`default_webhook_schedule`] as the flags of `topics create`, `webhooks run` and
/// `webhooks replay` spell their default, so the three cannot disagree.
pub const DEFAULT_WEBHOOK_SCHEDULE: &str = "5s,5m,30m,2h,5h,10h,10h";

/// Svix's schedule: the delays before each webhook retry.
pub fn default_webhook_schedule() -> Vec<Duration> {
    [5, 300, 1800, 7200, 18000, 36000, 36000].into_iter().map(Duration::from_secs).collect()
}

/// The delay topic for webhook retries after `delay`.
pub fn webhook_tier_topic(topics: &Topics, delay: Duration) -> String {
    format!("{}{}", topics.webhooks_retry_prefix, crate::duration::format_duration(delay))
}

/// Every topic a deployment needs, with the delays the spec names.
pub fn all_topic_names(topics: &Topics, spec: &TopicSpec) -> Vec<String> {
    let mut names = vec![
        topics.commands.clone(),
        topics.results.clone(),
        topics.status.clone(),
        topics.dlq.clone(),
        topics.control.clone(),
        topics.webhooks_dlq.clone(),
        topics.webhooks_log.clone(),
        topics.webhooks_endpoints.clone(),
    ];
    names.extend(spec.retry_tiers.iter().map(|d| retry_tier_topic(topics, *d)));
    names.extend(spec.webhook_schedule.iter().map(|d| webhook_tier_topic(topics, *d)));
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

impl Default for TopicSpec {
    fn default() -> Self {
        TopicSpec {
            partitions: 6,
            replication: 1,
            retention_hours: 168,
            retry_tiers: default_retry_tiers(),
            webhook_schedule: default_webhook_schedule(),
        }
    }
}

/// Whether the two topics have as many partitions (the mismatch, when not); an
/// error when either cannot be described. Blocking.
pub(crate) fn co_partitioning(kafka: &KafkaArgs, topics: &Topics) -> Result<Result<(), PartitionMismatch>, KafkaSetupError> {
    let commands_partitions = partition_count(kafka, &topics.commands)?;
    let results_partitions = partition_count(kafka, &topics.results)?;
    if commands_partitions == results_partitions {
        return Ok(Ok(()));
    }
    Ok(Err(PartitionMismatch { commands: topics.commands.clone(), commands_partitions, results: topics.results.clone(), results_partitions }))
}

/// Stops a start on topics that are not co-partitioned. Blocking.
pub(crate) fn check_co_partitioned(kafka: &KafkaArgs, topics: &Topics) -> Result<(), KafkaSetupError> {
    Ok(co_partitioning(kafka, topics)??)
}

/// Creates every Courier topic; topics that already exist are left as they are.
/// Returns the names that were newly created.
pub async fn create_topics(args: &KafkaArgs, spec: &TopicSpec) -> Result<Vec<String>, KafkaSetupError> {
    let admin: AdminClient<DefaultClientContext> = args.client_config()?.create()?;
    let topics = args.topics();
    let retention = (spec.retention_hours * 3_600_000).to_string();
    let dlq_retention = (30u64 * 24 * 3_600_000).to_string();
    let repl = || TopicReplication::Fixed(spec.replication);
    let names = all_topic_names(&topics, spec);
    let compacted = [&topics.status, &topics.webhooks_endpoints];
    let wanted: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| {
            let t = NewTopic::new(name, spec.partitions, repl());
            if compacted.contains(&name) {
                t.set("cleanup.policy", "compact")
            } else if *name == topics.dlq || *name == topics.webhooks_dlq {
                t.set("retention.ms", &dlq_retention)
            } else {
                t.set("retention.ms", &retention)
            }
        })
        .collect();
    let outcomes = admin.create_topics(&wanted, &admin_options()).await?;
    let created = changed(outcomes, RDKafkaErrorCode::TopicAlreadyExists, "topic creation failed")?;
    co_partition(args, &admin, &topics).await?;
    tracing::info!(created = ?created, "topics ready");
    Ok(created)
}

/// Makes results as many partitions as commands when it has fewer (results are
/// written to explicit partitions, so adding some moves nothing), and refuses when
/// it has more (partitions cannot be taken away). Topics that existed before keep
/// their counts otherwise.
async fn co_partition(args: &KafkaArgs, admin: &AdminClient<DefaultClientContext>, topics: &Topics) -> Result<(), KafkaSetupError> {
    let counts = || {
        let (args, topics) = (args.clone(), topics.clone());
        async move {
            tokio::task::spawn_blocking(move || co_partitioning(&args, &topics))
                .await
                .map_err(|e| KafkaSetupError::Thread(e.to_string()))?
        }
    };
    let mismatch = match counts().await? {
        Ok(_) => return Ok(()),
        Err(m) if m.results_partitions > m.commands_partitions => return Err(m.into()),
        Err(m) => m,
    };
    tracing::warn!(topic = %mismatch.results, from = mismatch.results_partitions, to = mismatch.commands_partitions, "adding partitions to match the commands topic");
    let more = NewPartitions::new(&topics.results, mismatch.commands_partitions);
    let outcomes = admin.create_partitions(&[more], &admin_options()).await?;
    changed(outcomes, RDKafkaErrorCode::InvalidPartitions, "adding partitions failed")?;
    // Metadata catches up with the new count shortly after.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match counts().await? {
            Ok(_) => return Ok(()),
            Err(m) if tokio::time::Instant::now() >= deadline => return Err(m.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Deletes every Courier topic of `args`' prefix that `spec` names; topics already gone
/// are fine. For throwaway deployments (the bench's per-scenario topics), so repeated
/// runs do not pile topics and log segments up on a shared broker.
pub async fn delete_topics(args: &KafkaArgs, spec: &TopicSpec) -> Result<Vec<String>, KafkaSetupError> {
    let admin: AdminClient<DefaultClientContext> = args.client_config()?.create()?;
    let names = all_topic_names(&args.topics(), spec);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let outcomes = admin.delete_topics(&names, &admin_options()).await?;
    let deleted = changed(outcomes, RDKafkaErrorCode::UnknownTopicOrPartition, "topic deletion failed")?;
    tracing::info!(deleted = ?deleted, "topics deleted");
    Ok(deleted)
}

fn admin_options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))
}

/// The topics an admin operation changed. `already` is the error meaning the topic was
/// in the wanted state before (exists, or is gone): not a failure. Any other error
/// fails the whole operation.
fn changed(outcomes: Vec<TopicResult>, already: RDKafkaErrorCode, failure: &str) -> Result<Vec<String>, KafkaSetupError> {
    let mut changed = Vec::new();
    for outcome in outcomes {
        match outcome {
            Ok(name) => changed.push(name),
            Err((_, code)) if code == already => {}
            Err((name, code)) => {
                tracing::error!(topic = %name, error = %code, "{failure}");
                return Err(KafkaSetupError::Client(rdkafka::error::KafkaError::AdminOp(code)));
            }
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_default_is_the_default_schedule() {
        let parsed: Result<Vec<Duration>, _> = DEFAULT_WEBHOOK_SCHEDULE.split(',').map(crate::duration::parse_duration).collect();
        assert_eq!(parsed.ok(), Some(default_webhook_schedule()));
        let parsed: Result<Vec<Duration>, _> = DEFAULT_RETRY_TIERS.split(',').map(crate::duration::parse_duration).collect();
        assert_eq!(parsed.ok(), Some(default_retry_tiers()));
    }
}
