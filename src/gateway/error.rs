//! The gateway's two error boundaries: starting it ([`GatewayError`]) and answering
//! one HTTP request ([`ApiError`]).
//!
//! Every refused request gets the same JSON shape, `{"error": {"code", "message"}}`
//! (plus `details` where there is more to say), so a caller can branch on `code`
//! without parsing prose.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRef, FromRequest, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::kafka::KafkaSetupError;

/// Why the gateway could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Setup(#[from] KafkaSetupError),
    #[error(transparent)]
    Client(#[from] crate::ClientError),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("the input schema of command type {command_type:?} does not compile: {reason}")]
    Schema { command_type: String, reason: String },
    #[error("invalid gateway configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Follow(#[from] crate::follow::FollowError),
    #[error(transparent)]
    View(#[from] crate::view::ViewError),
    #[error(transparent)]
    Cluster(#[from] super::cluster::ClusterError),
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
}

/// A refused request: an HTTP status and a stable, machine-readable code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), details: None }
    }

    /// `400`: the request can never succeed as sent.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    /// `503`: Kafka did not take the record; the caller may retry (same idempotency key).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }
}

/// A scope the caller lacks (`403`), or a credential refused (`401`) or rate limit
/// (`429`) found by a route rather than the middleware.
impl From<crate::auth::Denied> for ApiError {
    fn from(denied: crate::auth::Denied) -> Self {
        ApiError::new(denied.status(), denied.code(), denied.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(details) = self.details {
            error["details"] = details;
        }
        (self.status, Json(json!({ "error": error }))).into_response()
    }
}

/// A body that could not be read: too large (`413`) or a broken stream.
impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        let code = if r.status() == StatusCode::PAYLOAD_TOO_LARGE { "body_too_large" } else { "unreadable_body" };
        ApiError::new(r.status(), code, r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request("invalid_query", r.body_text())
    }
}

/// The body of a request that must be JSON. A declared media type that is not JSON
/// (a form, XML, plain text) is `415 unsupported_media_type`, before the body is
/// read; no `Content-Type` at all is taken as JSON, for clients that send none.
/// Past the body limit it is `413 body_too_large`; not whole within
/// `--body-read-timeout`, `408 request_timeout`.
pub struct JsonBody(pub Bytes);

/// How large and how slow a [`JsonBody`] may be: `--max-body-bytes`,
/// `--body-read-timeout`. Taken from the router's state.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    pub read_timeout: Duration,
}

impl<S: Send + Sync> FromRequest<S> for JsonBody
where
    BodyLimits: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let limits = BodyLimits::from_ref(state);
        if !declares_json_or_nothing(req.headers()) {
            let message = "the request body must be JSON (Content-Type: application/json)";
            return Err(ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", message));
        }
        let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
        if let Some(size) = declared.filter(|n| *n > limits.max_bytes as u64) {
            drain(req.into_body(), limits.read_timeout).await;
            let message = format!("the body is {size} bytes, over the {} byte limit", limits.max_bytes);
            return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", message));
        }
        match tokio::time::timeout(limits.read_timeout, Bytes::from_request(req, state)).await {
            Ok(body) => Ok(JsonBody(body?)),
            Err(_) => Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", "the request body did not arrive in time")),
        }
    }
}

/// Most of an oversized body read and thrown away before answering `413`.
const DRAIN_CAP: usize = 64 * 1024 * 1024;

/// Reads and discards a body declared too large (up to [`DRAIN_CAP`], within
/// `within`), so the client, still sending, gets the `413` instead of a reset: a
/// socket closed with unread data in it answers the sender with RST, which throws the
/// response away before the client reads it.
async fn drain(body: Body, within: std::time::Duration) {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let _ = tokio::time::timeout(within, async {
        let mut read = 0usize;
        while let Some(Ok(chunk)) = stream.next().await {
            read += chunk.len();
            if read > DRAIN_CAP {
                break;
            }
        }
    })
    .await;
}

/// `application/json`, any `application/<x>+json`, with or without parameters.
fn declares_json_or_nothing(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else { return true };
    let Ok(text) = value.to_str() else { return false };
    let essence = text.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Longest text of a non-JSON error answer carried over into its JSON message.
const MAX_CARRIED_MESSAGE: usize = 1024;

/// Rewrites every error answer that is not JSON yet into the usual shape, keeping its
/// status and headers (`Allow` on a `405`). Those are axum's own answers, which no
/// handler sees: a method a route lacks (`405`), a path segment that is not UTF-8
/// or a query of the wrong shape (`400`), a body over the limit (`413`). Without
/// this a client branching on `error.code` would meet empty or plain-text bodies.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_error = status.is_client_error() || status.is_server_error();
    if !is_error || is_json(response.headers()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_CARRIED_MESSAGE).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message = match text.trim() {
        "" => status.canonical_reason().unwrap_or("refused").to_string(),
        said => said.to_string(),
    };
    let error = json!({ "error": { "code": code_of(status), "message": message } });
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(error.to_string()))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|t| t.starts_with("application/json"))
}

/// The code of an error answer that only its status describes.
fn code_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_request",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn rewritten(response: Response) -> (StatusCode, HeaderMap, Value) {
        let response = json_errors(response).await;
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 16).await.unwrap();
        (parts.status, parts.headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn bare_error_answers_get_the_json_shape_and_keep_their_headers() {
        let bare = (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "GET,HEAD")]).into_response();
        let (status, headers, body) = rewritten(bare).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed")));
        assert_eq!(headers[header::ALLOW], "GET,HEAD");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        let plain = (StatusCode::BAD_REQUEST, "Invalid URL: bad segment").into_response();
        let (_, _, body) = rewritten(plain).await;
        assert_eq!(body["error"]["message"], "Invalid URL: bad segment");
    }

    #[tokio::test]
    async fn json_and_successful_answers_are_left_alone() {
        let api = ApiError::bad_request("invalid_deadline", "no").into_response();
        assert_eq!(rewritten(api).await.2["error"]["code"], "invalid_deadline");
        let ok = (StatusCode::OK, "fine").into_response();
        assert_eq!(json_errors(ok).await.headers()[header::CONTENT_TYPE], "text/plain; charset=utf-8");
    }

    #[test]
    fn json_media_types() {
        let with = |ct: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            declares_json_or_nothing(&h)
        };
        assert!(declares_json_or_nothing(&HeaderMap::new()));
        assert!(with("application/json") && with("Application/JSON; charset=utf-8") && with("application/cloudevents+json"));
        assert!(!with("text/plain") && !with("application/x-www-form-urlencoded") && !with("multipart/form-data; boundary=x"));
        assert!(!with("application/jsonp") && !with("text/json+xml"));
    }
}
