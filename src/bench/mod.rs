//! `courier bench`: what Courier costs on top of Kafka, measured side by side in one
//! run against the broker given.
//!
//! Every throughput figure is measured the same way: N records are produced to an
//! input topic first, then the system under test turns each into one output record,
//! and throughput is N over the span between the first and last output record's
//! timestamps. Group joins and start-up are outside that span, for every scenario.
//!
//! Scenarios: `raw` (a minimal rdkafka consume-then-produce loop, same producer and
//! consumer settings: the ceiling), `courier` (no-op handler, at-least-once),
//! `courier-eos` (exactly-once), `outputs` (the records a worker writes per command,
//! produced alone: what the envelope costs before anything is consumed), `slow` (a 20 ms handler, 1,000 keys, `ordering =
//! key` vs `ordering = partition`), end-to-end latency at half the measured capacity,
//! and the worker's peak RSS while a 1,000,000-command backlog waits.

mod scenarios;

use std::time::Duration;

use serde::Serialize;

use crate::kafka::KafkaArgs;

pub use scenarios::{backlog_rss, latency, outputs_only, raw, slow, through_courier, Latency};

/// Bench settings.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchConfig {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Records per throughput scenario. Fewer than a few hundred thousand and the raw
    /// loop's figure is mostly a burst of already-prefetched records, well under a
    /// second long, which overstates the ceiling and varies widely between runs.
    #[arg(long, default_value_t = 300_000)]
    pub messages: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Partitions of every bench topic.
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Commands in the `slow` scenario with `ordering = partition` (key ordering runs 10x as many).
    #[arg(long, default_value_t = 1_200)]
    pub slow_messages: usize,
    /// How long to measure latency.
    #[arg(long, value_parser = crate::duration::parse_duration, default_value = "8s")]
    pub latency_for: Duration,
    /// Backlog size for the memory scenario (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    pub backlog: usize,
    /// Path of the `courier` binary for the backlog worker (default: this executable).
    #[arg(long)]
    pub worker_bin: Option<std::path::PathBuf>,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
    /// Run only these scenarios (raw, courier, eos, outputs, slow, latency, backlog); default all.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

impl BenchConfig {
    fn wants(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }
}

/// Everything measured, as printed in the JSON line.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub messages: usize,
    pub size: usize,
    pub partitions: i32,
    pub raw_cps: f64,
    pub courier_cps: f64,
    pub courier_ratio: f64,
    pub eos_cps: f64,
    pub eos_ratio: f64,
    /// Courier's two output records per command produced alone (nothing consumed).
    pub outputs_cps: f64,
    pub outputs_ratio: f64,
    pub slow_key_cps: f64,
    pub slow_partition_cps: f64,
    pub slow_key_vs_partition: f64,
    pub latency_rate_cps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub backlog: usize,
    pub backlog_rss_mb: f64,
}

/// Why a bench run could not complete.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Setup(#[from] crate::kafka::KafkaSetupError),
    #[error(transparent)]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Worker(#[from] crate::WorkerError),
    #[error(transparent)]
    Client(#[from] crate::ClientError),
    #[error("{0}")]
    Stalled(String),
    #[error("backlog worker: {0}")]
    Process(std::io::Error),
}

/// Runs every scenario in order, reporting progress through `progress`.
pub async fn run(cfg: &BenchConfig, mut progress: impl FnMut(&str)) -> Result<Report, BenchError> {
    let mut r = Report { messages: cfg.messages, size: cfg.size, partitions: cfg.partitions, ..Report::default() };
    if cfg.wants("raw") {
        progress("raw: consume-then-produce loop");
        r.raw_cps = raw(cfg).await?;
    }
    if cfg.wants("courier") {
        progress("courier: no-op handler, at-least-once");
        r.courier_cps = through_courier(cfg, false).await?;
    }
    if cfg.wants("eos") {
        progress("courier-eos: no-op handler, exactly-once");
        r.eos_cps = through_courier(cfg, true).await?;
    }
    if cfg.wants("outputs") {
        progress("outputs: a worker's final event + snapshot per command, produced alone");
        r.outputs_cps = outputs_only(cfg).await?;
    }
    if r.raw_cps > 0.0 {
        r.courier_ratio = r.courier_cps / r.raw_cps;
        r.eos_ratio = r.eos_cps / r.raw_cps;
        r.outputs_ratio = r.outputs_cps / r.raw_cps;
    }
    if cfg.wants("slow") {
        progress("slow: 20 ms handler, 1,000 keys, ordering = key");
        r.slow_key_cps = slow(cfg, crate::Ordering::Key, cfg.slow_messages * 10).await?;
        progress("slow: 20 ms handler, 1,000 keys, ordering = partition");
        r.slow_partition_cps = slow(cfg, crate::Ordering::Partition, cfg.slow_messages).await?;
        r.slow_key_vs_partition = r.slow_key_cps / r.slow_partition_cps;
    }
    if cfg.wants("latency") {
        r.latency_rate_cps = if r.courier_cps > 0.0 { (r.courier_cps / 2.0).clamp(10.0, 20_000.0) } else { 500.0 };
        progress(&format!("latency: submit to result at {:.0} commands/s", r.latency_rate_cps));
        let l = latency(cfg, r.latency_rate_cps).await?;
        (r.p50_ms, r.p99_ms, r.p999_ms) = (l.p50_ms, l.p99_ms, l.p999_ms);
    }
    if cfg.backlog > 0 && cfg.wants("backlog") {
        progress(&format!("memory: worker RSS with a {} command backlog", cfg.backlog));
        r.backlog = cfg.backlog;
        r.backlog_rss_mb = backlog_rss(cfg).await?;
    }
    Ok(r)
}

/// The human-readable table.
pub fn table(r: &Report) -> String {
    let mut t = String::new();
    let row = |t: &mut String, name: &str, cps: f64, vs: &str| t.push_str(&format!("  {name:<28} {cps:>12.0} {vs:>10}\n"));
    t.push_str(&format!("  {:<28} {:>12} {:>10}\n", "scenario", "commands/s", "vs raw"));
    row(&mut t, "raw (rdkafka loop)", r.raw_cps, "1.00x");
    row(&mut t, "courier (at-least-once)", r.courier_cps, &format!("{:.2}x", r.courier_ratio));
    row(&mut t, "courier-eos (exactly-once)", r.eos_cps, &format!("{:.2}x", r.eos_ratio));
    row(&mut t, "courier outputs alone", r.outputs_cps, &format!("{:.2}x", r.outputs_ratio));
    row(&mut t, "slow 20ms, ordering=key", r.slow_key_cps, "");
    row(&mut t, "slow 20ms, ordering=partition", r.slow_partition_cps, "");
    t.push_str(&format!("  slow: key ordering is {:.1}x partition ordering\n", r.slow_key_vs_partition));
    t.push_str(&format!(
        "  latency at {:.0}/s: p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms\n",
        r.latency_rate_cps, r.p50_ms, r.p99_ms, r.p999_ms
    ));
    if r.backlog > 0 {
        t.push_str(&format!("  worker peak RSS with {} queued commands: {:.1} MB\n", r.backlog, r.backlog_rss_mb));
    }
    t
}
