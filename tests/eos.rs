//! Exactly-once mode: a worker killed mid-stream leaves exactly one final event per
//! command among committed records. Duplicate suppression is switched off here
//! (`--dedupe-capacity 1`) so the transaction alone carries the guarantee.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use courier::{Client, NewCommand, State};
use serde_json::json;

const FLAGS: [&str; 3] = ["--exactly-once", "--dedupe-capacity", "1"];

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_in_exactly_once_mode_leaves_one_final_event_per_command() {
    const N: usize = 3_000;
    let t = common::fresh_topics("eos", 6).await;
    let mut victim = common::WorkerProc::spawn(&t, "eos-victim", &FLAGS);
    let survivor = common::WorkerProc::spawn(&t, "eos-survivor", &FLAGS);
    for w in [&victim, &survivor] {
        assert!(w.wait_for_log("partitions assigned", Duration::from_secs(60)), "{}", w.log_text());
    }
    let client = Client::new(t.kafka.clone()).unwrap();
    let commands = (0..N).map(|i| NewCommand::new("sleep", json!({"ms": 40, "steps": 1})).key(format!("k{}", i % 30)));
    let ids: HashSet<uuid::Uuid> = client.submit_batch(commands.collect()).await.unwrap().into_iter().collect();

    let before = common::collect_results(&t, Duration::from_secs(120), |s| {
        s.iter().filter(|e| e.event.state().is_final() && e.event.data.worker == "eos-victim").count() >= 300
    });
    victim.sigkill();
    let done_at_kill = common::count_distinct_finals(&before);
    assert!(done_at_kill < N * 2 / 3, "the kill must land mid-stream ({done_at_kill} of {N} done)");
    // Same worker id, so the same transactional id: its open transaction is fenced.
    let _restarted = common::WorkerProc::spawn(&t, "eos-victim", &FLAGS);

    let seen = common::collect_results(&t, Duration::from_secs(240), |s| common::count_distinct_finals(s) >= N);
    let finals = common::finals_by_command(&seen);
    assert_eq!(finals.len(), N);
    assert!(finals.keys().all(|id| ids.contains(id)));
    let duplicated = finals.values().filter(|v| v.len() > 1).count();
    println!("exactly-once: SIGKILL with {done_at_kill} of {N} done; {duplicated} commands with more than one committed final event");
    assert_eq!(duplicated, 0, "exactly one committed final event per command");
    assert!(finals.values().all(|v| v[0].event.state() == State::Completed));
    assert_eq!(common::wait_for_zero_lag(&t, &common::worker_group(&t), &t.topics.commands, Duration::from_secs(30)), 0);
}
