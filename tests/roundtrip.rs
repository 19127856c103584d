//! Request/reply through the real broker: `submit_and_wait` returns the handler's
//! result; a handler error comes back as a `failed` event with its code and message.

mod common;

use std::time::Duration;

use courier::{Client, NewCommand, State};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn submit_and_wait_returns_results_and_errors() {
    let t = common::fresh_topics("roundtrip", 3).await;
    let worker = common::WorkerProc::spawn(&t, "rt-1", &[]);
    let client = Client::new(t.kafka.clone()).unwrap();
    let wait = Duration::from_secs(60);

    let done = client.submit_and_wait(NewCommand::new("primes", json!({"n": 1000})), wait).await.unwrap();
    assert_eq!(done.state(), State::Completed, "{:?}", worker.log_text());
    assert_eq!(done.data.result, Some(json!({"n": 1000, "primes": 168})));
    assert_eq!(done.data.worker, "rt-1");
    assert_eq!(done.data.timing.attempts, 1);

    let failed = client
        .submit_and_wait(NewCommand::new("fail", json!({"code": "card_declined", "message": "no funds"})).key("acct-7"), wait)
        .await
        .unwrap();
    assert_eq!(failed.state(), State::Failed);
    let err = failed.data.error.expect("failed event carries an error");
    assert_eq!((err.code.as_str(), err.message.as_str(), err.retryable), ("card_declined", "no funds", false));
    assert_eq!(failed.key, b"acct-7", "result keyed like its command");
    assert_eq!(failed.data.key.as_deref(), Some("acct-7"));

    // A command whose deadline already passed is not run.
    let late = NewCommand::new("sleep", json!({"ms": 10})).deadline(chrono::Utc::now() - chrono::Duration::seconds(1));
    let timed_out = client.submit_and_wait(late, wait).await.unwrap();
    assert_eq!(timed_out.state(), State::TimedOut);
    assert_eq!(timed_out.data.timing.execution_ms, 0);

    // A handler still running at its deadline is cancelled and reported timed_out.
    let slow = NewCommand::new("sleep", json!({"ms": 20_000, "steps": 20})).deadline_in(Duration::from_millis(800));
    let cut = client.submit_and_wait(slow, wait).await.unwrap();
    assert_eq!(cut.state(), State::TimedOut);
    assert!(cut.data.timing.execution_ms < 10_000, "{:?}", cut.data.timing);
}

#[tokio::test(flavor = "multi_thread")]
async fn progress_and_started_precede_the_final_event() {
    let t = common::fresh_topics("progress", 1).await;
    let _worker = common::WorkerProc::spawn(&t, "pg-1", &[]);
    let client = Client::new(t.kafka.clone()).unwrap();
    let done = client
        .submit_and_wait(NewCommand::new("sleep", json!({"ms": 200, "steps": 4})), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(done.state(), State::Completed);
    let id = done.command_id();
    let seen = common::collect_results(&t, Duration::from_secs(30), |s| s.iter().any(|e| e.event.state().is_final()));
    let states: Vec<State> = seen.iter().filter(|s| s.event.command_id() == id).map(|s| s.event.state()).collect();
    assert_eq!(states, vec![State::Started, State::Progress, State::Progress, State::Progress, State::Completed]);
    let percents: Vec<f32> =
        seen.iter().filter_map(|s| s.event.data.progress.as_ref().map(|p| p.percent)).collect();
    assert_eq!(percents, vec![25.0, 50.0, 75.0]);

    // The compacted status topic ends with the final snapshot of the operation.
    let status = common::TopicReader::new(&t, &t.topics.status).poll_raw(Duration::from_secs(5));
    let snapshots: Vec<_> = status
        .iter()
        .filter_map(|(_, _, _, value, _)| courier::envelope::OperationSnapshot::decode(value.as_deref()).unwrap())
        .filter(|s| s.command_id == id)
        .collect();
    let last = snapshots.last().expect("snapshots for the command");
    assert_eq!(last.state, State::Completed);
    assert_eq!(last.result, Some(json!({"slept_ms": 200})));
    assert_eq!(last.worker.as_deref(), Some("pg-1"));
    assert!(snapshots.iter().any(|s| s.state == State::Started));
    assert!(snapshots.iter().any(|s| s.progress.as_ref().is_some_and(|p| p.percent == 50.0)));

    // `started` comes once a handler has run for --started-after (100 ms by default):
    // a fast command gets only its final event, a slow one without progress gets both.
    let fast = client.submit_and_wait(NewCommand::new("echo", json!({"x": 1})), Duration::from_secs(60)).await.unwrap();
    let slow = client.submit_and_wait(NewCommand::new("sleep", json!({"ms": 400, "steps": 1})), Duration::from_secs(60)).await.unwrap();
    let (fast, slow) = (fast.command_id(), slow.command_id());
    let seen = common::collect_results(&t, Duration::from_secs(30), |s| {
        s.iter().any(|e| e.event.command_id() == slow && e.event.state().is_final())
    });
    let states = |id| seen.iter().filter(|s| s.event.command_id() == id).map(|s| s.event.state()).collect::<Vec<_>>();
    assert_eq!(states(fast), vec![State::Completed]);
    assert_eq!(states(slow), vec![State::Started, State::Completed]);
}

/// `courier status` prints the latest snapshot; `--wait` follows a running command
/// to its end; an id never seen exits 1, a wait that runs out exits 2.
#[tokio::test(flavor = "multi_thread")]
async fn status_command_reports_snapshots() {
    let t = common::fresh_topics("status", 2).await;
    let _worker = common::WorkerProc::spawn(&t, "st-1", &[]);
    let client = Client::new(t.kafka.clone()).unwrap();
    let courier = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_courier"));
        cmd.env("COURIER_INSECURE_NO_AUTH", "true");
        cmd.arg("status").args(["--bootstrap", &t.kafka.bootstrap, "--prefix", &t.kafka.prefix]).args(args);
        cmd.output().expect("run courier status")
    };
    let done = client.submit_and_wait(NewCommand::new("primes", json!({"n": 100})), Duration::from_secs(60)).await.unwrap();
    let id = done.command_id().to_string();
    let out = courier(&[&id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let snapshot: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!((snapshot["state"].as_str(), snapshot["result"]["primes"].as_u64()), (Some("completed"), Some(25)));

    let slow = client.submit(NewCommand::new("sleep", json!({"ms": 1500}))).await.unwrap().to_string();
    let out = courier(&["--wait", "200ms", &slow]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    let out = courier(&["--wait", "60s", &slow]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let snapshot: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(snapshot["state"], "completed");

    let out = courier(&[&courier::envelope::new_id().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let out = courier(&["not-a-uuid"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("invalid"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_client_still_submits_but_refuses_to_wait() {
    let t = common::fresh_topics("rt-close", 1).await;
    let _worker = common::WorkerProc::spawn(&t, "rt-close-1", &[]);
    let client = Client::new(t.kafka.clone()).unwrap();
    let wait = Duration::from_secs(60);
    let echo = || NewCommand::new("echo", json!({"a": 1}));
    assert_eq!(client.submit_and_wait(echo(), wait).await.unwrap().state(), State::Completed);
    let clone = client.clone();
    client.close().await;
    client.close().await; // twice is harmless
    // At once, not after the timeout: nothing would ever answer the wait.
    let refused = tokio::time::timeout(Duration::from_secs(5), clone.submit_and_wait(echo(), wait)).await.expect("no hang");
    assert!(matches!(refused, Err(courier::ClientError::ListenerGone)), "{refused:?}");
    let id = clone.submit(echo()).await.expect("a closed client still submits");
    assert_eq!(clone.wait(id, wait).await.unwrap().state, State::Completed, "and the command still runs");
}
