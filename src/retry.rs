//! Retries that never block a partition: delay tiers on Kafka.
//!
//! A retryable failure re-publishes the command, `attempt + 1`, to a tier topic
//! (`<prefix>.commands.retry.<delay>`) with a not-before time. A relay in every worker
//! holds each tier partition's head until it is due (pausing that partition, so memory
//! stays flat), then sends it back to the *same partition* of the commands topic it
//! came from. The worker meanwhile goes on with every other command; under key
//! ordering the command's key is parked, so later commands of that key wait.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::{Message, OwnedMessage};
use tokio_util::sync::CancellationToken;

use crate::duration::parse_duration;
use crate::envelope::{header_names as h, rfc3339, HeaderMap};
use crate::kafka::{assignment, commit_offsets, set_paused, KafkaArgs, KafkaSetupError, TopicPartition};
use crate::offsets::TierHold;
use crate::publish::{Outgoing, Publisher};
use crate::topics::{retry_tier_topic, Topics};

/// Headers Courier adds to a command on its way through a retry tier.
pub mod retry_headers {
    pub const NOT_BEFORE: &str = "courier_not_before";
    pub const PARTITION: &str = "courier_origin_partition";
    pub const FIRST_FAILURE: &str = "courier_first_failure";
    pub const LAST_ERROR: &str = "courier_last_error";
}

/// When and how often to retry.
#[derive(Debug, Clone, clap::Args)]
pub struct RetryPolicy {
    /// Delay tiers; attempt n waits in tier n-1 (the last tier repeats).
    #[arg(long = "retry-tiers", env = "COURIER_RETRY_TIERS", value_delimiter = ',', value_parser = parse_duration, default_value = crate::topics::DEFAULT_RETRY_TIERS)]
    pub tiers: Vec<Duration>,
    /// Attempts in all, first included; past this a retryable failure is final.
    #[arg(long, env = "COURIER_MAX_ATTEMPTS", default_value_t = 4)]
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { tiers: crate::topics::default_retry_tiers(), max_attempts: 4 }
    }
}

impl RetryPolicy {
    /// The tier for the retry after failed attempt `attempt` (1-based).
    pub fn tier(&self, attempt: u32) -> Duration {
        let i = (attempt.max(1) as usize - 1).min(self.tiers.len().saturating_sub(1));
        self.tiers.get(i).copied().unwrap_or(Duration::from_secs(1))
    }

    /// The tier and the wait for the retry after failed attempt `attempt`, waiting at
    /// least `at_least` (a handler's `Retry-After`): the first tier at least that long
    /// (else the longest). The wait is `at_least` even in a longer tier, so a record
    /// may sit behind an earlier, later-due one of its tier and wait longer than asked,
    /// never shorter.
    pub fn tier_at_least(&self, attempt: u32, at_least: Option<Duration>) -> (Duration, Duration) {
        let tier = self.tier(attempt);
        match at_least {
            Some(min) if min > tier => {
                let longer = self.tiers.iter().copied().filter(|d| *d >= min).min();
                let longest = self.tiers.iter().copied().max().unwrap_or(tier);
                (longer.unwrap_or(longest), min)
            }
            _ => (tier, tier),
        }
    }

    pub fn tier_topics(&self, topics: &Topics) -> Vec<String> {
        let mut names: Vec<String> = self.tiers.iter().map(|d| retry_tier_topic(topics, *d)).collect();
        names.dedup();
        names
    }
}

/// The consumed record of a command whose attempt failed.
pub struct FailedRecord<'a> {
    pub partition: i32,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a HeaderMap,
}

/// The record that sends a failed command to its retry tier: original key and value,
/// headers with `ce_attempt` bumped and the not-before time set.
/// `at_least` is the handler's least wait, if it gave one ([`RetryPolicy::tier_at_least`]).
pub fn retry_record(topics: &Topics, policy: &RetryPolicy, failed: &FailedRecord<'_>, attempt: u32, error: &str, at_least: Option<Duration>) -> Outgoing {
    let FailedRecord { partition: origin_partition, key, value, headers } = *failed;
    let (tier, delay) = policy.tier_at_least(attempt, at_least);
    let now = Utc::now();
    let not_before = now + chrono::Duration::from_std(delay).unwrap_or_default();
    let mut headers = headers.clone();
    if headers.get(retry_headers::FIRST_FAILURE).is_none() {
        headers.set(retry_headers::FIRST_FAILURE, rfc3339(now));
    }
    headers
        .set(h::ATTEMPT, (attempt + 1).to_string())
        .set(retry_headers::NOT_BEFORE, rfc3339(not_before))
        .set(retry_headers::PARTITION, origin_partition.to_string())
        .set(retry_headers::LAST_ERROR, crate::envelope::bounds::truncate(error, crate::envelope::bounds::MAX_MESSAGE_ECHO));
    Outgoing {
        topic: retry_tier_topic(topics, tier),
        key: key.map(<[u8]>::to_vec),
        value: value.map(<[u8]>::to_vec),
        headers,
        partition: None,
    }
}

/// When a tier record may go on: its `courier_not_before` header (now, if missing or
/// unreadable, so a damaged record is never stuck).
pub fn not_before(headers: &HeaderMap) -> DateTime<Utc> {
    headers
        .get_str(retry_headers::NOT_BEFORE)
        .ok()
        .flatten()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(Utc::now)
}

/// Runs the relay over the `tiers` topics on the current thread until `stop`: holds
/// each tier partition's head until due, sends it back to the commands topic, commits, moves on.
pub fn run_relay(
    args: &KafkaArgs,
    group: &str,
    tiers: &[String],
    publisher: Publisher,
    runtime: tokio::runtime::Handle,
    stop: CancellationToken,
) -> Result<(), KafkaSetupError> {
    let topics = args.topics();
    let mut cfg = args.client_config()?;
    cfg.set("group.id", format!("{group}.retry"));
    cfg.set("enable.auto.commit", "false");
    cfg.set("auto.offset.reset", "earliest");
    cfg.set("queued.max.messages.kbytes", "4096");
    let consumer: BaseConsumer = cfg.create()?;
    let refs: Vec<&str> = tiers.iter().map(String::as_str).collect();
    consumer.subscribe(&refs)?;
    let mut hold = TierHold::default();
    while !stop.is_cancelled() {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            hold_record(&consumer, &mut hold, m.detach());
        }
        hold.keep_assigned(&assignment(&consumer));
        let went_on = release_due(&consumer, &mut hold, |head, headers| {
            let out = back_to_commands(&topics, head, headers);
            if runtime.block_on(publisher.send_acked(out, &stop)).is_err() {
                return false;
            }
            if let Err(e) = commit_offsets(&consumer, &[(TopicPartition::of(head), head.offset() + 1)], CommitMode::Async) {
                tracing::warn!(error = %e, "retry relay commit failed");
            }
            true
        });
        if !went_on {
            return Ok(());
        }
    }
    Ok(())
}

/// Holds a polled tier record until its `courier_not_before`, pausing its partition
/// if it is the first held there (see [`TierHold`]). Shared by the relay above and the
/// webhook dispatcher's retry tiers.
pub(crate) fn hold_record<C: ConsumerContext>(consumer: &BaseConsumer<C>, hold: &mut TierHold<OwnedMessage>, record: OwnedMessage) {
    let tp = TopicPartition::of(&record);
    let due = not_before(&HeaderMap::from_kafka(record.headers()));
    if hold.hold(tp.clone(), due, record) {
        set_paused(consumer, &[tp], true);
    }
}

/// Hands every due tier record, in order, with its headers, to `go_on`, which
/// returns false to stop the caller (shutting down); resumes emptied partitions.
/// Returns false when `go_on` did.
pub(crate) fn release_due<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    hold: &mut TierHold<OwnedMessage>,
    mut go_on: impl FnMut(&OwnedMessage, HeaderMap) -> bool,
) -> bool {
    let released = hold.release_due(Utc::now(), |head| go_on(head, HeaderMap::from_kafka(head.headers())));
    set_paused(consumer, &released.resume, false);
    !released.stopped
}

fn back_to_commands(topics: &Topics, msg: &OwnedMessage, headers: HeaderMap) -> Outgoing {
    let partition = headers.get_str(retry_headers::PARTITION).ok().flatten().and_then(|p| p.parse().ok());
    Outgoing {
        topic: topics.commands.clone(),
        key: msg.key().map(<[u8]>::to_vec),
        value: msg.payload().map(<[u8]>::to_vec),
        headers,
        partition,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // Moved from tests/fuzz.rs when this module became internal: a relay reads
        // this header from whatever a producer wrote to a tier topic.
        #[test]
        fn not_before_reads_any_header_bytes_without_panicking(value in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut headers = HeaderMap::new();
            headers.insert(retry_headers::NOT_BEFORE, &value[..]);
            let _ = not_before(&headers);
        }
    }

    #[test]
    fn tiers_by_attempt_and_the_last_repeats() {
        let p = RetryPolicy::default();
        assert_eq!(p.tier(1), Duration::from_secs(1));
        assert_eq!(p.tier(2), Duration::from_secs(10));
        assert_eq!(p.tier(9), Duration::from_secs(60));
        let t = Topics::new("c");
        assert_eq!(p.tier_topics(&t), vec!["c.commands.retry.1s", "c.commands.retry.10s", "c.commands.retry.1m"]);
    }

    #[test]
    fn retry_record_bumps_attempt_and_keeps_the_first_failure() {
        let t = Topics::new("c");
        let mut headers = HeaderMap::new();
        headers.insert(h::ATTEMPT, "1");
        let failed = FailedRecord { partition: 2, key: Some(b"k"), value: Some(b"{}"), headers: &headers };
        let first = retry_record(&t, &RetryPolicy::default(), &failed, 1, "boom", None);
        assert_eq!(first.topic, "c.commands.retry.1s");
        assert_eq!(first.headers.get_str(h::ATTEMPT).unwrap(), Some("2"));
        let failed = FailedRecord { headers: &first.headers, ..failed };
        let again = retry_record(&t, &RetryPolicy::default(), &failed, 2, "boom", None);
        assert_eq!(again.headers.get(retry_headers::FIRST_FAILURE), first.headers.get(retry_headers::FIRST_FAILURE));
        assert_eq!(again.topic, "c.commands.retry.10s");
    }

    #[test]
    fn a_least_wait_picks_the_first_tier_that_long_and_waits_it_out() {
        let p = RetryPolicy::default(); // 1s, 10s, 60s
        let s = Duration::from_secs;
        assert_eq!(p.tier_at_least(1, None), (s(1), s(1)));
        assert_eq!(p.tier_at_least(1, Some(Duration::from_millis(200))), (s(1), s(1)), "shorter than the tier: the tier");
        assert_eq!(p.tier_at_least(1, Some(s(5))), (s(10), s(5)));
        assert_eq!(p.tier_at_least(2, Some(s(30))), (s(60), s(30)));
        assert_eq!(p.tier_at_least(1, Some(s(600))), (s(60), s(600)), "past the longest tier: the longest, held longer");
        let t = Topics::new("c");
        let headers = HeaderMap::new();
        let failed = FailedRecord { partition: 0, key: None, value: None, headers: &headers };
        let out = retry_record(&t, &p, &failed, 1, "busy", Some(s(5)));
        assert_eq!(out.topic, "c.commands.retry.10s");
        let wait = not_before(&out.headers) - Utc::now();
        assert!(wait > chrono::Duration::seconds(3) && wait <= chrono::Duration::seconds(5), "{wait}");
    }
}
