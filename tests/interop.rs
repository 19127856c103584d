//! Interop with clients no one here wrote, against the real broker: a Python
//! confluent-kafka caller that knows only the documented headers, and a Java caller
//! using Spring Kafka's ReplyingKafkaTemplate unchanged.
//!
//! The Python interpreter is `$COURIER_PYTHON` (scripts/test.sh points it at a venv
//! with tests/interop/python/requirements.txt), else `python3`. The Java caller is
//! built here with Maven (a no-op after the first build; ~/.m2 is the cache).

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

/// Runs a child process to completion within `timeout`; on failure panics with its
/// output and, when given, the worker's log. Returns its stdout.
fn run(what: &str, cmd: &mut Command, timeout: Duration, worker: Option<&common::WorkerProc>) -> String {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what} ({cmd:?}): {e}"));
    // Drained on threads so a chatty child never blocks on a full pipe.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (stdout, stderr) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    if !status.is_some_and(|s| s.success()) {
        let verdict = status.map_or_else(|| format!("killed after {timeout:?}"), |s| s.to_string());
        let log = worker.map(|w| format!("\n--- worker log ---\n{}", w.log_text())).unwrap_or_default();
        panic!("{what} failed ({verdict})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}{log}");
    }
    eprintln!("{what}: ok in {:.1?}", started.elapsed());
    stdout
}

async fn create_topic(t: &common::TestTopics, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = t.kafka.client_config().expect("config").create().expect("admin");
    let created = admin
        .create_topics(&[NewTopic::new(name, partitions, TopicReplication::Fixed(1))], &AdminOptions::new())
        .await
        .expect("create topic");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
}

fn started_worker(t: &common::TestTopics, id: &str) -> common::WorkerProc {
    let w = common::WorkerProc::spawn(t, id, &[]);
    assert!(w.wait_for_log("partitions assigned", Duration::from_secs(60)), "worker never got partitions:\n{}", w.log_text());
    w
}

#[tokio::test(flavor = "multi_thread")]
async fn python_confluent_kafka_caller() {
    let t = common::fresh_topics("py", 3).await;
    let w = started_worker(&t, "w1");
    let python = std::env::var("COURIER_PYTHON").ok().filter(|p| !p.trim().is_empty()).unwrap_or_else(|| "python3".into());
    let script = common::repo().join("tests/interop/python/roundtrip.py");
    let out = run(
        "python confluent-kafka caller",
        Command::new(&python).arg(script).args(["--bootstrap", &t.kafka.bootstrap, "--prefix", &t.kafka.prefix]),
        Duration::from_secs(90),
        Some(&w),
    );
    assert!(out.contains("\"python_interop\": \"ok\""), "{out}");
}

/// Builds tests/interop/java (compiles, writes target/classpath.txt) and returns the
/// classpath to run it with.
fn build_java(project: &Path) -> String {
    run(
        "mvn package (tests/interop/java)",
        Command::new("mvn").args(["-q", "-B", "-Dstyle.color=never", "-DskipTests", "-f"]).arg(project.join("pom.xml")).arg("package"),
        // The first build downloads Spring Kafka into ~/.m2; later ones take seconds.
        Duration::from_secs(600),
        None,
    );
    let deps = std::fs::read_to_string(project.join("target/classpath.txt")).expect("mvn wrote target/classpath.txt");
    format!("{}:{}", project.join("target/classes").display(), deps.trim())
}

#[tokio::test(flavor = "multi_thread")]
async fn spring_replying_kafka_template_caller() {
    let project = common::repo().join("tests/interop/java");
    let classpath = tokio::task::spawn_blocking(move || build_java(&project)).await.expect("build");

    let t = common::fresh_topics("spring", 3).await;
    // Replies for a group-subscribed reply container, and for one pinned to partition 2
    // of a 3-partition topic (Spring then sends kafka_replyPartition).
    create_topic(&t, &format!("{}.replies", t.kafka.prefix), 1).await;
    create_topic(&t, &format!("{}.replies.pinned", t.kafka.prefix), 3).await;
    let w = started_worker(&t, "w1");
    let out = run(
        "spring ReplyingKafkaTemplate caller",
        Command::new("java").args(["-cp", &classpath, "dev.courier.interop.SpringReply", &t.kafka.bootstrap, &t.kafka.prefix]),
        Duration::from_secs(120),
        Some(&w),
    );
    assert!(out.contains("\"spring_interop\": \"ok\""), "{out}");
}
