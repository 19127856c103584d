//! RunPod-compatible routes, so clients written for RunPod's serverless API (its
//! SDKs, or plain `curl` scripts) can drive Courier by changing only the base URL.
//! An "endpoint" is a command type.
//!
//! | route | answer |
//! |---|---|
//! | `POST /v2/{endpoint}/run` `{input, webhook?, policy?: {ttl}}` | `{id, status: "IN_QUEUE"}` |
//! | `GET /v2/{endpoint}/status/{id}` | `{id, status, delayTime, executionTime, output?, error?}` |
//! | `POST /v2/{endpoint}/cancel/{id}` | `{id, status}` |
//! | `POST /v2/{endpoint}/purge-queue` | `{removed, status: "completed"}` |
//!
//! Validation, idempotency and the order of writes are exactly those of `/v1`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::admission::{parse_body, CommandRequest};
use super::metrics::{counted, GatewayMetrics};
use super::routes::{accept, cancel, operation_id};
use super::error::JsonBody;
use super::app::GatewayState;
use super::ApiError;
use crate::auth::Caller;
use crate::envelope::{OperationSnapshot, State as OpState};

pub fn routes(m: &Arc<GatewayMetrics>) -> Router<Arc<GatewayState>> {
    Router::new()
        .route("/v2/{endpoint}/run", counted(m, "/v2/{endpoint}/run", post(run)))
        .route("/v2/{endpoint}/status/{id}", counted(m, "/v2/{endpoint}/status/{id}", get(status)))
        .route("/v2/{endpoint}/cancel/{id}", counted(m, "/v2/{endpoint}/cancel/{id}", post(cancel_job)))
        .route("/v2/{endpoint}/purge-queue", counted(m, "/v2/{endpoint}/purge-queue", post(purge_queue)))
}

/// RunPod's job request. Fields Courier has no use for (`s3Config`, ...) are ignored.
#[derive(Debug, Deserialize)]
struct RunRequest {
    #[serde(default)]
    input: Value,
    #[serde(default)]
    webhook: Option<String>,
    #[serde(default)]
    policy: Option<Policy>,
}

#[derive(Debug, Default, Deserialize)]
struct Policy {
    /// Milliseconds the job may live in total; Courier's deadline.
    #[serde(default)]
    ttl: Option<u64>,
}

/// A job as RunPod reports it.
#[derive(Debug, Serialize)]
pub struct Job {
    pub id: String,
    pub status: &'static str,
    /// Milliseconds queued before a worker took it.
    #[serde(rename = "delayTime")]
    pub delay_time: u64,
    /// Milliseconds in the handler.
    #[serde(rename = "executionTime")]
    pub execution_time: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// RunPod's status names for Courier's states.
pub fn status_name(state: OpState) -> &'static str {
    match state {
        OpState::Queued => "IN_QUEUE",
        OpState::Started | OpState::Progress => "IN_PROGRESS",
        OpState::Completed => "COMPLETED",
        OpState::Failed => "FAILED",
        OpState::Cancelled => "CANCELLED",
        OpState::TimedOut => "TIMED_OUT",
    }
}

impl Job {
    fn from_snapshot(s: &OperationSnapshot) -> Self {
        Job {
            id: s.command_id.to_string(),
            status: status_name(s.state),
            delay_time: s.timing.queued_ms,
            execution_time: s.timing.execution_ms,
            output: s.result.clone().filter(|_| s.state == OpState::Completed),
            error: s.error.as_ref().map(|e| format!("{}: {}", e.code, e.message)),
        }
    }
}

/// Unknown endpoints are `404`, as on RunPod, rather than `/v1`'s `400 unknown_type`.
fn known_endpoint(app: &GatewayState, endpoint: &str) -> Result<(), ApiError> {
    if app.checker.knows(endpoint) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("endpoint {endpoint:?}")))
    }
}

/// The job `id` of `endpoint`; a job of another endpoint, or of another tenant, is
/// not found here.
async fn job(app: &GatewayState, caller: &Caller, endpoint: &str, id: &str) -> Result<OperationSnapshot, ApiError> {
    let id = operation_id(id)?;
    super::routes::found(app, &id)
        .await
        .filter(|s| s.command_type == endpoint && caller.0.owns(s.tenant.as_deref()))
        .ok_or_else(|| ApiError::not_found(format!("job {id} of endpoint {endpoint:?}")))
}

async fn run(
    State(app): State<Arc<GatewayState>>,
    Extension(caller): Extension<Caller>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    known_endpoint(&app, &endpoint)?;
    let run: RunRequest = parse_body(&body)?;
    let req = CommandRequest {
        command_type: endpoint,
        payload: run.input,
        key: None,
        deadline: None,
        deadline_in: run.policy.unwrap_or_default().ttl.map(|ms| format!("{ms}ms")),
        callback_url: run.webhook,
    };
    let accepted = accept(&app, &req, &headers, &caller).await?;
    let s = &accepted.snapshot;
    Ok(Json(serde_json::json!({ "id": s.command_id.to_string(), "status": status_name(s.state) })))
}

async fn status(State(app): State<Arc<GatewayState>>, Extension(caller): Extension<Caller>, Path((endpoint, id)): Path<(String, String)>) -> Result<Json<Job>, ApiError> {
    Ok(Json(Job::from_snapshot(&job(&app, &caller, &endpoint, &id).await?)))
}

async fn cancel_job(State(app): State<Arc<GatewayState>>, Extension(caller): Extension<Caller>, Path((endpoint, id)): Path<(String, String)>) -> Result<Json<Value>, ApiError> {
    let s = job(&app, &caller, &endpoint, &id).await?;
    let s = cancel(&app, &caller, s.command_id).await?;
    Ok(Json(serde_json::json!({ "id": s.command_id.to_string(), "status": status_name(s.state) })))
}

/// Cancels every job of the endpoint still waiting for a worker; running ones go on.
/// Needs `admin`; even so only the caller's tenant's jobs are cancelled.
async fn purge_queue(
    State(app): State<Arc<GatewayState>>,
    Extension(caller): Extension<Caller>,
    local: Option<Extension<super::cluster::LocalOnly>>,
    Path(endpoint): Path<String>,
) -> Result<Json<Value>, ApiError> {
    known_endpoint(&app, &endpoint)?;
    let queued: Vec<_> = app
        .store
        .queued_of_type(&endpoint)
        .into_iter()
        .filter(|id| local.as_ref().is_none_or(|l| l.holds(id)) && app.store.get(id).is_some_and(|s| caller.0.owns(s.tenant.as_deref())))
        .collect();
    tracing::info!(target: "courier::audit", action = "purge_queue", principal = %caller.0.name, tenant = caller.tenant().unwrap_or(""), endpoint = %endpoint, jobs = queued.len(), "audit");
    let sent = futures::future::join_all(queued.iter().map(|id| app.submitter.cancel(*id))).await;
    let removed = sent.iter().filter(|r| r.is_ok()).count();
    if let Some(Err(e)) = sent.into_iter().find(Result::is_err) {
        tracing::warn!(error = %e, removed, "purge-queue could not cancel every queued job");
    }
    Ok(Json(serde_json::json!({ "removed": removed, "status": "completed" })))
}
