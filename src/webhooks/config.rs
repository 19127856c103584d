//! A dispatcher's settings (flags, env vars, defaults, checked at start) and its
//! errors.

use std::net::SocketAddr;
use std::time::Duration;

use super::profiles::Profile;
use super::schedule;
use super::secrets::{SecretParser, SecretText};
use super::signing::Secret;
use crate::duration::parse_duration;
use crate::http::ConnectionLimits;
use crate::kafka::{KafkaArgs, KafkaSetupError};
use crate::publish::PublishError;
use crate::urlpolicy::UrlPolicy;

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
    #[error(transparent)]
    View(#[from] crate::view::ViewError),
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
    /// How long a final event of an older worker (envelope before 1.1, which does not
    /// carry its callback URL) waits for the status snapshot that names its URL.
    #[arg(long = "snapshot-wait", env = "COURIER_WEBHOOK_SNAPSHOT_WAIT", value_parser = parse_duration, default_value = "10s")]
    pub snapshot_wait: Duration,
    /// Keep a view of the status topic on disk here, as `courier gateway --store-dir`
    /// does, for the callback URLs of final events from older workers (envelope
    /// before 1.1): a restart reads only what the topic got since. Without it such an
    /// event is looked up in its id's status partition. Final events of current
    /// workers carry their URL and need neither.
    #[arg(long = "store-dir", env = "COURIER_WEBHOOK_STORE_DIR")]
    pub store_dir: Option<std::path::PathBuf>,
    /// Memory the on-disk view may use to cache its pages (`64MB`, `1GiB`, bytes).
    #[arg(long = "store-cache", env = "COURIER_WEBHOOK_STORE_CACHE", default_value = "64MB", value_parser = crate::view::parse_bytes)]
    pub store_cache: usize,
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
    /// Who may call the listener (the `auth:` block of the --config file). Open when
    /// not set; `courier webhooks run` refuses to start open unless told
    /// `--insecure-no-auth`.
    #[arg(skip = crate::auth::Access::open())]
    pub access: crate::auth::Access,
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
            store_dir: None,
            store_cache: 64_000_000,
            log_capacity: 100_000,
            listen: SocketAddr::from(([127, 0, 0, 1], 9465)),
            shutdown_grace: Duration::from_secs(20),
            url_policy: UrlPolicy::default(),
            connections: ConnectionLimits::default(),
            access: crate::auth::Access::open(),
        }
    }

    pub(super) fn validate(&self) -> Result<(), WebhookError> {
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
