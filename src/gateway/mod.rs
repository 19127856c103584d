//! The HTTP operations gateway: `POST` a command, get `202 Accepted` and an operation
//! to poll, in the shape of Google's long-running operations (AIP-151), with a
//! RunPod-style `/v2` surface beside it.
//!
//! The gateway keeps no state of its own. Every operation lives on the compacted
//! status topic (key = command id): the gateway writes a `queued` snapshot there
//! before it sends the command (`submit`), workers write the later ones, and every
//! gateway reads the topic at start and follows it into its operations view
//! (`view`: in memory, read from the topic's beginning, or on disk with
//! `--store-dir`, read from where it left off). So several gateways can serve the
//! same operations, and a restarted one (or one started later) knows everything,
//! including which idempotency keys it has already answered. With `--group`, the
//! gateways of a group share the topic's partitions instead of each reading all of
//! them (`cluster`), and any of them answers any request by forwarding it to the
//! owner of the partition it concerns (`forward`) or asking every owner (`gather`).
//!
//! A request goes top to bottom through: `admission` (parse, type, schema,
//! deadline, callback URL: anything wrong is a `400` and nothing is published) ->
//! the view's idempotency index (replay, `422`, or claim the key) -> `submit` (snapshot, then
//! command) -> `operation` (the AIP-151 answer).

mod admission;
mod app;
mod batches;
mod callbacks;
mod cluster;
mod error;
mod forward;
#[cfg(test)]
mod fuzz;
mod gather;
mod members;
mod metrics;
mod operation;
mod peer;
mod routes;
mod runpod;
mod submit;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use admission::CommandRequest;
pub use cluster::ClusterError;
pub use error::{ApiError, GatewayError};
use app::GatewayState;
use error::BodyLimits;
pub use operation::{rpc_code, Metadata, Operation, RpcStatus};

use crate::auth::Access;
use crate::duration::parse_duration;
use crate::view::{Store, ViewError};
use crate::view::parse_bytes;
use crate::http::ConnectionLimits;
use crate::kafka::KafkaArgs;
use crate::publish::Publisher;
use crate::router::Router;
use crate::urlpolicy::UrlPolicy;
use crate::webhooks::{deliveries_router, DeliveryLog};
use crate::Client;

/// How to run a gateway; every flag is also an environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct GatewayConfig {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Address the HTTP API (and its /metrics) listens on.
    #[arg(long, env = "COURIER_GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// How long finished operations stay answerable after they end.
    #[arg(long, env = "COURIER_GATEWAY_RETENTION", default_value = "24h", value_parser = parse_duration)]
    pub retention: Duration,
    /// How long an Idempotency-Key is remembered after its request (at least 24h
    /// is what clients following Stripe's convention expect).
    #[arg(long, env = "COURIER_GATEWAY_IDEMPOTENCY_TTL", default_value = "24h", value_parser = parse_duration)]
    pub idempotency_ttl: Duration,
    /// Largest request body accepted; larger ones get `413`.
    #[arg(long, env = "COURIER_GATEWAY_MAX_BODY_BYTES", default_value_t = 1_000_000)]
    pub max_body_bytes: usize,
    /// Longest `?wait=` a long poll may ask for; longer asks are cut to this.
    #[arg(long, env = "COURIER_GATEWAY_MAX_WAIT", default_value = "60s", value_parser = parse_duration)]
    pub max_wait: Duration,
    /// Operations whose recent webhook attempts `GET /v1/operations/{id}/deliveries`
    /// can show (read from the delivery log topic the dispatchers write).
    #[arg(long, env = "COURIER_GATEWAY_DELIVERY_LOG_CAPACITY", default_value_t = 100_000)]
    pub delivery_log_capacity: usize,
    /// A request body must arrive whole this soon after its head; a slower one is
    /// `408` (a client trickling a body would otherwise hold its request forever).
    #[arg(long, env = "COURIER_GATEWAY_BODY_READ_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub body_read_timeout: Duration,
    #[command(flatten)]
    pub url_policy: UrlPolicy,
    #[command(flatten)]
    pub connections: ConnectionLimits,
    /// The keys that verify callback tokens of handed-off commands (the
    /// `callbacks.signing_keys` of the --config file). None: every callback is `401`.
    #[arg(skip)]
    pub callback_keys: Vec<crate::capability::SigningKey>,
    /// Long polls (`?wait=`) held at once; one more is `429` with `Retry-After`.
    #[arg(long, env = "COURIER_GATEWAY_MAX_LONG_POLLS", default_value_t = 10_000)]
    pub max_long_polls: usize,
    /// Keep the operations view on disk here: a restart reads only what the status
    /// topic got since, and memory no longer grows with the operations retained.
    /// Without it the view is in memory and read from the topic's start at each start.
    #[arg(long, env = "COURIER_GATEWAY_STORE_DIR")]
    pub store_dir: Option<std::path::PathBuf>,
    /// Memory the on-disk view may use to cache its pages (`64MB`, `1GiB`, bytes).
    #[arg(long, env = "COURIER_GATEWAY_STORE_CACHE", default_value = "64MB", value_parser = parse_bytes)]
    pub store_cache: usize,
    /// Who may call (the `auth:` block of the --config file). Open when not set: what
    /// an embedding program or `courier dev` gets; `courier gateway` refuses to start
    /// open unless told `--insecure-no-auth`.
    #[arg(skip = Access::open())]
    pub access: Access,
    /// Share the operations with the other gateways started with this name (and the
    /// same --prefix): each owns some partitions of the status topic and holds only
    /// those; any of them answers any request, forwarding it to the owner. Without
    /// it, every gateway holds every operation.
    #[arg(long, env = "COURIER_GATEWAY_GROUP")]
    pub group: Option<String>,
    /// The URL the other gateways of the group reach this one at (default:
    /// `http://` and --listen, which must then not be a wildcard address).
    #[arg(long, env = "COURIER_GATEWAY_ADVERTISE")]
    pub advertise: Option<String>,
}

impl GatewayConfig {
    /// The defaults of every flag, for embedding a gateway in a program or a test.
    pub fn new(kafka: KafkaArgs) -> Self {
        GatewayConfig {
            kafka,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            retention: Duration::from_secs(24 * 3600),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            max_body_bytes: 1_000_000,
            max_wait: Duration::from_secs(60),
            delivery_log_capacity: 100_000,
            body_read_timeout: Duration::from_secs(30),
            url_policy: UrlPolicy::default(),
            connections: ConnectionLimits::default(),
            callback_keys: Vec::new(),
            max_long_polls: 10_000,
            store_dir: None,
            store_cache: 64_000_000,
            access: Access::open(),
            group: None,
            advertise: None,
        }
    }

    /// The URL this gateway advertises to its group, checked.
    fn advertised(&self) -> Result<String, GatewayError> {
        let url = match &self.advertise {
            Some(url) => url.trim_end_matches('/').to_string(),
            None if self.listen.ip().is_unspecified() => {
                return Err(GatewayError::Config(format!("--listen {} is every address: say with --advertise which URL the other gateways of the group reach this one at", self.listen)))
            }
            None => format!("{}://{}", if self.connections.tls.tls_cert.is_some() { "https" } else { "http" }, self.listen),
        };
        match reqwest::Url::parse(&url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.path() == "/" && u.query().is_none() => Ok(url),
            _ => Err(GatewayError::Config(format!("--advertise {url:?} is not an http(s) URL of a host and port, with no path"))),
        }
    }

    fn validate(&self) -> Result<(), GatewayError> {
        let bad = |m: &str| Err(GatewayError::Config(m.to_string()));
        if self.kafka.bootstrap.trim().is_empty() {
            return bad("no Kafka bootstrap servers (--bootstrap or COURIER_BOOTSTRAP)");
        }
        if self.retention.is_zero() || self.idempotency_ttl.is_zero() {
            return bad("--retention and --idempotency-ttl must be positive");
        }
        if self.max_body_bytes < 64 {
            return bad("--max-body-bytes must be at least 64");
        }
        if self.body_read_timeout.is_zero() {
            return bad("--body-read-timeout must be positive");
        }
        if self.max_long_polls == 0 {
            return bad("--max-long-polls must be at least 1");
        }
        if self.store_cache < 1 << 20 {
            return bad("--store-cache must be at least 1MB");
        }
        if let Some(group) = &self.group {
            if group.is_empty() || !group.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
                return bad("--group must be letters, digits, '.', '_' or '-'");
            }
            if self.connections.tls.tls_client_ca.is_some() {
                return bad("--group with --tls-client-ca: gateways cannot forward to each other over mutual TLS (they hold no client certificate); run the group without it or behind a TLS-terminating proxy");
            }
            self.advertised()?;
        }
        self.connections.validate().map_err(|e| GatewayError::Config(e.to_string()))
    }
}

/// What a gateway does to which topics (README, "Secured Kafka", lists the ACLs
/// that allow it): it joins a group only with `--group` (`group`, the Kafka group id).
fn needs(topics: &crate::topics::Topics, group: Option<String>) -> crate::kafka::Needs {
    use crate::kafka::Operation::{Read, Write};
    let needs = match group {
        Some(id) => crate::kafka::Needs::new().group(id),
        None => crate::kafka::Needs::new(),
    };
    needs
        .topic(&topics.commands, &[Write])
        .topic(&topics.control, &[Write])
        // Read into the operations view; deferred jobs' callbacks write their outcome.
        .topic(&topics.status, &[Read, Write])
        .topic(&topics.results, &[Write])
        .topic(&topics.webhooks_log, &[Read])
}

/// A gateway that has read the status topic to its end and is ready to serve.
pub struct Gateway {
    app: Arc<GatewayState>,
    access: Access,
    deliveries: Arc<DeliveryLog>,
    connections: ConnectionLimits,
    tls: Option<Arc<crate::http::Tls>>,
}

impl Gateway {
    /// Compiles the router's payload schemas, reads the status topic to its end, and
    /// keeps following it until `shutdown` fires. Returns only once caught up, so a
    /// gateway never answers from a partial view.
    pub async fn start(config: &GatewayConfig, router: &Router, shutdown: CancellationToken) -> Result<Self, GatewayError> {
        config.validate()?;
        let tls = config.connections.tls.load().map_err(|e| GatewayError::Config(e.to_string()))?.map(Arc::new);
        let checker = admission::Checker::new(router, config.url_policy.clone())?;
        let status = config.kafka.topics().status;
        let store = Arc::new(match &config.store_dir {
            None => Store::new(config.retention, config.idempotency_ttl),
            Some(dir) => Store::open(dir, config.store_cache, &status, config.retention, config.idempotency_ttl).map_err(ViewError::from)?,
        });
        let source = format!("//courier/gateway/{}", std::process::id());
        let client = Client::new(config.kafka.clone())?.with_source(source.clone());
        crate::kafka::check(&config.kafka, needs(client.topics(), config.group.as_deref().map(|g| cluster::group_id(&config.kafka.prefix, g))).followers(&config.kafka.prefix)).await?;
        let cluster = match &config.group {
            None => None,
            Some(name) => Some(cluster::Cluster::join(&config.kafka, &status, name, &config.advertised()?, store.clone(), shutdown.clone()).await?),
        };
        let view = async {
            match &cluster {
                // A group member reads the partitions it is given, as it is given them.
                Some(_) => Ok(()),
                None => crate::view::follow_status(&config.kafka, &status, store.clone(), shutdown.clone()).await,
            }
        };
        let (followed, deliveries) = tokio::join!(view, DeliveryLog::follow(&config.kafka, config.delivery_log_capacity, 50, shutdown.clone()));
        followed?;
        let deliveries = deliveries?;
        let submitter = submit::Submitter::new(client, Publisher::new(&config.kafka)?, store.clone(), source, cluster.clone());
        let peers = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(1))
            .build()
            .map_err(|e| GatewayError::Config(format!("the HTTP client for the group's peers: {e}")))?;
        crate::view::maintain(&store, config.retention.min(config.idempotency_ttl), &shutdown);
        let app = GatewayState {
            store,
            checker,
            submitter,
            callbacks: app::CallbackAuth::new(config.callback_keys.clone(), router),
            metrics: metrics::GatewayMetrics::new(&config.access),
            max_wait: config.max_wait,
            body: BodyLimits { max_bytes: config.max_body_bytes, read_timeout: config.body_read_timeout },
            shutdown,
            long_polls: Arc::new(tokio::sync::Semaphore::new(config.max_long_polls)),
            cluster,
            peers,
        };
        Ok(Gateway { app: Arc::new(app), access: config.access.clone(), deliveries, connections: config.connections.clone(), tls })
    }

    /// The HTTP API as an axum router, to serve or to nest in a larger app: the `/v1`
    /// operations, batches, RunPod's `/v2`, `/metrics`, the webhook deliveries and
    /// `/healthz`, every route but `/healthz` and the callbacks behind the gateway's
    /// [`Access`].
    pub fn router(&self) -> axum::Router {
        let m = &self.app.metrics;
        axum::Router::new()
            .merge(routes::routes(m))
            .merge(batches::routes(m))
            .merge(runpod::routes(m))
            .fallback(|| async { ApiError::not_found("route") })
            .layer(axum::middleware::from_fn_with_state(self.app.clone(), forward::route))
            .layer(axum::extract::DefaultBodyLimit::max(self.app.body.max_bytes))
            .with_state(self.app.clone())
            .merge(deliveries_router(self.deliveries.clone()))
            .route("/healthz", axum::routing::get(|| async { "ok" }))
            .layer(axum::middleware::from_fn_with_state(self.access.clone(), crate::auth::authenticate))
            .layer(axum::middleware::map_response(error::json_errors))
    }

    /// Serves on `listener`, within the connection limits ([`crate::ConnectionLimits`]), until
    /// the shutdown token fires, then finishes the requests in progress (long polls
    /// return early) and returns.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> Result<(), GatewayError> {
        let addr = listener.local_addr()?;
        tracing::info!(%addr, tls = self.tls.is_some(), mtls = self.tls.as_ref().is_some_and(|t| t.mutual()), "gateway listening");
        let shutdown = self.app.shutdown.clone();
        crate::http::serve(listener, self.router(), &self.connections, self.tls.clone(), shutdown).await;
        tracing::info!("gateway stopped");
        Ok(())
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    fn grouped(listen: &str, advertise: Option<&str>) -> GatewayConfig {
        let mut c = GatewayConfig::new(KafkaArgs::new("127.0.0.1:9092", "p"));
        c.listen = listen.parse().expect("address");
        c.group = Some("g".into());
        c.advertise = advertise.map(str::to_string);
        c
    }

    #[test]
    fn a_group_member_must_say_where_it_is_reached() {
        assert_eq!(grouped("127.0.0.1:8080", None).advertised().unwrap(), "http://127.0.0.1:8080");
        assert_eq!(grouped("0.0.0.0:8080", Some("http://gw-1.internal:8080/")).advertised().unwrap(), "http://gw-1.internal:8080");
        let refused = |c: GatewayConfig| c.validate().unwrap_err().to_string();
        assert!(refused(grouped("0.0.0.0:8080", None)).contains("--advertise"));
        assert!(refused(grouped("127.0.0.1:8080", Some("ftp://x:1"))).contains("not an http(s) URL"));
        assert!(refused(grouped("127.0.0.1:8080", Some("http://x:1/path"))).contains("no path"));
        let mut bad = grouped("127.0.0.1:8080", None);
        bad.group = Some("a b".into());
        assert!(refused(bad).contains("--group"));
        let mut mutual = grouped("127.0.0.1:8080", None);
        mutual.connections.tls.tls_client_ca = Some("ca.pem".into());
        assert!(refused(mutual).contains("mutual TLS"));
        assert!(GatewayConfig::new(KafkaArgs::new("127.0.0.1:9092", "p")).validate().is_ok());
    }
}
