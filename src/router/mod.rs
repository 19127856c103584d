//! Handlers, the tower layers around them, and the router that picks one per command type.
//!
//! A [`Handler`] is typed: it declares its input and output types, and the router
//! erases them behind JSON so one worker can serve many command types. Because the
//! types derive `JsonSchema`, the router also knows every command's payload and result
//! schema, which is how a service's own handlers appear in its AsyncAPI document.
//!
//! # Layers
//!
//! Courier has no middleware system of its own: it integrates with tower. Each route
//! is a tower [`Service`] from a [`Call`] (payload and [`Context`]) to
//! the JSON result, so any tower layer fits around a handler: a timeout, a
//! concurrency or rate limit, tracing, your own. [`Router::layer`] wraps every route
//! registered so far, [`Router::route_layer`] one route; a later layer wraps the
//! earlier ones. The worker adds one more, outermost: Courier's `handler_seconds`
//! metric. One call, outside in:
//!
//! ```text
//! worker (admission, deadline, cancel, panic) -> handler_seconds -> your layers
//!     -> decode the payload -> Handler::handle -> encode the output
//! ```
//!
//! A layer must give a service that is `Clone + Send + 'static` with an error that
//! converts into [`BoxError`]; it need not be `Sync`. A service that
//! is not `Clone`, such as `tower::limit::RateLimit`, goes in behind a
//! `tower::buffer::BufferLayer`, which is, as one layer:
//! `ServiceBuilder::new().layer(BufferLayer::new(64)).layer(RateLimitLayer::new(10, second))`
//! (the buffer spawns a task, so build that router inside the tokio runtime).
//! What comes out of the layers is sorted by
//! [`Route::call`] into a [`RouteError`]: a [`HandlerError`] keeps its meaning
//! through any layer, a payload that does not decode is
//! [`RouteError::InvalidInput`], a layer's timeout is a retryable [`TIMEOUT`], and
//! any other layer error a retryable [`MIDDLEWARE_ERROR`] (a layer failing says
//! something about this worker, nothing about the command, so another attempt may
//! pass).
//!
//! # Not layers, on purpose
//!
//! Admission (a duplicate of a finished command, a cancel before the start, an
//! unknown type), the deadline, a cancel while running and the catching of panics stay
//! in the worker's core (`worker/execute.rs`). They decide what Courier publishes (a
//! `timed_out` or `cancelled` final event, a dead letter) and must hold whatever
//! layers a user adds, so they sit outside every layer: the worker races the whole
//! layered call against the deadline and a cancel, and catches a panic that unwinds
//! out of it. No layer can extend a deadline, hide a cancel, or see a command the
//! worker did not admit. A layer's own timeout is a different thing from the
//! deadline: a retryable failure of one attempt, not the end of the command.

mod call;
mod context;
mod handler;
mod metrics;
mod profile;
pub mod push;
mod route;
#[cfg(test)]
mod test_handlers;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use tower::{BoxError, Layer, Service};

pub(crate) use context::ProgressSink;
pub use context::Context;
pub use handler::{Handler, HandlerError};
pub use call::{Call, HandedOff, INVALID_OUTPUT, MIDDLEWARE_ERROR, TIMEOUT};
pub use route::{HandlerFuture, Route, RouteError, RouteService};

/// Maps command types to handlers. Cheap to clone; shared by all of a worker's tasks.
#[derive(Clone, Default)]
pub struct Router {
    routes: BTreeMap<String, Route>,
}

impl Router {
    /// A router with no routes: add them with [`Router::route`].
    pub fn new() -> Self {
        Router::default()
    }

    /// Registers `handler` for `command_type`; a later registration replaces an earlier.
    pub fn route<H: Handler>(self, command_type: impl Into<String>, handler: H) -> Self {
        self.route_described(command_type, "", handler)
    }

    /// Like [`Router::route`], with a description shown in the AsyncAPI document.
    pub fn route_described<H: Handler>(
        mut self,
        command_type: impl Into<String>,
        description: impl Into<String>,
        handler: H,
    ) -> Self {
        self.routes.insert(command_type.into(), Route::new(handler, description.into()));
        self
    }

    /// Registers a route built elsewhere (an HTTP push route, a declared command
    /// type); a later registration replaces an earlier.
    pub fn route_built(mut self, command_type: impl Into<String>, route: Route) -> Self {
        self.routes.insert(command_type.into(), route);
        self
    }

    /// Wraps every route registered so far in `layer` (routes added later are not):
    /// for what holds for all command types, such as a concurrency limit per type
    /// (each route gets its own layered service, so its own limit).
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<RouteService> + Clone,
        L::Service: Service<Call, Response = Value> + Clone + Send + 'static,
        <L::Service as Service<Call>>::Error: Into<BoxError>,
        <L::Service as Service<Call>>::Future: Send + 'static,
    {
        self.routes = std::mem::take(&mut self.routes).into_iter().map(|(t, r)| (t, r.layered(layer.clone()))).collect();
        self
    }

    /// Wraps the route of `command_type` in `layer`: for what one command type needs,
    /// such as a timeout on a call to a slow dependency. (Unlike axum's method of this
    /// name, which skips only the fallback: Courier has none.)
    ///
    /// A layer's timeout fails one attempt with a retryable [`TIMEOUT`], so the worker
    /// sends it to a retry tier; the command's deadline, by contrast, ends it
    /// `timed_out`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use courier::router::{RouteError, TIMEOUT};
    /// use courier::{Context, Handler, HandlerError, Router};
    /// use tower::timeout::TimeoutLayer;
    ///
    /// /// Looks a user up in a directory that sometimes hangs.
    /// struct Lookup;
    ///
    /// impl Handler for Lookup {
    ///     type Input = String;
    ///     type Output = String;
    ///     async fn handle(&self, name: String, _ctx: Context) -> Result<String, HandlerError> {
    ///         tokio::time::sleep(Duration::from_secs(3600)).await; // today it hangs
    ///         Ok(name)
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let router = Router::new()
    ///     .route("user.lookup", Lookup)
    ///     .route("echo", courier::demo::Echo)
    ///     .route_layer("user.lookup", TimeoutLayer::new(Duration::from_millis(20)));
    ///
    /// let lookup = router.get("user.lookup").unwrap();
    /// let err = lookup.call("ada".into(), Context::for_test("user.lookup")).await.unwrap_err();
    /// let RouteError::Handler(e) = err else { panic!("not a handler error: {err}") };
    /// assert_eq!((e.code.as_str(), e.retryable), (TIMEOUT, true));
    ///
    /// // The other command type has no timeout.
    /// let echo = router.get("echo").unwrap();
    /// assert!(echo.call("hi".into(), Context::for_test("echo")).await.is_ok());
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// If no route for `command_type` is registered yet: a layer meant for a command
    /// type must not silently fall away over a typo or the order of the calls.
    pub fn route_layer<L>(mut self, command_type: &str, layer: L) -> Self
    where
        L: Layer<RouteService>,
        L::Service: Service<Call, Response = Value> + Clone + Send + 'static,
        <L::Service as Service<Call>>::Error: Into<BoxError>,
        <L::Service as Service<Call>>::Future: Send + 'static,
    {
        let Some(route) = self.routes.remove(command_type) else {
            panic!("Router::route_layer: no route for command type {command_type:?} (register it first)");
        };
        self.routes.insert(command_type.to_string(), route.layered(layer));
        self
    }

    /// Every route wrapped in Courier's handler metric, outermost, so it times the
    /// user's layers too. The worker calls this once it has the router.
    pub(crate) fn instrumented(self, metrics: Arc<crate::metrics::Metrics>) -> Router {
        self.layer(metrics::HandlerMetricsLayer::new(metrics))
    }

    /// The route for `command_type`, if one is registered.
    pub fn get(&self, command_type: &str) -> Option<&Route> {
        self.routes.get(command_type)
    }

    /// Registered command types with their routes, in name order.
    pub fn routes(&self) -> impl Iterator<Item = (&str, &Route)> {
        self.routes.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Whether no command type is registered (a worker refuses to start so).
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;
    use tower::limit::{ConcurrencyLimitLayer, RateLimitLayer};
    use tower::timeout::TimeoutLayer;

    use super::test_handlers::{Outcome, Scripted};
    use super::*;

    fn two_routes() -> Router {
        Router::new().route("a", Scripted::default()).route("b", Scripted::default())
    }

    async fn hang(router: &Router, command_type: &str) -> Result<Value, RouteError> {
        router.get(command_type).unwrap().call(json!(Outcome::Hang), Context::for_test(command_type)).await
    }

    fn timed_out(result: Result<Value, RouteError>) -> bool {
        matches!(result, Err(RouteError::Handler(e)) if e.code == TIMEOUT)
    }

    #[tokio::test]
    async fn layer_wraps_every_route_registered_so_far() {
        let router = two_routes().layer(TimeoutLayer::new(Duration::from_millis(1))).route("later", Scripted::default());
        assert!(timed_out(hang(&router, "a").await));
        assert!(timed_out(hang(&router, "b").await));
        let later = router.get("later").unwrap().call(json!(Outcome::Hang), Context::for_test("later"));
        assert!(tokio::time::timeout(Duration::from_millis(20), later).await.is_err(), "added after the layer");
    }

    #[tokio::test]
    async fn route_layer_wraps_one_route() {
        let router = two_routes().route_layer("a", TimeoutLayer::new(Duration::from_millis(1)));
        assert!(timed_out(hang(&router, "a").await));
        let b = router.get("b").unwrap().call(json!(Outcome::Hang), Context::for_test("b"));
        assert!(tokio::time::timeout(Duration::from_millis(20), b).await.is_err(), "b has no timeout");
    }

    #[test]
    #[should_panic(expected = "no route for command type \"c\"")]
    fn route_layer_on_an_unknown_type_panics() {
        let _ = two_routes().route_layer("c", TimeoutLayer::new(Duration::from_millis(1)));
    }

    #[tokio::test]
    async fn a_concurrency_limit_holds_the_second_call_until_the_first_returns() {
        let handler = Scripted::default();
        let router = Router::new().route("a", handler.clone()).layer(ConcurrencyLimitLayer::new(1));
        let route = router.get("a").unwrap();
        let (first_ctx, second_ctx) = (Context::for_test("a"), Context::for_test("a"));
        let (first_token, second_token) = (first_ctx.cancel.clone(), second_ctx.cancel.clone());
        let mut first = route.call(json!(Outcome::Hang), first_ctx);
        let mut second = route.call(json!(Outcome::Hang), second_ctx);
        assert!(futures::poll!(&mut first).is_pending());
        second_token.cancel(); // would let it return at once, if it ran
        assert!(futures::poll!(&mut second).is_pending());
        assert_eq!(handler.started(), 1, "the second call waits for the permit");
        first_token.cancel();
        assert_eq!(first.await.unwrap(), json!("a"));
        assert_eq!(second.await.unwrap(), json!("a"));
        assert_eq!(handler.started(), 2);
    }

    #[tokio::test]
    async fn a_rate_limit_fits_behind_a_buffer() {
        // RateLimit is not Clone, so it goes in together with the buffer that is.
        let handler = Scripted::default();
        let limited = tower::ServiceBuilder::new()
            .layer(tower::buffer::BufferLayer::new(8))
            .layer(RateLimitLayer::new(1, Duration::from_secs(3600)));
        let router = Router::new().route("a", handler.clone()).layer(limited);
        let route = router.get("a").unwrap();
        assert_eq!(route.call(json!(Outcome::Succeed), Context::for_test("a")).await.unwrap(), json!("a"));
        let second = route.call(json!(Outcome::Succeed), Context::for_test("a"));
        assert!(tokio::time::timeout(Duration::from_millis(50), second).await.is_err(), "one call an hour");
        assert_eq!(handler.started(), 1);
    }
}
