//! Webhooks: telling a caller's HTTP endpoint how its command ended.
//!
//! `courier webhooks run` starts a [`Dispatcher`]. It reads `<prefix>.results` in its
//! own consumer group (dispatchers share the work) and, for each **final** event of
//! a command that has a callback URL, POSTs the event, signed per the Standard
//! Webhooks spec ([`verify`], [`Secret`]), in the configured body shape ([`Profile`]).
//!
//! **Where the URL comes from.** The final event itself: workers copy the command's
//! `ce_callbackurl` extension onto its final event (a header, as on the command; the
//! event's data is unchanged), from envelope 1.1 on. So a dispatcher reads only the
//! results partitions its group gives it, and scales with them; it keeps no table of
//! the status topic. A final event of an older worker is looked up in the status
//! topic's snapshots, in the id's partition or the on-disk view (`callbacks.rs`).
//!
//! **Delivery**, per event and URL (`outcome.rs`): a disabled endpoint is skipped;
//! otherwise the URL is vetted and pinned (`deliver.rs`) and the body POSTed. A `2xx`
//! acknowledges; `410 Gone` disables the URL for every dispatcher ([`EndpointState`]);
//! anything else is retried through delay tiers ([`Schedule`]) until the schedule
//! or the give-up time runs out, then dead-lettered to `<prefix>.webhooks.dlq`, from
//! where `courier webhooks replay` sends it back ([`replay_dead_deliveries`]). An
//! endpoint failing without a success for longer than `--webhook-disable-after` is
//! disabled too, and a `courier.webhook.exhausted` event published. Every attempt goes
//! to the delivery log ([`DeliveryLog`]), which also backs
//! `GET /v1/operations/{id}/deliveries`.
//!
//! Guarantee: at-least-once. The results offset is committed only after the
//! delivery, or the record that carries it on (tier, DLQ), is acknowledged, so
//! receivers must dedupe on `webhook-id`, which is the same on every attempt.

mod callbacks;
mod config;
mod context;
mod dispatch;
mod deliver;
mod endpoints;
mod log;
mod metrics;
mod outcome;
mod profiles;
mod replay;
mod schedule;
mod secrets;
mod signing;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::{CancellationToken, DropGuard};

use crate::http::ConnectionLimits;
use crate::kafka::KafkaSetupError;
use crate::publish::Publisher;
pub use config::{WebhookConfig, WebhookError};
use context::DispatcherState;
pub use endpoints::{Disabled, EndpointState, ENDPOINT_TYPE};
pub use log::{deliveries_router, Attempt, DeliveryLog, Exhausted, ATTEMPT_TYPE, EXHAUSTED_TYPE};
pub use metrics::WebhookMetrics;
pub use replay::{choose_dead_deliveries, read_dead_deliveries, replay_dead_deliveries, DeadDelivery};
pub use schedule::{Delivery, DeliveryError, Next, Schedule};
pub use profiles::Profile;
pub use secrets::{SecretParser, SecretText};
pub use signing::{verify, Secret, SignatureError, DEFAULT_TOLERANCE};

/// A running dispatcher.
pub struct Dispatcher {
    addr: SocketAddr,
    log: Arc<DeliveryLog>,
    metrics: Arc<metrics::WebhookMetrics>,
    consumer: std::thread::JoinHandle<()>,
    _followers: DropGuard,
}

impl Dispatcher {
    /// Checks the topics, reads the endpoints and log topics (and with `--store-dir`
    /// the status topic) to their ends,
    /// starts the HTTP listener and the consumer; runs until `shutdown` fires.
    pub async fn start(config: WebhookConfig, shutdown: CancellationToken) -> Result<Self, WebhookError> {
        config.validate()?;
        let topics = config.kafka.topics();
        let schedule = config.schedule();
        crate::kafka::check(&config.kafka, needs(&topics, &config.group_id, &schedule.tier_topics(&topics)).followers(&config.kafka.prefix)).await?;
        let followers = CancellationToken::new();
        let kafka = &config.kafka;
        let (callbacks, endpoints, log) = tokio::try_join!(
            async {
                match &config.store_dir {
                    Some(dir) => Ok::<_, WebhookError>(callbacks::Callbacks::follow_on_disk(kafka, dir, config.store_cache, followers.clone()).await?),
                    None => Ok(callbacks::Callbacks::point_lookups(kafka)),
                }
            },
            async { Ok::<_, WebhookError>(endpoints::Endpoints::follow(kafka, followers.clone()).await?) },
            async { Ok::<_, WebhookError>(DeliveryLog::follow(kafka, config.log_capacity, 50, followers.clone()).await?) },
        )?;
        let metrics = Arc::new(metrics::WebhookMetrics::with_access(&config.access));
        let addr = serve(config.listen, &config.connections, &config.access, metrics.clone(), log.clone(), shutdown.clone()).await?;
        let limits = deliver::HttpLimits {
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
            max_response_bytes: config.max_response_bytes,
        };
        let source = format!("//courier/webhooks/{}", std::process::id());
        let publisher = Publisher::new(&config.kafka)?;
        let clients = deliver::Clients::new(limits);
        let ctx = Arc::new(DispatcherState { config, topics, schedule, clients, publisher, callbacks, endpoints, metrics: metrics.clone(), source });
        let consumer = dispatch::consumer(&ctx)?;
        let runtime = tokio::runtime::Handle::current();
        tracing::info!(group = %ctx.config.group_id, topic = %ctx.topics.results, %addr, "webhook dispatcher starting");
        let consumer = std::thread::Builder::new()
            .name("courier-webhooks".into())
            .spawn(move || dispatch::run(ctx, consumer, runtime, shutdown))
            .map_err(|e| KafkaSetupError::Thread(e.to_string()))?;
        Ok(Dispatcher { addr, log, metrics, consumer, _followers: followers.drop_guard() })
    }

    /// Where `/metrics` and the deliveries route are served (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn delivery_log(&self) -> Arc<DeliveryLog> {
        self.log.clone()
    }

    pub fn metrics(&self) -> Arc<metrics::WebhookMetrics> {
        self.metrics.clone()
    }

    /// Waits for the consumer thread to finish (after `shutdown` and the drain).
    pub async fn wait(self) -> Result<(), WebhookError> {
        let consumer = self.consumer;
        tokio::task::spawn_blocking(move || consumer.join())
            .await
            .map_err(|e| KafkaSetupError::Thread(e.to_string()))?
            .map_err(|_| KafkaSetupError::Thread("webhook consumer thread panicked".into()))?;
        Ok(())
    }
}

/// What the dispatcher does to which topics and groups (README, "Secured Kafka",
/// lists the ACLs that allow it).
fn needs(topics: &crate::topics::Topics, group: &str, tiers: &[String]) -> crate::kafka::Needs {
    use crate::kafka::Operation::{Read, Write};
    crate::kafka::Needs::new()
        .topic(&topics.results, &[Read])
        .topic(&topics.status, &[Read])
        .topic(&topics.webhooks_log, &[Read, Write])
        .topic(&topics.webhooks_endpoints, &[Read, Write])
        .topic(&topics.webhooks_dlq, &[Write])
        .topics(tiers, &[Read, Write])
        .group(group)
}

/// `/metrics`, the deliveries route and `/healthz`, behind `access`, until `shutdown`.
async fn serve(
    addr: SocketAddr,
    limits: &ConnectionLimits,
    access: &crate::auth::Access,
    metrics: Arc<metrics::WebhookMetrics>,
    log: Arc<DeliveryLog>,
    shutdown: CancellationToken,
) -> Result<SocketAddr, WebhookError> {
    use axum::routing::get;
    let tls = limits.tls.load().map_err(|e| WebhookError::Config(e.to_string()))?.map(Arc::new);
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| WebhookError::Listen { addr, source })?;
    let bound = listener.local_addr().map_err(|source| WebhookError::Listen { addr, source })?;
    let render = move || {
        let metrics = metrics.clone();
        async move { metrics.scrape() }
    };
    let app = axum::Router::new()
        .route("/metrics", get(render))
        .merge(deliveries_router(log))
        .route("/healthz", get(|| async { "ok" }))
        .layer(axum::middleware::from_fn_with_state(access.clone(), crate::auth::authenticate));
    let limits = limits.clone();
    tracing::info!(%bound, tls = tls.is_some(), "dispatcher listening");
    tokio::spawn(async move { crate::http::serve(listener, app, &limits, tls, shutdown).await });
    Ok(bound)
}
