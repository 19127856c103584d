//! The gateway's own Prometheus registry, served at `/metrics` on the API's port.
//!
//! Its own registry rather than the worker's ([`crate::metrics`]) because a gateway
//! usually runs as its own process and its instruments are about HTTP, not handlers.
//! Requests are counted per route *template* (`/v1/operations/{name}`), labelled by
//! each route itself, so ids never become label values.

use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// The gateway's instruments.
pub struct GatewayMetrics {
    registry: Registry,
    /// HTTP requests by route template, method and status.
    pub requests: Family<Labels, Counter>,
    /// Commands sent (idempotent replays excluded).
    pub submitted: Counter,
    /// Requests answered from the idempotency index.
    pub replays: Counter,
    /// Operations held in memory.
    pub operations: Gauge,
    /// Idempotency keys held in memory.
    pub idempotency_keys: Gauge,
    /// Callbacks of handed-off commands accepted, by method (`complete`, `progress`, `heartbeat`).
    pub callbacks: Family<Labels, Counter>,
    /// Callbacks refused for their token, by why (`forged`, `expired`).
    pub callbacks_refused: Family<Labels, Counter>,
    /// Requests forwarded to the gateway of the group that owns their partition.
    pub forwarded: Counter,
    /// Listings, batches and purges gathered from every owner of the group.
    pub gathered: Counter,
    /// Operations read from the status topic because no gateway owned their partition.
    pub answered_from_topic: Counter,
}

impl GatewayMetrics {
    /// `access`'s refusals are registered here too (`auth_refused{why}`), so one
    /// scrape shows them beside the requests.
    pub fn new(access: &crate::auth::Access) -> Arc<Self> {
        let mut registry = Registry::with_prefix("courier_gateway");
        let requests = Family::<Labels, Counter>::default();
        let submitted = Counter::default();
        let replays = Counter::default();
        let operations = Gauge::default();
        let idempotency_keys = Gauge::default();
        let callbacks = Family::<Labels, Counter>::default();
        let callbacks_refused = Family::<Labels, Counter>::default();
        registry.register("http_requests", "HTTP requests by route, method and status", requests.clone());
        registry.register("commands_submitted", "Commands sent to the commands topic", submitted.clone());
        registry.register("idempotent_replays", "Requests answered by replaying an earlier answer", replays.clone());
        registry.register("operations_tracked", "Operations held in memory", operations.clone());
        registry.register("idempotency_keys", "Idempotency keys held in memory", idempotency_keys.clone());
        registry.register("callbacks", "Callbacks of handed-off commands accepted, by method", callbacks.clone());
        registry.register("callbacks_refused", "Callbacks refused for their token, by why", callbacks_refused.clone());
        registry.register("auth_refused", "Requests refused by authentication, scope or rate limit, by why", access.refused.clone());
        let (forwarded, gathered, answered_from_topic) = (Counter::default(), Counter::default(), Counter::default());
        registry.register("forwarded", "Requests forwarded to the gateway of the group that owns their partition", forwarded.clone());
        registry.register("gathered", "Listings, batches and purges gathered from every gateway of the group", gathered.clone());
        registry.register("answered_from_topic", "Operations read from the status topic while no gateway owned their partition", answered_from_topic.clone());
        Arc::new(GatewayMetrics {
            registry,
            requests,
            submitted,
            replays,
            operations,
            idempotency_keys,
            callbacks,
            callbacks_refused,
            forwarded,
            gathered,
            answered_from_topic,
        })
    }

    /// The registry in OpenMetrics text format, as a response.
    pub fn response(&self) -> Response {
        crate::metrics::scrape(&self.registry).into_response()
    }

    fn count(&self, route: &str, method: &str, status: u16) {
        self.requests
            .get_or_create(&vec![
                ("route".into(), route.into()),
                ("method".into(), method.into()),
                ("status".into(), status.to_string()),
            ])
            .inc();
    }
}

/// Wraps one route so its requests are counted under `route`.
pub fn counted<S>(metrics: &Arc<GatewayMetrics>, route: &'static str, inner: MethodRouter<S>) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    let metrics = metrics.clone();
    inner.layer(middleware::from_fn(move |req: Request, next: Next| {
        let metrics = metrics.clone();
        async move {
            let method = req.method().as_str().to_string();
            let response = next.run(req).await;
            metrics.count(route, &method, response.status().as_u16());
            response
        }
    }))
}
