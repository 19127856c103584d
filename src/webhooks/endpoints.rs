//! Endpoint state that every dispatcher must honour: which callback URLs are disabled
//! (and why), and since when a URL has been failing without a single success.
//!
//! The state lives on the compacted `<prefix>.webhooks.endpoints` topic, keyed by URL,
//! so a `410 Gone` seen by one dispatcher stops deliveries from all of them and
//! survives restarts. It is written only on transitions (first failure after a
//! success, recovery, disabling), never per attempt, so a failing endpoint costs one
//! record, not one per retry. Only URLs with something to say are kept in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::follow::{follow, FollowError, StartAt};
use crate::envelope::{json_event, new_id};
use crate::kafka::KafkaArgs;
use crate::publish::Outgoing;

/// CloudEvents type of an endpoint state record.
pub const ENDPOINT_TYPE: &str = "courier.webhook.endpoint";

/// Why deliveries to a URL stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Disabled {
    /// `gone` (the receiver answered 410) or `exhausted` (failing for too long).
    pub reason: String,
    pub detail: String,
    pub at: DateTime<Utc>,
}

/// The latest state of one callback URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EndpointState {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<Disabled>,
    /// Set at the first failure after a success; cleared by the next success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<DateTime<Utc>>,
    pub updated: DateTime<Utc>,
}

impl EndpointState {
    fn healthy(&self) -> bool {
        self.disabled.is_none() && self.failing_since.is_none()
    }

    /// The compacted-topic record, keyed by URL.
    pub(crate) fn record(&self, topic: &str, source: &str) -> Outgoing {
        // The subject must be an id; the URL is the key, so a fresh one will do.
        let (value, headers) = json_event(source, ENDPOINT_TYPE, self.updated, new_id(), self);
        Outgoing::new(topic.to_string(), self.url.clone(), value, headers)
    }
}

/// See the module docs.
#[derive(Default)]
pub struct Endpoints {
    states: Mutex<HashMap<String, EndpointState>>,
}

impl Endpoints {
    /// Follows the endpoints topic into a new table; returns once it has read to the end.
    pub async fn follow(kafka: &KafkaArgs, stop: CancellationToken) -> Result<Arc<Self>, FollowError> {
        let endpoints = Arc::new(Endpoints::default());
        let sink = endpoints.clone();
        follow(kafka, &kafka.topics().webhooks_endpoints, StartAt::Beginning, stop, move |seen| {
            match seen.value().filter(|v| !v.is_empty()).map(serde_json::from_slice::<EndpointState>) {
                Some(Ok(state)) => sink.apply(state),
                Some(Err(e)) => tracing::debug!(error = %e, "unreadable endpoint record; skipped"),
                None => {
                    if let Some(url) = seen.key().and_then(|k| std::str::from_utf8(k).ok()) {
                        sink.lock().remove(url);
                    }
                }
            }
        })
        .await?;
        Ok(endpoints)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, EndpointState>> {
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes in a state, from the topic or from this dispatcher.
    pub fn apply(&self, state: EndpointState) {
        let mut states = self.lock();
        if state.healthy() {
            states.remove(&state.url);
        } else {
            states.insert(state.url.clone(), state);
        }
    }

    /// Why deliveries to `url` are off, if they are.
    pub fn disabled(&self, url: &str) -> Option<Disabled> {
        self.lock().get(url).and_then(|s| s.disabled.clone())
    }

    /// A success: the state to publish if the URL had been failing.
    pub fn succeeded(&self, url: &str) -> Option<EndpointState> {
        self.lock().get(url)?;
        let state = EndpointState { url: url.to_string(), disabled: None, failing_since: None, updated: Utc::now() };
        self.apply(state.clone());
        Some(state)
    }

    /// A `410 Gone`: the URL is disabled; returns the state to publish.
    pub fn gone(&self, url: &str, detail: &str) -> EndpointState {
        self.disable(url, "gone", detail, None)
    }

    /// A failed attempt at `now`. Returns the state to publish, if it changed, and
    /// whether the URL has now been failing for longer than `window` (it is then
    /// disabled as `exhausted`).
    pub fn failed(&self, url: &str, now: DateTime<Utc>, window: Duration, error: &str) -> (Option<EndpointState>, bool) {
        let since = self.lock().get(url).and_then(|s| s.failing_since);
        let Some(since) = since else {
            let state = EndpointState { url: url.to_string(), disabled: None, failing_since: Some(now), updated: now };
            self.apply(state.clone());
            return (Some(state), false);
        };
        if now - since <= chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX) {
            return (None, false);
        }
        let detail = format!("failing since {} (last: {error})", crate::envelope::rfc3339(since));
        (Some(self.disable(url, "exhausted", &detail, Some(since))), true)
    }

    fn disable(&self, url: &str, reason: &str, detail: &str, failing_since: Option<DateTime<Utc>>) -> EndpointState {
        let now = Utc::now();
        let disabled = Disabled { reason: reason.to_string(), detail: detail.to_string(), at: now };
        let state = EndpointState { url: url.to_string(), disabled: Some(disabled), failing_since, updated: now };
        self.apply(state.clone());
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_longer_than_the_window_disables_and_a_success_clears() {
        let e = Endpoints::default();
        let t0 = Utc::now();
        let window = Duration::from_secs(60);
        let (first, exhausted) = e.failed("u", t0, window, "HTTP 500");
        assert_eq!(first.and_then(|s| s.failing_since), Some(t0));
        assert!(!exhausted);
        assert_eq!(e.failed("u", t0 + chrono::Duration::seconds(30), window, "HTTP 500"), (None, false), "no record per attempt");
        assert!(e.succeeded("u").is_some());
        assert!(e.succeeded("u").is_none(), "healthy URLs are not tracked");
        e.failed("u", t0, window, "x");
        let (state, exhausted) = e.failed("u", t0 + chrono::Duration::seconds(61), window, "HTTP 503");
        assert!(exhausted);
        assert_eq!(state.and_then(|s| s.disabled).map(|d| d.reason), Some("exhausted".into()));
        assert!(e.disabled("u").is_some());
    }

    #[test]
    fn gone_disables_and_the_record_round_trips() {
        let e = Endpoints::default();
        let state = e.gone("http://h/", "410 Gone");
        assert_eq!(e.disabled("http://h/").map(|d| d.reason), Some("gone".into()));
        let out = state.record("t", "//s");
        assert_eq!(out.key.as_deref(), Some(&b"http://h/"[..]));
        let back: EndpointState = serde_json::from_slice(out.value.as_deref().unwrap()).unwrap();
        let other = Endpoints::default();
        other.apply(back);
        assert!(other.disabled("http://h/").is_some());
    }
}
