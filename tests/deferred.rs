//! Deferred completion on a real broker with a real Python handler: a `202` hands the
//! command off, the handler reports progress, a heartbeat and its result through the
//! gateway with its callback token; the key's next command waits for it, other keys
//! do not; forged and misdirected tokens are refused and publish nothing; a repeated
//! completion is `200`, a different one `409`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command as Proc, Stdio};
use std::time::{Duration, Instant};

use courier::capability::{Grant, SigningKey};
use courier::declared::Declared;
use courier::gateway::{Gateway, GatewayConfig};
use courier::{Client, NewCommand, Router, State};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const KEY: &str = "a-callback-signing-key-for-tests";

struct HandlerService {
    child: Child,
    port: u16,
}

impl HandlerService {
    fn start() -> HandlerService {
        let script = common::repo().join("examples/python-handler/handler.py");
        let mut child = Proc::new(common::python()).arg(&script).args(["--port", "0"]).stdout(Stdio::piped()).spawn().expect("start the handler");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no port in {line:?}"));
        HandlerService { child, port }
    }

    async fn seen(&self) -> Value {
        reqwest::get(format!("http://127.0.0.1:{}/calls", self.port)).await.unwrap().json().await.unwrap()
    }
}

impl Drop for HandlerService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_202_hands_off_the_command_and_the_handler_completes_it_through_the_gateway() {
    let handler = HandlerService::start();
    let t = common::fresh_topics_with("deferred", 2, [1, 5, 10, 60].map(Duration::from_secs).to_vec()).await;
    let gateway_port = common::free_port();
    let config = format!(
        "commands:\n  long:\n    http: {{ url: 'http://127.0.0.1:{}/long', timeout: 5s }}\n    heartbeat: 1m\n  echo:\n    http: {{ url: 'http://127.0.0.1:{}/echo' }}\ncallbacks:\n  public_url: http://127.0.0.1:{gateway_port}\n  signing_keys: ['{KEY}']\n",
        handler.port, handler.port
    );
    let dir = std::env::temp_dir().join(format!("courier-deferred-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("courier.yaml");
    std::fs::write(&path, &config).unwrap();
    let declared = Declared::load(&path).unwrap();

    // The gateway, in this process, with the file's keys.
    let mut gw = GatewayConfig::new(t.kafka.clone());
    gw.callback_keys = declared.callbacks.as_ref().unwrap().verifying_keys();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let gateway = Gateway::start(&gw, &declared.router(Router::new()).unwrap(), stop.clone()).await.unwrap();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", gateway_port)).await.unwrap();
    tokio::spawn(gateway.serve(listener));

    let w = common::WorkerProc::spawn(&t, "deferred-1", &["--config", path.to_str().unwrap()]);
    assert!(w.wait_for_log("partitions assigned", Duration::from_secs(60)), "{}", w.log_text());

    let client = Client::new(t.kafka.clone()).unwrap();
    let long = client.submit(NewCommand::new("long", json!({"ms": 3000})).key("user-1")).await.unwrap();
    let behind = client.submit(NewCommand::new("echo", json!({"after": "long"})).key("user-1")).await.unwrap();
    let other = client.submit(NewCommand::new("echo", json!({"other": true})).key("user-2")).await.unwrap();

    let seen = common::collect_results(&t, Duration::from_secs(60), |s| {
        let f = common::finals_by_command(s);
        [long, behind, other].iter().all(|id| f.contains_key(id))
    });
    let finals = common::finals_by_command(&seen);
    for id in [long, behind, other] {
        assert_eq!(finals[&id].len(), 1, "{id}: exactly one final event");
    }
    let done = &finals[&long][0].event;
    assert_eq!(done.state(), State::Completed, "{done:?}");
    assert_eq!(done.data.result.as_ref().unwrap()["done"], true);
    let started: Vec<_> = seen.iter().filter(|r| r.event.command_id() == long && r.event.state() == State::Started).collect();
    assert!(!started.is_empty(), "the hand-off wrote a started event");
    let progress = seen.iter().any(|r| r.event.command_id() == long && r.event.state() == State::Progress);
    assert!(progress, "the handler's progress became an event");

    // The handler: its callbacks were accepted; the key's next command ran after the
    // completion, the other key's long before it.
    let calls = handler.seen().await;
    let callbacks: Vec<(String, u64)> = calls["callbacks"].as_array().unwrap().iter()
        .filter(|c| c["id"] == long.to_string().as_str())
        .map(|c| (c["method"].as_str().unwrap().to_string(), c["status"].as_u64().unwrap())).collect();
    assert_eq!(callbacks, vec![("progress".into(), 202), ("heartbeat".into(), 202), ("complete".into(), 200)], "{calls}");
    let at = |id: Uuid| calls["calls"].as_array().unwrap().iter().find(|c| c["id"] == id.to_string().as_str()).map(|c| c["at"].as_f64().unwrap()).unwrap();
    let completed_at = calls["callbacks"].as_array().unwrap().iter().find(|c| c["method"] == "complete").unwrap()["at"].as_f64().unwrap();
    assert!(at(behind) >= completed_at - 0.05, "the key's next command waited for the deferred one");
    assert!(at(other) < completed_at, "another key did not wait");
    assert_eq!(calls["calls"].as_array().unwrap().iter().filter(|c| c["id"] == long.to_string().as_str()).count(), 1, "pushed once");

    // Tokens: forged, for another id, for another attempt, expired: refused.
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{gateway_port}/v1/operations");
    let key = SigningKey::new(KEY);
    let grant = |id: Uuid, attempt: u32, secs: i64| Grant { command_id: id, attempt, expires: chrono::Utc::now() + chrono::Duration::seconds(secs) };
    let post = |id: Uuid, token: String, body: Value| {
        let req = http.post(format!("{base}/{id}:complete")).bearer_auth(token).json(&body);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let same = json!({"result": {"done": true, "input": {"ms": 3000}}});
    assert_eq!(post(long, grant(long, 1, 60).sign(&SigningKey::new("another-key-of-16-bytes")), same.clone()).await, 401);
    assert_eq!(post(long, grant(long, 1, -5).sign(&key), same.clone()).await, 401);
    assert_eq!(post(long, grant(other, 1, 60).sign(&key), same.clone()).await, 403);
    assert_eq!(post(long, grant(long, 2, 60).sign(&key), same.clone()).await, 403);
    assert_eq!(http.post(format!("{base}/{long}:complete")).json(&same).send().await.unwrap().status().as_u16(), 401, "no token");
    // The same completion again: 200; another: 409.
    assert_eq!(post(long, grant(long, 1, 60).sign(&key), same).await, 200);
    assert_eq!(post(long, grant(long, 1, 60).sign(&key), json!({"result": "something else"})).await, 409);
    assert_eq!(post(long, grant(long, 1, 60).sign(&key), json!({"error": {"code": "x", "message": "y"}})).await, 409);

    // Nothing more was published about it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = seen.len();
    let again = common::collect_results(&t, Duration::from_secs(10), |s| s.len() >= before);
    assert_eq!(common::finals_by_command(&again)[&long].len(), 1, "still exactly one final event");
    let started = Instant::now();
    drop(w);
    assert!(started.elapsed() < Duration::from_secs(30));
}
