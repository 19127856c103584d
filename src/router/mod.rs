//! Handlers and the router that picks one per command type.
//!
//! A [`Handler`] is typed: it declares its input and output types, and the router
//! erases them behind JSON so one worker can serve many command types. Because the
//! types derive `JsonSchema`, the router also knows every command's payload and result
//! schema, which is how a service's own handlers appear in its AsyncAPI document.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use schemars::{JsonSchema, Schema};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::envelope::{ErrorInfo, Progress};

/// A handler's failure. `retryable` tells Courier whether another attempt could succeed
/// (a timeout talking to a dependency) or not (the input is wrong).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct HandlerError {
    pub code: String,
    pub message: String,
    pub retryable: bool,
}

impl HandlerError {
    /// A failure that will happen again on retry.
    pub fn permanent(code: impl Into<String>, message: impl Into<String>) -> Self {
        HandlerError { code: code.into(), message: message.into(), retryable: false }
    }

    /// A failure that another attempt, later, may not hit.
    pub fn retryable(code: impl Into<String>, message: impl Into<String>) -> Self {
        HandlerError { code: code.into(), message: message.into(), retryable: true }
    }

    pub fn into_info(self) -> ErrorInfo {
        ErrorInfo { code: self.code, message: self.message, retryable: self.retryable }
    }
}

/// Sends progress events on behalf of a running handler.
pub type ProgressSink = Arc<dyn Fn(Progress) + Send + Sync>;

/// Everything a handler may want to know about the command it runs, and its two ways
/// to talk back while running: the cancellation token (listen) and progress (speak).
#[derive(Clone)]
pub struct Context {
    pub command_id: Uuid,
    pub command_type: String,
    /// The command's key as sent: any bytes (`std::str::from_utf8` for a text key).
    pub key: Option<Vec<u8>>,
    pub attempt: u32,
    pub deadline: Option<DateTime<Utc>>,
    /// Fires when the deadline passes, the command is cancelled, or the worker must
    /// give the partition up. A handler doing long work should select on it.
    pub cancel: CancellationToken,
    progress: ProgressSink,
}

impl Context {
    pub fn new(
        command_id: Uuid,
        command_type: String,
        key: Option<Vec<u8>>,
        attempt: u32,
        deadline: Option<DateTime<Utc>>,
        cancel: CancellationToken,
        progress: ProgressSink,
    ) -> Self {
        Context { command_id, command_type, key, attempt, deadline, cancel, progress }
    }

    /// Publishes a `progress` event (fire-and-forget: progress is advisory).
    pub fn progress(&self, percent: f32, message: impl Into<Option<String>>) {
        (self.progress)(Progress { percent: percent.clamp(0.0, 100.0), message: message.into() });
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// Runs one command type. Implement this for your own types; register with
/// [`Router::route`].
pub trait Handler: Send + Sync + 'static {
    /// The command payload; decoding failures become `invalid_payload` failures.
    type Input: DeserializeOwned + JsonSchema + Send + 'static;
    /// The value published in the `completed` event.
    type Output: Serialize + JsonSchema + Send + 'static;

    fn handle(&self, input: Self::Input, ctx: Context) -> impl Future<Output = Result<Self::Output, HandlerError>> + Send;
}

/// A boxed future returning a handler's JSON result.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Value, HandlerError>> + Send>>;

/// A handler with its types erased to JSON, as the worker calls it.
trait ErasedHandler: Send + Sync {
    fn call(&self, data: Value, ctx: Context) -> HandlerFuture;
    /// Whether `data` decodes as the handler's input, without running it.
    fn decodes(&self, data: &Value) -> Result<(), String>;
}

struct Typed<H>(Arc<H>);

impl<H: Handler> ErasedHandler for Typed<H> {
    fn call(&self, data: Value, ctx: Context) -> HandlerFuture {
        let handler = self.0.clone();
        Box::pin(async move {
            let input: H::Input = serde_json::from_value(data)
                .map_err(|e| HandlerError::permanent("invalid_payload", e.to_string()))?;
            let output = handler.handle(input, ctx).await?;
            serde_json::to_value(output).map_err(|e| HandlerError::permanent("invalid_output", e.to_string()))
        })
    }

    fn decodes(&self, data: &Value) -> Result<(), String> {
        <H::Input as serde::Deserialize>::deserialize(data).map(drop).map_err(|e| e.to_string())
    }
}

/// A registered command type: its handler and its contract.
#[derive(Clone)]
pub struct Route {
    handler: Arc<dyn ErasedHandler>,
    /// JSON Schema of the command payload.
    pub input_schema: Schema,
    /// JSON Schema of the `completed` result.
    pub output_schema: Schema,
    /// One-line description for the contract.
    pub description: String,
}

impl Route {
    pub fn call(&self, data: Value, ctx: Context) -> HandlerFuture {
        self.handler.call(data, ctx)
    }

    /// Whether `data` decodes as this route's input, exactly as [`Route::call`]
    /// would decode it. A JSON Schema says less than the type: `5.0` and
    /// `1e30` are integers to JSON Schema but not to a `u64`, so the gateway asks
    /// this too before it accepts a payload the worker would then refuse.
    pub fn decodes(&self, data: &Value) -> Result<(), String> {
        self.handler.decodes(data)
    }
}

/// Maps command types to handlers. Cheap to clone; shared by all of a worker's tasks.
#[derive(Clone, Default)]
pub struct Router {
    routes: BTreeMap<String, Route>,
}

impl Router {
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
        let route = Route {
            handler: Arc::new(Typed(Arc::new(handler))),
            input_schema: schemars::schema_for!(H::Input),
            output_schema: schemars::schema_for!(H::Output),
            description: description.into(),
        };
        self.routes.insert(command_type.into(), route);
        self
    }

    pub fn get(&self, command_type: &str) -> Option<&Route> {
        self.routes.get(command_type)
    }

    /// Registered command types with their routes, in name order.
    pub fn routes(&self) -> impl Iterator<Item = (&str, &Route)> {
        self.routes.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}
