//! The bad-input matrix: 1,000 good commands interleaved with every kind of poison on
//! the same partitions. All good commands complete; each poison record lands in the
//! DLQ with its own reason; counts match exactly; no partition lag remains.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use courier::envelope::{header_names as h, HeaderMap, NewCommand};
use courier::State;
use serde_json::json;

const GOOD: usize = 1_000;
const EACH: usize = 20;

/// A poison record: (expected reason, has readable id, key, value, headers).
type Poison = (&'static str, bool, Vec<u8>, Vec<u8>, HeaderMap);

fn good(i: usize) -> (Vec<u8>, Vec<u8>, HeaderMap) {
    NewCommand::new("echo", json!({"i": i})).key(format!("good-{}", i % 50)).into_command("//poison-test").encode()
}

fn poison(kind: usize, i: usize) -> Poison {
    let (key, value, headers) = NewCommand::new("echo", json!({"i": i})).key(format!("bad-{i}")).into_command("//poison-test").encode();
    let with = |name: &str, v: &str| {
        let mut m = headers.clone();
        m.set(name, v);
        m
    };
    match kind {
        0 => ("not_utf8", true, key, vec![0xff, 0xfe, 0x00, 0x81], headers),
        1 => ("not_json", true, key, b"{\"i\": oops".to_vec(), headers),
        2 => ("bad_headers", false, key, value, HeaderMap::new()),
        3 => ("bad_headers", true, key, value, with(h::DEADLINE, "next tuesday")),
        4 => ("unknown_type", true, key, value, with(h::TYPE, "no.such.type")),
        5 => ("schema_violation", true, key, br#"{"n": "lots"}"#.to_vec(), with(h::TYPE, "primes")),
        6 => ("too_large", true, key, serde_json::to_vec(&json!({"blob": "x".repeat(20_000)})).unwrap(), headers),
        7 => ("unsupported_version", true, key, value, with(h::VERSION, "2.0")),
        _ => ("handler_panic", true, key, value, with(h::TYPE, "panic")),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_matrix() {
    let t = common::fresh_topics("poison", 3).await;
    let worker = common::WorkerProc::spawn(&t, "poison-1", &["--max-message-bytes", "10000"]);
    assert!(worker.wait_for_log("partitions assigned", Duration::from_secs(60)), "{}", worker.log_text());

    let mut expected_dlq: BTreeMap<&str, usize> = BTreeMap::new();
    let mut poison_with_id = 0;
    let mut good_ids = HashSet::new();
    let mut sends = Vec::new();
    for i in 0..GOOD {
        let (key, value, headers) = good(i);
        good_ids.insert(courier::Command::peek_id(&headers).unwrap());
        sends.push((key, value, headers, (i % 3) as i32));
        if i % 5 == 0 {
            let kind = (i / 5) % 9;
            let (reason, has_id, key, value, headers) = poison(kind, i);
            *expected_dlq.entry(reason).or_default() += 1;
            poison_with_id += usize::from(has_id);
            sends.push((key, value, headers, (i % 3) as i32));
        }
    }
    assert!(expected_dlq.values().all(|n| *n >= EACH), "{expected_dlq:?}");
    let poison_total: usize = expected_dlq.values().sum();
    let sends = sends.iter().map(|(k, v, hd, p)| common::produce_raw(&t, &t.topics.commands, Some(k), Some(v), hd, Some(*p)));
    futures::future::join_all(sends).await;

    let seen = common::collect_results(&t, Duration::from_secs(180), |s| common::count_distinct_finals(s) >= GOOD + poison_with_id);
    let finals = common::finals_by_command(&seen);
    assert_eq!(finals.len(), GOOD + poison_with_id, "one final event per command with a readable id");
    let completed: HashSet<_> = finals.iter().filter(|(_, v)| v[0].event.state() == State::Completed).map(|(id, _)| *id).collect();
    assert_eq!(completed, good_ids, "every good command completed, and only those");
    let failed = finals.values().filter(|v| v[0].event.state() == State::Failed).count();
    assert_eq!(failed, poison_with_id, "a failed event for every poison record with an id");

    let reader = common::TopicReader::new(&t, &t.topics.dlq);
    let mut dlq = Vec::new();
    while dlq.len() < poison_total {
        let more = reader.poll_raw(Duration::from_secs(2));
        assert!(!more.is_empty() || dlq.len() >= poison_total, "DLQ has {} of {poison_total}", dlq.len());
        dlq.extend(more);
    }
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, _, _, headers) in &dlq {
        let letter = courier::envelope::DeadLetter::from_headers(headers).expect("reason headers");
        assert!(!letter.message.is_empty());
        assert_eq!(letter.topic, t.topics.commands);
        *got.entry(letter.reason).or_default() += 1;
    }
    let want: BTreeMap<String, usize> = expected_dlq.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    assert_eq!(got, want, "DLQ counts by reason");
    println!("poison matrix: {GOOD} good completed; dead letters by reason: {got:?}");

    let lag = common::wait_for_zero_lag(&t, &common::worker_group(&t), &t.topics.commands, Duration::from_secs(30));
    assert_eq!(lag, 0, "no partition lag remains");
    assert!(worker.log_text().contains("handler panicked"), "panic was caught and logged");
}

/// A caller's reply address the cluster does not have (Spring's reply partition 99)
/// is bad input too: the final event still lands on the results topic, the failed
/// copy is logged, and the next command with the same key is not held up.
#[tokio::test(flavor = "multi_thread")]
async fn an_impossible_reply_partition_does_not_wedge_its_key() {
    let t = common::fresh_topics("reply99", 3).await;
    let worker = common::WorkerProc::spawn(&t, "reply99-1", &[]);
    assert!(worker.wait_for_log("partitions assigned", Duration::from_secs(60)), "{}", worker.log_text());
    let (key, value, mut headers) = NewCommand::new("echo", json!({"i": 1})).key("same").into_command("//poison-test").encode();
    headers.set(h::REPLY_TO, &t.topics.status);
    headers.insert(h::SPRING_REPLY_PARTITION, 99i32.to_be_bytes());
    let first = courier::Command::peek_id(&headers).unwrap();
    common::produce_raw(&t, &t.topics.commands, Some(&key), Some(&value), &headers, None).await;
    let (key, value, headers) = NewCommand::new("echo", json!({"i": 2})).key("same").into_command("//poison-test").encode();
    let second = courier::Command::peek_id(&headers).unwrap();
    common::produce_raw(&t, &t.topics.commands, Some(&key), Some(&value), &headers, None).await;

    let seen = common::collect_results(&t, Duration::from_secs(60), |s| common::count_distinct_finals(s) >= 2);
    let finals = common::finals_by_command(&seen);
    assert_eq!(finals.len(), 2);
    assert!(finals[&first].iter().chain(&finals[&second]).all(|s| s.event.state() == State::Completed));
    assert!(finals[&first][0].offset < finals[&second][0].offset, "same key, in order");
    assert!(worker.wait_for_log("the broker refused an output for good", Duration::from_secs(5)), "{}", worker.log_text());
    let lag = common::wait_for_zero_lag(&t, &common::worker_group(&t), &t.topics.commands, Duration::from_secs(30));
    assert_eq!(lag, 0);
}

/// The last line of "nothing lost": when the broker refuses even a minimal dead letter
/// (here the DLQ topic is deleted under a running worker), the record is held, not
/// finished: counted in `courier_held_records`, its offset not committed, while other
/// keys go on; once the topic is back, its dead letter lands and the lag drains.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_dead_letter_holds_its_record_until_it_can_be_written() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;

    let t = common::fresh_topics("held", 1).await;
    let port = common::free_port();
    let worker = common::WorkerProc::spawn(&t, "held-1", &["--metrics-addr", &format!("127.0.0.1:{port}")]);
    assert!(worker.wait_for_log("partitions assigned", Duration::from_secs(60)), "{}", worker.log_text());
    let admin: AdminClient<DefaultClientContext> = t.kafka.client_config().expect("config").create().expect("admin");
    let deleted = admin.delete_topics(&[t.topics.dlq.as_str()], &AdminOptions::new()).await.expect("delete");
    assert!(deleted.iter().all(Result::is_ok), "{deleted:?}");

    let (key, _, headers) = NewCommand::new("echo", json!({})).key("held").into_command("//poison-test").encode();
    let poison_id = courier::Command::peek_id(&headers).unwrap();
    common::produce_raw(&t, &t.topics.commands, Some(&key), Some(b"{not json"), &headers, None).await;
    let (key, value, headers) = NewCommand::new("echo", json!({"after": 1})).key("other").into_command("//poison-test").encode();
    let good_id = courier::Command::peek_id(&headers).unwrap();
    common::produce_raw(&t, &t.topics.commands, Some(&key), Some(&value), &headers, None).await;

    let until = std::time::Instant::now() + Duration::from_secs(60);
    while common::scrape(port, "courier_held_records") != Some(1.0) {
        assert!(std::time::Instant::now() < until, "never held: {}", worker.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seen = common::collect_results(&t, Duration::from_secs(60), |s| s.iter().any(|s| s.event.command_id() == good_id && s.event.state().is_final()));
    assert!(seen.iter().any(|s| s.event.command_id() == good_id && s.event.state() == State::Completed), "another key goes on");
    assert!(!seen.iter().any(|s| s.event.command_id() == poison_id && s.event.state().is_final()), "no failed event before the dead letter");
    let group = common::worker_group(&t);
    // Past a commit round and a commit refresh: the held record's offset stays uncommitted.
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert_eq!(common::group_lag(&t, &group, &t.topics.commands), 2, "no commit passes a held record");
    assert_eq!(common::scrape(port, "courier_held_records"), Some(1.0));

    let created = admin
        .create_topics(&[NewTopic::new(&t.topics.dlq, 1, TopicReplication::Fixed(1))], &AdminOptions::new())
        .await
        .expect("create");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let lag = common::wait_for_zero_lag(&t, &group, &t.topics.commands, Duration::from_secs(120));
    assert_eq!(lag, 0, "the held record finished once its dead letter could be written: {}", worker.log_text());
    assert_eq!(common::scrape(port, "courier_held_records"), Some(0.0));
    let reader = common::TopicReader::new(&t, &t.topics.dlq);
    let letters = reader.poll_raw(Duration::from_secs(5));
    assert_eq!(letters.len(), 1, "exactly one dead letter");
    let letter = courier::envelope::DeadLetter::from_headers(&letters[0].4).expect("reason headers");
    assert_eq!(letter.reason, "not_json");
    assert!(worker.log_text().contains("not even a minimal dead letter could be written"), "reported in the log");
}

/// A command the broker took whose *result* cannot be published (an echo of a payload
/// just under the producer's 1,000,000-byte limit; the worker takes records up to
/// 1,048,000): dead-lettered as `output_too_large` with a `failed` event instead of
/// vanishing, its letter minimal (the record does not fit again with reason headers);
/// a normal command behind it on the same key completes.
#[tokio::test(flavor = "multi_thread")]
async fn a_result_too_large_to_publish_is_dead_lettered_with_a_failed_event() {
    let t = common::fresh_topics("bigresult", 1).await;
    let worker = common::WorkerProc::spawn(&t, "bigresult-1", &["--max-message-bytes", "1048000"]);
    assert!(worker.wait_for_log("partitions assigned", Duration::from_secs(60)), "{}", worker.log_text());
    let big = json!({"s": "x".repeat(999_450)});
    let (key, value, headers) = NewCommand::new("echo", big).key("k").into_command("//poison-test").encode();
    let big_id = courier::Command::peek_id(&headers).unwrap();
    let big_len = value.len();
    common::produce_raw(&t, &t.topics.commands, Some(&key), Some(&value), &headers, None).await;
    let (key, value, headers) = NewCommand::new("echo", json!({"small": true})).key("k").into_command("//poison-test").encode();
    let small_id = courier::Command::peek_id(&headers).unwrap();
    common::produce_raw(&t, &t.topics.commands, Some(&key), Some(&value), &headers, None).await;

    let seen = common::collect_results(&t, Duration::from_secs(60), |s| common::count_distinct_finals(s) >= 2);
    let finals = common::finals_by_command(&seen);
    assert_eq!(finals[&big_id].len(), 1, "exactly one final event");
    let failed = &finals[&big_id][0].event;
    assert_eq!(failed.state(), State::Failed, "{}", worker.log_text());
    assert_eq!(failed.data.error.as_ref().map(|e| e.code.as_str()), Some("output_too_large"));
    assert_eq!(failed.key, b"k", "keyed like its command");
    assert_eq!(finals[&small_id][0].event.state(), State::Completed);
    assert!(finals[&big_id][0].offset < finals[&small_id][0].offset, "same key, in order");
    let reader = common::TopicReader::new(&t, &t.topics.dlq);
    let letters = reader.poll_raw(Duration::from_secs(5));
    assert_eq!(letters.len(), 1);
    let (_, _, letter_key, letter_value, letter_headers) = &letters[0];
    assert_eq!(courier::envelope::DeadLetter::from_headers(letter_headers).unwrap().reason, "output_too_large");
    assert_eq!(courier::Command::peek_id(letter_headers), Some(big_id), "the original headers are kept");
    assert_eq!(letter_key.as_deref(), Some(&b"k"[..]));
    assert_eq!(letter_headers.get_str("courier_dlq_truncated").unwrap(), Some("true"));
    assert_eq!(letter_headers.get_str("courier_dlq_value_bytes").unwrap(), Some(big_len.to_string().as_str()));
    assert!(letter_value.is_none(), "the value did not fit beside the reason headers");
    let lag = common::wait_for_zero_lag(&t, &common::worker_group(&t), &t.topics.commands, Duration::from_secs(30));
    assert_eq!(lag, 0);
}
