//! [`Handler`], the typed way to write one command type, and the service it becomes.
//!
//! A handler declares its input and output types; [`Typed`] is the innermost tower
//! service of its route, which decodes the JSON payload into the input, runs the
//! handler and encodes the output. Every layer a user adds wraps it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use schemars::JsonSchema;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;
use tower::{BoxError, Service};

use super::call::{Call, INVALID_OUTPUT};
use super::Context;
use crate::envelope::ErrorInfo;

/// A handler's failure. `retryable` tells Courier whether another attempt could succeed
/// (a timeout talking to a dependency) or not (the input is wrong).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct HandlerError {
    /// Stable, machine-readable reason, published as the event's `error.code`:
    /// callers branch on it, so keep it the same across releases.
    pub code: String,
    /// For people reading the event or the log.
    pub message: String,
    /// Whether the worker sends the command to a retry tier (true) or fails it now.
    pub retryable: bool,
    /// The least time to wait before the next attempt (an HTTP `Retry-After`): the
    /// retry waits for the longer of this and its tier's delay.
    pub retry_after: Option<std::time::Duration>,
}

impl HandlerError {
    /// A failure that will happen again on retry.
    pub fn permanent(code: impl Into<String>, message: impl Into<String>) -> Self {
        HandlerError { code: code.into(), message: message.into(), retryable: false, retry_after: None }
    }

    /// A failure that another attempt, later, may not hit.
    pub fn retryable(code: impl Into<String>, message: impl Into<String>) -> Self {
        HandlerError { code: code.into(), message: message.into(), retryable: true, retry_after: None }
    }

    /// The same failure, retried no sooner than `min` from now: for a dependency that
    /// said when to come back.
    pub fn wait_at_least(mut self, min: std::time::Duration) -> Self {
        self.retry_after = Some(min);
        self
    }

    /// The error as a result event carries it.
    pub fn into_info(self) -> ErrorInfo {
        ErrorInfo { code: self.code, message: self.message, retryable: self.retryable }
    }
}

/// Runs one command type. Implement this for your own types; register with
/// [`Router::route`](super::Router::route).
pub trait Handler: Send + Sync + 'static {
    /// The command payload; a payload that does not decode is dead-lettered as a
    /// `schema_violation` without running the handler.
    type Input: DeserializeOwned + JsonSchema + Send + 'static;
    /// The value published in the `completed` event.
    type Output: Serialize + JsonSchema + Send + 'static;

    /// Runs the command. Return an error rather than panic: a panic is caught, but
    /// dead-letters the command as `handler_panic`.
    fn handle(&self, input: Self::Input, ctx: Context) -> impl Future<Output = Result<Self::Output, HandlerError>> + Send;
}

/// The payload did not decode as the handler's input: the error [`Typed`] returns
/// before running the handler, told apart from the handler's own by its type.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct InvalidInput(pub(super) String);

/// A [`Handler`] as the innermost service of its route: JSON in, JSON out.
pub(super) struct Typed<H>(pub(super) Arc<H>);

impl<H> Clone for Typed<H> {
    fn clone(&self) -> Self {
        Typed(self.0.clone())
    }
}

impl<H: Handler> Service<Call> for Typed<H> {
    type Response = Value;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Value, BoxError>> + Send>>;

    /// Always ready: a handler has no capacity of its own (a limit is a layer).
    fn poll_ready(&mut self, _cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
        let handler = self.0.clone();
        Box::pin(async move {
            let input: H::Input = serde_json::from_value(call.input).map_err(|e| InvalidInput(e.to_string()))?;
            let output = handler.handle(input, call.ctx).await?;
            Ok(serde_json::to_value(output).map_err(|e| HandlerError::permanent(INVALID_OUTPUT, e.to_string()))?)
        })
    }
}

/// Whether `input` decodes as `I`, without keeping it: what [`Typed`] would decode.
pub(super) fn decodes_as<I: DeserializeOwned>(input: &Value) -> Result<(), String> {
    <I as serde::Deserialize>::deserialize(input).map(drop).map_err(|e| e.to_string())
}
