//! What gateways of a group say to each other: a request one forwards to another
//! (marked [`FORWARDED`]), sent as it came and answered as the other answered it.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;

/// The header a gateway puts on a request it forwards (its value: the sender's URL).
pub(super) const FORWARDED: &str = "courier-forwarded";
/// How long a request waits for its partition to have an owner, beyond its own `wait`.
pub(super) const PATIENCE: Duration = Duration::from_secs(15);

/// Sends `req` to the gateway at `base` and hands back its answer as it is.
pub(super) async fn send(http: &reqwest::Client, base: &str, req: Request, timeout: Duration) -> Result<Response, reqwest::Error> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let mut out = http.request(parts.method, format!("{}{path}", base.trim_end_matches('/'))).timeout(timeout).body(body);
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            out = out.header(name, value);
        }
    }
    let answer = out.send().await?;
    let status = answer.status();
    let headers = answer.headers().clone();
    let bytes = answer.bytes().await?;
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    for (name, value) in &headers {
        if !hop_by_hop(name) {
            response.headers_mut().append(name, value.clone());
        }
    }
    Ok(response)
}

fn hop_by_hop(name: &header::HeaderName) -> bool {
    matches!(name.as_str(), "connection" | "host" | "content-length" | "transfer-encoding" | "keep-alive" | "upgrade" | "te" | "trailer" | "proxy-connection")
}

/// A `421`: the gateway asked does not own the partition (any more).
pub(super) fn moved(response: &Response) -> bool {
    response.status() == StatusCode::MISDIRECTED_REQUEST
}


/// `parts` and `body` as a request to `uri`, marked as forwarded by `forwarded_by`
/// if given, with the extensions the middleware before found (the caller).
pub(super) fn request(parts: &Parts, uri: &str, body: &Bytes, forwarded_by: Option<&str>) -> Request {
    let mut req = Request::builder().method(parts.method.clone()).uri(uri).version(parts.version);
    if let Some(h) = req.headers_mut() {
        h.clone_from(&parts.headers);
        if let Some(me) = forwarded_by.and_then(|m| HeaderValue::from_str(m).ok()) {
            h.insert(FORWARDED, me);
        }
    }
    let mut req = req.body(Body::from(body.clone())).unwrap_or_default();
    req.extensions_mut().clone_from(&parts.extensions);
    req
}
