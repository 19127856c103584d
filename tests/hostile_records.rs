//! Hostile records from a foreign client: the poison matrix of
//! tests/interop/python/poison_matrix.py (confluent-kafka, plus kafka-python for
//! header names that are not UTF-8), 500 good `echo` commands interleaved with 48
//! kinds of bad record, three of each, on a 3-partition topic, against one real
//! `courier worker` with its default limits (--max-message-bytes 1,000,000; the test
//! topics keep the broker's default message.max.bytes of 1,048,588, so every record
//! sent fits on the topic).
//!
//! Every record is matched to what became of it: result events by command id, dead
//! letters by their `courier_dlq_partition`/`courier_dlq_offset` headers, with key,
//! value and headers compared byte for byte (header names too, read through
//! librdkafka's C API). The expected outcome of each kind, the target behaviour, is
//! written next to it in the script. A failure lists every kind that went wrong, with
//! expected and seen counts.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use courier::envelope::ResultEvent;
use courier::State;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use common::ExactRecord;

const GOOD: usize = 500;
const EACH: usize = 3;
/// Upper bound on waiting for every expected result event and dead letter.
const WAIT: Duration = Duration::from_secs(180);

#[derive(Debug, Deserialize)]
struct Manifest {
    records: Vec<Sent>,
}

/// One record the script sent (see `Rec.manifest` in poison_matrix.py).
#[derive(Debug, Deserialize)]
struct Sent {
    kind: String,
    /// `completed`, `timed_out` or `dead_letter`.
    outcome: String,
    reason: Option<String>,
    failed_event: bool,
    ce_id: Option<String>,
    key_hex: Option<String>,
    value_null: bool,
    value_len: usize,
    value_sha256: String,
    headers_sha256: String,
    header_names_hex: Vec<String>,
    header_count: usize,
    partition: i32,
    offset: i64,
    /// The first of two `ce_id` headers: no event may name it.
    #[serde(default)]
    absent_ce_id: Option<String>,
}

impl Sent {
    fn key(&self) -> Option<Vec<u8>> {
        self.key_hex.as_deref().map(unhex)
    }

    /// The key of its result events: the command's key, or for a record without one
    /// its id (`Command::partition_key`), so events are never unkeyed.
    fn event_key(&self) -> Option<Vec<u8>> {
        self.key().or_else(|| self.ce_id.as_ref().map(|id| id.as_bytes().to_vec()))
    }

    fn id(&self) -> Option<Uuid> {
        self.ce_id.as_deref().map(|s| Uuid::parse_str(s).expect("manifest ce_id is a UUID"))
    }

    fn expectation(&self) -> String {
        match (self.outcome.as_str(), &self.reason) {
            ("dead_letter", Some(r)) if self.failed_event => format!("dead letter `{r}` + failed event"),
            ("dead_letter", Some(r)) => format!("dead letter `{r}`, no event"),
            (o, _) => format!("`{o}` event"),
        }
    }

    fn at(&self) -> String {
        format!("record p{}@{}", self.partition, self.offset)
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A key or value, short: null, or its length and first bytes.
fn describe(b: Option<&[u8]>) -> String {
    match b {
        None => "null".into(),
        Some(b) => {
            let head = &b[..b.len().min(12)];
            let text = std::str::from_utf8(head).map(|s| format!("{s:?}")).unwrap_or_else(|_| format!("0x{}", hex(head)));
            format!("{} bytes {text}{}", b.len(), if b.len() > 12 { "..." } else { "" })
        }
    }
}

/// The same digest as `headers_digest` in poison_matrix.py.
fn headers_digest<'a>(headers: impl Iterator<Item = &'a (Vec<u8>, Option<Vec<u8>>)>) -> String {
    let mut h = Sha256::new();
    for (name, value) in headers {
        h.update((name.len() as u32).to_be_bytes());
        h.update(name);
        match value {
            None => h.update([0xff; 4]),
            Some(v) => {
                h.update((v.len() as u32).to_be_bytes());
                h.update(v);
            }
        }
    }
    hex(&h.finalize())
}

/// The original headers of a dead letter: all but the `courier_dlq_*` ones it added.
fn original_headers(r: &ExactRecord) -> impl Iterator<Item = &(Vec<u8>, Option<Vec<u8>>)> {
    r.headers.iter().filter(|(n, _)| !n.starts_with(b"courier_dlq_"))
}

struct Results {
    /// Final events by command id, with their record.
    finals: HashMap<Uuid, Vec<(ExactRecord, ResultEvent)>>,
    undecodable: Vec<String>,
    records: usize,
}

impl Results {
    fn new() -> Self {
        Results { finals: HashMap::new(), undecodable: Vec::new(), records: 0 }
    }

    fn add(&mut self, batch: Vec<ExactRecord>) {
        for r in batch {
            self.records += 1;
            match r.result_event() {
                Ok(ev) if ev.state().is_final() => self.finals.entry(ev.command_id()).or_default().push((r, ev)),
                Ok(_) => {}
                Err(e) => self.undecodable.push(format!("p{}@{}: {e}", r.partition, r.offset)),
            }
        }
    }
}

/// What became of the records of one kind.
#[derive(Default)]
struct KindReport {
    expectation: String,
    sent: usize,
    ok: usize,
    problems: Vec<String>,
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_records_from_a_foreign_client() {
    let t = common::fresh_topics("hostile", 3).await;
    let mut worker = common::WorkerProc::spawn(&t, "hostile-1", &[]);
    assert!(worker.wait_for_log("partitions assigned", Duration::from_secs(60)), "worker never got partitions:\n{}", worker.log_text());

    let script = common::repo().join("tests/interop/python/poison_matrix.py");
    let out = common::run_child(
        "python poison matrix",
        Command::new(common::python()).arg(script).args(["--bootstrap", &t.kafka.bootstrap, "--topic", &t.topics.commands]).args([
            "--seed",
            "7",
            "--good",
            &GOOD.to_string(),
            "--each",
            &EACH.to_string(),
        ]),
        Duration::from_secs(120),
        Some(&worker),
    );
    let manifest: Manifest = serde_json::from_str(out.trim()).expect("the script prints a JSON manifest");
    let sent = &manifest.records;
    let kinds: BTreeMap<&str, usize> = sent.iter().fold(BTreeMap::new(), |mut m, s| {
        *m.entry(s.kind.as_str()).or_default() += 1;
        m
    });
    assert!(kinds.len() > 40, "at least 40 kinds of hostile record besides `good`: {kinds:?}");
    assert!(kinds["good"] >= GOOD);

    // Which result events and dead letters must appear.
    let want_finals: HashMap<Uuid, &Sent> = sent
        .iter()
        .filter(|s| s.outcome != "dead_letter" || s.failed_event)
        .map(|s| (s.id().unwrap_or_else(|| panic!("{} expects an event but has no id", s.kind)), s))
        .collect();
    let want_dlq: HashMap<(i32, i64), &Sent> =
        sent.iter().filter(|s| s.outcome == "dead_letter").map(|s| ((s.partition, s.offset), s)).collect();

    // Wait on records: until every expected final and dead letter is there, the worker
    // exits, or it has committed every command record (lag 0: a worker commits a record
    // only after what it published about it is acknowledged, so nothing more is coming),
    // or WAIT is up.
    let waited = Instant::now();
    let group = common::worker_group(&t);
    let results_reader = common::TopicReader::new(&t, &t.topics.results);
    let dlq_reader = common::TopicReader::new(&t, &t.topics.dlq);
    let mut results = Results::new();
    let mut dlq: Vec<ExactRecord> = Vec::new();
    let complete = |results: &Results, dlq: &[ExactRecord]| {
        want_finals.keys().all(|id| results.finals.contains_key(id)) && dlq.len() >= want_dlq.len()
    };
    let mut settled = false;
    let mut next_lag_check = Instant::now();
    while !complete(&results, &dlq) && !settled && worker.is_running() && waited.elapsed() < WAIT {
        results.add(results_reader.poll_exact(Duration::from_millis(300)));
        dlq.extend(dlq_reader.poll_exact(Duration::from_millis(300)));
        if Instant::now() >= next_lag_check {
            settled = common::group_lag(&t, &group, &t.topics.commands) == 0;
            next_lag_check = Instant::now() + Duration::from_secs(2);
        }
    }
    let all_in = complete(&results, &dlq);
    let waited_for = waited.elapsed();
    // Then the commits: once the group's lag is 0 the worker has settled every record,
    // so reading both topics to their ends sees anything it published twice.
    let lag = if worker.is_running() {
        common::wait_for_zero_lag(&t, &group, &t.topics.commands, Duration::from_secs(90))
    } else {
        common::group_lag(&t, &group, &t.topics.commands)
    };
    let mut rest = Vec::new();
    let read_results = results_reader.read_to_end(&t.topics.results, t.partitions, &mut rest, Duration::from_secs(30));
    results.add(rest);
    let read_dlq = dlq_reader.read_to_end(&t.topics.dlq, t.partitions, &mut dlq, Duration::from_secs(30));
    let running = worker.is_running();
    let harness = sent_as_listed(&t, sent);

    // Every dead letter, by the record it is about.
    let mut dlq_by_origin: HashMap<(i32, i64), Vec<&ExactRecord>> = HashMap::new();
    let mut stray_dlq = Vec::new();
    for r in &dlq {
        let origin = r.header_str("courier_dlq_partition").and_then(|p| p.parse().ok()).zip(r.header_str("courier_dlq_offset").and_then(|o| o.parse().ok()));
        match origin {
            Some(o) => dlq_by_origin.entry(o).or_default().push(r),
            None => stray_dlq.push(format!("DLQ p{}@{} has no readable courier_dlq_partition/offset", r.partition, r.offset)),
        }
    }

    let mut report: BTreeMap<&str, KindReport> = BTreeMap::new();
    for s in sent {
        let entry = report.entry(&s.kind).or_default();
        entry.expectation = s.expectation();
        entry.sent += 1;
        let problems = check(s, &results, &dlq_by_origin, &t.topics.commands);
        if problems.is_empty() {
            entry.ok += 1;
        } else {
            entry.problems.push(format!("{}: {}", s.at(), problems.join("; ")));
        }
    }

    let mut global = harness;
    for (origin, letters) in &dlq_by_origin {
        if !want_dlq.contains_key(origin) {
            let reason = letters[0].header_str("courier_dlq_reason").unwrap_or("?");
            let kind = sent.iter().find(|s| (s.partition, s.offset) == *origin).map_or("no record sent there", |s| s.kind.as_str());
            global.push(format!("{} dead letter(s) `{reason}` for p{}@{} ({kind}), which expects none", letters.len(), origin.0, origin.1));
        }
    }
    global.extend(stray_dlq);
    let stray_finals: Vec<_> = results.finals.iter().filter(|(id, _)| !want_finals.contains_key(id)).collect();
    for (id, events) in &stray_finals {
        let ev = &events[0].1;
        let kind = sent.iter().find(|s| s.absent_ce_id.as_deref() == Some(&id.to_string())).map_or("", |s| s.kind.as_str());
        global.push(format!(
            "unexpected final event(s) for command {id} {kind}: {} x {}{}",
            events.len(),
            ev.state().as_str(),
            ev.data.error.as_ref().map(|e| format!(" ({})", e.code)).unwrap_or_default()
        ));
    }
    let finals_total: usize = results.finals.values().map(Vec::len).sum();
    if dlq.len() != want_dlq.len() {
        global.push(format!("DLQ holds {} records; {} bad records were sent", dlq.len(), want_dlq.len()));
    }
    if finals_total != want_finals.len() {
        global.push(format!(
            "{finals_total} final events on the results topic (for {} commands); expected {} (one per command that runs or has a readable id)",
            results.finals.len(),
            want_finals.len()
        ));
    }
    if !results.undecodable.is_empty() {
        global.push(format!("{} undecodable result records, e.g. {:?}", results.undecodable.len(), &results.undecodable[..results.undecodable.len().min(3)]));
    }
    global.extend(order_problems(sent, &results));
    if !all_in && settled {
        global.push(format!("the worker committed every command record (lag 0) within {waited_for:.0?}, yet not every expected event and dead letter was published"));
    } else if !all_in {
        global.push(format!("stopped waiting after {waited_for:.0?}: not every expected event and dead letter arrived"));
    }
    if !read_results || !read_dlq {
        global.push("could not read the results and DLQ topics to their ends".into());
    }
    if !running {
        let status = worker.child.try_wait().ok().flatten();
        global.push(format!("the worker exited ({status:?}) instead of running on"));
    }
    if lag != 0 {
        global.push(format!("the worker group's lag on the commands topic is {lag}, not 0"));
    }

    let mut table = String::new();
    for (kind, r) in &report {
        let mark = if r.problems.is_empty() { "ok  " } else { "FAIL" };
        let _ = writeln!(table, "  {mark} {kind:<30} {}/{} as expected ({})", r.ok, r.sent, r.expectation);
    }
    println!(
        "hostile records: {} sent ({} kinds), {} dead letters, {} result records; waited {waited_for:.1?} for them; lag {lag}\n{table}",
        sent.len(),
        kinds.len(),
        dlq.len(),
        results.records
    );
    let failing: Vec<_> = report.iter().filter(|(_, r)| !r.problems.is_empty()).collect();
    if failing.is_empty() && global.is_empty() {
        return;
    }
    let mut msg = format!("{} of {} kinds failed; {} overall problems\n", failing.len(), report.len(), global.len());
    for g in &global {
        let _ = writeln!(msg, "overall: {g}");
    }
    for (kind, r) in &failing {
        let _ = writeln!(msg, "kind {kind}: expected {} for each of {}; {} as expected", r.expectation, r.sent, r.ok);
        for p in r.problems.iter().take(3) {
            let _ = writeln!(msg, "    {p}");
        }
        if r.problems.len() > 3 {
            let _ = writeln!(msg, "    ... and {} more", r.problems.len() - 3);
        }
    }
    if !running {
        // Why it exited: its panics (with the line after, the message) and its last words.
        let log = worker.log_text();
        let lines: Vec<&str> = log.lines().collect();
        let _ = writeln!(msg, "--- worker log: panics and last lines ({}) ---", worker.log.display());
        let panics = lines.iter().enumerate().filter(|(_, l)| l.contains("panicked at")).flat_map(|(i, _)| i..(i + 2).min(lines.len()));
        let last = lines.len().saturating_sub(8)..lines.len();
        let mut shown: Vec<usize> = panics.chain(last).collect();
        shown.dedup();
        for i in shown {
            let _ = writeln!(msg, "{}", lines[i].chars().take(400).collect::<String>());
        }
    }
    panic!("{msg}");
}

/// What went wrong with one record; empty when it came out as expected.
fn check(s: &Sent, results: &Results, dlq: &HashMap<(i32, i64), Vec<&ExactRecord>>, commands_topic: &str) -> Vec<String> {
    let mut p = Vec::new();
    let letters = dlq.get(&(s.partition, s.offset)).map(Vec::as_slice).unwrap_or_default();
    let finals = s.id().and_then(|id| results.finals.get(&id)).map(Vec::as_slice).unwrap_or_default();
    let want_state = match s.outcome.as_str() {
        "completed" => Some(State::Completed),
        "timed_out" => Some(State::TimedOut),
        _ if s.failed_event => Some(State::Failed),
        _ => None,
    };
    if let Some(want) = want_state {
        match finals {
            [] => p.push(format!("no final event (expected {})", want.as_str())),
            [(record, ev)] => {
                if ev.state() != want {
                    let code = ev.data.error.as_ref().map(|e| format!(" ({}: {})", e.code, e.message)).unwrap_or_default();
                    p.push(format!("final event is {}{code}, expected {}", ev.state().as_str(), want.as_str()));
                } else if want == State::Failed {
                    let code = ev.data.error.as_ref().map(|e| e.code.as_str());
                    if code != s.reason.as_deref() {
                        p.push(format!("failed event's error.code is {code:?}, expected {:?}", s.reason));
                    }
                }
                let want_key = s.event_key();
                if record.key != want_key {
                    p.push(format!("event key changed: sent {}, event has {}", describe(want_key.as_deref()), describe(record.key.as_deref())));
                }
            }
            more => p.push(format!(
                "{} final events, expected one: {:?}",
                more.len(),
                more.iter().map(|(_, e)| e.state().as_str()).collect::<Vec<_>>()
            )),
        }
    }
    if s.outcome != "dead_letter" {
        if let Some(letter) = letters.first() {
            p.push(format!("dead-lettered as `{}`, expected {}", letter.header_str("courier_dlq_reason").unwrap_or("?"), s.outcome));
        }
    } else {
        let want = s.reason.as_deref().unwrap_or_default();
        match letters {
            [] => p.push(format!("no dead letter (expected `{want}`)")),
            [letter] => p.extend(check_letter(s, letter, want, commands_topic)),
            more => p.push(format!("{} dead letters, expected one", more.len())),
        }
        if !s.failed_event && !finals.is_empty() {
            p.push(format!("{} final events, expected none", finals.len()));
        }
    }
    if let Some(absent) = &s.absent_ce_id {
        let id = Uuid::parse_str(absent).expect("uuid");
        if let Some(events) = results.finals.get(&id) {
            p.push(format!("{} final events under the first (overridden) ce_id", events.len()));
        }
    }
    p
}

fn check_letter(s: &Sent, letter: &ExactRecord, want: &str, commands_topic: &str) -> Vec<String> {
    let mut p = Vec::new();
    let reason = letter.header_str("courier_dlq_reason");
    if reason != Some(want) {
        let message = letter.header_str("courier_dlq_message").unwrap_or_default();
        p.push(format!("dead letter reason {reason:?}, expected {want:?} (message: {:.200})", message));
    }
    if letter.header_str("courier_dlq_topic") != Some(commands_topic) {
        p.push(format!("courier_dlq_topic is {:?}", letter.header_str("courier_dlq_topic")));
    }
    let key = s.key();
    if letter.key != key {
        p.push(format!("dead letter key changed: sent {}, DLQ has {}", describe(key.as_deref()), describe(letter.key.as_deref())));
    }
    // A record too large to be dead-lettered whole gets a minimal letter (src/dlq.rs):
    // key and original headers while they fit, the value left out, its size recorded.
    if letter.header_str("courier_dlq_truncated") == Some("true") {
        if s.value_null || letter.header_str("courier_dlq_value_bytes") != Some(s.value_len.to_string().as_str()) {
            p.push(format!("minimal dead letter: courier_dlq_value_bytes {:?}, sent {} bytes", letter.header_str("courier_dlq_value_bytes"), s.value_len));
        }
        if letter.value.as_ref().is_some_and(|v| !v.is_empty()) {
            p.push("minimal dead letter carries a value".into());
        }
        return p;
    }
    // The DLQ keeps the original record untouched (src/dlq.rs), so a replay sends
    // exactly what the caller sent: value and headers, names included, byte for byte.
    let value_same = match &letter.value {
        None => s.value_null,
        Some(v) => !s.value_null && hex(&Sha256::digest(v)) == s.value_sha256,
    };
    if !value_same {
        let sent = if s.value_null { "null".to_string() } else { format!("{} bytes", s.value_len) };
        p.push(format!("dead letter value changed: sent {sent}, DLQ has {}", describe(letter.value.as_deref())));
    }
    if headers_digest(original_headers(letter)) != s.headers_sha256 {
        let got: Vec<String> = original_headers(letter).take(40).map(|(n, _)| hex(n)).collect();
        let missing: Vec<String> = s.header_names_hex.iter().filter(|n| !got.contains(n)).map(|n| String::from_utf8_lossy(&unhex(n)).into_owned()).collect();
        p.push(format!(
            "dead letter headers changed: sent {} headers, DLQ has {} besides courier_dlq_* (names missing: {missing:?})",
            s.header_count,
            original_headers(letter).count()
        ));
    }
    p
}

/// The harness checks itself: the commands topic holds exactly the records the
/// manifest lists (key, value and headers digests, read back with raw header names).
fn sent_as_listed(t: &common::TestTopics, sent: &[Sent]) -> Vec<String> {
    let reader = common::TopicReader::new(t, &t.topics.commands);
    let mut records = Vec::new();
    if !reader.read_to_end(&t.topics.commands, t.partitions, &mut records, Duration::from_secs(60)) {
        return vec!["harness: could not read the commands topic back".into()];
    }
    let at: HashMap<(i32, i64), &ExactRecord> = records.iter().map(|r| ((r.partition, r.offset), r)).collect();
    let mut out = Vec::new();
    for s in sent {
        let same = at.get(&(s.partition, s.offset)).is_some_and(|r| {
            r.key == s.key()
                && r.value.is_none() == s.value_null
                && hex(&Sha256::digest(r.value.as_deref().unwrap_or_default())) == s.value_sha256
                && headers_digest(r.headers.iter()) == s.headers_sha256
        });
        if !same {
            out.push(format!("harness: the commands topic does not hold {} ({}) as the manifest lists it", s.at(), s.kind));
        }
    }
    if records.len() != sent.len() {
        out.push(format!("harness: the commands topic holds {} records, the manifest lists {}", records.len(), sent.len()));
    }
    out
}

/// Good commands of one key complete in the order they were sent: their final events
/// sit on the results topic in command-offset order.
fn order_problems(sent: &[Sent], results: &Results) -> Vec<String> {
    let mut by_key: BTreeMap<&str, Vec<&Sent>> = BTreeMap::new();
    for s in sent.iter().filter(|s| s.kind == "good") {
        by_key.entry(s.key_hex.as_deref().unwrap_or_default()).or_default().push(s);
    }
    let mut out = Vec::new();
    for (key, mut commands) in by_key {
        commands.sort_by_key(|s| s.offset);
        let places: Vec<(i32, i64)> = commands
            .iter()
            .filter_map(|s| results.finals.get(&s.id()?).and_then(|v| v.first()).map(|(r, _)| (r.partition, r.offset)))
            .collect();
        let partitions: HashSet<i32> = places.iter().map(|p| p.0).collect();
        let inversions = places.windows(2).filter(|w| w[1].1 < w[0].1).count();
        if partitions.len() > 1 || inversions > 0 {
            let key = String::from_utf8_lossy(&unhex(key)).into_owned();
            out.push(format!(
                "key {key:?}: {} completed events on {} results partitions, {inversions} out of command order",
                places.len(),
                partitions.len()
            ));
        }
    }
    out
}
