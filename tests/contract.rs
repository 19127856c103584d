//! The contract can never drift from the code: the checked-in AsyncAPI document equals
//! a fresh one, and every kind of record Courier produces (samples, and real records
//! read back from the broker) validates against the document's schemas.

mod common;

use std::time::Duration;

use courier::contract::{asyncapi_document, headers_json, to_yaml, ContractInfo};
use courier::envelope::{CancelRequest, HeaderMap, NewCommand, OperationSnapshot, ResultData, ResultEvent, State, Timing};
use courier::{Client, Router};
use serde_json::{json, Value};

fn document() -> Value {
    asyncapi_document(&courier::demo::example_router(), &ContractInfo::default())
}

/// Validates `instance` against `schema`, resolving references into the document.
fn check(doc: &Value, schema: &Value, instance: &Value) -> Result<(), String> {
    let root = json!({ "allOf": [schema], "components": { "schemas": doc["components"]["schemas"].clone() } });
    let validator = jsonschema::validator_for(&root).map_err(|e| format!("bad schema: {e}"))?;
    let errors: Vec<String> = validator.iter_errors(instance).map(|e| format!("{e} at {}", e.instance_path())).collect();
    if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
}

fn message<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let m = &doc["components"]["messages"][name];
    assert!(m.is_object(), "no message {name} in the document");
    m
}

/// Checks a record's headers and (JSON) value against a message of the document.
fn check_record(doc: &Value, name: &str, headers: &HeaderMap, value: Option<&[u8]>) -> Result<(), String> {
    let m = message(doc, name);
    check(doc, &m["headers"], &headers_json(headers)).map_err(|e| format!("{name} headers: {e}"))?;
    if let Some(v) = value.filter(|_| name != "dlq.record") {
        let payload: Value = serde_json::from_slice(v).map_err(|e| format!("{name}: value is not JSON: {e}"))?;
        check(doc, &m["payload"], &payload).map_err(|e| format!("{name} payload: {e}"))?;
    }
    Ok(())
}

#[test]
fn checked_in_document_is_current() {
    let fresh = to_yaml(&document());
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
    assert_eq!(doc["operations"]["sendCommand"]["reply"]["channel"]["$ref"], "#/channels/results");
    assert_eq!(doc["channels"]["status"]["bindings"]["kafka"]["topicConfiguration"]["cleanup.policy"][0], "compact");
}

fn sample_result(state: State) -> ResultEvent {
    let data = ResultData {
        command_id: courier::envelope::new_id(),
        command_type: "echo".into(),
        state,
        key: None,
        result: (state == State::Completed).then(|| json!({"echo": 1})),
        error: None,
        progress: None,
        timing: Timing::default(),
        worker: "w".into(),
    };
    ResultEvent::new("k".into(), "//w", data)
}

#[test]
fn every_kind_of_record_validates_and_bad_ones_do_not() {
    let doc = document();
    let (_, value, headers) = NewCommand::new("primes", json!({"n": 10})).key("k").into_command("//t").encode();
    check_record(&doc, "command.primes", &headers, Some(&value)).unwrap();
    for state in [State::Started, State::Progress, State::Completed, State::Failed, State::Cancelled, State::TimedOut] {
        let (_, value, headers) = sample_result(state).encode();
        check_record(&doc, &format!("result.{}", state.as_str()), &headers, Some(&value)).unwrap();
    }
    let (_, value, headers) = CancelRequest::new(courier::envelope::new_id(), None).encode("//t");
    check_record(&doc, "control.cancel", &headers, Some(&value)).unwrap();
    let letter = courier::dlq::DeadLetter::new("courier.commands", 0, 7, "not_json", "oops", 1);
    let out = letter.to_record("courier.commands.dlq", None, Some(b"{oops"), &HeaderMap::new());
    check_record(&doc, "dlq.record", &out.headers, None).unwrap();

    // Negative checks, so the test cannot pass vacuously.
    let (_, _, headers) = NewCommand::new("primes", json!({"n": 10})).into_command("//t").encode();
    assert!(check_record(&doc, "command.primes", &headers, Some(br#"{"n": "ten"}"#)).is_err(), "wrong payload type");
    let mut bad = HeaderMap::new();
    for (k, v) in headers.iter().filter(|(k, _)| *k != "ce_source") {
        bad.insert(k, v.to_vec());
    }
    assert!(check_record(&doc, "command.primes", &bad, Some(br#"{"n": 1}"#)).is_err(), "missing ce_source");
    let (_, value, headers) = sample_result(State::Completed).encode();
    assert!(check_record(&doc, "result.failed", &headers, Some(&value)).is_err(), "type must match the message");
    let mut v: Value = serde_json::from_slice(&value).unwrap();
    v["timing"] = json!("slow");
    assert!(check_record(&doc, "result.completed", &headers, Some(&serde_json::to_vec(&v).unwrap())).is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn real_records_from_the_broker_validate() {
    let doc = document();
    let t = common::fresh_topics("contract", 2).await;
    let _w = common::WorkerProc::spawn(&t, "contract-1", &[]);
    let client = Client::new(t.kafka.clone()).unwrap();
    let wait = Duration::from_secs(60);
    let commands = [
        NewCommand::new("echo", json!({"a": [1, 2]})),
        NewCommand::new("sleep", json!({"ms": 60, "steps": 3})),
        NewCommand::new("primes", json!({"n": 100})),
        NewCommand::new("fail", json!({"code": "nope", "message": "no"})),
        NewCommand::new("no.such.type", json!({})),
        NewCommand::new("sleep", json!({"ms": 10})).deadline(chrono::Utc::now() - chrono::Duration::seconds(5)),
    ];
    for cmd in commands {
        client.submit_and_wait(cmd, wait).await.unwrap();
    }
    let mut counted = std::collections::BTreeMap::<String, usize>::new();
    let results = common::read_all_results(&t);
    for s in &results {
        let (_, value, headers) = s.event.encode();
        let name = format!("result.{}", s.event.state().as_str());
        check_record(&doc, &name, &headers, Some(&value)).unwrap();
        *counted.entry(name).or_default() += 1;
    }
    for (_, _, _, value, headers) in common::TopicReader::new(&t, &t.topics.status).poll_raw(Duration::from_secs(3)) {
        assert!(OperationSnapshot::decode(value.as_deref()).unwrap().is_some());
        check_record(&doc, "status.snapshot", &headers, value.as_deref()).unwrap();
        *counted.entry("status.snapshot".into()).or_default() += 1;
    }
    for (_, _, _, _, headers) in common::TopicReader::new(&t, &t.topics.dlq).poll_raw(Duration::from_secs(3)) {
        check_record(&doc, "dlq.record", &headers, None).unwrap();
        *counted.entry("dlq.record".into()).or_default() += 1;
    }
    println!("validated real records: {counted:?}");
    for kind in ["result.started", "result.progress", "result.completed", "result.failed", "result.timed_out", "status.snapshot", "dlq.record"] {
        assert!(counted.get(kind).copied().unwrap_or(0) > 0, "no {kind} record was seen");
    }
}
