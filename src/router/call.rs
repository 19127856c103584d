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


/// The handler's own cancel endpoint, for a command it took over: POSTed once when
/// the command is cancelled, with the type's headers, `ce-id`, `ce-type` and
/// `courier-attempt`, and a JSON body naming the command.
#[derive(Clone)]
pub struct CancelHook {
    pub url: url::Url,
    /// The type's own headers (an API key): never logged.
    pub headers: reqwest::header::HeaderMap,
}

impl std::fmt::Debug for CancelHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelHook").field("url", &self.url.as_str()).finish_non_exhaustive()
    }
}

impl CancelHook {
    /// Tells the handler that `command_id` (attempt `attempt`) is cancelled. The
    /// answer's status, or why there was none (without the URL).
    pub async fn send(&self, client: &reqwest::Client, command_id: uuid::Uuid, command_type: &str, attempt: u32) -> Result<reqwest::StatusCode, String> {
        let body = serde_json::json!({ "command_id": command_id, "command_type": command_type, "attempt": attempt, "reason": "cancelled" });
        let mut headers = self.headers.clone();
        for (name, value) in [("ce-id", command_id.to_string()), ("ce-type", command_type.to_string()), ("courier-attempt", attempt.to_string())] {
            if let Ok(value) = reqwest::header::HeaderValue::from_str(&value) {
                headers.insert(reqwest::header::HeaderName::from_static(name), value);
            }
        }
        let sent = client.post(self.url.clone()).timeout(std::time::Duration::from_secs(10)).headers(headers).json(&body).send().await;
        sent.map(|r| r.status()).map_err(|e| crate::envelope::bounds::truncate(&e.without_url().to_string(), crate::envelope::bounds::MAX_MESSAGE_ECHO))
    }
}

