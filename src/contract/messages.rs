//! The document's messages: one per command type, one per result state (plus a typed
//! `completed` per command type), the cancel request, the status snapshot and the
//! dead letter. Headers are `allOf` the envelope's header schema and a `const` on
//! `ce_type`, so a record validates against exactly the message its type names.

use serde_json::{json, Value};

use super::examples;
use super::schemas::SchemaSet;
use crate::envelope::{State, CANCEL_TYPE, SNAPSHOT_TYPE};

const BINDING: &str = "0.5.0";

/// The `$ref`s a message is built from, all pointing into `components/schemas`.
pub struct Refs {
    pub command_headers: Value,
    pub redelivery_headers: Value,
    pub result_headers: Value,
    pub event_headers: Value,
    pub dead_letter_headers: Value,
    pub result_data: Value,
}

fn kafka_key(description: &str) -> Value {
    json!({ "kafka": { "key": { "type": "string", "description": description }, "bindingVersion": BINDING } })
}

/// `allOf` the header schemas, with `ce_type` pinned to one value.
fn typed_headers(headers: &[&Value], ce_type: &str) -> Value {
    let mut all: Vec<Value> = headers.iter().map(|h| (*h).clone()).collect();
    all.push(json!({ "type": "object", "required": ["ce_type"], "properties": { "ce_type": { "const": ce_type } } }));
    json!({ "allOf": all })
}

/// A command of one type: the route's input schema as payload.
pub fn command(command_type: &str, description: &str, refs: &Refs, input: Value, schemas: &SchemaSet) -> Value {
    json!({
        "name": command_type,
        "title": format!("Command {command_type}"),
        "summary": if description.is_empty() { format!("Runs the {command_type} handler.") } else { description.to_string() },
        "description": "Sent by callers; also seen again, with redelivery headers, when a retry tier relay or `courier dlq replay` sends it back.",
        "contentType": "application/json",
        "headers": typed_headers(&[&refs.command_headers, &refs.redelivery_headers], command_type),
        "payload": input,
        "correlationId": { "location": "$message.header#/ce_id" },
        "bindings": kafka_key("The command key; commands sharing it run one at a time, in order. Defaults to the command id."),
        "examples": [examples::command(command_type, &input, schemas)],
    })
}

fn result_summary(state: State) -> &'static str {
    match state {
        State::Started => "A worker is running the command: sent once per attempt when the handler has run `--started-after` (default 100 ms) or first reports progress; commands that finish sooner get only their final event.",
        State::Progress => "The handler reported how far it got; advisory, may be dropped.",
        State::Completed => "Final: the handler succeeded; `result` holds its output.",
        State::Failed => "Final: the handler failed for good, or the command was dead-lettered; `error` says why.",
        State::Cancelled => "Final: a cancel request stopped the command.",
        State::TimedOut => "Final: the deadline passed before or while it ran.",
        State::Queued => "Accepted, not yet picked up (status snapshots only).",
    }
}

/// A result event in one state, for any command type.
pub fn result(state: State, refs: &Refs) -> Value {
    json!({
        "name": state.event_type(),
        "title": format!("Result: {}", state.as_str()),
        "summary": result_summary(state),
        "contentType": "application/json",
        "headers": typed_headers(&[&refs.result_headers], &state.event_type()),
        "payload": refs.result_data,
        "correlationId": { "location": "$message.header#/ce_subject" },
        "bindings": kafka_key("The key of the command it is about."),
        "examples": [examples::result(state, "primes", None, &SchemaSet::default())],
    })
}

/// The `completed` event of one command type: `result` is that route's output schema.
pub fn completed(command_type: &str, refs: &Refs, output: Value, schemas: &SchemaSet) -> Value {
    let typed = json!({
        "type": "object",
        "required": ["result"],
        "properties": { "command_type": { "const": command_type }, "result": output },
    });
    json!({
        "name": State::Completed.event_type(),
        "title": format!("Result: {command_type} completed"),
        "summary": format!("Final: the {command_type} handler succeeded; `result` holds its output."),
        "contentType": "application/json",
        "headers": typed_headers(&[&refs.result_headers], &State::Completed.event_type()),
        "payload": { "allOf": [refs.result_data, typed] },
        "correlationId": { "location": "$message.header#/ce_subject" },
        "bindings": kafka_key("The key of the command it is about."),
        "examples": [examples::result(State::Completed, command_type, Some(&output), schemas)],
    })
}

/// A message whose headers are the common event headers with `ce_type` pinned, keyed
/// as `key` says: the webhook log and endpoint records, and the two below.
pub fn event(ce_type: &str, title: &str, summary: &str, key: &str, refs: &Refs, payload: Value, example: Value) -> Value {
    json!({
        "name": ce_type,
        "title": title,
        "summary": summary,
        "contentType": "application/json",
        "headers": typed_headers(&[&refs.event_headers], ce_type),
        "payload": payload,
        "bindings": kafka_key(key),
        "examples": [example],
    })
}

/// [`event`], about one command: correlated with it through `ce_subject`.
fn command_event(ce_type: &str, title: &str, summary: &str, refs: &Refs, payload: Value, example: Value) -> Value {
    let mut message = event(ce_type, title, summary, "The command id.", refs, payload, example);
    message["correlationId"] = json!({ "location": "$message.header#/ce_subject" });
    message
}

pub fn cancel(refs: &Refs, payload: Value) -> Value {
    let summary = "Cancel a command: skipped if still queued, its cancellation token fired if running.";
    command_event(CANCEL_TYPE, "Cancel request", summary, refs, payload, examples::cancel())
}

pub fn deferred(refs: &Refs, payload: Value) -> Value {
    let summary = "A command its handler took over (an HTTP 202): every worker holds its key's later commands back until it is released; restated with a later beat at each heartbeat or progress report (the lease).";
    command_event(crate::envelope::DEFERRED_TYPE, "Command handed off", summary, refs, payload, examples::deferred())
}

pub fn released(refs: &Refs, payload: Value) -> Value {
    let summary = "A handed-off attempt ended (a final event, or a retry): its key's later commands go on.";
    command_event(crate::envelope::RELEASED_TYPE, "Hand-off released", summary, refs, payload, examples::released())
}

pub fn completion(refs: &Refs, payload: Value) -> Value {
    let summary = "How a handed-off command ended, written by the gateway (its handler called :complete) or by the partition owner's lease check (lease lapsed, deadline passed, cancelled), into the command's own partition with its key. The worker owning the partition writes the final event; the first completion of an attempt is the only one. Its ce_id is the command id.";
    let mut message = event(crate::envelope::COMPLETION_TYPE, "Completion of a handed-off command", summary, "The command's key.", refs, payload, examples::completion());
    message["correlationId"] = json!({ "location": "$message.header#/ce_subject" });
    message
}

pub fn snapshot(refs: &Refs, payload: Value) -> Value {
    let summary = "The latest state of one command; a null value (tombstone) deletes it.";
    command_event(SNAPSHOT_TYPE, "Operation snapshot", summary, refs, payload, examples::snapshot())
}

pub fn dead_letter(refs: &Refs, payload: Value, prefix: &str) -> Value {
    json!({
        "name": "courier.deadletter",
        "title": "Dead letter",
        "summary": "A record that could not be processed, kept with the reason.",
        "description": "The original record, key, value and headers untouched (for a readable command, the command headers), plus courier_dlq_* headers saying where it was consumed and why it failed. Reasons: not_utf8, not_json, bad_headers, unsupported_version, too_large, unknown_type, schema_violation, handler_panic, retries_exhausted.",
        "headers": { "allOf": [refs.dead_letter_headers, refs.redelivery_headers] },
        "payload": payload,
        "bindings": kafka_key("The original record's key."),
        "examples": [examples::dead_letter(prefix)],
    })
}
