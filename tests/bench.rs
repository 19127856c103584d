//! `courier bench` end to end against the real broker, at small counts: every
//! scenario runs, the JSON line carries every key the README and issue #5 name, the
//! ratios are computed from the figures beside them, and a backlog far larger than the
//! worker's prefetch bound leaves its RSS under the 150 MB budget.
//!
//! Throughput figures are only checked to be measured (positive), never against a
//! speed: speed lives in the bench's own side-by-side ratios.

mod common;

use std::process::Command as Proc;

use serde_json::Value;

const KEYS: [&str; 14] = [
    "raw_cps",
    "courier_cps",
    "courier_ratio",
    "eos_cps",
    "eos_ratio",
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
    let out = Proc::new(env!("CARGO_BIN_EXE_courier"))
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

#[test]
fn every_scenario_reports_every_key() {
    let (report, stdout) = bench(&[
        "--messages",
        "3000",
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
    assert!(close(num(&report, "courier_ratio"), num(&report, "courier_cps") / num(&report, "raw_cps")));
    assert!(close(num(&report, "eos_ratio"), num(&report, "eos_cps") / num(&report, "raw_cps")));
    assert!(close(num(&report, "outputs_ratio"), num(&report, "outputs_cps") / num(&report, "raw_cps")));
    assert!(close(num(&report, "slow_key_vs_partition"), num(&report, "slow_key_cps") / num(&report, "slow_partition_cps")));
    let (p50, p99, p999) = (num(&report, "p50_ms"), num(&report, "p99_ms"), num(&report, "p999_ms"));
    assert!(p50 <= p99 && p99 <= p999, "percentiles out of order: {report}");
    assert_eq!(report["messages"], 3000);
    assert_eq!(report["backlog"], 20000);
    for row in ["raw (rdkafka loop)", "courier (at-least-once)", "courier-eos (exactly-once)", "courier outputs alone", "ordering=key", "ordering=partition", "p99.9"] {
        assert!(stdout.contains(row), "table has no {row:?} row:\n{stdout}");
    }
}

/// 200,000 queued commands over 6 partitions is over three times what the worker may
/// prefetch (10,000 records or 4 MB per partition) plus its in-flight bound, so an
/// unbounded queue would show; the bounded one stays far under the budget.
#[test]
fn a_large_backlog_leaves_worker_rss_bounded() {
    let (report, _) = bench(&["--only", "backlog", "--backlog", "200000"]);
    let rss = num(&report, "backlog_rss_mb");
    assert!(rss > 10.0 && rss < 150.0, "worker peak RSS with 200,000 queued commands: {rss:.1} MB");
}
