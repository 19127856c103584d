//! Retries through delay tiers without blocking the partition, key order kept behind a
//! retrying command, the attempt limit, and replay from the DLQ.

mod common;

use std::time::Duration;

use courier::{Client, NewCommand, State};
use serde_json::json;

fn tiers() -> Vec<Duration> {
    vec![Duration::from_millis(200), Duration::from_millis(500)]
}

// `started` on every attempt (the default skips it for handlers faster than 100 ms),
// so attempts can be counted.
const RETRY_FLAGS: [&str; 6] = ["--retry-tiers", "200ms,500ms", "--max-attempts", "4", "--started-after", "0s"];

#[tokio::test(flavor = "multi_thread")]
async fn retry_keeps_key_order_and_lets_other_keys_pass() {
    let t = common::fresh_topics_with("retry", 1, tiers()).await;
    let w = common::WorkerProc::spawn(&t, "retry-1", &RETRY_FLAGS);
    assert!(w.wait_for_log("partitions assigned", Duration::from_secs(60)), "{}", w.log_text());
    let client = Client::new(t.kafka.clone()).unwrap();
    let flaky = client.submit(NewCommand::new("flaky", json!({"succeed_on_attempt": 3})).key("A")).await.unwrap();
    let other = client.submit(NewCommand::new("echo", json!({"who": "B"})).key("B")).await.unwrap();
    let same = client.submit(NewCommand::new("echo", json!({"who": "A2"})).key("A")).await.unwrap();

    let seen = common::collect_results(&t, Duration::from_secs(60), |s| common::count_distinct_finals(s) >= 3);
    let order: Vec<_> = seen.iter().filter(|s| s.event.state().is_final()).map(|s| s.event.command_id()).collect();
    let pos = |id| order.iter().position(|x| *x == id).unwrap();
    assert!(pos(other) < pos(flaky), "another key on the same partition finished first");
    assert!(pos(flaky) < pos(same), "the same key waited behind the retrying command");
    let done = seen.iter().find(|s| s.event.command_id() == flaky && s.event.state().is_final()).unwrap();
    assert_eq!(done.event.state(), State::Completed);
    assert_eq!(done.event.data.result, Some(json!({"attempt": 3})));
    assert_eq!(done.event.data.timing.attempts, 3);
    let starts = seen.iter().filter(|s| s.event.command_id() == flaky && s.event.state() == State::Started).count();
    assert_eq!(starts, 3, "three attempts ran");
    assert_eq!(common::wait_for_zero_lag(&t, &common::worker_group(&t), &t.topics.commands, Duration::from_secs(20)), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn exhausted_retries_fail_then_dlq_replay_succeeds() {
    let t = common::fresh_topics_with("replay", 2, tiers()).await;
    let w = common::WorkerProc::spawn(&t, "replay-1", &RETRY_FLAGS);
    assert!(w.wait_for_log("partitions assigned", Duration::from_secs(60)), "{}", w.log_text());
    let client = Client::new(t.kafka.clone()).unwrap();
    let ok_after = chrono::Utc::now() + chrono::Duration::seconds(6);
    let cmd = NewCommand::new("flaky", json!({"succeed_after": courier::envelope::rfc3339(ok_after)})).key("R");
    let failed = client.submit_and_wait(cmd, Duration::from_secs(30)).await.unwrap();
    assert_eq!(failed.state(), State::Failed);
    assert_eq!(failed.data.timing.attempts, 4, "failed after max attempts");
    assert_eq!(failed.data.error.as_ref().unwrap().code, "flaky", "the handler's own error is reported");
    let id = failed.command_id();

    let dlq = client.dead_letters(&Default::default()).await.unwrap();
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].letter.reason, "retries_exhausted");
    assert_eq!(dlq[0].letter.attempts, 4);
    assert!(dlq[0].letter.first_failure < dlq[0].letter.last_failure);

    let bin = env!("CARGO_BIN_EXE_courier");
    let base = ["--bootstrap", &t.kafka.bootstrap, "--prefix", &t.kafka.prefix];
    let dry = std::process::Command::new(bin).args(["dlq", "replay"]).args(base).args(["--reason", "retries_exhausted", "--dry-run"]).output().unwrap();
    assert!(dry.status.success());
    assert!(String::from_utf8_lossy(&dry.stdout).contains("would replay 1 dead letter(s)"));
    let list = std::process::Command::new(bin).args(["dlq", "list"]).args(base).output().unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains(&id.to_string()));

    while chrono::Utc::now() < ok_after {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let replay = std::process::Command::new(bin).args(["dlq", "replay"]).args(base).args(["--id", &id.to_string()]).output().unwrap();
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    let seen = common::collect_results(&t, Duration::from_secs(30), |s| {
        s.iter().any(|e| e.event.command_id() == id && e.event.state() == State::Completed)
    });
    let finals: Vec<State> = seen.iter().filter(|s| s.event.command_id() == id && s.event.state().is_final()).map(|s| s.event.state()).collect();
    assert_eq!(finals, vec![State::Failed, State::Completed], "replayed after the fix, it completes");
}
