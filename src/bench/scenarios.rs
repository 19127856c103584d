//! The bench scenarios. Each is handed topics of its own ([`super::scoped`]), so none
//! sees another's records.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{BenchConfig, BenchError};
use crate::envelope::{HeaderMap, NewCommand, OperationSnapshot, ResultEvent, State, Timing};
use crate::follow::{Next, Reader, Seen, StartAt};
use crate::publish::{Outgoing, Publisher};
use crate::kafka::{producer_config, KafkaArgs};
use crate::router::{Context, Handler, HandlerError, Router};
use crate::{Client, OrderBy, Worker, WorkerConfig};

/// Returns at once: the cost of Courier itself.
struct Noop;

impl Handler for Noop {
    type Input = Value;
    type Output = Value;
    async fn handle(&self, input: Value, _ctx: Context) -> Result<Value, HandlerError> {
        Ok(input)
    }
}

/// Waits 20 ms: an I/O-bound handler (a database call, an HTTP request).
struct Slow;

#[derive(Deserialize, JsonSchema)]
struct SlowInput {}

impl Handler for Slow {
    type Input = SlowInput;
    type Output = ();
    async fn handle(&self, _input: SlowInput, _ctx: Context) -> Result<(), HandlerError> {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(())
    }
}

fn payload(size: usize) -> Value {
    json!({ "pad": "x".repeat(size.saturating_sub(10)) })
}

/// Produces `n` commands of `command_type` to the commands topic, waiting for all acks.
async fn preproduce(args: &KafkaArgs, n: usize, command_type: &str, data: Value, keys: usize, raw: bool) -> Result<(), BenchError> {
    produce_commands(args, n, |i| {
        let key = format!("k{}", i % keys.max(1));
        let (_, value, headers) = NewCommand::new(command_type, data.clone()).key(key.clone()).into_command("//bench").encode();
        (key, value, (!raw).then_some(headers))
    })
    .await
}

/// Produces `n` records to the commands topic, `record(i)` giving the i-th one's key,
/// value and headers (none: a header-less record), waiting for every acknowledgement.
pub(super) async fn produce_commands(
    args: &KafkaArgs,
    n: usize,
    record: impl Fn(usize) -> (String, Vec<u8>, Option<HeaderMap>),
) -> Result<(), BenchError> {
    let mut cfg = producer_config(args)?;
    cfg.set("linger.ms", "20").set("queue.buffering.max.messages", "1000000");
    let producer: FutureProducer = cfg.create()?;
    let topic = args.topics().commands;
    let mut pending = Vec::with_capacity(10_000);
    for i in 0..n {
        let (key, value, headers) = record(i);
        let (producer, topic) = (producer.clone(), topic.clone());
        pending.push(async move {
            let mut record = FutureRecord::to(&topic).key(&key).payload(&value);
            if let Some(headers) = headers {
                record = record.headers(headers.to_kafka());
            }
            producer.send(record, Duration::from_secs(60)).await.map(|_| ()).map_err(|(e, _)| e)
        });
        if pending.len() == 10_000 {
            futures::future::try_join_all(pending.drain(..)).await?;
        }
    }
    futures::future::try_join_all(pending).await?;
    Ok(())
}

/// Reads `topic` from its beginning until `expected` records pass `counts`, and
/// returns the span between the first and last counted record's timestamps.
async fn output_span(args: &KafkaArgs, topic: &str, expected: usize, counts: fn(&Seen<'_>) -> bool) -> Result<Duration, BenchError> {
    const IDLE: Duration = Duration::from_secs(120);
    let mut reader = Reader::open(args, topic, StartAt::Beginning).await?;
    let (mut seen, mut first, mut last) = (0usize, i64::MAX, i64::MIN);
    while seen < expected {
        let Ok(next) = tokio::time::timeout(IDLE, reader.next()).await else {
            return Err(BenchError::Stalled(format!("{topic}: {seen} of {expected} outputs after 2 min idle")));
        };
        let Next::Record(record) = next else { continue };
        if counts(&record) {
            let ts = record.timestamp_millis().unwrap_or(0);
            (first, last) = (first.min(ts), last.max(ts));
            seen += 1;
        }
    }
    Ok(Duration::from_millis((last - first).max(1) as u64))
}

fn is_final(record: &Seen<'_>) -> bool {
    crate::envelope::is_final_record(record.kafka_headers())
}

/// A `completed` final event: a scenario whose handler might fail counts only these,
/// so a failing handler stalls the bench (and says so) rather than measuring failures.
fn is_completed(record: &Seen<'_>) -> bool {
    let ce_type = crate::envelope::last_kafka_header(record.kafka_headers(), crate::envelope::header_names::TYPE);
    ce_type == Some(State::Completed.event_type().as_bytes())
}

fn any_record(_: &Seen<'_>) -> bool {
    true
}

/// The ceiling: a minimal consume-then-produce loop, committing like a worker does.
pub async fn raw(cfg: &BenchConfig, args: &KafkaArgs) -> Result<f64, BenchError> {
    preproduce(args, cfg.messages, "noop", payload(cfg.size), 10_000, true).await?;
    let (n, loop_args) = (cfg.messages, args.clone());
    let relay = tokio::task::spawn_blocking(move || -> Result<(), BenchError> {
        let topics = loop_args.topics();
        let mut ccfg = loop_args.client_config()?;
        ccfg.set("group.id", format!("{}-raw", loop_args.prefix)).set("enable.auto.commit", "false");
        ccfg.set("auto.offset.reset", "earliest");
        crate::kafka::set_fetch_defaults(&mut ccfg);
        let consumer: BaseConsumer = ccfg.create()?;
        consumer.subscribe(&[topics.commands.as_str()])?;
        let producer: FutureProducer = producer_config(&loop_args)?.create()?;
        let (mut done, mut last_commit) = (0usize, Instant::now());
        while done < n {
            let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else { continue };
            let mut record = FutureRecord::to(&topics.results).payload(m.payload().unwrap_or_default());
            record.key = m.key();
            while let Err((e, r)) = producer.send_result(record) {
                let _ = e;
                producer.poll(Duration::from_millis(10));
                record = r;
            }
            done += 1;
            if last_commit.elapsed() > Duration::from_millis(500) {
                let _ = consumer.commit_consumer_state(CommitMode::Async);
                last_commit = Instant::now();
            }
        }
        producer.flush(Duration::from_secs(30))?;
        Ok(())
    });
    let span = output_span(args, &args.topics().results, n, any_record).await?;
    relay.await.map_err(|e| BenchError::Stalled(e.to_string()))??;
    Ok(n as f64 / span.as_secs_f64())
}

/// Courier's own output with nothing consumed: per command the final event and
/// snapshot a worker writes for the no-op handler (which echoes its payload),
/// produced and acknowledged with the worker's producer settings and in-flight bound.
/// What the envelope alone costs on this machine, so the gap between `raw` and
/// `courier` splits into "writing Courier's records" and "everything else".
pub async fn outputs_only(cfg: &BenchConfig, args: &KafkaArgs) -> Result<f64, BenchError> {
    let publisher = Publisher::new(args)?;
    let topics = args.topics();
    let in_flight = WorkerConfig::new(args.bootstrap.clone()).max_in_flight;
    let (source, worker, never) = ("//courier/worker/bench", "bench", CancellationToken::new());
    let result = payload(cfg.size);
    let sends = futures::stream::iter(0..cfg.messages)
        .map(|i| {
            let command = NewCommand::new("noop", Value::Null).key(format!("k{}", i % 10_000)).into_command("//bench");
            let event = ResultEvent::about(&command, source, worker, State::Completed, Some(result.clone()), None, Timing::default());
            let (key, value, headers) = event.encode();
            let results = Outgoing::new(topics.results.clone(), key, value, headers);
            let (key, value, headers) = OperationSnapshot::after(&command, event.data, worker).encode(source);
            let outs = vec![results, Outgoing::new(topics.status.clone(), key, value, headers)];
            let (publisher, never) = (&publisher, &never);
            async move { publisher.send_all_acked(outs, never).await }
        })
        .buffer_unordered(in_flight);
    let (sent, span) = tokio::join!(sends.collect::<Vec<_>>(), output_span(args, &topics.results, cfg.messages, is_final));
    if let Some(Err(e)) = sent.into_iter().find(Result::is_err) {
        return Err(BenchError::Stalled(format!("outputs: {e}")));
    }
    Ok(cfg.messages as f64 / span?.as_secs_f64())
}

/// A bench worker running in this process.
struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops the worker and waits for it to drain and commit, so it neither competes
    /// for the cores with the next scenario nor outlives the topics it reads.
    async fn stop(self) {
        self.stop.cancel();
        if tokio::time::timeout(Duration::from_secs(60), self.task).await.is_err() {
            tracing::warn!("bench worker did not stop within 60 s");
        }
    }
}

async fn start_worker(args: &KafkaArgs, router: Router, tune: impl FnOnce(&mut WorkerConfig)) -> Result<Running, BenchError> {
    let mut config = WorkerConfig::new(args.bootstrap.clone());
    config.kafka = args.clone();
    config.group_id = format!("{}-workers", args.prefix);
    config.worker_id = Some(format!("bench-{}", std::process::id()));
    tune(&mut config);
    let worker = Worker::new(config, router)?;
    let stop = CancellationToken::new();
    let token = stop.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = worker.run(token).await {
            tracing::error!(error = %e, "bench worker failed");
        }
    });
    Ok(Running { stop, task })
}

/// Courier with a no-op handler, at-least-once or exactly-once.
pub async fn through_courier(cfg: &BenchConfig, args: &KafkaArgs, exactly_once: bool) -> Result<f64, BenchError> {
    preproduce(args, cfg.messages, "noop", payload(cfg.size), 10_000, false).await?;
    let worker = start_worker(args, Router::new().route("noop", Noop), |c| c.exactly_once = exactly_once).await?;
    let span = output_span(args, &args.topics().results, cfg.messages, is_final).await;
    worker.stop().await;
    Ok(cfg.messages as f64 / span?.as_secs_f64())
}

/// A trivial HTTP handler on loopback, in this process: every POST is answered `200`
/// with its own body (the no-op echo, over HTTP). Stops when the token fires.
async fn echo_server() -> Result<(std::net::SocketAddr, CancellationToken), BenchError> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.map_err(BenchError::Process)?;
    let addr = listener.local_addr().map_err(BenchError::Process)?;
    let echo = axum::routing::post(|body: axum::body::Bytes| async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], body) });
    let app = axum::Router::new().route("/noop", echo);
    let stop = CancellationToken::new();
    let until = stop.clone();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(until.cancelled_owned()).await {
            tracing::warn!(error = %e, "bench HTTP handler stopped");
        }
    });
    Ok((addr, stop))
}

/// Courier at-least-once with the no-op handler as an HTTP push handler (the route a
/// `--config` file declares, with its defaults) on loopback: what pushing each command
/// over HTTP costs beside the in-process handler.
pub async fn through_http(cfg: &BenchConfig, args: &KafkaArgs) -> Result<f64, BenchError> {
    use crate::declared::{DEFAULT_CONCURRENCY, DEFAULT_MAX_RESPONSE_BYTES};
    use crate::router::push::{push_client, push_route, PushProfile, PushTarget, Schemas};
    preproduce(args, cfg.messages, "noop", payload(cfg.size), 10_000, false).await?;
    let (addr, server) = echo_server().await?;
    let url = format!("http://{addr}/noop").parse().map_err(|e| BenchError::Stalled(format!("handler URL: {e}")))?;
    let target = PushTarget {
        url,
        timeout: Duration::from_secs(30),
        concurrency: DEFAULT_CONCURRENCY,
        headers: Default::default(),
        max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        callbacks: None,
        profile: PushProfile::Courier,
    };
    let client = push_client().map_err(|e| BenchError::Stalled(format!("HTTP client: {e}")))?;
    let route = push_route(target, client, Schemas::default(), schemars::Schema::from(true), schemars::Schema::from(true), "no-op over HTTP".into());
    let worker = start_worker(args, Router::new().route_built("noop", route), |_| {}).await?;
    let span = output_span(args, &args.topics().results, cfg.messages, is_completed).await;
    worker.stop().await;
    server.cancel();
    Ok(cfg.messages as f64 / span?.as_secs_f64())
}

/// A 20 ms handler over 1,000 keys with the given ordering.
pub async fn slow(args: &KafkaArgs, ordering: OrderBy, n: usize) -> Result<f64, BenchError> {
    preproduce(args, n, "slow", json!({}), 1_000, false).await?;
    let worker = start_worker(args, Router::new().route("slow", Slow), |c| c.ordering = ordering).await?;
    let span = output_span(args, &args.topics().results, n, is_final).await;
    worker.stop().await;
    Ok(n as f64 / span?.as_secs_f64())
}

/// End-to-end latency percentiles.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

/// Submit-to-result-seen latency at a fixed rate.
pub async fn latency(cfg: &BenchConfig, args: &KafkaArgs, rate: f64) -> Result<Latency, BenchError> {
    let worker = start_worker(args, Router::new().route("noop", Noop), |_| {}).await?;
    let client = Client::new(args.clone())?;
    client.submit_and_wait(NewCommand::new("noop", json!({"seq": -1})), Duration::from_secs(60)).await?;
    let sent: Arc<Mutex<HashMap<i64, Instant>>> = Arc::default();
    let hist = Arc::new(Mutex::new(hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| BenchError::Stalled(e.to_string()))?));
    let mut events = client.subscribe(crate::client::StartAt::Now).await?;
    let (sent_r, hist_r) = (sent.clone(), hist.clone());
    let reader = tokio::spawn(async move {
        while let Some(ev) = events.next().await {
            let Some(seq) = ev.data.result.as_ref().and_then(|r| r.get("seq")).and_then(Value::as_i64) else { continue };
            if let Some(t) = sent_r.lock().unwrap_or_else(|p| p.into_inner()).remove(&seq) {
                let _ = hist_r.lock().unwrap_or_else(|p| p.into_inner()).record(t.elapsed().as_micros() as u64);
            }
        }
    });
    let tick = Duration::from_millis(10);
    let per_tick = (rate * tick.as_secs_f64()).max(1.0) as i64;
    let mut interval = tokio::time::interval(tick);
    let (started, mut seq) = (Instant::now(), 0i64);
    while started.elapsed() < cfg.latency_for {
        interval.tick().await;
        for _ in 0..per_tick {
            sent.lock().unwrap_or_else(|p| p.into_inner()).insert(seq, Instant::now());
            let (c, cmd) = (client.clone(), NewCommand::new("noop", json!({"seq": seq})).key(format!("k{}", seq % 10_000)));
            tokio::spawn(async move { c.submit(cmd).await });
            seq += 1;
        }
    }
    let drain_until = Instant::now() + Duration::from_secs(30);
    while !sent.lock().unwrap_or_else(|p| p.into_inner()).is_empty() && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    reader.abort();
    worker.stop().await;
    let h = hist.lock().unwrap_or_else(|p| p.into_inner());
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok(Latency { p50_ms: ms(0.5), p99_ms: ms(0.99), p999_ms: ms(0.999) })
}

/// Peak RSS of a `courier worker` process facing a backlog of slow commands: it
/// admits up to its in-flight bound, pauses, and must not grow with the backlog.
pub async fn backlog_rss(cfg: &BenchConfig, args: &KafkaArgs) -> Result<f64, BenchError> {
    preproduce(args, cfg.backlog, "sleep", json!({"ms": 200, "steps": 1}), 100_000, false).await?;
    let bin = match &cfg.worker_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe().map_err(BenchError::Process)?,
    };
    let mut child = std::process::Command::new(bin)
        .args(["worker", "--bootstrap", &args.bootstrap, "--prefix", &args.prefix])
        .args(["--group-id", &format!("{}-workers", args.prefix)])
        .args(args.kafka_opts.iter().flat_map(|o| ["--kafka-opt", o.as_str()]))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(BenchError::Process)?;
    tokio::time::sleep(Duration::from_secs(15)).await;
    let peak = peak_rss_mb(child.id());
    let _ = child.kill();
    let _ = child.wait();
    peak.ok_or_else(|| BenchError::Stalled("could not read the worker's peak RSS from /proc".into()))
}

/// A process's peak resident set (`VmHWM`), in MB.
pub(super) fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse::<f64>().ok()?;
    Some(kb / 1024.0)
}
