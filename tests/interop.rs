//! Interop with clients no one here wrote, against the real broker: a Python
//! confluent-kafka caller that knows only the documented headers, and a Java caller
//! using Spring Kafka's ReplyingKafkaTemplate unchanged.
//!
//! The Python interpreter is [`common::python`]. The Java caller is
//! built here with Maven (a no-op after the first build; ~/.m2 is the cache).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::run_child as run;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;

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
    let python = common::python();
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
