//! Property tests over everything that reads bytes from a producer: no input makes a
//! decoder panic, and what Courier writes back (headers, keys) is what it read.
//!
//! Inputs are drawn both blind (any bytes) and near-valid (a real envelope with one
//! part replaced by arbitrary bytes), since blind bytes rarely get past the first check.

use courier::envelope::bounds::KeyEcho;
use courier::envelope::{header_names as h, CancelRequest, Command, DeadLetter, HeaderMap, NewCommand, OperationSnapshot, ResultEvent};
use courier::webhooks::Delivery;
use courier::UrlPolicy;
use proptest::prelude::*;

/// Header names worth hitting: the ones Courier reads, and arbitrary bytes.
fn header_name() -> impl Strategy<Value = Vec<u8>> {
    let known = [
        h::SPEC_VERSION, h::ID, h::SOURCE, h::TYPE, h::TIME, h::DEADLINE, h::VERSION, h::REPLY_TO, h::CALLBACK_URL,
        h::IDEMPOTENCY_KEY, h::ATTEMPT, h::TRACEPARENT, h::BATCH_ID, h::REQUEST_HASH, h::SPRING_REPLY_TOPIC,
        h::SPRING_REPLY_PARTITION, h::SPRING_CORRELATION_ID, h::SUBJECT, "courier_dlq_reason", "courier_not_before",
    ];
    prop_oneof![
        3 => proptest::sample::select(known.to_vec()).prop_map(|n| n.as_bytes().to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..12).prop_map(|mut n| { n.retain(|b| *b != 0); n }),
    ]
}

/// Values: the shapes Courier parses (times, numbers, ids) and arbitrary bytes.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        "[0-9]{1,25}".prop_map(String::into_bytes),
        "-?[0-9]{1,6}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})".prop_map(String::into_bytes),
        Just(b"1.0".to_vec()),
        Just(b"01a20e65-7676-7288-b863-4588369ab535".to_vec()),
    ]
}

fn headers() -> impl Strategy<Value = HeaderMap> {
    proptest::collection::vec((header_name(), header_value()), 0..24).prop_map(|pairs| {
        let mut m = HeaderMap::new();
        for (n, v) in pairs {
            m.insert(n, v);
        }
        m
    })
}

/// A valid command's headers with some replaced or added by arbitrary ones.
fn near_valid_headers() -> impl Strategy<Value = HeaderMap> {
    proptest::collection::vec((header_name(), header_value()), 0..6).prop_map(|pairs| {
        let (_, _, mut m) = NewCommand::new("echo", serde_json::json!({})).into_command("//fuzz").encode();
        for (n, v) in pairs {
            match std::str::from_utf8(&n) {
                Ok(name) if name.starts_with("ce_") || name.starts_with("kafka_") => {
                    m.set(name, v);
                }
                _ => {
                    m.insert(n, v);
                }
            }
        }
        m
    })
}

fn value() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        Just(None),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        "\\{(\"[a-z]{1,3}\": ?(-?[0-9]{1,30}(\\.[0-9]+)?(e[0-9]{1,4})?|\"[^\"]{0,8}\"|null|true|\\[\\]),?){0,4}\\}".prop_map(|s| Some(s.into_bytes())),
        (1usize..3000).prop_map(|depth| Some(format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn decoders_never_panic(key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
                            value in value(), headers in prop_oneof![headers(), near_valid_headers()]) {
        let _ = Command::decode(key.as_deref(), value.as_deref(), &headers);
        let _ = Command::peek_id(&headers);
        let _ = Command::peek_reply_partition(&headers);
        let _ = ResultEvent::decode(key.as_deref(), value.as_deref(), &headers);
        let _ = OperationSnapshot::decode(value.as_deref());
        let _ = CancelRequest::decode(value.as_deref(), &headers);
        let _ = Delivery::decode(key.as_deref(), value.as_deref(), &headers);
        let _ = DeadLetter::from_headers(&headers);
    }

    #[test]
    fn headers_and_keys_come_back_byte_for_byte(headers in headers(), key in proptest::collection::vec(any::<u8>(), 0..64)) {
        let back = HeaderMap::from_kafka(Some(&headers.to_kafka()));
        prop_assert_eq!(back, headers);
        let echo = KeyEcho::of(Some(&key));
        prop_assert_eq!(KeyEcho::bytes(echo.text.as_deref(), echo.base64.as_deref()), Some(key));
    }

    #[test]
    fn a_decoded_command_keeps_its_key_bytes(key in proptest::collection::vec(any::<u8>(), 1..64)) {
        let cmd = NewCommand::new("echo", serde_json::json!({"a": 1})).key(key.clone()).into_command("//fuzz");
        let (k, v, hd) = cmd.encode();
        prop_assert_eq!(&k, &key);
        let back = Command::decode(Some(&k), Some(&v), &hd).unwrap();
        prop_assert_eq!(back.key, Some(key));
    }

    #[test]
    fn the_url_policy_never_panics(raw in prop_oneof![
        any::<String>(),
        "(https?|ftp|file)://([a-z0-9.%@:\\[\\]-]{0,30})(:[0-9]{0,7})?(/[^ ]{0,10})?",
        "https?://\\[[0-9a-f:.%]{0,40}\\](:[0-9]{1,5})?/",
        "https?://(0x[0-9a-f]{1,8}|0[0-7]{1,11}|[0-9]{1,10})(\\.[0-9x]{1,4}){0,3}\\.?/",
    ]) {
        let _ = UrlPolicy::default().check(&raw);
        let _ = UrlPolicy::allowing_loopback().check(&raw);
    }
}
