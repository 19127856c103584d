//! `courier bench --peers`: Courier's `courier worker` process beside the Java workers
//! users would pick instead (`bench/peers/`: a raw kafka-clients loop, Spring Kafka,
//! Spring with transactions, Parallel Consumer), each a separate process doing the same
//! job on the same broker with the same records.
//!
//! Per worker and round: fresh topics, the same commands produced to its commands
//! topic (valid Courier commands; ids that encode their sequence number, keys
//! `k<seq % keys>`), the worker started as a process, its results read from the
//! beginning until every command has one. Throughput is N over the span between the
//! first and last result record's timestamps, as in every other scenario, so start-up
//! and group joins are outside it. CPU is sampled from `/proc/<pid>/stat` of the worker
//! and of the broker while the run lasts and interpolated at the span's two ends, so
//! "CPU per command" is the CPU spent inside the span over N. Peak RSS is the worker's
//! `VmHWM` when its last result arrived.
//!
//! Every output is checked: one result per command (duplicates counted), keyed like its
//! command, and per key in command order. A worker that fails a check is reported as
//! failed, with the counts, not left out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::scenarios::{peak_rss_mb, produce_commands};
use super::{median, scoped, BenchConfig, BenchError};
use crate::envelope::{HeaderMap, NewCommand};
use crate::follow::{Next, Reader, Seen, StartAt};
use crate::kafka::{producer_config, KafkaArgs};

/// The workers `--workers` can name, in the order they run within a round.
pub const WORKERS: [&str; 6] = ["raw-java", "spring", "spring-eos", "pc", "courier", "courier-eos"];

/// The workers of the slow scenario (the raw loop runs one handler at a time: 50/s).
const SLOW_WORKERS: [&str; 3] = ["spring", "pc", "courier"];

/// The slow scenario's handler time.
const SLOW_HANDLER_MS: u64 = 20;

/// A worker is given this long without a new result before it counts as stalled.
const IDLE: Duration = Duration::from_secs(60);

/// What one worker did in one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Measured {
    pub worker: String,
    pub commands: usize,
    pub cps: f64,
    /// Worker CPU inside the span, per command, in microseconds.
    pub worker_cpu_us: f64,
    /// Broker CPU inside the span, per command, in microseconds (0 when the broker's
    /// pid is unknown).
    pub broker_cpu_us: f64,
    pub peak_rss_mb: f64,
    /// Results beyond the first for the same command.
    pub duplicates: usize,
    /// Commands without a result.
    pub missing: usize,
    /// Results whose key is not their command's.
    pub miskeyed: usize,
    /// Results that came before the result of an earlier command of the same key.
    pub out_of_order: usize,
    /// Why the run does not count, if it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

impl Measured {
    fn ok(&self) -> bool {
        self.failed.is_none() && self.missing == 0 && self.miskeyed == 0 && self.out_of_order == 0
    }
}

/// Everything `--peers` measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeersReport {
    pub commands: usize,
    pub keys: usize,
    pub size: usize,
    pub partitions: i32,
    pub rounds: u32,
    /// Per round, every worker's figures in the order run.
    pub per_round: Vec<Vec<Measured>>,
    /// The slow scenario (20 ms handler), one run per worker.
    pub slow: Vec<Measured>,
    pub slow_commands: usize,
    /// Round trip at a low steady rate, one run per worker.
    pub latency: Vec<LatencyMeasured>,
    /// Workers that were asked for but could not run here, with why.
    pub skipped: Vec<String>,
}

/// Submit-to-result round trips of one worker at a low steady rate.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencyMeasured {
    pub worker: String,
    pub rate: f64,
    pub commands: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Commands without a result within 30 s of the last send.
    pub missing: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

/// Runs the side-by-side comparison.
pub async fn run(cfg: &BenchConfig, mut progress: impl FnMut(&str)) -> Result<PeersReport, BenchError> {
    let wanted: Vec<String> = if cfg.workers.is_empty() { WORKERS.iter().map(|w| w.to_string()).collect() } else { cfg.workers.clone() };
    if let Some(bad) = wanted.iter().find(|w| !WORKERS.contains(&w.as_str())) {
        return Err(BenchError::Stalled(format!("--workers: unknown worker {bad:?}; known: {}", WORKERS.join(", "))));
    }
    let mut report = PeersReport {
        commands: cfg.messages,
        keys: cfg.keys,
        size: cfg.size,
        partitions: cfg.partitions,
        rounds: cfg.rounds,
        slow_commands: cfg.slow_commands,
        ..PeersReport::default()
    };
    let java = if wanted.iter().any(|w| !w.starts_with("courier")) {
        progress("building bench/peers (mvn package)");
        match build_peers(&cfg.peers_dir) {
            Ok(java) => Some(java),
            Err(why) => {
                report.skipped.push(format!("the Java peers: {why}"));
                None
            }
        }
    } else {
        None
    };
    let runnable: Vec<&str> = wanted.iter().map(String::as_str).filter(|w| w.starts_with("courier") || java.is_some()).collect();
    let env = Env { cfg, java: java.as_ref(), broker_pid: cfg.broker_pid.or_else(broker_pid) };
    if env.broker_pid.is_none() {
        report.skipped.push("broker CPU: no broker pid (--broker-pid, or .kafka/pid of scripts/kafka.sh)".into());
    }
    let workload = Workload::noop(cfg.messages, cfg.keys, cfg.size);
    for round in (1..=cfg.rounds).filter(|_| cfg.wants("throughput")) {
        let mut measured = Vec::new();
        for worker in &runnable {
            progress(&format!("round {round}/{}: {worker}, {} commands", cfg.rounds, cfg.messages));
            measured.push(env.measure(worker, &workload).await?);
        }
        report.per_round.push(measured);
    }
    if cfg.slow_commands > 0 && cfg.wants("slow") {
        let workload = Workload::slow(cfg.slow_commands, cfg.keys);
        for worker in runnable.iter().filter(|w| SLOW_WORKERS.contains(w)) {
            progress(&format!("slow: {worker}, {SLOW_HANDLER_MS} ms handler, {} commands", cfg.slow_commands));
            report.slow.push(env.measure(worker, &workload).await?);
        }
    }
    if cfg.latency_commands > 0 && cfg.wants("latency") {
        let workload = Workload::noop(cfg.latency_commands, cfg.keys, cfg.size);
        for worker in &runnable {
            progress(&format!("latency: {worker}, {} commands at {}/s", cfg.latency_commands, cfg.latency_rate));
            report.latency.push(env.latency(worker, &workload, cfg.latency_rate).await?);
        }
    }
    Ok(report)
}

/// The commands of one scenario, the same bytes for every worker.
struct Workload {
    commands: usize,
    keys: usize,
    command_type: &'static str,
    /// The command payload for a sequence number.
    payload: Box<dyn Fn(usize) -> Value + Send + Sync>,
    handler_ms: u64,
}

impl Workload {
    /// Courier's `echo` handler; the peers echo whatever they get.
    fn noop(commands: usize, keys: usize, size: usize) -> Self {
        let pad = "x".repeat(size.saturating_sub(24));
        Workload { commands, keys, command_type: "echo", payload: Box::new(move |seq| json!({ "seq": seq, "pad": pad })), handler_ms: 0 }
    }

    /// Courier's `sleep` handler for 20 ms in one step; the peers sleep `--handler-ms`.
    fn slow(commands: usize, keys: usize) -> Self {
        let payload = Box::new(|seq| json!({ "seq": seq, "ms": SLOW_HANDLER_MS, "steps": 1 }));
        Workload { commands, keys, command_type: "sleep", payload, handler_ms: SLOW_HANDLER_MS }
    }

    fn key(&self, seq: usize) -> String {
        format!("k{}", seq % self.keys.max(1))
    }

    /// Command `seq` of run `run`: its key, value and headers, the same bytes for
    /// every worker.
    fn command(&self, run: u64, seq: usize) -> (String, Vec<u8>, HeaderMap) {
        let key = self.key(seq);
        let mut command = NewCommand::new(self.command_type, (self.payload)(seq)).key(key.clone()).into_command("//bench/peers");
        command.id = command_id(run, seq);
        let (_, value, headers) = command.encode();
        (key, value, headers)
    }
}

/// A fresh run id: the high half of every command id of one run.
fn run_id() -> u64 {
    crate::envelope::new_id().as_u64_pair().1
}

/// A command id that carries its sequence number, so a result names its command
/// without a table of every id sent: the high half marks the run, the low half is seq.
fn command_id(run: u64, seq: usize) -> Uuid {
    Uuid::from_u64_pair(run, seq as u64)
}

fn seq_of(id: &str, run: u64) -> Option<usize> {
    let (hi, lo) = Uuid::parse_str(id).ok()?.as_u64_pair();
    (hi == run).then_some(lo as usize)
}

/// Whether a record on the results topic is a command's result: for Courier, a
/// final event (not `started` or `progress`); every peer record is one.
fn is_result(record: &Seen<'_>, courier: bool) -> bool {
    !courier || crate::envelope::is_final_record(record.kafka_headers())
}

/// The sequence number of the command of run `run` that a result names. Courier's
/// final event names it `command_id`; the peers, `id`.
fn named_seq(record: &Seen<'_>, courier: bool, run: u64) -> Option<usize> {
    let value: Value = serde_json::from_slice(record.value()?).ok()?;
    seq_of(value.get(if courier { "command_id" } else { "id" })?.as_str()?, run)
}

struct Env<'a> {
    cfg: &'a BenchConfig,
    java: Option<&'a Java>,
    broker_pid: Option<u32>,
}

impl Env<'_> {
    /// One worker through one workload on topics of its own, deleted after.
    async fn measure(&self, worker: &str, workload: &Workload) -> Result<Measured, BenchError> {
        scoped(self.cfg, &format!("peers-{worker}"), |args| async move { self.measure_on(worker, workload, &args).await }).await
    }

    async fn measure_on(&self, worker: &str, workload: &Workload, args: &KafkaArgs) -> Result<Measured, BenchError> {
        let run = run_id();
        produce_commands(args, workload.commands, |seq| {
            let (key, value, headers) = workload.command(run, seq);
            (key, value, Some(headers))
        })
        .await?;
        let mut child = self.spawn(worker, workload, args)?;
        let sampler = Sampler::start(child.id(), self.broker_pid);
        let courier = worker.starts_with("courier");
        let read = read_results(args, workload, run, courier).await;
        let peak_rss_mb = peak_rss_mb(child.id()).unwrap_or(0.0);
        let exited_early = child.try_wait().ok().flatten();
        stop(&mut child);
        let samples = sampler.stop();
        let mut m = Measured { worker: worker.to_string(), commands: workload.commands, peak_rss_mb, ..Measured::default() };
        let read = match read {
            Ok(read) => read,
            Err(e) => {
                m.failed = Some(match exited_early {
                    Some(status) => format!("{e} (the worker exited: {status})"),
                    None => e.to_string(),
                });
                return Ok(m);
            }
        };
        let span_ms = (read.last_ms - read.first_ms).max(1);
        m.cps = workload.commands as f64 / (span_ms as f64 / 1000.0);
        let n = workload.commands as f64;
        let tick_us = 1_000_000.0 / clock_ticks_per_second();
        m.worker_cpu_us = samples.worker_ticks_between(read.first_ms, read.last_ms) * tick_us / n;
        m.broker_cpu_us = samples.broker_ticks_between(read.first_ms, read.last_ms) * tick_us / n;
        (m.duplicates, m.missing, m.miskeyed, m.out_of_order) = (read.duplicates, read.missing, read.miskeyed, read.out_of_order);
        if !m.ok() {
            m.failed.get_or_insert_with(|| "its results do not check out".into());
        }
        Ok(m)
    }

    /// One worker's round trips at `rate` commands/s: each command's send to its
    /// result's arrival at a reader in this process. The caller's producer does not
    /// linger (it sends each command at once), so what is measured is the worker and
    /// the broker, the same for every worker.
    async fn latency(&self, worker: &str, workload: &Workload, rate: f64) -> Result<LatencyMeasured, BenchError> {
        scoped(self.cfg, &format!("peers-latency-{worker}"), |args| async move { self.latency_on(worker, workload, rate, &args).await }).await
    }

    async fn latency_on(&self, worker: &str, workload: &Workload, rate: f64, args: &KafkaArgs) -> Result<LatencyMeasured, BenchError> {
        let run = run_id();
        let mut m = LatencyMeasured { worker: worker.to_string(), rate, commands: workload.commands, ..LatencyMeasured::default() };
        let mut child = self.spawn(worker, workload, args)?;
        let courier = worker.starts_with("courier");
        // Arrivals, by sequence number, from a reader of its own.
        let (tx, mut arrivals) = tokio::sync::mpsc::unbounded_channel::<(usize, std::time::Instant)>();
        let mut reader = Reader::open(args, &args.topics().results, StartAt::Beginning).await?;
        let read = tokio::spawn(async move {
            loop {
                let Next::Record(record) = reader.next().await else { continue };
                if !is_result(&record, courier) {
                    continue;
                }
                if let Some(seq) = named_seq(&record, courier, run) {
                    if tx.send((seq, std::time::Instant::now())).is_err() {
                        return;
                    }
                }
            }
        });
        let mut cfg = producer_config(args)?;
        cfg.set("linger.ms", "0");
        let producer: FutureProducer = cfg.create()?;
        let topic = args.topics().commands;
        let send = |seq: usize| {
            let (key, value, headers) = workload.command(run, seq);
            let record = FutureRecord::to(&topic).key(&key).payload(&value).headers(headers.to_kafka());
            producer.send_result(record).map(drop).map_err(|(e, _)| e)
        };
        // Warm up until the worker answers (it has joined its group and caught up):
        // sequence numbers past the measured ones, one every 200 ms.
        let warm_until = tokio::time::Instant::now() + Duration::from_secs(120);
        let mut warm = workload.commands;
        let answered = loop {
            send(warm)?;
            warm += 1;
            match tokio::time::timeout(Duration::from_millis(200), arrivals.recv()).await {
                Ok(Some(_)) => break true,
                Ok(None) => break false,
                Err(_) if tokio::time::Instant::now() > warm_until => break false,
                Err(_) => {}
            }
        };
        let mut sent = vec![None; workload.commands];
        let mut took = Vec::with_capacity(workload.commands);
        if answered {
            // Let the warm-up's stragglers arrive, then measure.
            tokio::time::sleep(Duration::from_secs(1)).await;
            while arrivals.try_recv().is_ok() {}
            let start = tokio::time::Instant::now();
            let mut next = 0usize;
            let mut done_sending = None;
            loop {
                let due = start + Duration::from_secs_f64(next as f64 / rate);
                let until = done_sending.unwrap_or(due);
                tokio::select! {
                    _ = tokio::time::sleep_until(until), if done_sending.is_none() => {
                        sent[next] = Some(std::time::Instant::now());
                        send(next)?;
                        next += 1;
                        if next == workload.commands {
                            done_sending = Some(tokio::time::Instant::now() + Duration::from_secs(30));
                        }
                    }
                    _ = tokio::time::sleep_until(until), if done_sending.is_some() => break,
                    arrival = arrivals.recv() => match arrival {
                        Some((seq, at)) => {
                            if let Some(t) = sent.get_mut(seq).and_then(Option::take) {
                                took.push(at.duration_since(t).as_secs_f64() * 1000.0);
                            }
                            if took.len() == workload.commands {
                                break;
                            }
                        }
                        None => break,
                    },
                }
            }
        } else {
            m.failed = Some("the worker did not answer a command within 2 min".into());
        }
        read.abort();
        stop(&mut child);
        m.missing = workload.commands - took.len();
        took.sort_by(f64::total_cmp);
        let q = |q: f64| took.get(((took.len() as f64 * q).ceil() as usize).saturating_sub(1)).copied().unwrap_or(0.0);
        (m.p50_ms, m.p99_ms, m.max_ms) = (q(0.5), q(0.99), took.last().copied().unwrap_or(0.0));
        if m.missing > 0 {
            m.failed.get_or_insert_with(|| format!("{} commands without a result", m.missing));
        }
        Ok(m)
    }

    fn spawn(&self, worker: &str, workload: &Workload, args: &KafkaArgs) -> Result<Child, BenchError> {
        let topics = args.topics();
        let group = format!("{}-workers", args.prefix);
        let mut command = match worker {
            "courier" | "courier-eos" => {
                let bin = match &self.cfg.worker_bin {
                    Some(b) => b.clone(),
                    None => std::env::current_exe().map_err(BenchError::Process)?,
                };
                let mut c = Process::new(bin);
                c.args(["worker", "--bootstrap", &args.bootstrap, "--prefix", &args.prefix, "--group-id", &group]);
                c.args(args.kafka_opts.iter().flat_map(|o| ["--kafka-opt", o.as_str()]));
                c.env("RUST_LOG", "warn");
                if worker == "courier-eos" {
                    c.arg("--exactly-once");
                }
                c
            }
            peer => {
                let java = self.java.ok_or_else(|| BenchError::Stalled("the Java peers are not built".into()))?;
                let mut c = Process::new("java");
                c.current_dir(&java.dir).args(["-cp", &java.classpath, "dev.courier.peers.Main", peer.trim_end_matches("-java")]);
                c.args(["--bootstrap", &args.bootstrap, "--commands", &topics.commands, "--results", &topics.results, "--group", &group]);
                c.args(["--handler-ms", &workload.handler_ms.to_string()]);
                c
            }
        };
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit());
        command.spawn().map_err(BenchError::Process)
    }
}

/// What the results topic held once every command had a result.
struct Read {
    first_ms: i64,
    last_ms: i64,
    duplicates: usize,
    missing: usize,
    miskeyed: usize,
    out_of_order: usize,
}

/// Reads the results topic from its beginning until every command of `run` has a
/// result (for Courier: a final event), checking each.
async fn read_results(args: &KafkaArgs, workload: &Workload, run: u64, courier: bool) -> Result<Read, BenchError> {
    let topic = args.topics().results;
    let mut reader = Reader::open(args, &topic, StartAt::Beginning).await?;
    let mut seen = vec![false; workload.commands];
    let mut last_of_key: HashMap<Vec<u8>, usize> = HashMap::new();
    let (mut distinct, mut first_ms, mut last_ms) = (0usize, i64::MAX, i64::MIN);
    let mut r = Read { first_ms: 0, last_ms: 0, duplicates: 0, missing: 0, miskeyed: 0, out_of_order: 0 };
    while distinct < workload.commands {
        let Ok(next) = tokio::time::timeout(IDLE, reader.next()).await else {
            return Err(BenchError::Stalled(format!("{distinct} of {} results, none for {IDLE:?}", workload.commands)));
        };
        let Next::Record(record) = next else { continue };
        if !is_result(&record, courier) {
            continue;
        }
        let Some(seq) = named_seq(&record, courier, run).filter(|s| *s < workload.commands) else {
            return Err(BenchError::Stalled(format!("a result at {topic}/{}@{} names no command of this run", record.partition(), record.offset())));
        };
        let ts = record.timestamp_millis().unwrap_or(0);
        (first_ms, last_ms) = (first_ms.min(ts), last_ms.max(ts));
        if std::mem::replace(&mut seen[seq], true) {
            r.duplicates += 1;
            continue;
        }
        distinct += 1;
        let key = record.key().unwrap_or_default().to_vec();
        if key != workload.key(seq).as_bytes() {
            r.miskeyed += 1;
        }
        if let Some(before) = last_of_key.insert(key, seq) {
            if before > seq {
                r.out_of_order += 1;
            }
        }
    }
    r.missing = seen.iter().filter(|s| !**s).count();
    (r.first_ms, r.last_ms) = (first_ms, last_ms);
    Ok(r)
}

/// SIGTERM, then SIGKILL after 30 s: every worker gets to leave its group cleanly,
/// so the next run does not share the cores with a lingering one.
fn stop(child: &mut Child) {
    let _ = Process::new("kill").args(["-TERM", &child.id().to_string()]).status();
    for _ in 0..300 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    tracing::warn!(pid = child.id(), "bench worker ignored SIGTERM for 30 s; killing it");
    let _ = child.kill();
    let _ = child.wait();
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15, so 11 and 12 after the name and state.
    Some(fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?)
}

fn clock_ticks_per_second() -> f64 {
    Process::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The pid scripts/kafka.sh wrote for the broker it started from this checkout.
fn broker_pid() -> Option<u32> {
    let run = std::env::var_os("COURIER_KAFKA_RUN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".kafka"));
    std::fs::read_to_string(run.join("pid")).ok()?.trim().parse().ok()
}

/// CPU samples of the worker and the broker, taken every 20 ms on a thread of its own.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Samples>,
}

#[derive(Default)]
struct Samples {
    /// (wall clock ms, worker ticks, broker ticks)
    points: Vec<(i64, f64, f64)>,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl Sampler {
    fn start(worker: u32, broker: Option<u32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut s = Samples::default();
            while !flag.load(Ordering::Relaxed) {
                let Some(w) = cpu_ticks(worker) else { break };
                let b = broker.and_then(cpu_ticks).unwrap_or(0.0);
                s.points.push((now_ms(), w, b));
                std::thread::sleep(Duration::from_millis(20));
            }
            s
        });
        Sampler { stop, thread }
    }

    fn stop(self) -> Samples {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

impl Samples {
    fn worker_ticks_between(&self, from_ms: i64, to_ms: i64) -> f64 {
        self.at(to_ms, |p| p.1) - self.at(from_ms, |p| p.1)
    }

    fn broker_ticks_between(&self, from_ms: i64, to_ms: i64) -> f64 {
        self.at(to_ms, |p| p.2) - self.at(from_ms, |p| p.2)
    }

    /// The counter at `t`, interpolated between the samples either side of it.
    fn at(&self, t: i64, field: fn(&(i64, f64, f64)) -> f64) -> f64 {
        let after = self.points.partition_point(|p| p.0 < t);
        match (after.checked_sub(1).and_then(|i| self.points.get(i)), self.points.get(after)) {
            (Some(a), Some(b)) if b.0 > a.0 => field(a) + (field(b) - field(a)) * (t - a.0) as f64 / (b.0 - a.0) as f64,
            (_, Some(b)) => field(b),
            (Some(a), None) => field(a),
            (None, None) => 0.0,
        }
    }
}

/// A built bench/peers.
struct Java {
    dir: PathBuf,
    classpath: String,
}

/// Builds bench/peers with Maven; why not, when Java or Maven is missing or the build fails.
fn build_peers(dir: &Path) -> Result<Java, String> {
    let pom = dir.join("pom.xml");
    if !pom.is_file() {
        return Err(format!("{} not found (--peers-dir)", pom.display()));
    }
    for tool in ["java", "mvn"] {
        if Process::new(tool).arg("-version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            return Err(format!("{tool} is not installed"));
        }
    }
    // Maven's own output is shown only when the build fails.
    match Process::new("mvn").args(["-q", "-B", "-f"]).arg(&pom).arg("package").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            let tail = |b: &[u8]| String::from_utf8_lossy(b).lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
            return Err(format!("mvn package failed ({}):\n{}\n{}", out.status, tail(&out.stdout), tail(&out.stderr)));
        }
        Err(e) => return Err(format!("mvn: {e}")),
    }
    let dir = dir.canonicalize().map_err(|e| format!("{}: {e}", dir.display()))?;
    let deps = std::fs::read_to_string(dir.join("target/classpath.txt")).map_err(|e| format!("target/classpath.txt: {e}"))?;
    Ok(Java { classpath: format!("{}:{}", dir.join("target/classes").display(), deps.trim()), dir })
}

/// The human-readable tables: per round, every worker's figures and its ratio to
/// Courier at-least-once of the same round; then the medians; then the slow scenario.
pub fn table(r: &PeersReport) -> String {
    let mut t = format!(
        "{} commands of {} B, {} keys, {} partitions; each worker a separate process\n\n",
        r.commands, r.size, r.keys, r.partitions
    );
    let header = format!(
        "  {:<12} {:>10} {:>10} {:>13} {:>13} {:>9}  {}\n",
        "worker", "cmds/s", "vs courier", "worker us/cmd", "broker us/cmd", "peak RSS", "checks"
    );
    let row = |m: &Measured, courier: f64| {
        let vs = if courier > 0.0 && m.cps > 0.0 { format!("{:.2}x", m.cps / courier) } else { "-".into() };
        let checks = match &m.failed {
            None if m.duplicates == 0 => "ok".to_string(),
            None => format!("ok, {} duplicates", m.duplicates),
            Some(why) => format!("FAILED: {why} (missing {}, miskeyed {}, out of order {}, duplicates {})", m.missing, m.miskeyed, m.out_of_order, m.duplicates),
        };
        format!(
            "  {:<12} {:>10.0} {:>10} {:>13.1} {:>13.1} {:>6.0} MB  {}\n",
            m.worker, m.cps, vs, m.worker_cpu_us, m.broker_cpu_us, m.peak_rss_mb, checks
        )
    };
    let courier_of = |ms: &[Measured]| ms.iter().find(|m| m.worker == "courier" && m.ok()).map(|m| m.cps).unwrap_or(0.0);
    for (i, round) in r.per_round.iter().enumerate() {
        t.push_str(&format!("round {} of {}\n{header}", i + 1, r.rounds));
        let courier = courier_of(round);
        round.iter().for_each(|m| t.push_str(&row(m, courier)));
        t.push('\n');
    }
    if r.per_round.len() > 1 {
        t.push_str(&format!("median over {} rounds (ratio: median of each round's own ratio; spread min-max)\n", r.per_round.len()));
        t.push_str(&format!("  {:<12} {:>10} {:>10} {:>15} {:>13} {:>13} {:>9}\n", "worker", "cmds/s", "vs courier", "spread", "worker us/cmd", "broker us/cmd", "peak RSS"));
        for worker in r.per_round[0].iter().map(|m| m.worker.clone()) {
            let runs: Vec<(&Measured, f64)> = r
                .per_round
                .iter()
                .filter_map(|round| round.iter().find(|m| m.worker == worker && m.ok()).map(|m| (m, courier_of(round))))
                .collect();
            if runs.is_empty() {
                continue;
            }
            let ratios: Vec<f64> = runs.iter().filter(|(_, c)| *c > 0.0).map(|(m, c)| m.cps / c).collect();
            let spread = match ratios.iter().copied().fold(None, |acc: Option<(f64, f64)>, v| Some(acc.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))))) {
                Some((lo, hi)) => format!("{lo:.2}-{hi:.2}x"),
                None => "-".into(),
            };
            let m = |f: fn(&Measured) -> f64| median(runs.iter().map(|(r, _)| f(r)).collect());
            t.push_str(&format!(
                "  {:<12} {:>10.0} {:>9.2}x {:>15} {:>13.1} {:>13.1} {:>6.0} MB\n",
                worker,
                m(|r| r.cps),
                median(ratios),
                spread,
                m(|r| r.worker_cpu_us),
                m(|r| r.broker_cpu_us),
                m(|r| r.peak_rss_mb)
            ));
        }
        t.push('\n');
    }
    if !r.slow.is_empty() {
        t.push_str(&format!("slow: {SLOW_HANDLER_MS} ms handler, {} commands, {} keys\n{header}", r.slow_commands, r.keys));
        let courier = courier_of(&r.slow);
        r.slow.iter().for_each(|m| t.push_str(&row(m, courier)));
        t.push('\n');
    }
    if !r.latency.is_empty() {
        let rate = r.latency[0].rate;
        t.push_str(&format!("round trip at {rate}/s (send to result seen; the caller does not linger)\n"));
        t.push_str(&format!("  {:<12} {:>9} {:>9} {:>9} {:>12}  {}\n", "worker", "p50 ms", "p99 ms", "max ms", "vs raw p50", "checks"));
        let raw = r.latency.iter().find(|l| l.worker == "raw-java" && l.failed.is_none()).map(|l| l.p50_ms);
        for l in &r.latency {
            let vs = raw.filter(|p| *p > 0.0).map(|p| format!("{:.2}x", l.p50_ms / p)).unwrap_or_else(|| "-".into());
            let checks = l.failed.as_deref().map_or("ok".to_string(), |f| format!("FAILED: {f}"));
            t.push_str(&format!("  {:<12} {:>9.1} {:>9.1} {:>9.1} {:>12}  {}\n", l.worker, l.p50_ms, l.p99_ms, l.max_ms, vs, checks));
        }
        t.push('\n');
    }
    for s in &r.skipped {
        t.push_str(&format!("skipped: {s}\n"));
    }
    t.push_str(
        "guarantees: courier, raw-java and pc commit a command only after its result is acknowledged; \
         spring's @SendTo does not wait for the reply's acknowledgement before committing (a refused reply is lost); \
         spring-eos and courier-eos commit results and offsets in one transaction. \
         Courier writes two records per command (final event + snapshot), the peers one.\n",
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_id_gives_back_its_sequence_number_only_for_its_own_run() {
        let id = command_id(7, 123_456).to_string();
        assert_eq!(seq_of(&id, 7), Some(123_456));
        assert_eq!(seq_of(&id, 8), None);
        assert_eq!(seq_of("not an id", 7), None);
    }

    #[test]
    fn cpu_between_two_instants_is_interpolated_between_samples() {
        let s = Samples { points: vec![(1000, 10.0, 100.0), (1100, 20.0, 110.0), (1200, 40.0, 130.0)] };
        assert_eq!(s.worker_ticks_between(1050, 1150), 30.0 - 15.0);
        assert_eq!(s.broker_ticks_between(1000, 1200), 30.0);
        // Outside the samples, the nearest one.
        assert_eq!(s.worker_ticks_between(900, 1300), 30.0);
    }

    #[test]
    fn this_process_has_cpu_ticks_and_a_peak_rss() {
        let pid = std::process::id();
        assert!(cpu_ticks(pid).is_some());
        assert!(peak_rss_mb(pid).is_some_and(|mb| mb > 0.0));
    }
}
