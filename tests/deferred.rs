//! Deferred completion on a real broker with a real Python handler: a `202` hands the
//! command off, the handler reports progress, a heartbeat and its result through the
//! gateway with its callback token; the key's next command waits for it, other keys
//! do not; forged and misdirected tokens are refused and publish nothing; a repeated
//! completion is `200`, a different one `409`. Across a worker's SIGKILL and a
//! gateway's restart the job still ends exactly once; with two gateways and two
//! workers a lapsed heartbeat ends it exactly once (`timed_out`, or a retry when the
//! type has its own), heartbeats through either gateway keep it alive, a cancel ends
//! it and tells the handler's `cancel_url` once, and its partition keeps committing.

mod common;

use std::time::{Duration, Instant};

use courier::capability::{Grant, SigningKey};
use courier::declared::Declared;
use courier::gateway::{Gateway, GatewayConfig};
use courier::{Client, NewCommand, Router, State};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const KEY: &str = "a-callback-signing-key-for-tests";

/// Writes a courier.yaml with these `commands:` entries (indented under it) and a
/// callbacks block naming the gateway on `gateway_port`.
fn write_config(name: &str, gateway_port: u16, commands: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("courier-{name}-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("courier.yaml");
    let config = format!("commands:\n{commands}callbacks:\n  public_url: http://127.0.0.1:{gateway_port}\n  signing_keys: ['{KEY}']\n");
    std::fs::write(&path, config).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn a_202_hands_off_the_command_and_the_handler_completes_it_through_the_gateway() {
    let handler = common::HandlerProc::python();
    let t = common::fresh_topics_with("deferred", 2, [1, 5, 10, 60].map(Duration::from_secs).to_vec()).await;
    let gateway_port = common::free_port();
    let types = format!(
        "  long:\n    http: {{ url: 'http://127.0.0.1:{0}/long', timeout: 5s }}\n    heartbeat: 1m\n  echo:\n    http: {{ url: 'http://127.0.0.1:{0}/echo' }}\n",
        handler.port
    );
    let path = write_config("deferred", gateway_port, &types);
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

#[tokio::test(flavor = "multi_thread")]
async fn a_deferred_job_ends_once_across_a_worker_sigkill_and_a_gateway_restart() {
    let handler = common::HandlerProc::python();
    let t = common::fresh_topics_with("deferred-crash", 2, [1, 5, 10, 60].map(Duration::from_secs).to_vec()).await;
    let port = common::free_port();
    let types = format!(
        "  long:\n    http: {{ url: 'http://127.0.0.1:{0}/long', timeout: 5s }}\n    heartbeat: 2m\n  echo:\n    http: {{ url: 'http://127.0.0.1:{0}/echo' }}\n",
        handler.port
    );
    let path = write_config("deferred-crash", port, &types);
    let config = ["--config", path.to_str().unwrap()];
    let http = reqwest::Client::new();
    let mut gateway = common::GatewayProc::spawn(&t, "gw-1", port, &config);
    gateway.ready(&http).await;
    let mut first = common::WorkerProc::spawn(&t, "crash-1", &config);
    assert!(first.wait_for_log("partitions assigned", Duration::from_secs(60)), "{}", first.log_text());

    let client = Client::new(t.kafka.clone()).unwrap();
    let long = client.submit(NewCommand::new("long", json!({"ms": 8000})).key("user-1")).await.unwrap();
    let behind = client.submit(NewCommand::new("echo", json!({"after": "long"})).key("user-1")).await.unwrap();
    handler.pushed("/long", long, Duration::from_secs(60)).await;
    // The hand-off is on record once its started event is: kill both while the job runs.
    common::collect_results(&t, Duration::from_secs(30), |s| s.iter().any(|r| r.event.command_id() == long && r.event.state() == State::Started));
    first.sigkill();
    gateway.sigkill();
    assert!(handler.pushes("/echo", behind).await.is_empty(), "the key's next command waits for the job");

    // A new worker (the partition moves to it, the record may be read again) and a new
    // gateway on the same address; the handler's callbacks retry until it answers.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = common::WorkerProc::spawn(&t, "crash-2", &config);
    let gateway = common::GatewayProc::spawn(&t, "gw-2", port, &config);
    gateway.ready(&http).await;

    let seen = common::collect_results(&t, Duration::from_secs(120), |s| {
        let f = common::finals_by_command(s);
        f.contains_key(&long) && f.contains_key(&behind)
    });
    let finals = common::finals_by_command(&seen);
    assert_eq!(finals[&long].len(), 1, "the job's final event appears exactly once");
    assert_eq!(finals[&long][0].event.state(), State::Completed, "{:?}", finals[&long][0].event);
    assert_eq!(finals[&behind].len(), 1);
    assert_eq!(handler.pushes("/long", long).await.len(), 1, "the job was handed off once, not pushed again by the new worker");
    let calls = handler.seen().await;
    let complete = calls["callbacks"].as_array().unwrap().iter().find(|c| c["id"] == long.to_string().as_str() && c["method"] == "complete").cloned();
    let complete = complete.unwrap_or_else(|| panic!("the job called back: {calls}"));
    assert!([200, 202].contains(&complete["status"].as_u64().unwrap()), "{complete}");
    let behind_at = handler.pushes("/echo", behind).await[0]["at"].as_f64().unwrap();
    assert!(behind_at >= complete["at"].as_f64().unwrap() - 0.05, "the key's next command ran after the job completed");

    // Later, nothing more: still one final event, and the key is free.
    let after = client.submit(NewCommand::new("echo", json!({"after": "all"})).key("user-1")).await.unwrap();
    let again = common::collect_results(&t, Duration::from_secs(60), |s| common::finals_by_command(s).contains_key(&after));
    assert_eq!(common::finals_by_command(&again)[&long].len(), 1, "still exactly one final event");
    drop(second);
}

#[tokio::test(flavor = "multi_thread")]
async fn leases_and_cancels_end_deferred_jobs_once_with_two_gateways_and_two_workers() {
    let handler = common::HandlerProc::python();
    let t = common::fresh_topics_with("deferred-lease", 2, [1, 5, 10, 60].map(Duration::from_secs).to_vec()).await;
    let port = common::free_port();
    let h = handler.port;
    let types = format!(
        "  stuck:\n    http: {{ url: 'http://127.0.0.1:{h}/long', timeout: 5s }}\n    heartbeat: 2s\n\
         \x20 stuck-retried:\n    http: {{ url: 'http://127.0.0.1:{h}/long', timeout: 5s }}\n    heartbeat: 2s\n    retry: {{ tiers: [1s], max_attempts: 2 }}\n\
         \x20 held:\n    http: {{ url: 'http://127.0.0.1:{h}/long', timeout: 5s }}\n    cancel_url: http://127.0.0.1:{h}/cancel\n\
         \x20 echo:\n    http: {{ url: 'http://127.0.0.1:{h}/echo' }}\n"
    );
    let path = write_config("deferred-lease", port, &types);
    let config = ["--config", path.to_str().unwrap()];
    let http = reqwest::Client::new();
    let gateways = [common::GatewayProc::spawn(&t, "gw-1", port, &config), common::GatewayProc::spawn(&t, "gw-2", common::free_port(), &config)];
    for g in &gateways {
        g.ready(&http).await;
    }
    let workers = [common::WorkerProc::spawn(&t, "lease-1", &config), common::WorkerProc::spawn(&t, "lease-2", &config)];
    for w in &workers {
        assert!(w.wait_for_log("partitions assigned", Duration::from_secs(60)), "{}", w.log_text());
    }

    let client = Client::new(t.kafka.clone()).unwrap();
    let never = json!({"complete": false});
    let mut stuck = Vec::new();
    for k in 0..4 {
        stuck.push(client.submit(NewCommand::new("stuck", never.clone()).key(format!("stuck-{k}"))).await.unwrap());
    }
    let retried = client.submit(NewCommand::new("stuck-retried", never.clone()).key("retried")).await.unwrap();
    let kept = client.submit(NewCommand::new("stuck", never.clone()).key("kept")).await.unwrap();
    let held = client.submit(NewCommand::new("held", never.clone()).key("held")).await.unwrap();

    // `kept` stays alive on heartbeats and progress sent through both gateways in turn.
    let token = handler.pushed("/long", kept, Duration::from_secs(60)).await["callback_token"].as_str().unwrap().to_string();
    let beating = CancellationToken::new();
    let beats = {
        let (http, token, beating) = (http.clone(), token.clone(), beating.clone());
        let bases: Vec<String> = gateways.iter().map(|g| g.base.clone()).collect();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for n in 0usize.. {
                if beating.is_cancelled() {
                    break;
                }
                let (method, body) = if n % 2 == 0 { ("heartbeat", Value::Null) } else { ("progress", json!({"percent": n % 100, "message": "working"})) };
                let mut req = http.post(format!("{}/v1/operations/{kept}:{method}", bases[n % 2])).bearer_auth(&token);
                if !body.is_null() {
                    req = req.json(&body);
                }
                statuses.push(req.send().await.map(|r| r.status().as_u16()).unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            statuses
        })
    };

    // The others lapse; the retried type gets a second attempt, which lapses too.
    handler.pushed("/long", held, Duration::from_secs(60)).await;
    common::collect_results(&t, Duration::from_secs(30), |s| s.iter().any(|r| r.event.command_id() == held && r.event.state() == State::Started));
    client.cancel(held, Some("no longer needed".into())).await.unwrap();
    let mut all = stuck.clone();
    all.extend([retried, held]);
    let seen = common::collect_results(&t, Duration::from_secs(90), |s| {
        let f = common::finals_by_command(s);
        all.iter().all(|id| f.contains_key(id))
    });
    let echo = client.submit(NewCommand::new("echo", json!({"while": "kept is handed off"})).key("echo")).await.unwrap();
    common::collect_results(&t, Duration::from_secs(30), |s| common::finals_by_command(s).contains_key(&echo));

    // While `kept` is still handed off, the group has committed past every record.
    let lag = common::wait_for_zero_lag(&t, &common::worker_group(&t), &t.topics.commands, Duration::from_secs(30));
    assert_eq!(lag, 0, "a handed-off command does not pin its partition's commit point");
    let finals = common::finals_by_command(&seen);
    assert!(!finals.contains_key(&kept), "heartbeats through either gateway kept its lease: {:?}", finals.get(&kept));
    assert!(!common::finals_by_command(&common::read_all_results(&t)).contains_key(&kept));

    // Then the beats stop, and it lapses too.
    beating.cancel();
    let statuses = beats.await.unwrap();
    assert!(statuses.len() >= 8 && statuses.iter().all(|s| *s == 202), "{statuses:?}");
    all.push(kept);
    common::collect_results(&t, Duration::from_secs(30), |s| common::finals_by_command(s).contains_key(&kept));

    // Settle, then count: each ended exactly once, in the expected way.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let seen = common::read_all_results(&t);
    let finals = common::finals_by_command(&seen);
    for id in stuck.iter().chain([&kept]) {
        assert_eq!(finals[id].len(), 1, "{id}: timed out exactly once");
        let e = &finals[id][0].event;
        assert_eq!(e.state(), State::TimedOut, "{e:?}");
        assert_eq!(e.data.error.as_ref().unwrap().code, "heartbeat_lapsed");
    }
    assert_eq!(finals[&retried].len(), 1, "the retried type ends once, after its last attempt");
    assert_eq!(finals[&retried][0].event.state(), State::Failed, "{:?}", finals[&retried][0].event);
    let pushes = handler.pushes("/long", retried).await;
    let attempts: Vec<u64> = pushes.iter().map(|c| c["attempt"].as_u64().unwrap()).collect();
    assert_eq!(attempts, vec![1, 2], "a lapse of a type with its own retry is retried");
    // The first attempt's token, replayed after the retry: for another attempt, 403.
    let old = pushes[0]["callback_token"].as_str().unwrap();
    for method in ["complete", "heartbeat"] {
        let req = http.post(format!("{}/v1/operations/{retried}:{method}", gateways[1].base)).bearer_auth(old).json(&json!({"result": "late"}));
        assert_eq!(req.send().await.unwrap().status().as_u16(), 403, "{method} with a replayed token of attempt 1");
    }
    assert_eq!(finals[&held].len(), 1);
    assert_eq!(finals[&held][0].event.state(), State::Cancelled);
    let after = common::read_all_results(&t);
    assert_eq!(common::finals_by_command(&after)[&retried].len(), 1, "the replayed tokens published nothing");
    let calls = handler.seen().await;
    let cancels: Vec<&Value> = calls["cancelled"].as_array().unwrap().iter().filter(|c| c["id"] == held.to_string().as_str()).collect();
    assert_eq!(cancels.len(), 1, "the handler's cancel_url was told once: {calls}");
    assert_eq!(cancels[0]["attempt"], 1);
    for id in &all {
        assert_eq!(handler.pushes("/long", *id).await.len(), if *id == retried { 2 } else { 1 }, "{id}: pushed once per attempt");
    }
    drop(workers);
}

#[tokio::test(flavor = "multi_thread")]
async fn ouro_and_runpod_services_run_unchanged_through_their_profiles() {
    let handler = common::HandlerProc::python();
    let t = common::fresh_topics_with("deferred-profiles", 2, [1, 5, 10, 60].map(Duration::from_secs).to_vec()).await;
    let port = common::free_port();
    let h = handler.port;
    let types = format!(
        "  ouro-job:\n    http: {{ url: 'http://127.0.0.1:{h}/ouro', profile: ouro }}\n    heartbeat: 1m\n\
         \x20 runpod-job:\n    http: {{ url: 'http://127.0.0.1:{h}/runpod', profile: runpod }}\n    heartbeat: 1m\n"
    );
    let path = write_config("deferred-profiles", port, &types);
    let config = ["--config", path.to_str().unwrap()];
    let http = reqwest::Client::new();
    let gateway = common::GatewayProc::spawn(&t, "gw", port, &config);
    gateway.ready(&http).await;
    let w = common::WorkerProc::spawn(&t, "profiles-1", &config);
    assert!(w.wait_for_log("partitions assigned", Duration::from_secs(60)), "{}", w.log_text());

    let client = Client::new(t.kafka.clone()).unwrap();
    let ouro = client.submit(NewCommand::new("ouro-job", json!({"ms": 300, "n": 1})).key("a")).await.unwrap();
    let queued = client.submit(NewCommand::new("runpod-job", json!({"ms": 300, "n": 2})).key("b")).await.unwrap();
    let sync = client.submit(NewCommand::new("runpod-job", json!({"sync": true, "n": 3})).key("c")).await.unwrap();
    let seen = common::collect_results(&t, Duration::from_secs(60), |s| {
        let f = common::finals_by_command(s);
        [ouro, queued, sync].iter().all(|id| f.contains_key(id))
    });
    let finals = common::finals_by_command(&seen);
    for id in [ouro, queued, sync] {
        assert_eq!(finals[&id].len(), 1, "{id}: one final event");
        assert_eq!(finals[&id][0].event.state(), State::Completed, "{:?}", finals[&id][0].event);
    }
    let result = |id: Uuid| finals[&id][0].event.data.result.clone().unwrap();
    assert_eq!(result(ouro), json!({"route": "ouro-job", "input": {"ms": 300, "n": 1}}), "Ouro's response is the result");
    assert_eq!(result(queued), json!({"echo": {"ms": 300, "n": 2}}), "RunPod's output is the result");
    assert_eq!(result(sync), json!({"echo": {"sync": true, "n": 3}}));
    for id in [ouro, queued] {
        assert!(seen.iter().any(|r| r.event.command_id() == id && r.event.state() == State::Started), "{id} was handed off");
    }

    let calls = handler.seen().await;
    let status = |id: Uuid, method: &str| {
        calls["callbacks"].as_array().unwrap().iter().find(|c| c["id"] == id.to_string().as_str() && c["method"] == method).map(|c| c["status"].as_u64().unwrap())
    };
    assert!(matches!(status(ouro, "ouro"), Some(200 | 202)), "{calls}");
    assert_eq!(status(queued, "runpod_in_progress"), Some(202), "IN_PROGRESS renews the lease: {calls}");
    assert!(matches!(status(queued, "runpod"), Some(200 | 202)), "{calls}");
    let job = &handler.pushes("/runpod", queued).await[0]["payload"];
    assert_eq!((job["id"].as_str(), &job["input"]), (Some(queued.to_string().as_str()), &json!({"ms": 300, "n": 2})), "RunPod's job request: {job}");

    // The webhook's token is the capability: tampered with, it is refused; the right
    // one repeated with the same outcome is 200, another outcome 409.
    let webhook = job["webhook"].as_str().unwrap().to_string();
    let done = json!({"id": queued, "status": "COMPLETED", "output": {"echo": {"ms": 300, "n": 2}}});
    let tampered = format!("{}x", webhook);
    assert_eq!(http.post(&tampered).json(&done).send().await.unwrap().status().as_u16(), 401);
    assert_eq!(http.post(&webhook).json(&done).send().await.unwrap().status().as_u16(), 200);
    assert_eq!(http.post(&webhook).json(&json!({"id": queued, "status": "FAILED", "error": "late"})).send().await.unwrap().status().as_u16(), 409);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = common::read_all_results(&t);
    assert_eq!(common::finals_by_command(&again)[&queued].len(), 1, "still exactly one final event");
}
