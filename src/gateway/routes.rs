//! The `/v1` API: commands in, operations out.
//!
//! | route | answer |
//! |---|---|
//! | `POST /v1/commands` | `202` + `Location` + the operation |
//! | `GET /v1/operations/{id}[?wait=30s]` | the operation (long-polls until done) |
//! | `POST /v1/operations/{id}:cancel` | the operation; it ends `CANCELLED` |
//! | `POST /v1/operations/{id}:complete`, `:progress`, `:heartbeat` | a handed-off command's handler reports back (`callbacks.rs`) |
//! | `GET /v1/operations?state=&type=&page_size=&page_token=` | newest first, paged |
//!
//! The `:cancel` suffix is Google's custom-method syntax. A path segment cannot be
//! split by the router, so `{name}` takes the whole segment and the handler splits
//! it on the colon.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::admission::CommandRequest;
use super::app::GatewayState;
use super::metrics::{counted, GatewayMetrics};
use super::operation::Operation;
use crate::view::Filter;
use super::submit::{Accepted, Validated};
use super::error::JsonBody;
use super::ApiError;
use crate::auth::{Caller, Need};

/// The longest `Idempotency-Key` accepted (Stripe's limit).
const MAX_KEY_LEN: usize = 255;
const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 1000;

/// The `/v1` operation routes, and the gateway's `/metrics`.
pub fn routes(m: &Arc<GatewayMetrics>) -> Router<Arc<GatewayState>> {
    Router::new()
        .route("/v1/commands", counted(m, "/v1/commands", post(create_command)))
        .route("/v1/operations", counted(m, "/v1/operations", get(list_operations)))
        .route("/v1/operations/{name}", counted(m, "/v1/operations/{name}", get(get_operation).post(post_operation)))
        .route("/metrics", get(metrics))
}

/// Validates one request and accepts it (or replays its first answer) for `caller`,
/// whose tenant it is stamped with.
pub(super) async fn accept(app: &GatewayState, req: &CommandRequest, headers: &HeaderMap, caller: &Caller) -> Result<Accepted, ApiError> {
    let command = admit(app, req, caller)?;
    let key = idempotency_key(headers)?;
    let accepted = app.submitter.accept(Validated { command, request_hash: req.request_hash() }, key).await?;
    if accepted.replayed {
        app.metrics.replays.inc();
    } else {
        app.metrics.submitted.inc();
    }
    audit("submit", caller, &accepted.snapshot, accepted.replayed);
    Ok(accepted)
}

/// Admission for `caller`: the type's `submit:` scope, then the request itself; the
/// command carries the caller's tenant.
pub(super) fn admit(app: &GatewayState, req: &CommandRequest, caller: &Caller) -> Result<crate::envelope::NewCommand, ApiError> {
    caller.require(Need::Submit(&req.command_type))?;
    let mut command = app.checker.check(req)?;
    command.tenant = caller.tenant().map(str::to_string);
    Ok(command)
}

/// One structured line per submission, cancel and admin action: who, which tenant,
/// which operation. Never a credential or a payload.
pub(super) fn audit(action: &str, caller: &Caller, s: &crate::envelope::OperationSnapshot, replayed: bool) {
    tracing::info!(
        target: "courier::audit",
        action,
        principal = %caller.0.name,
        tenant = caller.tenant().unwrap_or(""),
        operation = %s.command_id,
        command_type = %s.command_type,
        replayed,
        "audit"
    );
}

/// The operation, if it is `caller`'s tenant's: another tenant's is as unknown (`404`).
pub(super) async fn owned(app: &GatewayState, caller: &Caller, id: Uuid) -> Result<crate::envelope::OperationSnapshot, ApiError> {
    found(app, &id).await.filter(|s| caller.0.owns(s.tenant.as_deref())).ok_or_else(|| ApiError::not_found(format!("operations/{id}")))
}

/// The operation in the view. In a group, an id this gateway does not know yet may
/// have been created a moment ago through another gateway: it reads the id's
/// partition up to its present end (briefly) before saying it is unknown.
pub(super) async fn found(app: &GatewayState, id: &Uuid) -> Option<crate::envelope::OperationSnapshot> {
    if let Some(s) = app.store.get(id) {
        return Some(s);
    }
    let cluster = app.cluster.as_ref()?;
    let partition = cluster.partition_of_id(id);
    // Only the owner reads the partition; another gateway would wait for nothing.
    if cluster.owner(partition) != super::cluster::Owner::Me {
        return None;
    }
    cluster.catch_up(partition, &app.submitter.topics().status, std::time::Duration::from_secs(2)).await;
    app.store.get(id)
}

async fn create_command(
    State(app): State<Arc<GatewayState>>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let req = CommandRequest::from_body(&body)?;
    let accepted = accept(&app, &req, &headers, &caller).await?;
    let id = accepted.snapshot.command_id;
    let mut response =
        (StatusCode::ACCEPTED, [(header::LOCATION, format!("/v1/operations/{id}"))], Json(Operation::from_snapshot(&accepted.snapshot)))
            .into_response();
    if accepted.replayed {
        response.headers_mut().insert("idempotent-replayed", header::HeaderValue::from_static("true"));
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
struct WaitQuery {
    wait: Option<String>,
}

async fn get_operation(
    State(app): State<Arc<GatewayState>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    query: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Json<Operation>, ApiError> {
    let id = operation_id(&name)?;
    let wait = match query?.0.wait {
        None => None,
        Some(w) => Some(crate::duration::parse_duration(&w).map_err(|e| ApiError::bad_request("invalid_wait", e))?),
    };
    let now = owned(&app, &caller, id).await?;
    let snapshot = match wait {
        Some(w) if !now.state.is_final() => {
            let _slot = app.long_polls.clone().try_acquire_owned().map_err(|_| {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_long_polls", "the gateway is holding as many long polls as it may; retry shortly")
            })?;
            // In a group, the wait also ends when the partition moves to another
            // gateway, and the request follows it there (`forward.rs`).
            let stop = match &app.cluster {
                None => app.shutdown.clone(),
                Some(c) => c.revoked(c.partition_of_id(&id)).unwrap_or_else(cancelled),
            };
            let ended = app.store.wait_done(&id, w.min(app.max_wait), &stop).await.unwrap_or(now);
            if !ended.state.is_final() && stop.is_cancelled() && !app.shutdown.is_cancelled() {
                return Err(ApiError::new(StatusCode::MISDIRECTED_REQUEST, "not_owner", "the operation's partition moved to another gateway during the wait"));
            }
            ended
        }
        _ => now,
    };
    Ok(Json(Operation::from_snapshot(&snapshot)))
}

/// A token that has fired: a partition that is not this gateway's now has moved.
fn cancelled() -> CancellationToken {
    let t = CancellationToken::new();
    t.cancel();
    t
}

/// `POST /v1/operations/{id}:<method>`: `cancel`, or a handed-off command's
/// callbacks (`complete`, `progress`, `heartbeat`).
async fn post_operation(
    State(app): State<Arc<GatewayState>>,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    match name.split_once(':') {
        Some((id, "cancel")) => {
            let caller = caller.map(|Extension(c)| c).ok_or_else(|| ApiError::not_found(format!("operations/{id}")))?;
            let snapshot = cancel(&app, &caller, operation_id(id)?).await?;
            Ok(Json(Operation::from_snapshot(&snapshot)).into_response())
        }
        Some((id, method @ ("complete" | "progress" | "heartbeat"))) => {
            super::callbacks::call_back(&app, operation_id(id)?, method, &headers, query.as_deref(), &body).await
        }
        _ => Err(ApiError::not_found(format!("method {name:?}"))),
    }
}

/// Sends a cancel unless the operation is already done; returns it as it is now.
/// Another tenant's operation is as unknown: `404`, nothing sent. The `cancel` scope
/// is checked here too, not only by the middleware: it reads the raw path, where
/// `{id}%3Acancel` has no colon (so it asked for a submit scope), while the router
/// decodes the segment to `{id}:cancel`.
pub(super) async fn cancel(app: &GatewayState, caller: &Caller, id: Uuid) -> Result<crate::envelope::OperationSnapshot, ApiError> {
    caller.require(Need::Cancel)?;
    let snapshot = owned(app, caller, id).await?;
    if !snapshot.state.is_final() {
        app.submitter.cancel(id).await?;
        audit("cancel", caller, &snapshot, false);
    }
    Ok(snapshot)
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    state: Option<String>,
    #[serde(rename = "type")]
    command_type: Option<String>,
    page_size: Option<usize>,
    page_token: Option<String>,
}

async fn list_operations(
    State(app): State<Arc<GatewayState>>,
    Extension(caller): Extension<Caller>,
    local: Option<Extension<super::cluster::LocalOnly>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<OperationList>, ApiError> {
    let q = query?.0;
    let state = q.state.filter(|s| !s.is_empty());
    if let Some(s) = &state {
        if !Filter::valid_state(s) {
            return Err(ApiError::bad_request("invalid_state", format!("unknown state {s:?}")));
        }
    }
    let partition = local.map(|Extension(l)| Arc::new(move |id: &Uuid| l.holds(id)) as crate::view::PartitionTest);
    let filter = Filter { state, command_type: q.command_type.filter(|t| !t.is_empty()), tenant: caller.tenant().map(str::to_string), partition };
    let after = q.page_token.filter(|t| !t.is_empty()).map(|t| decode_page_token(&t)).transpose()?;
    let size = page_size(q.page_size);
    let (page, next) = app.store.list(&filter, after, size);
    let operations = page.iter().map(Operation::from_snapshot).collect();
    let next_page_token = next.map(encode_page_token).unwrap_or_default();
    Ok(Json(OperationList { operations, next_page_token }))
}

/// The page size asked for, within bounds (none or 0: the default).
pub(super) fn page_size(asked: Option<usize>) -> usize {
    match asked {
        None | Some(0) => DEFAULT_PAGE_SIZE,
        Some(n) => n.min(MAX_PAGE_SIZE),
    }
}

/// A page of operations (AIP-158: an empty `next_page_token` means the last page).
#[derive(Debug, Serialize)]
struct OperationList {
    operations: Vec<Operation>,
    next_page_token: String,
}

async fn metrics(State(app): State<Arc<GatewayState>>) -> Response {
    let (operations, keys) = app.store.sizes();
    app.metrics.operations.set(operations as i64);
    app.metrics.idempotency_keys.set(keys as i64);
    app.metrics.response()
}

/// An operation id from a path segment; anything unparseable names nothing: `404`.
pub(super) fn operation_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| ApiError::not_found(format!("operations/{text}")))
}

/// The `Idempotency-Key` header, if sent: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
    let bad = || ApiError::bad_request("invalid_idempotency_key", "Idempotency-Key must be 1 to 255 visible ASCII characters");
    let key = value.to_str().map_err(|_| bad())?;
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(key.to_string()))
}

/// Page tokens are opaque to clients; inside, the id the next page starts after.
pub(super) fn encode_page_token(after: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(after.as_bytes())
}

fn decode_page_token(token: &str) -> Result<Uuid, ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| Uuid::from_slice(&bytes).ok())
        .ok_or_else(|| ApiError::bad_request("invalid_page_token", "page_token was not issued by this API"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_garbage_is_refused() {
        let id = crate::envelope::new_id();
        assert_eq!(decode_page_token(&encode_page_token(id)).unwrap(), id);
        assert_eq!(decode_page_token("nope!").unwrap_err().code, "invalid_page_token");
    }

    #[test]
    fn idempotency_keys_are_checked() {
        let mut h = HeaderMap::new();
        assert_eq!(idempotency_key(&h).unwrap(), None);
        h.insert("idempotency-key", "order-42".parse().unwrap());
        assert_eq!(idempotency_key(&h).unwrap().as_deref(), Some("order-42"));
        h.insert("idempotency-key", "has space".parse().unwrap());
        assert!(idempotency_key(&h).is_err());
    }
}
