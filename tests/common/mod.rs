//! The one shared harness for tests against a real Apache Kafka broker.
//!
//! The broker comes from `COURIER_BOOTSTRAP` (set by `scripts/test.sh` and
//! `.ci/run`); when unset, `scripts/kafka.sh start` is run to start (or reuse) the
//! project's own broker. Every test gets its own topic prefix, so tests never see
//! each other's records.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command as Proc, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use courier::envelope::{HeaderMap, ResultEvent};
use courier::topics::{create_topics, TopicSpec, Topics};
use courier::KafkaArgs;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The broker's bootstrap address, starting the project's broker if needed.
pub fn bootstrap() -> String {
    static BOOTSTRAP: OnceLock<String> = OnceLock::new();
    BOOTSTRAP
        .get_or_init(|| {
            if let Ok(b) = std::env::var("COURIER_BOOTSTRAP") {
                if !b.trim().is_empty() {
                    return b;
                }
            }
            let script = repo().join("scripts/kafka.sh");
            let out = Proc::new("bash").arg(script).arg("start").stderr(Stdio::inherit()).output().expect("run scripts/kafka.sh");
            assert!(out.status.success(), "scripts/kafka.sh start failed");
            let text = String::from_utf8_lossy(&out.stdout);
            text.lines()
                .find_map(|l| l.strip_prefix("COURIER_BOOTSTRAP="))
                .expect("kafka.sh printed no COURIER_BOOTSTRAP")
                .trim()
                .to_string()
        })
        .clone()
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh, isolated set of Courier topics for one test.
pub struct TestTopics {
    pub kafka: KafkaArgs,
    pub topics: Topics,
    pub partitions: i32,
}

pub async fn fresh_topics(name: &str, partitions: i32) -> TestTopics {
    fresh_topics_with(name, partitions, courier::topics::default_retry_tiers()).await
}

/// Fresh topics with retry tier topics for these delays.
pub async fn fresh_topics_with(name: &str, partitions: i32, retry_tiers: Vec<Duration>) -> TestTopics {
    let suffix = &courier::envelope::new_id().simple().to_string()[20..];
    // COURIER_KAFKA_OPTS too, as every courier process the test starts reads it: how
    // scripts/test.sh runs the round trip against its SASL_SSL broker.
    let kafka = KafkaArgs::new(bootstrap(), format!("t-{name}-{suffix}")).with_env_opts().expect("COURIER_KAFKA_OPTS");
    let spec = TopicSpec { partitions, replication: 1, retention_hours: 24, retry_tiers, ..TopicSpec::default() };
    create_topics(&kafka, &spec).await.expect("create topics");
    TestTopics { topics: kafka.topics(), kafka, partitions }
}

/// A `courier worker` child process running the example handlers. Killed on drop.
pub struct WorkerProc {
    pub child: Child,
    pub id: String,
    pub log: PathBuf,
}

impl WorkerProc {
    pub fn spawn(t: &TestTopics, id: &str, extra: &[&str]) -> WorkerProc {
        Self::spawn_in_group(t, id, &worker_group(t), extra)
    }

    pub fn spawn_in_group(t: &TestTopics, id: &str, group: &str, extra: &[&str]) -> WorkerProc {
        Self::spawn_with_env(t, id, group, extra, &[])
    }

    /// Like [`WorkerProc::spawn_in_group`], with these environment variables set.
    pub fn spawn_with_env(t: &TestTopics, id: &str, group: &str, extra: &[&str], env: &[(&str, &str)]) -> WorkerProc {
        let dir = std::env::temp_dir().join("courier-test-logs");
        std::fs::create_dir_all(&dir).expect("log dir");
        let log = dir.join(format!("{}-{id}.log", t.kafka.prefix));
        let file = std::fs::File::create(&log).expect("log file");
        let child = Proc::new(env!("CARGO_BIN_EXE_courier")).env("COURIER_INSECURE_NO_AUTH", "true")
            .args(["worker", "--bootstrap", &t.kafka.bootstrap, "--prefix", &t.kafka.prefix])
            .args(["--group-id", group, "--worker-id", id])
            // The tests' default grace, unless `extra` sets its own (the flag may not repeat).
            .args(if extra.contains(&"--shutdown-grace") { &[][..] } else { &["--shutdown-grace", "5s"][..] })
            .args(extra)
            .env("RUST_LOG", std::env::var("COURIER_TEST_WORKER_LOG").unwrap_or_else(|_| "info,rdkafka=warn".into()))
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(file.try_clone().expect("dup log"))
            .stderr(file)
            .spawn()
            .expect("spawn courier worker");
        WorkerProc { child, id: id.to_string(), log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the worker's log contains `needle` (e.g. "partitions assigned").
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            let log = self.log_text();
            if log.contains(needle) {
                return true;
            }
            if log.contains("courier failed") {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Whether the process is still running (it has not exited, for any reason).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and returns at once (see [`WorkerProc::wait_exit`]).
    pub fn sigterm(&self) {
        let _ = Proc::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Proc::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An example handler service (examples/python-handler or examples/node-handler),
/// running on a free port; killed on drop. It prints `... listening on http://HOST:PORT`
/// as its one stdout line and answers `GET /calls` with what it saw.
pub struct HandlerProc {
    pub child: Child,
    pub port: u16,
    http: reqwest::Client,
}

impl HandlerProc {
    /// examples/python-handler/handler.py.
    pub fn python() -> HandlerProc {
        Self::start(&python(), "examples/python-handler/handler.py")
    }

    /// examples/node-handler/server.js, with `$COURIER_NODE`, else `node`.
    pub fn node() -> HandlerProc {
        let node = std::env::var("COURIER_NODE").ok().filter(|n| !n.trim().is_empty()).unwrap_or_else(|| "node".into());
        Self::start(&node, "examples/node-handler/server.js")
    }

    fn start(program: &str, script: &str) -> HandlerProc {
        use std::io::BufRead;
        let mut child = Proc::new(program)
            .arg(repo().join(script))
            .args(["--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {script} with {program:?}: {e}"));
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read the handler's first line");
        let port = line.trim().rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no port in {line:?}"));
        HandlerProc { child, port, http: reqwest::Client::new() }
    }

    /// What the service saw: `calls`, `hung_up`, `most_in_flight`, `callbacks`, `cancelled`.
    pub async fn seen(&self) -> serde_json::Value {
        let url = format!("http://127.0.0.1:{}/calls", self.port);
        self.http.get(url).send().await.expect("GET /calls").json().await.expect("calls JSON")
    }

    /// Every request the service got for command `id`, on any route.
    pub async fn calls_for(&self, id: uuid::Uuid) -> Vec<serde_json::Value> {
        let id = id.to_string();
        self.seen().await["calls"].as_array().expect("calls").iter().filter(|c| c["id"] == id.as_str()).cloned().collect()
    }

    /// The pushes of `route` for command `id`.
    pub async fn pushes(&self, route: &str, id: uuid::Uuid) -> Vec<serde_json::Value> {
        self.calls_for(id).await.into_iter().filter(|c| c["route"] == route).collect()
    }

    /// Waits until command `id` has been pushed on `route`; its first push.
    pub async fn pushed(&self, route: &str, id: uuid::Uuid, timeout: Duration) -> serde_json::Value {
        let until = Instant::now() + timeout;
        loop {
            if let Some(call) = self.pushes(route, id).await.into_iter().next() {
                return call;
            }
            assert!(Instant::now() < until, "{id} never reached {route}: {}", self.seen().await);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (up to 30 s) until what the service saw passes `ok`.
    pub async fn wait_until(&self, what: &str, mut ok: impl FnMut(&serde_json::Value) -> bool) -> serde_json::Value {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let seen = self.seen().await;
            if ok(&seen) {
                return seen;
            }
            assert!(Instant::now() < until, "the handler never saw {what}: {seen}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for HandlerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `courier gateway` child process on `port`; SIGKILLed on drop.
pub struct GatewayProc {
    pub child: Child,
    pub base: String,
    pub log: PathBuf,
}

impl GatewayProc {
    pub fn spawn(t: &TestTopics, name: &str, port: u16, extra: &[&str]) -> GatewayProc {
        let log = std::env::temp_dir().join("courier-test-logs").join(format!("{}-{name}.log", t.kafka.prefix));
        std::fs::create_dir_all(log.parent().expect("log dir")).expect("log dir");
        let file = std::fs::File::create(&log).expect("log file");
        let child = Proc::new(env!("CARGO_BIN_EXE_courier")).env("COURIER_INSECURE_NO_AUTH", "true")
            .args(["gateway", "--bootstrap", &t.kafka.bootstrap, "--prefix", &t.kafka.prefix])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env("RUST_LOG", "info,rdkafka=warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn courier gateway");
        GatewayProc { child, base: format!("http://127.0.0.1:{port}"), log }
    }

    /// Waits until it answers HTTP (it listens only after reading the status topic).
    pub async fn ready(&self, http: &reqwest::Client) {
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if http.get(format!("{}/metrics", self.base)).send().await.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("gateway never became ready: {}", std::fs::read_to_string(&self.log).unwrap_or_default());
    }

    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GatewayProc {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// A result event with where it sits in the results topic.
#[derive(Debug, Clone)]
pub struct Seen {
    pub partition: i32,
    pub offset: i64,
    pub event: ResultEvent,
}

/// (partition, offset, key, value, headers) of one record.
pub type RawRecord = (i32, i64, Option<Vec<u8>>, Option<Vec<u8>>, HeaderMap);

/// Reads a whole topic from the beginning with a group-less consumer.
///
/// Its own plain rdkafka consumer, not `courier::follow`, on purpose: the tests check
/// what is on the broker, byte for byte, so the reader they check with must not be
/// the code under test.
pub struct TopicReader {
    consumer: BaseConsumer,
}

impl TopicReader {
    pub fn new(t: &TestTopics, topic: &str) -> TopicReader {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &t.kafka.bootstrap)
            // Never joined; under the prefix a secured cluster's follower ACL covers.
            .set("group.id", format!("{}.follower-reader-{}", t.kafka.prefix, courier::envelope::new_id()))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed");
        // A secured cluster's credentials (tests/secure_kafka.rs), as the topics name them.
        for (k, v) in t.kafka.kafka_opts.iter().filter_map(|o| o.split_once('=')) {
            cfg.set(k, v);
        }
        let consumer: BaseConsumer = cfg.create().expect("reader");
        let mut tpl = TopicPartitionList::new();
        for p in 0..t.partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning).expect("tpl");
        }
        consumer.assign(&tpl).expect("assign");
        TopicReader { consumer }
    }

    /// Raw records: (partition, offset, key, value, headers).
    pub fn poll_raw(&self, budget: Duration) -> Vec<RawRecord> {
        let until = Instant::now() + budget;
        let mut out = Vec::new();
        while Instant::now() < until {
            match self.consumer.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => out.push((
                    m.partition(),
                    m.offset(),
                    m.key().map(<[u8]>::to_vec),
                    m.payload().map(<[u8]>::to_vec),
                    HeaderMap::from_kafka(m.headers()),
                )),
                Some(Err(e)) => panic!("reader error: {e}"),
                None => {
                    if !out.is_empty() {
                        break;
                    }
                }
            }
        }
        out
    }

    pub fn poll_results(&self, budget: Duration) -> Vec<Seen> {
        self.poll_raw(budget)
            .into_iter()
            .map(|(partition, offset, key, value, headers)| Seen {
                partition,
                offset,
                event: ResultEvent::decode(key.as_deref(), value.as_deref(), &headers).expect("results topic holds only result events"),
            })
            .collect()
    }
}

/// One record exactly as stored, header names included as raw bytes: rdkafka's own
/// header view assumes UTF-8 names (and panics on others), so this reads them through
/// librdkafka's C API. A header name cannot hold a NUL byte there.
#[derive(Debug, Clone)]
pub struct ExactRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl ExactRecord {
    pub fn from_message(m: &rdkafka::message::BorrowedMessage<'_>) -> ExactRecord {
        ExactRecord {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers: exact_headers(m),
        }
    }

    /// The last value of a header (a null value reads as empty).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().rev().find(|(n, _)| n == name.as_bytes()).map(|(_, v)| v.as_deref().unwrap_or_default())
    }

    /// The last value of a header as text, if it is UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The headers whose names are UTF-8, as Courier's own type (for decoding events).
    pub fn text_headers(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in &self.headers {
            if let Ok(name) = std::str::from_utf8(name) {
                map.insert(name, value.as_deref().unwrap_or_default());
            }
        }
        map
    }

    /// Decodes the record as a result event.
    pub fn result_event(&self) -> Result<ResultEvent, courier::envelope::DecodeError> {
        ResultEvent::decode(self.key.as_deref(), self.value.as_deref(), &self.text_headers())
    }
}

fn exact_headers(m: &rdkafka::message::BorrowedMessage<'_>) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    use rdkafka::bindings as rd;
    let mut hdrs: *mut rd::rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: `m.ptr()` is a live message for the borrow of `m`; librdkafka owns the
    // headers it points `hdrs` at, valid as long as the message.
    let err = unsafe { rd::rd_kafka_message_headers(m.ptr(), &mut hdrs) };
    if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || hdrs.is_null() {
        return Vec::new();
    }
    // SAFETY: `hdrs` is valid (above).
    let count = unsafe { rd::rd_kafka_header_cnt(hdrs) };
    (0..count)
        .filter_map(|i| {
            let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0usize);
            // SAFETY: `i` < count; the out pointers are valid for writes.
            let err = unsafe { rd::rd_kafka_header_get_all(hdrs, i, &mut name, &mut value, &mut size) };
            if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
                return None;
            }
            // SAFETY: librdkafka's header names are NUL-terminated and its values are
            // `size` bytes, both living as long as the message.
            let name = unsafe { std::ffi::CStr::from_ptr(name) }.to_bytes().to_vec();
            let value = (!value.is_null()).then(|| unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) }.to_vec());
            Some((name, value))
        })
        .collect()
}

impl TopicReader {
    /// Like [`TopicReader::poll_raw`], with every header name kept as raw bytes.
    pub fn poll_exact(&self, budget: Duration) -> Vec<ExactRecord> {
        let until = Instant::now() + budget;
        let mut out = Vec::new();
        while Instant::now() < until {
            match self.consumer.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => out.push(ExactRecord::from_message(&m)),
                Some(Err(e)) => panic!("reader error: {e}"),
                None if !out.is_empty() => break,
                None => {}
            }
        }
        out
    }

    /// High watermarks of every partition of `topic` now.
    pub fn ends(&self, topic: &str, partitions: i32) -> HashMap<i32, i64> {
        (0..partitions)
            .map(|p| {
                let (_, high) = self.consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).expect("watermarks");
                (p, high)
            })
            .collect()
    }

    /// Reads on (adding to `seen`) until this reader's position in every partition of
    /// `topic` has reached the high watermark seen at the call, or `timeout`. Returns
    /// whether it got there.
    pub fn read_to_end(&self, topic: &str, partitions: i32, seen: &mut Vec<ExactRecord>, timeout: Duration) -> bool {
        let ends = self.ends(topic, partitions);
        let until = Instant::now() + timeout;
        loop {
            let position = self.consumer.position().expect("position");
            let at = |p: i32| match position.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => 0,
            };
            if ends.iter().all(|(p, end)| at(*p) >= *end) {
                return true;
            }
            if Instant::now() > until {
                return false;
            }
            seen.extend(self.poll_exact(Duration::from_millis(200)));
        }
    }
}

/// Collects result events until `done` says so, or panics after `timeout`.
pub fn collect_results(t: &TestTopics, timeout: Duration, mut done: impl FnMut(&[Seen]) -> bool) -> Vec<Seen> {
    let reader = TopicReader::new(t, &t.topics.results);
    let until = Instant::now() + timeout;
    let mut all = Vec::new();
    while !done(&all) {
        assert!(Instant::now() < until, "timed out after {timeout:?} with {} events", all.len());
        all.extend(reader.poll_results(Duration::from_millis(500)));
    }
    all
}

/// Everything on the results topic now: reads up to the end offsets seen at the call.
pub fn read_all_results(t: &TestTopics) -> Vec<Seen> {
    let reader = TopicReader::new(t, &t.topics.results);
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for p in 0..t.partitions {
        let (_, high) = reader.consumer.fetch_watermarks(&t.topics.results, p, Duration::from_secs(10)).expect("watermarks");
        ends.insert(p, high);
    }
    let done = |seen: &[Seen]| {
        ends.iter().all(|(p, end)| *end == 0 || seen.iter().any(|s| s.partition == *p && s.offset + 1 >= *end))
    };
    let until = Instant::now() + Duration::from_secs(30);
    let mut all = Vec::new();
    while !done(&all) {
        assert!(Instant::now() < until, "could not read the results topic to its end");
        all.extend(reader.poll_results(Duration::from_millis(200)));
    }
    all
}

/// Final events grouped by command id.
pub fn finals_by_command(seen: &[Seen]) -> HashMap<uuid::Uuid, Vec<&Seen>> {
    let mut map: HashMap<uuid::Uuid, Vec<&Seen>> = HashMap::new();
    for s in seen.iter().filter(|s| s.event.state().is_final()) {
        map.entry(s.event.command_id()).or_default().push(s);
    }
    map
}

pub fn count_distinct_finals(seen: &[Seen]) -> usize {
    finals_by_command(seen).len()
}

/// Produces a record exactly as given (for poison and foreign-client tests).
pub async fn produce_raw(t: &TestTopics, topic: &str, key: Option<&[u8]>, value: Option<&[u8]>, headers: &HeaderMap, partition: Option<i32>) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    static PRODUCER: OnceLock<FutureProducer> = OnceLock::new();
    let producer = PRODUCER.get_or_init(|| {
        ClientConfig::new().set("bootstrap.servers", bootstrap()).set("linger.ms", "2").create().expect("producer")
    });
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers.to_kafka());
    record.key = key;
    record.payload = value;
    record.partition = partition;
    producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).expect("produce");
    let _ = t;
}

/// The Python interpreter for foreign-client scripts: `$COURIER_PYTHON` (scripts/test.sh
/// points it at a venv with tests/interop/python/requirements.txt), else `python3`.
pub fn python() -> String {
    std::env::var("COURIER_PYTHON").ok().filter(|p| !p.trim().is_empty()).unwrap_or_else(|| "python3".into())
}

/// Runs a child process to completion within `timeout`; on failure panics with its
/// output and, when given, the worker's log. Returns its stdout.
pub fn run_child(what: &str, cmd: &mut Proc, timeout: Duration, worker: Option<&WorkerProc>) -> String {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what} ({cmd:?}): {e}"));
    // Drained on threads so a chatty child never blocks on a full pipe.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (stdout, stderr) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    if !status.is_some_and(|s| s.success()) {
        let verdict = status.map_or_else(|| format!("killed after {timeout:?}"), |s| s.to_string());
        let log = worker.map(|w| format!("\n--- worker log ---\n{}", w.log_text())).unwrap_or_default();
        panic!("{what} failed ({verdict})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}{log}");
    }
    eprintln!("{what}: ok in {:.1?}", started.elapsed());
    stdout
}

/// Sum over partitions of (high watermark - committed offset) for a group.
pub fn group_lag(t: &TestTopics, group: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &t.kafka.bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("lag consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..t.partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).expect("committed offsets");
    committed
        .elements()
        .iter()
        .map(|e| {
            let (_, high) = consumer.fetch_watermarks(topic, e.partition(), Duration::from_secs(10)).expect("watermarks");
            match e.offset() {
                Offset::Offset(o) => high - o,
                _ => high,
            }
        })
        .sum()
}

/// Waits until the worker group has committed everything in `topic`.
pub fn wait_for_zero_lag(t: &TestTopics, group: &str, topic: &str, timeout: Duration) -> i64 {
    let until = Instant::now() + timeout;
    loop {
        let lag = group_lag(t, group, topic);
        if lag == 0 || Instant::now() > until {
            return lag;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The worker group used by [`WorkerProc::spawn`].
pub fn worker_group(t: &TestTopics) -> String {
    format!("{}-workers", t.kafka.prefix)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// GETs a metrics endpoint and returns the value of one sample line, if present.
pub fn scrape(port: u16, metric: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines().find(|l| l.starts_with(metric)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}
