//! Prometheus metrics, and an HTTP endpoint to scrape them.
//!
//! One registry per process, shared by every component in it; served in the
//! OpenMetrics text format at `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// `content-type` of a scrape answer.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A registry in OpenMetrics text format, as every `/metrics` here answers (the
/// worker's, the gateway's and the webhook dispatcher's registries alike). Empty if
/// encoding fails, which only a broken metric could cause.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}

/// The HTTP answer to a scrape of `registry`.
pub fn scrape(registry: &Registry) -> ([(&'static str, &'static str); 1], String) {
    ([("content-type", OPENMETRICS_CONTENT_TYPE)], render(registry))
}

/// The worker's instruments.
pub struct Metrics {
    registry: Registry,
    /// Final outcomes by command type and state.
    pub(crate) outcomes: Family<Labels, Counter>,
    /// Dead letters by reason code.
    pub(crate) dead_letters: Family<Labels, Counter>,
    /// Handler run time by command type.
    pub(crate) handler_seconds: Family<Labels, Histogram>,
    /// Records admitted and not finished.
    pub(crate) in_flight: Gauge,
    /// Partition assignments and revocations.
    pub(crate) rebalances: Family<Labels, Counter>,
    /// Offset commits sent.
    pub(crate) commits: Counter,
    /// Records skipped because their command already had a final event.
    pub(crate) duplicates: Counter,
    /// Results records the duplicate check read, and their bytes: what checking
    /// costs the broker (read once per assignment, from the partitions owned).
    pub(crate) dedupe_read_records: Counter,
    pub(crate) dedupe_read_bytes: Counter,
    /// Commands sent to a retry tier.
    pub(crate) retries: Counter,
    /// Outputs the broker could never take (too large, topic gone), by the record
    /// kind that fell back to a smaller one (`final`, `snapshot`, `reply`, `dead_letter`).
    pub(crate) refused_outputs: Family<Labels, Counter>,
    /// Records held because not even their minimal dead letter could be written:
    /// retried with backoff, never finished. Non-zero needs an operator.
    pub(crate) held_records: Gauge,
    /// Panics caught in per-record or background code (a bug, reported, not fatal).
    pub(crate) panics: Family<Labels, Counter>,
    /// Commands handed off to their handlers (`202`), and the stale records about
    /// them that were skipped.
    pub(crate) handed_off: Counter,
    /// Handed-off commands ended by the lease check, by state written.
    pub(crate) lease_endings: Family<Labels, Counter>,
    /// Handed-off commands this worker knows of, not yet completed.
    pub(crate) deferred: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("courier");
        let outcomes = Family::<Labels, Counter>::default();
        let dead_letters = Family::<Labels, Counter>::default();
        let handler_seconds =
            Family::<Labels, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 18)));
        let in_flight = Gauge::default();
        let rebalances = Family::<Labels, Counter>::default();
        let commits = Counter::default();
        let duplicates = Counter::default();
        let retries = Counter::default();
        let dedupe_read_records = Counter::default();
        let dedupe_read_bytes = Counter::default();
        let refused_outputs = Family::<Labels, Counter>::default();
        let held_records = Gauge::default();
        let panics = Family::<Labels, Counter>::default();
        let handed_off = Counter::default();
        let lease_endings = Family::<Labels, Counter>::default();
        let deferred = Gauge::default();
        registry.register("command_outcomes", "Final outcomes of commands", outcomes.clone());
        registry.register("dead_letters", "Records sent to the dead-letter topic", dead_letters.clone());
        registry.register("handler_seconds", "Time spent in handlers", handler_seconds.clone());
        registry.register("in_flight", "Commands admitted and not finished", in_flight.clone());
        registry.register("rebalances", "Partition assignment changes", rebalances.clone());
        registry.register("offset_commits", "Offset commits sent", commits.clone());
        registry.register("duplicates", "Records skipped as duplicates of finished commands", duplicates.clone());
        registry.register("dedupe_read_records", "Results records read for the duplicate check", dedupe_read_records.clone());
        registry.register("dedupe_read_bytes", "Bytes of results records read for the duplicate check", dedupe_read_bytes.clone());
        registry.register("retries", "Commands sent to a retry tier", retries.clone());
        registry.register("refused_outputs", "Outputs the broker could never take, replaced by a minimal record", refused_outputs.clone());
        registry.register("held_records", "Records whose minimal dead letter cannot be written (retrying)", held_records.clone());
        registry.register("panics", "Panics caught in per-record or background code", panics.clone());
        registry.register("handed_off", "Commands handed off to their handler for deferred completion (202)", handed_off.clone());
        registry.register("lease_endings", "Handed-off commands ended by the lease check (lapsed, deadline, cancel)", lease_endings.clone());
        registry.register("deferred", "Handed-off commands not yet completed, as this worker knows them", deferred.clone());
        Metrics {
            registry,
            outcomes,
            dead_letters,
            handler_seconds,
            in_flight,
            rebalances,
            commits,
            duplicates,
            dedupe_read_records,
            dedupe_read_bytes,
            retries,
            refused_outputs,
            held_records,
            panics,
            handed_off,
            lease_endings,
            deferred,
        }
    }
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The registry in OpenMetrics text format.
    pub fn render(&self) -> String {
        render(&self.registry)
    }

    /// Counts one final outcome.
    pub fn outcome(&self, command_type: &str, state: &str) {
        self.outcomes
            .get_or_create(&vec![("command_type".into(), command_type.into()), ("state".into(), state.into())])
            .inc();
    }
}

/// Serves `/metrics` (and an open `/healthz`) until `shutdown` fires, within the
/// default connection limits ([`crate::http`]); `guard` wraps the routes (the
/// worker puts its authentication in front, which this base module cannot know).
/// Returns the bound address (useful with port 0) once listening.
pub async fn serve(
    metrics: Arc<Metrics>,
    addr: SocketAddr,
    guard: impl FnOnce(axum::Router) -> axum::Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<SocketAddr> {
    use axum::{routing::get, Router};
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let m = metrics.clone();
            async move { scrape(&m.registry) }
        }),
    );
    let app = guard(app.route("/healthz", get(|| async { "ok" })));
    tokio::spawn(async move { crate::http::serve(listener, app, &crate::http::ConnectionLimits::default(), None, shutdown).await });
    tracing::info!(%bound, "metrics endpoint listening");
    Ok(bound)
}
