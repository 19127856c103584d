//! Batches: many commands in one request, followed as one unit.
//!
//! All-or-nothing at admission: every command is validated before any is published,
//! so a batch with one bad element is a `400` and leaves no trace. Once accepted,
//! each command is an ordinary operation carrying the batch id (`ce_batchid`, copied
//! into every snapshot), which is how the counts survive a gateway restart.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::admission::{parse_body, CommandRequest};
use super::metrics::{counted, GatewayMetrics};
use super::submit::Validated;
use super::error::JsonBody;
use super::app::GatewayState;
use super::cluster::LocalOnly;
use super::ApiError;
use crate::auth::Caller;
use crate::envelope::{OperationSnapshot, State as OpState};

/// Most commands in one batch: bounds the request's memory and its time to accept.
pub const MAX_BATCH: usize = 1000;

pub fn routes(m: &Arc<GatewayMetrics>) -> Router<Arc<GatewayState>> {
    Router::new()
        .route("/v1/batches", counted(m, "/v1/batches", post(create_batch)))
        .route("/v1/batches/{id}", counted(m, "/v1/batches/{id}", get(get_batch)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    commands: Vec<Value>,
}

/// Where a batch is, RunPod-style: counts per outcome and one overall state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchStatus {
    pub id: String,
    pub total: usize,
    pub completed: usize,
    pub failed: usize,
    pub cancelled: usize,
    pub timed_out: usize,
    /// Waiting for a worker.
    pub in_queue: usize,
    /// Running.
    pub in_progress: usize,
    /// `IN_QUEUE` (nothing started), `IN_PROGRESS`, then, once all are done,
    /// `COMPLETED` (all completed), `FAILED` (some failed or timed out) or
    /// `CANCELLED` (some cancelled, none failed).
    pub state: &'static str,
}

impl BatchStatus {
    pub fn of(id: &str, ops: &[OperationSnapshot]) -> Self {
        let count = |f: &dyn Fn(OpState) -> bool| ops.iter().filter(|s| f(s.state)).count();
        Self::from_counts(
            id,
            ops.len(),
            count(&|s| s == OpState::Completed),
            count(&|s| s == OpState::Failed),
            count(&|s| s == OpState::Cancelled),
            count(&|s| s == OpState::TimedOut),
            count(&|s| s == OpState::Queued),
            count(&|s| matches!(s, OpState::Started | OpState::Progress)),
        )
    }

    /// From the counts alone: a batch whose members several gateways of a group hold
    /// is the sum of their parts.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn from_counts(
        id: &str,
        total: usize,
        completed: usize,
        failed: usize,
        cancelled: usize,
        timed_out: usize,
        in_queue: usize,
        in_progress: usize,
    ) -> Self {
        let mut b = BatchStatus { id: id.to_string(), total, completed, failed, cancelled, timed_out, in_queue, in_progress, state: "" };
        b.state = match () {
            _ if b.in_queue == b.total => "IN_QUEUE",
            _ if b.in_queue + b.in_progress > 0 => "IN_PROGRESS",
            _ if b.completed == b.total => "COMPLETED",
            _ if b.failed + b.timed_out > 0 => "FAILED",
            _ => "CANCELLED",
        };
        b
    }
}

async fn create_batch(State(app): State<Arc<GatewayState>>, Extension(caller): Extension<Caller>, JsonBody(body): JsonBody) -> Result<Response, ApiError> {
    let req: BatchRequest = parse_body(&body)?;
    if req.commands.is_empty() {
        return Err(ApiError::bad_request("empty_batch", "commands must hold at least one command"));
    }
    if req.commands.len() > MAX_BATCH {
        let msg = format!("a batch holds at most {MAX_BATCH} commands, not {}", req.commands.len());
        return Err(ApiError::bad_request("batch_too_large", msg));
    }
    let items = validate_all(&app, req.commands, &caller)?;
    let batch_id = crate::envelope::new_id().to_string();
    let ops = app.submitter.submit(items, Some(batch_id.clone())).await?;
    app.metrics.submitted.inc_by(ops.len() as u64);
    tracing::info!(batch = %batch_id, commands = ops.len(), "batch accepted");
    for s in &ops {
        super::routes::audit("submit", &caller, s, false);
    }
    let mut body = serde_json::to_value(BatchStatus::of(&batch_id, &ops)).unwrap_or(Value::Null);
    body["operations"] = ops.iter().map(|s| json!(format!("operations/{}", s.command_id))).collect();
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, format!("/v1/batches/{batch_id}"))], Json(body)).into_response())
}

/// Every element checked; the errors of all bad ones reported together (a type the
/// caller may not submit refuses the whole batch: `403`).
fn validate_all(app: &GatewayState, commands: Vec<Value>, caller: &Caller) -> Result<Vec<Validated>, ApiError> {
    let mut items = Vec::with_capacity(commands.len());
    let mut problems = Vec::new();
    for (index, value) in commands.into_iter().enumerate() {
        let checked = CommandRequest::from_value(value)
            .and_then(|req| Ok(Validated { command: super::routes::admit(app, &req, caller)?, request_hash: req.request_hash() }));
        match checked {
            Ok(v) => items.push(v),
            Err(e) if e.status == StatusCode::FORBIDDEN => return Err(e),
            Err(e) => problems.push(json!({ "index": index, "code": e.code, "message": e.message })),
        }
    }
    match problems.first() {
        None => Ok(items),
        Some(first) => {
            let msg = format!("{} of the batch's commands are invalid; first, commands[{}]: {}", problems.len(), first["index"], first["message"].as_str().unwrap_or(""));
            Err(ApiError::bad_request("invalid_batch", msg).with_details(Value::Array(problems)))
        }
    }
}

async fn get_batch(
    State(app): State<Arc<GatewayState>>,
    Extension(caller): Extension<Caller>,
    local: Option<Extension<LocalOnly>>,
    Path(id): Path<String>,
) -> Result<Json<BatchStatus>, ApiError> {
    let ops: Vec<OperationSnapshot> = app
        .store
        .batch(&id)
        .unwrap_or_default()
        .into_iter()
        .filter(|s| caller.0.owns(s.tenant.as_deref()) && local.as_ref().is_none_or(|l| l.holds(&s.command_id)))
        .collect();
    if ops.is_empty() {
        return Err(ApiError::not_found(format!("batches/{id}")));
    }
    Ok(Json(BatchStatus::of(&id, &ops)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(states: &[OpState]) -> Vec<OperationSnapshot> {
        states.iter().map(|s| crate::envelope::test_snapshot(*s)).collect()
    }

    #[test]
    fn the_overall_state_follows_the_members() {
        use OpState::*;
        assert_eq!(BatchStatus::of("b", &ops(&[Queued, Queued])).state, "IN_QUEUE");
        assert_eq!(BatchStatus::of("b", &ops(&[Queued, Completed])).state, "IN_PROGRESS");
        assert_eq!(BatchStatus::of("b", &ops(&[Completed, Completed])).state, "COMPLETED");
        assert_eq!(BatchStatus::of("b", &ops(&[Completed, TimedOut, Cancelled])).state, "FAILED");
        assert_eq!(BatchStatus::of("b", &ops(&[Completed, Cancelled])).state, "CANCELLED");
        let b = BatchStatus::of("b", &ops(&[Started, Progress, Failed]));
        assert_eq!((b.total, b.in_progress, b.failed), (3, 2, 1));
    }
}
