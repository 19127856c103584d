//! The dispatcher's own instruments, in their own registry (a dispatcher usually runs
//! as its own process, beside workers and gateways, each with its `/metrics`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// See the module docs.
pub struct WebhookMetrics {
    registry: Registry,
    /// Attempts by outcome: delivered, failed, gone, refused, skipped.
    pub deliveries: Family<Labels, Counter>,
    /// Time from the start of an attempt to its answer (or failure).
    pub latency_seconds: Histogram,
    /// Deliveries sent to a retry tier.
    pub retries: Counter,
    /// Deliveries given up on, by reason.
    pub dead_letters: Family<Labels, Counter>,
    /// Deliveries being worked on now.
    pub in_flight: Gauge,
}

impl Default for WebhookMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("courier_webhook");
        let deliveries = Family::<Labels, Counter>::default();
        let latency_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let retries = Counter::default();
        let dead_letters = Family::<Labels, Counter>::default();
        let in_flight = Gauge::default();
        registry.register("deliveries", "Delivery attempts by outcome", deliveries.clone());
        registry.register("latency_seconds", "Delivery attempt latency", latency_seconds.clone());
        registry.register("retries", "Deliveries scheduled for another attempt", retries.clone());
        registry.register("dead_letters", "Deliveries given up on, by reason", dead_letters.clone());
        registry.register("in_flight", "Deliveries being worked on", in_flight.clone());
        WebhookMetrics { registry, deliveries, latency_seconds, retries, dead_letters, in_flight }
    }
}

impl WebhookMetrics {
    /// The instruments, and the listener's refusals (`auth_refused{why}`) beside them.
    pub fn with_access(access: &crate::auth::Access) -> Self {
        let mut metrics = WebhookMetrics::default();
        metrics.registry.register("auth_refused", "Requests refused by authentication, scope or rate limit, by why", access.refused.clone());
        metrics
    }

    pub fn attempt(&self, outcome: &str) {
        self.deliveries.get_or_create(&vec![("outcome".into(), outcome.into())]).inc();
    }

    pub fn dead_letter(&self, reason: &str) {
        self.dead_letters.get_or_create(&vec![("reason".into(), reason.into())]).inc();
    }

    /// The HTTP answer to a scrape.
    pub fn scrape(&self) -> ([(&'static str, &'static str); 1], String) {
        crate::metrics::scrape(&self.registry)
    }
}
