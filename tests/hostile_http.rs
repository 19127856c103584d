//! A hostile client against a real `courier gateway` process on a real socket and a
//! real broker: every malformed, oversized, overflowing or wrongly-addressed request
//! is answered (never reset), with a 4xx (never a 5xx), a JSON error with a code
//! wherever a route exists, and not one record on any topic; silent, half-sent and
//! idle connections are closed within `--header-read-timeout`; and no secret given
//! to `gateway` or `webhooks run` shows up in their output, errors or `/metrics`.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command as Proc};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The header-read timeout the gateway under test runs with.
const HEAD_TIMEOUT: Duration = Duration::from_secs(1);

/// A `courier` child process with its output in a file; SIGKILLed on drop.
struct Courier {
    child: Child,
    log: std::path::PathBuf,
}

impl Courier {
    fn spawn(t: &common::TestTopics, name: &str, args: &[&str], env: &[(&str, &str)]) -> Courier {
        let log = std::env::temp_dir().join("courier-test-logs").join(format!("{}-{name}.log", t.kafka.prefix));
        std::fs::create_dir_all(log.parent().expect("log dir")).expect("log dir");
        let file = std::fs::File::create(&log).expect("log file");
        let child = Proc::new(env!("CARGO_BIN_EXE_courier")).env("COURIER_INSECURE_NO_AUTH", "true")
            .args(args)
            .args(["--bootstrap", &t.kafka.bootstrap, "--prefix", &t.kafka.prefix])
            .env_remove("COURIER_KAFKA_OPTS")
            .env("RUST_LOG", "debug")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(file.try_clone().expect("dup log"))
            .stderr(file)
            .spawn()
            .expect("spawn courier");
        Courier { child, log }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit on its own (it refused its arguments).
    fn exit_code(&mut self) -> Option<i32> {
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("courier did not exit: {}", self.output());
    }

    fn terminate(&mut self) {
        let _ = Proc::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.exit_code();
    }
}

impl Drop for Courier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway on a free port with a short header-read timeout; returns it with its address.
async fn gateway(t: &common::TestTopics, name: &str, extra: &[&str], env: &[(&str, &str)]) -> (Courier, String) {
    let addr = format!("127.0.0.1:{}", common::free_port());
    let timeout = format!("{}ms", HEAD_TIMEOUT.as_millis());
    let mut args = vec!["gateway", "--listen", &addr, "--header-read-timeout", &timeout, "--body-read-timeout", "2s"];
    args.extend_from_slice(extra);
    let gw = Courier::spawn(t, name, &args, env);
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        if http.get(format!("http://{addr}/metrics")).send().await.is_ok_and(|r| r.status().is_success()) {
            return (gw, addr);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("gateway never became ready: {}", gw.output());
}

/// Records on every topic of the test's prefix (commands, results, status, DLQ,
/// control, retry and webhook topics alike), by topic.
fn topic_counts(t: &common::TestTopics) -> BTreeMap<String, i64> {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &t.kafka.bootstrap).create().expect("consumer");
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10)).expect("metadata");
    let ours = format!("{}.", t.kafka.prefix);
    let mut counts = BTreeMap::new();
    for topic in metadata.topics().iter().filter(|m| m.name().starts_with(&ours)) {
        let total: i64 = topic
            .partitions()
            .iter()
            .map(|p| consumer.fetch_watermarks(topic.name(), p.id(), Duration::from_secs(10)).expect("watermarks").1)
            .sum();
        counts.insert(topic.name().to_string(), total);
    }
    assert!(counts.contains_key(&t.topics.commands) && counts.contains_key(&t.topics.control), "{counts:?}");
    counts
}

/// One answer read off a raw connection: status, head text, body text.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: String,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// Writes `request` on a fresh connection and reads until the server closes it: an
/// answer, not a reset, is required.
async fn raw(addr: &str, request: &[u8]) -> Raw {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write request");
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes)).await;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    match read {
        Err(_) => panic!("no answer (and no close) within 10 s to {:?}", String::from_utf8_lossy(&request[..request.len().min(80)])),
        Ok(Err(e)) => panic!("connection reset ({e}) after {text:?}"),
        Ok(Ok(_)) => {}
    }
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status line in {text:?}"));
    Raw { status, head: head.to_string(), body: body.to_string() }
}

/// Asserts a 4xx with the gateway's JSON error shape and, if given, this code.
fn assert_json_refusal(what: &str, status: u16, body: &Value, code: Option<&str>) {
    assert!((400..500).contains(&status), "{what}: status {status}, {body}");
    let got = body["error"]["code"].as_str();
    assert!(got.is_some_and(|c| !c.is_empty()), "{what}: no error code in {body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: no message in {body}");
    if let Some(code) = code {
        assert_eq!(got, Some(code), "{what}: {body}");
    }
}

/// Requests reqwest can make: (what, request, expected status, expected code).
fn reqwest_matrix(http: &reqwest::Client, base: &str) -> Vec<(&'static str, reqwest::RequestBuilder, u16, &'static str)> {
    let url = |path: &str| format!("{base}{path}");
    let json_body = |path: &str, body: String| http.post(url(path)).header("content-type", "application/json").body(body);
    let cmd = |v: Value| json_body("/v1/commands", v.to_string());
    let id = courier::envelope::new_id();
    vec![
        ("deadline_in past the end of time", cmd(json!({"type": "echo", "deadline_in": "9000000000000000s"})), 400, "invalid_deadline"),
        ("deadline_in of u64::MAX ms", cmd(json!({"type": "echo", "deadline_in": "18446744073709551615ms"})), 400, "invalid_deadline"),
        ("a batch item's deadline", json_body("/v1/batches", json!({"commands": [{"type": "echo"}, {"type": "echo", "deadline_in": "9000000000000000s"}]}).to_string()), 400, "invalid_batch"),
        ("RunPod ttl of 9e18 ms", json_body("/v2/echo/run", r#"{"input": {}, "policy": {"ttl": 9000000000000000000}}"#.into()), 400, "invalid_deadline"),
        ("RunPod ttl over u64", json_body("/v2/echo/run", r#"{"input": {}, "policy": {"ttl": 100000000000000000000000}}"#.into()), 400, "invalid_request"),
        ("a u64 that overflows", json_body("/v1/commands", r#"{"type": "sleep", "payload": {"ms": 99999999999999999999999}}"#.into()), 400, "invalid_payload"),
        ("an i64 that underflows", json_body("/v1/commands", r#"{"type": "sleep", "payload": {"ms": -99999999999999999999999}}"#.into()), 400, "invalid_payload"),
        ("malformed JSON", json_body("/v1/commands", r#"{"type": "echo", "#.into()), 400, "malformed_json"),
        ("invalid UTF-8", http.post(url("/v1/commands")).header("content-type", "application/json").body(b"{\"type\": \"echo\", \"key\": \"\xff\xfe\"}".to_vec()), 400, "malformed_json"),
        ("duplicate keys", json_body("/v1/commands", r#"{"type": "nope", "type": "echo"}"#.into()), 400, "malformed_json"),
        ("100,000 nested arrays", json_body("/v1/commands", "[".repeat(100_000)), 400, "malformed_json"),
        ("nested objects in a batch", json_body("/v1/batches", format!(r#"{{"commands": [{}]}}"#, r#"{"a":"#.repeat(50_000))), 400, "malformed_json"),
        ("a 10 MB body", json_body("/v1/commands", format!(r#"{{"type": "echo", "payload": "{}"}}"#, "x".repeat(10 << 20))), 413, "body_too_large"),
        ("text/plain", http.post(url("/v1/commands")).header("content-type", "text/plain").body(r#"{"type": "echo"}"#), 415, "unsupported_media_type"),
        ("a form", http.post(url("/v1/commands")).header("content-type", "application/x-www-form-urlencoded").body("type=echo"), 415, "unsupported_media_type"),
        ("XML to RunPod", http.post(url("/v2/echo/run")).header("content-type", "application/xml").body("<input/>"), 415, "unsupported_media_type"),
        ("multipart batch", http.post(url("/v1/batches")).header("content-type", "multipart/form-data; boundary=x").body("--x--"), 415, "unsupported_media_type"),
        ("GET /v1/commands", http.get(url("/v1/commands")), 405, "method_not_allowed"),
        ("DELETE an operation", http.delete(url(&format!("/v1/operations/{id}"))), 405, "method_not_allowed"),
        ("PUT /v1/batches", http.put(url("/v1/batches")), 405, "method_not_allowed"),
        ("DELETE a batch", http.delete(url("/v1/batches/b")), 405, "method_not_allowed"),
        ("GET RunPod run", http.get(url("/v2/echo/run")), 405, "method_not_allowed"),
        ("GET RunPod cancel", http.get(url(&format!("/v2/echo/cancel/{id}"))), 405, "method_not_allowed"),
        ("PATCH RunPod status", http.patch(url(&format!("/v2/echo/status/{id}"))), 405, "method_not_allowed"),
        ("GET purge-queue", http.get(url("/v2/echo/purge-queue")), 405, "method_not_allowed"),
        ("POST deliveries", http.post(url(&format!("/v1/operations/{id}/deliveries"))), 405, "method_not_allowed"),
        ("PUT /metrics", http.put(url("/metrics")), 405, "method_not_allowed"),
        ("OPTIONS", http.request(Method::OPTIONS, url("/v1/commands")), 405, "method_not_allowed"),
        ("an unknown route", http.get(url("/v3/anything")), 404, "not_found"),
        ("an unknown custom method", http.post(url(&format!("/v1/operations/{id}:explode"))), 404, "not_found"),
        ("a bad UUID", http.get(url("/v1/operations/not-a-uuid")), 404, "not_found"),
        ("a bad UUID to RunPod", http.get(url("/v2/echo/status/..%2F..%2Fetc%2Fpasswd")), 404, "not_found"),
        ("a bad UUID for deliveries", http.get(url("/v1/operations/nope/deliveries")), 400, "invalid_id"),
        ("an unknown RunPod endpoint", json_body("/v2/nope/run", "{}".into()), 404, "not_found"),
        ("page_size over u64", http.get(url("/v1/operations?page_size=99999999999999999999")), 400, "invalid_query"),
        ("a negative page_size", http.get(url("/v1/operations?page_size=-1")), 400, "invalid_query"),
        ("a huge ?wait=", http.get(url(&format!("/v1/operations/{id}?wait=99999999999999999999999h"))), 400, "invalid_wait"),
        ("?wait= of 1e400", http.get(url(&format!("/v1/operations/{id}?wait=1e400"))), 400, "invalid_wait"),
        ("an Idempotency-Key of 10 KB", cmd(json!({"type": "echo"})).header("Idempotency-Key", "k".repeat(10_000)), 400, "invalid_idempotency_key"),
        ("an Idempotency-Key with a tab", cmd(json!({"type": "echo"})).header("Idempotency-Key", "a\tb"), 400, "invalid_idempotency_key"),
        ("an Idempotency-Key in UTF-8", cmd(json!({"type": "echo"})).header("Idempotency-Key", reqwest::header::HeaderValue::from_bytes("clé".as_bytes()).expect("header")), 400, "invalid_idempotency_key"),
        ("a callback URL with CR/LF", cmd(json!({"type": "echo", "callback_url": "https://example.com/\r\nX-Injected: 1"})), 400, "invalid_callback_url"),
        ("a callback URL with a tab", cmd(json!({"type": "echo", "callback_url": "https://exa\tmple.com/"})), 400, "invalid_callback_url"),
        ("a trailing-dot localhost", cmd(json!({"type": "echo", "callback_url": "http://localhost./"})), 400, "invalid_callback_url"),
        ("loopback in hex", cmd(json!({"type": "echo", "callback_url": "http://0x7f.1/"})), 400, "invalid_callback_url"),
        ("loopback in decimal", cmd(json!({"type": "echo", "callback_url": "http://2130706433/"})), 400, "invalid_callback_url"),
        ("a mapped v6 loopback", cmd(json!({"type": "echo", "callback_url": "http://[::ffff:127.0.0.1]/"})), 400, "invalid_callback_url"),
        ("userinfo", cmd(json!({"type": "echo", "callback_url": "http://evil@127.0.0.1/"})), 400, "invalid_callback_url"),
        ("a RunPod webhook with LF", json_body("/v2/echo/run", json!({"input": {}, "webhook": "https://example.com/\nx"}).to_string()), 400, "invalid_callback_url"),
        ("a batch item's callback URL", json_body("/v1/batches", json!({"commands": [{"type": "echo", "callback_url": "http://127.1/"}]}).to_string()), 400, "invalid_batch"),
    ]
}

/// Requests only a raw socket can send: (what, bytes, expected status, JSON expected).
/// hyper answers unparseable heads itself (`400`, `431`), before any route, with
/// an empty body; everything it passes on gets the gateway's JSON.
fn raw_matrix() -> Vec<(&'static str, Vec<u8>, u16, bool)> {
    let req = |line: &str, headers: &str| format!("{line}\r\nHost: gw\r\nConnection: close\r\n{headers}\r\n").into_bytes();
    let big_header = format!("X-Big: {}\r\n", "a".repeat(100 * 1024));
    let many_headers = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect::<String>();
    vec![
        ("an unknown method", req("BREW /v1/commands HTTP/1.1", ""), 405, true),
        ("TRACE", req("TRACE /v1/operations HTTP/1.1", ""), 405, true),
        ("path traversal", req("GET /v1/../metrics HTTP/1.1", ""), 404, true),
        ("encoded traversal", req("GET /v1/operations/..%2f..%2fetc%2fpasswd HTTP/1.1", ""), 404, true),
        ("a path that is not UTF-8", req("GET /v2/%FF%FE/status/x HTTP/1.1", ""), 400, true),
        ("a query that is not UTF-8", req("GET /v1/operations?state=%FF HTTP/1.1", ""), 400, true),
        ("CR/LF in an Idempotency-Key", req("POST /v1/commands HTTP/1.1", "Content-Type: application/json\r\nContent-Length: 16\r\nIdempotency-Key: a\rb\r\n\r\n{\"type\":\"echo\"}"), 400, false),
        ("a control character in a header", req("POST /v1/commands HTTP/1.1", "Idempotency-Key: a\x01b\r\nContent-Length: 0\r\n"), 400, false),
        ("a 100 KB header", req("GET /v1/operations HTTP/1.1", &big_header), 431, false),
        ("200 headers", req("GET /v1/operations HTTP/1.1", &many_headers), 431, false),
        ("a negative Content-Length", req("POST /v1/commands HTTP/1.1", "Content-Length: -1\r\n"), 400, false),
        ("two Content-Lengths", req("POST /v1/commands HTTP/1.1", "Content-Length: 2\r\nContent-Length: 3\r\n"), 400, false),
        ("garbage", b"\x00\x01\x02 nonsense\r\n\r\n".to_vec(), 400, false),
        ("a body shorter than declared", b"POST /v1/commands HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"type\":".to_vec(), 408, true),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hostile_client_gets_answers_and_publishes_nothing() {
    let t = common::fresh_topics("hostile", 2).await;
    let (mut gw, addr) = gateway(&t, "gateway", &[], &[]).await;
    let base = format!("http://{addr}");
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let before = topic_counts(&t);

    let mut checked = 0;
    for (what, request, status, code) in reqwest_matrix(&http, &base) {
        let response = request.send().await.unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        let got = response.status().as_u16();
        let allow = response.headers().get("allow").map(|v| v.to_str().unwrap_or_default().to_string());
        let body: Value = response.json().await.unwrap_or_else(|e| panic!("{what}: body is not JSON: {e}"));
        assert_eq!(got, status, "{what}: {body}");
        assert_json_refusal(what, got, &body, Some(code));
        if got == 405 {
            assert!(allow.is_some_and(|a| !a.is_empty()), "{what}: a 405 says what is allowed");
        }
        checked += 1;
    }
    for (what, bytes, status, json) in raw_matrix() {
        let answer = raw(&addr, &bytes).await;
        assert_eq!(answer.status, status, "{what}: {answer:?}");
        if json {
            assert_json_refusal(what, answer.status, &answer.json(), None);
            assert!(answer.head.to_ascii_lowercase().contains("content-type: application/json"), "{what}: {answer:?}");
        }
        checked += 1;
    }
    assert_eq!(topic_counts(&t), before, "no refused request published anything");

    // A few good requests prove the counting sees what is published: 4 commands,
    // each with its queued snapshot, and nothing else.
    let good = [
        ("/v1/commands", json!({"type": "echo", "payload": {"n": 1}, "callback_url": "HTTPS://Example.COM:443/hook"})),
        ("/v1/batches", json!({"commands": [{"type": "echo"}, {"type": "echo", "deadline_in": "30s"}]})),
        ("/v2/echo/run", json!({"input": {"x": 1}, "policy": {"ttl": 60000}})),
    ];
    for (path, body) in good {
        let response = http.post(format!("{base}{path}")).json(&body).send().await.expect("good request");
        assert!(response.status().is_success(), "{path}: {}", response.status());
    }
    let after = topic_counts(&t);
    for (topic, count) in &after {
        let grew = count - before.get(topic).copied().unwrap_or(0);
        let expected = if *topic == t.topics.commands || *topic == t.topics.status { 4 } else { 0 };
        assert_eq!(grew, expected, "{topic}: {after:?} after {before:?}");
    }
    let reader = common::TopicReader::new(&t, &t.topics.commands);
    let commands = tokio::task::spawn_blocking(move || reader.poll_raw(Duration::from_secs(10))).await.unwrap();
    let urls: Vec<String> = commands.iter().filter_map(|(.., h)| h.get_str("ce_callbackurl").ok().flatten().map(str::to_string)).collect();
    assert_eq!(urls, ["https://example.com/hook"], "only the canonical form is stored");
    assert!(checked > 60, "{checked} cases");
    gw.terminate();
    let log = gw.output();
    assert!(!log.contains("panicked"), "{log}");
}

/// Reads from `stream` until the server closes it, within `bound`; returns how long it took.
async fn closed_within(stream: &mut TcpStream, bound: Duration) -> Duration {
    let started = Instant::now();
    let mut sink = Vec::new();
    let read = tokio::time::timeout(bound, stream.read_to_end(&mut sink)).await;
    assert!(read.is_ok(), "still open after {bound:?}");
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_half_sent_and_idle_connections_are_closed_within_the_bound() {
    let t = common::fresh_topics("hostile-idle", 1).await;
    let (mut gw, addr) = gateway(&t, "gateway-idle", &[], &[]).await;
    let bound = HEAD_TIMEOUT * 5;

    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let took = closed_within(&mut silent, bound).await;
    assert!(took >= HEAD_TIMEOUT / 2, "closed early, after {took:?}");

    let mut half = TcpStream::connect(&addr).await.unwrap();
    half.write_all(b"POST /v1/commands HTTP/1.1\r\nHost: gw\r\nContent-Ty").await.unwrap();
    closed_within(&mut half, bound).await;

    // A slowloris: one header byte at a time, forever, never finishing the head.
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /v1/operations HTTP/1.1\r\nX-Slow: ").await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        assert!(started.elapsed() < bound, "a trickled head still open after {bound:?}");
        if slow.write_all(b"a").await.is_err() {
            break;
        }
        match tokio::time::timeout(Duration::from_millis(100), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            _ => {}
        }
    }

    // Keep-alive: one answered request, then nothing: closed after the same bound.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n").await.unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    closed_within(&mut idle, bound).await;

    // The gateway still serves, and stops cleanly on SIGTERM.
    let ok = reqwest::get(format!("http://{addr}/metrics")).await.expect("still serving");
    assert!(ok.status().is_success());
    gw.terminate();
    assert!(gw.output().contains("gateway stopped"), "{}", gw.output());
}

/// A secret for the Kafka options: librdkafka takes `sasl.password` and
/// `ssl.key.password` on a PLAINTEXT connection and ignores them.
const KAFKA_SECRET: &str = "S3cr3t,with,commas";
const ENV_SECRET: &str = "Env5ecret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_output_errors_or_metrics() {
    let t = common::fresh_topics("hostile-secrets", 1).await;
    let kafka_flag = format!("sasl.password={KAFKA_SECRET}");
    let env_opts = format!(r"ssl.key.password={ENV_SECRET}\,tail");
    let env = [("COURIER_KAFKA_OPTS", env_opts.as_str())];
    let visible = |text: &str| [KAFKA_SECRET, "S3cr3t", ENV_SECRET].into_iter().find(|s| text.contains(s));

    // A running gateway with both: it connects (librdkafka accepts them) and never shows them.
    let (mut gw, addr) = gateway(&t, "gateway-secrets", &["--kafka-opt", &kafka_flag], &env).await;
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let accepted = http.post(format!("http://{addr}/v1/commands")).json(&json!({"type": "echo"})).send().await.unwrap();
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let metrics = http.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(visible(&metrics), None, "{metrics}");
    gw.terminate();
    assert_eq!(visible(&gw.output()), None, "{}", gw.output());

    // A running dispatcher with both and a good signing secret.
    let listen = format!("127.0.0.1:{}", common::free_port());
    let good = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let spec = courier::topics::TopicSpec { partitions: 1, replication: 1, retention_hours: 24, ..Default::default() };
    courier::topics::create_topics(&t.kafka, &spec).await.expect("webhook topics");
    let mut hooks = Courier::spawn(&t, "webhooks-secrets", &["webhooks", "run", "--listen", &listen, "--webhook-secret", good, "--kafka-opt", &kafka_flag], &env);
    let until = Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        if let Ok(r) = http.get(format!("http://{listen}/metrics")).send().await {
            break r.text().await.unwrap();
        }
        assert!(Instant::now() < until, "dispatcher never listened: {}", hooks.output());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(metrics.contains("courier_webhook"), "{metrics}");
    assert_eq!(visible(&metrics), None, "{metrics}");
    hooks.terminate();
    let out = hooks.output();
    assert_eq!(visible(&out), None, "{out}");
    assert!(!out.contains("MfKQ9r8"), "the signing secret is not logged: {out}");

    // Refused at start: malformed signing secrets by flag and by env, a Kafka option
    // without '=', a bad escape in the env var, an unknown property. Each error says
    // why, never the text.
    let bad_secret_env = [("COURIER_WEBHOOK_SECRETS", "whsec_S3cr3tEnvNotBase64!!")];
    // (case, arguments, environment, what the error says)
    type Case<'a> = (&'a str, Vec<&'a str>, &'a [(&'a str, &'a str)], &'a str);
    let cases: Vec<Case> = vec![
        ("secret without whsec_", vec!["webhooks", "run", "--webhook-secret", "S3cr3tNoPrefix"], &[], "whsec_"),
        ("secret not base64", vec!["webhooks", "run", "--webhook-secret", good, "--webhook-secret", "whsec_S3cr3t!!!"], &[], "base64"),
        ("secret from env", vec!["webhooks", "run"], &bad_secret_env, "base64"),
        ("kafka option without '='", vec!["gateway", "--kafka-opt", "S3cr3tPastedAlone"], &[], "no '='"),
        ("bad escape in env", vec!["gateway"], &[("COURIER_KAFKA_OPTS", r"sasl.password=S3cr3t\x")], "backslash"),
        ("unknown property", vec!["gateway", "--kafka-opt", "sasl.pasword=S3cr3tTypo"], &[], "sasl.pasword"),
        ("invalid value", vec!["worker", "--kafka-opt", "acks=S3cr3tAcks"], &[], "acks"),
    ];
    for (i, (what, args, env, reason)) in cases.into_iter().enumerate() {
        let mut refused = Courier::spawn(&t, &format!("refused-{i}"), &args, env);
        let code = refused.exit_code();
        let out = refused.output();
        assert_ne!(code, Some(0), "{what}: {out}");
        assert!(out.contains(reason), "{what}: the error says why: {out}");
        assert_eq!(visible(&out), None, "{what}: {out}");
        assert!(!out.contains("panicked"), "{what}: {out}");
    }

    // --help shows no env value of a secret.
    let help = Proc::new(env!("CARGO_BIN_EXE_courier")).env("COURIER_INSECURE_NO_AUTH", "true")
        .args(["webhooks", "run", "--help"])
        .env("COURIER_WEBHOOK_SECRETS", good)
        .env("COURIER_OURO_WEBHOOK_TOKEN", "S3cr3tToken")
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--webhook-secret") && !help.contains("MfKQ9r8") && !help.contains("S3cr3tToken"), "{help}");
}
