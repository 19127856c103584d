//! The gateway's operations view on disk (`--store-dir`), with a real `courier
//! gateway` process over a status topic loaded directly (as many finished operations
//! as `COURIER_STORE_TEST_OPS` says, 20,000 by default; the README's figures come
//! from running this with millions).
//!
//! 1. From an empty store it reads the whole topic; every operation answers, result
//!    and all.
//! 2. Restarted with its store (after SIGTERM, and after SIGKILL) it reads only what
//!    the topic got since, and answers for old and new operations alike; a tombstone
//!    written meanwhile makes its operation `404`.
//! 3. An `Idempotency-Key` accepted before a restart still replays after it, and a
//!    different body with it is still `422`: the keys are in the store too.
//! 4. Three gateways of a group (`--group`) over the same topic, views in memory:
//!    each holds only its share (the shares add up to the whole), every operation
//!    answers through any of them, and each starts faster and smaller than one
//!    gateway holding everything.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command as Proc, Stdio};
use std::time::{Duration, Instant};

use courier::envelope::{OperationSnapshot, State, Timing};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use uuid::Uuid;

/// A gateway process over `dir`; killed on drop.
struct StoreGateway {
    child: Child,
    base: String,
    log: PathBuf,
}

impl StoreGateway {
    fn start(t: &common::TestTopics, dir: &Path, name: &str) -> StoreGateway {
        Self::start_with(t, Some(dir), name)
    }

    /// `dir: None`: the view in memory, for comparison.
    fn start_with(t: &common::TestTopics, dir: Option<&Path>, name: &str) -> StoreGateway {
        Self::spawn(t, dir, name, &[])
    }

    fn spawn(t: &common::TestTopics, dir: Option<&Path>, name: &str, extra: &[&str]) -> StoreGateway {
        let log = std::env::temp_dir().join("courier-test-logs").join(format!("{}-{name}.log", t.kafka.prefix));
        std::fs::create_dir_all(log.parent().expect("log dir")).expect("log dir");
        let port = common::free_port();
        let child = Proc::new(env!("CARGO_BIN_EXE_courier"))
            .env("COURIER_INSECURE_NO_AUTH", "true")
            .args(["gateway", "--bootstrap", &t.kafka.bootstrap, "--prefix", &t.kafka.prefix])
            .args(["--listen", &format!("127.0.0.1:{port}"), "--store-cache", "16MB"])
            .args(dir.map(|d| vec![std::ffi::OsStr::new("--store-dir"), d.as_os_str()]).unwrap_or_default())
            .args(extra)
            .env("RUST_LOG", "info,rdkafka=warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn courier gateway");
        StoreGateway { child, base: format!("http://127.0.0.1:{port}"), log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for it to listen; how many status records it read first, from where,
    /// and how long that took.
    async fn ready(&mut self, http: &reqwest::Client) -> (u64, String, Duration) {
        let started = Instant::now();
        let until = started + Duration::from_secs(300);
        while Instant::now() < until {
            if http.get(format!("{}/healthz", self.base)).send().await.is_ok_and(|r| r.status().is_success()) {
                let log = self.log_text();
                let line = log.lines().find(|l| l.contains("status topic read to its end")).unwrap_or_else(|| panic!("no catch-up line: {log}"));
                let field = |name: &str| line.split(&format!(" {name}=")).nth(1).and_then(|r| r.split(' ').next()).unwrap_or_default().to_string();
                let read = field("records_read").parse().unwrap_or_else(|_| panic!("records_read in {line}"));
                return (read, field("from"), started.elapsed());
            }
            assert!(self.child.try_wait().expect("gateway").is_none(), "gateway exited: {}", self.log_text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("gateway never listened: {}", self.log_text());
    }

    fn stop(mut self, signal: &str) {
        let _ = Proc::new("kill").args([signal, &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }

    fn peak_rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0)
    }
}

impl Drop for StoreGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `n` finished operations (256-byte results) straight to the status topic,
/// as workers would have; their ids.
fn load(t: &common::TestTopics, n: usize) -> Vec<Uuid> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &t.kafka.bootstrap)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .create()
        .expect("producer");
    let now = chrono::Utc::now();
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = courier::envelope::new_id();
        let snapshot = OperationSnapshot {
            command_id: id,
            command_type: "echo".into(),
            state: State::Completed,
            key: Some(format!("k{}", i % 1000)),
            key_base64: None,
            attempt: 1,
            progress: None,
            result: Some(json!({ "echo": "x".repeat(240), "n": i })),
            error: None,
            timing: Timing { queued_ms: 1, execution_ms: 1, attempts: 1 },
            created: now,
            updated: now,
            callback_url: None,
            idempotency_key: None,
            request_hash: None,
            batch_id: None,
            tenant: None,
            worker: Some("loader".into()),
            deferred: None,
        };
        let (key, value, _) = snapshot.encode("//test/loader");
        let mut record = BaseRecord::to(&t.topics.status).key(&key).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(10));
                }
            }
        }
        ids.push(id);
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    ids
}

fn tombstone(t: &common::TestTopics, id: Uuid) {
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &t.kafka.bootstrap).create().expect("producer");
    let key = id.to_string();
    producer.send(BaseRecord::<str, [u8]>::to(&t.topics.status).key(&key)).map_err(|(e, _)| e).expect("tombstone");
    producer.flush(Duration::from_secs(10)).expect("flush");
}

async fn get(http: &reqwest::Client, base: &str, id: Uuid) -> (reqwest::StatusCode, Value) {
    let r = http.get(format!("{base}/v1/operations/{id}")).send().await.expect("get");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Every id answers `200`, done, with its result (a sample of them when there are many).
async fn all_answer(http: &reqwest::Client, base: &str, ids: &[Uuid]) -> Vec<Duration> {
    let step = (ids.len() / 2000).max(1);
    let mut latencies = Vec::new();
    for id in ids.iter().step_by(step) {
        let asked = Instant::now();
        let (status, op) = get(http, base, *id).await;
        latencies.push(asked.elapsed());
        assert_eq!(status, reqwest::StatusCode::OK, "{id}: {op}");
        assert!(op["done"] == true && op["response"]["echo"].as_str().is_some_and(|e| e.len() == 240), "{id}: {op}");
    }
    latencies.sort();
    latencies
}

fn p99(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() * 99 / 100).min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_with_its_store_restarts_reading_only_the_tail() {
    let n: usize = std::env::var("COURIER_STORE_TEST_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let t = common::fresh_topics("store", 3).await;
    let dir = std::env::temp_dir().join(format!("courier-store-{}", t.kafka.prefix));
    let _ = std::fs::remove_dir_all(&dir);
    let http = reqwest::Client::new();
    let loaded = Instant::now();
    let ids = load(&t, n);
    eprintln!("loaded {n} operations in {:?}", loaded.elapsed());

    // 1. An empty store reads it all.
    let mut gw = StoreGateway::start(&t, &dir, "store-1");
    let (read, from, took) = gw.ready(&http).await;
    assert_eq!((read, from.as_str()), (n as u64, "topic-start"), "{}", gw.log_text());
    let latencies = all_answer(&http, &gw.base, &ids).await;
    eprintln!("empty store: {n} operations read in {took:?}; GET p99 {:?}; peak RSS {} MB", p99(&latencies), gw.peak_rss_kb() / 1024);
    let body = json!({ "type": "echo", "payload": { "once": true } });
    let first = http.post(format!("{}/v1/commands", gw.base)).header("Idempotency-Key", "store-key-1").json(&body).send().await.expect("post");
    assert_eq!(first.status(), reqwest::StatusCode::ACCEPTED);
    let first: Value = first.json().await.expect("operation");
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.stop("-TERM");
    // The same topic read into memory, side by side (up to a size that fits).
    let memory_max: usize = std::env::var("COURIER_STORE_TEST_MEMORY_MAX").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    if n <= memory_max {
        let mut mem = StoreGateway::start_with(&t, None, "store-memory");
        let (read, _, took) = mem.ready(&http).await;
        let latencies = all_answer(&http, &mem.base, &ids).await;
        eprintln!("in memory: {read} records read in {took:?}; GET p99 {:?}; peak RSS {} MB", p99(&latencies), mem.peak_rss_kb() / 1024);
        mem.stop("-KILL");
    }

    // 2. Restarts read the tail only: what was written while it was down.
    let more = load(&t, 100);
    tombstone(&t, ids[0]);
    let mut gw = StoreGateway::start(&t, &dir, "store-2");
    let (read, from, took) = gw.ready(&http).await;
    assert_eq!(from, "stored-positions", "{}", gw.log_text());
    assert_eq!(read, 101, "the 100 new snapshots and the tombstone, nothing older: {}", gw.log_text());
    eprintln!("restart with the store in place: {read} records read in {took:?}");
    all_answer(&http, &gw.base, &ids[1..]).await;
    all_answer(&http, &gw.base, &more).await;
    assert_eq!(get(&http, &gw.base, ids[0]).await.0, reqwest::StatusCode::NOT_FOUND, "the tombstoned operation is gone");

    // 3. The key survives the restart: replayed, and nothing new sent.
    let again = http.post(format!("{}/v1/commands", gw.base)).header("Idempotency-Key", "store-key-1").json(&body).send().await.expect("post");
    assert!(again.headers().contains_key("idempotent-replayed"), "{:?}", again.headers());
    let again: Value = again.json().await.expect("operation");
    assert_eq!(again["name"], first["name"], "the same operation");
    let other = http.post(format!("{}/v1/commands", gw.base)).header("Idempotency-Key", "store-key-1").json(&json!({ "type": "echo", "payload": { "other": 1 } })).send().await.expect("post");
    assert_eq!(other.status(), reqwest::StatusCode::UNPROCESSABLE_ENTITY);

    // SIGKILL: whatever its last transactions were, the next start is whole again.
    let last = load(&t, 50);
    tokio::time::sleep(Duration::from_millis(500)).await;
    gw.stop("-KILL");
    let mut gw = StoreGateway::start(&t, &dir, "store-3");
    let (read, _, _) = gw.ready(&http).await;
    assert!(read <= 50, "at most what came after the last checkpoint: {read}");
    all_answer(&http, &gw.base, &last).await;
    all_answer(&http, &gw.base, &more).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `courier_gateway_operations_tracked` of the gateway at `base`.
async fn tracked(http: &reqwest::Client, base: &str) -> u64 {
    let text = http.get(format!("{base}/metrics")).send().await.expect("metrics").text().await.expect("metrics text");
    text.lines().find_map(|l| l.strip_prefix("courier_gateway_operations_tracked ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn gateways_of_a_group_each_hold_a_share() {
    let n: usize = std::env::var("COURIER_STORE_TEST_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let t = common::fresh_topics("store-group", 6).await;
    let http = reqwest::Client::new();
    let ids = load(&t, n);
    let group = format!("{}-share", t.kafka.prefix);
    let started = Instant::now();
    let mut members: Vec<StoreGateway> = (1..=3).map(|i| StoreGateway::spawn(&t, None, &format!("share-{i}"), &["--group", &group])).collect();
    // Settled: every operation held by exactly one member, for a second.
    let until = started + Duration::from_secs(300);
    let mut shares;
    loop {
        shares = Vec::new();
        for m in &members {
            shares.push(if http.get(format!("{}/healthz", m.base)).send().await.is_ok() { tracked(&http, &m.base).await } else { 0 });
        }
        if shares.iter().sum::<u64>() == n as u64 && shares.iter().all(|s| *s > 0) {
            break;
        }
        for m in &mut members {
            assert!(m.child.try_wait().expect("gateway").is_none(), "gateway exited: {}", m.log_text());
        }
        assert!(Instant::now() < until, "the shares never added up to {n}: {shares:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = started.elapsed();
    assert!(shares.iter().all(|s| (*s as usize) < n), "one member holds everything: {shares:?}");
    let rss: Vec<u64> = members.iter().map(|m| m.peak_rss_kb() / 1024).collect();
    eprintln!("group of 3 over {n} operations: shares {shares:?} settled in {took:?}; peak RSS {rss:?} MB");
    for (i, m) in members.iter().enumerate() {
        let latencies = all_answer(&http, &m.base, &ids[i * ids.len() / 3..(i + 1) * ids.len() / 3]).await;
        eprintln!("through member {i}: GET p99 {:?}", p99(&latencies));
    }
    for m in members {
        m.stop("-TERM");
    }
}
