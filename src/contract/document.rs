//! Builds the AsyncAPI 3.0 document: servers, a channel per topic, operations with
//! the request/reply link, messages with CloudEvents headers, Kafka bindings 0.5.0,
//! and examples encoded by the same code that encodes real records.

use serde_json::{json, Map, Value};

use super::headers::{DeadLetterHeaders, EventHeaders, ResultHeaders};
use super::schemas::SchemaSet;
use super::ContractInfo;
use crate::envelope::{
    CancelRequest, CommandHeaders, HeaderMap, NewCommand, OperationSnapshot, ResultData, ResultEvent, State, Timing,
};
use crate::router::Router;

const BINDING: &str = "0.5.0";
/// Examples use fixed ids and times, so regenerating the document changes nothing.
const EXAMPLE_COMMAND_ID: &str = "01937a4e-3b7c-7d2a-9f10-5c2b8e4d6a01";
const EXAMPLE_EVENT_ID: &str = "01937a4e-3c01-7b55-8e3d-2a9c4f6b7d02";
const EXAMPLE_TIME: &str = "2026-01-15T09:30:00.000Z";

fn example_id(s: &str) -> uuid::Uuid {
    uuid::Uuid::parse_str(s).unwrap_or_default()
}

fn example_time() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(EXAMPLE_TIME).map(|t| t.with_timezone(&chrono::Utc)).unwrap_or_default()
}
const FINAL_STATES: [State; 4] = [State::Completed, State::Failed, State::Cancelled, State::TimedOut];
const ALL_STATES: [State; 6] = [State::Started, State::Progress, State::Completed, State::Failed, State::Cancelled, State::TimedOut];

/// The document for a deployment whose workers run `router`.
pub fn asyncapi_document(router: &Router, info: &ContractInfo) -> Value {
    let mut schemas = SchemaSet::default();
    let mut messages = Map::new();
    let command_headers = schemas.add::<CommandHeaders>("CommandHeaders");
    let result_headers = schemas.add::<ResultHeaders>("ResultHeaders");
    let event_headers = schemas.add::<EventHeaders>("EventHeaders");
    let dlq_headers = schemas.add::<DeadLetterHeaders>("DeadLetterHeaders");
    let result_data = schemas.add::<ResultData>("ResultData");

    let mut command_refs = Vec::new();
    for (command_type, route) in router.routes() {
        let input = schemas.add_schema(&format!("{command_type}.input"), route.input_schema.clone());
        schemas.add_schema(&format!("{command_type}.output"), route.output_schema.clone());
        let name = format!("command.{command_type}");
        messages.insert(name.clone(), command_message(command_type, &route.description, &command_headers, input));
        command_refs.push(name);
    }
    let mut result_refs = Vec::new();
    for state in ALL_STATES {
        let name = format!("result.{}", state.as_str());
        messages.insert(name.clone(), result_message(state, &result_headers, &result_data));
        result_refs.push(name);
    }
    let cancel = schemas.add::<CancelRequest>("CancelRequest");
    messages.insert("control.cancel".into(), control_message(&event_headers, cancel));
    let snapshot = schemas.add::<OperationSnapshot>("OperationSnapshot");
    messages.insert("status.snapshot".into(), snapshot_message(&event_headers, snapshot));
    let dead_letter_payload = schemas.insert("DeadLetterValue", json!({
        "description": "The original record value, byte for byte (it may not be JSON at all)."
    }));
    messages.insert("dlq.record".into(), dead_letter_message(&dlq_headers, dead_letter_payload));

    let p = &info.prefix;
    let channels = json!({
        "commands": channel(info, &format!("{p}.commands"), "Commands to run, keyed by command key (else id).", &command_refs, None),
        "results": channel(info, &format!("{p}.results"), "Result events, keyed like their command.", &result_refs, None),
        "status": channel(info, &format!("{p}.status"), "Latest snapshot per command (compacted), keyed by command id.", &["status.snapshot".into()], Some("compact")),
        "retry": retry_channel(info, &command_refs),
        "deadLetters": channel(info, &format!("{p}.commands.dlq"), "Records that could not be processed, with the reason.", &["dlq.record".into()], None),
        "control": channel(info, &format!("{p}.control"), "Cancel requests, read by every worker from the start.", &["control.cancel".into()], None),
    });
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": info.title,
            "version": info.version,
            "description": "Kafka-native async commands. Producers send commands as CloudEvents 1.0 in Kafka binary mode (ce_* headers, JSON value); workers publish keyed result events. A command's final event (completed, failed, cancelled, timed_out) carries its id in ce_subject.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": "{bootstrap}",
                "protocol": "kafka",
                "description": "Any Kafka cluster (Apache Kafka 3.x/4.x, Redpanda, MSK, Confluent).",
                "variables": { "bootstrap": { "default": "localhost:9092", "description": "A bootstrap server host:port." } },
                "bindings": { "kafka": { "bindingVersion": BINDING } },
            }
        },
        "channels": channels,
        "operations": operations(&command_refs, &result_refs),
        "components": { "messages": Value::Object(messages), "schemas": schemas.into_value() },
    })
}

fn channel(info: &ContractInfo, address: &str, description: &str, messages: &[String], cleanup: Option<&str>) -> Value {
    let mut kafka = json!({ "topic": address, "partitions": info.partitions, "replicas": info.replicas, "bindingVersion": BINDING });
    if let Some(policy) = cleanup {
        kafka["topicConfiguration"] = json!({ "cleanup.policy": [policy] });
    }
    json!({
        "address": address,
        "description": description,
        "messages": message_refs(messages),
        "bindings": { "kafka": kafka },
    })
}

fn retry_channel(info: &ContractInfo, command_refs: &[String]) -> Value {
    json!({
        "address": format!("{}.commands.retry.{{tier}}", info.prefix),
        "description": "Commands waiting to be retried: the command record with ce_attempt incremented and courier_not_before set; a relay returns it to the commands topic when due.",
        "parameters": { "tier": { "description": "The delay of the tier, e.g. 1s, 10s, 1m.", "examples": ["1s", "10s", "1m"] } },
        "messages": message_refs(command_refs),
        "bindings": { "kafka": { "partitions": info.partitions, "replicas": info.replicas, "bindingVersion": BINDING } },
    })
}

fn message_refs(names: &[String]) -> Value {
    Value::Object(names.iter().map(|n| (n.replace('.', "_"), json!({ "$ref": format!("#/components/messages/{n}") }))).collect())
}

fn channel_message_refs(channel: &str, names: &[String]) -> Value {
    Value::Array(names.iter().map(|n| json!({ "$ref": format!("#/channels/{channel}/messages/{}", n.replace('.', "_")) })).collect())
}

fn operations(command_refs: &[String], result_refs: &[String]) -> Value {
    let finals: Vec<String> = FINAL_STATES.iter().map(|s| format!("result.{}", s.as_str())).collect();
    let client_binding = json!({ "kafka": {
        "groupId": { "type": "string", "description": "Any group; result readers need not share one." },
        "clientId": { "type": "string" },
        "bindingVersion": BINDING,
    }});
    let worker_binding = json!({ "kafka": {
        "groupId": { "type": "string", "default": "courier-workers", "description": "Workers sharing a group split the partitions." },
        "clientId": { "type": "string" },
        "bindingVersion": BINDING,
    }});
    json!({
        "sendCommand": {
            "action": "send",
            "channel": { "$ref": "#/channels/commands" },
            "summary": "Submit a command; its final result event arrives on the results channel.",
            "messages": channel_message_refs("commands", command_refs),
            "reply": { "channel": { "$ref": "#/channels/results" }, "messages": channel_message_refs("results", &finals) },
            "bindings": client_binding,
        },
        "receiveResults": {
            "action": "receive",
            "channel": { "$ref": "#/channels/results" },
            "summary": "Read result events; match ce_subject to your command id.",
            "messages": channel_message_refs("results", result_refs),
            "bindings": client_binding,
        },
        "runCommands": {
            "action": "receive",
            "channel": { "$ref": "#/channels/commands" },
            "summary": "Workers consume commands in one consumer group.",
            "messages": channel_message_refs("commands", command_refs),
            "bindings": worker_binding,
        },
        "cancelCommand": {
            "action": "send",
            "channel": { "$ref": "#/channels/control" },
            "summary": "Ask every worker to cancel a command.",
            "messages": channel_message_refs("control", &["control.cancel".into()]),
        },
        "readStatus": {
            "action": "receive",
            "channel": { "$ref": "#/channels/status" },
            "summary": "Rebuild every operation's latest state by reading the compacted status topic.",
            "messages": channel_message_refs("status", &["status.snapshot".into()]),
        },
        "readDeadLetters": {
            "action": "receive",
            "channel": { "$ref": "#/channels/deadLetters" },
            "summary": "Inspect or replay records that could not be processed.",
            "messages": channel_message_refs("deadLetters", &["dlq.record".into()]),
        },
    })
}

fn kafka_key(description: &str) -> Value {
    json!({ "kafka": { "key": { "type": "string", "description": description }, "bindingVersion": BINDING } })
}

fn command_message(command_type: &str, description: &str, headers: &Value, payload: Value) -> Value {
    let mut sample = NewCommand::new(command_type, Value::Null).key("customer-42").into_command("//billing-service");
    sample.id = example_id(EXAMPLE_COMMAND_ID);
    sample.time = Some(example_time());
    let (_, _, h) = sample.encode();
    json!({
        "name": command_type,
        "title": format!("Command {command_type}"),
        "summary": if description.is_empty() { format!("Runs the {command_type} handler.") } else { description.to_string() },
        "contentType": "application/json",
        "headers": with_type(headers, "ce_type", command_type),
        "payload": payload,
        "correlationId": { "location": "$message.header#/ce_id" },
        "bindings": kafka_key("The command key; commands sharing it run one at a time, in order. Defaults to the command id."),
        "examples": [{ "name": format!("{command_type}-headers"), "headers": headers_json(&h) }],
    })
}

fn with_type(headers: &Value, field: &str, value: &str) -> Value {
    json!({ "allOf": [headers, { "type": "object", "properties": { field: { "const": value } } }] })
}

fn result_message(state: State, headers: &Value, data: &Value) -> Value {
    let (key, value, h) = sample_result(state).encode();
    let _ = key;
    json!({
        "name": format!("courier.command.{}", state.as_str()),
        "title": format!("Result: {}", state.as_str()),
        "contentType": "application/json",
        "headers": with_type(headers, "ce_type", &state.event_type()),
        "payload": data,
        "correlationId": { "location": "$message.header#/ce_subject" },
        "bindings": kafka_key("The key of the command it is about."),
        "examples": [{
            "name": state.as_str(),
            "headers": headers_json(&h),
            "payload": serde_json::from_slice::<Value>(&value).unwrap_or(Value::Null),
        }],
    })
}

fn sample_result(state: State) -> ResultEvent {
    let error = (!matches!(state, State::Completed | State::Started | State::Progress)).then(|| crate::envelope::ErrorInfo {
        code: format!("example_{}", state.as_str()),
        message: "what went wrong".into(),
        retryable: false,
    });
    let data = ResultData {
        command_id: example_id(EXAMPLE_COMMAND_ID),
        command_type: "primes".into(),
        state,
        key: Some("customer-42".into()),
        result: (state == State::Completed).then(|| json!({ "n": 100, "primes": 25 })),
        error,
        progress: (state == State::Progress).then(|| crate::envelope::Progress { percent: 50.0, message: Some("halfway".into()) }),
        timing: Timing { queued_ms: 12, execution_ms: 40, attempts: 1 },
        worker: "host-1".into(),
    };
    let mut ev = ResultEvent::new("customer-42".into(), "//courier/worker/host-1", data);
    ev.id = example_id(EXAMPLE_EVENT_ID);
    ev.time = example_time();
    ev
}

fn control_message(headers: &Value, payload: Value) -> Value {
    let mut req = CancelRequest::new(example_id(EXAMPLE_COMMAND_ID), Some("user asked".into()));
    req.requested_at = example_time();
    let (_, value, mut h) = req.encode("//billing-service");
    h.set(crate::envelope::header_names::ID, EXAMPLE_EVENT_ID);
    json!({
        "name": "courier.control.cancel",
        "title": "Cancel request",
        "contentType": "application/json",
        "headers": with_type(headers, "ce_type", crate::envelope::CANCEL_TYPE),
        "payload": payload,
        "bindings": kafka_key("The command id."),
        "examples": [{ "name": "cancel", "headers": headers_json(&h), "payload": serde_json::from_slice::<Value>(&value).unwrap_or(Value::Null) }],
    })
}

fn snapshot_message(headers: &Value, payload: Value) -> Value {
    json!({
        "name": "courier.operation.snapshot",
        "title": "Operation snapshot",
        "contentType": "application/json",
        "headers": with_type(headers, "ce_type", crate::envelope::SNAPSHOT_TYPE),
        "payload": payload,
        "bindings": kafka_key("The command id; a null value (tombstone) deletes the operation."),
    })
}

fn dead_letter_message(headers: &Value, payload: Value) -> Value {
    json!({
        "name": "courier.deadletter",
        "title": "Dead letter",
        "summary": "The original record (value and headers untouched) plus courier_dlq_* headers saying why it failed.",
        "headers": headers,
        "payload": payload,
        "bindings": kafka_key("The original record's key."),
    })
}

/// Kafka headers as the JSON object the header schemas describe.
pub fn headers_json(headers: &HeaderMap) -> Value {
    Value::Object(headers.iter().map(|(k, v)| (k.to_string(), Value::String(String::from_utf8_lossy(v).into_owned()))).collect())
}
