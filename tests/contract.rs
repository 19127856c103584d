//! The contract can never drift from the code: the checked-in AsyncAPI document equals
//! a fresh one, and every kind of record Courier produces (samples encoded in-process,
//! the document's own examples, and real records read back from the broker) validates
//! against the document's schemas and carries no header the document leaves out.
//!
//! Schemas are checked as JSON Schema draft-07 with formats (`uuid`, `date-time`), the
//! dialect AsyncAPI 3.0's default schema format builds on.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use courier::client::StartAt;
use courier::contract::{asyncapi_document, headers_json, to_yaml, ContractInfo};
use courier::envelope::{CancelRequest, DeadLetter, ErrorInfo, HeaderMap, NewCommand, OperationSnapshot, Progress, ResultData};
use courier::envelope::{Reason, ResultEvent, State, Timing};
use courier::{Client, Router};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};

fn document() -> Value {
    asyncapi_document(&courier::demo::example_router(), &ContractInfo::default())
}

/// Validates `instance` against `schema`; the root embeds the document's components
/// so `#/components/schemas/...` references resolve.
fn check(doc: &Value, schema: &Value, instance: &Value) -> Result<(), String> {
    let root = json!({ "allOf": [schema], "components": { "schemas": doc["components"]["schemas"].clone() } });
    let validator = jsonschema::draft7::options()
        .should_validate_formats(true)
        .build(&root)
        .map_err(|e| format!("bad schema: {e}"))?;
    let errors: Vec<String> = validator.iter_errors(instance).map(|e| format!("{e} at {}", e.instance_path())).collect();
    if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
}

fn message<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let m = &doc["components"]["messages"][name];
    assert!(m.is_object(), "no message {name} in the document");
    m
}

/// Header names a schema declares, following `$ref` and `allOf`.
fn declared(doc: &Value, schema: &Value, out: &mut BTreeSet<String>) {
    if let Some(name) = schema.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/components/schemas/")) {
        declared(doc, &doc["components"]["schemas"][name], out);
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        out.extend(props.keys().cloned());
    }
    for sub in schema.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        declared(doc, sub, out);
    }
}

/// Checks a record's headers and (JSON) value against a message of the document, and
/// that every header it carries is one the document names. A dead letter keeps its
/// original headers, so the command headers count as named there, and its value is
/// the original bytes, which need not be JSON.
fn check_record(doc: &Value, name: &str, headers: &HeaderMap, value: Option<&[u8]>) -> Result<(), String> {
    let m = message(doc, name);
    let headers = headers_json(headers);
    check(doc, &m["headers"], &headers).map_err(|e| format!("{name} headers: {e}"))?;
    let mut named = BTreeSet::new();
    declared(doc, &m["headers"], &mut named);
    if name == "dlq.record" {
        declared(doc, &message(doc, "command.echo")["headers"], &mut named);
    }
    let unnamed: Vec<&String> = headers.as_object().into_iter().flatten().map(|(k, _)| k).filter(|k| !named.contains(*k)).collect();
    if !unnamed.is_empty() {
        return Err(format!("{name}: headers the document does not name: {unnamed:?}"));
    }
    if let Some(v) = value.filter(|v| !v.is_empty() && name != "dlq.record") {
        let payload: Value = serde_json::from_slice(v).map_err(|e| format!("{name}: value is not JSON: {e}"))?;
        check(doc, &m["payload"], &payload).map_err(|e| format!("{name} payload: {e}"))?;
    }
    Ok(())
}

#[test]
fn checked_in_document_is_current() {
    let fresh = to_yaml(&document()).expect("render");
    let path = common::repo().join("asyncapi/asyncapi.yaml");
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == fresh,
        "asyncapi/asyncapi.yaml is stale: run `cargo run --release -- asyncapi --out asyncapi/asyncapi.yaml`"
    );
}

#[test]
fn routes_add_their_own_messages_and_schemas() {
    let doc = asyncapi_document(&Router::new().route("just.echo", courier::demo::Echo), &ContractInfo::default());
    assert!(doc["components"]["messages"]["command.just.echo"].is_object());
    assert!(doc["components"]["schemas"]["just.echo.output"].is_object());
    let completed = &doc["components"]["messages"]["result.completed.just.echo"];
    assert!(completed["payload"].to_string().contains("#/components/schemas/just.echo.output"), "{completed}");
    let reply = &doc["operations"]["sendCommand"]["reply"];
    assert_eq!(reply["channel"]["$ref"], "#/channels/results");
    assert!(reply["messages"].to_string().contains("result_completed_just_echo"), "{reply}");
    assert_eq!(doc["channels"]["status"]["bindings"]["kafka"]["topicConfiguration"]["cleanup.policy"][0], "compact");
    let text = doc.to_string();
    for banned in ["\"$schema\"", "#/$defs/", "#/definitions/", "\"$defs\"", "prefixItems"] {
        assert!(!text.contains(banned), "the document still holds {banned}");
    }
}

#[test]
fn every_example_in_the_document_validates() {
    let doc = document();
    let mut seen = 0;
    for (name, m) in doc["components"]["messages"].as_object().expect("messages") {
        let examples = m["examples"].as_array().filter(|e| !e.is_empty());
        for ex in examples.unwrap_or_else(|| panic!("message {name} has no example")) {
            let headers: Vec<(String, Vec<u8>)> = ex["headers"].as_object().expect("headers").iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().as_bytes().to_vec())).collect();
            let mut map = HeaderMap::new();
            for (k, v) in headers {
                map.insert(k, v);
            }
            let payload = serde_json::to_vec(&ex["payload"]).expect("json");
            check_record(&doc, name, &map, Some(&payload)).unwrap();
            seen += 1;
        }
    }
    assert!(seen >= 20, "only {seen} examples");
}

fn result_event(state: State, command_type: &str, result: Option<Value>) -> ResultEvent {
    let data = ResultData {
        command_id: courier::envelope::new_id(),
        command_type: command_type.into(),
        state,
        key: Some("k".into()),
        key_base64: None,
        result,
        error: matches!(state, State::Failed | State::Cancelled | State::TimedOut)
            .then(|| ErrorInfo { code: "nope".into(), message: "no".into(), retryable: false }),
        progress: (state == State::Progress).then_some(Progress { percent: 12.5, message: None }),
        timing: Timing::default(),
        worker: "w".into(),
    };
    let mut event = ResultEvent::new(b"k".to_vec(), "//w", data);
    event.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    event.correlation_id = Some(b"spring-1".to_vec());
    event
}

fn snapshot(command_id: uuid::Uuid) -> OperationSnapshot {
    let now = chrono::Utc::now();
    OperationSnapshot {
        command_id, command_type: "primes".into(), state: State::Queued, key: None, key_base64: None, attempt: 1, progress: None,
        result: None, error: None, timing: Timing::default(), created: now, updated: now, callback_url: None,
        idempotency_key: Some("idem-1".into()), request_hash: None, batch_id: None, tenant: None, worker: None, deferred: None,
    }
}

#[test]
fn every_kind_of_record_validates_and_bad_ones_do_not() {
    let doc = document();
    let mut cmd = NewCommand::new("primes", json!({"n": 10}))
        .key("k")
        .deadline_in(Duration::from_secs(60))
        .callback_url("https://example.com/hook")
        .idempotency_key("idem-1")
        .into_command("//t");
    cmd.correlation_id = Some(b"spring-1".to_vec());
    let (_key, value, headers) = cmd.encode();
    check_record(&doc, "command.primes", &headers, Some(&value)).unwrap();
    for (ty, payload) in [("echo", json!([1])), ("sleep", json!({"ms": 5})), ("fail", json!({"code": "c", "message": "m"}))] {
        let (_, v, hs) = NewCommand::new(ty, payload).into_command("//t").encode();
        check_record(&doc, &format!("command.{ty}"), &hs, Some(&v)).unwrap();
    }
    for state in [State::Started, State::Progress, State::Completed, State::Failed, State::Cancelled, State::TimedOut] {
        let (_, v, hs) = result_event(state, "primes", None).encode();
        check_record(&doc, &format!("result.{}", state.as_str()), &hs, Some(&v)).unwrap();
    }
    let (_, v, hs) = result_event(State::Completed, "primes", Some(json!({"n": 10, "primes": 4}))).encode();
    check_record(&doc, "result.completed.primes", &hs, Some(&v)).unwrap();
    let (_, v, hs) = CancelRequest::new(cmd.id, None).encode("//t");
    check_record(&doc, "control.cancel", &hs, Some(&v)).unwrap();
    let (_, v, hs) = snapshot(cmd.id).encode("//gateway");
    check_record(&doc, "status.snapshot", &hs, Some(&v)).unwrap();
    // Retry records and whole dead letters are made only by a worker: they are
    // checked as real records in `real_records_from_the_broker_validate`.
    let letter = DeadLetter::new("courier.commands", 0, 7, Reason::NotJson, "expected value", 1);
    let mut dead = HeaderMap::new();
    letter.write_headers(&mut dead);
    check_record(&doc, "dlq.record", &dead, Some(b"{oops")).unwrap();

    // Negative checks, so the test cannot pass vacuously.
    let bad = |name: &str, headers: &HeaderMap, value: &[u8], why: &str| {
        assert!(check_record(&doc, name, headers, Some(value)).is_err(), "{name} accepted: {why}");
    };
    bad("command.primes", &headers, br#"{"n": "ten"}"#, "wrong payload type");
    bad("command.echo", &headers, b"{}", "ce_type must match the message");
    let without = |name: &str, hs: &HeaderMap| {
        let mut out = HeaderMap::new();
        hs.iter().filter(|(k, _)| *k != name.as_bytes()).for_each(|(k, v)| { out.insert(k, v); });
        out
    };
    bad("command.primes", &without("ce_source", &headers), br#"{"n": 1}"#, "missing ce_source");
    let mut odd = headers.clone();
    odd.insert("x-undocumented", "1");
    bad("command.primes", &odd, br#"{"n": 1}"#, "a header the document does not name");
    let mut late = headers.clone();
    late.set("ce_deadline", "next tuesday");
    bad("command.primes", &late, br#"{"n": 1}"#, "ce_deadline is not a date-time");
    let (_, v, hs) = result_event(State::Completed, "primes", Some(json!({"n": 10}))).encode();
    bad("result.completed.primes", &hs, &v, "result lacks `primes`");
    bad("result.failed", &hs, &v, "ce_type must match the message");
    let mut major = hs.clone();
    major.set("ce_courierversion", "2.0");
    bad("result.completed", &major, &v, "another major envelope version");
    let mut wrong: Value = serde_json::from_slice(&v).unwrap();
    wrong["timing"] = json!("slow");
    bad("result.completed", &hs, &serde_json::to_vec(&wrong).unwrap(), "timing is an object");
    let (_, v, hs) = snapshot(cmd.id).encode("//gateway");
    let mut wrong: Value = serde_json::from_slice(&v).unwrap();
    wrong.as_object_mut().unwrap().remove("state");
    bad("status.snapshot", &hs, &serde_json::to_vec(&wrong).unwrap(), "snapshot without state");
    bad("dlq.record", &without("courier_dlq_reason", &dead), b"{oops", "dead letter without a reason");
}

/// Every record of `topic` up to the end offsets seen now:
/// (partition, offset, key, value, headers).
fn read_to_end(t: &common::TestTopics, topic: &str) -> Vec<common::RawRecord> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &t.kafka.bootstrap)
        .set("group.id", format!("contract-reader-{}", courier::envelope::new_id()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in 0..t.partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).expect("watermarks");
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Offset(low)).expect("tpl");
        }
    }
    if ends.is_empty() {
        return Vec::new();
    }
    consumer.assign(&tpl).expect("assign");
    let until = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while !ends.is_empty() {
        assert!(Instant::now() < until, "could not read {topic} to its end");
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                if ends.get(&m.partition()).is_some_and(|end| m.offset() + 1 >= *end) {
                    ends.remove(&m.partition());
                }
                let (key, value) = (m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec));
                out.push((m.partition(), m.offset(), key, value, HeaderMap::from_kafka(m.headers())));
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

fn header(headers: &HeaderMap, name: &'static str) -> String {
    headers.get_str(name).ok().flatten().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn real_records_from_the_broker_validate() {
    let doc = document();
    let t = common::fresh_topics_with("contract", 2, vec![Duration::from_millis(200)]).await;
    let _w = common::WorkerProc::spawn(&t, "contract-1", &["--retry-tiers", "200ms", "--max-attempts", "2"]);
    let client = Client::new(t.kafka.clone()).unwrap();
    let wait = Duration::from_secs(60);
    let commands = [
        NewCommand::new("echo", json!({"a": [1, 2]})).key("K"),
        NewCommand::new("sleep", json!({"ms": 60, "steps": 3})).idempotency_key("idem-1"),
        NewCommand::new("primes", json!({"n": 100})),
        NewCommand::new("fail", json!({"code": "nope", "message": "no"})),
        NewCommand::new("fail", json!({"code": "busy", "message": "later", "retryable": true})),
        NewCommand::new("no.such.type", json!({})),
        NewCommand::new("sleep", json!({"ms": 10})).deadline(chrono::Utc::now() - chrono::Duration::seconds(5)),
    ];
    for cmd in commands {
        client.submit_and_wait(cmd, wait).await.unwrap();
    }
    // A command whose value is not JSON (a foreign producer's broken serializer), with
    // no key: its dead letter keeps the bytes as they came.
    let (_, _, oops_headers) = NewCommand::new("echo", json!({})).into_command("//t").encode();
    common::produce_raw(&t, &t.topics.commands, None, Some(b"{oops"), &oops_headers, None).await;
    let not_json = courier::client::DeadLetterFilter { reason: Some("not_json".into()), ..Default::default() };
    let until = Instant::now() + wait;
    while client.dead_letters(&not_json).await.unwrap().is_empty() {
        assert!(Instant::now() < until, "the not-JSON record was never dead-lettered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let id = client.submit(NewCommand::new("sleep", json!({"ms": 30_000, "steps": 1}))).await.unwrap();
    client.cancel(id, Some("contract test".into())).await.unwrap();
    assert_eq!(client.wait_for(id, StartAt::Beginning, wait).await.unwrap().state(), State::Cancelled);

    let messages = doc["components"]["messages"].as_object().expect("messages");
    let mut counted = BTreeMap::<String, usize>::new();
    let mut count = |name: String| *counted.entry(name).or_default() += 1;
    let retry_topic = courier::topics::retry_tier_topic(&t.topics, Duration::from_millis(200));
    for (topic, via) in [(&t.topics.commands, "commands"), (&retry_topic, "retry")] {
        for (_, _, _, value, headers) in read_to_end(&t, topic) {
            let name = format!("command.{}", header(&headers, "ce_type"));
            if value.as_deref() == Some(&b"{oops"[..]) {
                continue;
            }
            if !messages.contains_key(&name) {
                assert_eq!(name, "command.no.such.type", "only the unknown type is outside the contract");
                continue;
            }
            check_record(&doc, &name, &headers, value.as_deref()).unwrap_or_else(|e| panic!("{via}: {e}"));
            count(format!("{via}:{name}"));
        }
    }
    for (_, _, _, value, headers) in read_to_end(&t, &t.topics.results) {
        let state = header(&headers, "ce_type").trim_start_matches("courier.command.").to_string();
        check_record(&doc, &format!("result.{state}"), &headers, value.as_deref()).unwrap();
        count(format!("result.{state}"));
        let data: Value = serde_json::from_slice(value.as_deref().unwrap_or_default()).unwrap();
        let typed = format!("result.completed.{}", data["command_type"].as_str().unwrap_or_default());
        if state == "completed" && messages.contains_key(&typed) {
            check_record(&doc, &typed, &headers, value.as_deref()).unwrap();
            count(typed);
        }
    }
    // Webhook records: one delivery acknowledged, one answered 410 (the URL is disabled).
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = receiver.local_addr().unwrap().port();
    let app = axum::Router::new()
        .route("/ok", axum::routing::post(|| async { "ok" }))
        .route("/gone", axum::routing::post(|| async { axum::http::StatusCode::GONE }));
    tokio::spawn(async move { axum::serve(receiver, app).await });
    let secret: courier::webhooks::Secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().unwrap();
    let mut hooks = courier::webhooks::WebhookConfig::new(t.kafka.clone(), vec![secret]);
    hooks.group_id = format!("{}-webhooks", t.kafka.prefix);
    hooks.listen = "127.0.0.1:0".parse().unwrap();
    hooks.url_policy = courier::UrlPolicy::allowing_loopback();
    let stop = tokio_util::sync::CancellationToken::new();
    let dispatcher = courier::webhooks::Dispatcher::start(hooks, stop.clone()).await.expect("dispatcher");
    let mut hooked = Vec::new();
    for path in ["ok", "gone"] {
        let cmd = NewCommand::new("echo", json!({"hook": path})).callback_url(format!("http://127.0.0.1:{port}/{path}"));
        hooked.push(client.submit_and_wait(cmd, wait).await.unwrap().command_id());
    }
    let until = Instant::now() + Duration::from_secs(30);
    while hooked.iter().any(|id| dispatcher.delivery_log().attempts(id).is_empty()) {
        assert!(Instant::now() < until, "no webhook attempts logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    for (_, _, _, value, headers) in read_to_end(&t, &t.topics.webhooks_log) {
        let name = match header(&headers, "ce_type").as_str() {
            courier::webhooks::ATTEMPT_TYPE => "webhooks.attempt",
            other => panic!("unexpected record type {other} on the webhook log"),
        };
        check_record(&doc, name, &headers, value.as_deref()).unwrap();
        count(name.to_string());
    }

    let rest = [
        (&t.topics.status, "status.snapshot"),
        (&t.topics.control, "control.cancel"),
        (&t.topics.dlq, "dlq.record"),
        (&t.topics.webhooks_endpoints, "webhooks.endpoint"),
    ];
    for (topic, name) in rest {
        for (_, _, _, value, headers) in read_to_end(&t, topic) {
            check_record(&doc, name, &headers, value.as_deref()).unwrap();
            let reason = header(&headers, "courier_dlq_reason");
            count(if reason.is_empty() { name.to_string() } else { format!("{name}:{reason}") });
        }
    }
    eprintln!("validated real records: {counted:?}");
    let expected = [
        "commands:command.echo", "commands:command.sleep", "commands:command.primes", "commands:command.fail",
        "retry:command.fail", "result.started", "result.progress", "result.completed", "result.failed",
        "result.cancelled", "result.timed_out", "result.completed.echo", "result.completed.sleep",
        "result.completed.primes", "status.snapshot", "control.cancel", "dlq.record:unknown_type", "dlq.record:not_json",
        "dlq.record:retries_exhausted", "webhooks.attempt", "webhooks.endpoint",
    ];
    for kind in expected {
        assert!(counted.get(kind).copied().unwrap_or(0) > 0, "no {kind} record was seen: {counted:?}");
    }
}
