//! Interop with clients no one here wrote, against the real broker: a Python
//! confluent-kafka caller that knows only the documented headers, and a Java caller
//! using Spring Kafka's ReplyingKafkaTemplate.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs a foreign client to completion (at most two minutes) and returns its stdout.
fn run(cmd: &mut Command, worker: &common::WorkerProc) -> String {
    use std::io::Read;
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start the foreign client");
    let until = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > until {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    let _ = child.stdout.take().map(|mut o| o.read_to_string(&mut stdout));
    let _ = child.stderr.take().map(|mut e| e.read_to_string(&mut stderr));
    assert!(
        status.is_some_and(|s| s.success()),
        "foreign client failed ({status:?})\nstdout:\n{stdout}\nstderr:\n{stderr}\nworker log:\n{}",
        worker.log_text()
    );
    stdout
}

#[tokio::test(flavor = "multi_thread")]
async fn python_confluent_kafka_caller() {
    let t = common::fresh_topics("py", 3).await;
    let w = common::WorkerProc::spawn(&t, "py-1", &[]);
    assert!(w.wait_for_log("partitions assigned", Duration::from_secs(60)), "{}", w.log_text());
    let python = std::env::var("COURIER_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = common::repo().join("tests/interop/python/roundtrip.py");
    let out = run(Command::new(python).arg(script).args(["--bootstrap", &t.kafka.bootstrap, "--prefix", &t.kafka.prefix]), &w);
    assert!(out.contains("\"python_interop\": \"ok\""), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn spring_replying_kafka_template_caller() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;

    let t = common::fresh_topics("spring", 3).await;
    let replies = format!("{}.replies", t.kafka.prefix);
    let admin: AdminClient<DefaultClientContext> = t.kafka.client_config().unwrap().create().unwrap();
    let created = admin.create_topics(&[NewTopic::new(&replies, 1, TopicReplication::Fixed(1))], &AdminOptions::new()).await.unwrap();
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let w = common::WorkerProc::spawn(&t, "spring-1", &[]);
    assert!(w.wait_for_log("partitions assigned", Duration::from_secs(60)), "{}", w.log_text());

    let project = common::repo().join("tests/interop/java");
    let pom = project.join("pom.xml");
    run(Command::new("mvn").args(["-q", "-B", "-f"]).arg(&pom).args(["package", "-DskipTests"]), &w);
    let classpath = format!("{}:{}/*", project.join("target/classes").display(), project.join("target/lib").display());
    let out = run(
        Command::new("java").args(["-cp", &classpath, "dev.courier.interop.SpringReply", &t.kafka.bootstrap, &t.kafka.prefix]),
        &w,
    );
    assert!(out.contains("\"spring_interop\": \"ok\""), "{out}");
}
