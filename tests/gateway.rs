//! The HTTP gateway against a real broker and a real worker process: 1,000 operations
//! across a gateway crash, every kind of bad request, idempotency, long polls,
//! cancel, listing, batches, the RunPod routes, and `Client::wait` after a restart.

mod common;

use common::GatewayProc;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use courier::gateway::{Gateway, GatewayConfig};
use courier::{Client, NewCommand, State};
use futures::StreamExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// An in-process gateway on a free port; stops when the token fires.
async fn in_process(t: &common::TestTopics, max_body_bytes: usize) -> (String, CancellationToken) {
    let mut config = GatewayConfig::new(t.kafka.clone());
    config.max_body_bytes = max_body_bytes;
    let stop = CancellationToken::new();
    let gateway = Gateway::start(&config, &courier::demo::example_router(), stop.clone()).await.expect("gateway starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(gateway.serve(listener));
    (base, stop)
}

/// (status, `Idempotent-Replayed` header present, body).
async fn send(req: reqwest::RequestBuilder) -> (StatusCode, bool, Value) {
    let resp = req.send().await.expect("http request");
    let status = resp.status();
    let replayed = resp.headers().contains_key("idempotent-replayed");
    let text = resp.text().await.unwrap();
    (status, replayed, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn post(http: &reqwest::Client, url: String, body: &Value, key: Option<&str>) -> (StatusCode, bool, Value) {
    let mut req = http.post(url).json(body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    send(req).await
}

async fn get(http: &reqwest::Client, url: String) -> (StatusCode, Value) {
    let (status, _, body) = send(http.get(url)).await;
    (status, body)
}

/// The operation once done, long-polling `?wait=30s` (more than once if need be).
async fn wait_done(http: &reqwest::Client, base: &str, name: &str) -> Value {
    for _ in 0..4 {
        let (status, op) = get(http, format!("{base}/v1/{name}?wait=30s")).await;
        assert_eq!(status, StatusCode::OK, "{op}");
        if op["done"] == true {
            return op;
        }
    }
    panic!("{name} not done after two minutes");
}

fn record_count(t: &common::TestTopics, topic: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &t.kafka.bootstrap).create().unwrap();
    (0..t.partitions).map(|p| consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap().1).sum()
}

fn start_worker(t: &common::TestTopics, id: &str) -> common::WorkerProc {
    let w = common::WorkerProc::spawn(t, id, &["--max-in-flight", "256"]);
    assert!(w.wait_for_log("partitions assigned", Duration::from_secs(60)), "{}", w.log_text());
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_operations_survive_a_gateway_crash() {
    let t = common::fresh_topics("gw-scale", 4).await;
    let _w = start_worker(&t, "gw-scale-1");
    let http = reqwest::Client::new();
    let mut first = GatewayProc::spawn(&t, "gw-1", common::free_port(), &[]);
    first.ready(&http).await;

    let submit = |base: String, range: std::ops::Range<usize>| {
        let http = http.clone();
        futures::stream::iter(range)
            .map(move |i| {
                let (http, base) = (http.clone(), base.clone());
                async move {
                    let key = (i % 10 == 0).then(|| format!("key-{i}"));
                    let body = json!({"type": "echo", "payload": {"i": i}});
                    let (status, _, op) = post(&http, format!("{base}/v1/commands"), &body, key.as_deref()).await;
                    assert_eq!(status, StatusCode::ACCEPTED, "{op}");
                    (i, op["name"].as_str().unwrap().to_string())
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
    };
    let mut names: HashMap<usize, String> = submit(first.base.clone(), 0..500).await.into_iter().collect();
    first.sigkill();

    let second = GatewayProc::spawn(&t, "gw-2", common::free_port(), &[]);
    second.ready(&http).await;
    let replay_body = json!({"type": "echo", "payload": {"i": 0}});
    let (status, replayed, op) = post(&http, format!("{}/v1/commands", second.base), &replay_body, Some("key-0")).await;
    assert_eq!((status, replayed), (StatusCode::ACCEPTED, true), "a key sent before the crash replays: {op}");
    assert_eq!(op["name"].as_str(), Some(names[&0].as_str()));
    let other = json!({"type": "echo", "payload": {"i": -1}});
    let (status, _, err) = post(&http, format!("{}/v1/commands", second.base), &other, Some("key-0")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    names.extend(submit(second.base.clone(), 500..1000).await);
    assert_eq!(names.values().collect::<HashSet<_>>().len(), 1000);

    let results = futures::stream::iter(names.clone())
        .map(|(i, name)| {
            let (http, base) = (http.clone(), second.base.clone());
            async move { (i, wait_done(&http, &base, &name).await) }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    let done = results.iter().filter(|(i, op)| op["response"] == json!({"echo": {"i": i}})).count();
    assert_eq!(done, 1000, "every operation completed with its own result");

    let mut listed = HashSet::new();
    let mut token = String::new();
    loop {
        let url = format!("{}/v1/operations?type=echo&state=completed&page_size=300&page_token={token}", second.base);
        let (status, page) = get(&http, url).await;
        assert_eq!(status, StatusCode::OK);
        listed.extend(page["operations"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap().to_string()));
        token = page["next_page_token"].as_str().unwrap().to_string();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(listed.len(), 1000);
    assert_eq!(record_count(&t, &t.topics.commands), 1000, "replays published nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_http_api_end_to_end() {
    let t = common::fresh_topics("gw-api", 2).await;
    let (base, stop) = in_process(&t, 4096).await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{base}{path}");

    // Bad requests, before any worker exists: each a 400 (or 404/413), nothing published.
    let before = (record_count(&t, &t.topics.commands), record_count(&t, &t.topics.status));
    let raw = |body: &'static str| http.post(url("/v1/commands")).header("content-type", "application/json").body(body);
    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (raw("{\"type\": \"echo\", "), StatusCode::BAD_REQUEST, "malformed_json"),
        (raw(r#"{"payload": {}}"#), StatusCode::BAD_REQUEST, "invalid_request"),
        (raw(r#"{"type": "echo", "extra": 1}"#), StatusCode::BAD_REQUEST, "invalid_request"),
        (raw(r#"{"type": "nope"}"#), StatusCode::BAD_REQUEST, "unknown_type"),
        (raw(r#"{"type": "sleep", "payload": {"ms": "soon"}}"#), StatusCode::BAD_REQUEST, "invalid_payload"),
        (raw(r#"{"type": "echo", "deadline": "tomorrow"}"#), StatusCode::BAD_REQUEST, "invalid_deadline"),
        (raw(r#"{"type": "echo", "deadline_in": "soon"}"#), StatusCode::BAD_REQUEST, "invalid_deadline"),
        (raw(r#"{"type": "echo", "callback_url": "http://169.254.169.254/latest"}"#), StatusCode::BAD_REQUEST, "invalid_callback_url"),
        (raw(r#"{"type": "echo", "callback_url": "http://127.0.0.1:9/hook"}"#), StatusCode::BAD_REQUEST, "invalid_callback_url"),
        (raw(r#"{"type": "echo"}"#).header("Idempotency-Key", "has space"), StatusCode::BAD_REQUEST, "invalid_idempotency_key"),
        (http.post(url("/v1/commands")).json(&json!({"type": "echo", "payload": "x".repeat(8000)})), StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
        (http.post(url("/v1/batches")).json(&json!({"commands": [{"type": "echo"}, {"type": "nope"}]})), StatusCode::BAD_REQUEST, "invalid_batch"),
        (http.post(url("/v1/batches")).json(&json!({"commands": []})), StatusCode::BAD_REQUEST, "empty_batch"),
        (http.post(url("/v2/sleep/run")).json(&json!({"input": {"ms": -5}})), StatusCode::BAD_REQUEST, "invalid_payload"),
        (http.post(url("/v2/nope/run")).json(&json!({"input": {}})), StatusCode::NOT_FOUND, "not_found"),
        (http.get(url("/v1/operations?state=sideways")), StatusCode::BAD_REQUEST, "invalid_state"),
        (http.get(url("/v1/operations?page_token=garbage")), StatusCode::BAD_REQUEST, "invalid_page_token"),
        (http.get(url(&format!("/v1/operations/{}", courier::envelope::new_id()))), StatusCode::NOT_FOUND, "not_found"),
        (http.get(url("/v1/operations/not-an-id")), StatusCode::NOT_FOUND, "not_found"),
    ];
    for (req, want_status, want_code) in cases {
        let (status, _, body) = send(req).await;
        assert_eq!((status, body["error"]["code"].as_str()), (want_status, Some(want_code)), "{body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let after = (record_count(&t, &t.topics.commands), record_count(&t, &t.topics.status));
    assert_eq!(before, after, "no bad request published anything");

    // RunPod purge-queue: jobs queued while no worker runs are cancelled when one starts.
    let mut purged = Vec::new();
    for _ in 0..3 {
        let (status, _, job) = post(&http, url("/v2/sleep/run"), &json!({"input": {"ms": 10}}), None).await;
        assert_eq!((status, job["status"].as_str()), (StatusCode::OK, Some("IN_QUEUE")), "{job}");
        purged.push(job["id"].as_str().unwrap().to_string());
    }
    let (status, _, purge) = send(http.post(url("/v2/sleep/purge-queue"))).await;
    assert_eq!((status, purge), (StatusCode::OK, json!({"removed": 3, "status": "completed"})));
    let _w = start_worker(&t, "gw-api-1");

    // Idempotency: same key and body replays the first answer; another body is a 422.
    let body = json!({"type": "echo", "payload": {"order": 42}});
    let (s1, r1, first) = post(&http, url("/v1/commands"), &body, Some("order-42")).await;
    let (s2, r2, again) = post(&http, url("/v1/commands"), &body, Some("order-42")).await;
    assert_eq!((s1, r1, s2, r2), (StatusCode::ACCEPTED, false, StatusCode::ACCEPTED, true));
    assert_eq!(first, again, "the replay is the first answer");
    let (s3, _, err) = post(&http, url("/v1/commands"), &json!({"type": "echo", "payload": {"order": 43}}), Some("order-42")).await;
    assert_eq!((s3, err["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_reused")));
    let echoed = wait_done(&http, &base, first["name"].as_str().unwrap()).await;
    assert_eq!(echoed["response"], json!({"echo": {"order": 42}}));
    assert_eq!(echoed["metadata"]["state"], "completed");

    // Long poll: a short wait returns the operation undone; a long one returns it done.
    let (_, _, slow) = post(&http, url("/v1/commands"), &json!({"type": "sleep", "payload": {"ms": 1500, "steps": 3}}), None).await;
    let name = slow["name"].as_str().unwrap().to_string();
    let started = Instant::now();
    let (_, early) = get(&http, url(&format!("/v1/{name}?wait=300ms"))).await;
    assert_eq!(early["done"], false);
    assert!(started.elapsed() >= Duration::from_millis(250) && started.elapsed() < Duration::from_millis(1400));
    let (_, late) = get(&http, url(&format!("/v1/{name}?wait=30s"))).await;
    assert_eq!((late["done"].clone(), late["response"].clone()), (json!(true), json!({"slept_ms": 1500})));
    assert!(started.elapsed() < Duration::from_secs(10));

    // Cancel a running operation: it ends with google.rpc.Code CANCELLED (1).
    let (_, _, long) = post(&http, url("/v1/commands"), &json!({"type": "sleep", "payload": {"ms": 30000, "steps": 30}}), None).await;
    let name = long["name"].as_str().unwrap().to_string();
    let until = Instant::now() + Duration::from_secs(20);
    while get(&http, url(&format!("/v1/{name}"))).await.1["metadata"]["state"] == "queued" {
        assert!(Instant::now() < until, "never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, op) = send(http.post(url(&format!("/v1/{name}:cancel")))).await;
    assert_eq!((status, op["name"].as_str()), (StatusCode::OK, Some(name.as_str())));
    let cancelled = wait_done(&http, &base, &name).await;
    assert_eq!(cancelled["error"]["code"], 1, "{cancelled}");
    assert_eq!(cancelled["error"]["details"][0]["reason"], "cancelled");

    // Failures and deadlines map to UNKNOWN (2) and DEADLINE_EXCEEDED (4).
    let (_, _, f) = post(&http, url("/v1/commands"), &json!({"type": "fail", "payload": {"code": "boom", "message": "no"}}), None).await;
    let failed = wait_done(&http, &base, f["name"].as_str().unwrap()).await;
    assert_eq!((failed["error"]["code"].clone(), failed["error"]["details"][0]["reason"].clone()), (json!(2), json!("boom")));
    let (_, _, d) = post(&http, url("/v1/commands"), &json!({"type": "echo", "deadline": "2000-01-01T00:00:00Z"}), None).await;
    assert_eq!(wait_done(&http, &base, d["name"].as_str().unwrap()).await["error"]["code"], 4);

    // Batches: all accepted together, followed as one.
    let cmds: Vec<Value> = (0..5).map(|i| json!({"type": "echo", "payload": {"b": i}})).chain([json!({"type": "fail", "payload": {"code": "x", "message": "y"}})]).collect();
    let (status, _, batch) = post(&http, url("/v1/batches"), &json!({"commands": cmds}), None).await;
    assert_eq!((status, batch["total"].clone()), (StatusCode::ACCEPTED, json!(6)), "{batch}");
    for name in batch["operations"].as_array().unwrap() {
        wait_done(&http, &base, name.as_str().unwrap()).await;
    }
    let (_, b) = get(&http, url(&format!("/v1/batches/{}", batch["id"].as_str().unwrap()))).await;
    assert_eq!((b["total"].clone(), b["completed"].clone(), b["failed"].clone(), b["state"].clone()), (json!(6), json!(5), json!(1), json!("FAILED")));

    // Listing: filter by type, page one at a time.
    let (_, fails) = get(&http, url("/v1/operations?type=fail")).await;
    assert_eq!(fails["operations"].as_array().unwrap().len(), 2);
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let (_, page) = get(&http, url(&format!("/v1/operations?state=completed&page_size=1&page_token={token}"))).await;
        seen.extend(page["operations"].as_array().unwrap().iter().map(|o| o["name"].to_string()));
        token = page["next_page_token"].as_str().unwrap().to_string();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen.len(), 7, "echo, slow sleep and 5 batch echoes: {seen:?}");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 7);

    // RunPod routes.
    let (_, _, job) = post(&http, url("/v2/echo/run"), &json!({"input": {"x": 1}}), None).await;
    let id = job["id"].as_str().unwrap().to_string();
    wait_done(&http, &base, &format!("operations/{id}")).await;
    let (status, st) = get(&http, url(&format!("/v2/echo/status/{id}"))).await;
    assert_eq!((status, st["status"].clone(), st["output"].clone()), (StatusCode::OK, json!("COMPLETED"), json!({"echo": {"x": 1}})));
    assert!(st["delayTime"].is_u64() && st["executionTime"].is_u64());
    assert_eq!(get(&http, url(&format!("/v2/sleep/status/{id}"))).await.0, StatusCode::NOT_FOUND, "another endpoint's job");
    let (_, _, job) = post(&http, url("/v2/sleep/run"), &json!({"input": {"ms": 30000, "steps": 30}}), None).await;
    let id = job["id"].as_str().unwrap().to_string();
    let (status, _, c) = send(http.post(url(&format!("/v2/sleep/cancel/{id}")))).await;
    assert_eq!((status, c["id"].as_str()), (StatusCode::OK, Some(id.as_str())));
    wait_done(&http, &base, &format!("operations/{id}")).await;
    assert_eq!(get(&http, url(&format!("/v2/sleep/status/{id}"))).await.1["status"], "CANCELLED");
    for id in &purged {
        wait_done(&http, &base, &format!("operations/{id}")).await;
        let (_, st) = get(&http, url(&format!("/v2/sleep/status/{id}"))).await;
        assert_eq!((st["status"].clone(), st["executionTime"].clone()), (json!("CANCELLED"), json!(0)), "{st}");
    }

    // The gateway's own metrics.
    let metrics = http.get(url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"courier_gateway_http_requests_total{route="/v1/commands",method="POST",status="400"}"#), "{metrics}");
    assert!(metrics.contains("courier_gateway_idempotent_replays_total 1"), "{metrics}");
    assert!(metrics.lines().any(|l| l.starts_with("courier_gateway_operations_tracked ") && !l.ends_with(" 0")));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn client_wait_reattaches_after_the_client_restarts() {
    let t = common::fresh_topics("gw-wait", 2).await;
    let _w = start_worker(&t, "gw-wait-1");
    let (quick, slow) = {
        let client = Client::new(t.kafka.clone()).unwrap();
        let quick = client.submit(NewCommand::new("echo", json!({"q": 1}))).await.unwrap();
        let slow = client.submit(NewCommand::new("sleep", json!({"ms": 2000, "steps": 2}))).await.unwrap();
        (quick, slow)
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = Client::new(t.kafka.clone()).unwrap();
    let done = client.wait(quick, Duration::from_secs(30)).await.unwrap();
    assert_eq!((done.state, done.result), (State::Completed, Some(json!({"echo": {"q": 1}}))));
    let done = client.wait(slow, Duration::from_secs(30)).await.unwrap();
    assert_eq!((done.state, done.result), (State::Completed, Some(json!({"slept_ms": 2000}))));
    let unknown = courier::envelope::new_id();
    assert!(matches!(client.wait(unknown, Duration::from_secs(1)).await, Err(courier::ClientError::Timeout { .. })));
}

