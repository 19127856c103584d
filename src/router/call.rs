//! One call of a route, and the codes of the failures the route itself gives: the
//! vocabulary shared by handlers, routes and layers (so none of them imports another).

use serde_json::Value;

use super::context::Context;

/// Code of the retryable failure a layer's timeout (`tower::timeout`) gives: another
/// attempt may be faster. Not the command's deadline, which ends it `timed_out`.
pub const TIMEOUT: &str = "timeout";
/// Code of the retryable failure any other layer error gives.
pub const MIDDLEWARE_ERROR: &str = "middleware_error";
/// Code of the permanent failure when a handler's output does not serialize as JSON.
pub const INVALID_OUTPUT: &str = "invalid_output";

/// A route's answer for a command its handler took over, to complete later through
/// the gateway (deferred completion): an HTTP handler's `202`. Travels through layers
/// as an error (a layer may not turn it into a result); the worker records the
/// hand-off and commits past the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the handler took the command over; it completes later")]
pub struct HandedOff;

/// One call of a route: what every layer receives, so a layer can read the command's
/// type, id, key or attempt from [`Call::ctx`] (to label, limit or log by them).
pub struct Call {
    /// The command's JSON payload, not yet decoded as the handler's input.
    pub input: Value,
    /// The handler's context, passed to it unchanged.
    pub ctx: Context,
}

