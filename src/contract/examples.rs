//! Example records for the document's messages.
//!
//! Each one is encoded by the function that encodes real records (`Command::encode`,
//! `ResultEvent::encode`, `CancelRequest::encode`, `OperationSnapshot::encode`,
//! `DeadLetter::to_record`), so an example cannot show a header the code does not
//! write. Ids and times are fixed, so regenerating the document changes nothing, and
//! `tests/contract.rs` validates every example against its own message.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::{uuid, Uuid};

use super::schemas::SchemaSet;
use crate::envelope::DeadLetter;
use crate::envelope::{
    header_names as h, CancelRequest, ErrorInfo, HeaderMap, NewCommand, OperationSnapshot, Progress, ResultData,
    ResultEvent, State, Timing,
};

const COMMAND_ID: Uuid = uuid!("01937a4e-3b7c-7d2a-9f10-5c2b8e4d6a01");
const EVENT_ID: Uuid = uuid!("01937a4e-3c01-7b55-8e3d-2a9c4f6b7d02");
const TIME: &str = "2026-01-15T09:30:00.000Z";
const KEY: &str = "customer-42";
const CLIENT: &str = "//billing-service";
const WORKER: &str = "//courier/worker/host-1";
const WEBHOOKS: &str = "//courier/webhooks/host-1";

fn time() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(TIME).map(|t| t.with_timezone(&Utc)).unwrap_or_default()
}

/// Kafka headers as the JSON object the header schemas describe.
pub fn headers_json(headers: &HeaderMap) -> Value {
    Value::Object(headers.iter().map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), Value::String(String::from_utf8_lossy(v).into_owned()))).collect())
}

/// One AsyncAPI Message Example: the record's headers as text, its value as JSON.
fn example(name: &str, headers: &HeaderMap, value: &[u8]) -> Value {
    json!({
        "name": name,
        "headers": headers_json(headers),
        "payload": serde_json::from_slice::<Value>(value).unwrap_or(Value::Null),
    })
}

/// A command of `command_type` whose payload is the smallest value its input schema
/// accepts (or the schema's own example).
pub fn command(command_type: &str, input: &Value, schemas: &SchemaSet) -> Value {
    let mut cmd = NewCommand::new(command_type, sample(input, schemas, 0)).key(KEY).into_command(CLIENT);
    cmd.id = COMMAND_ID;
    cmd.time = Some(time());
    let (_, value, headers) = cmd.encode();
    example(command_type, &headers, &value)
}

/// A result event in `state`, as a worker publishes it: for a `primes` command, or,
/// given a route's output schema, for `command_type` with the smallest valid result.
pub fn result(state: State, command_type: &str, output: Option<&Value>, schemas: &SchemaSet) -> Value {
    let mut event = result_event(state);
    if let Some(schema) = output {
        event.data.command_type = command_type.into();
        event.data.result = Some(sample(schema, schemas, 0));
    }
    let (_, value, headers) = event.encode();
    example(&format!("{}-{}", event.data.command_type, state.as_str()), &headers, &value)
}

fn result_event(state: State) -> ResultEvent {
    let error = matches!(state, State::Failed | State::Cancelled | State::TimedOut).then(|| ErrorInfo {
        code: state.as_str().into(),
        message: "what went wrong".into(),
        retryable: false,
    });
    let data = ResultData {
        command_id: COMMAND_ID,
        command_type: "primes".into(),
        state,
        key: Some(KEY.into()),
        key_base64: None,
        result: (state == State::Completed).then(|| json!({ "n": 100, "primes": 25 })),
        error,
        progress: (state == State::Progress).then(|| Progress { percent: 50.0, message: Some("halfway".into()) }),
        timing: Timing { queued_ms: 12, execution_ms: 40, attempts: 1 },
        worker: "host-1".into(),
    };
    let mut event = ResultEvent::new(KEY.into(), WORKER, data);
    event.id = EVENT_ID;
    event.time = time();
    event
}

pub fn cancel() -> Value {
    let mut request = CancelRequest::new(COMMAND_ID, Some("user asked".into()));
    request.requested_at = time();
    let (_, value, mut headers) = request.encode(CLIENT);
    headers.set(h::ID, EVENT_ID.to_string());
    example("cancel", &headers, &value)
}

pub fn snapshot() -> Value {
    let result = result_event(State::Completed).data;
    let snapshot = OperationSnapshot {
        command_id: COMMAND_ID,
        command_type: result.command_type,
        state: State::Completed,
        key: result.key,
        key_base64: None,
        attempt: 1,
        progress: None,
        result: result.result,
        error: None,
        timing: result.timing,
        created: time(),
        updated: time(),
        callback_url: None,
        idempotency_key: None,
        request_hash: None,
        batch_id: None,
        tenant: Some("billing".into()),
        worker: Some("host-1".into()),
        deferred: None,
    };
    let (_, value, mut headers) = snapshot.encode(WORKER);
    headers.set(h::ID, EVENT_ID.to_string());
    example("completed", &headers, &value)
}

/// A command handed off to its handler (an HTTP `202`), as the deferral on the
/// control topic; `since` and `beat` fixed.
fn deferral() -> crate::envelope::Deferral {
    let mut cmd = NewCommand::new("primes", json!({ "n": 100 })).key(KEY).into_command(CLIENT);
    cmd.id = COMMAND_ID;
    cmd.time = Some(time());
    let mut d = crate::envelope::Deferral::of(&cmd, cmd.data.clone(), 3, Some(std::time::Duration::from_secs(300)));
    d.since = time();
    d.beat = time();
    d
}

pub fn deferred() -> Value {
    let (_, value, mut headers) = deferral().encode(WORKER);
    headers.set(h::ID, EVENT_ID.to_string());
    example("handed_off", &headers, &value)
}

pub fn released() -> Value {
    let mut released = crate::envelope::Released::new(COMMAND_ID, 1);
    released.at = time();
    let (_, value, mut headers) = released.encode(WORKER);
    headers.set(h::ID, EVENT_ID.to_string());
    example("released", &headers, &value)
}

pub fn completion() -> Value {
    let done = crate::envelope::Completion {
        deferral: deferral().without_data(),
        state: State::Completed,
        result: Some(json!({ "n": 100, "primes": 25 })),
        error: None,
        at: time(),
    };
    let (_, _, value, headers) = done.encode("//courier/gateway/1");
    example("completed", &headers, &value)
}

/// A `primes` command whose payload broke its schema, as the DLQ keeps it.
pub fn dead_letter(prefix: &str) -> Value {
    let mut cmd = NewCommand::new("primes", json!({ "n": "ten" })).key(KEY).into_command(CLIENT);
    cmd.id = COMMAND_ID;
    cmd.time = Some(time());
    let (key, value, headers) = cmd.encode();
    let mut letter = DeadLetter::new(&format!("{prefix}.commands"), 3, 1041, crate::envelope::Reason::SchemaViolation, "\"ten\" is not of type \"integer\"", 1);
    letter.first_failure = time();
    letter.last_failure = time();
    let record = letter.to_record(&format!("{prefix}.commands.dlq"), Some(&key), Some(&value), &headers);
    example("schema_violation", &record.headers, record.value.as_deref().unwrap_or_default())
}

/// The smallest value `schema` accepts, found by walking it: its example, default or
/// const if it has one; else every required property, each filled the same way.
fn sample(schema: &Value, schemas: &SchemaSet, depth: u8) -> Value {
    let Some(obj) = schema.as_object().filter(|_| depth < 16) else { return json!({}) };
    if let Some(target) = obj.get("$ref").and_then(Value::as_str) {
        let name = target.trim_start_matches("#/components/schemas/");
        return schemas.get(name).map_or(json!({}), |s| sample(s, schemas, depth + 1));
    }
    let given = obj.get("examples").and_then(|e| e.get(0)).or(obj.get("const")).or(obj.get("default"));
    if let Some(v) = given.or(obj.get("enum").and_then(|e| e.get(0))) {
        return v.clone();
    }
    if let Some(first) = ["allOf", "anyOf", "oneOf"].iter().find_map(|k| obj.get(*k).and_then(|v| v.get(0))) {
        return sample(first, schemas, depth + 1);
    }
    let ty = match obj.get("type") {
        Some(Value::Array(types)) => types.iter().filter_map(Value::as_str).find(|t| *t != "null"),
        Some(t) => t.as_str(),
        None => None,
    };
    let minimum = obj.get("minimum").cloned().unwrap_or(json!(0));
    match ty {
        Some("string") => match obj.get("format").and_then(Value::as_str) {
            Some("uuid") => json!(COMMAND_ID),
            Some("date-time") => json!(TIME),
            _ => json!("example"),
        },
        Some("integer") | Some("number") => minimum,
        Some("boolean") => json!(false),
        Some("null") => Value::Null,
        Some("array") => match obj.get("items") {
            Some(Value::Array(tuple)) => tuple.iter().map(|s| sample(s, schemas, depth + 1)).collect(),
            _ => json!([]),
        },
        _ => {
            let props = obj.get("properties");
            let required = obj.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str);
            let fields = required.map(|name| {
                let prop = props.and_then(|p| p.get(name)).unwrap_or(&Value::Null);
                (name.to_string(), sample(prop, schemas, depth + 1))
            });
            Value::Object(fields.collect())
        }
    }
}

/// A failed delivery attempt as the webhook delivery log records it.
pub fn webhook_attempt() -> Value {
    let attempt = crate::webhooks::Attempt {
        command_id: COMMAND_ID,
        event_id: EVENT_ID,
        url: "https://hooks.example.com/courier".into(),
        attempt: 2,
        outcome: "failed".into(),
        status: Some(503),
        error: Some("HTTP 503 Service Unavailable".into()),
        latency_ms: 41,
        time: time(),
        next: Some("retry in 5m 12s".into()),
        tenant: Some("billing".into()),
    };
    let mut record = attempt.record("courier.webhooks.log", WEBHOOKS);
    record.headers.set(h::ID, EVENT_ID.to_string());
    example("failed_attempt", &record.headers, record.value.as_deref().unwrap_or_default())
}

/// The event written when an endpoint is disabled after failing too long.
pub fn webhook_exhausted() -> Value {
    let exhausted = crate::webhooks::Exhausted {
        url: "https://hooks.example.com/courier".into(),
        failing_since: time() - chrono::Duration::hours(120),
        disabled_at: time(),
        command_id: COMMAND_ID,
        last_error: Some("HTTP 503 Service Unavailable".into()),
    };
    let mut record = exhausted.record("courier.webhooks.log", WEBHOOKS);
    record.headers.set(h::ID, EVENT_ID.to_string());
    example("exhausted", &record.headers, record.value.as_deref().unwrap_or_default())
}

/// An endpoint disabled by a `410 Gone`, as the compacted endpoints topic keeps it.
pub fn webhook_endpoint() -> Value {
    let state = crate::webhooks::EndpointState {
        url: "https://hooks.example.com/courier".into(),
        disabled: Some(crate::webhooks::Disabled {
            reason: "gone".into(),
            detail: "410 Gone: endpoint disabled".into(),
            at: time(),
        }),
        failing_since: None,
        updated: time(),
    };
    let mut record = state.record("courier.webhooks.endpoints", WEBHOOKS);
    record.headers.set(h::ID, EVENT_ID.to_string()).set(h::SUBJECT, COMMAND_ID.to_string());
    example("gone", &record.headers, record.value.as_deref().unwrap_or_default())
}
