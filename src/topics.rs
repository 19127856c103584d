//! Topic names, and creating topics with the right settings.
//!
//! Courier never relies on broker auto-create: partitions, compaction and retention
//! matter (the status topic must be compacted; the DLQ must keep records long enough
//! to be looked at), so `courier topics create` makes them explicitly.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication, TopicResult};
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
    tracing::info!(created = ?created, "topics ready");
    Ok(created)
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
