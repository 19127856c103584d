//! Requests in a gateway group (`--group`): answered here when this gateway owns the
//! partition they concern, forwarded to the owner when another gateway does, gathered
//! from every owner when they concern all partitions (`gather.rs`).
//!
//! | request | its partition |
//! |---|---|
//! | `/v1/operations/{id}[:method]`, `/v2/{endpoint}/status|cancel/{id}` | the id's |
//! | `POST /v1/commands`, `/v2/{endpoint}/run` with an `Idempotency-Key` | the key's (the operation's id is chosen in it) |
//! | `GET /v1/operations`, `GET /v1/batches/{id}`, `POST /v2/{endpoint}/purge-queue` | all: gathered |
//! | anything else | none: answered here |
//!
//! A forwarded request carries `courier-forwarded`; a gateway that no longer owns its
//! partition answers it `421` and the sender asks the group again, so a request
//! follows its partition through a rebalance, a long poll included (its `wait` is
//! what remains of it). With no owner to ask (a rebalance, or an owner killed whose
//! session has not lapsed), a `GET` of one operation is answered from the status
//! topic itself (a point lookup of the id's partition); anything else waits for an
//! owner for up to [`PATIENCE`], then is `503`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use uuid::Uuid;

use super::app::GatewayState;
use super::cluster::{Cluster, LocalOnly, Owner};
use super::peer::{moved, request, send, FORWARDED, PATIENCE};
use super::operation::Operation;
use super::ApiError;
use crate::auth::Caller;

/// How long a peer that could not be reached is passed over.
const SUSPECT_FOR: Duration = Duration::from_secs(2);

/// What a request concerns, when it is not for this gateway alone.
enum Target {
    /// One partition; `Some(id)` when the request is a `GET` of that one operation.
    Partition(i32, Option<Uuid>),
    Gather(super::gather::Gather),
}

/// The middleware: runs the request here, at its partition's owner, or at every owner.
pub(super) async fn route(State(app): State<Arc<GatewayState>>, req: Request, next: Next) -> Response {
    let Some(cluster) = app.cluster.clone() else { return next.run(req).await };
    let Some(target) = target_of(&cluster, &req) else { return next.run(req).await };
    let (parts, body) = req.into_parts();
    let body = match read_body(&app, body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let forwarded = parts.headers.contains_key(FORWARDED);
    match target {
        Target::Partition(p, _) if forwarded => as_owner(&cluster, p, parts, body, next).await,
        Target::Partition(p, lookup) => Routed { app: &app, cluster: &cluster, parts, body, next }.send_to_owner(p, lookup).await,
        Target::Gather(_) if forwarded => {
            let mut req = Request::from_parts(parts, Body::from(body));
            req.extensions_mut().insert(LocalOnly { cluster: cluster.clone(), owned: cluster.ready() });
            next.run(req).await
        }
        Target::Gather(g) => super::gather::gather(&app, &cluster, g, parts, body, next).await,
    }
}

/// A request forwarded here: answered if this gateway owns its partition (once read
/// to its end), else `421` so the sender asks the group again.
async fn as_owner(cluster: &Cluster, p: i32, parts: Parts, body: Bytes, next: Next) -> Response {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        match cluster.owner(p) {
            Owner::Me => return next.run(Request::from_parts(parts, Body::from(body))).await,
            Owner::Warming if Instant::now() < until => cluster.changed(Duration::from_millis(250)).await,
            _ => return not_owner(p),
        }
    }
}

/// `421`: this gateway does not (or no longer) answer for the partition.
fn not_owner(p: i32) -> Response {
    ApiError::new(StatusCode::MISDIRECTED_REQUEST, "not_owner", format!("this gateway does not own status partition {p}; ask the group")).into_response()
}

struct Routed<'a> {
    app: &'a Arc<GatewayState>,
    cluster: &'a Arc<Cluster>,
    parts: Parts,
    body: Bytes,
    next: Next,
}

impl Routed<'_> {
    /// Sends the request to whoever owns `p` until one answers it (a `421` or an
    /// unreachable owner is asked again), within the request's wait plus [`PATIENCE`].
    async fn send_to_owner(self, p: i32, lookup: Option<Uuid>) -> Response {
        let started = Instant::now();
        let wait = requested_wait(&self.parts, self.app.max_wait);
        let answer_by = started + wait.unwrap_or(Duration::ZERO);
        let give_up = answer_by + PATIENCE;
        let mut suspect: Option<(String, Instant)> = None;
        loop {
            let left = answer_by.saturating_duration_since(Instant::now());
            let owner = match self.cluster.owner(p) {
                Owner::Peer(url) if suspect.as_ref().is_some_and(|(s, at)| *s == url && at.elapsed() < SUSPECT_FOR) => Owner::Nobody,
                other => other,
            };
            match owner {
                Owner::Me => {
                    let response = self.next.clone().run(self.rebuilt(wait.map(|_| left), None)).await;
                    if !moved(&response) || Instant::now() >= give_up {
                        return response;
                    }
                }
                Owner::Warming => self.cluster.changed(Duration::from_millis(250)).await,
                Owner::Peer(url) => match self.forward(&url, wait.map(|_| left)).await {
                    Ok(response) if !moved(&response) => return response,
                    Ok(_) => self.cluster.refresh(Duration::from_millis(100)).await,
                    Err(e) => {
                        tracing::info!(peer = %url, error = %e, "gateway peer unreachable; asking the group again");
                        suspect = Some((url, Instant::now()));
                        self.cluster.refresh(Duration::from_millis(200)).await;
                    }
                },
                Owner::Nobody => {
                    self.cluster.refresh(Duration::from_millis(200)).await;
                    if let Some(id) = lookup {
                        if let Some(answer) = self.looked_up(id, Instant::now() >= answer_by).await {
                            return answer;
                        }
                    }
                    self.cluster.changed(Duration::from_millis(250)).await;
                }
            }
            if Instant::now() >= give_up {
                let e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_owner", format!("no gateway of the group owns status partition {p} right now; retry shortly"));
                let mut response = e.into_response();
                response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return response;
            }
        }
    }

    /// The operation as the status topic has it, when no gateway owns its partition:
    /// the answer if it is done, unknown (`404`), or `last` (no more waiting); `None`
    /// to wait on for an owner.
    async fn looked_up(&self, id: Uuid, last: bool) -> Option<Response> {
        let caller = self.parts.extensions.get::<Caller>()?;
        let found = match self.app.submitter.client().status(id).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(%id, error = %e, "point lookup of an operation");
                return None;
            }
        };
        self.app.metrics.answered_from_topic.inc();
        match found.filter(|s| caller.0.owns(s.tenant.as_deref())) {
            None => Some(ApiError::not_found(format!("operations/{id}")).into_response()),
            Some(s) if s.state.is_final() || last || requested_wait(&self.parts, self.app.max_wait).is_none() => {
                Some(Json(Operation::from_snapshot(&s)).into_response())
            }
            Some(_) => None,
        }
    }

    /// The request again, with `wait` set to what is left of it.
    fn rebuilt(&self, left: Option<Duration>, forwarded_by: Option<&str>) -> Request {
        request(&self.parts, &with_wait(&self.parts.uri, left), &self.body, forwarded_by)
    }

    async fn forward(&self, base: &str, left: Option<Duration>) -> Result<Response, reqwest::Error> {
        self.app.metrics.forwarded.inc();
        let req = self.rebuilt(left, Some(self.cluster.me()));
        send(&self.app.peers, base, req, left.unwrap_or(Duration::ZERO) + PATIENCE).await
    }
}

/// The request's body, bounded as a route's would be (`413`, `408`).
async fn read_body(app: &GatewayState, body: Body) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(app.body.read_timeout, axum::body::to_bytes(body, app.body.max_bytes)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("the body is larger than {} bytes", app.body.max_bytes))),
        Err(_) => Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", "the request body did not arrive in time")),
    }
}

/// What `req` concerns (see the module's table); `None`: this gateway answers it.
fn target_of(cluster: &Cluster, req: &Request) -> Option<Target> {
    use super::gather::Gather;
    let path = req.uri().path();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let get = req.method() == Method::GET;
    // The router decodes a path parameter before its handler parses it; so does this,
    // or `%2D` in an id would keep the request here while the handler finds the id.
    let by_id = |text: &str, lookup: bool| {
        let id = Uuid::parse_str(&decoded(text)).ok()?;
        Some(Target::Partition(cluster.partition_of_id(&id), lookup.then_some(id)))
    };
    match segments.as_slice() {
        ["v1", "operations"] if get => Some(Target::Gather(Gather::List)),
        ["v1", "operations", name] => {
            let name = decoded(name);
            let (id, method) = name.split_once(':').map_or((name.as_str(), None), |(i, m)| (i, Some(m)));
            by_id(id, get && method.is_none())
        }
        ["v1", "batches", id] if get => Some(Target::Gather(Gather::Batch(decoded(id)))),
        ["v2", _, "status", id] => by_id(id, false),
        ["v2", _, "cancel", id] => by_id(id, false),
        ["v2", _, "purge-queue"] => Some(Target::Gather(Gather::Purge)),
        ["v1", "commands"] | ["v2", _, "run"] if req.method() == Method::POST => {
            keyed(req).map(|slot| Target::Partition(cluster.partition_of(slot.as_bytes()), None))
        }
        _ => None,
    }
}

/// A path segment percent-decoded, as the router hands it to a handler.
fn decoded(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment).decode_utf8_lossy().into_owned()
}

/// The idempotency slot (tenant and key) of a request that sends a well-formed key.
fn keyed(req: &Request) -> Option<String> {
    let key = req.headers().get("idempotency-key")?.to_str().ok()?;
    let tenant = req.extensions().get::<Caller>().and_then(|c| c.tenant().map(str::to_string));
    Some(crate::view::idempotency::scoped_key(tenant.as_deref(), key))
}

/// The `?wait=` a request asks for, capped at `max`; `None` if it asks for none (or
/// an unreadable one, which the route refuses).
fn requested_wait(parts: &Parts, max: Duration) -> Option<Duration> {
    let query = parts.uri.query()?;
    let text = query.split('&').find_map(|pair| pair.strip_prefix("wait="))?;
    crate::duration::parse_duration(text).ok().map(|w| w.min(max))
}

/// `uri` with its `wait` set to `left` (in milliseconds); unchanged for `None`.
fn with_wait(uri: &axum::http::Uri, left: Option<Duration>) -> String {
    let path = uri.path();
    let Some(left) = left else { return uri.path_and_query().map_or(path, |p| p.as_str()).to_string() };
    let mut pairs: Vec<String> = uri.query().unwrap_or("").split('&').filter(|p| !p.is_empty() && !p.starts_with("wait=")).map(str::to_string).collect();
    pairs.push(format!("wait={}ms", left.as_millis().max(1)));
    format!("{path}?{}", pairs.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_ids_route_like_plain_ones() {
        let id = crate::envelope::new_id();
        let encoded = id.to_string().replace('-', "%2D");
        assert_eq!(decoded(&format!("{encoded}%3Acancel")), format!("{id}:cancel"));
        assert_eq!(decoded("%ZZ"), "%ZZ");
    }

    #[test]
    fn the_wait_left_replaces_the_one_asked() {
        let uri: axum::http::Uri = "/v1/operations/x?a=1&wait=30s&b=2".parse().unwrap();
        assert_eq!(with_wait(&uri, Some(Duration::from_millis(1500))), "/v1/operations/x?a=1&b=2&wait=1500ms");
        assert_eq!(with_wait(&uri, None), "/v1/operations/x?a=1&wait=30s&b=2");
        let bare: axum::http::Uri = "/v1/operations/x".parse().unwrap();
        assert_eq!(with_wait(&bare, Some(Duration::ZERO)), "/v1/operations/x?wait=1ms");
        let (parts, _) = Request::builder().uri("/x?wait=90s").body(()).unwrap().into_parts();
        assert_eq!(requested_wait(&parts, Duration::from_secs(60)), Some(Duration::from_secs(60)));
    }
}
