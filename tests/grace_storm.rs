//! A storm of leaves and joins with a short shutdown grace: abandoned work publishes
//! nothing, and every stop is bounded.
//!
//! Three `courier worker`s (one group, `--shutdown-grace 1s`) share 6 partitions of
//! long commands (`sleep` 5 s, far past the grace; the demo `sleep` handler honours its
//! cancellation token and then returns an error at once, as a well-behaved long
//! handler does) and quick ones. Six times, the worker with the most long commands
//! running is sent SIGTERM and a replacement joins, so long commands are abandoned
//! over and over: by the stopping worker, and by the survivors as partitions move.
//! Then the last workers run everything to completion.
//!
//! An abandoned command was not finished: the handler's error on cancellation is the
//! worker's own doing, not the command's outcome, so nothing may be published for it
//! (its next owner runs it again). So every command ends with exactly one final event,
//! `completed`: none `failed` or `cancelled`, none lost, none twice. And a SIGTERMed
//! worker exits within EXIT_BOUND (grace + 15 s: the grace, the wait for abandoned
//! handlers to return, the final commit and leaving the group), measured from the
//! signal to the process exit.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use courier::envelope::ResultEvent;
use courier::{Client, NewCommand, State};
use serde_json::json;
use uuid::Uuid;

const GRACE: &str = "1s";
const GRACE_S: u64 = 1;
/// Longest a SIGTERMed worker may take to exit: the grace plus 15 s.
const EXIT_BOUND: Duration = Duration::from_secs(GRACE_S + 15);
const LONG: usize = 40;
const LONG_MS: u64 = 5_000;
const QUICK: usize = 40;
const ROUNDS: usize = 6;
const WORKERS: usize = 3;

/// What the results topic says so far.
struct Tracker {
    reader: common::TopicReader,
    /// The worker of each command's latest `started` event, and when it was seen.
    started: HashMap<Uuid, (String, usize)>,
    finals: HashMap<Uuid, Vec<ResultEvent>>,
    seen: usize,
}

impl Tracker {
    fn pump(&mut self, budget: Duration) {
        for r in self.reader.poll_exact(budget) {
            self.seen += 1;
            let ev = r.result_event().unwrap_or_else(|e| panic!("undecodable result event p{}@{}: {e}", r.partition, r.offset));
            match ev.state() {
                State::Started => {
                    self.started.insert(ev.command_id(), (ev.data.worker.clone(), self.seen));
                }
                s if s.is_final() => self.finals.entry(ev.command_id()).or_default().push(ev),
                _ => {}
            }
        }
    }

    /// Commands running on `worker` by the events, started after event number `since`.
    fn running_on(&self, worker: &str, since: usize) -> usize {
        self.started.iter().filter(|(id, (w, at))| w == worker && *at > since && !self.finals.contains_key(*id)).count()
    }
}

fn spawn(t: &common::TestTopics, n: usize) -> common::WorkerProc {
    common::WorkerProc::spawn(t, &format!("storm-{n}"), &["--shutdown-grace", GRACE])
}

#[tokio::test(flavor = "multi_thread")]
async fn abandoned_work_publishes_nothing_and_stops_are_bounded() {
    let started_at = Instant::now();
    let t = common::fresh_topics("storm", 6).await;
    let mut workers: Vec<common::WorkerProc> = (0..WORKERS).map(|n| spawn(&t, n)).collect();
    for w in &workers {
        assert!(w.wait_for_log("partitions assigned", Duration::from_secs(60)), "{} never joined:\n{}", w.id, w.log_text());
    }
    let client = Client::new(t.kafka.clone()).unwrap();
    // Long commands each on a key of their own, so they all run at once; quick ones
    // share keys. `steps: 1`: no progress events, only `started` and the final.
    let long = (0..LONG).map(|i| NewCommand::new("sleep", json!({"ms": LONG_MS, "steps": 1})).key(format!("long-{i}")));
    let quick = (0..QUICK).map(|i| NewCommand::new("echo", json!({"i": i})).key(format!("quick-{}", i % 8)));
    let ids: Vec<Uuid> = client.submit_batch(long.chain(quick).collect()).await.unwrap();
    let all: HashSet<Uuid> = ids.iter().copied().collect();
    assert_eq!(all.len(), LONG + QUICK);

    let mut tracker = Tracker { reader: common::TopicReader::new(&t, &t.topics.results), started: HashMap::new(), finals: HashMap::new(), seen: 0 };
    let mut exits: Vec<(String, Duration, Option<std::process::ExitStatus>, usize)> = Vec::new();
    let mut since = 0;
    for round in 1..=ROUNDS {
        // The victim: the live worker with the most long commands running (by their
        // `started` events since the last round), once one has some. Round 1 waits
        // for that; later rounds go ahead after 20 s without (everything may be done).
        let patience = Duration::from_secs(if round == 1 { 60 } else { 20 });
        let until = Instant::now() + patience;
        let (victim, running) = loop {
            tracker.pump(Duration::from_millis(200));
            let busiest = workers.iter().enumerate().map(|(i, w)| (i, tracker.running_on(&w.id, since))).max_by_key(|(_, n)| *n);
            let (i, n) = busiest.expect("workers are running");
            if n >= 3 || (round > 1 && (Instant::now() > until || all.iter().all(|id| tracker.finals.contains_key(id)))) {
                break (i, n);
            }
            assert!(Instant::now() < until, "no worker has long commands running {patience:?} after they were sent");
        };
        let mut leaving = workers.remove(victim);
        let sent = Instant::now();
        leaving.sigterm();
        let joining = spawn(&t, WORKERS + round - 1);
        let status = leaving.wait_exit(EXIT_BOUND + Duration::from_secs(15));
        let took = sent.elapsed();
        println!("round {round}: SIGTERM to {} with {running} long commands running: exited {status:?} after {took:.2?}; {} joins", leaving.id, joining.id);
        exits.push((leaving.id.clone(), took, status, running));
        if status.is_none() {
            leaving.sigkill();
        }
        assert!(joining.wait_for_log("partitions assigned", Duration::from_secs(60)), "{} never joined:\n{}", joining.id, joining.log_text());
        workers.push(joining);
        since = tracker.seen;
    }

    // The last workers run everything: wait for every command's final event, or for
    // the group to have committed everything (then nothing more is coming).
    let group = common::worker_group(&t);
    let until = Instant::now() + Duration::from_secs(180);
    let mut next_lag_check = Instant::now();
    while !all.iter().all(|id| tracker.finals.contains_key(id)) && Instant::now() < until {
        tracker.pump(Duration::from_millis(300));
        if Instant::now() >= next_lag_check {
            if common::group_lag(&t, &group, &t.topics.commands) == 0 {
                break;
            }
            next_lag_check = Instant::now() + Duration::from_secs(2);
        }
    }
    let lag = common::wait_for_zero_lag(&t, &group, &t.topics.commands, Duration::from_secs(60));
    let mut rest = Vec::new();
    let read_all = tracker.reader.read_to_end(&t.topics.results, t.partitions, &mut rest, Duration::from_secs(30));
    for r in rest {
        tracker.seen += 1;
        if let Ok(ev) = r.result_event() {
            if ev.state().is_final() {
                tracker.finals.entry(ev.command_id()).or_default().push(ev);
            }
        }
    }

    // The verdict, with counts.
    let mut problems = Vec::new();
    let max_exit = exits.iter().map(|e| e.1).max().unwrap_or_default();
    for (id, took, status, running) in &exits {
        match status {
            None => problems.push(format!("{id} (SIGTERMed with {running} long commands running) had not exited {took:.1?} after the signal (bound {EXIT_BOUND:?})")),
            Some(s) if *took > EXIT_BOUND => problems.push(format!("{id} exited ({s}) {took:.1?} after SIGTERM, over the {EXIT_BOUND:?} bound")),
            Some(s) if !s.success() => problems.push(format!("{id} exited uncleanly after SIGTERM: {s}")),
            Some(_) => {}
        }
    }
    let is_long = |id: &Uuid| ids[..LONG].contains(id);
    let mut by_state: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    let mut twice = Vec::new();
    let mut examples: BTreeMap<&str, String> = BTreeMap::new();
    for (id, events) in &tracker.finals {
        let kind = if is_long(id) { "long" } else { "quick" };
        for ev in events {
            *by_state.entry((kind, ev.state().as_str())).or_default() += 1;
            if ev.state() != State::Completed {
                examples.entry(ev.state().as_str()).or_insert_with(|| {
                    let e = ev.data.error.as_ref().map(|e| format!("{}: {}", e.code, e.message)).unwrap_or_default();
                    format!("{kind} command {id} on {}: {e}", ev.data.worker)
                });
            }
        }
        if events.len() > 1 {
            twice.push(format!("{id} ({kind}): {:?}", events.iter().map(|e| format!("{} on {}", e.state().as_str(), e.data.worker)).collect::<Vec<_>>()));
        }
    }
    let lost: Vec<&Uuid> = all.iter().filter(|id| !tracker.finals.contains_key(*id)).collect();
    let strays = tracker.finals.keys().filter(|id| !all.contains(*id)).count();
    let not_completed: usize = by_state.iter().filter(|((_, s), _)| *s != "completed").map(|(_, n)| n).sum();
    if not_completed > 0 {
        problems.push(format!("{not_completed} final events are not `completed` (abandoned work must publish nothing): {by_state:?}; e.g. {examples:?}"));
    }
    if !twice.is_empty() {
        problems.push(format!("{} commands have more than one final event, e.g. {:?}", twice.len(), &twice[..twice.len().min(3)]));
    }
    if !lost.is_empty() {
        let long_lost = lost.iter().filter(|id| is_long(id)).count();
        problems.push(format!("{} of {} commands have no final event ({long_lost} long, {} quick)", lost.len(), all.len(), lost.len() - long_lost));
    }
    if strays > 0 {
        problems.push(format!("{strays} final events for commands never sent"));
    }
    if lag != 0 {
        problems.push(format!("the group's lag on the commands topic is {lag}, not 0"));
    }
    if !read_all {
        problems.push("could not read the results topic to its end".into());
    }
    for w in &mut workers {
        if !w.is_running() {
            problems.push(format!("{} exited on its own", w.id));
        }
    }
    let mut summary = format!(
        "grace storm: {ROUNDS} SIGTERMs (grace {GRACE}), slowest exit {max_exit:.2?} (bound {EXIT_BOUND:?}); {} commands, finals by state {by_state:?}; lag {lag}; {:.1?} in all",
        all.len(),
        started_at.elapsed()
    );
    if problems.is_empty() {
        println!("{summary}");
        return;
    }
    for p in &problems {
        let _ = write!(summary, "\n  {p}");
    }
    panic!("{summary}");
}
