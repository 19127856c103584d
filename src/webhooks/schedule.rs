//! When to try a delivery again, and what waits in between.
//!
//! A failed delivery never blocks others: it is written to a delay tier topic
//! (`<prefix>.webhooks.retry.<delay>`, one per step of the schedule) with a
//! not-before time, and the dispatcher's consumer holds each tier partition's head
//! until it is due, exactly like the command retry relay (`offsets::TierHold`).
//! Each delay is jittered (±10% by default) so that deliveries that failed together
//! (an endpoint was down) do not all come back in the same instant.
//!
//! A waiting delivery is the result event record itself (its `ce_*` headers and
//! value, so nothing is re-encoded on the way) keyed by command id, plus
//! `courier_webhook_*` headers: the URL, the attempt it is waiting for, when the
//! first attempt was made. The same record, with the DLQ's reason headers, is what
//! the webhook DLQ holds and what `courier webhooks replay` sends back.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::envelope::{dlq_headers, DeadLetter};
use crate::envelope::{rfc3339, DecodeError, HeaderMap, Reason, ResultEvent};
use crate::publish::Outgoing;
use crate::retry::retry_headers;
use crate::topics::{webhook_tier_topic, Topics};

/// Headers a delivery carries through the tiers and the DLQ.
pub mod delivery_headers {
    pub const URL: &str = "courier_webhook_url";
    /// The number of the attempt this record is waiting to make (1-based).
    pub const ATTEMPT: &str = "courier_webhook_attempt";
    pub const FIRST_ATTEMPT: &str = "courier_webhook_first_attempt";
    pub const LAST_ERROR: &str = "courier_webhook_last_error";
}

/// The retry schedule: delays between attempts, a cap on the whole, jitter.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Delay before attempt n+1 is `delays[n-1]`; past the last, give up.
    pub delays: Vec<Duration>,
    /// No attempt is scheduled later than this after the first one.
    pub give_up_after: Duration,
    /// Fraction each delay is randomly stretched or shrunk by (0.1 = ±10%).
    pub jitter: f64,
}

/// What follows a failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Wait `delay` (jittered) in the tier topic of the nominal `tier`.
    Retry { tier: Duration, delay: Duration },
    /// Stop: a reason code for the DLQ and a message.
    GiveUp { reason: Reason, message: String },
}

impl Schedule {
    /// What follows failed attempt `attempt` (1-based) of a delivery first tried at
    /// `first_attempt`. `unit` is a random number in [0, 1) that picks the jitter.
    pub fn after(&self, attempt: u32, first_attempt: DateTime<Utc>, now: DateTime<Utc>, unit: f64) -> Next {
        let Some(tier) = self.delays.get(attempt.max(1) as usize - 1).copied() else {
            return Next::GiveUp { reason: Reason::ScheduleExhausted, message: format!("gave up after {attempt} attempts") };
        };
        let stretch = 1.0 + self.jitter * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        let delay = tier.mul_f64(stretch.max(0.0));
        let next_at = now + chrono::Duration::from_std(delay).unwrap_or_default();
        let limit = chrono::Duration::from_std(self.give_up_after).ok().and_then(|g| first_attempt.checked_add_signed(g));
        if let Some(limit) = limit.filter(|limit| next_at > *limit) {
            let message = format!("gave up after {attempt} attempts: the next would be past the give-up time {}", rfc3339(limit));
            return Next::GiveUp { reason: Reason::GiveUpTime, message };
        }
        Next::Retry { tier, delay }
    }

    /// Every tier topic the schedule uses, without repeats.
    pub fn tier_topics(&self, topics: &Topics) -> Vec<String> {
        let mut names: Vec<String> = self.delays.iter().map(|d| webhook_tier_topic(topics, *d)).collect();
        names.sort();
        names.dedup();
        names
    }
}

/// A number in [0, 1), different every call: enough randomness for jitter without a
/// random-number dependency (std's per-instance hasher keys are random).
pub fn random_unit() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(Utc::now().timestamp_nanos_opt().unwrap_or_default() as u128);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// One result event on its way to one URL.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event: ResultEvent,
    pub url: String,
    /// The attempt about to be made (1-based).
    pub attempt: u32,
    pub first_attempt: DateTime<Utc>,
}

/// Why a tier or DLQ record is not a delivery.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("not a result event: {0}")]
    Event(#[from] DecodeError),
    #[error("no {0} header")]
    Missing(&'static str),
}

impl Delivery {
    /// A first attempt, starting now.
    pub fn new(event: ResultEvent, url: String) -> Self {
        Delivery { event, url, attempt: 1, first_attempt: Utc::now() }
    }

    /// Reads a delivery back from a tier or DLQ record.
    pub fn decode(key: Option<&[u8]>, value: Option<&[u8]>, headers: &HeaderMap) -> Result<Self, DeliveryError> {
        use delivery_headers as d;
        let text = |name: &'static str| headers.get_str(name).ok().flatten().map(str::to_string).ok_or(DeliveryError::Missing(name));
        Ok(Delivery {
            event: ResultEvent::decode(key, value, headers)?,
            url: text(d::URL)?,
            attempt: text(d::ATTEMPT)?.parse().map_err(|_| DeliveryError::Missing(d::ATTEMPT))?,
            first_attempt: DateTime::parse_from_rfc3339(&text(d::FIRST_ATTEMPT)?)
                .map_err(|_| DeliveryError::Missing(d::FIRST_ATTEMPT))?
                .with_timezone(&Utc),
        })
    }

    /// The record, keyed by command id, with the delivery headers set.
    fn record(&self, topic: &str) -> Outgoing {
        use delivery_headers as d;
        let (_, value, mut headers) = self.event.encode();
        headers
            .set(d::URL, self.url.as_str())
            .set(d::ATTEMPT, self.attempt.to_string())
            .set(d::FIRST_ATTEMPT, rfc3339(self.first_attempt));
        Outgoing::new(topic.to_string(), self.event.command_id().to_string(), value, headers)
    }

    /// The record that makes the next attempt after `delay` in the tier of `tier`.
    pub(crate) fn retry_record(&self, topics: &Topics, tier: Duration, delay: Duration, error: &str) -> Outgoing {
        let next = Delivery { attempt: self.attempt + 1, ..self.clone() };
        let mut out = next.record(&webhook_tier_topic(topics, tier));
        let due = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
        out.headers.set(retry_headers::NOT_BEFORE, rfc3339(due)).set(delivery_headers::LAST_ERROR, error);
        out
    }

    /// The webhook DLQ record for a delivery given up after this attempt, with where
    /// it was read from (`origin`: topic, partition, offset) and why.
    pub(crate) fn dead_letter(&self, topics: &Topics, origin: (&str, i32, i64), reason: Reason, message: &str) -> Outgoing {
        let (topic, partition, offset) = origin;
        let mut letter = DeadLetter::new(topic, partition, offset, reason, message, self.attempt);
        letter.first_failure = self.first_attempt;
        let out = self.record(&topics.webhooks_dlq);
        letter.to_record(&out.topic, out.key.as_deref(), out.value.as_deref(), &out.headers)
    }

    /// Sends a dead-lettered delivery back through the first tier, due now, as a
    /// fresh first attempt (so the schedule and its give-up time start over).
    pub(crate) fn replay_record(&self, topics: &Topics, first_tier: Duration) -> Outgoing {
        let fresh = Delivery { attempt: 1, first_attempt: Utc::now(), ..self.clone() };
        let mut out = fresh.record(&webhook_tier_topic(topics, first_tier));
        out.headers.set(retry_headers::NOT_BEFORE, rfc3339(Utc::now())).set(dlq_headers::REPLAYED_AT, rfc3339(Utc::now()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{ResultData, State, Timing};

    fn schedule() -> Schedule {
        Schedule { delays: vec![Duration::from_secs(5), Duration::from_secs(300)], give_up_after: Duration::from_secs(3600), jitter: 0.1 }
    }

    #[test]
    fn follows_the_steps_with_bounded_jitter_then_gives_up() {
        let s = schedule();
        let now = Utc::now();
        for unit in [0.0, 0.5, 0.999] {
            let Next::Retry { tier, delay } = s.after(1, now, now, unit) else { panic!("retry expected") };
            assert_eq!(tier, Duration::from_secs(5));
            assert!(delay >= Duration::from_millis(4500) && delay <= Duration::from_millis(5500), "{delay:?}");
        }
        assert_eq!(s.after(2, now, now, 0.5), Next::Retry { tier: Duration::from_secs(300), delay: Duration::from_secs(300) });
        assert!(matches!(s.after(3, now, now, 0.5), Next::GiveUp { reason: Reason::ScheduleExhausted, .. }));
        let late = now + chrono::Duration::seconds(3500);
        assert!(matches!(s.after(2, now, late, 0.5), Next::GiveUp { reason: Reason::GiveUpTime, .. }));
        let unit = random_unit();
        assert!((0.0..1.0).contains(&unit));
    }

    #[test]
    fn tier_dlq_and_replay_records_round_trip() {
        let data = ResultData {
            command_id: uuid::Uuid::now_v7(),
            command_type: "echo".into(),
            state: State::Completed,
            key: Some("k".into()),
            key_base64: None,
            result: Some(serde_json::json!(1)),
            error: None,
            progress: None,
            timing: Timing::default(),
            worker: "w".into(),
        };
        let topics = Topics::new("c");
        let d = Delivery::new(ResultEvent::new("k".into(), "//w", data), "http://h/x".into());
        let retry = d.retry_record(&topics, Duration::from_secs(5), Duration::from_millis(5200), "HTTP 500");
        assert_eq!((retry.topic.as_str(), retry.key.clone()), ("c.webhooks.retry.5s", Some(d.event.command_id().to_string().into_bytes())));
        let back = Delivery::decode(retry.key.as_deref(), retry.value.as_deref(), &retry.headers).unwrap();
        assert_eq!((back.attempt, back.url.as_str(), back.event.id), (2, "http://h/x", d.event.id));
        let dead = back.dead_letter(&topics, ("c.webhooks.retry.5s", 0, 9), Reason::ScheduleExhausted, "gave up");
        let letter = DeadLetter::from_headers(&dead.headers).unwrap();
        assert_eq!((letter.reason.as_str(), letter.attempts, letter.offset), ("schedule_exhausted", 2, 9));
        let again = Delivery::decode(dead.key.as_deref(), dead.value.as_deref(), &dead.headers).unwrap();
        let replay = again.replay_record(&topics, Duration::from_secs(5));
        let fresh = Delivery::decode(None, replay.value.as_deref(), &replay.headers).unwrap();
        assert_eq!((fresh.attempt, fresh.event.id), (1, d.event.id), "same webhook-id, attempts start over");
    }
}
