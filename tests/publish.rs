//! The acknowledged publishing a worker's commits rest on, against the real broker:
//! records enqueued now and acknowledged later (`Publisher::enqueue_all` +
//! `Acks::wait`, the path of every final event) all arrive, and a record the broker
//! can never take fails the wait by name without holding back the others.

mod common;

use std::time::Duration;

use courier::envelope::HeaderMap;
use courier::publish::{Outgoing, PublishError, Publisher};
use tokio_util::sync::CancellationToken;

fn record(topic: &str, key: &str, partition: Option<i32>) -> Outgoing {
    let mut headers = HeaderMap::default();
    headers.insert("n", key);
    Outgoing { topic: topic.to_string(), key: Some(key.into()), value: Some(key.as_bytes().to_vec()), headers, partition }
}

#[tokio::test]
async fn enqueued_records_are_all_acknowledged_and_read_back() {
    let t = common::fresh_topics("acks", 3).await;
    let publisher = Publisher::new(&t.kafka).expect("publisher");
    let never = CancellationToken::new();
    let mut waits = Vec::new();
    for i in 0..200 {
        let outs = vec![record(&t.topics.results, &format!("r{i}"), None), record(&t.topics.status, &format!("s{i}"), None)];
        waits.push(publisher.enqueue_all(outs).await);
    }
    for acks in waits {
        acks.wait(&never).await.expect("acknowledged");
    }
    let results = common::TopicReader::new(&t, &t.topics.results).poll_raw(Duration::from_secs(10));
    let status = common::TopicReader::new(&t, &t.topics.status).poll_raw(Duration::from_secs(10));
    assert_eq!((results.len(), status.len()), (200, 200));
    assert!(results.iter().all(|r| r.4.get_str("n").ok().flatten() == r.2.as_deref().and_then(|k| std::str::from_utf8(k).ok())));
}

#[tokio::test]
async fn a_record_the_broker_cannot_take_fails_the_wait_after_the_others_land() {
    let t = common::fresh_topics("acks-bad", 3).await;
    let publisher = Publisher::new(&t.kafka).expect("publisher");
    // Partition 99 does not exist: the record is refused, permanently.
    let outs = vec![record(&t.topics.results, "good", None), record(&t.topics.status, "bad", Some(99))];
    let acks = publisher.enqueue_all(outs).await;
    let waited = tokio::time::timeout(Duration::from_secs(60), acks.wait(&CancellationToken::new())).await.expect("no hang");
    match waited {
        Err(PublishError::Kafka { topic, .. }) => assert_eq!(topic, t.topics.status),
        other => panic!("expected a permanent failure for the status record, got {other:?}"),
    }
    let results = common::TopicReader::new(&t, &t.topics.results).poll_raw(Duration::from_secs(10));
    assert_eq!(results.len(), 1, "the good record still arrived");
}

#[tokio::test]
async fn a_cancelled_wait_gives_up_as_abandoned() {
    let t = common::fresh_topics("acks-cancel", 1).await;
    let publisher = Publisher::new(&t.kafka).expect("publisher");
    let cancel = CancellationToken::new();
    cancel.cancel();
    // A topic that does not exist: the record can never be acknowledged, so only the
    // token can end the wait.
    let acks = publisher.enqueue_all(vec![record(&format!("{}.missing", t.kafka.prefix), "x", None)]).await;
    let waited = tokio::time::timeout(Duration::from_secs(60), acks.wait(&cancel)).await.expect("no hang");
    assert!(matches!(waited, Err(PublishError::Abandoned { .. })), "{waited:?}");
}
