//! [`HandlerMetricsLayer`]: Courier's own handler metric, the first built-in layer.
//!
//! Observes `courier_handler_seconds{command_type}` for every call, from the moment
//! it enters the layers inside this one until it returns, or until it is dropped
//! unfinished: the worker drops a handler that outlives its deadline, cancel or
//! partition (after the grace period), and that time counts too, or a stuck handler
//! would never show up in the histogram at all. The worker puts this layer outermost
//! ([`Router::instrumented`](super::Router::instrumented)), so the time includes the
//! user's layers but not a wait for their readiness (a concurrency limit's queue).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context as TaskContext, Poll};
use std::time::Instant;

use prometheus_client::metrics::histogram::Histogram;
use tower::{Layer, Service};

use super::call::Call;
use crate::metrics::Metrics;

/// Wraps a route's service in [`HandlerMetrics`].
#[derive(Clone)]
pub(crate) struct HandlerMetricsLayer {
    metrics: Arc<Metrics>,
}

impl HandlerMetricsLayer {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        HandlerMetricsLayer { metrics }
    }
}

impl<S> Layer<S> for HandlerMetricsLayer {
    type Service = HandlerMetrics<S>;

    fn layer(&self, inner: S) -> HandlerMetrics<S> {
        HandlerMetrics { inner, metrics: self.metrics.clone() }
    }
}

/// Times each call of the service it wraps.
#[derive(Clone)]
pub(crate) struct HandlerMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S: Service<Call>> Service<Call> for HandlerMetrics<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = Timed<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: Call) -> Timed<S::Future> {
        let labels = vec![("command_type".to_string(), call.ctx.command_type.clone())];
        let histogram = self.metrics.handler_seconds.get_or_create(&labels).clone();
        let observation = Some(Observation { started: Instant::now(), histogram });
        Timed { inner: self.inner.call(call), observation }
    }
}

pin_project_lite::pin_project! {
    /// A call's future that observes its time when it completes or is dropped.
    pub(crate) struct Timed<F> {
        #[pin]
        inner: F,
        observation: Option<Observation>,
    }
}

impl<F: Future> Future for Timed<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        let output = ready!(this.inner.poll(cx));
        // Observed now, not when the worker gets round to dropping the future.
        this.observation.take();
        Poll::Ready(output)
    }
}

/// Observes the time since `started` when dropped: the drop guard that records a
/// call however it ends (returned, dropped unfinished, or unwound by a panic).
pub(crate) struct Observation {
    started: Instant,
    histogram: Histogram,
}

impl Drop for Observation {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};
    use tower::ServiceExt;

    use super::*;
    use crate::router::test_handlers::{Outcome, Scripted};
    use crate::router::{Context, Router};

    fn observations(metrics: &Metrics, command_type: &str) -> u64 {
        let prefix = format!("courier_handler_seconds_count{{command_type=\"{command_type}\"}} ");
        let rendered = metrics.render();
        rendered.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |n| n.parse().unwrap())
    }

    #[tokio::test]
    async fn observes_a_call_when_it_returns() {
        let metrics = Metrics::new();
        let service = HandlerMetricsLayer::new(metrics.clone())
            .layer(tower::service_fn(|_: Call| async { Ok::<_, std::convert::Infallible>(Value::Null) }));
        service.oneshot(Call { input: Value::Null, ctx: Context::for_test("quick") }).await.unwrap();
        assert_eq!(observations(&metrics, "quick"), 1);
    }

    #[tokio::test]
    async fn observes_a_call_dropped_unfinished_once() {
        let metrics = Metrics::new();
        let router = Router::new().route("stuck", Scripted::default()).instrumented(metrics.clone());
        let mut call = router.get("stuck").unwrap().call(json!(Outcome::Hang), Context::for_test("stuck"));
        assert!(futures::poll!(&mut call).is_pending());
        assert_eq!(observations(&metrics, "stuck"), 0, "not before it ends");
        drop(call);
        assert_eq!(observations(&metrics, "stuck"), 1);
    }

    #[tokio::test]
    async fn a_returned_call_is_observed_once_not_again_at_drop() {
        let metrics = Metrics::new();
        let router = Router::new().route("t", Scripted::default()).instrumented(metrics.clone());
        let mut call = router.get("t").unwrap().call(json!(Outcome::Succeed), Context::for_test("t"));
        assert!(futures::poll!(&mut call).is_ready());
        assert_eq!(observations(&metrics, "t"), 1, "at completion, before the drop");
        drop(call);
        assert_eq!(observations(&metrics, "t"), 1);
    }
}
