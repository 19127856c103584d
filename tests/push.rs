//! HTTP push handlers on a real broker: `courier worker --config` pushing commands to
//! a real Python service (examples/python-handler), whose answers decide outcomes:
//! success, permanent failure, a retryable 503 with Retry-After, a per-attempt
//! timeout, a hanging request cut off by a cancel and by a deadline, per-key order
//! and the per-type concurrency limit over 1,000 commands, the gateway checking
//! declared schemas, Rust and HTTP handlers side by side, and a bad file refused at
//! start.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command as Proc;
use std::time::{Duration, Instant};

use courier::declared::Declared;
use courier::{Client, NewCommand, ResultEvent, State};
use serde_json::{json, Value};
use uuid::Uuid;


fn example_config() -> PathBuf {
    common::repo().join("examples/python-handler/courier.yaml")
}

/// Writes a config file for this test into a fresh folder.
fn write_config(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("courier-push-{name}-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("courier.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn worker(t: &common::TestTopics, id: &str, config: &Path, env: &[(&str, &str)]) -> common::WorkerProc {
    let config = config.to_str().unwrap();
    let w = common::WorkerProc::spawn_with_env(t, id, &common::worker_group(t), &["--config", config, "--max-in-flight", "256"], env);
    assert!(w.wait_for_log("partitions assigned", Duration::from_secs(60)), "{}", w.log_text());
    w
}

/// The final event of each id, waiting for all of them.
fn finals(t: &common::TestTopics, ids: &[Uuid], timeout: Duration) -> HashMap<Uuid, ResultEvent> {
    let seen = common::collect_results(t, timeout, |s| {
        let f = common::finals_by_command(s);
        ids.iter().all(|id| f.contains_key(id))
    });
    let by = common::finals_by_command(&seen);
    for id in ids {
        assert_eq!(by[id].len(), 1, "{id}: one final event");
    }
    ids.iter().map(|id| (*id, by[id][0].event.clone())).collect()
}

fn error_code(e: &ResultEvent) -> &str {
    e.data.error.as_ref().map(|e| e.code.as_str()).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_handlers_complete_fail_and_retry_as_their_answers_say() {
    let handler = common::HandlerProc::python();
    let tiers = [1, 5, 10, 60].map(Duration::from_secs).to_vec();
    let t = common::fresh_topics_with("push-example", 2, tiers).await;
    let port = handler.port.to_string();
    let w = worker(&t, "push-example-1", &example_config(), &[("HANDLER_PORT", &port), ("HANDLER_API_KEY", "test-key"), ("COURIER_CALLBACK_KEY", "a-callback-key-for-the-example")]);
    let client = Client::new(t.kafka.clone()).unwrap();
    let greet = client.submit(NewCommand::new("greet", json!({"name": "Ada"})).key("user-1")).await.unwrap();
    let declined = client.submit(NewCommand::new("charge", json!({"amount_cents": 20000}))).await.unwrap();
    let charged = client.submit(NewCommand::new("charge", json!({"amount_cents": 500}))).await.unwrap();
    let flaky = client.submit(NewCommand::new("flaky", json!({"succeed_on": 2, "retry_after": 3}))).await.unwrap();
    let invalid = client.submit(NewCommand::new("greet", json!({"name": 7}))).await.unwrap();
    let nap = client.submit(NewCommand::new("nap", json!({"ms": 50}))).await.unwrap();
    let ids = [greet, declined, charged, flaky, invalid, nap];
    let f = finals(&t, &ids, Duration::from_secs(90));

    assert_eq!((f[&greet].state(), &f[&greet].data.result), (State::Completed, &Some(json!({"greeting": "hello, Ada"}))));
    assert_eq!((f[&declined].state(), error_code(&f[&declined])), (State::Failed, "card_declined"), "a 422 with a code is a permanent failure");
    assert_eq!(f[&declined].data.error.as_ref().unwrap().message, "over the card's limit");
    assert_eq!(handler.calls_for(declined).await.len(), 1, "a permanent failure is not retried");
    assert_eq!(f[&charged].data.result, Some(json!({"charged_cents": 500})));
    assert_eq!((f[&flaky].state(), &f[&flaky].data.result), (State::Completed, &Some(json!({"attempt": 2}))), "{:?}", f[&flaky]);
    let attempts = handler.calls_for(flaky).await;
    assert_eq!(attempts.iter().map(|c| c["attempt"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2]);
    let gap = attempts[1]["at"].as_f64().unwrap() - attempts[0]["at"].as_f64().unwrap();
    assert!(gap >= 2.9, "Retry-After: 3 is the least wait, longer than the 1s tier (waited {gap:.2}s)");
    assert_eq!((f[&invalid].state(), error_code(&f[&invalid])), (State::Failed, "schema_violation"), "{:?}", f[&invalid]);
    assert!(handler.calls_for(invalid).await.is_empty(), "a payload the input schema refuses is never pushed");
    assert_eq!(f[&nap].data.result, Some(json!({"slept_ms": 50})));

    // The request as the handler got it: a CloudEvent in binary mode, plus Courier's headers.
    let call = &handler.calls_for(greet).await[0];
    assert_eq!((call["type"].as_str(), call["specversion"].as_str(), call["key"].as_str()), (Some("greet"), Some("1.0"), Some("user-1")));
    assert_eq!((call["attempt"].as_u64(), call["api_key"].as_str()), (Some(1), Some("test-key")));
    assert!(call["source"].as_str().is_some_and(|s| !s.is_empty()) && call["time"].as_str().is_some(), "{call}");
    assert!(call["deadline"].is_null(), "greet declares no deadline");
    let nap_call = &handler.calls_for(nap).await[0];
    let deadline = chrono::DateTime::parse_from_rfc3339(nap_call["deadline"].as_str().expect("nap's default deadline is sent")).unwrap();
    let left = deadline.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(left > chrono::Duration::seconds(30) && left <= chrono::Duration::seconds(60), "nap declares deadline: 1m ({left})");
    assert!(!w.log_text().contains("test-key"), "a header value from the config is never logged");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_request_is_cut_off_by_a_cancel_and_a_deadline_and_a_slow_one_times_out() {
    let handler = common::HandlerProc::python();
    let t = common::fresh_topics("push-cut", 2).await;
    let url = format!("http://127.0.0.1:{}/sleep", handler.port);
    let config = write_config(
        "cut",
        &format!(
            "commands:\n  hang:\n    http: {{ url: '{url}', timeout: 2m }}\n  late:\n    http: {{ url: '{url}', timeout: 2m }}\n    deadline: 2s\n  short:\n    http: {{ url: '{url}', timeout: 300ms }}\n    retry: {{ tiers: [1s], max_attempts: 2 }}\n"
        ),
    );
    let _w = worker(&t, "push-cut-1", &config, &[]);
    let client = Client::new(t.kafka.clone()).unwrap();
    let hang = client.submit(NewCommand::new("hang", json!({"ms": 120_000})).key("a")).await.unwrap();
    let late = client.submit(NewCommand::new("late", json!({"ms": 120_000})).key("b")).await.unwrap();
    let short = client.submit(NewCommand::new("short", json!({"ms": 5_000})).key("c")).await.unwrap();
    let hang_text = hang.to_string();
    handler.wait_until("the hanging request", |s| s["calls"].as_array().unwrap().iter().any(|c| c["id"] == hang_text.as_str())).await;
    let cancelled_at = Instant::now();
    client.cancel(hang, Some("test".into())).await.unwrap();
    let f = finals(&t, &[hang, late, short], Duration::from_secs(60));
    assert_eq!(f[&hang].state(), State::Cancelled, "{:?}", f[&hang]);
    assert!(cancelled_at.elapsed() < Duration::from_secs(30), "the cancel ended the request, not its 2m timeout");
    assert_eq!(f[&late].state(), State::TimedOut, "{:?}", f[&late]);
    assert_eq!((f[&short].state(), error_code(&f[&short])), (State::Failed, "timeout"), "{:?}", f[&short]);
    assert_eq!(handler.calls_for(short).await.len(), 2, "a timed-out attempt is retried, up to max_attempts");
    let late_text = late.to_string();
    let seen = handler
        .wait_until("both hang-ups", |s| {
            let hung: Vec<&str> = s["hung_up"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
            hung.contains(&hang_text.as_str()) && hung.contains(&late_text.as_str())
        })
        .await;
    assert_eq!(seen["calls"].as_array().unwrap().iter().filter(|c| c["id"] == hang_text.as_str()).count(), 1, "a cancelled command is not pushed again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_commands_over_a_hundred_keys_reach_the_handler_in_key_order_within_its_limit() {
    let handler = common::HandlerProc::python();
    let t = common::fresh_topics("push-order", 4).await;
    let url = format!("http://127.0.0.1:{}/echo", handler.port);
    let config = write_config("order", &format!("commands:\n  ordered:\n    http: {{ url: '{url}', concurrency: 8 }}\n"));
    let _w = worker(&t, "push-order-1", &config, &[]);
    let client = Client::new(t.kafka.clone()).unwrap();
    let commands: Vec<NewCommand> = (0..1000).map(|i| NewCommand::new("ordered", json!({"seq": i, "key": i % 100})).key(format!("k{}", i % 100))).collect();
    let ids = client.submit_batch(commands).await.unwrap();
    let f = finals(&t, &ids, Duration::from_secs(120));
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(f[id].data.result.as_ref().unwrap()["seq"], i, "{id}");
    }
    let seen = handler.seen().await;
    let calls = seen["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1000, "each command pushed once");
    let mut last: HashMap<String, i64> = HashMap::new();
    for call in calls {
        let (key, seq) = (call["key"].as_str().unwrap().to_string(), call["payload"]["seq"].as_i64().unwrap());
        let before = last.insert(key.clone(), seq).unwrap_or(-1);
        assert!(seq > before, "key {key}: {seq} arrived after {before}");
    }
    let most = seen["most_in_flight"]["/echo"].as_u64().unwrap();
    assert!((2..=8).contains(&most), "the type's concurrency: 8 holds (and keys ran concurrently): {most}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_checks_declared_schemas_and_rust_and_http_handlers_run_side_by_side() {
    let handler = common::HandlerProc::python();
    let tiers = [1, 5, 10, 60].map(Duration::from_secs).to_vec();
    let t = common::fresh_topics_with("push-side", 2, tiers).await;
    let port = handler.port.to_string();
    let env = |name: &str| match name {
        "HANDLER_PORT" => Some(port.clone()),
        "HANDLER_API_KEY" => Some("side-key".to_string()),
        "COURIER_CALLBACK_KEY" => Some("a-callback-key-for-the-example".to_string()),
        _ => None,
    };
    let text = std::fs::read_to_string(example_config()).unwrap();
    let declared = Declared::parse(&example_config(), &text, &env).expect("the example config loads");
    let router = declared.router(courier::demo::example_router()).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut config = courier::WorkerConfig::new(t.kafka.bootstrap.clone());
    config.kafka = t.kafka.clone();
    config.group_id = common::worker_group(&t);
    let worker = courier::Worker::new(config, router.clone()).unwrap();
    let ready = worker.ready();
    let mut run = tokio::spawn(worker.run(stop.clone()));
    let gateway = courier::gateway::Gateway::start(&courier::gateway::GatewayConfig::new(t.kafka.clone()), &router, stop.clone()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(gateway.serve(listener));
    tokio::select! {
        joined = tokio::time::timeout(Duration::from_secs(60), ready.wait()) => joined.expect("worker joins"),
        ended = &mut run => panic!("the worker ended before joining: {ended:?}"),
    }

    let http = reqwest::Client::new();
    let refused = http.post(format!("{base}/v1/commands")).json(&json!({"type": "greet", "payload": {"name": ""}})).send().await.unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_payload", "{body}");
    let mut names = Vec::new();
    for request in [json!({"type": "greet", "payload": {"name": "Grace"}}), json!({"type": "echo", "payload": {"n": 1}})] {
        let accepted = http.post(format!("{base}/v1/commands")).json(&request).send().await.unwrap();
        assert!(accepted.status().is_success(), "{}", accepted.text().await.unwrap());
        let op: Value = accepted.json().await.unwrap();
        names.push(op["name"].as_str().unwrap().to_string());
    }
    let mut results = Vec::new();
    for name in &names {
        let until = Instant::now() + Duration::from_secs(60);
        let op = loop {
            let op: Value = http.get(format!("{base}/v1/{name}?wait=10s")).send().await.unwrap().json().await.unwrap();
            if op["done"] == true {
                break op;
            }
            assert!(Instant::now() < until, "{name} not done: {op}");
        };
        results.push(op["response"].clone());
    }
    assert_eq!(results[0], json!({"greeting": "hello, Grace"}));
    assert_eq!(results[1], json!({"echo": {"n": 1}}), "the Rust echo handler beside it");
    stop.cancel();
    let _ = run.await;
}

#[test]
fn a_bad_config_file_stops_the_worker_at_start_saying_where_and_why() {
    let path = write_config("bad", "commands:\n  resize:\n    http: { url: 'ftp://h/x', headers: { x-api-key: '${PUSH_TEST_SECRET}' } }\n");
    let out = Proc::new(env!("CARGO_BIN_EXE_courier")).env("COURIER_INSECURE_NO_AUTH", "true")
        .args(["worker", "--bootstrap", "127.0.0.1:1", "--config", path.to_str().unwrap()])
        .env("PUSH_TEST_SECRET", "hunter2-secret")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("commands.resize.http.url") && stderr.contains("http or https"), "{stderr}");
    let unset = write_config("unset", "commands:\n  resize:\n    http: { url: 'http://h/x', headers: { x-api-key: '${PUSH_TEST_UNSET}' } }\n");
    let out = Proc::new(env!("CARGO_BIN_EXE_courier")).env("COURIER_INSECURE_NO_AUTH", "true").args(["gateway", "--bootstrap", "127.0.0.1:1", "--config", unset.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("PUSH_TEST_UNSET is not set"), "{stderr}");
}

#[test]
fn the_contract_of_a_config_file_carries_its_declared_schemas() {
    let out = Proc::new(env!("CARGO_BIN_EXE_courier")).env("COURIER_INSECURE_NO_AUTH", "true")
        .args(["asyncapi", "--config", example_config().to_str().unwrap()])
        .env("HANDLER_PORT", "9000")
        .env("HANDLER_API_KEY", "contract-key")
        .env("COURIER_CALLBACK_KEY", "a-callback-key-for-the-contract")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let yaml = String::from_utf8_lossy(&out.stdout);
    for needle in ["greet", "charge", "flaky", "nap", "amount_cents", "greeting", "Says hello"] {
        assert!(yaml.contains(needle), "{needle} missing from the contract");
    }
    assert!(!yaml.contains("contract-key"));
}
