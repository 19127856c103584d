//! Property tests of gateway admission: no request body, however built, makes
//! `CommandRequest::from_body` or `Checker::check` panic (a panic there dropped the
//! connection without an answer). Bodies are drawn blind and near-valid, with the
//! fields that feed date arithmetic, schemas and the URL policy filled adversarially.

use proptest::prelude::*;

use super::admission::{Checker, CommandRequest};
use crate::urlpolicy::UrlPolicy;

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?[0-9]{1,40}(\\.[0-9]{1,5})?(e-?[0-9]{1,5})?",
        Just("1e309".to_string()),
        Just("-0".to_string()),
        Just("18446744073709551616".to_string()),
    ]
}

fn duration_text() -> impl Strategy<Value = String> {
    prop_oneof!["-?[0-9]{1,25}(ns|us|ms|s|m|h|d|w|y)?", "[0-9a-z .:-]{0,12}", Just("9000000000000000s".to_string())]
}

fn time_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[+-]?[0-9]{1,6}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,12})?(Z|[+-][0-9]{2}:[0-9]{2})",
        Just("+262143-12-31T23:59:59Z".to_string()),
        Just("9999-12-31T23:59:59.999999999+23:59".to_string()),
        any::<String>(),
    ]
}

fn url_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "https?://[a-z0-9.\\[\\]:%@-]{0,30}(/[^ ]{0,10})?",
        any::<String>(),
        Just("http://localhost./".to_string()),
        Just("http://example.com/\r\nX-Injected: 1".to_string()),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let command_type = prop_oneof![Just("echo"), Just("primes"), Just("sleep"), Just("nope")];
    let payload = prop_oneof![
        Just("{}".to_string()),
        number().prop_map(|n| format!("{{\"n\": {n}}}")),
        number().prop_map(|n| format!("{{\"ms\": {n}, \"steps\": {n}}}")),
        (1usize..2000).prop_map(|d| format!("{}{}", "[".repeat(d), "]".repeat(d))),
        Just("null".to_string()),
    ];
    let near_valid = (command_type, payload, proptest::option::of(duration_text()), proptest::option::of(time_text()), proptest::option::of(url_text()))
        .prop_map(|(t, p, within, at, url)| {
            let mut fields = vec![format!("\"type\": \"{t}\""), format!("\"payload\": {p}")];
            if let Some(w) = within {
                fields.push(format!("\"deadline_in\": {}", serde_json::Value::String(w)));
            }
            if let Some(a) = at {
                fields.push(format!("\"deadline\": {}", serde_json::Value::String(a)));
            }
            if let Some(u) = url {
                fields.push(format!("\"callback_url\": {}", serde_json::Value::String(u)));
            }
            format!("{{{}}}", fields.join(", ")).into_bytes()
        });
    prop_oneof![3 => near_valid, 1 => proptest::collection::vec(any::<u8>(), 0..80)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn admission_never_panics(body in body()) {
        let checker = Checker::new(&crate::demo::example_router(), UrlPolicy::default()).expect("demo schemas compile");
        if let Ok(req) = CommandRequest::from_body(&body) {
            let _ = req.request_hash();
            let _ = checker.check(&req);
        }
    }
}
