//! Cancellation (queued, running, a handler that ignores its token, sent before the
//! worker started) and duplicate suppression.

mod common;

use std::time::Duration;

use courier::{Client, NewCommand, State};
use serde_json::json;

async fn final_of(t: &common::TestTopics, id: uuid::Uuid) -> courier::ResultEvent {
    let seen = common::collect_results(t, Duration::from_secs(60), |s| s.iter().any(|e| e.event.command_id() == id && e.event.state().is_final()));
    seen.into_iter().find(|e| e.event.command_id() == id && e.event.state().is_final()).unwrap().event
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_queued_running_and_stubborn() {
    let t = common::fresh_topics("cancel", 1).await;
    let w = common::WorkerProc::spawn(&t, "cancel-1", &[]);
    assert!(w.wait_for_log("partitions assigned", Duration::from_secs(60)), "{}", w.log_text());
    let client = Client::new(t.kafka.clone()).unwrap();

    let blocker = client.submit(NewCommand::new("sleep", json!({"ms": 2500, "steps": 1})).key("K")).await.unwrap();
    let queued = client.submit(NewCommand::new("sleep", json!({"ms": 10, "steps": 1})).key("K")).await.unwrap();
    let running = client.submit(NewCommand::new("sleep", json!({"ms": 60_000, "steps": 60})).key("R")).await.unwrap();
    let stubborn = client.submit(NewCommand::new("sleep", json!({"ms": 9_000, "steps": 1, "ignore_cancel": true})).key("S")).await.unwrap();
    common::collect_results(&t, Duration::from_secs(30), |s| {
        [running, stubborn].iter().all(|id| s.iter().any(|e| e.event.command_id() == *id && e.event.state() == State::Started))
    });
    for id in [queued, running, stubborn] {
        client.cancel(id, Some("test".into())).await.unwrap();
    }

    let q = final_of(&t, queued).await;
    assert_eq!(q.state(), State::Cancelled);
    assert_eq!(q.data.timing.execution_ms, 0, "a queued command is skipped, never run");
    assert_eq!(final_of(&t, blocker).await.state(), State::Completed);
    let r = final_of(&t, running).await;
    assert_eq!(r.state(), State::Cancelled);
    assert!(r.data.timing.execution_ms < 10_000, "{:?}", r.data.timing);
    let s = final_of(&t, stubborn).await;
    assert_eq!(s.state(), State::Cancelled, "a handler ignoring its token still ends cancelled");
    assert!(s.data.timing.execution_ms >= 4_000, "it was given the grace period: {:?}", s.data.timing);
    assert!(w.log_text().contains("ignored its cancellation token"));
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_sent_before_the_worker_started_is_honoured() {
    let t = common::fresh_topics("cancel-early", 2).await;
    let client = Client::new(t.kafka.clone()).unwrap();
    let id = client.submit(NewCommand::new("echo", json!({"x": 1}))).await.unwrap();
    client.cancel(id, None).await.unwrap();
    let _w = common::WorkerProc::spawn(&t, "late-1", &[]);
    let ev = final_of(&t, id).await;
    assert_eq!(ev.state(), State::Cancelled);
    assert_eq!(ev.data.timing.execution_ms, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_finished_command_is_not_run_again() {
    let t = common::fresh_topics("dupes", 2).await;
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let w = common::WorkerProc::spawn(&t, "dupe-1", &["--metrics-addr", &addr]);
    assert!(w.wait_for_log("partitions assigned", Duration::from_secs(60)), "{}", w.log_text());
    let (key, value, headers) = NewCommand::new("echo", json!({"once": true})).into_command("//dupe-test").encode();
    let id = courier::Command::peek_id(&headers).unwrap();
    common::produce_raw(&t, &t.topics.commands, Some(&key), Some(&value), &headers, None).await;
    assert_eq!(final_of(&t, id).await.state(), State::Completed);
    for _ in 0..3 {
        common::produce_raw(&t, &t.topics.commands, Some(&key), Some(&value), &headers, None).await;
    }
    assert_eq!(common::wait_for_zero_lag(&t, &common::worker_group(&t), &t.topics.commands, Duration::from_secs(20)), 0);
    let seen = common::read_all_results(&t);
    let finals = seen.iter().filter(|s| s.event.command_id() == id && s.event.state().is_final()).count();
    assert_eq!(finals, 1, "duplicates were acknowledged without running");
    assert_eq!(common::scrape(port, "courier_duplicates_total"), Some(3.0), "and counted");

    // A worker of another group reads all four records again, and knows the id from
    // the results topic it warmed its cache from.
    let late = common::WorkerProc::spawn_in_group(&t, "dupe-2", "another-group", &[]);
    assert!(late.wait_for_log("partitions assigned", Duration::from_secs(60)));
    assert_eq!(common::wait_for_zero_lag(&t, "another-group", &t.topics.commands, Duration::from_secs(30)), 0);
    let seen = common::read_all_results(&t);
    assert_eq!(seen.iter().filter(|s| s.event.command_id() == id && s.event.state().is_final()).count(), 1);
}
