//! `courier bench` end to end against the real broker, at small counts: every
//! scenario runs, the JSON line carries every key the README and issue #5 name, each
//! round's ratios are computed from its own figures and the headline figures are the
//! medians over the rounds, the bench deletes every topic it made, and a backlog far
//! larger than the worker's prefetch bound leaves its RSS under the 150 MB budget.
//!
//! Throughput figures are only checked to be measured (positive), never against a
//! speed: speed lives in the bench's own side-by-side ratios.

mod common;

use std::collections::HashSet;
use std::process::Command as Proc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use serde_json::Value;

/// One bench at a time: they compete for the same cores, and the topic check below
/// must not see another bench's topics come and go.
static ONE_BENCH: Mutex<()> = Mutex::new(());

const KEYS: [&str; 17] = [
    "raw_cps",
    "courier_cps",
    "courier_ratio",
    "eos_cps",
    "eos_ratio",
    "http_cps",
    "http_ratio",
    "http_vs_courier",
    "outputs_cps",
    "outputs_ratio",
    "slow_key_cps",
    "slow_partition_cps",
    "slow_key_vs_partition",
    "p50_ms",
    "p99_ms",
    "p999_ms",
    "backlog_rss_mb",
];

fn bench(args: &[&str]) -> (Value, String) {
    let out = Proc::new(env!("CARGO_BIN_EXE_courier")).env("COURIER_INSECURE_NO_AUTH", "true")
        .args(["bench", "--bootstrap", &common::bootstrap(), "--json"])
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run courier bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "courier bench failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let last = stdout.lines().last().expect("bench printed nothing");
    (serde_json::from_str(last).expect("last line is one JSON object"), stdout)
}

fn num(report: &Value, key: &str) -> f64 {
    report[key].as_f64().unwrap_or_else(|| panic!("{key} missing or not a number in {report}"))
}

fn bench_topics() -> HashSet<String> {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", common::bootstrap()).create().expect("metadata client");
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10)).expect("cluster metadata");
    metadata.topics().iter().map(|t| t.name().to_string()).filter(|n| n.starts_with("bench-")).collect()
}

/// Fails unless every bench topic made since `before` is gone within 30 s (deletion
/// completes asynchronously on the broker).
fn assert_no_bench_topics_left(before: &HashSet<String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let left = loop {
        let left: Vec<String> = bench_topics().difference(before).cloned().collect();
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(left.is_empty(), "the bench left {} topics behind: {left:?}", left.len());
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

#[test]
fn every_scenario_reports_every_key() {
    let _one = ONE_BENCH.lock().unwrap_or_else(|p| p.into_inner());
    let before = bench_topics();
    let (report, stdout) = bench(&[
        "--messages",
        "3000",
        "--rounds",
        "3",
        "--slow-messages",
        "60",
        "--latency-for",
        "2s",
        "--backlog",
        "20000",
    ]);
    for key in KEYS {
        assert!(num(&report, key) > 0.0, "{key} was not measured: {report}");
    }
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
    let rounds = report["per_round"].as_array().expect("per_round is a list");
    assert_eq!((report["rounds"].as_u64(), rounds.len()), (Some(3), 3), "{report}");
    for round in rounds {
        for (ratio, cps) in [("courier_ratio", "courier_cps"), ("eos_ratio", "eos_cps"), ("http_ratio", "http_cps"), ("outputs_ratio", "outputs_cps")] {
            assert!(num(round, cps) > 0.0, "{cps} not measured in a round: {report}");
            assert!(close(num(round, ratio), num(round, cps) / num(round, "raw_cps")), "{ratio} of a round: {report}");
        }
    }
    for round in rounds {
        assert!(close(num(round, "http_vs_courier"), num(round, "http_cps") / num(round, "courier_cps")), "http_vs_courier of a round: {report}");
    }
    for key in ["raw_cps", "courier_cps", "courier_ratio", "eos_cps", "eos_ratio", "http_cps", "http_ratio", "http_vs_courier", "outputs_cps", "outputs_ratio"] {
        let medians = median(rounds.iter().map(|r| num(r, key)).collect());
        assert!(close(num(&report, key), medians), "{key} is not the median of the rounds: {report}");
    }
    assert!(close(num(&report, "slow_key_vs_partition"), num(&report, "slow_key_cps") / num(&report, "slow_partition_cps")));
    let (p50, p99, p999) = (num(&report, "p50_ms"), num(&report, "p99_ms"), num(&report, "p999_ms"));
    assert!(p50 <= p99 && p99 <= p999, "percentiles out of order: {report}");
    assert_eq!(report["messages"], 3000);
    assert_eq!(report["backlog"], 20000);
    for row in ["raw (rdkafka loop)", "courier (at-least-once)", "courier-eos (exactly-once)", "courier + HTTP handler", "HTTP vs in-process", "courier outputs alone", "medians of 3 rounds", "ordering=key", "ordering=partition", "p99.9"] {
        assert!(stdout.contains(row), "table has no {row:?} row:\n{stdout}");
    }
    // Fifteen throughput scenarios, two slow ones, latency and backlog each made their
    // topics; none may be left (deletion completes asynchronously on the broker).
    assert_no_bench_topics_left(&before);
}

/// 200,000 queued commands over 6 partitions is over three times what the worker may
/// prefetch (10,000 records or 4 MB per partition) plus its in-flight bound, so an
/// unbounded queue would show; the bounded one stays far under the budget.
#[test]
fn a_large_backlog_leaves_worker_rss_bounded() {
    let _one = ONE_BENCH.lock().unwrap_or_else(|p| p.into_inner());
    let (report, _) = bench(&["--only", "backlog", "--backlog", "200000"]);
    let rss = num(&report, "backlog_rss_mb");
    assert!(rss > 10.0 && rss < 150.0, "worker peak RSS with 200,000 queued commands: {rss:.1} MB");
}

/// `--peers` end to end at small counts: the Java peers are built with Maven, each
/// worker runs as a process of its own, every result is checked, and every figure the
/// README's table shows is measured: commands/s, worker and broker CPU per command
/// (the broker's pid comes from scripts/kafka.sh), peak RSS, the slow scenario and the
/// round trip at a steady rate.
#[test]
fn peers_run_side_by_side_and_every_result_is_checked() {
    let _one = ONE_BENCH.lock().unwrap_or_else(|p| p.into_inner());
    let before = bench_topics();
    let (report, stdout) = bench(&[
        "--peers",
        "--workers",
        "raw-java,courier",
        "--messages",
        "3000",
        "--rounds",
        "2",
        "--slow-commands",
        "300",
        "--latency-commands",
        "40",
    ]);
    assert!(report["skipped"].as_array().is_some_and(Vec::is_empty), "nothing may be skipped here: {report}");
    let rounds = report["per_round"].as_array().expect("per_round is a list");
    assert_eq!(rounds.len(), 2, "{report}");
    for round in rounds {
        let workers: Vec<&str> = round.as_array().expect("a round is a list").iter().map(|m| m["worker"].as_str().unwrap_or("")).collect();
        assert_eq!(workers, ["raw-java", "courier"], "{report}");
        for m in round.as_array().into_iter().flatten() {
            assert!(m.get("failed").is_none(), "a worker failed its checks: {m}");
            for key in ["cps", "worker_cpu_us", "broker_cpu_us", "peak_rss_mb"] {
                assert!(num(m, key) > 0.0, "{key} was not measured: {m}");
            }
            for key in ["missing", "miskeyed", "out_of_order"] {
                assert_eq!(m[key], 0, "{m}");
            }
            assert_eq!(m["commands"], 3000);
        }
    }
    let slow: Vec<&str> = report["slow"].as_array().expect("slow").iter().map(|m| m["worker"].as_str().unwrap_or("")).collect();
    assert_eq!(slow, ["courier"], "the raw loop sits the slow scenario out: {report}");
    let latency = report["latency"].as_array().expect("latency");
    assert_eq!(latency.len(), 2, "{report}");
    for l in latency {
        assert!(l.get("failed").is_none(), "{l}");
        let (p50, p99, max) = (num(l, "p50_ms"), num(l, "p99_ms"), num(l, "max_ms"));
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{l}");
        assert_eq!(l["missing"], 0, "{l}");
    }
    for row in ["round 1 of 2", "median over 2 rounds", "slow: 20 ms handler", "round trip at 20/s", "guarantees:"] {
        assert!(stdout.contains(row), "table has no {row:?}:\n{stdout}");
    }
    assert_no_bench_topics_left(&before);
}
