//! The Node.js example (examples/node-handler) on a real broker: its own courier.yaml,
//! served by a `courier worker` and a `courier gateway` process, pushing to
//! `server.js`. A greeting completes, a charge over the limit fails for good with the
//! handler's code, a 503 with Retry-After is retried and completes on attempt 2, and a
//! `202` job reports progress, a heartbeat and its result through the gateway; each
//! command ends exactly once, and the handler got the CloudEvent headers.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use courier::{Client, NewCommand, State};
use serde_json::json;
use uuid::Uuid;

const CALLBACK_KEY: &str = "a-callback-signing-key-for-the-node-example";
const API_KEY: &str = "node-test-key";

/// The handler's callbacks for command `id` as (method, status), once it has made
/// its `:complete` (which it records after the gateway answers).
async fn callbacks_once_complete(handler: &common::HandlerProc, id: Uuid, timeout: Duration) -> Vec<(String, u64)> {
    let id = id.to_string();
    let until = Instant::now() + timeout;
    loop {
        let seen = handler.seen().await;
        let callbacks: Vec<(String, u64)> = seen["callbacks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["id"] == id.as_str())
            .map(|c| (c["method"].as_str().unwrap().to_string(), c["status"].as_u64().unwrap()))
            .collect();
        if callbacks.iter().any(|(method, _)| method == "complete") {
            return callbacks;
        }
        assert!(Instant::now() < until, "the handler never completed {id}: {seen}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}


/// The example's own courier.yaml, with its variables filled in, written with its
/// schemas into a fresh folder.
fn example_config(handler_port: u16, gateway_port: u16) -> PathBuf {
    let example = common::repo().join("examples/node-handler");
    let text = std::fs::read_to_string(example.join("courier.yaml")).expect("read the example config");
    let text = text
        .replace("${HANDLER_PORT}", &handler_port.to_string())
        .replace("${HANDLER_API_KEY}", API_KEY)
        .replace("${GATEWAY_PORT}", &gateway_port.to_string())
        .replace("${COURIER_CALLBACK_KEY}", CALLBACK_KEY);
    let unfilled = text.lines().find(|l| !l.trim_start().starts_with('#') && l.contains("${"));
    assert!(unfilled.is_none(), "a variable of the example config is not filled in: {unfilled:?}");
    let dir = std::env::temp_dir().join(format!("courier-node-handler-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(dir.join("schemas")).unwrap();
    std::fs::copy(example.join("schemas/greet.json"), dir.join("schemas/greet.json")).expect("copy the greet schema");
    let path = dir.join("courier.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn the_node_example_completes_fails_retries_and_defers_as_its_answers_say() {
    let handler = common::HandlerProc::node();
    let t = common::fresh_topics_with("node-handler", 2, [1, 5, 10, 60].map(Duration::from_secs).to_vec()).await;
    let gateway_port = common::free_port();
    let path = example_config(handler.port, gateway_port);
    let config = ["--config", path.to_str().unwrap()];
    let http = reqwest::Client::new();
    let gateway = common::GatewayProc::spawn(&t, "node-gw", gateway_port, &config);
    gateway.ready(&http).await;
    let w = common::WorkerProc::spawn(&t, "node-1", &config);
    assert!(w.wait_for_log("partitions assigned", Duration::from_secs(60)), "{}", w.log_text());

    let client = Client::new(t.kafka.clone()).unwrap();
    let greet = client.submit(NewCommand::new("greet", json!({"name": "Ada"})).key("user-1")).await.unwrap();
    let declined = client.submit(NewCommand::new("charge", json!({"amount_cents": 20000})).key("user-2")).await.unwrap();
    let flaky = client.submit(NewCommand::new("flaky", json!({"succeed_on": 2})).key("user-3")).await.unwrap();
    let long = client.submit(NewCommand::new("long", json!({"ms": 1500})).key("user-4")).await.unwrap();
    let ids = [greet, declined, flaky, long];
    let keys = [(greet, "greet", "user-1"), (declined, "charge", "user-2"), (flaky, "flaky", "user-3"), (long, "long", "user-4")];

    let seen = common::collect_results(&t, Duration::from_secs(120), |s| {
        let f = common::finals_by_command(s);
        ids.iter().all(|id| f.contains_key(id))
    });
    let finals = common::finals_by_command(&seen);
    let last = |id: Uuid| &finals[&id].last().unwrap().event;

    assert_eq!((last(greet).state(), &last(greet).data.result), (State::Completed, &Some(json!({"greeting": "hello, Ada"}))));
    let error = last(declined).data.error.as_ref().map(|e| e.code.as_str());
    assert_eq!((last(declined).state(), error), (State::Failed, Some("card_declined")), "a 422 with a code is a permanent failure");
    assert_eq!(handler.calls_for(declined).await.len(), 1, "a permanent failure is not retried");
    assert_eq!((last(flaky).state(), &last(flaky).data.result), (State::Completed, &Some(json!({"attempt": 2}))), "{:?}", last(flaky));
    let attempts: Vec<u64> = handler.calls_for(flaky).await.iter().map(|c| c["attempt"].as_u64().unwrap()).collect();
    assert_eq!(attempts, [1, 2], "a 503 with Retry-After is retried");

    // The 202 job: handed off once, its progress an event, its result from :complete.
    assert_eq!(last(long).state(), State::Completed, "{:?}", last(long));
    assert_eq!(last(long).data.result.as_ref().unwrap()["done"], true, "{:?}", last(long));
    assert_eq!(last(long).data.result.as_ref().unwrap()["input"], json!({"ms": 1500}));
    let progress = seen.iter().any(|r| r.event.command_id() == long && r.event.state() == State::Progress);
    assert!(progress, "the handler's progress became an event");
    let long_calls = handler.calls_for(long).await;
    assert_eq!(long_calls.len(), 1, "the job was pushed once");
    let callback_url = long_calls[0]["callback_url"].as_str().unwrap_or_default();
    assert_eq!(callback_url, format!("http://127.0.0.1:{gateway_port}/v1/operations/{long}"), "{}", long_calls[0]);
    assert!(long_calls[0]["callback_token"].as_str().is_some_and(|t| !t.is_empty()), "{}", long_calls[0]);
    let callbacks = callbacks_once_complete(&handler, long, Duration::from_secs(60)).await;
    let callbacks: Vec<(&str, u64)> = callbacks.iter().map(|(method, status)| (method.as_str(), *status)).collect();
    assert_eq!(callbacks.len(), 3, "{callbacks:?}");
    assert_eq!(callbacks[..2], [("progress", 202), ("heartbeat", 202)], "the gateway accepted the progress and the heartbeat");
    assert!(callbacks[2].0 == "complete" && [200, 202].contains(&callbacks[2].1), "{callbacks:?}");

    // The requests as the handler got them: CloudEvents in binary mode, plus Courier's headers.
    for (id, command_type, key) in keys {
        let calls = handler.calls_for(id).await;
        assert!(!calls.is_empty(), "{id} never reached the handler");
        for call in &calls {
            assert_eq!(call["specversion"].as_str(), Some("1.0"), "{call}");
            assert_eq!(call["type"].as_str(), Some(command_type), "{call}");
            assert_eq!(call["key"].as_str(), Some(key), "{call}");
            assert!(call["source"].as_str().is_some_and(|s| !s.is_empty()) && call["time"].as_str().is_some(), "{call}");
        }
    }
    let greet_call = &handler.calls_for(greet).await[0];
    assert_eq!((greet_call["attempt"].as_u64(), greet_call["api_key"].as_str()), (Some(1), Some(API_KEY)), "{greet_call}");

    // Settle, then count everything on the results topic: each ended exactly once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = common::read_all_results(&t);
    let finals = common::finals_by_command(&all);
    for id in ids {
        assert_eq!(finals.get(&id).map_or(0, Vec::len), 1, "{id}: exactly one final event");
    }
    assert!(!w.log_text().contains(API_KEY), "a header value from the config is never logged");
    drop(w);
    drop(gateway);
}
