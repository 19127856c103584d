//! HTTP push handlers: a command type whose handler is an HTTP endpoint in any
//! language. The worker POSTs each command to the type's URL in CloudEvents HTTP
//! binary mode and turns the answer into the outcome, so every worker behaviour
//! (key ordering, retries, DLQ, dedupe, deadlines, cancel, metrics) holds unchanged
//! around a handler written in Python, Node or Go.
//!
//! The request: `POST <url>`, body = the payload JSON, `content-type:
//! application/json`, `ce-id`, `ce-type`, `ce-source`, `ce-specversion: 1.0`,
//! `ce-time`, `courier-attempt`, `courier-deadline` (RFC 3339, when set),
//! `courier-key` (or `courier-key-base64` for a key that is not a header-safe
//! text), `traceparent` (when the command has one), and, when the deployment has a
//! `callbacks` block, `courier-callback-url` (the operation's URL at the gateway, to
//! which the handler appends `:complete`, `:progress` or `:heartbeat`) and
//! `courier-callback-token` (a [`crate::capability`] token for this attempt); then
//! the type's own headers.
//!
//! The answer ([`outcome`]):
//!
//! | answer                                   | outcome                                        |
//! |------------------------------------------|------------------------------------------------|
//! | `200`-`299` but `202`, JSON or empty body | `completed`, the body (or `null`) the result   |
//! | `202`                                    | deferred completion (needs `callbacks`)        |
//! | `408`, `409`, `425`, `429`, `5xx`        | retryable, `Retry-After` the least wait        |
//! | other `4xx`, `3xx` (never followed)      | permanent `failed`                             |
//! | timeout, no connection, a broken answer  | retryable                                      |
//!
//! An error answer with a JSON body `{"code", "message"}` gives the error its code
//! and message, else the code is `http_<status>`. A result that is not JSON, is
//! larger than the cap, or does not match the declared output schema is a permanent
//! `bad_output`. When the command's token fires (cancel, deadline, the worker
//! stopping) the request future is dropped, which closes its connection: the handler
//! sees the client go away.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{HeaderMap as HttpHeaders, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::Semaphore;
use tower::BoxError;

pub use super::call::CancelHook;
use super::call::{Call, HandedOff};
use super::handler::InvalidInput;
pub use super::profile::{PushProfile, Reported, OURO_WEBHOOK_TOKEN};
use super::route::{Decodes, Route, RouteService};
use super::HandlerError;
use crate::envelope::bounds::{truncate, MAX_MESSAGE_ECHO, MAX_NAME_ECHO};
use crate::envelope::rfc3339;

/// Code of the permanent failure for a result that is not JSON, too large, or not
/// what the declared output schema allows.
pub const BAD_OUTPUT: &str = "bad_output";
/// Code of the permanent failure for a `202` answer from a handler whose deployment
/// has no `callbacks` block: it could never call back.
pub const DEFERRED_UNSUPPORTED: &str = "deferred_unsupported";
/// The longest `Retry-After` honoured: a handler cannot park a key for longer.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Where and how to push one command type.
#[derive(Clone)]
pub struct PushTarget {
    /// The handler's URL (`http` or `https`).
    pub url: url::Url,
    /// Per attempt: past it the attempt fails, retryable (`timeout`).
    pub timeout: Duration,
    /// Requests in flight for this type, per worker.
    pub concurrency: usize,
    /// Extra request headers (an API key, say): never logged.
    pub headers: HttpHeaders,
    /// The largest answer body read; a larger result is `bad_output`.
    pub max_response_bytes: usize,
    /// Where and with what a handler that answers `202` calls back; without it a
    /// `202` is the permanent `deferred_unsupported`.
    pub callbacks: Option<CallbackSigner>,
    /// The request and answer shapes (`http.profile`): Courier's own, or a
    /// platform's whose services already exist.
    pub profile: PushProfile,
}

/// What the callback headers of a push request are made from.
#[derive(Clone, Debug)]
pub struct CallbackSigner {
    /// The gateway as handlers reach it; operations are under `/v1/operations/`.
    pub public_url: url::Url,
    /// The first of `callbacks.signing_keys`.
    pub key: crate::capability::SigningKey,
    /// How long a token lasts when the command has no deadline (with one, it lasts
    /// until the deadline).
    pub token_ttl: Duration,
}

impl CallbackSigner {
    /// The operation's URL and a token for this attempt.
    pub fn headers_for(&self, ctx: &super::Context) -> (String, String) {
        let base = self.public_url.as_str().trim_end_matches('/');
        let url = format!("{base}/v1/operations/{}", ctx.command_id);
        let ttl = chrono::Duration::from_std(self.token_ttl).unwrap_or(chrono::Duration::days(7));
        let expires = ctx.deadline.unwrap_or_else(|| chrono::Utc::now() + ttl);
        let grant = crate::capability::Grant { command_id: ctx.command_id, attempt: ctx.attempt, expires };
        (url, grant.sign(&self.key))
    }
}

impl std::fmt::Debug for PushTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.keys().map(HeaderName::as_str).collect();
        f.debug_struct("PushTarget")
            .field("url", &self.url.as_str())
            .field("timeout", &self.timeout)
            .field("concurrency", &self.concurrency)
            .field("headers", &names)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("callbacks", &self.callbacks.as_ref().map(|c| c.public_url.as_str()))
            .field("profile", &self.profile)
            .finish()
    }
}

/// The HTTP client every push route of a process shares: one connection pool,
/// keep-alive, no redirects, no proxy from the environment.
pub fn push_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .user_agent(concat!("courier-worker/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// The compiled schemas of a declared type: the payload checked before the push,
/// the result after.
#[derive(Clone, Default)]
pub struct Schemas {
    pub input: Option<Arc<jsonschema::Validator>>,
    pub output: Option<Arc<jsonschema::Validator>>,
}

impl std::fmt::Debug for Schemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schemas").field("input", &self.input.is_some()).field("output", &self.output.is_some()).finish()
    }
}

/// A route that pushes its commands to `target`.
pub fn push_route(target: PushTarget, client: reqwest::Client, schemas: Schemas, input_schema: schemars::Schema, output_schema: schemars::Schema, description: String) -> Route {
    let decodes: Decodes = {
        let input = schemas.input.clone();
        Arc::new(move |payload: &Value| match &input {
            Some(schema) => first_violation(schema, payload).map_or(Ok(()), Err),
            None => Ok(()),
        })
    };
    let push = Push { permits: Arc::new(Semaphore::new(target.concurrency.max(1))), target: Arc::new(target), client, schemas };
    let service = tower::service_fn(move |call: Call| push.clone().call(call));
    Route::untyped(RouteService::new(service), decodes, input_schema, output_schema, description)
}

fn first_violation(schema: &jsonschema::Validator, value: &Value) -> Option<String> {
    schema.iter_errors(value).next().map(|e| {
        let at = e.instance_path().to_string();
        truncate(&format!("{}{e}", if at.is_empty() { String::new() } else { format!("at {at}: ") }), MAX_MESSAGE_ECHO)
    })
}

#[derive(Clone)]
struct Push {
    target: Arc<PushTarget>,
    client: reqwest::Client,
    permits: Arc<Semaphore>,
    schemas: Schemas,
}

impl Push {
    /// One call: the payload checked against the input schema, then pushed, unless
    /// the command's token fires first. The per-type limit is taken inside, where the
    /// token can cut the wait short.
    async fn call(self, call: Call) -> Result<Value, BoxError> {
        if let Some(schema) = &self.schemas.input {
            if let Some(violation) = first_violation(schema, &call.input) {
                return Err(InvalidInput(violation).into());
            }
        }
        let cancel = call.ctx.cancel.clone();
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(HandlerError::retryable("cancelled", "the command's token fired before the handler answered").into()),
            done = self.send(call) => match done {
                Ok(Some(result)) => Ok(result),
                Ok(None) if self.target.callbacks.is_some() => Err(HandedOff.into()),
                Ok(None) => Err(HandlerError::permanent(
                    DEFERRED_UNSUPPORTED,
                    "the handler answered 202 (deferred completion), but the --config file has no callbacks block to call back through",
                )
                .into()),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// The request and its answer: `Ok(None)` is a `202`, the hand-off.
    async fn send(&self, call: Call) -> Result<Option<Value>, HandlerError> {
        let _permit = self.permits.acquire().await.map_err(|_| HandlerError::retryable("http_closed", "the push route was shut down"))?;
        let callback = self.target.callbacks.as_ref().map(|signer| signer.headers_for(&call.ctx));
        let callback = callback.as_ref().map(|(url, token)| (url.as_str(), token.as_str()));
        let body = match self.target.profile {
            PushProfile::Courier => serde_json::to_vec(&call.input),
            profile => serde_json::to_vec(&profile.body(call.ctx.command_id, &call.input, callback)),
        };
        let body = body.map_err(|e| HandlerError::permanent(BAD_OUTPUT, e.to_string()))?;
        let request = self
            .client
            .post(self.target.url.clone())
            .timeout(self.target.timeout)
            .headers(request_headers(&call, &self.target, callback))
            .body(body);
        let started = std::time::Instant::now();
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        let retry_after = response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
        let body = read_capped(response, self.target.max_response_bytes).await?;
        tracing::debug!(status = status.as_u16(), took_ms = started.elapsed().as_millis() as u64, "push handler answered");
        let answered = match outcome(status, retry_after, body)? {
            Some(result) => self.target.profile.answer(result)?,
            None => None,
        };
        if let (Some(schema), Some(result)) = (&self.schemas.output, &answered) {
            if let Some(violation) = first_violation(schema, result) {
                return Err(HandlerError::permanent(BAD_OUTPUT, format!("result does not match the output schema: {violation}")));
            }
        }
        Ok(answered)
    }
}

/// The CloudEvents binary-mode request headers for one command, the callback's
/// (`callback`: the operation's URL and the token), the profile's, then the type's own.
fn request_headers(call: &Call, target: &PushTarget, callback: Option<(&str, &str)>) -> HttpHeaders {
    let ctx = &call.ctx;
    let extra = &target.headers;
    let mut headers = HttpHeaders::with_capacity(10 + extra.len());
    let mut put = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    put("content-type", "application/json");
    put("ce-specversion", "1.0");
    put("ce-id", &ctx.command_id.to_string());
    put("ce-type", &ctx.command_type);
    put("ce-source", &ctx.source);
    put("ce-time", &rfc3339(ctx.time.unwrap_or_else(chrono::Utc::now)));
    put("courier-attempt", &ctx.attempt.to_string());
    if let Some(deadline) = ctx.deadline {
        put("courier-deadline", &rfc3339(deadline));
    }
    if let Some(key) = &ctx.key {
        match std::str::from_utf8(key).ok().filter(|k| HeaderValue::from_str(k).is_ok()) {
            Some(text) => put("courier-key", text),
            None => put("courier-key-base64", &base64::engine::general_purpose::STANDARD.encode(key)),
        }
    }
    if let Some(trace) = &ctx.traceparent {
        put("traceparent", trace);
    }
    if let Some((url, token)) = callback {
        put("courier-callback-url", url);
        put("courier-callback-token", token);
    }
    for (name, value) in target.profile.headers(ctx.command_id, &ctx.command_type, callback) {
        put(name, &value);
    }
    for (name, value) in extra {
        headers.insert(name.clone(), value.clone());
    }
    headers
}

/// A request that got no answer: always worth another attempt. The URL is left out
/// of the message (it may carry a token in its query).
fn transport_error(e: reqwest::Error) -> HandlerError {
    let code = if e.is_timeout() {
        super::TIMEOUT
    } else if e.is_connect() {
        "connection_failed"
    } else {
        "http_error"
    };
    HandlerError::retryable(code, truncate(&e.without_url().to_string(), MAX_MESSAGE_ECHO))
}

/// The answer's body, up to `cap` bytes; a longer one is `bad_output`, a body cut
/// off mid-way a retryable `http_error`.
async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, HandlerError> {
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(HandlerError::permanent(BAD_OUTPUT, format!("the answer is over the {cap} byte limit")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > cap {
            return Err(HandlerError::permanent(BAD_OUTPUT, format!("the answer is over the {cap} byte limit")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `Retry-After` as seconds or an HTTP date, capped at [`MAX_RETRY_AFTER`]; a date
/// in the past is no wait.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
            (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// What an answer means: `Ok(Some(result))` completed, `Ok(None)` deferred (`202`),
/// `Err` a failure, retryable or not (see the module's table).
pub fn outcome(status: StatusCode, retry_after: Option<Duration>, body: Vec<u8>) -> Result<Option<Value>, HandlerError> {
    if status == StatusCode::ACCEPTED {
        return Ok(None);
    }
    if status.is_success() {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Some(Value::Null));
        }
        return serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| HandlerError::permanent(BAD_OUTPUT, format!("HTTP {} with a body that is not JSON: {e}", status.as_u16())));
    }
    let retryable = matches!(status.as_u16(), 408 | 409 | 425 | 429) || status.is_server_error();
    let (code, message) = error_body(&body).unwrap_or_else(|| {
        let what = if status.is_redirection() { "redirects are not followed" } else { status.canonical_reason().unwrap_or("error") };
        (format!("http_{}", status.as_u16()), format!("HTTP {}: {what}", status.as_u16()))
    });
    let error = if retryable { HandlerError::retryable(code, message) } else { HandlerError::permanent(code, message) };
    Err(match retry_after {
        Some(wait) if retryable => error.wait_at_least(wait),
        _ => error,
    })
}

/// `{"code", "message"}` from an error answer, when it has them (a code must be a
/// short single token to be taken: callers branch on it).
fn error_body(body: &[u8]) -> Option<(String, String)> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let code = value.get("code")?.as_str()?;
    let token = !code.is_empty() && code.len() <= MAX_NAME_ECHO && code.bytes().all(|b| b.is_ascii_graphic());
    if !token {
        return None;
    }
    let message = value.get("message").and_then(Value::as_str).unwrap_or("");
    Some((code.to_string(), truncate(message, MAX_MESSAGE_ECHO)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::CONTENT_TYPE;
    use serde_json::json;

    fn answer(status: u16, body: &str) -> Result<Option<Value>, HandlerError> {
        outcome(StatusCode::from_u16(status).unwrap(), Some(Duration::from_secs(7)), body.as_bytes().to_vec())
    }

    #[test]
    fn success_answers_complete_with_their_body() {
        assert_eq!(answer(200, r#"{"w":1}"#).unwrap(), Some(json!({"w": 1})));
        assert_eq!(answer(201, "[1]").unwrap(), Some(json!([1])));
        assert_eq!(answer(204, "").unwrap(), Some(Value::Null));
        assert_eq!(answer(202, "{}").unwrap(), None, "202 is the hand-off");
        let e = answer(200, "<html>").unwrap_err();
        assert_eq!((e.code.as_str(), e.retryable), (BAD_OUTPUT, false));
    }

    #[test]
    fn client_errors_are_permanent_but_the_four_that_say_try_again() {
        for status in [400, 401, 403, 404, 410, 413, 422, 451] {
            let e = answer(status, "").unwrap_err();
            assert_eq!((e.code, e.retryable, e.retry_after), (format!("http_{status}"), false, None), "{status}");
        }
        for status in [408, 409, 425, 429, 500, 502, 503, 504] {
            let e = answer(status, "").unwrap_err();
            assert!(e.retryable, "{status}");
            assert_eq!(e.retry_after, Some(Duration::from_secs(7)), "{status}: Retry-After is kept");
        }
        let moved = answer(302, "").unwrap_err();
        assert!(!moved.retryable && moved.message.contains("redirects"));
    }

    #[test]
    fn an_error_body_names_the_error_when_its_code_is_a_token() {
        let e = answer(422, r#"{"code":"card_declined","message":"no funds"}"#).unwrap_err();
        assert_eq!((e.code.as_str(), e.message.as_str(), e.retryable), ("card_declined", "no funds", false));
        let e = answer(503, r#"{"code":"warming_up"}"#).unwrap_err();
        assert_eq!((e.code.as_str(), e.retryable), ("warming_up", true));
        for junk in [r#"{"code":"two words"}"#, r#"{"code":""}"#, r#"{"code":7}"#, "not json"] {
            assert_eq!(answer(400, junk).unwrap_err().code, "http_400", "{junk}");
        }
        let long = format!(r#"{{"code":"{}"}}"#, "x".repeat(MAX_NAME_ECHO + 1));
        assert_eq!(answer(400, &long).unwrap_err().code, "http_400");
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_and_is_capped() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("99999999"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO), "past: no wait");
        let later = (chrono::Utc::now() + chrono::Duration::seconds(90)).to_rfc2822();
        let wait = parse_retry_after(&later).unwrap();
        assert!(wait > Duration::from_secs(85) && wait <= Duration::from_secs(90), "{wait:?}");
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn the_request_carries_the_cloudevent_and_courier_headers_and_never_a_bad_key() {
        let ctx = super::super::Context::for_test("resize").with_key(vec![0xff, 0x00]).with_attempt(3);
        let mut extra = HttpHeaders::new();
        extra.insert("x-api-key", HeaderValue::from_static("s3cret"));
        let call = Call { input: json!({}), ctx: ctx.clone() };
        let target = |headers: HttpHeaders, callbacks: Option<CallbackSigner>| PushTarget {
            url: "http://127.0.0.1:9/x".parse().unwrap(),
            timeout: Duration::from_secs(1),
            concurrency: 1,
            headers,
            max_response_bytes: 10,
            callbacks,
            profile: PushProfile::Courier,
        };
        let h = request_headers(&call, &target(extra, None), None);
        assert_eq!(h["ce-id"], ctx.command_id.to_string().as_str());
        assert_eq!(h["ce-type"], "resize");
        assert_eq!(h["ce-specversion"], "1.0");
        assert_eq!(h["courier-attempt"], "3");
        assert_eq!(h["courier-key-base64"], "/wA=");
        assert_eq!(h[CONTENT_TYPE], "application/json");
        assert_eq!(h["x-api-key"], "s3cret");
        assert!(h.get("courier-key").is_none() && h.get("courier-deadline").is_none());
        assert!(h.get("courier-callback-url").is_none() && h.get("courier-callback-token").is_none(), "no callbacks block, no callback headers");
        let text = Call { input: json!({}), ctx: ctx.with_key("user 7").with_deadline(chrono::Utc::now()) };
        let key = crate::capability::SigningKey::new("a-signing-key-of-16+");
        let signer = CallbackSigner { public_url: "http://gw.internal:8080/".parse().unwrap(), key: key.clone(), token_ttl: Duration::from_secs(3600) };
        let (url, token) = signer.headers_for(&text.ctx);
        let h = request_headers(&text, &target(HttpHeaders::new(), Some(signer)), Some((&url, &token)));
        assert_eq!(h["courier-key"], "user 7");
        assert!(h.get("courier-deadline").is_some());
        assert_eq!(h["courier-callback-url"], format!("http://gw.internal:8080/v1/operations/{}", text.ctx.command_id).as_str());
        // The token expires with the deadline, which is now: it is already expired.
        let token = h["courier-callback-token"].to_str().unwrap();
        assert!(matches!(crate::capability::Grant::verify(token, &[key], chrono::Utc::now() - chrono::Duration::seconds(5)), Ok(g) if g.attempt == 3 && g.command_id == text.ctx.command_id));
    }

    #[test]
    fn a_target_never_prints_its_header_values() {
        let mut headers = HttpHeaders::new();
        headers.insert("x-api-key", HeaderValue::from_static("s3cret"));
        let t = PushTarget { url: "http://127.0.0.1:9/x".parse().unwrap(), timeout: Duration::from_secs(1), concurrency: 1, headers, max_response_bytes: 10, callbacks: None, profile: PushProfile::Courier };
        let shown = format!("{t:?}");
        assert!(shown.contains("x-api-key") && !shown.contains("s3cret"), "{shown}");
    }
}
