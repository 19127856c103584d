//! Builds the AsyncAPI 3.0 document: servers, a channel per topic, operations with
//! the request/reply link, and the messages of `messages.rs`, all with Kafka bindings
//! 0.5.0. Every schema lands in `components/schemas`, every message in
//! `components/messages`; channels and operations only refer to them.

use serde_json::{json, Map, Value};

use super::headers::{DeadLetterHeaders, EventHeaders, RedeliveryHeaders, ResultHeaders};
use super::messages::{self, Refs};
use super::schemas::SchemaSet;
use super::ContractInfo;
use crate::envelope::{CancelRequest, CommandHeaders, OperationSnapshot, ResultData, State};
use crate::router::Router;

const BINDING: &str = "0.5.0";
const FINAL_STATES: [State; 4] = [State::Completed, State::Failed, State::Cancelled, State::TimedOut];
const ALL_STATES: [State; 6] = [State::Started, State::Progress, State::Completed, State::Failed, State::Cancelled, State::TimedOut];

/// Message names (keys of `components/messages`), grouped by the channel they travel on.
#[derive(Default)]
struct Names {
    commands: Vec<String>,
    results: Vec<String>,
    /// The final events a `sendCommand` may be answered with.
    replies: Vec<String>,
}

/// The document for a deployment whose workers run `router`.
pub fn asyncapi_document(router: &Router, info: &ContractInfo) -> Value {
    let mut schemas = SchemaSet::default();
    let refs = Refs {
        command_headers: schemas.add::<CommandHeaders>("CommandHeaders"),
        redelivery_headers: schemas.add::<RedeliveryHeaders>("RedeliveryHeaders"),
        result_headers: schemas.add::<ResultHeaders>("ResultHeaders"),
        event_headers: schemas.add::<EventHeaders>("EventHeaders"),
        dead_letter_headers: schemas.add::<DeadLetterHeaders>("DeadLetterHeaders"),
        result_data: schemas.add::<ResultData>("ResultData"),
    };
    let mut messages = Map::new();
    let mut names = Names::default();
    for state in ALL_STATES {
        let name = format!("result.{}", state.as_str());
        messages.insert(name.clone(), messages::result(state, &refs));
        names.results.push(name.clone());
        if state.is_final() && state != State::Completed {
            names.replies.push(name);
        }
    }
    for (command_type, route) in router.routes() {
        let input = schemas.add_schema(&format!("{command_type}.input"), route.input_schema.clone());
        let output = schemas.add_schema(&format!("{command_type}.output"), route.output_schema.clone());
        let name = format!("command.{command_type}");
        messages.insert(name.clone(), messages::command(command_type, &route.description, &refs, input, &schemas));
        names.commands.push(name);
        let name = format!("result.completed.{command_type}");
        messages.insert(name.clone(), messages::completed(command_type, &refs, output, &schemas));
        names.results.push(name.clone());
        names.replies.push(name);
    }
    let cancel = schemas.add::<CancelRequest>("CancelRequest");
    messages.insert("control.cancel".into(), messages::cancel(&refs, cancel));
    let deferral = schemas.add::<crate::envelope::Deferral>("Deferral");
    messages.insert("control.deferred".into(), messages::deferred(&refs, deferral));
    let released = schemas.add::<crate::envelope::Released>("Released");
    messages.insert("control.released".into(), messages::released(&refs, released));
    let completion = schemas.add::<crate::envelope::Completion>("Completion");
    messages.insert("command.completion".into(), messages::completion(&refs, completion));
    names.commands.push("command.completion".into());
    let snapshot = schemas.add::<OperationSnapshot>("OperationSnapshot");
    messages.insert("status.snapshot".into(), messages::snapshot(&refs, snapshot));
    let original = schemas.insert("DeadLetterValue", json!({
        "description": "The original record value, byte for byte (it may not be JSON at all)."
    }));
    messages.insert("dlq.record".into(), messages::dead_letter(&refs, original, &info.prefix));
    let attempt = schemas.add::<crate::webhooks::Attempt>("WebhookAttempt");
    messages.insert("webhooks.attempt".into(), messages::event(
        crate::webhooks::ATTEMPT_TYPE,
        "Webhook delivery attempt",
        "One attempt to POST a final result to its callback URL (or a delivery not attempted, and why), written by `courier webhooks run`. Backs GET /v1/operations/{id}/deliveries.",
        "The command id.",
        &refs,
        attempt,
        super::examples::webhook_attempt(),
    ));
    let exhausted = schemas.add::<crate::webhooks::Exhausted>("WebhookExhausted");
    messages.insert("webhooks.exhausted".into(), messages::event(
        crate::webhooks::EXHAUSTED_TYPE,
        "Webhook endpoint exhausted",
        "A callback URL failed without a success for longer than --webhook-disable-after and is now disabled.",
        "The callback URL.",
        &refs,
        exhausted,
        super::examples::webhook_exhausted(),
    ));
    let endpoint = schemas.add::<crate::webhooks::EndpointState>("WebhookEndpoint");
    messages.insert("webhooks.endpoint".into(), messages::event(
        crate::webhooks::ENDPOINT_TYPE,
        "Webhook endpoint state",
        "Whether a callback URL is disabled (410 Gone, or exhausted) and since when it has been failing; every dispatcher honours it.",
        "The callback URL.",
        &refs,
        endpoint,
        super::examples::webhook_endpoint(),
    ));

    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": info.title,
            "version": info.version,
            "description": "Kafka-native async commands. Producers send commands as CloudEvents 1.0 in Kafka binary mode (ce_* headers, JSON value); workers publish keyed result events. A command's final event (completed, failed, cancelled, timed_out) carries its id in ce_subject. Envelope version: the ce_courierversion header (1.1; readers accept any 1.x and ignore unknown optional headers and fields; from 1.1 a final event carries its command's ce_callbackurl). See docs/CONTRACT.md.",
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
        "channels": channels(info, &names),
        "operations": operations(&names),
        "components": { "messages": Value::Object(messages), "schemas": schemas.into_value() },
    })
}

/// How `courier topics create` keeps a topic's records.
enum Kept {
    /// `cleanup.policy=delete` with the deployment's retention.
    ForRetention,
    /// `cleanup.policy=compact`: the latest record per key.
    Compacted,
    /// `cleanup.policy=delete` with the DLQ's own, longer retention.
    AsDeadLetters,
}

fn channels(info: &ContractInfo, names: &Names) -> Value {
    let p = &info.prefix;
    let one = |name: &str| vec![name.to_string()];
    json!({
        "commands": channel(info, &format!("{p}.commands"), "Commands to run, keyed by command key (else id).", &names.commands, Kept::ForRetention),
        "results": channel(info, &format!("{p}.results"), "Result events, keyed like their command. A final event also goes to the command's ce_replyto (or kafka_replyTopic) topic when it names one.", &names.results, Kept::ForRetention),
        "status": channel(info, &format!("{p}.status"), "Latest snapshot per command (compacted), keyed by command id.", &one("status.snapshot"), Kept::Compacted),
        "retry": retry_channel(info, &names.commands),
        "deadLetters": channel(info, &format!("{p}.commands.dlq"), "Records that could not be processed, with the reason.", &one("dlq.record"), Kept::AsDeadLetters),
        "control": channel(info, &format!("{p}.control"), "Cancel requests and hand-offs of deferred commands (and their releases), keyed by command id, read by every worker from the start. A handed-off job may last as long as this topic's retention: each heartbeat restates it.", &["control.cancel".to_string(), "control.deferred".to_string(), "control.released".to_string()], Kept::ForRetention),
        "webhookLog": channel(info, &format!("{p}.webhooks.log"), "Every webhook delivery attempt (keyed by command id) and every endpoint disabled for failing too long (keyed by URL).", &["webhooks.attempt".to_string(), "webhooks.exhausted".to_string()], Kept::ForRetention),
        "webhookEndpoints": channel(info, &format!("{p}.webhooks.endpoints"), "Latest state per callback URL (compacted), keyed by URL.", &one("webhooks.endpoint"), Kept::Compacted),
    })
}

fn kafka_binding(info: &ContractInfo, topic: Option<&str>, kept: Kept) -> Value {
    let config = match kept {
        Kept::ForRetention => json!({ "cleanup.policy": ["delete"], "retention.ms": info.retention_ms }),
        Kept::Compacted => json!({ "cleanup.policy": ["compact"] }),
        Kept::AsDeadLetters => json!({ "cleanup.policy": ["delete"] }),
    };
    let mut kafka = json!({
        "partitions": info.partitions,
        "replicas": info.replicas,
        "topicConfiguration": config,
        "bindingVersion": BINDING,
    });
    if let Some(topic) = topic {
        kafka["topic"] = json!(topic);
    }
    json!({ "kafka": kafka })
}

fn channel(info: &ContractInfo, address: &str, description: &str, messages: &[String], kept: Kept) -> Value {
    json!({
        "address": address,
        "description": description,
        "messages": message_refs(messages),
        "bindings": kafka_binding(info, Some(address), kept),
    })
}

fn retry_channel(info: &ContractInfo, commands: &[String]) -> Value {
    json!({
        "address": format!("{}.commands.retry.{{tier}}", info.prefix),
        "description": "Commands waiting to be retried: the command record with ce_attempt incremented and the redelivery headers (courier_not_before, ...) set; a relay returns it to the partition of the commands topic it came from when due.",
        "parameters": { "tier": {
            "description": "The delay of the tier, as `courier topics create --retry-tiers` names it.",
            "examples": info.retry_tiers,
        } },
        "messages": message_refs(commands),
        "bindings": kafka_binding(info, None, Kept::ForRetention),
    })
}

fn message_refs(names: &[String]) -> Value {
    Value::Object(names.iter().map(|n| (n.replace('.', "_"), json!({ "$ref": format!("#/components/messages/{n}") }))).collect())
}

fn channel_message_refs(channel: &str, names: &[String]) -> Value {
    Value::Array(names.iter().map(|n| json!({ "$ref": format!("#/channels/{channel}/messages/{}", n.replace('.', "_")) })).collect())
}

fn operation_binding(group: Value) -> Value {
    json!({ "kafka": { "groupId": group, "clientId": { "type": "string" }, "bindingVersion": BINDING } })
}

fn operations(names: &Names) -> Value {
    let any_group = operation_binding(json!({ "type": "string", "description": "Any group of the reader's own." }));
    let workers = operation_binding(json!({ "type": "string", "default": "courier-workers", "description": "Workers sharing a group split the partitions." }));
    let producer = json!({ "kafka": { "clientId": { "type": "string" }, "bindingVersion": BINDING } });
    let final_types = FINAL_STATES.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
    json!({
        "sendCommand": {
            "action": "send",
            "channel": { "$ref": "#/channels/commands" },
            "summary": "Submit a command; its final result event arrives on the results channel.",
            "description": format!("The reply is the command's one final event ({final_types}), keyed like the command, with ce_subject = the command's ce_id."),
            "messages": channel_message_refs("commands", &names.commands),
            "reply": { "channel": { "$ref": "#/channels/results" }, "messages": channel_message_refs("results", &names.replies) },
            "bindings": producer,
        },
        "receiveResults": {
            "action": "receive",
            "channel": { "$ref": "#/channels/results" },
            "summary": "Read result events; match ce_subject to your command id, dedupe on ce_id.",
            "messages": channel_message_refs("results", &names.results),
            "bindings": any_group,
        },
        "runCommands": {
            "action": "receive",
            "channel": { "$ref": "#/channels/commands" },
            "summary": "Workers consume commands in one consumer group.",
            "messages": channel_message_refs("commands", &names.commands),
            "bindings": workers,
        },
        "cancelCommand": {
            "action": "send",
            "channel": { "$ref": "#/channels/control" },
            "summary": "Ask every worker to cancel a command.",
            "messages": channel_message_refs("control", &["control.cancel".into()]),
            "bindings": producer,
        },
        "followHandOffs": {
            "action": "receive",
            "channel": { "$ref": "#/channels/control" },
            "summary": "Workers follow hand-offs of deferred commands and their releases (the gateway restates them on heartbeats).",
            "messages": channel_message_refs("control", &["control.deferred".into(), "control.released".into()]),
            "bindings": any_group.clone(),
        },
        "readStatus": {
            "action": "receive",
            "channel": { "$ref": "#/channels/status" },
            "summary": "Rebuild every operation's latest state by reading the compacted status topic.",
            "messages": channel_message_refs("status", &["status.snapshot".into()]),
            "bindings": any_group,
        },
        "readWebhookLog": {
            "action": "receive",
            "channel": { "$ref": "#/channels/webhookLog" },
            "summary": "Follow webhook delivery attempts; alert on courier.webhook.exhausted.",
            "messages": channel_message_refs("webhookLog", &["webhooks.attempt".into(), "webhooks.exhausted".into()]),
            "bindings": any_group.clone(),
        },
        "readWebhookEndpoints": {
            "action": "receive",
            "channel": { "$ref": "#/channels/webhookEndpoints" },
            "summary": "Which callback URLs are disabled, and why.",
            "messages": channel_message_refs("webhookEndpoints", &["webhooks.endpoint".into()]),
            "bindings": any_group.clone(),
        },
        "readDeadLetters": {
            "action": "receive",
            "channel": { "$ref": "#/channels/deadLetters" },
            "summary": "Inspect or replay records that could not be processed.",
            "messages": channel_message_refs("deadLetters", &["dlq.record".into()]),
            "bindings": any_group,
        },
    })
}
