//! Deliveries given up on: reading the webhook DLQ, and sending chosen ones back.
//!
//! A replayed delivery goes to the first retry tier, due at once, as a fresh first
//! attempt (its give-up clock restarts) with the same event, so the same
//! `webhook-id`: a receiver that did get it after all sees a duplicate it can drop.

use std::time::Duration;

use uuid::Uuid;

use super::schedule::Delivery;
use super::WebhookError;
use crate::envelope::DeadLetter;
use crate::follow::{read_to_end, StartAt};
use crate::kafka::KafkaArgs;
use crate::publish::Publisher;

/// One record of the webhook DLQ.
#[derive(Debug, Clone)]
pub struct DeadDelivery {
    pub partition: i32,
    pub offset: i64,
    pub letter: DeadLetter,
    pub delivery: Delivery,
}

impl DeadDelivery {
    /// A one-line JSON description, for listings.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "command_id": self.delivery.event.command_id(),
            "event_id": self.delivery.event.id,
            "url": self.delivery.url,
            "reason": self.letter.reason,
            "message": self.letter.message,
            "attempts": self.letter.attempts,
            "first_attempt": crate::envelope::rfc3339(self.letter.first_failure),
            "last_failure": crate::envelope::rfc3339(self.letter.last_failure),
            "dlq": format!("{}@{}", self.partition, self.offset),
        })
    }
}

/// Every dead delivery in the webhook DLQ now (unreadable records are skipped).
pub async fn read_dead_deliveries(kafka: &KafkaArgs) -> Result<Vec<DeadDelivery>, WebhookError> {
    let mut found = Vec::new();
    let topic = kafka.topics().webhooks_dlq;
    read_to_end(kafka, &topic, StartAt::Beginning, Some(Duration::from_secs(60)), |seen| {
        let headers = seen.headers();
        let letter = DeadLetter::from_headers(&headers);
        match (letter, Delivery::decode(seen.key(), seen.value(), &headers)) {
            (Some(letter), Ok(delivery)) => found.push(DeadDelivery { partition: seen.partition(), offset: seen.offset(), letter, delivery }),
            (_, Err(e)) => tracing::warn!(offset = seen.offset(), error = %e, "unreadable webhook dead letter; skipped"),
            (None, Ok(_)) => tracing::warn!(offset = seen.offset(), "webhook dead letter without a reason; skipped"),
        }
    })
    .await?;
    Ok(found)
}

/// Which dead deliveries to replay: these command ids, or all when empty.
pub fn choose_dead_deliveries(all: Vec<DeadDelivery>, ids: &[Uuid]) -> Vec<DeadDelivery> {
    all.into_iter().filter(|d| ids.is_empty() || ids.contains(&d.delivery.event.command_id())).collect()
}

/// Sends `dead` back through the tier of `first_tier` (the dispatchers' first delay).
pub async fn replay_dead_deliveries(kafka: &KafkaArgs, first_tier: Duration, dead: &[DeadDelivery]) -> Result<(), WebhookError> {
    let publisher = Publisher::new(kafka)?;
    let topics = kafka.topics();
    for d in dead {
        publisher.send_once(&d.delivery.replay_record(&topics, first_tier)).await?;
    }
    Ok(())
}
