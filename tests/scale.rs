//! 10,000 commands across 6 partitions and 2 worker processes: every command gets
//! exactly one distinct final event, keyed like its command, in per-key order.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use courier::{Client, NewCommand, State};
use serde_json::json;

const COMMANDS: usize = 10_000;
const KEYS: usize = 200;

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_commands_two_workers() {
    let t = common::fresh_topics("scale", 6).await;
    let w1 = common::WorkerProc::spawn(&t, "scale-1", &[]);
    let w2 = common::WorkerProc::spawn(&t, "scale-2", &[]);
    for w in [&w1, &w2] {
        assert!(w.wait_for_log("partitions assigned", Duration::from_secs(60)), "{}", w.log_text());
    }

    let client = Client::new(t.kafka.clone()).unwrap();
    let commands: Vec<NewCommand> = (0..COMMANDS)
        .map(|i| NewCommand::new("echo", json!({"seq": i / KEYS})).key(format!("key-{}", i % KEYS)))
        .collect();
    let ids = client.submit_batch(commands).await.unwrap();
    let submitted: HashMap<uuid::Uuid, (String, u64)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (*id, (format!("key-{}", i % KEYS), (i / KEYS) as u64)))
        .collect();

    let seen = common::collect_results(&t, Duration::from_secs(240), |s| common::count_distinct_finals(s) >= COMMANDS);
    let finals = common::finals_by_command(&seen);
    assert_eq!(finals.len(), COMMANDS, "distinct final events");
    let duplicates: usize = finals.values().map(|v| v.len() - 1).sum();
    println!("final events: {} distinct, {duplicates} duplicates", finals.len());

    let mut workers = HashSet::new();
    let mut per_key: HashMap<&str, Vec<u64>> = HashMap::new();
    let mut by_partition: Vec<&common::Seen> = seen.iter().filter(|s| s.event.state().is_final()).collect();
    by_partition.sort_by_key(|s| (s.partition, s.offset));
    let mut first_seen = HashSet::new();
    for s in by_partition {
        let id = s.event.command_id();
        let (key, seq) = submitted.get(&id).expect("a final event for a command we sent");
        assert_eq!(s.event.key, key.as_bytes(), "result keyed like its command");
        assert_eq!(s.event.state(), State::Completed);
        assert_eq!(s.event.data.result, Some(json!({"echo": {"seq": seq}})));
        workers.insert(s.event.data.worker.clone());
        if first_seen.insert(id) {
            per_key.entry(key.as_str()).or_default().push(*seq);
        }
    }
    assert_eq!(workers.len(), 2, "both workers took part: {workers:?}");
    for (key, seqs) in &per_key {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "per-key order broken for {key}: {seqs:?}");
        assert_eq!(seqs.len(), COMMANDS / KEYS);
    }
    assert_eq!(duplicates, 0, "no worker died and none joined mid-stream, so no replays");
}

/// Copies of one command queued back to back on one key (a producer's retried send, a
/// replayed batch) run once: the first copy's final event counts as decided the
/// moment its lane goes on to the next record (before the broker acknowledges it), so
/// each later copy is a duplicate, and the key's other commands keep their order.
#[tokio::test(flavor = "multi_thread")]
async fn copies_of_a_command_queued_behind_it_run_once() {
    const DISTINCT: usize = 300;
    const COPIES: usize = 3;
    let t = common::fresh_topics("copies", 1).await;
    let mut ids = Vec::new();
    for seq in 0..DISTINCT {
        let command = NewCommand::new("echo", json!({ "seq": seq })).key("one-key").into_command("//test/copies");
        let (key, value, headers) = command.encode();
        for _ in 0..COPIES {
            common::produce_raw(&t, &t.topics.commands, Some(&key), Some(&value), &headers, None).await;
        }
        ids.push(command.id);
    }
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let w = common::WorkerProc::spawn(&t, "copies-1", &["--metrics-addr", &addr]);
    let seen = common::collect_results(&t, Duration::from_secs(120), |s| common::count_distinct_finals(s) >= DISTINCT);
    assert_eq!(common::count_distinct_finals(&seen), DISTINCT, "{}", w.log_text());
    // Every copy has been taken by now (the lag is 0), and none made a second event.
    assert_eq!(common::wait_for_zero_lag(&t, &common::worker_group(&t), &t.topics.commands, Duration::from_secs(60)), 0);
    let seen = common::read_all_results(&t);
    let finals = common::finals_by_command(&seen);
    let twice: Vec<_> = finals.iter().filter(|(_, v)| v.len() > 1).map(|(id, _)| *id).collect();
    assert!(twice.is_empty(), "{} commands got more than one final event", twice.len());
    let order: Vec<u64> = seen
        .iter()
        .filter(|s| s.event.data.state == State::Completed)
        .filter_map(|s| s.event.data.result.as_ref()?.get("echo")?.get("seq")?.as_u64())
        .collect();
    assert_eq!(order, (0..DISTINCT as u64).collect::<Vec<_>>(), "one key's results in command order");
    assert_eq!(common::scrape(port, "courier_duplicates_total"), Some(((COPIES - 1) * DISTINCT) as f64));
    assert!(ids.iter().all(|id| finals.contains_key(id)));
}

/// A worker that starts on a backlog runs it in key order from its first assignment:
/// records fetched before a partition gets its own queue (while the assignment is
/// being set up) are admitted before that queue's, never after.
#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_runs_in_key_order_from_the_first_assignment() {
    // More than a partition's prefetch (4 MB), so both queues hold records at the switch.
    const BACKLOG: usize = 60_000;
    let t = common::fresh_topics("backlog-order", 6).await;
    let client = Client::new(t.kafka.clone()).unwrap();
    let commands: Vec<NewCommand> = (0..BACKLOG)
        .map(|i| NewCommand::new("echo", json!({"seq": i / KEYS})).key(format!("key-{}", i % KEYS)))
        .collect();
    let ids = client.submit_batch(commands).await.unwrap();
    let seq_of: HashMap<uuid::Uuid, u64> = ids.iter().enumerate().map(|(i, id)| (*id, (i / KEYS) as u64)).collect();
    let w = common::WorkerProc::spawn(&t, "backlog-1", &[]);
    let seen = common::collect_results(&t, Duration::from_secs(240), |s| common::count_distinct_finals(s) >= BACKLOG);
    let mut finals: Vec<&common::Seen> = seen.iter().filter(|s| s.event.state().is_final()).collect();
    finals.sort_by_key(|s| (s.partition, s.offset));
    let mut per_key: HashMap<Vec<u8>, Vec<u64>> = HashMap::new();
    for s in finals {
        per_key.entry(s.event.key.clone()).or_default().push(seq_of[&s.event.command_id()]);
    }
    assert_eq!(per_key.len(), KEYS);
    for (key, seqs) in &per_key {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "per-key order broken for {}: {seqs:?}", String::from_utf8_lossy(key));
    }
    drop(w);
}
