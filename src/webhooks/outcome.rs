//! One delivery's life: find the URL -> check the endpoint -> render, sign, POST ->
//! act on the answer (endpoint state, retry tier or DLQ) -> log the attempt.
//!
//! Every record this writes is acknowledged before the delivery counts as handled
//! (and its offset may be committed), so a crash anywhere repeats an attempt rather
//! than losing one: at-least-once, with the receiver deduping on `webhook-id`.

use rdkafka::message::{Message, OwnedMessage};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::deliver::{post, Outcome, Response};
use super::log::{Attempt, Exhausted};
use super::profiles::{Profile, OURO_TOKEN_HEADER};
use super::schedule::{random_unit, Delivery, Next};
use super::signing::signature_header;
use super::DispatcherState;
use crate::envelope::{HeaderMap, Reason, ResultEvent};
use crate::publish::{Outgoing, PublishError};

/// Where a record was read from: a dead letter says so.
struct Origin<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
}

impl<'a> Origin<'a> {
    fn of(m: &'a OwnedMessage) -> Self {
        Origin { topic: m.topic(), partition: m.partition(), offset: m.offset() }
    }
}

/// What follows an attempt.
enum Then {
    Done,
    Retry(std::time::Duration, std::time::Duration),
    DeadLetter(Reason, String),
}

/// A final result event: delivered if its command has a callback URL.
/// `Err` only when `stop` fired before everything was acknowledged.
pub(super) async fn on_result(ctx: &DispatcherState, m: &OwnedMessage, stop: &CancellationToken) -> Result<(), PublishError> {
    let headers = HeaderMap::from_kafka(m.headers());
    let event = match ResultEvent::decode(m.key(), m.payload(), &headers) {
        Ok(event) => event,
        Err(e) => {
            tracing::debug!(offset = m.offset(), error = %e, "unreadable result event; no webhook");
            return Ok(());
        }
    };
    let Some(url) = ctx.callbacks.url_of(&event, ctx.config.snapshot_wait).await else { return Ok(()) };
    attempt(ctx, Delivery::new(event, url), Origin::of(m), stop).await
}

/// A delivery back from a retry tier (or replayed from the DLQ).
pub(super) async fn on_tier(ctx: &DispatcherState, m: &OwnedMessage, stop: &CancellationToken) -> Result<(), PublishError> {
    let headers = HeaderMap::from_kafka(m.headers());
    match Delivery::decode(m.key(), m.payload(), &headers) {
        Ok(delivery) => attempt(ctx, delivery, Origin::of(m), stop).await,
        Err(e) => {
            tracing::warn!(topic = m.topic(), offset = m.offset(), error = %e, "unreadable webhook tier record; dropped");
            Ok(())
        }
    }
}

async fn attempt(ctx: &DispatcherState, d: Delivery, origin: Origin<'_>, stop: &CancellationToken) -> Result<(), PublishError> {
    let span = tracing::info_span!("webhook", command = %d.event.command_id(), attempt = d.attempt);
    async {
        let mut outs = Vec::new();
        let (response, then) = match ctx.endpoints.disabled(&d.url) {
            Some(off) => {
                let why = format!("endpoint disabled ({}): {}", off.reason, off.detail);
                let skipped = Response { outcome: Outcome::Skipped, status: None, error: Some(why.clone()), latency: Default::default() };
                (skipped, Then::DeadLetter(Reason::EndpointDisabled, why))
            }
            None => {
                let response = send(ctx, &d).await;
                ctx.metrics.latency_seconds.observe(response.latency.as_secs_f64());
                let then = judge(ctx, &d, &response, &mut outs);
                (response, then)
            }
        };
        let outcome = response.outcome.as_str();
        ctx.metrics.attempt(outcome);
        tracing::info!(outcome, status = response.status, error = response.error.as_deref(), "webhook attempt");
        let next = match &then {
            Then::Done => None,
            Then::Retry(tier, delay) => {
                ctx.metrics.retries.inc();
                let error = response.error.as_deref().unwrap_or_default();
                outs.push(d.retry_record(&ctx.topics, *tier, *delay, error));
                Some(format!("retry in {:.1}s", delay.as_secs_f64()))
            }
            Then::DeadLetter(reason, message) => {
                ctx.metrics.dead_letter(reason.as_str());
                outs.push(d.dead_letter(&ctx.topics, (origin.topic, origin.partition, origin.offset), *reason, message));
                Some(format!("dead-lettered: {reason}"))
            }
        };
        outs.push(log_record(ctx, &d, &response, next));
        ctx.publisher.send_all_acked(outs, stop).await
    }
    .instrument(span)
    .await
}

/// Renders, signs and POSTs one attempt.
async fn send(ctx: &DispatcherState, d: &Delivery) -> Response {
    let profile = ctx.config.profile;
    let body = serde_json::to_vec(&profile.body(&d.event)).unwrap_or_default();
    let id = d.event.id.to_string();
    let timestamp = chrono::Utc::now().timestamp();
    let mut headers = vec![
        ("content-type", profile.content_type().to_string()),
        ("webhook-id", id.clone()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", signature_header(&ctx.config.secrets, &id, timestamp, &body)),
    ];
    if let (Profile::Ouro, Some(token)) = (profile, &ctx.config.ouro_token) {
        headers.push((OURO_TOKEN_HEADER, token.expose().to_string()));
    }
    post(&ctx.clients, &ctx.config.url_policy, &d.url, &headers, body).await
}

/// Decides what follows an answer, queuing endpoint state changes into `outs`.
fn judge(ctx: &DispatcherState, d: &Delivery, response: &Response, outs: &mut Vec<Outgoing>) -> Then {
    let error = response.error.clone().unwrap_or_default();
    let endpoints_topic = &ctx.topics.webhooks_endpoints;
    match response.outcome {
        Outcome::Delivered => {
            outs.extend(ctx.endpoints.succeeded(&d.url).map(|s| s.record(endpoints_topic, &ctx.source)));
            Then::Done
        }
        Outcome::Gone => {
            outs.push(ctx.endpoints.gone(&d.url, &error).record(endpoints_topic, &ctx.source));
            Then::DeadLetter(Reason::EndpointGone, error)
        }
        Outcome::Refused => Then::DeadLetter(Reason::UrlRefused, error),
        Outcome::Skipped => Then::DeadLetter(Reason::EndpointDisabled, error),
        Outcome::Failed => {
            let now = chrono::Utc::now();
            let (state, exhausted) = ctx.endpoints.failed(&d.url, now, ctx.config.disable_after, &error);
            if exhausted {
                tracing::warn!(url = %d.url, "endpoint failing for too long; disabled");
                let since = state.as_ref().and_then(|s| s.failing_since).unwrap_or(now);
                let event = Exhausted { url: d.url.clone(), failing_since: since, disabled_at: now, command_id: d.event.command_id(), last_error: Some(error.clone()) };
                outs.push(event.record(&ctx.topics.webhooks_log, &ctx.source));
            }
            outs.extend(state.map(|s| s.record(endpoints_topic, &ctx.source)));
            if exhausted {
                return Then::DeadLetter(Reason::EndpointExhausted, error);
            }
            match ctx.schedule.after(d.attempt, d.first_attempt, now, random_unit()) {
                Next::Retry { tier, delay } => Then::Retry(tier, delay),
                Next::GiveUp { reason, message } => Then::DeadLetter(reason, format!("{message}; last: {error}")),
            }
        }
    }
}

fn log_record(ctx: &DispatcherState, d: &Delivery, response: &Response, next: Option<String>) -> Outgoing {
    let attempt = Attempt {
        command_id: d.event.command_id(),
        event_id: d.event.id,
        url: d.url.clone(),
        attempt: d.attempt,
        outcome: response.outcome.as_str().to_string(),
        status: response.status,
        error: response.error.clone(),
        latency_ms: u64::try_from(response.latency.as_millis()).unwrap_or(u64::MAX),
        time: chrono::Utc::now(),
        next,
        tenant: d.event.tenant.clone(),
    };
    attempt.record(&ctx.topics.webhooks_log, &ctx.source)
}
