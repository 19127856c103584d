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
