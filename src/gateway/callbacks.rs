//! Deferred completion, the gateway's side: a handler that answered `202` reports
//! back on the operation it took over.
//!
//! | route | body | answer |
//! |---|---|---|
//! | `POST /v1/operations/{id}:complete` | `{"result": ...}` or `{"error": {"code", "message", "retryable"?}}` | `200` + the operation once applied; the same again `200`; another `409`; `202` if not applied within 10 s |
//! | `POST /v1/operations/{id}:progress` | `{"percent": 0-100, "message"?}` | `202` + the operation |
//! | `POST /v1/operations/{id}:heartbeat` | none | `202` + the operation |
//!
//! Each needs `Authorization: Bearer <courier-callback-token>`, the capability token
//! the worker sent with the command ([`crate::capability`]); for handlers written
//! for a platform ([`crate::router::push::PushProfile`]) the same token is also taken
//! from `ouro-webhook-token` or `?token=`, and `:complete` also reads the type's
//! profile's body (Ouro's `{status, response}`, RunPod's status body, whose
//! `IN_PROGRESS` is a heartbeat). None, forged or expired
//! is `401`; valid but for another operation or attempt is `403`; nothing is
//! published for either. The gateway does not write the final event itself: it
//! writes a [`Completion`] into the command's partition, where the worker that owns
//! it runs it in key order, so exactly one completion of an attempt wins however
//! many gateways, handlers or lease checks race. It then waits for the operation's
//! final snapshot and compares: the same outcome is `200`, another is `409`.
//! Progress and heartbeats restate the deferral on the control topic with a later
//! `beat`, which renews the lease every worker's registry holds.

use std::time::Duration;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::app::GatewayState;
use super::operation::Operation;
use super::ApiError;
use crate::capability::{Grant, TokenError};
use crate::envelope::{Completion, Deferral, ErrorInfo, OperationSnapshot, Progress, ResultEvent, State, Timing};
use crate::publish::Outgoing;
use crate::router::push::{PushProfile, Reported};

/// How long `:complete` waits for its completion to be applied before answering `202`.
const APPLY_WAIT: Duration = Duration::from_secs(10);

/// `:complete`, `:progress` or `:heartbeat` on operation `id`.
pub(super) async fn call_back(app: &GatewayState, id: Uuid, method: &str, headers: &HeaderMap, query: Option<&str>, body: &[u8]) -> Result<Response, ApiError> {
    let grant = authorize(app, id, headers, query)?;
    let snapshot = hand_off_of(app, &grant).await.ok_or_else(|| ApiError::not_found(format!("operations/{id}")))?;
    grant.require(id, snapshot.attempt).map_err(forbidden)?;
    match method {
        "complete" => complete(app, snapshot, body).await,
        "progress" => progress(app, snapshot, body).await,
        _ => heartbeat(app, snapshot).await,
    }
}

/// How long a callback with a valid token waits for the hand-off it is about to
/// reach this gateway: a handler may call back before the worker has recorded its
/// `202` (or before this gateway has read that record).
const HAND_OFF_WAIT: Duration = Duration::from_secs(10);

/// The operation as of the token's attempt: once this gateway has seen it handed
/// off (or ended, or moved to a later attempt), else as it is after
/// [`HAND_OFF_WAIT`]; `None` if still unknown.
async fn hand_off_of(app: &GatewayState, grant: &Grant) -> Option<OperationSnapshot> {
    let seen = |s: &OperationSnapshot| {
        let handed_off = s.deferred.as_ref().is_some_and(|d| d.attempt == grant.attempt);
        s.state.is_final() || s.attempt > grant.attempt || (s.attempt == grant.attempt && handed_off)
    };
    let until = tokio::time::Instant::now() + HAND_OFF_WAIT;
    loop {
        let now = app.store.get(&grant.command_id);
        if now.as_ref().is_some_and(seen) || tokio::time::Instant::now() >= until || app.shutdown.is_cancelled() {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The callback token, verified and for this operation.
fn authorize(app: &GatewayState, id: Uuid, headers: &HeaderMap, query: Option<&str>) -> Result<Grant, ApiError> {
    let unauthorized = |message: String| ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message);
    let token = token_of(headers, query).ok_or_else(|| unauthorized("send the courier-callback-token as Authorization: Bearer <token>".into()))?;
    let grant = Grant::verify(&token, &app.callbacks.keys, chrono::Utc::now()).map_err(|e| {
        app.metrics.callbacks_refused.get_or_create(&vec![("why".into(), token_why(&e).into())]).inc();
        unauthorized(e.to_string())
    })?;
    if grant.command_id != id {
        return Err(forbidden(TokenError::OtherTarget));
    }
    Ok(grant)
}

/// The token from `Authorization: Bearer`, else `ouro-webhook-token`, else the
/// query's `token` (RunPod's webhooks carry no header).
fn token_of(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let bearer = header(header::AUTHORIZATION.as_str()).and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
    if let Some(token) = bearer.or_else(|| header(crate::router::push::OURO_WEBHOOK_TOKEN)) {
        return Some(token.trim().to_string());
    }
    url::form_urlencoded::parse(query?.as_bytes()).find(|(k, _)| k == "token").map(|(_, v)| v.trim().to_string())
}

fn forbidden(e: TokenError) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "permission_denied", e.to_string())
}

fn token_why(e: &TokenError) -> &'static str {
    match e {
        TokenError::Forged => "forged",
        TokenError::Expired(_) => "expired",
        TokenError::OtherTarget => "other_target",
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorBody {
    code: String,
    message: String,
    #[serde(default)]
    retryable: bool,
}

/// What a completion asks for: the state and result or error of the final event.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    state: State,
    result: Option<Value>,
    error: Option<ErrorInfo>,
}

/// What a `:complete` body reports.
#[derive(Debug, Clone, PartialEq)]
enum Report {
    Done(Outcome),
    /// In a profile's shape, the handler is still at work (RunPod's `IN_PROGRESS`).
    Working,
}

impl Report {
    /// A completion in the type's profile's shape, else in Courier's own.
    fn read(profile: PushProfile, id: Uuid, body: &[u8]) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| invalid(format!("{COMPLETION_SHAPE}: {e}")))?;
        match profile.completion(id, &value) {
            Some(Ok(Reported::Working)) => Ok(Report::Working),
            Some(Ok(Reported::Ended { state, result, error })) => Ok(Report::Done(Outcome { state, result, error })),
            Some(Err(why)) => Err(invalid(why)),
            None => Outcome::from_value(value).map(Report::Done),
        }
    }
}

/// Courier's own completion body, as the error messages state it.
const COMPLETION_SHAPE: &str = "the body must be {\"result\": ...} or {\"error\": {\"code\", \"message\", \"retryable\"?}}";

fn invalid(message: String) -> ApiError {
    ApiError::bad_request("invalid_completion", message)
}

impl Outcome {
    #[cfg(test)]
    fn parse(body: &[u8]) -> Result<Self, ApiError> {
        Report::read(PushProfile::Courier, Uuid::nil(), body).map(|r| match r {
            Report::Done(outcome) => outcome,
            Report::Working => unreachable!("Courier's own shape has no progress report"),
        })
    }

    /// Courier's `{"result"}` or `{"error"}`.
    fn from_value(value: Value) -> Result<Self, ApiError> {
        let (bad, shape) = (invalid, COMPLETION_SHAPE);
        let Value::Object(mut parsed) = value else { return Err(bad(format!("{shape}: not a JSON object"))) };
        let (result, error) = (parsed.remove("result"), parsed.remove("error"));
        if let Some(other) = parsed.keys().next() {
            return Err(bad(format!("{shape}; {other:?} is not a field")));
        }
        let error = error.map(|e| serde_json::from_value::<ErrorBody>(e).map_err(|e| bad(format!("{shape}: error: {e}")))).transpose()?;
        match (result, error) {
            (Some(result), None) => Ok(Outcome { state: State::Completed, result: Some(result), error: None }),
            (None, Some(e)) => {
                if e.code.is_empty() || e.code.len() > 256 {
                    return Err(bad("error.code is 1 to 256 characters".into()));
                }
                Ok(Outcome { state: State::Failed, result: None, error: Some(ErrorInfo { code: e.code, message: e.message, retryable: e.retryable }) })
            }
            _ => Err(bad("give exactly one of result and error".into())),
        }
    }

    /// Whether the final snapshot `s` is what this completion asked for.
    fn matches(&self, s: &OperationSnapshot) -> bool {
        match self.state {
            State::Completed => s.state == State::Completed && s.result.as_ref().unwrap_or(&Value::Null) == self.result.as_ref().unwrap_or(&Value::Null),
            _ => s.state == State::Failed && s.error.as_ref().is_some_and(|e| Some(&e.code) == self.error.as_ref().map(|x| &x.code) && Some(&e.message) == self.error.as_ref().map(|x| &x.message)),
        }
    }
}

async fn complete(app: &GatewayState, snapshot: OperationSnapshot, body: &[u8]) -> Result<Response, ApiError> {
    let profile = app.callbacks.profiles.get(&snapshot.command_type).copied().unwrap_or_default();
    let outcome = match Report::read(profile, snapshot.command_id, body)? {
        Report::Done(outcome) => outcome,
        Report::Working => return heartbeat(app, snapshot).await,
    };
    if snapshot.state.is_final() {
        return settled(&outcome, &snapshot);
    }
    let deferral = handed_off(&snapshot)?;
    if let (Some(schema), Some(result)) = (app.callbacks.outputs.get(&snapshot.command_type), &outcome.result) {
        if let Some(e) = schema.iter_errors(result).next() {
            let message = format!("the result does not match the output schema of {:?}: {e}", snapshot.command_type);
            return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "bad_output", crate::envelope::bounds::truncate(&message, 1024)));
        }
    }
    let completion = Completion { deferral, state: outcome.state, result: outcome.result.clone(), error: outcome.error.clone(), at: chrono::Utc::now() };
    let (partition, key, value, headers) = completion.encode(app.submitter.source());
    let commands = app.submitter.topics().commands.clone();
    let out = Outgoing { partition: Some(partition), ..Outgoing::new(commands, key, value, headers) };
    app.submitter.publish(vec![out]).await?;
    app.metrics.callbacks.get_or_create(&vec![("method".into(), "complete".into())]).inc();
    tracing::info!(id = %snapshot.command_id, attempt = snapshot.attempt, state = outcome.state.as_str(), "completion of a handed-off command written");
    if outcome.error.as_ref().is_some_and(|e| e.retryable) {
        // It ends in a retry, not a final event: nothing to wait for.
        return Ok(accepted(&snapshot));
    }
    match app.store.wait_done(&snapshot.command_id, APPLY_WAIT, &app.shutdown).await {
        Some(done) if done.state.is_final() => settled(&outcome, &done),
        _ => Ok(accepted(&snapshot)),
    }
}

/// The answer to a completion of an operation that is done: `200` when it ended as
/// asked, `409` when something else ended it first.
fn settled(outcome: &Outcome, done: &OperationSnapshot) -> Result<Response, ApiError> {
    if outcome.matches(done) {
        return Ok((StatusCode::OK, Json(Operation::from_snapshot(done))).into_response());
    }
    Err(ApiError::new(StatusCode::CONFLICT, "already_completed", format!("the operation already ended {}", done.state.as_str()))
        .with_details(serde_json::to_value(Operation::from_snapshot(done)).unwrap_or(Value::Null)))
}

fn accepted(snapshot: &OperationSnapshot) -> Response {
    (StatusCode::ACCEPTED, Json(Operation::from_snapshot(snapshot))).into_response()
}

/// The deferral of an operation still held by its handler.
fn handed_off(snapshot: &OperationSnapshot) -> Result<Deferral, ApiError> {
    if snapshot.state.is_final() {
        return Err(ApiError::new(StatusCode::CONFLICT, "already_completed", format!("the operation already ended {}", snapshot.state.as_str())));
    }
    snapshot
        .deferred
        .clone()
        .filter(|d| d.attempt == snapshot.attempt)
        .ok_or_else(|| ApiError::new(StatusCode::CONFLICT, "not_handed_off", "the operation is not held by a handler (it did not answer 202, or not yet)"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProgressBody {
    percent: f32,
    #[serde(default)]
    message: Option<String>,
}

async fn progress(app: &GatewayState, snapshot: OperationSnapshot, body: &[u8]) -> Result<Response, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_progress", m);
    let body: ProgressBody = serde_json::from_slice(body).map_err(|e| bad(format!("the body must be {{\"percent\": 0-100, \"message\"?: text}}: {e}")))?;
    if !(0.0..=100.0).contains(&body.percent) {
        return Err(bad("percent is from 0 to 100".into()));
    }
    let mut deferral = handed_off(&snapshot)?;
    deferral.beat = chrono::Utc::now();
    let progress = Progress { percent: body.percent, message: body.message.map(|m| crate::envelope::bounds::truncate(&m, 1024).to_string()) };
    let command = deferral.command();
    let timing = Timing { attempts: snapshot.attempt, ..snapshot.timing.clone() };
    let mut event = ResultEvent::about(&command, app.submitter.source(), "gateway", State::Progress, None, None, timing);
    event.data.progress = Some(progress.clone());
    let (key, value, headers) = event.encode();
    let topics = app.submitter.topics();
    // In the results partition numbered like the command's, where the worker's own
    // events about it are (topics::check_co_partitioned).
    let results = Outgoing { partition: Some(deferral.partition), ..Outgoing::new(topics.results.clone(), key, value, headers) };
    let now = OperationSnapshot { state: State::Progress, progress: Some(progress), updated: chrono::Utc::now(), deferred: Some(deferral.clone()), ..snapshot };
    let (key, value, headers) = now.encode(app.submitter.source());
    let status = Outgoing::new(topics.status.clone(), key, value, headers);
    let control = renewal(app, &deferral);
    app.submitter.publish(vec![results, status, control]).await?;
    app.store.apply(now.clone());
    app.metrics.callbacks.get_or_create(&vec![("method".into(), "progress".into())]).inc();
    Ok(accepted(&now))
}

async fn heartbeat(app: &GatewayState, snapshot: OperationSnapshot) -> Result<Response, ApiError> {
    let mut deferral = handed_off(&snapshot)?;
    deferral.beat = chrono::Utc::now();
    app.submitter.publish(vec![renewal(app, &deferral)]).await?;
    app.metrics.callbacks.get_or_create(&vec![("method".into(), "heartbeat".into())]).inc();
    Ok(accepted(&snapshot))
}

/// The deferral restated with a later beat: the lease renewed. The payload it
/// carries on the control topic is not in the snapshot; workers keep the copy they
/// have and take only the beat ([`crate::worker`]'s registry merges them).
fn renewal(app: &GatewayState, deferral: &Deferral) -> Outgoing {
    let (key, value, headers) = deferral.encode(app.submitter.source());
    Outgoing::new(app.submitter.topics().control.clone(), key, value, headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::test_snapshot;

    #[test]
    fn a_completion_body_is_a_result_or_an_error() {
        let ok = Outcome::parse(br#"{"result": {"url": "s3://x"}}"#).unwrap();
        assert_eq!(ok.state, State::Completed);
        let failed = Outcome::parse(br#"{"error": {"code": "gpu_oom", "message": "out of memory", "retryable": true}}"#).unwrap();
        assert_eq!((failed.state, failed.error.as_ref().unwrap().retryable), (State::Failed, true));
        for bad in [&br#"{}"#[..], br#"{"result": 1, "error": {"code": "x", "message": "y"}}"#, br#"{"status": "done"}"#, b"", br#"{"error": {"code": "", "message": "m"}}"#] {
            assert!(Outcome::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_profile_reads_its_own_shape_and_courier_s() {
        let id = Uuid::now_v7();
        let ouro = Report::read(PushProfile::Ouro, id, br#"{"status": "success", "response": {"n": 1}}"#).unwrap();
        assert_eq!(ouro, Report::Done(Outcome { state: State::Completed, result: Some(serde_json::json!({"n": 1})), error: None }));
        let native = Report::read(PushProfile::Ouro, id, br#"{"result": 2}"#).unwrap();
        assert_eq!(native, Report::Done(Outcome { state: State::Completed, result: Some(serde_json::json!(2)), error: None }));
        assert_eq!(Report::read(PushProfile::Runpod, id, br#"{"id": "x", "status": "IN_PROGRESS"}"#).unwrap(), Report::Working);
        assert!(Report::read(PushProfile::Courier, id, br#"{"status": "COMPLETED"}"#).is_err(), "a profile's shape only for its types");
        assert!(Report::read(PushProfile::Runpod, id, b"nope").is_err());
    }

    #[test]
    fn the_token_comes_from_a_bearer_header_ouro_s_header_or_the_query() {
        let mut h = HeaderMap::new();
        assert_eq!(token_of(&h, Some("a=1&token=v1.x%2Ey")), Some("v1.x.y".into()));
        h.insert(crate::router::push::OURO_WEBHOOK_TOKEN, "ouro-tok".parse().unwrap());
        assert_eq!(token_of(&h, Some("token=q")), Some("ouro-tok".into()));
        h.insert(header::AUTHORIZATION, "Bearer  b-tok ".parse().unwrap());
        assert_eq!(token_of(&h, None), Some("b-tok".into()));
        assert_eq!(token_of(&HeaderMap::new(), Some("tok=x")), None);
    }

    #[test]
    fn the_same_outcome_matches_the_final_snapshot_and_another_does_not() {
        let done = OperationSnapshot { result: Some(serde_json::json!({"n": 1})), ..test_snapshot(State::Completed) };
        assert!(Outcome::parse(br#"{"result": {"n": 1}}"#).unwrap().matches(&done));
        assert!(!Outcome::parse(br#"{"result": {"n": 2}}"#).unwrap().matches(&done));
        assert!(!Outcome::parse(br#"{"error": {"code": "x", "message": "y"}}"#).unwrap().matches(&done));
        let timed_out = test_snapshot(State::TimedOut);
        assert!(!Outcome::parse(br#"{"result": null}"#).unwrap().matches(&timed_out));
    }
}
