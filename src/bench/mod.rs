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
//! `courier-eos` (exactly-once), `http` (the no-op as an HTTP push handler on
//! loopback, the route a `--config` file declares: what HTTP costs per command), `outputs` (the records a worker writes per command,
//! produced alone: what the envelope costs before anything is consumed), `slow` (a 20 ms handler, 1,000 keys, `ordering =
//! key` vs `ordering = partition`), end-to-end latency at half the measured capacity,
//! and the worker's peak RSS while a 1,000,000-command backlog waits.
//!
//! On a machine where the broker shares the cores, one measurement of `raw` can be off
//! by a factor of two from the next. So the throughput scenarios run in rounds, each
//! round measuring `raw` again right before the others; a ratio is only ever taken
//! between figures of one round, and the report gives the median over the rounds
//! beside every round's figures. Each scenario gets fresh topics and deletes them
//! when done, so repeated runs leave nothing behind on the broker.

pub mod peers;
mod scenarios;

use std::future::Future;
use std::time::Duration;

use serde::Serialize;

use crate::kafka::KafkaArgs;
use crate::topics::{create_topics, delete_topics, TopicSpec};

pub use scenarios::{backlog_rss, latency, outputs_only, raw, slow, through_courier, through_http, Latency};

/// Bench settings.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchConfig {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Records per throughput scenario. Fewer than a few hundred thousand and the raw
    /// loop's figure is mostly a burst of already-prefetched records, well under a
    /// second long, which overstates the ceiling and varies widely between runs.
    #[arg(long, default_value_t = 300_000, value_parser = at_least_one)]
    pub messages: usize,
    /// Rounds of the throughput scenarios (raw, courier, eos, http, outputs). Every round
    /// measures raw again and takes its ratios within the round; the report gives the
    /// medians and each round's figures.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
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
    /// Run only these scenarios (raw, courier, eos, http, outputs, slow, latency, backlog); default all.
    /// With `--peers`: throughput, slow, latency.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Instead of the in-process scenarios, run `courier worker` as a process beside
    /// the Java peers of `--peers-dir` (built with Maven when Java is present), each a
    /// process of its own on the same broker with the same commands.
    #[arg(long)]
    pub peers: bool,
    /// The peers' Maven project.
    #[arg(long, default_value = "bench/peers")]
    pub peers_dir: std::path::PathBuf,
    /// With `--peers`: the workers to run (raw-java, spring, spring-eos, pc, courier,
    /// courier-eos); default all.
    #[arg(long, value_delimiter = ',')]
    pub workers: Vec<String>,
    /// With `--peers`: distinct command keys.
    #[arg(long, default_value_t = 1_000)]
    pub keys: usize,
    /// With `--peers`: commands in the slow scenario (20 ms handler); 0 skips it.
    #[arg(long, default_value_t = 20_000)]
    pub slow_commands: usize,
    /// With `--peers`: commands of the round-trip scenario; 0 skips it.
    #[arg(long, default_value_t = 600)]
    pub latency_commands: usize,
    /// With `--peers`: the round-trip scenario's steady rate, commands/s.
    #[arg(long, default_value_t = 20.0, value_parser = positive_rate)]
    pub latency_rate: f64,
    /// With `--peers`: the broker's pid, for its CPU per command (default: the one
    /// `scripts/kafka.sh` started from this directory, `.kafka/pid`).
    #[arg(long)]
    pub broker_pid: Option<u32>,
}

/// A count of at least one: a span over no records is no measurement.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A steady rate, commands/s: finite and above zero (commands are spaced 1/rate apart).
fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        Ok(_) => Err("must be a number of commands per second above 0".into()),
        Err(e) => Err(e.to_string()),
    }
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
    /// The throughput figures: each the median over the rounds.
    #[serde(flatten)]
    pub throughput: Round,
    pub slow_key_cps: f64,
    pub slow_partition_cps: f64,
    pub slow_key_vs_partition: f64,
    pub latency_rate_cps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub backlog: usize,
    pub backlog_rss_mb: f64,
    /// How many rounds the throughput figures above are the median of.
    pub rounds: u32,
    /// Every round's throughput figures, in the order measured.
    pub per_round: Vec<Round>,
}

/// One round of the throughput scenarios; ratios are to this round's `raw_cps`
/// (0 when raw did not run).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Round {
    pub raw_cps: f64,
    pub courier_cps: f64,
    pub courier_ratio: f64,
    pub eos_cps: f64,
    pub eos_ratio: f64,
    /// The no-op handler over HTTP (loopback), at-least-once.
    pub http_cps: f64,
    pub http_ratio: f64,
    /// `http_cps` over `courier_cps`: the HTTP hop's share, within the round.
    pub http_vs_courier: f64,
    /// Courier's two output records per command produced alone (nothing consumed).
    pub outputs_cps: f64,
    pub outputs_ratio: f64,
}

impl Round {
    fn with_ratios(mut self) -> Self {
        if self.raw_cps > 0.0 {
            self.courier_ratio = self.courier_cps / self.raw_cps;
            self.eos_ratio = self.eos_cps / self.raw_cps;
            self.http_ratio = self.http_cps / self.raw_cps;
            self.outputs_ratio = self.outputs_cps / self.raw_cps;
        }
        if self.courier_cps > 0.0 {
            self.http_vs_courier = self.http_cps / self.courier_cps;
        }
        self
    }
}

/// The middle value (the mean of the middle two for an even count); 0 for none.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

impl Report {
    /// Sets the throughput figures to the medians over `rounds`, each ratio the median
    /// of the rounds' own ratios (not a ratio of medians: raw and courier of one round
    /// ran on the broker in the same state).
    fn summarize(&mut self, rounds: Vec<Round>) {
        let m = |f: fn(&Round) -> f64| median(rounds.iter().map(f).collect());
        self.throughput = Round {
            raw_cps: m(|r| r.raw_cps),
            courier_cps: m(|r| r.courier_cps),
            courier_ratio: m(|r| r.courier_ratio),
            eos_cps: m(|r| r.eos_cps),
            eos_ratio: m(|r| r.eos_ratio),
            http_cps: m(|r| r.http_cps),
            http_ratio: m(|r| r.http_ratio),
            http_vs_courier: m(|r| r.http_vs_courier),
            outputs_cps: m(|r| r.outputs_cps),
            outputs_ratio: m(|r| r.outputs_ratio),
        };
        self.rounds = rounds.len() as u32;
        self.per_round = rounds;
    }
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
    #[error(transparent)]
    Follow(#[from] crate::follow::FollowError),
    #[error("{0}")]
    Stalled(String),
    #[error("backlog worker: {0}")]
    Process(std::io::Error),
}

/// Runs every scenario in order, reporting progress through `progress`.
pub async fn run(cfg: &BenchConfig, mut progress: impl FnMut(&str)) -> Result<Report, BenchError> {
    let mut r = Report { messages: cfg.messages, size: cfg.size, partitions: cfg.partitions, ..Report::default() };
    let mut rounds = Vec::new();
    let in_rounds = ["raw", "courier", "eos", "http", "outputs"];
    if in_rounds.iter().any(|s| cfg.wants(s)) {
        for i in 1..=cfg.rounds {
            let mut step = |what: &str| progress(&format!("round {i}/{}: {what}", cfg.rounds));
            let mut round = Round::default();
            if cfg.wants("raw") {
                step("raw: consume-then-produce loop");
                round.raw_cps = scoped(cfg, "raw", |args| async move { raw(cfg, &args).await }).await?;
            }
            if cfg.wants("courier") {
                step("courier: no-op handler, at-least-once");
                round.courier_cps = scoped(cfg, "courier", |args| async move { through_courier(cfg, &args, false).await }).await?;
            }
            if cfg.wants("eos") {
                step("courier-eos: no-op handler, exactly-once");
                round.eos_cps = scoped(cfg, "eos", |args| async move { through_courier(cfg, &args, true).await }).await?;
            }
            if cfg.wants("http") {
                step("http: no-op HTTP push handler on loopback, at-least-once");
                round.http_cps = scoped(cfg, "http", |args| async move { through_http(cfg, &args).await }).await?;
            }
            if cfg.wants("outputs") {
                step("outputs: a worker's final event + snapshot per command, produced alone");
                round.outputs_cps = scoped(cfg, "outputs", |args| async move { outputs_only(cfg, &args).await }).await?;
            }
            rounds.push(round.with_ratios());
        }
    }
    r.summarize(rounds);
    if cfg.wants("slow") {
        progress("slow: 20 ms handler, 1,000 keys, ordering = key");
        let n = cfg.slow_messages * 10;
        r.slow_key_cps = scoped(cfg, "slow", |args| async move { slow(&args, crate::OrderBy::Key, n).await }).await?;
        progress("slow: 20 ms handler, 1,000 keys, ordering = partition");
        let n = cfg.slow_messages;
        r.slow_partition_cps = scoped(cfg, "slow", |args| async move { slow(&args, crate::OrderBy::Partition, n).await }).await?;
        r.slow_key_vs_partition = r.slow_key_cps / r.slow_partition_cps;
    }
    if cfg.wants("latency") {
        r.latency_rate_cps = if r.throughput.courier_cps > 0.0 { (r.throughput.courier_cps / 2.0).clamp(10.0, 20_000.0) } else { 500.0 };
        progress(&format!("latency: submit to result at {:.0} commands/s", r.latency_rate_cps));
        let rate = r.latency_rate_cps;
        let l = scoped(cfg, "latency", |args| async move { latency(cfg, &args, rate).await }).await?;
        (r.p50_ms, r.p99_ms, r.p999_ms) = (l.p50_ms, l.p99_ms, l.p999_ms);
    }
    if cfg.backlog > 0 && cfg.wants("backlog") {
        progress(&format!("memory: worker RSS with a {} command backlog", cfg.backlog));
        r.backlog = cfg.backlog;
        r.backlog_rss_mb = scoped(cfg, "backlog", |args| async move { backlog_rss(cfg, &args).await }).await?;
    }
    Ok(r)
}

/// Runs one scenario on topics of its own (a fresh prefix) and deletes them after,
/// whether it succeeded or not.
async fn scoped<T, F, Fut>(cfg: &BenchConfig, name: &str, scenario: F) -> Result<T, BenchError>
where
    F: FnOnce(KafkaArgs) -> Fut,
    Fut: Future<Output = Result<T, BenchError>>,
{
    let mut args = cfg.kafka.clone();
    args.prefix = format!("bench-{name}-{}", &crate::envelope::new_id().simple().to_string()[20..]);
    let spec = TopicSpec { partitions: cfg.partitions, ..TopicSpec::default() };
    create_topics(&args, &spec).await?;
    let outcome = scenario(args.clone()).await;
    if let Err(e) = delete_topics(&args, &spec).await {
        tracing::warn!(prefix = %args.prefix, error = %e, "bench topics left behind");
    }
    outcome
}

/// The human-readable table.
pub fn table(r: &Report) -> String {
    let mut t = String::new();
    let row = |t: &mut String, name: &str, cps: f64, vs: &str, range: &str| {
        t.push_str(&format!("  {name:<28} {cps:>12.0} {vs:>10} {range:>14}\n"))
    };
    // The spread of a ratio over the rounds, min-max; blank for a single round.
    let range = |f: fn(&Round) -> f64| {
        let values: Vec<f64> = r.per_round.iter().map(f).collect();
        let (lo, hi) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        if values.len() > 1 { format!("{lo:.2}-{hi:.2}x") } else { String::new() }
    };
    t.push_str(&format!("  {:<28} {:>12} {:>10} {:>14}\n", "scenario", "commands/s", "vs raw", "rounds range"));
    row(&mut t, "raw (rdkafka loop)", r.throughput.raw_cps, "1.00x", "");
    row(&mut t, "courier (at-least-once)", r.throughput.courier_cps, &format!("{:.2}x", r.throughput.courier_ratio), &range(|x| x.courier_ratio));
    row(&mut t, "courier-eos (exactly-once)", r.throughput.eos_cps, &format!("{:.2}x", r.throughput.eos_ratio), &range(|x| x.eos_ratio));
    row(&mut t, "courier + HTTP handler", r.throughput.http_cps, &format!("{:.2}x", r.throughput.http_ratio), &range(|x| x.http_ratio));
    t.push_str(&format!("  {:<28} {:>12} {:>10}\n", "  (HTTP vs in-process)", "", format!("{:.2}x", r.throughput.http_vs_courier)));
    row(&mut t, "courier outputs alone", r.throughput.outputs_cps, &format!("{:.2}x", r.throughput.outputs_ratio), &range(|x| x.outputs_ratio));
    if r.rounds > 1 {
        t.push_str(&format!("  (medians of {} rounds; each ratio taken within its round)\n", r.rounds));
    }
    row(&mut t, "slow 20ms, ordering=key", r.slow_key_cps, "", "");
    row(&mut t, "slow 20ms, ordering=partition", r.slow_partition_cps, "", "");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn round(raw: f64, courier: f64) -> Round {
        Round { raw_cps: raw, courier_cps: courier, eos_cps: courier / 2.0, ..Round::default() }.with_ratios()
    }

    #[test]
    fn counts_and_rates_that_measure_nothing_are_refused() {
        assert_eq!(at_least_one("3"), Ok(3));
        assert!(at_least_one("0").is_err() && at_least_one("-1").is_err());
        assert_eq!(positive_rate("20"), Ok(20.0));
        for bad in ["0", "-5", "inf", "NaN", "fast"] {
            assert!(positive_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn median_takes_the_middle_or_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![]), 0.0);
        assert_eq!(median(vec![7.0]), 7.0);
        assert_eq!(median(vec![9.0, 1.0, 5.0]), 5.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
    }

    #[test]
    fn ratios_are_medians_of_each_rounds_own_ratio() {
        // Round 2's raw is twice as fast; its courier is too. A ratio of medians would
        // say 0.5x; every round says 0.1x, and so does the report.
        let mut r = Report::default();
        r.summarize(vec![round(100.0, 10.0), round(200.0, 20.0), round(400.0, 40.0)]);
        assert_eq!((r.throughput.raw_cps, r.throughput.courier_cps), (200.0, 20.0));
        assert!((r.throughput.courier_ratio - 0.1).abs() < 1e-12 && (r.throughput.eos_ratio - 0.05).abs() < 1e-12, "{r:?}");
        assert_eq!((r.rounds, r.per_round.len()), (3, 3));
        let skewed = [round(100.0, 30.0), round(400.0, 20.0), round(200.0, 20.0)];
        r.summarize(skewed.to_vec());
        assert_eq!(r.throughput.courier_ratio, 0.1, "median of 0.3, 0.05 and 0.1");
    }

    #[test]
    fn without_raw_there_are_no_ratios() {
        let mut r = Report::default();
        r.summarize(vec![round(0.0, 10.0)]);
        assert_eq!((r.throughput.courier_cps, r.throughput.courier_ratio, r.throughput.outputs_ratio), (10.0, 0.0, 0.0));
    }

    #[test]
    fn the_table_shows_the_spread_only_over_several_rounds() {
        let mut r = Report::default();
        r.summarize(vec![round(100.0, 10.0)]);
        assert!(!table(&r).contains("medians of"));
        r.summarize(vec![round(100.0, 10.0), round(100.0, 30.0)]);
        let t = table(&r);
        assert!(t.contains("0.10-0.30x") && t.contains("medians of 2 rounds"), "{t}");
    }
}
