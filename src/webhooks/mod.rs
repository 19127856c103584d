//! Webhooks: telling a caller's HTTP endpoint how its command ended.
//!
//! `courier webhooks run` starts a [`Dispatcher`]. It reads `<prefix>.results` in its
//! own consumer group (dispatchers share the work) and, for each **final** event of
//! a command that has a callback URL, POSTs the event, signed per the Standard
//! Webhooks spec ([`signing`]), in the configured body shape ([`profiles`]).
//!
//! **Where the URL comes from.** The result event does not carry it; the operation
//! snapshots on the status topic do ([`callbacks`]). We follow that topic rather
//! than add the URL to `ResultData`: the result event is a published contract (the
//! AsyncAPI document, foreign readers) that a dispatcher's needs should not widen,
//! and the snapshot already holds the URL whether the command came through the
//! gateway or straight from a client with a `ce_callbackurl` header. The price is
//! a bounded wait for the snapshot written alongside each final event.
//!
//! **Delivery**, per event and URL ([`outcome`]): a disabled endpoint is skipped;
//! otherwise the URL is vetted and pinned ([`deliver`]) and the body POSTed. A `2xx`
//! acknowledges; `410 Gone` disables the URL for every dispatcher ([`endpoints`]);
//! anything else is retried through delay tiers ([`schedule`]) until the schedule
//! or the give-up time runs out, then dead-lettered to `<prefix>.webhooks.dlq`, from
//! where `courier webhooks replay` sends it back ([`replay`]). An endpoint failing
//! without a success for longer than `--webhook-disable-after` is disabled too, and a
//! `courier.webhook.exhausted` event published. Every attempt goes to the delivery
//! log ([`log`]), which also backs `GET /v1/operations/{id}/deliveries`.
//!
//! Guarantee: at-least-once. The results offset is committed only after the
//! delivery, or the record that carries it on (tier, DLQ), is acknowledged, so
//! receivers must dedupe on `webhook-id`, which is the same on every attempt.

pub mod callbacks;
mod dispatch;
pub mod deliver;
pub mod endpoints;
pub mod log;
pub mod metrics;
mod outcome;
pub mod profiles;
pub mod replay;
pub mod schedule;
pub mod secrets;
pub mod signing;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::{CancellationToken, DropGuard};

use crate::duration::parse_duration;
use crate::http::ConnectionLimits;
use crate::kafka::{KafkaArgs, KafkaSetupError};
use crate::publish::{PublishError, Publisher};
use crate::topics::Topics;
use crate::urlpolicy::UrlPolicy;
pub use log::{deliveries_router, Attempt, DeliveryLog};
pub use profiles::Profile;
pub use secrets::{SecretParser, SecretText};
pub use signing::{verify, Secret, SignatureError};

/// Why a dispatcher could not start, or a webhook command failed.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error(transparent)]
    Kafka(#[from] KafkaSetupError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("invalid webhook config: {0}")]
    Config(String),
    #[error("listening on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Follow(#[from] crate::follow::FollowError),
}

/// Dispatcher settings, from flags or env vars.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookConfig {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Consumer group: dispatchers sharing it split the results and the retries.
    #[arg(long, env = "COURIER_WEBHOOK_GROUP_ID", default_value = "courier-webhooks")]
    pub group_id: String,
    /// Signing secret, `whsec_<base64>`; repeat (or comma-separate in env) to rotate:
    /// every delivery is signed with each.
    #[arg(long = "webhook-secret", env = "COURIER_WEBHOOK_SECRETS", value_delimiter = ',', value_parser = SecretParser, hide_env_values = true)]
    pub secrets: Vec<Secret>,
    /// Body shape of every delivery.
    #[arg(long = "webhook-profile", env = "COURIER_WEBHOOK_PROFILE", value_enum, default_value_t = Profile::Cloudevents)]
    pub profile: Profile,
    /// Sent as `ouro-webhook-token` with the `ouro` profile.
    #[arg(long = "ouro-webhook-token", env = "COURIER_OURO_WEBHOOK_TOKEN", hide_env_values = true)]
    pub ouro_token: Option<SecretText>,
    /// Delays before each retry (match `courier topics create --webhook-schedule`).
    #[arg(long = "webhook-schedule", env = "COURIER_WEBHOOK_SCHEDULE", value_delimiter = ',', value_parser = parse_duration, default_value = crate::topics::DEFAULT_WEBHOOK_SCHEDULE)]
    pub schedule: Vec<Duration>,
    /// No retry is scheduled later than this after the first attempt.
    #[arg(long = "webhook-give-up-after", env = "COURIER_WEBHOOK_GIVE_UP_AFTER", value_parser = parse_duration, default_value = "72h")]
    pub give_up_after: Duration,
    /// Each retry delay is stretched or shrunk at random by up to this fraction.
    #[arg(long = "webhook-jitter", env = "COURIER_WEBHOOK_JITTER", default_value_t = 0.1)]
    pub jitter: f64,
    /// An endpoint failing without a success for longer than this is disabled.
    #[arg(long = "webhook-disable-after", env = "COURIER_WEBHOOK_DISABLE_AFTER", value_parser = parse_duration, default_value = "120h")]
    pub disable_after: Duration,
    #[arg(long = "webhook-connect-timeout", env = "COURIER_WEBHOOK_CONNECT_TIMEOUT", value_parser = parse_duration, default_value = "5s")]
    pub connect_timeout: Duration,
    /// From sending a delivery to having its answer; slower counts as a failure.
    #[arg(long = "webhook-timeout", env = "COURIER_WEBHOOK_TIMEOUT", value_parser = parse_duration, default_value = "15s")]
    pub response_timeout: Duration,
    /// At most this much of an answer's body is read.
    #[arg(long = "webhook-max-response-bytes", env = "COURIER_WEBHOOK_MAX_RESPONSE_BYTES", default_value_t = 64 * 1024)]
    pub max_response_bytes: usize,
    /// Deliveries worked on at once.
    #[arg(long = "max-in-flight", env = "COURIER_WEBHOOK_MAX_IN_FLIGHT", default_value_t = 256)]
    pub max_in_flight: usize,
    /// How long a final event waits for the status snapshot that names its URL.
    #[arg(long = "snapshot-wait", env = "COURIER_WEBHOOK_SNAPSHOT_WAIT", value_parser = parse_duration, default_value = "10s")]
    pub snapshot_wait: Duration,
    /// Commands whose callback URL (or lack of one) is remembered.
    #[arg(long = "callback-capacity", env = "COURIER_WEBHOOK_CALLBACK_CAPACITY", default_value_t = 200_000)]
    pub callback_capacity: usize,
    /// Operations whose recent attempts `/v1/operations/{id}/deliveries` can show.
    #[arg(long = "log-capacity", env = "COURIER_WEBHOOK_LOG_CAPACITY", default_value_t = 100_000)]
    pub log_capacity: usize,
    /// `/metrics` and `/v1/operations/{id}/deliveries` listen here.
    #[arg(long, env = "COURIER_WEBHOOK_LISTEN", default_value = "127.0.0.1:9465")]
    pub listen: SocketAddr,
    /// On shutdown: how long running deliveries get to finish.
    #[arg(long, env = "COURIER_WEBHOOK_SHUTDOWN_GRACE", value_parser = parse_duration, default_value = "20s")]
    pub shutdown_grace: Duration,
    #[command(flatten)]
    pub url_policy: UrlPolicy,
    /// Bounds of the `/metrics` and deliveries listener's connections.
    #[command(flatten)]
    pub connections: ConnectionLimits,
}

impl WebhookConfig {
    /// Every flag's default, with these secrets: for embedding and tests.
    pub fn new(kafka: KafkaArgs, secrets: Vec<Secret>) -> Self {
        WebhookConfig {
            kafka,
            group_id: "courier-webhooks".into(),
            secrets,
            profile: Profile::Cloudevents,
            ouro_token: None,
            schedule: crate::topics::default_webhook_schedule(),
            give_up_after: Duration::from_secs(72 * 3600),
            jitter: 0.1,
            disable_after: Duration::from_secs(120 * 3600),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(15),
            max_response_bytes: 64 * 1024,
            max_in_flight: 256,
            snapshot_wait: Duration::from_secs(10),
            callback_capacity: 200_000,
            log_capacity: 100_000,
            listen: SocketAddr::from(([127, 0, 0, 1], 9465)),
            shutdown_grace: Duration::from_secs(20),
            url_policy: UrlPolicy::default(),
            connections: ConnectionLimits::default(),
        }
    }

    fn validate(&self) -> Result<(), WebhookError> {
        let bad = |m: &str| Err(WebhookError::Config(m.to_string()));
        if self.kafka.bootstrap.trim().is_empty() {
            return bad("bootstrap servers are empty (--bootstrap / COURIER_BOOTSTRAP)");
        }
        if self.secrets.is_empty() {
            return bad("no signing secret: pass --webhook-secret whsec_<base64> or set COURIER_WEBHOOK_SECRETS");
        }
        if self.schedule.is_empty() {
            return bad("--webhook-schedule needs at least one delay");
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return bad("--webhook-jitter must be at least 0 and below 1");
        }
        if self.max_in_flight == 0 {
            return bad("--max-in-flight must be at least 1");
        }
        self.connections.validate().map_err(|e| WebhookError::Config(e.to_string()))?;
        if self.profile == Profile::Ouro && self.ouro_token.is_none() {
            tracing::warn!("ouro profile without --ouro-webhook-token: receivers expecting the header will refuse");
        }
        Ok(())
    }

    pub fn schedule(&self) -> schedule::Schedule {
        schedule::Schedule { delays: self.schedule.clone(), give_up_after: self.give_up_after, jitter: self.jitter }
    }
}

/// What delivery tasks share.
pub(crate) struct Context {
    config: WebhookConfig,
    topics: Topics,
    schedule: schedule::Schedule,
    clients: deliver::Clients,
    publisher: Publisher,
    callbacks: Arc<callbacks::Callbacks>,
    endpoints: Arc<endpoints::Endpoints>,
    metrics: Arc<metrics::WebhookMetrics>,
    /// `ce_source` of the records the dispatcher writes.
    source: String,
}

/// A running dispatcher.
pub struct Dispatcher {
    addr: SocketAddr,
    log: Arc<DeliveryLog>,
    metrics: Arc<metrics::WebhookMetrics>,
    consumer: std::thread::JoinHandle<()>,
    _followers: DropGuard,
}

impl Dispatcher {
    /// Checks the topics, reads the status, endpoints and log topics to their ends,
    /// starts the HTTP listener and the consumer; runs until `shutdown` fires.
    pub async fn start(config: WebhookConfig, shutdown: CancellationToken) -> Result<Self, WebhookError> {
        config.validate()?;
        let topics = config.kafka.topics();
        let schedule = config.schedule();
        let mut needed = vec![topics.results.clone(), topics.status.clone(), topics.webhooks_dlq.clone(), topics.webhooks_log.clone(), topics.webhooks_endpoints.clone()];
        needed.extend(schedule.tier_topics(&topics));
        require_topics(&config.kafka, needed).await?;
        let followers = CancellationToken::new();
        let kafka = &config.kafka;
        let (callbacks, endpoints, log) = tokio::try_join!(
            callbacks::Callbacks::follow(kafka, config.callback_capacity, followers.clone()),
            endpoints::Endpoints::follow(kafka, followers.clone()),
            DeliveryLog::follow(kafka, config.log_capacity, 50, followers.clone()),
        )?;
        let metrics = Arc::new(metrics::WebhookMetrics::default());
        let addr = serve(config.listen, &config.connections, metrics.clone(), log.clone(), shutdown.clone()).await?;
        let limits = deliver::HttpLimits {
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
            max_response_bytes: config.max_response_bytes,
        };
        let source = format!("//courier/webhooks/{}", std::process::id());
        let publisher = Publisher::new(&config.kafka)?;
        let clients = deliver::Clients::new(limits);
        let ctx = Arc::new(Context { config, topics, schedule, clients, publisher, callbacks, endpoints, metrics: metrics.clone(), source });
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

/// Fails fast, with the fix in the message, when a topic is missing.
async fn require_topics(kafka: &KafkaArgs, names: Vec<String>) -> Result<(), WebhookError> {
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || crate::kafka::require_topics(&kafka, &names))
        .await
        .map_err(|e| KafkaSetupError::Thread(e.to_string()))??;
    Ok(())
}

/// `/metrics` and the deliveries route, until `shutdown`.
async fn serve(
    addr: SocketAddr,
    limits: &ConnectionLimits,
    metrics: Arc<metrics::WebhookMetrics>,
    log: Arc<DeliveryLog>,
    shutdown: CancellationToken,
) -> Result<SocketAddr, WebhookError> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| WebhookError::Listen { addr, source })?;
    let bound = listener.local_addr().map_err(|source| WebhookError::Listen { addr, source })?;
    let render = move || {
        let metrics = metrics.clone();
        async move { metrics.scrape() }
    };
    let app = axum::Router::new().route("/metrics", get(render)).merge(deliveries_router(log));
    let limits = limits.clone();
    tokio::spawn(async move { crate::http::serve(listener, app, &limits, shutdown).await });
    Ok(bound)
}
