//! Gateways in a group (`--group`, `--advertise`) against a real broker and real
//! worker processes: the status partitions are shared out among the members, and any
//! member answers any request, forwarding to the owner.
//!
//! 1. 10,000 operations through three gateways, one SIGKILLed and a fourth joining
//!    midway: every operation completes with its own result, every long poll returns
//!    within its wait plus slack (none hangs across the rebalance), long polls held
//!    while their partitions move come back done, a listing holds each operation
//!    once (members keep their views in memory and on disk), requests really were
//!    forwarded, and the commands topic holds each command once.
//! 2. One `Idempotency-Key` sent to every gateway at once creates one command: every
//!    `202` names the same operation, exactly one is not a replay.
//! 3. Listing pages and batch counts gather every member's operations, and a page
//!    token from one gateway is good on another.

mod common;

use common::{ExactRecord, GatewayProc, TestTopics, TopicReader};

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use courier::envelope::header_names;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

/// The `?wait=` every long poll here asks for.
const LONG_POLL: Duration = Duration::from_secs(10);
/// How much longer than its wait a long poll may take before it counts as hung:
/// enough for a rebalance and a forward, far less than forever.
const SLACK: Duration = Duration::from_secs(15);
/// What the log says once a member has read the status partitions it was assigned.
const READY_LINE: &str = "gateway partitions ready";

/// An HTTP client whose requests give up well after `LONG_POLL + SLACK`: a hung
/// request fails the hang check instead of stalling the test.
fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(40)).build().expect("http client")
}

/// The group name for a test's gateways: unique per topic prefix, so tests running
/// side by side on one broker never join each other's group.
fn group(t: &TestTopics) -> String {
    format!("{}-gateways", t.kafka.prefix)
}

/// A gateway in the test's group on a free port, advertising the address it listens on.
/// Members named `*-disk` keep their view on disk (`--store-dir`), the others in
/// memory: a group may mix them, and the kill test covers both.
fn spawn_member(t: &TestTopics, name: &str) -> GatewayProc {
    let port = common::free_port();
    let advertise = format!("http://127.0.0.1:{port}");
    let mut args = vec!["--group".to_string(), group(t), "--advertise".into(), advertise];
    if name.ends_with("-disk") {
        let dir = std::env::temp_dir().join(format!("courier-group-store-{}-{name}", t.kafka.prefix));
        let _ = std::fs::remove_dir_all(&dir);
        args.extend(["--store-dir".to_string(), dir.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    GatewayProc::spawn(t, name, port, &args)
}

/// Waits until `gw` answers HTTP and has read the partitions it was given: before
/// that it may still be joining, and the test would measure the join.
async fn member_ready(gw: &GatewayProc, http: &reqwest::Client) {
    gw.ready(http).await;
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let log = std::fs::read_to_string(&gw.log).unwrap_or_default();
        if log.contains(READY_LINE) {
            return;
        }
        assert!(!log.contains("courier failed") && Instant::now() < until, "{} never read its partitions:\n{log}", gw.base);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts members together (one join, not three in a row), then waits for each.
async fn start_group(t: &TestTopics, http: &reqwest::Client, names: &[&str]) -> Vec<GatewayProc> {
    let gateways: Vec<GatewayProc> = names.iter().map(|n| spawn_member(t, n)).collect();
    for gw in &gateways {
        member_ready(gw, http).await;
    }
    gateways
}

/// A worker running the demo handlers, once it has its partitions (as tests/gateway.rs).
fn start_worker(t: &TestTopics, id: &str) -> common::WorkerProc {
    let w = common::WorkerProc::spawn(t, id, &["--max-in-flight", "256"]);
    assert!(w.wait_for_log("partitions assigned", Duration::from_secs(60)), "{}", w.log_text());
    w
}

/// Submits `echo {"i": i}` through `base`; its operation name. A `503` (the member
/// cannot take it just now, e.g. mid-rebalance) is retried; anything else but `202`
/// fails the test.
async fn submit_echo(http: &reqwest::Client, base: &str, i: usize) -> String {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let resp = http.post(format!("{base}/v1/commands")).json(&json!({"type": "echo", "payload": {"i": i}})).send().await;
        let resp = resp.unwrap_or_else(|e| panic!("POST echo {i} through {base}: {e}"));
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status == StatusCode::ACCEPTED {
            return body["name"].as_str().unwrap_or_else(|| panic!("no name in {body}")).to_string();
        }
        assert!(status == StatusCode::SERVICE_UNAVAILABLE && Instant::now() < until, "POST echo {i} through {base}: {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Submits `range`, each through a gateway picked by a cheap deterministic shuffle, 64
/// at a time; (i, operation name) pairs.
async fn submit_spread(http: &reqwest::Client, bases: &[String], range: std::ops::Range<usize>) -> Vec<(usize, String)> {
    futures::stream::iter(range)
        .map(|i| async move { (i, submit_echo(http, &bases[i * 7919 % bases.len()], i).await) })
        .buffer_unordered(64)
        .collect()
        .await
}

/// Long-polls `name` (`?wait=10s`) through the gateways in turn until it is done. A
/// connection error or `503` moves on to the next gateway; a poll taking longer than
/// `LONG_POLL + SLACK` is a hang and fails the test at once.
async fn follow(http: &reqwest::Client, bases: &[String], seed: usize, name: &str) -> Value {
    let until = Instant::now() + Duration::from_secs(120);
    let mut attempt = 0;
    loop {
        assert!(Instant::now() < until, "{name} not done after two minutes");
        let base = &bases[(seed * 104_729 + attempt) % bases.len()];
        attempt += 1;
        let asked = Instant::now();
        let answer = match http.get(format!("{base}/v1/{name}?wait=10s")).send().await {
            Ok(resp) => Some((resp.status(), resp.json::<Value>().await.unwrap_or(Value::Null))),
            Err(_) => None,
        };
        let took = asked.elapsed();
        assert!(took <= LONG_POLL + SLACK, "GET {name}?wait=10s through {base} took {took:?} (hung)");
        match answer {
            Some((StatusCode::OK, op)) if op["done"] == true => return op,
            Some((StatusCode::OK, _)) => {}
            Some((StatusCode::SERVICE_UNAVAILABLE, _)) | None => tokio::time::sleep(Duration::from_millis(50)).await,
            Some((status, body)) => panic!("GET {name} through {base}: {status} {body}"),
        }
    }
}

/// `courier_gateway_forwarded_total` of one gateway, summed over any labels.
async fn forwarded_total(http: &reqwest::Client, base: &str) -> f64 {
    let text = http.get(format!("{base}/metrics")).send().await.expect("GET /metrics").text().await.expect("metrics text");
    text.lines()
        .filter(|l| l.starts_with("courier_gateway_forwarded_total"))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// Every record on the commands topic, read to its end with the harness's own
/// consumer (not the code under test).
fn command_records(t: &TestTopics) -> Vec<ExactRecord> {
    let reader = TopicReader::new(t, &t.topics.commands);
    let mut records = Vec::new();
    assert!(reader.read_to_end(&t.topics.commands, t.partitions, &mut records, Duration::from_secs(60)), "commands topic not read to its end");
    records
}

/// The id in an operation name, `operations/{id}`.
fn op_id(name: &str) -> Uuid {
    name.strip_prefix("operations/").and_then(|id| Uuid::parse_str(id).ok()).unwrap_or_else(|| panic!("not an operation name: {name}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn three_gateways_survive_a_kill_and_a_join() {
    const N: usize = 10_000;
    let t = common::fresh_topics("gw-group-kill", 6).await;
    let _workers = [start_worker(&t, "gw-group-w1"), start_worker(&t, "gw-group-w2")];
    let http = client();
    let mut gateways = start_group(&t, &http, &["gw1", "gw2", "gw3-disk"]).await;
    let all: Vec<String> = gateways.iter().map(|g| g.base.clone()).collect();

    // A third through all three; then gw1 dies without warning and gw4 starts. The
    // next third goes to the survivors while gw1's session (6 s) has not yet expired,
    // the last through gw2, gw3 and gw4 once gw4 has its partitions.
    let mut names: HashMap<usize, String> = submit_spread(&http, &all, 0..N / 3).await.into_iter().collect();
    // Long polls in flight through the survivors while their partitions move: the
    // killed member's (forwarded there when it dies) and those the joiner takes over.
    let survivors: Vec<String> = all[1..].to_vec();
    let held = tokio::spawn(polls_across_rebalance(http.clone(), survivors.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    gateways[0].sigkill();
    // Keys sent twice to each survivor at once while the killed member still owns
    // some of their partitions: each waits for an owner, and makes one command.
    let keyed = tokio::spawn(keys_across_rebalance(http.clone(), survivors.clone()));
    let joiner = spawn_member(&t, "gw4-disk");
    names.extend(submit_spread(&http, &survivors, N / 3..2 * N / 3).await);
    member_ready(&joiner, &http).await;
    held.await.expect("long polls across the rebalance");
    let keyed = keyed.await.expect("keys across the rebalance");
    let live: Vec<String> = survivors.iter().cloned().chain([joiner.base.clone()]).collect();
    names.extend(submit_spread(&http, &live, 2 * N / 3..N).await);
    assert_eq!(names.values().collect::<HashSet<_>>().len(), N, "every submission got its own operation");

    // Every operation, long-polled through the live members, ends with its own result.
    let started = Instant::now();
    let done = futures::stream::iter(&names)
        .map(|(i, name)| {
            let (http, live) = (&http, &live);
            async move { (*i, follow(http, live, *i, name).await) }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    eprintln!("{N} operations followed to done in {:?}", started.elapsed());
    let wrong: Vec<_> = done.iter().filter(|(i, op)| op["response"] != json!({"echo": {"i": i}})).take(5).collect();
    assert!(wrong.is_empty(), "operations without their own result: {wrong:?}");

    // A listing through the survivors holds every operation once: no member answers
    // for a partition it lost (its disk view keeps them; its memory view drops them).
    let mut listed = Vec::new();
    let mut token = String::new();
    for page_no in 0..40 {
        let base = &live[page_no % live.len()];
        let page: Value = http.get(format!("{base}/v1/operations?page_size=1000&page_token={token}")).send().await.expect("list").json().await.expect("page");
        listed.extend(page["operations"].as_array().unwrap_or_else(|| panic!("page {page_no}: {page}")).iter().map(|o| op_id(o["name"].as_str().expect("name"))));
        token = page["next_page_token"].as_str().expect("next_page_token").to_string();
        if token.is_empty() {
            break;
        }
    }
    let total = N + 60 + KEYED;
    assert_eq!((listed.len(), listed.iter().collect::<HashSet<_>>().len()), (total, total), "every operation listed once");

    let mut forwarded = 0.0;
    for base in &live {
        forwarded += forwarded_total(&http, base).await;
    }
    assert!(forwarded > 0.0, "no request was forwarded to an owner");

    let records = command_records(&t);
    let by_key: HashMap<String, Vec<Uuid>> = records.iter().filter_map(|r| Some((r.header_str(header_names::IDEMPOTENCY_KEY)?.to_string(), r))).fold(HashMap::new(), |mut m, (k, r)| {
        m.entry(k).or_default().push(r.header_str(header_names::ID).and_then(|id| Uuid::parse_str(id).ok()).expect("ce_id"));
        m
    });
    let expected: HashMap<String, Vec<Uuid>> = keyed.into_iter().map(|(k, id)| (k, vec![id])).collect();
    assert_eq!(by_key, expected, "one command per key sent across the rebalance, the one its answers named");
    let ids: HashSet<Uuid> = records
        .iter()
        .filter(|r| r.header_str(header_names::TYPE) != Some("sleep"))
        .map(|r| r.header_str(header_names::ID).and_then(|id| Uuid::parse_str(id).ok()).expect("ce_id"))
        .collect();
    let submitted: HashSet<Uuid> = names.values().map(|n| op_id(n)).collect();
    assert_eq!(ids.len(), N, "the commands topic holds {N} distinct echo commands");
    assert_eq!(ids, submitted, "the commands topic holds exactly the submitted operations");
    drop((gateways, joiner));
    for name in ["gw3-disk", "gw4-disk"] {
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("courier-group-store-{}-{name}", t.kafka.prefix)));
    }
}

/// Submits 60 commands that sleep 6 s through `bases`, then long-polls each once
/// (`?wait=30s`) through `bases` while the caller kills a member and adds one: every
/// poll must come back done (its answer followed the operation to its new owner)
/// and within its wait plus slack.
async fn polls_across_rebalance(http: reqwest::Client, bases: Vec<String>) {
    let body = json!({"type": "sleep", "payload": {"ms": 6000, "steps": 1}});
    let mut names = Vec::new();
    for i in 0..60 {
        let resp = http.post(format!("{}/v1/commands", bases[i % bases.len()])).json(&body).send().await.expect("POST sleep");
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        names.push(resp.json::<Value>().await.expect("operation")["name"].as_str().expect("name").to_string());
    }
    let polls = names.iter().enumerate().map(|(i, name)| {
        let (http, base) = (&http, &bases[(i + 1) % bases.len()]);
        async move {
            let asked = Instant::now();
            let resp = http.get(format!("{base}/v1/{name}?wait=30s")).send().await.unwrap_or_else(|e| panic!("GET {name}?wait=30s through {base}: {e}"));
            let (status, op) = (resp.status(), resp.json::<Value>().await.unwrap_or(Value::Null));
            let took = asked.elapsed();
            assert!(took <= Duration::from_secs(30) + SLACK, "GET {name}?wait=30s through {base} took {took:?} (hung)");
            assert_eq!((status, op["done"].clone(), op["response"].clone()), (StatusCode::OK, json!(true), json!({"slept_ms": 6000})), "{name} through {base}: {op}");
        }
    });
    futures::future::join_all(polls).await;
}

/// The one operation the answers to one key's concurrent requests name: every
/// answer is `202` and names it, and exactly one of them is not a replay.
fn one_operation(key: &str, answers: &[(StatusCode, bool, Value)]) -> String {
    for (status, _, answer) in answers {
        assert_eq!(*status, StatusCode::ACCEPTED, "{key}: {answer}");
    }
    let names: HashSet<&str> = answers.iter().map(|(_, _, a)| a["name"].as_str().expect("name")).collect();
    assert_eq!(names.len(), 1, "{key} named more than one operation: {names:?}");
    let firsts = answers.iter().filter(|(_, replayed, _)| !replayed).count();
    assert_eq!(firsts, 1, "{key}: {firsts} answers were not replays");
    names.into_iter().next().expect("one name").to_string()
}

/// Keys sent across the rebalance in the kill test.
const KEYED: usize = 30;

/// Sends each of [`KEYED`] keys four times at once (twice to each of `bases`), as a
/// `sleep` of 1 ms: every answer names one operation, one of them the first; the
/// key and that operation's id.
async fn keys_across_rebalance(http: reqwest::Client, bases: Vec<String>) -> Vec<(String, Uuid)> {
    let keys = (0..KEYED).map(|k| {
        let (http, bases) = (&http, &bases);
        async move {
            let key = format!("rebalance-key-{k}");
            let body = json!({"type": "sleep", "payload": {"ms": 1, "steps": 1}});
            let answers = futures::future::join_all(bases.iter().cycle().take(4).map(|base| post_keyed(http, base, &key, &body))).await;
            let name = one_operation(&key, &answers);
            (key, op_id(&name))
        }
    });
    futures::future::join_all(keys).await
}

/// (status, `idempotent-replayed` present, body) of one keyed POST; `409` and `503`
/// are retried after 20 ms, as a client would, until something else comes back.
async fn post_keyed(http: &reqwest::Client, base: &str, key: &str, body: &Value) -> (StatusCode, bool, Value) {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = http.post(format!("{base}/v1/commands")).header("Idempotency-Key", key).json(body).send().await;
        let resp = resp.unwrap_or_else(|e| panic!("POST {key} through {base}: {e}"));
        let (status, replayed) = (resp.status(), resp.headers().contains_key("idempotent-replayed"));
        let answer: Value = resp.json().await.unwrap_or(Value::Null);
        let retry = match status {
            StatusCode::CONFLICT => answer["error"]["code"] == "idempotency_key_in_use",
            StatusCode::SERVICE_UNAVAILABLE => true,
            _ => false,
        };
        if !retry {
            return (status, replayed, answer);
        }
        assert!(Instant::now() < until, "{key} through {base} still {status} after 30 s: {answer}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotency_holds_across_gateways() {
    const KEYS: usize = 100;
    let t = common::fresh_topics("gw-group-idem", 6).await;
    let _worker = start_worker(&t, "gw-group-idem-w1");
    let http = client();
    let gateways = start_group(&t, &http, &["gw1", "gw2", "gw3"]).await;
    let bases: Vec<String> = gateways.iter().map(|g| g.base.clone()).collect();

    // Per key: nine requests at once, three to each member, all with the same body.
    let named: Vec<(String, String)> = futures::stream::iter(0..KEYS)
        .map(|k| {
            let (http, bases) = (&http, &bases);
            async move {
                let key = format!("group-key-{k}");
                let body = json!({"type": "echo", "payload": {"k": k}});
                let sends = bases.iter().cycle().take(9).map(|base| post_keyed(http, base, &key, &body));
                let answers = futures::future::join_all(sends).await;
                let name = one_operation(&key, &answers);

                let other = json!({"type": "echo", "payload": {"k": k, "other": true}});
                let (status, _, err) = post_keyed(http, &bases[(k + 1) % bases.len()], &key, &other).await;
                assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_reused")), "{key}: {err}");
                (key, name)
            }
        })
        .buffer_unordered(10)
        .collect()
        .await;

    let records = command_records(&t);
    assert_eq!(records.len(), KEYS, "one command per key");
    let published: HashMap<String, Uuid> = records
        .iter()
        .map(|r| {
            let key = r.header_str(header_names::IDEMPOTENCY_KEY).expect("ce_idempotencykey").to_string();
            (key, r.header_str(header_names::ID).and_then(|id| Uuid::parse_str(id).ok()).expect("ce_id"))
        })
        .collect();
    let answered: HashMap<String, Uuid> = named.iter().map(|(k, n)| (k.clone(), op_id(n))).collect();
    assert_eq!(published, answered, "each key's one command is the operation its answers named");
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_and_batches_through_any_gateway() {
    const SINGLES: usize = 120;
    const BATCH: usize = 30;
    let t = common::fresh_topics("gw-group-list", 6).await;
    let _worker = start_worker(&t, "gw-group-list-w1");
    let http = client();
    let gateways = start_group(&t, &http, &["gw1", "gw2", "gw3"]).await;
    let bases: Vec<String> = gateways.iter().map(|g| g.base.clone()).collect();

    let mut names: Vec<String> = submit_spread(&http, &bases, 0..SINGLES).await.into_iter().map(|(_, n)| n).collect();
    let commands: Vec<Value> = (0..BATCH).map(|b| json!({"type": "echo", "payload": {"b": b}})).collect();
    let resp = http.post(format!("{}/v1/batches", bases[1])).json(&json!({"commands": commands})).send().await.expect("POST /v1/batches");
    let status = resp.status();
    let batch: Value = resp.json().await.expect("batch JSON");
    assert_eq!((status, batch["total"].clone()), (StatusCode::ACCEPTED, json!(BATCH)), "{batch}");
    let batch_id = batch["id"].as_str().expect("batch id").to_string();
    names.extend(batch["operations"].as_array().expect("batch operations").iter().map(|n| n.as_str().expect("name").to_string()));
    assert_eq!(names.len(), SINGLES + BATCH);

    futures::stream::iter(names.iter().enumerate())
        .map(|(i, name)| {
            let (http, bases) = (&http, &bases);
            async move { follow(http, bases, i, name).await }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;

    // Page through, each page from another member, with the token the last one gave.
    let mut listed: Vec<Uuid> = Vec::new();
    let mut token = String::new();
    for page_no in 0.. {
        assert!(page_no < 20, "still paging after 20 pages of 25 ({} listed)", listed.len());
        let base = &bases[page_no % bases.len()];
        let resp = http.get(format!("{base}/v1/operations?page_size=25&page_token={token}")).send().await.expect("GET /v1/operations");
        let status = resp.status();
        let page: Value = resp.json().await.expect("page JSON");
        assert_eq!(status, StatusCode::OK, "page {page_no} through {base}: {page}");
        let ops = page["operations"].as_array().expect("operations");
        assert!(ops.len() <= 25, "page {page_no} has {} operations", ops.len());
        listed.extend(ops.iter().map(|o| op_id(o["name"].as_str().expect("name"))));
        token = page["next_page_token"].as_str().expect("next_page_token").to_string();
        if token.is_empty() {
            break;
        }
    }
    assert!(listed.windows(2).all(|w| w[0].as_bytes() > w[1].as_bytes()), "not strictly newest first: {listed:?}");
    let expected: HashSet<Uuid> = names.iter().map(|n| op_id(n)).collect();
    assert_eq!(listed.len(), expected.len(), "every operation listed once");
    assert_eq!(listed.into_iter().collect::<HashSet<_>>(), expected, "the listing is exactly the submitted operations");

    for base in &bases {
        let resp = http.get(format!("{base}/v1/batches/{batch_id}")).send().await.expect("GET /v1/batches/{id}");
        let status = resp.status();
        let b: Value = resp.json().await.expect("batch status JSON");
        assert_eq!(status, StatusCode::OK, "{base}: {b}");
        assert_eq!((b["total"].clone(), b["completed"].clone(), b["state"].clone()), (json!(BATCH), json!(BATCH), json!("COMPLETED")), "through {base}: {b}");
    }
}
