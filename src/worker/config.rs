//! A worker's settings (flags, env vars, or built in code) and why it can fail.
//!
//! Each default is spelled once, as a constant, and used by both the flag and
//! [`WorkerConfig::new`].

use std::net::SocketAddr;
use std::time::Duration;

use crate::duration::parse_duration;
use crate::kafka::{KafkaArgs, KafkaSetupError};
use crate::offsets::OrderBy;
use crate::retry::RetryPolicy;

const DEFAULT_GROUP_ID: &str = "courier-workers";
/// Two records per key of a 1,000-key workload: a key's next record is then usually
/// admitted when its lane goes on, which runs it in the same task. At 1,024 most
/// lanes ended and a new task started for the next record (about 10% of throughput
/// in `bench --peers`); a 1,000,000-command backlog peaks at 112 MB instead of 100.
const DEFAULT_MAX_IN_FLIGHT: usize = 2048;
const DEFAULT_SHUTDOWN_GRACE: &str = "20s";
const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;
const DEFAULT_DEDUPE_CAPACITY: usize = 200_000;
const DEFAULT_STARTED_AFTER: &str = "100ms";

/// A default written as a flag would be; the constants above are checked by a test.
fn default_duration(text: &str) -> Duration {
    parse_duration(text).unwrap_or_default()
}

/// Why a worker could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Setup(#[from] KafkaSetupError),
    #[error("no handlers registered: a worker needs at least one route")]
    NoRoutes,
    #[error("invalid worker config: {0}")]
    Config(String),
    #[error("metrics endpoint: {0}")]
    Metrics(std::io::Error),
    #[error("consumer thread failed: {0}")]
    Consumer(String),
    #[error("worker did not stop within {0:?} (--shutdown-grace + 15 s); left without a clean exit")]
    StopTimeout(Duration),
}

/// Worker settings, from flags or env vars.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerConfig {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Consumer group: workers sharing it split the partitions.
    #[arg(long, env = "COURIER_GROUP_ID", default_value = DEFAULT_GROUP_ID)]
    pub group_id: String,
    /// Most commands admitted and unfinished at once; at the bound the worker stops
    /// taking records until one finishes.
    #[arg(long, env = "COURIER_MAX_IN_FLIGHT", default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    /// Which commands must wait for each other: same key, same partition, or none.
    #[arg(long, env = "COURIER_ORDERING", value_enum, default_value_t = OrderBy::Key)]
    pub ordering: OrderBy,
    /// On shutdown or revoke: how long running handlers get to finish.
    #[arg(long, env = "COURIER_SHUTDOWN_GRACE", value_parser = parse_duration, default_value = DEFAULT_SHUTDOWN_GRACE)]
    pub shutdown_grace: Duration,
    /// Records with larger values are dead-lettered as `too_large`.
    #[arg(long, env = "COURIER_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
    /// Serve Prometheus metrics here (e.g. 0.0.0.0:9464); off when unset.
    #[arg(long, env = "COURIER_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Who may scrape `--metrics-addr`: open unless the `--config` file has an
    /// `auth:` block, then the `metrics` scope (`/healthz` stays open).
    #[arg(skip = crate::auth::Access::open())]
    pub metrics_access: crate::auth::Access,
    /// Name in result events and logs; defaults to host name and pid.
    #[arg(long, env = "COURIER_WORKER_ID")]
    pub worker_id: Option<String>,
    #[command(flatten)]
    pub retry: RetryPolicy,
    /// Exactly-once mode: result events and consumed offsets commit in one Kafka
    /// transaction (readers use read_committed). Give each worker a stable
    /// --worker-id so a restart fences its predecessor at once.
    #[arg(long, env = "COURIER_EXACTLY_ONCE")]
    pub exactly_once: bool,
    /// Recent finished command ids remembered to skip duplicates.
    #[arg(long, env = "COURIER_DEDUPE_CAPACITY", default_value_t = DEFAULT_DEDUPE_CAPACITY)]
    pub dedupe_capacity: usize,
    /// A `started` event (and `started` snapshot) is sent once a handler has run this
    /// long, or before its first progress report; commands that finish sooner get
    /// only their final event, which halves the records a fast command costs (Celery
    /// does not track "started" by default at all). `0s` sends it for every command.
    #[arg(long, env = "COURIER_STARTED_AFTER", value_parser = parse_duration, default_value = DEFAULT_STARTED_AFTER)]
    pub started_after: Duration,
}

impl WorkerConfig {
    /// Defaults for everything but the bootstrap servers.
    pub fn new(bootstrap: impl Into<String>) -> Self {
        WorkerConfig {
            kafka: KafkaArgs::new(bootstrap, "courier"),
            group_id: DEFAULT_GROUP_ID.into(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            ordering: OrderBy::Key,
            shutdown_grace: default_duration(DEFAULT_SHUTDOWN_GRACE),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            metrics_addr: None,
            metrics_access: crate::auth::Access::open(),
            worker_id: None,
            retry: RetryPolicy::default(),
            exactly_once: false,
            dedupe_capacity: DEFAULT_DEDUPE_CAPACITY,
            started_after: default_duration(DEFAULT_STARTED_AFTER),
        }
    }

    pub(super) fn validate(&self) -> Result<(), WorkerError> {
        if self.kafka.bootstrap.trim().is_empty() {
            return Err(WorkerError::Config("bootstrap servers are empty (--bootstrap / COURIER_BOOTSTRAP)".into()));
        }
        if self.max_in_flight == 0 {
            return Err(WorkerError::Config("--max-in-flight must be at least 1".into()));
        }
        if self.group_id.trim().is_empty() {
            return Err(WorkerError::Config("--group-id is empty".into()));
        }
        if self.retry.tiers.is_empty() || self.retry.max_attempts == 0 {
            return Err(WorkerError::Config("--retry-tiers needs at least one delay and --max-attempts at least 1".into()));
        }
        Ok(())
    }
}


#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        worker: WorkerConfig,
    }

    #[test]
    fn flag_defaults_and_code_defaults_agree() {
        let flags = Flags::try_parse_from(["courier", "--bootstrap", "b:9092"]).expect("defaults parse").worker;
        let code = WorkerConfig::new("b:9092");
        assert_eq!(format!("{flags:?}"), format!("{code:?}"));
        assert!(!code.shutdown_grace.is_zero() && !code.started_after.is_zero(), "duration constants parse");
    }
}
