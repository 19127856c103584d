//! The webhook dispatcher end to end: a real broker, a real worker process, real HTTP
//! receivers on loopback that verify signatures and dedupe on `webhook-id`.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap as HttpHeaders, StatusCode};
use courier::gateway::{Gateway, GatewayConfig};
use courier::envelope::{header_names, HeaderMap, OperationSnapshot, ResultData, ResultEvent, State, Timing};
use courier::topics::{create_topics, TopicSpec};
use courier::UrlPolicy;
use courier::webhooks::{verify, Attempt, Dispatcher, Profile, Secret, WebhookConfig, DEFAULT_TOLERANCE};
use courier::{Client, NewCommand};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const OLD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NEW_SECRET: &str = "whsec_c2Vjb25kIHNlY3JldCBmb3Igcm90YXRpb24=";

fn secret(s: &str) -> Secret {
    s.parse().expect("secret")
}

/// One request as a receiver saw it.
#[derive(Debug, Clone)]
struct Call {
    path: String,
    id: String,
    verified: bool,
    /// What the receiver answered; 0 when it hung instead.
    status: u16,
    content_type: String,
    ouro_token: Option<String>,
    body: Value,
}

/// An HTTP receiver: verifies signatures with the secrets it knows, answers by path.
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    secrets: Arc<Vec<Secret>>,
    calls: Arc<Mutex<Vec<Call>>>,
    /// `/down` answers 500 until this is set.
    up: Arc<Mutex<bool>>,
}

impl Receiver {
    async fn start(secrets: Vec<Secret>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let receiver = Receiver {
            addr: listener.local_addr().expect("addr"),
            secrets: Arc::new(secrets),
            calls: Arc::default(),
            up: Arc::default(),
        };
        let app = axum::Router::new().route("/{path}", axum::routing::post(hook)).with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        receiver
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.addr.port())
    }

    fn calls(&self, path: &str) -> Vec<Call> {
        self.calls.lock().unwrap().iter().filter(|c| c.path == path).cloned().collect()
    }

    /// How many times each webhook-id was acknowledged: a deduping receiver processes
    /// each id once, so anything above 1 is a duplicate delivery.
    fn acknowledged(&self, path: &str) -> HashMap<String, usize> {
        let mut ids = HashMap::new();
        for c in self.calls(path).iter().filter(|c| (200..300).contains(&c.status)) {
            *ids.entry(c.id.clone()).or_default() += 1;
        }
        ids
    }
}

async fn hook(AxState(r): AxState<Receiver>, Path(path): Path<String>, headers: HttpHeaders, body: Bytes) -> StatusCode {
    let verified = verify(&r.secrets, &headers, &body, DEFAULT_TOLERANCE).is_ok();
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let earlier = r.calls(&path).len();
    let status = match path.as_str() {
        _ if !verified => StatusCode::UNAUTHORIZED,
        "flaky" if earlier < 2 => StatusCode::INTERNAL_SERVER_ERROR,
        "slow" if earlier == 0 => StatusCode::REQUEST_TIMEOUT,
        "gone" => StatusCode::GONE,
        "down" if !*r.up.lock().unwrap() => StatusCode::INTERNAL_SERVER_ERROR,
        "fail" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    };
    let hangs = status == StatusCode::REQUEST_TIMEOUT;
    r.calls.lock().unwrap().push(Call {
        path,
        id: header("webhook-id").unwrap_or_default(),
        verified,
        status: if hangs { 0 } else { status.as_u16() },
        content_type: header("content-type").unwrap_or_default(),
        ouro_token: header("ouro-webhook-token"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    if hangs {
        // Far longer than the dispatcher's timeout: it must give up and retry.
        tokio::time::sleep(Duration::from_secs(3)).await;
        return StatusCode::OK;
    }
    status
}

/// Fresh topics, with delay tiers for `schedule` too.
async fn topics(name: &str, schedule: &[Duration]) -> common::TestTopics {
    let t = common::fresh_topics(name, 2).await;
    let spec = TopicSpec { partitions: 2, retention_hours: 24, webhook_schedule: schedule.to_vec(), ..TopicSpec::default() };
    create_topics(&t.kafka, &spec).await.expect("tier topics");
    t
}

fn config(t: &common::TestTopics, schedule: &[Duration]) -> WebhookConfig {
    let mut cfg = WebhookConfig::new(t.kafka.clone(), vec![secret(OLD_SECRET), secret(NEW_SECRET)]);
    cfg.group_id = format!("{}-webhooks", t.kafka.prefix);
    cfg.schedule = schedule.to_vec();
    cfg.response_timeout = Duration::from_millis(700);
    cfg.connect_timeout = Duration::from_secs(1);
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.url_policy = UrlPolicy::allowing_loopback();
    cfg.snapshot_wait = Duration::from_secs(5);
    cfg.shutdown_grace = Duration::from_secs(2);
    cfg
}

fn ms(list: &[u64]) -> Vec<Duration> {
    list.iter().map(|m| Duration::from_millis(*m)).collect()
}

/// Polls `probe` until it gives a value, or panics after `timeout`.
async fn eventually<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn attempts(d: &Dispatcher, id: uuid::Uuid, n: usize) -> Option<Vec<Attempt>> {
    let list = d.delivery_log().attempts(&id);
    (list.len() >= n).then_some(list)
}

/// Who wrote a final event: a current worker (the event carries its callback URL)
/// or one from before envelope 1.1 (only the status snapshot names it).
#[derive(Clone, Copy, PartialEq)]
enum Writer {
    Current,
    Older,
}

/// A final event and the status snapshot naming its callback URL, as a worker writes them.
async fn publish_final(t: &common::TestTopics, url: &str) -> ResultEvent {
    publish_final_by(t, url, Writer::Current, true).await
}

/// A final event as `writer` writes it, with its status snapshot or without.
async fn publish_final_by(t: &common::TestTopics, url: &str, writer: Writer, with_snapshot: bool) -> ResultEvent {
    let id = courier::envelope::new_id();
    let timing = Timing { queued_ms: 3, execution_ms: 5, attempts: 1 };
    let data = ResultData {
        command_id: id,
        command_type: "echo".into(),
        state: State::Completed,
        key: None,
        key_base64: None,
        result: Some(json!({"echo": "hi"})),
        error: None,
        progress: None,
        timing: timing.clone(),
        worker: "test".into(),
    };
    let now = chrono::Utc::now();
    let snapshot = OperationSnapshot {
        command_id: id,
        command_type: "echo".into(),
        state: State::Completed,
        key: None,
        key_base64: None,
        attempt: 1,
        progress: None,
        result: data.result.clone(),
        error: None,
        timing,
        created: now,
        updated: now,
        callback_url: Some(url.to_string()),
        idempotency_key: None,
        request_hash: None,
        batch_id: None,
        tenant: None,
        worker: Some("test".into()),
        deferred: None,
    };
    let mut event = ResultEvent::new(id.to_string().into_bytes(), "//test", data);
    let mut records = Vec::new();
    if with_snapshot {
        records.push((&t.topics.status, snapshot.encode("//test")));
    }
    if writer == Writer::Current {
        event.callback_url = Some(url.to_string());
    }
    let (key, value, mut headers) = event.encode();
    if writer == Writer::Older {
        headers.set("ce_courierversion", "1.0");
    }
    records.push((&t.topics.results, (key, value, headers)));
    for (topic, (key, value, headers)) in records {
        common::produce_raw(t, topic, Some(&key), Some(&value), &headers, None).await;
    }
    event
}

/// Records of a topic whose `ce_type` is `ty` (or all, for `None`): (key, JSON value,
/// headers), read until the topic has been quiet for a moment.
async fn records(t: &common::TestTopics, topic: &str, ty: Option<&str>) -> Vec<(String, Value, HeaderMap)> {
    let reader = common::TopicReader::new(t, topic);
    let raw = tokio::task::spawn_blocking(move || {
        let mut all = reader.poll_raw(Duration::from_secs(5));
        loop {
            let more = reader.poll_raw(Duration::from_millis(700));
            if more.is_empty() {
                return all;
            }
            all.extend(more);
        }
    })
    .await
    .expect("reader");
    raw.into_iter()
        .filter(|(.., h)| ty.is_none_or(|ty| h.get_str(header_names::TYPE).ok().flatten() == Some(ty)))
        .map(|(_, _, k, v, h)| {
            let key = String::from_utf8_lossy(&k.unwrap_or_default()).into_owned();
            (key, v.and_then(|v| serde_json::from_slice(&v).ok()).unwrap_or(Value::Null), h)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_timeouts_gone_rotation_and_the_delivery_log() {
    let schedule = ms(&[300, 600, 1200]);
    let t = topics("webhooks", &schedule).await;
    let worker = common::WorkerProc::spawn(&t, "wh-1", &[]);
    // The receiver knows only the new secret: rotation must not break it.
    let receiver = Receiver::start(vec![secret(NEW_SECRET)]).await;
    let stop = CancellationToken::new();
    let dispatcher = Dispatcher::start(config(&t, &schedule), stop.clone()).await.expect("dispatcher");
    assert!(worker.wait_for_log("partitions assigned", Duration::from_secs(60)), "{}", worker.log_text());

    // The flaky one comes in over HTTP, as a gateway caller's would.
    let gateway_stop = CancellationToken::new();
    let mut gateway_config = GatewayConfig::new(t.kafka.clone());
    gateway_config.url_policy = UrlPolicy::allowing_loopback();
    let gateway = Gateway::start(&gateway_config, &courier::demo::example_router(), gateway_stop.clone())
        .await
        .expect("gateway");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway_base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(gateway.serve(listener));
    let http = reqwest::Client::new();
    let accepted = http
        .post(format!("{gateway_base}/v1/commands"))
        .json(&json!({"type": "echo", "payload": {"to": "flaky"}, "callback_url": receiver.url("flaky")}))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    let name = accepted.json::<Value>().await.unwrap()["name"].as_str().unwrap_or_default().to_string();
    let flaky: uuid::Uuid = name.rsplit('/').next().unwrap_or_default().parse().expect("operation name ends in the id");

    let client = Client::new(t.kafka.clone()).unwrap();
    let submit = |path: &str| NewCommand::new("echo", json!({"to": path})).callback_url(receiver.url(path));
    let slow = client.submit(submit("slow")).await.unwrap();
    let gone = client.submit(submit("gone")).await.unwrap();
    let silent = client.submit(NewCommand::new("echo", json!({"to": "nobody"}))).await.unwrap();

    let log = eventually("3 attempts for the flaky receiver", Duration::from_secs(30), || attempts(&dispatcher, flaky, 3)).await;
    let seen: Vec<_> = log.iter().map(|a| (a.attempt, a.status, a.outcome.as_str())).collect();
    assert_eq!(seen, vec![(1, Some(500), "failed"), (2, Some(500), "failed"), (3, Some(200), "delivered")]);
    let calls = receiver.calls("flaky");
    assert_eq!(calls.len(), 3, "failed twice, then acknowledged, then never again");
    assert!(calls.iter().all(|c| c.verified), "every attempt verifies with the second secret alone");
    assert!(calls.iter().all(|c| c.id == log[0].event_id.to_string()), "webhook-id is stable across retries");
    assert_eq!(receiver.acknowledged("flaky").into_values().collect::<Vec<_>>(), vec![1], "delivered exactly once");

    let log = eventually("the slow receiver's retry", Duration::from_secs(30), || attempts(&dispatcher, slow, 2)).await;
    assert_eq!(log[0].outcome, "failed");
    assert!(log[0].error.as_deref().unwrap_or_default().contains("no response within"), "{:?}", log[0]);
    assert_eq!((log[1].outcome.as_str(), log[1].status), ("delivered", Some(200)));
    assert_eq!(receiver.acknowledged("slow").into_values().collect::<Vec<_>>(), vec![1]);

    let log = eventually("the 410", Duration::from_secs(30), || attempts(&dispatcher, gone, 1)).await;
    assert_eq!((log[0].outcome.as_str(), log[0].status), ("gone", Some(410)));
    let after = client.submit(submit("gone")).await.unwrap();
    let log = eventually("the skipped delivery", Duration::from_secs(30), || attempts(&dispatcher, after, 1)).await;
    assert_eq!(log[0].outcome, "skipped");
    assert!(log[0].error.as_deref().unwrap_or_default().contains("gone"), "{:?}", log[0]);
    assert_eq!(receiver.calls("gone").len(), 1, "a disabled URL is not called again");
    let endpoint = records(&t, &t.topics.webhooks_endpoints, None).await;
    let state = endpoint.iter().find(|(k, ..)| *k == receiver.url("gone")).expect("endpoint state recorded");
    assert_eq!(state.1["disabled"]["reason"], "gone");
    let dead = records(&t, &t.topics.webhooks_dlq, None).await;
    let reasons: Vec<_> = dead.iter().map(|(.., h)| h.get_str("courier_dlq_reason").unwrap().unwrap_or_default().to_string()).collect();
    assert_eq!(reasons.iter().filter(|r| *r == "endpoint_gone").count(), 1);
    assert_eq!(reasons.iter().filter(|r| *r == "endpoint_disabled").count(), 1);

    // The HTTP view of the log, and the metrics, on the dispatcher's own listener.
    let base = format!("http://{}", dispatcher.local_addr());
    let listed: Vec<Value> = reqwest::get(format!("{base}/v1/operations/{flaky}/deliveries")).await.unwrap().json().await.unwrap();
    let codes: Vec<_> = listed.iter().map(|a| a["status"].as_u64()).collect();
    assert_eq!(codes, vec![Some(500), Some(500), Some(200)]);
    assert!(listed.iter().all(|a| a["url"] == receiver.url("flaky") && a["latency_ms"].is_u64() && a["time"].is_string()));
    let bad = reqwest::get(format!("{base}/v1/operations/not-a-uuid/deliveries")).await.unwrap();
    assert_eq!(bad.status(), 400);
    // The gateway serves the same log, read from the log topic.
    let until = Instant::now() + Duration::from_secs(15);
    let via_gateway = loop {
        let url = format!("{gateway_base}/v1/operations/{flaky}/deliveries");
        let listed: Vec<Value> = http.get(url).send().await.unwrap().json().await.unwrap();
        if listed.len() == 3 || Instant::now() > until {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(via_gateway.iter().map(|a| a["status"].as_u64()).collect::<Vec<_>>(), codes);
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"courier_webhook_deliveries_total{outcome="delivered"} 2"#), "{metrics}");
    assert!(metrics.contains("courier_webhook_latency_seconds_bucket"), "{metrics}");

    assert!(dispatcher.delivery_log().attempts(&silent).is_empty(), "no callback URL, no webhook");
    assert!(receiver.calls.lock().unwrap().iter().all(|c| c.body["subject"] != silent.to_string()));
    let data = &receiver.calls("flaky")[2].body;
    assert_eq!((data["type"].as_str(), data["data"]["result"]["echo"]["to"].as_str()), (Some("courier.command.completed"), Some("flaky")));
    stop.cancel();
    gateway_stop.cancel();
    dispatcher.wait().await.expect("clean stop");
}

/// A host name that resolves to loopback without being `localhost` (the machine's
/// own name usually does), so the *resolved*-address check is what refuses it.
fn loopback_name() -> String {
    use std::net::ToSocketAddrs;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
    let resolves_to_loopback = (host.as_str(), 80).to_socket_addrs().is_ok_and(|mut a| a.all(|a| a.ip().is_loopback()));
    if !host.is_empty() && resolves_to_loopback { host } else { "localhost".into() }
}

#[tokio::test(flavor = "multi_thread")]
async fn forbidden_addresses_are_refused_and_never_called() {
    let schedule = ms(&[300]);
    let t = topics("webhooks-ssrf", &schedule).await;
    let receiver = Receiver::start(vec![secret(NEW_SECRET)]).await;
    let mut cfg = config(&t, &schedule);
    cfg.url_policy = UrlPolicy::default();
    let stop = CancellationToken::new();
    let dispatcher = Dispatcher::start(cfg, stop.clone()).await.expect("dispatcher");
    let url = format!("http://{}:{}/ok", loopback_name(), receiver.addr.port());
    let event = publish_final(&t, &url).await;
    let log = eventually("the refusal", Duration::from_secs(30), || attempts(&dispatcher, event.command_id(), 1)).await;
    assert_eq!((log[0].outcome.as_str(), log[0].status), ("refused", None));
    assert!(log[0].error.as_deref().unwrap_or_default().contains("loopback"), "{:?}", log[0]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(receiver.calls.lock().unwrap().is_empty(), "a refused URL is never called");
    let dead = records(&t, &t.topics.webhooks_dlq, None).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].2.get_str("courier_dlq_reason").unwrap(), Some("url_refused"));
    stop.cancel();
}

/// URLs that reach Kafka without the gateway (a `ce_callbackurl` header sent
/// straight to the commands topic): the parser would drop the tab and newlines and
/// call `/ok`, so the policy refuses them on the raw text, and they are never sent.
#[tokio::test(flavor = "multi_thread")]
async fn callback_urls_with_control_characters_are_refused_and_never_called() {
    let schedule = ms(&[300]);
    let t = topics("webhooks-ctl", &schedule).await;
    let receiver = Receiver::start(vec![secret(NEW_SECRET)]).await;
    let stop = CancellationToken::new();
    let dispatcher = Dispatcher::start(config(&t, &schedule), stop.clone()).await.expect("dispatcher");
    let port = receiver.addr.port();
    let urls = [format!("http://127.0.0.1:{port}/ok\r\nX-Injected: 1"), format!("http://127.0.0.1:{port}/o\tk"), format!(" http://127.0.0.1:{port}/ok\n")];
    let mut events = Vec::new();
    for url in &urls {
        events.push(publish_final(&t, url).await);
    }
    for event in &events {
        let log = eventually("the refusal", Duration::from_secs(30), || attempts(&dispatcher, event.command_id(), 1)).await;
        assert_eq!((log[0].outcome.as_str(), log[0].status), ("refused", None), "{:?}", log[0]);
        assert!(log[0].error.as_deref().unwrap_or_default().contains("control characters"), "{:?}", log[0]);
    }
    let dead = records(&t, &t.topics.webhooks_dlq, None).await;
    assert_eq!(dead.len(), urls.len());
    assert!(dead.iter().all(|d| d.2.get_str("courier_dlq_reason").unwrap() == Some("url_refused")));
    assert!(receiver.calls.lock().unwrap().is_empty(), "a refused URL is never called");
    stop.cancel();
}

/// A current worker's final event carries its callback URL: delivered with no
/// snapshot anywhere. An older worker's (envelope 1.0, no URL on it) is looked up in
/// its id's status partition; and a final event that says it had no URL is not.
#[tokio::test(flavor = "multi_thread")]
async fn the_url_comes_with_the_event_or_from_the_status_partition() {
    let schedule = ms(&[300]);
    let t = topics("webhooks-url", &schedule).await;
    let receiver = Receiver::start(vec![secret(OLD_SECRET)]).await;
    let stop = CancellationToken::new();
    let _dispatcher = Dispatcher::start(config(&t, &schedule), stop.clone()).await.expect("dispatcher");
    let current = publish_final_by(&t, &receiver.url("current"), Writer::Current, false).await;
    let older = publish_final_by(&t, &receiver.url("older"), Writer::Older, true).await;
    // A current event without a URL, whose (stray) snapshot names one: not called.
    let mut none = publish_final_by(&t, &receiver.url("none"), Writer::Older, true).await;
    none.callback_url = None;
    none.id = courier::envelope::new_id();
    let (key, value, headers) = none.encode();
    common::produce_raw(&t, &t.topics.results, Some(&key), Some(&value), &headers, None).await;
    for (path, event) in [("current", &current), ("older", &older)] {
        eventually(path, Duration::from_secs(30), || (!receiver.acknowledged(path).is_empty()).then_some(())).await;
        let calls = receiver.calls(path);
        assert!(calls.iter().all(|c| c.verified && c.id == event.id.to_string()), "{path}: {calls:?}");
    }
    // The 1.0 copy of `none` is delivered (its snapshot names the URL); the 1.1 one is not.
    eventually("the older copy", Duration::from_secs(30), || (!receiver.acknowledged("none").is_empty()).then_some(())).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(receiver.calls("none").iter().all(|c| c.id != none.id.to_string()), "a final event saying it had no URL was called");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn each_profile_shapes_the_body() {
    let schedule = ms(&[300]);
    let t = topics("webhooks-profiles", &schedule).await;
    let receiver = Receiver::start(vec![secret(OLD_SECRET)]).await;
    let stop = CancellationToken::new();
    let mut dispatchers = Vec::new();
    for profile in [Profile::Cloudevents, Profile::Ouro, Profile::Runpod, Profile::Simple] {
        let mut cfg = config(&t, &schedule);
        cfg.group_id = format!("{}-{profile:?}", t.kafka.prefix);
        cfg.profile = profile;
        cfg.ouro_token = Some("ouro-secret-token".into());
        dispatchers.push(Dispatcher::start(cfg, stop.clone()).await.expect("dispatcher"));
    }
    let event = publish_final(&t, &receiver.url("profiles")).await;
    let calls = eventually("one delivery per profile", Duration::from_secs(30), || {
        let calls = receiver.calls("profiles");
        (calls.len() >= 4).then_some(calls)
    })
    .await;
    assert!(calls.iter().all(|c| c.verified && c.id == event.id.to_string()));
    let by = |key: &str| calls.iter().find(|c| c.body.get(key).is_some()).unwrap_or_else(|| panic!("no body with {key}: {calls:?}"));
    let ce = by("specversion");
    assert_eq!(ce.content_type, "application/cloudevents+json");
    assert_eq!((ce.body["id"].as_str(), ce.body["subject"].as_str()), (Some(event.id.to_string().as_str()), Some(event.command_id().to_string().as_str())));
    assert_eq!(ce.body["data"]["result"], json!({"echo": "hi"}));
    let ouro = by("ouro_action_id");
    assert_eq!(ouro.ouro_token.as_deref(), Some("ouro-secret-token"));
    assert_eq!((ouro.body["status"].as_str(), ouro.body["ouro_route_id"].as_str()), (Some("success"), Some("echo")));
    assert_eq!(ouro.body["response"], json!({"echo": "hi"}));
    let runpod = by("delayTime");
    assert_eq!((runpod.body["status"].as_str(), runpod.body["delayTime"].as_u64(), runpod.body["executionTime"].as_u64()), (Some("COMPLETED"), Some(3), Some(5)));
    assert_eq!(runpod.body["output"], json!({"echo": "hi"}));
    let simple = by("job_id");
    assert_eq!((simple.body["status"].as_str(), simple.content_type.as_str()), (Some("completed"), "application/json"));
    assert_eq!(simple.body["result"], json!({"echo": "hi"}));
    assert!(simple.body["timestamp"].is_string());
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_failing_too_long_is_disabled_with_an_exhausted_event() {
    let schedule = ms(&[200, 200, 200, 200, 200, 200]);
    let t = topics("webhooks-exhaust", &schedule).await;
    let receiver = Receiver::start(vec![secret(NEW_SECRET)]).await;
    let mut cfg = config(&t, &schedule);
    cfg.disable_after = Duration::from_millis(500);
    let stop = CancellationToken::new();
    let dispatcher = Dispatcher::start(cfg, stop.clone()).await.expect("dispatcher");
    let first = publish_final(&t, &receiver.url("fail")).await;
    let log = eventually("the attempt that crosses the window", Duration::from_secs(30), || {
        let list = dispatcher.delivery_log().attempts(&first.command_id());
        list.iter().any(|a| a.next.as_deref() == Some("dead-lettered: endpoint_exhausted")).then_some(list)
    })
    .await;
    assert!(log.len() >= 3 && log.len() <= 5, "about 500ms of 200ms retries: {log:?}");
    let exhausted = records(&t, &t.topics.webhooks_log, Some("courier.webhook.exhausted")).await;
    assert_eq!(exhausted.len(), 1);
    assert_eq!((exhausted[0].0.as_str(), exhausted[0].1["url"].as_str()), (receiver.url("fail").as_str(), Some(receiver.url("fail").as_str())));
    let calls = receiver.calls("fail").len();
    let second = publish_final(&t, &receiver.url("fail")).await;
    let log = eventually("the skipped delivery", Duration::from_secs(30), || attempts(&dispatcher, second.command_id(), 1)).await;
    assert_eq!(log[0].outcome, "skipped");
    assert_eq!(receiver.calls("fail").len(), calls, "a disabled endpoint is not called");
    let endpoint = records(&t, &t.topics.webhooks_endpoints, None).await;
    assert_eq!(endpoint.last().map(|e| e.1["disabled"]["reason"].clone()), Some(json!("exhausted")));
    stop.cancel();
}

/// A `courier webhooks run` child process; killed on drop.
struct DispatcherProc(std::process::Child);

impl Drop for DispatcherProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn courier(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_courier")).env("COURIER_INSECURE_NO_AUTH", "true").args(args).output().expect("run courier")
}

#[tokio::test(flavor = "multi_thread")]
async fn given_up_deliveries_are_dead_lettered_and_replay_delivers_them() {
    let schedule = ms(&[200, 400]);
    let t = topics("webhooks-replay", &schedule).await;
    let worker = common::WorkerProc::spawn(&t, "wh-replay", &[]);
    let receiver = Receiver::start(vec![secret(NEW_SECRET)]).await;
    let base = ["--bootstrap", &t.kafka.bootstrap, "--prefix", &t.kafka.prefix];
    let group = format!("{}-webhooks", t.kafka.prefix);
    let _dispatcher = DispatcherProc(
        std::process::Command::new(env!("CARGO_BIN_EXE_courier")).env("COURIER_INSECURE_NO_AUTH", "true")
            .args(["webhooks", "run"])
            .args(base)
            .args(["--group-id", &group, "--webhook-schedule", "200ms,400ms", "--listen", "127.0.0.1:0", "--allow-loopback"])
            .env("COURIER_WEBHOOK_SECRETS", format!("{OLD_SECRET},{NEW_SECRET}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn courier webhooks run"),
    );
    assert!(worker.wait_for_log("partitions assigned", Duration::from_secs(60)), "{}", worker.log_text());
    let client = Client::new(t.kafka.clone()).unwrap();
    let id = client.submit(NewCommand::new("echo", json!({"n": 1})).callback_url(receiver.url("down"))).await.unwrap();

    eventually("three failed attempts", Duration::from_secs(40), || (receiver.calls("down").len() >= 3).then_some(())).await;
    let mut dead = records(&t, &t.topics.webhooks_dlq, None).await;
    for _ in 0..5 {
        if !dead.is_empty() {
            break;
        }
        dead = records(&t, &t.topics.webhooks_dlq, None).await;
    }
    assert_eq!(dead.len(), 1, "one dead letter");
    assert_eq!(dead[0].0, id.to_string(), "keyed by command id");
    assert_eq!(dead[0].2.get_str("courier_dlq_reason").unwrap(), Some("schedule_exhausted"));
    assert_eq!(dead[0].2.get_str("courier_dlq_attempts").unwrap(), Some("3"));
    assert_eq!(receiver.calls("down").len(), 3);

    let dry = courier(&[&["webhooks", "replay", "--dry-run", "--id", &id.to_string(), "--webhook-schedule", "200ms,400ms"][..], &base[..]].concat());
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    let out = String::from_utf8_lossy(&dry.stdout);
    assert!(out.contains("would replay 1 delivery(ies)") && out.contains("schedule_exhausted"), "{out}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.calls("down").len(), 3, "a dry run sends nothing");

    *receiver.up.lock().unwrap() = true;
    let replay = courier(&[&["webhooks", "replay", "--all", "--webhook-schedule", "200ms,400ms"][..], &base[..]].concat());
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    let acked = eventually("the replayed delivery", Duration::from_secs(30), || {
        let acked = receiver.acknowledged("down");
        (!acked.is_empty()).then_some(acked)
    })
    .await;
    let calls = receiver.calls("down");
    assert_eq!(acked.get(&calls[0].id), Some(&1), "the same webhook-id, acknowledged once");
    assert_eq!(calls.len(), 4);
}

fn spawn_dispatcher(t: &common::TestTopics, group: &str) -> DispatcherProc {
    DispatcherProc(
        std::process::Command::new(env!("CARGO_BIN_EXE_courier")).env("COURIER_INSECURE_NO_AUTH", "true")
            .args(["webhooks", "run", "--bootstrap", &t.kafka.bootstrap, "--prefix", &t.kafka.prefix])
            .args(["--group-id", group, "--webhook-schedule", "300ms", "--listen", "127.0.0.1:0", "--allow-loopback"])
            .env("COURIER_WEBHOOK_SECRETS", NEW_SECRET)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn courier webhooks run"),
    )
}

/// At-least-once across a crash: a dispatcher SIGKILLed mid-run loses no delivery;
/// its successor redelivers what was not committed, with the same `webhook-id`s.
#[tokio::test(flavor = "multi_thread")]
async fn a_dispatcher_killed_mid_run_loses_no_delivery() {
    const N: usize = 400;
    let t = topics("webhooks-crash", &ms(&[300])).await;
    let worker = common::WorkerProc::spawn(&t, "wh-crash", &[]);
    let receiver = Receiver::start(vec![secret(NEW_SECRET)]).await;
    let group = format!("{}-webhooks", t.kafka.prefix);
    let first = spawn_dispatcher(&t, &group);
    assert!(worker.wait_for_log("partitions assigned", Duration::from_secs(60)), "{}", worker.log_text());
    let client = Client::new(t.kafka.clone()).unwrap();
    let commands = (0..N).map(|i| NewCommand::new("echo", json!({"i": i})).callback_url(receiver.url("many"))).collect();
    let ids = client.submit_batch(commands).await.unwrap();

    eventually("some deliveries before the crash", Duration::from_secs(60), || (receiver.calls("many").len() >= N / 4).then_some(())).await;
    drop(first); // SIGKILL: no drain, no final commit
    let before = receiver.acknowledged("many").len();
    let _second = spawn_dispatcher(&t, &group);
    let acked = eventually("every command's webhook", Duration::from_secs(90), || {
        let acked = receiver.acknowledged("many");
        (acked.len() == N).then_some(acked)
    })
    .await;
    let results = records(&t, &t.topics.results, None).await;
    let event_ids: std::collections::HashSet<String> = results
        .iter()
        .filter(|(.., h)| h.get_str(header_names::TYPE).ok().flatten() == Some("courier.command.completed"))
        .filter_map(|(.., h)| h.get_str(header_names::ID).ok().flatten().map(str::to_string))
        .collect();
    assert_eq!(event_ids.len(), N, "one completed event per command");
    assert!(acked.keys().all(|id| event_ids.contains(id)), "every webhook-id is a final event's id");
    let bodies: std::collections::HashSet<String> =
        receiver.calls("many").iter().filter_map(|c| c.body["subject"].as_str().map(str::to_string)).collect();
    assert!(ids.iter().all(|id| bodies.contains(&id.to_string())), "every command was called back");
    assert!(receiver.calls("many").iter().all(|c| c.verified));
    let duplicates: usize = acked.values().map(|n| n - 1).sum();
    eprintln!("{N} deliveries; {before} acknowledged before the kill; {duplicates} redelivered after it");
}

/// `courier webhooks run --store-dir`: callback URLs come from the on-disk view, and a
/// restarted dispatcher reads only the status records written since.
#[tokio::test(flavor = "multi_thread")]
async fn a_dispatcher_with_its_store_delivers_and_restarts_reading_only_the_tail() {
    let schedule = ms(&[300]);
    let t = topics("webhooks-store", &schedule).await;
    let worker = common::WorkerProc::spawn(&t, "wh-store", &[]);
    let receiver = Receiver::start(vec![secret(NEW_SECRET)]).await;
    let group = format!("{}-webhooks", t.kafka.prefix);
    let store = std::env::temp_dir().join(format!("courier-wh-store-{}", t.kafka.prefix));
    let _ = std::fs::remove_dir_all(&store);
    let log = std::env::temp_dir().join("courier-test-logs").join(format!("{}-dispatcher.log", t.kafka.prefix));
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_courier"))
            .env("COURIER_INSECURE_NO_AUTH", "true")
            .args(["webhooks", "run", "--bootstrap", &t.kafka.bootstrap, "--prefix", &t.kafka.prefix])
            .args(["--group-id", &group, "--webhook-schedule", "300ms", "--listen", "127.0.0.1:0", "--allow-loopback"])
            .arg("--store-dir")
            .arg(&store)
            .env("COURIER_WEBHOOK_SECRETS", NEW_SECRET)
            .env("RUST_LOG", "info,rdkafka=warn")
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn courier webhooks run")
    };
    let read_line = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines().find(|l| l.contains("status topic read to its end")).map(str::to_string)
    };
    assert!(worker.wait_for_log("partitions assigned", Duration::from_secs(60)), "{}", worker.log_text());
    let client = Client::new(t.kafka.clone()).unwrap();
    // Operations finished before the dispatcher ever ran: its first start reads them.
    for n in 0..20 {
        client.submit(NewCommand::new("echo", json!({ "before": n }))).await.unwrap();
    }
    let mut dispatcher = DispatcherProc(spawn());
    let first = eventually("the first catch-up", Duration::from_secs(60), read_line).await;
    assert!(first.contains("from=topic-start"), "{first}");
    let id = client.submit(NewCommand::new("echo", json!({ "n": 1 })).callback_url(receiver.url("one"))).await.unwrap();
    eventually("the first webhook", Duration::from_secs(30), || (!receiver.acknowledged("one").is_empty()).then_some(())).await;
    assert!(receiver.calls("one").iter().all(|c| c.verified && c.body.to_string().contains(&id.to_string())));

    let _ = std::process::Command::new("kill").args(["-TERM", &dispatcher.0.id().to_string()]).status();
    let _ = dispatcher.0.wait();
    let id2 = client.submit(NewCommand::new("echo", json!({ "n": 2 })).callback_url(receiver.url("two"))).await.unwrap();
    dispatcher = DispatcherProc(spawn());
    let again = eventually("the second catch-up", Duration::from_secs(60), read_line).await;
    assert!(again.contains("from=stored-positions"), "{again}");
    let read: u64 = again.split(" records_read=").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse().ok()).expect("records_read");
    assert!(read <= 6, "only the tail: the second command's snapshots, not the 21 operations before ({again})");
    eventually("the second webhook", Duration::from_secs(30), || (!receiver.acknowledged("two").is_empty()).then_some(())).await;
    assert!(receiver.calls("two").iter().all(|c| c.body.to_string().contains(&id2.to_string())));
    assert_eq!(receiver.acknowledged("one").len(), 1, "the first webhook was not sent again");
    drop(dispatcher);
    let _ = std::fs::remove_dir_all(&store);
}
