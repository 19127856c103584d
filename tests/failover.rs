//! Workers dying and joining mid-stream: no command is lost; duplicates come only
//! from work the dead worker had not committed, and are counted.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use courier::{Client, NewCommand};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_stream_loses_nothing() {
    const N: usize = 3_000;
    let t = common::fresh_topics("kill", 6).await;
    let mut victim = common::WorkerProc::spawn(&t, "victim", &[]);
    let (p1, p2) = (common::free_port(), common::free_port());
    let survivor = common::WorkerProc::spawn(&t, "survivor", &["--metrics-addr", &format!("127.0.0.1:{p1}")]);
    for w in [&victim, &survivor] {
        assert!(w.wait_for_log("partitions assigned", Duration::from_secs(60)), "{}", w.log_text());
    }
    let client = Client::new(t.kafka.clone()).unwrap();
    // 30 keys of 100 commands each, 40 ms apiece: key order makes each chain take
    // seconds, so the kill lands with work genuinely in flight.
    let commands = (0..N).map(|i| NewCommand::new("sleep", json!({"ms": 40, "steps": 1})).key(format!("k{}", i % 30)));
    let ids: HashSet<uuid::Uuid> = client.submit_batch(commands.collect()).await.unwrap().into_iter().collect();

    // Let the victim get going, then kill it without warning.
    let before = common::collect_results(&t, Duration::from_secs(120), |s| {
        s.iter().filter(|e| e.event.state().is_final() && e.event.data.worker == "victim").count() >= 300
    });
    victim.sigkill();
    let done_at_kill = common::count_distinct_finals(&before);
    assert!(done_at_kill < N * 2 / 3, "the kill must land mid-stream ({done_at_kill} of {N} done)");
    let _restarted = common::WorkerProc::spawn(&t, "victim-2", &["--metrics-addr", &format!("127.0.0.1:{p2}")]);

    let seen = common::collect_results(&t, Duration::from_secs(240), |s| common::count_distinct_finals(s) >= N);
    let finals = common::finals_by_command(&seen);
    assert_eq!(finals.len(), N);
    assert!(finals.keys().all(|id| ids.contains(id)));
    let duplicated: Vec<_> = finals.values().filter(|v| v.len() > 1).collect();
    let suppressed: f64 = [p1, p2].iter().filter_map(|p| common::scrape(*p, "courier_duplicates_total")).sum();
    println!(
        "SIGKILL with {done_at_kill} of {N} done: {} commands ran twice; {suppressed} redelivered records \
         were recognised as finished and skipped",
        duplicated.len()
    );
    for events in &duplicated {
        assert_eq!(
            events[0].event.data.worker, "victim",
            "only commands the killed worker had in flight (uncommitted) may run again"
        );
    }
    assert!(duplicated.len() <= 1_024 + 300, "duplicates bounded by in-flight work");
}

#[tokio::test(flavor = "multi_thread")]
async fn joining_worker_takes_over_partitions() {
    const N: usize = 2_000;
    let t = common::fresh_topics("join", 6).await;
    let first = common::WorkerProc::spawn(&t, "first", &[]);
    assert!(first.wait_for_log("partitions assigned", Duration::from_secs(60)));
    let client = Client::new(t.kafka.clone()).unwrap();
    // 20 keys of 100 commands, 50 ms each: chains of ~5 s, long enough to join into.
    let commands = (0..N).map(|i| NewCommand::new("sleep", json!({"ms": 50, "steps": 1})).key(format!("k{}", i % 20)));
    client.submit_batch(commands.collect()).await.unwrap();

    common::collect_results(&t, Duration::from_secs(120), |s| common::count_distinct_finals(s) >= 200);
    let second = common::WorkerProc::spawn(&t, "second", &[]);
    let seen = common::collect_results(&t, Duration::from_secs(240), |s| common::count_distinct_finals(s) >= N);
    assert_eq!(common::count_distinct_finals(&seen), N);
    let by_second = seen.iter().filter(|s| s.event.state().is_final() && s.event.data.worker == "second").count();
    assert!(by_second > 0, "the joining worker ran commands");
    assert!(first.log_text().contains("partitions revoked"), "rebalance observed on the first worker");
    assert!(second.log_text().contains("partitions assigned"));
    let dups: usize = common::finals_by_command(&seen).values().map(|v| v.len() - 1).sum();
    println!("join: {by_second} commands ran on the joining worker; {dups} duplicates");
    assert_eq!(dups, 0, "a graceful rebalance drains and commits: no replays");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_and_exits_cleanly() {
    let t = common::fresh_topics("term", 2).await;
    let mut w = common::WorkerProc::spawn(&t, "term-1", &[]);
    assert!(w.wait_for_log("partitions assigned", Duration::from_secs(60)));
    let client = Client::new(t.kafka.clone()).unwrap();
    let commands = (0..20).map(|i| NewCommand::new("sleep", json!({"ms": 1500, "steps": 1})).key(format!("k{i}")));
    client.submit_batch(commands.collect()).await.unwrap();
    common::collect_results(&t, Duration::from_secs(60), |s| s.iter().filter(|e| e.event.data.state == courier::State::Started).count() >= 20);
    let status = w.terminate().expect("worker exits after SIGTERM");
    assert!(status.success(), "clean exit: {status:?}\n{}", w.log_text());
    let seen = common::collect_results(&t, Duration::from_secs(30), |s| common::count_distinct_finals(s) >= 20);
    assert_eq!(common::count_distinct_finals(&seen), 20, "in-flight work finished within the grace period");
}
