//! The delivery log: every attempt, on `<prefix>.webhooks.log`, keyed by command id,
//! and a view of the recent ones per operation for an HTTP API.
//!
//! The topic is the record (what was sent where, when, and what came back); the
//! in-memory [`DeliveryLog`] is rebuilt from it by whoever serves
//! `GET /v1/operations/{id}/deliveries`: the dispatcher's own listener, or the
//! gateway mounting [`deliveries_router`]. The same topic also carries
//! `courier.webhook.exhausted` events (an endpoint disabled after failing for too
//! long), keyed by URL, which the view skips.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::Extension;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::Caller;
use crate::follow::{follow, FollowError, StartAt};
use crate::envelope::{header_names, json_event, HeaderMap};
use crate::kafka::KafkaArgs;
use crate::publish::Outgoing;

/// CloudEvents type of an attempt record.
pub const ATTEMPT_TYPE: &str = "courier.webhook.attempt";
/// CloudEvents type of the event published when an endpoint is disabled for failing
/// continuously longer than the configured window.
pub const EXHAUSTED_TYPE: &str = "courier.webhook.exhausted";

/// One delivery attempt (or a delivery not attempted, and why).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Attempt {
    pub command_id: Uuid,
    /// The result event's id: the `webhook-id` header, the same on every attempt.
    pub event_id: Uuid,
    pub url: String,
    /// 1-based.
    pub attempt: u32,
    /// `delivered`, `failed`, `gone`, `refused` (URL not allowed, nothing sent) or
    /// `skipped` (endpoint disabled, nothing sent).
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub latency_ms: u64,
    pub time: DateTime<Utc>,
    /// What happens next: `retry in 5.2s`, `dead-lettered: schedule_exhausted`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// The operation's tenant (from the result event): only that tenant's principals
    /// see the attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

impl Attempt {
    /// The log record, keyed by command id.
    pub(crate) fn record(&self, topic: &str, source: &str) -> Outgoing {
        let (value, headers) = json_event(source, ATTEMPT_TYPE, self.time, self.command_id, self);
        Outgoing::new(topic.to_string(), self.command_id.to_string(), value, headers)
    }

    fn decode(value: Option<&[u8]>, headers: &HeaderMap) -> Option<Self> {
        let ty = headers.get_str(header_names::TYPE).ok().flatten()?;
        (ty == ATTEMPT_TYPE).then(|| serde_json::from_slice(value?).ok()).flatten()
    }
}

/// An endpoint was disabled after failing continuously for longer than allowed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Exhausted {
    pub url: String,
    pub failing_since: DateTime<Utc>,
    pub disabled_at: DateTime<Utc>,
    /// The delivery whose failure crossed the line.
    pub command_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Exhausted {
    /// The log record, keyed by URL.
    pub(crate) fn record(&self, topic: &str, source: &str) -> Outgoing {
        let (value, headers) = json_event(source, EXHAUSTED_TYPE, self.disabled_at, self.command_id, self);
        Outgoing::new(topic.to_string(), self.url.clone(), value, headers)
    }
}

/// Recent attempts per operation, bounded both ways (oldest operations forgotten
/// first; only the last attempts of each kept).
pub struct DeliveryLog {
    inner: Mutex<Recent>,
    operations: usize,
    per_operation: usize,
}

#[derive(Default)]
struct Recent {
    by_id: HashMap<Uuid, VecDeque<Attempt>>,
    order: VecDeque<Uuid>,
}

impl DeliveryLog {
    pub fn new(operations: usize, per_operation: usize) -> Self {
        DeliveryLog { inner: Mutex::default(), operations: operations.max(1), per_operation: per_operation.max(1) }
    }

    /// Follows the log topic into a new view; returns once it has read to the end.
    pub async fn follow(kafka: &KafkaArgs, operations: usize, per_operation: usize, stop: CancellationToken) -> Result<Arc<Self>, FollowError> {
        let log = Arc::new(DeliveryLog::new(operations, per_operation));
        let sink = log.clone();
        follow(kafka, &kafka.topics().webhooks_log, StartAt::Beginning, stop, move |seen| {
            if let Some(attempt) = Attempt::decode(seen.value(), &seen.headers()) {
                sink.apply(attempt);
            }
        })
        .await?;
        Ok(log)
    }

    pub fn apply(&self, attempt: Attempt) {
        let mut recent = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Recent { by_id, order } = &mut *recent;
        let list = by_id.entry(attempt.command_id).or_insert_with(|| {
            order.push_back(attempt.command_id);
            VecDeque::new()
        });
        list.push_back(attempt);
        while list.len() > self.per_operation {
            list.pop_front();
        }
        while order.len() > self.operations {
            if let Some(old) = order.pop_front() {
                by_id.remove(&old);
            }
        }
    }

    /// The recent attempts for one operation, oldest first.
    pub fn attempts(&self, id: &Uuid) -> Vec<Attempt> {
        let recent = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        recent.by_id.get(id).map(|l| l.iter().cloned().collect()).unwrap_or_default()
    }
}

/// `GET /v1/operations/{id}/deliveries`: the operation's recent delivery attempts as
/// a JSON list (empty when none are known, or none are the caller's tenant's); `400`
/// when the id is not a UUID. Mounted behind [`crate::auth::authenticate`], which
/// names the caller; without it (embedded), the unnamed tenant's attempts.
pub fn deliveries_router(log: Arc<DeliveryLog>) -> Router {
    Router::new().route("/v1/operations/{id}/deliveries", get(list)).with_state(log)
}

async fn list(State(log): State<Arc<DeliveryLog>>, caller: Option<Extension<Caller>>, Path(id): Path<String>) -> Response {
    let caller = caller.map(|Extension(c)| c).unwrap_or_else(Caller::anonymous);
    match Uuid::parse_str(&id) {
        Ok(id) => {
            let mut attempts = log.attempts(&id);
            attempts.retain(|a| caller.0.owns(a.tenant.as_deref()));
            Json(attempts).into_response()
        }
        Err(_) => (StatusCode::BAD_REQUEST, Json(serde_json::json!({"error": {"code": "invalid_id", "message": "operation id must be a UUID"}}))).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(id: Uuid, n: u32) -> Attempt {
        Attempt {
            command_id: id,
            event_id: id,
            url: "http://h/".into(),
            attempt: n,
            outcome: "failed".into(),
            status: Some(500),
            error: None,
            latency_ms: 1,
            time: Utc::now(),
            next: None,
            tenant: None,
        }
    }

    #[test]
    fn keeps_recent_attempts_per_operation_and_reads_only_attempt_records() {
        let log = DeliveryLog::new(2, 2);
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        for n in 1..=3 {
            log.apply(attempt(a, n));
        }
        assert_eq!(log.attempts(&a).iter().map(|x| x.attempt).collect::<Vec<_>>(), vec![2, 3]);
        log.apply(attempt(b, 1));
        log.apply(attempt(c, 1));
        assert!(log.attempts(&a).is_empty(), "the oldest operation is forgotten");
        let fourth = attempt(b, 4);
        let out = fourth.record("t", "//s");
        assert_eq!(out.key, Some(b.to_string().into_bytes()));
        assert_eq!(Attempt::decode(out.value.as_deref(), &out.headers), Some(fourth));
        let exhausted = Exhausted { url: "http://h/".into(), failing_since: Utc::now(), disabled_at: Utc::now(), command_id: b, last_error: None };
        let ev = exhausted.record("t", "//s");
        assert_eq!(Attempt::decode(ev.value.as_deref(), &ev.headers), None);
    }
}
