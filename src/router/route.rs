//! [`Route`]: one command type's layered service and its contract; [`RouteError`]: why
//! a call through it produced no result.
//!
//! The worker sees no layers and no `BoxError`: [`Route::call`] drives the layered
//! service and sorts whatever came out of it into the two outcomes the worker acts on.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use schemars::Schema;
use serde_json::Value;
use tower::util::BoxCloneService;
use tower::{BoxError, Layer, Service, ServiceExt};

use super::call::{Call, HandedOff, MIDDLEWARE_ERROR, TIMEOUT};
use super::handler::{decodes_as, InvalidInput, Typed};
use super::{Context, Handler, HandlerError};
use crate::retry::RetryPolicy;

/// A route's handler with the layers applied so far, types erased: what the next
/// layer wraps. Its errors are boxed so that any layer's error fits.
pub type RouteService = BoxCloneService<Call, Value, BoxError>;

/// A routed call in flight, as the worker awaits it.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Value, RouteError>> + Send>>;

/// Why a routed call did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The payload does not decode as the handler's input (the worker dead-letters it as `schema_violation`).
    #[error("payload does not match the handler's input: {0}")]
    InvalidInput(String),
    /// The handler, or a layer around it, failed.
    #[error(transparent)]
    Handler(HandlerError),
    /// The handler took the command over and completes it later through the
    /// gateway (an HTTP handler's `202`): deferred completion.
    #[error(transparent)]
    HandedOff(HandedOff),
}

impl RouteError {
    /// Sorts an error out of the layered service: the handler's own and a bad input
    /// keep their meaning through any layer; a layer's own failure is retryable,
    /// because it says something about this worker's state (a limit, a closed
    /// buffer, a timeout), nothing about the command.
    fn from_layers(error: BoxError) -> Self {
        let error = match error.downcast::<HandlerError>() {
            Ok(handler) => return RouteError::Handler(*handler),
            Err(other) => other,
        };
        let error = match error.downcast::<HandedOff>() {
            Ok(_) => return RouteError::HandedOff(HandedOff),
            Err(other) => other,
        };
        let error = match error.downcast::<InvalidInput>() {
            Ok(invalid) => return RouteError::InvalidInput(invalid.0),
            Err(other) => other,
        };
        if error.is::<tower::timeout::error::Elapsed>() {
            return RouteError::Handler(HandlerError::retryable(TIMEOUT, "a timeout layer elapsed before the handler returned"));
        }
        RouteError::Handler(HandlerError::retryable(MIDDLEWARE_ERROR, error.to_string()))
    }
}

/// Checks a payload as the route's handler would take it, without running anything.
pub(crate) type Decodes = Arc<dyn Fn(&Value) -> Result<(), String> + Send + Sync>;

/// A registered command type: its handler with its layers, and its contract.
#[derive(Clone)]
pub struct Route {
    service: Locked,
    /// The handler's input type (or declared schema), to check a payload without running anything.
    decodes: Decodes,
    /// JSON Schema of the command payload.
    pub input_schema: Schema,
    /// JSON Schema of the `completed` result.
    pub output_schema: Schema,
    /// One-line description for the contract.
    pub description: String,
    /// This type's own retry tiers and attempts, instead of the worker's.
    pub retry: Option<RetryPolicy>,
    /// The deadline of a command of this type sent without one, counted from its
    /// `ce_time` (or from when the worker or gateway first sees it).
    pub default_deadline: Option<Duration>,
    /// For a command handed off (deferred completion): the lease, renewed by each
    /// heartbeat or progress report; past it the command ends `timed_out`, or is
    /// retried when the route has its own retry policy. None: no lease.
    pub heartbeat: Option<Duration>,
    /// Where the cancel of a handed-off command is POSTed (the handler's own cancel).
    pub cancel: Option<super::call::CancelHook>,
    /// This type's commands run in no key order (`ordering: none`), whatever the
    /// worker's `--ordering`: a handed-off command then holds nothing back.
    pub unordered: bool,
    /// The handler may take a command over (`202`, deferred completion): the worker
    /// then keeps a copy of the payload for a later retry.
    pub hands_off: bool,
    /// The shape a handler of this type completes in (`http.profile`): the gateway
    /// reads a completion in it as well as in Courier's own.
    pub profile: super::profile::PushProfile,
}

impl Route {
    pub(super) fn new<H: Handler>(handler: H, description: String) -> Self {
        Route {
            service: Locked(Mutex::new(RouteService::new(Typed(Arc::new(handler))))),
            decodes: Arc::new(decodes_as::<H::Input>),
            input_schema: schemars::schema_for!(H::Input),
            output_schema: schemars::schema_for!(H::Output),
            description,
            retry: None,
            default_deadline: None,
            heartbeat: None,
            cancel: None,
            unordered: false,
            hands_off: false,
            profile: Default::default(),
        }
    }

    /// A route around an untyped service (a declared command type, such as an HTTP
    /// push handler), whose contract is the schemas given and whose payload check is
    /// `decodes`. The service itself must check its input and answer
    /// [`InvalidInput`] for a payload `decodes` refuses.
    pub(crate) fn untyped(service: RouteService, decodes: Decodes, input_schema: Schema, output_schema: Schema, description: String) -> Self {
        Route { service: Locked(Mutex::new(service)), decodes, input_schema, output_schema, description, retry: None, default_deadline: None, heartbeat: None, cancel: None, unordered: false, hands_off: false, profile: Default::default() }
    }

    /// The same route with `layer` around its service (outermost so far).
    pub(super) fn layered<L>(self, layer: L) -> Self
    where
        L: Layer<RouteService>,
        L::Service: Service<Call, Response = Value> + Clone + Send + 'static,
        <L::Service as Service<Call>>::Error: Into<BoxError>,
        <L::Service as Service<Call>>::Future: Send + 'static,
    {
        let inner = self.service.get();
        let service = RouteService::new(layer.layer(inner).map_err(Into::into));
        Route { service: Locked(Mutex::new(service)), ..self }
    }

    /// Runs the command through the route's layers and handler: what the worker
    /// calls, and what a test can call with [`Context::for_test`]. Each call drives
    /// its own clone of the service (`oneshot`: ready, then call), as tower expects;
    /// clones share a layer's state, so a concurrency limit counts every call. A
    /// handler that returns at once is done on the future's first poll.
    pub fn call(&self, input: Value, ctx: Context) -> HandlerFuture {
        let service = self.service.get();
        Box::pin(async move { service.oneshot(Call { input, ctx }).await.map_err(RouteError::from_layers) })
    }

    /// This route's retry policy: its own, else `default` (the worker's).
    pub fn retry_policy<'a>(&'a self, default: &'a RetryPolicy) -> &'a RetryPolicy {
        self.retry.as_ref().unwrap_or(default)
    }

    /// Whether `data` decodes as this route's input, exactly as [`Route::call`]
    /// would decode it. A JSON Schema says less than the type: `5.0` and
    /// `1e30` are integers to JSON Schema but not to a `u64`, so the gateway asks
    /// this too before it accepts a payload the worker would then refuse.
    pub fn decodes(&self, data: &Value) -> Result<(), String> {
        (self.decodes)(data)
    }
}

/// The layered service behind a lock. A [`RouteService`] is `Send` but not `Sync`,
/// and one router is shared by every lane task; the lock is held only to clone the
/// service for one call, so layers need not be `Sync`.
struct Locked(Mutex<RouteService>);

impl Locked {
    fn get(&self) -> RouteService {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Clone for Locked {
    fn clone(&self) -> Self {
        Locked(Mutex::new(self.get()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::call::INVALID_OUTPUT;
    use std::time::Duration;

    use schemars::JsonSchema;
    use serde::Serialize;
    use serde_json::json;
    use tower::timeout::TimeoutLayer;

    use super::*;
    use crate::router::test_handlers::{Outcome, Scripted};

    fn route() -> Route {
        Route::new(Scripted::default(), String::new())
    }

    async fn call(route: &Route, outcome: Outcome) -> Result<Value, RouteError> {
        route.call(json!(outcome), Context::for_test("t")).await
    }

    #[tokio::test]
    async fn a_handler_error_passes_through_layers_unchanged() {
        let route = route().layered(TimeoutLayer::new(Duration::from_secs(60)));
        let err = call(&route, Outcome::Fail("card_declined".into())).await.unwrap_err();
        assert!(matches!(err, RouteError::Handler(ref e) if *e == HandlerError::permanent("card_declined", "as scripted")));
    }

    #[tokio::test]
    async fn a_layer_timeout_is_a_retryable_timeout() {
        let route = route().layered(TimeoutLayer::new(Duration::from_millis(1)));
        let err = call(&route, Outcome::Hang).await.unwrap_err();
        assert!(matches!(err, RouteError::Handler(ref e) if e.code == TIMEOUT && e.retryable), "{err:?}");
    }

    #[tokio::test]
    async fn any_other_layer_error_is_a_retryable_middleware_error() {
        let refuse = tower::layer::layer_fn(|_inner: RouteService| {
            tower::service_fn(|_: Call| async { Err::<Value, _>(std::io::Error::other("pool closed")) })
        });
        let err = call(&route().layered(refuse), Outcome::Succeed).await.unwrap_err();
        assert!(matches!(err, RouteError::Handler(ref e) if e.code == MIDDLEWARE_ERROR && e.retryable && e.message == "pool closed"));
    }

    #[tokio::test]
    async fn a_payload_that_does_not_decode_is_invalid_input_and_runs_nothing() {
        let handler = Scripted::default();
        let route = Route::new(handler.clone(), String::new()).layered(TimeoutLayer::new(Duration::from_secs(60)));
        let err = route.call(json!({"no": "such outcome"}), Context::for_test("t")).await.unwrap_err();
        assert!(matches!(err, RouteError::InvalidInput(_)), "{err:?}");
        assert_eq!(handler.started(), 0);
        assert!(route.decodes(&json!({"no": "such outcome"})).is_err());
        assert!(route.decodes(&json!(Outcome::Succeed)).is_ok());
    }

    #[tokio::test]
    async fn an_output_that_does_not_serialize_is_a_permanent_invalid_output() {
        struct Opaque;
        #[derive(JsonSchema)]
        struct Unserializable;
        impl Serialize for Unserializable {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("not today"))
            }
        }
        impl Handler for Opaque {
            type Input = Value;
            type Output = Unserializable;
            async fn handle(&self, _: Value, _: Context) -> Result<Unserializable, HandlerError> {
                Ok(Unserializable)
            }
        }
        let err = Route::new(Opaque, String::new()).call(Value::Null, Context::for_test("t")).await.unwrap_err();
        assert!(matches!(err, RouteError::Handler(ref e) if e.code == INVALID_OUTPUT && !e.retryable));
    }
}
