//! Point lookups of one operation (`Client::status`, `Client::wait`, `courier status`)
//! on a real broker: Courier computes the partition a key lands on exactly as its
//! producers place it (librdkafka's default and the Java-compatible partitioners, by
//! what the broker holds), and a lookup reads only the id's partition of the status
//! topic, from a little before the time in its UUIDv7 id: a snapshot of the same id
//! put in another partition, or written long before the id was made, is never seen.

mod common;

use std::time::Duration;

use courier::envelope::{OperationSnapshot, ResultEvent, Timing};
use courier::kafka::Partitioner;
use courier::{Client, KafkaArgs, NewCommand, State};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::json;

/// A final snapshot of a command, as a worker writes it.
fn snapshot(command: &courier::envelope::Command, state: State, result: serde_json::Value) -> OperationSnapshot {
    let event = ResultEvent::about(command, "//test", "w", state, Some(result), None, Timing::default());
    OperationSnapshot::after(command, event.data, "w")
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_land_where_the_partitioner_says_for_each_partitioner() {
    let t = common::fresh_topics("lookup-place", 6).await;
    for opts in [vec![], vec!["partitioner=murmur2_random".to_string()], vec!["partitioner=fnv1a_random".to_string()]] {
        let args = KafkaArgs { kafka_opts: opts.clone(), ..t.kafka.clone() };
        let partitioner = Partitioner::configured(&opts).expect("a partitioner Courier computes");
        let client = Client::new(args).unwrap();
        let keys: Vec<String> = (0..300).map(|i| format!("{}-{i}", uuid::Uuid::now_v7())).collect();
        client.submit_batch(keys.iter().map(|k| NewCommand::new("echo", json!({})).key(k.clone())).collect()).await.unwrap();
        let reader = common::TopicReader::new(&t, &t.topics.commands);
        let mut seen = Vec::new();
        assert!(reader.read_to_end(&t.topics.commands, 6, &mut seen, Duration::from_secs(30)));
        let mut checked = 0;
        for r in &seen {
            let key = r.key.as_deref().unwrap();
            if keys.iter().any(|k| k.as_bytes() == key) {
                assert_eq!(Some(r.partition), partitioner.partition(key, 6), "{opts:?}: {}", String::from_utf8_lossy(key));
                checked += 1;
            }
        }
        assert_eq!(checked, 300, "{opts:?}: every key checked");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lookup_reads_only_the_id_s_partition_from_the_id_s_time() {
    let t = common::fresh_topics("lookup-read", 6).await;
    let client = Client::new(t.kafka.clone()).unwrap();
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &t.kafka.bootstrap).create().unwrap();
    let put = |s: &OperationSnapshot, partition: i32, timestamp_ms: Option<i64>| {
        let (key, value, headers) = s.encode("//test");
        let producer = producer.clone();
        let topic = t.topics.status.clone();
        async move {
            let mut record = FutureRecord::to(&topic).key(&key).payload(&value).headers(headers.to_kafka()).partition(partition);
            record.timestamp = timestamp_ms;
            producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
        }
    };
    let home = |id: uuid::Uuid| Partitioner::configured(&[]).unwrap().partition(id.to_string().as_bytes(), 6).unwrap();

    // First in its partition, a snapshot of an id written an hour before the id was
    // made (a clock gone wrong, a foreign writer): outside the lookup's window.
    let late = NewCommand::new("echo", json!({})).into_command("//test");
    let an_hour_before = late.id.get_timestamp().map(|t| t.to_unix().0 as i64 * 1000 - 3_600_000);
    put(&snapshot(&late, State::Failed, json!("stale")), home(late.id), an_hour_before).await;

    // Other operations all over the topic.
    for i in 0..600 {
        let other = NewCommand::new("noise", json!({ "i": i })).into_command("//test");
        put(&snapshot(&other, State::Completed, json!(i)), i % 6, None).await;
    }
    // The operation, done, in its own partition; a decoy of the same id in another.
    let command = NewCommand::new("echo", json!({})).into_command("//test");
    let id = command.id;
    put(&snapshot(&command, State::Failed, json!("decoy")), (home(id) + 1) % 6, None).await;
    put(&snapshot(&command, State::Completed, json!("the real one")), home(id), None).await;
    let status = client.status(id).await.unwrap().expect("found");
    assert_eq!((status.state, status.result.clone()), (State::Completed, Some(json!("the real one"))), "only the id's partition is read");
    let done = client.wait(id, Duration::from_secs(30)).await.unwrap();
    assert_eq!(done.result, Some(json!("the real one")));

    // The stale snapshot is before the window; one written now is found.
    assert!(client.status(late.id).await.unwrap().is_none(), "records from before the id's time are not read");
    put(&snapshot(&late, State::Completed, json!("fresh")), home(late.id), None).await;
    assert_eq!(client.status(late.id).await.unwrap().and_then(|s| s.result), Some(json!("fresh")));

    // An id with no time in it (a foreign client's UUIDv4) is looked up from the start.
    let mut foreign = NewCommand::new("echo", json!({})).into_command("//test");
    foreign.id = uuid::Builder::from_random_bytes(*uuid::Uuid::now_v7().as_bytes()).into_uuid();
    put(&snapshot(&foreign, State::Completed, json!("v4")), home(foreign.id), Some(1_000)).await;
    assert_eq!(client.status(foreign.id).await.unwrap().and_then(|s| s.result), Some(json!("v4")));

    // And a wait follows the partition on: a snapshot written after it started.
    let pending = NewCommand::new("echo", json!({})).into_command("//test");
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move { client.wait(pending.id, Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    put(&snapshot(&pending, State::Completed, json!("later")), home(pending.id), None).await;
    assert_eq!(waiting.await.unwrap().unwrap().result, Some(json!("later")));
}
