//! The duplicate check, co-partitioned: a command's result events go to the results
//! partition numbered like the command's partition, and a worker reads only the
//! results partitions of the commands partitions it owns, once, when it gets them.
//! Measured with four workers (and a fifth joining mid-run): the bytes the check
//! reads per command. Topics whose partition counts differ are mended by `topics
//! create` where they can be, and refused by the worker where they cannot.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use courier::kafka::KafkaArgs;
use courier::topics::{create_topics, TopicSpec};
use courier::{Client, NewCommand};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use serde_json::json;

const COMMANDS: usize = 4_000;
const KEYS: usize = 400;
const PARTITIONS: i32 = 8;

#[tokio::test(flavor = "multi_thread")]
async fn four_workers_read_only_the_results_of_their_own_partitions() {
    let t = common::fresh_topics("dedupe-read", PARTITIONS).await;
    let ports: Vec<u16> = (0..5).map(|_| common::free_port()).collect();
    let spawn = |i: usize| {
        let addr = format!("127.0.0.1:{}", ports[i]);
        common::WorkerProc::spawn(&t, &format!("dd-{i}"), &["--metrics-addr", &addr])
    };
    let mut workers: Vec<_> = (0..4).map(spawn).collect();
    for w in &workers {
        assert!(w.wait_for_log("partitions assigned", Duration::from_secs(60)), "{}", w.log_text());
    }
    let client = Client::new(t.kafka.clone()).unwrap();
    let batch = |from: usize, to: usize| -> Vec<NewCommand> {
        (from..to).map(|i| NewCommand::new("echo", json!({"seq": i / KEYS, "pad": "x".repeat(200)})).key(format!("key-{}", i % KEYS))).collect()
    };
    client.submit_batch(batch(0, COMMANDS / 2)).await.unwrap();
    common::collect_results(&t, Duration::from_secs(120), |s| common::count_distinct_finals(s) >= COMMANDS / 4);
    // A fifth worker joins mid-run: the partitions it takes over are read for the check
    // with what their previous owners wrote.
    workers.push(spawn(4));
    assert!(workers[4].wait_for_log("partitions assigned", Duration::from_secs(60)), "{}", workers[4].log_text());
    client.submit_batch(batch(COMMANDS / 2, COMMANDS)).await.unwrap();
    let seen = common::collect_results(&t, Duration::from_secs(240), |s| common::count_distinct_finals(s) >= COMMANDS);

    let finals = common::finals_by_command(&seen);
    assert_eq!(finals.len(), COMMANDS);
    let duplicates: usize = finals.values().map(|v| v.len() - 1).sum();
    assert_eq!(duplicates, 0, "graceful rebalances drain and commit: nothing runs twice");

    let results = read_whole(&t, &t.topics.results);
    let written: usize = results.iter().map(size).sum();
    let read: f64 = ports.iter().map(|p| common::scrape(*p, "courier_dedupe_read_bytes_total").expect("the metric")).sum();
    let records: f64 = ports.iter().map(|p| common::scrape(*p, "courier_dedupe_read_records_total").expect("the metric")).sum();
    let per_command = |bytes: f64| bytes / COMMANDS as f64;
    println!(
        "duplicate check with 4 workers and a 5th joining: {read:.0} bytes ({records:.0} records) read in all, {:.1} bytes per command; \
         results written {written} bytes ({:.1} per command); a whole-topic read by every worker would be {:.0} per command",
        per_command(read),
        per_command(written as f64),
        per_command(written as f64) * 5.0,
    );
    // Every result event sits in the partition its command was read from.
    let mut command_partition: HashMap<uuid::Uuid, i32> = HashMap::new();
    for command in read_whole(&t, &t.topics.commands) {
        let id = command.header_str("ce_id").and_then(|id| id.parse().ok()).expect("a command id");
        command_partition.insert(id, command.partition);
    }
    assert_eq!(command_partition.len(), COMMANDS);
    let misplaced = seen.iter().filter(|s| command_partition.get(&s.event.command_id()) != Some(&s.partition)).count();
    assert_eq!(misplaced, 0, "result events in another partition than their command's");

    assert!(records < results.len() as f64, "the check read {records} records, more than the {} results written", results.len());
    assert!(read < written as f64, "the check read {read} bytes, more than the {written} written");
}

#[tokio::test(flavor = "multi_thread")]
async fn partition_counts_that_differ_are_mended_or_refused() {
    // Results with fewer partitions than commands: `topics create` adds the missing ones.
    let fewer = prefixed("dedupe-fewer");
    create_one(&fewer, &fewer.topics().results, 2).await;
    create_topics(&fewer, &spec(4)).await.expect("topics create mends fewer results partitions");
    let partitions = |kafka: &KafkaArgs, topic: &str| courier::kafka::partition_count(kafka, topic).expect("partition count");
    assert_eq!(partitions(&fewer, &fewer.topics().results), 4);

    // More: it cannot take partitions away, says so, and a worker will not start on them.
    let more = prefixed("dedupe-more");
    create_one(&more, &more.topics().results, 8).await;
    let refused = create_topics(&more, &spec(4)).await.expect_err("topics create refuses more results partitions");
    let text = refused.to_string();
    assert!(text.contains(&more.topics().results) && text.contains('8') && text.contains('4'), "{text}");
    let t = common::TestTopics { topics: more.topics(), kafka: more, partitions: 4 };
    let mut w = common::WorkerProc::spawn(&t, "dd-mismatch", &[]);
    let status = w.wait_exit(Duration::from_secs(60)).expect("the worker stops by itself");
    assert!(!status.success());
    let log = w.log_text();
    assert!(log.contains("partitions") && log.contains(&t.topics.results) && log.contains(&t.topics.commands), "{log}");
}

/// Every record of `topic` now.
fn read_whole(t: &common::TestTopics, topic: &str) -> Vec<common::ExactRecord> {
    let mut seen = Vec::new();
    assert!(common::TopicReader::new(t, topic).read_to_end(topic, t.partitions, &mut seen, Duration::from_secs(30)), "read {topic} to its end");
    seen
}

/// A record's bytes as the duplicate check counts them: key, value, headers and each
/// header's framing (`HeaderMap::wire_size`).
fn size(r: &common::ExactRecord) -> usize {
    let mut headers = courier::envelope::HeaderMap::new();
    for (name, value) in &r.headers {
        headers.insert(name, value.as_deref().unwrap_or_default());
    }
    r.key.as_ref().map_or(0, Vec::len) + r.value.as_ref().map_or(0, Vec::len) + headers.wire_size()
}

fn prefixed(name: &str) -> KafkaArgs {
    let suffix = &courier::envelope::new_id().simple().to_string()[20..];
    KafkaArgs::new(common::bootstrap(), format!("t-{name}-{suffix}")).with_env_opts().expect("COURIER_KAFKA_OPTS")
}

fn spec(partitions: i32) -> TopicSpec {
    TopicSpec { partitions, replication: 1, retention_hours: 24, ..TopicSpec::default() }
}

async fn create_one(kafka: &KafkaArgs, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = kafka.client_config().expect("config").create().expect("admin");
    let made = admin.create_topics(&[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))], &AdminOptions::new()).await.expect("create");
    assert!(made.iter().all(Result::is_ok), "{made:?}");
}
