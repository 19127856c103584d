//! Interop with clients no one here wrote, against the real broker: a Python
//! confluent-kafka caller that knows only the documented headers, and a Java caller
//! using Spring Kafka's ReplyingKafkaTemplate.

mod common;

use std::process::Command;
use std::time::Duration;

fn run(cmd: &mut Command, worker: &common::WorkerProc) -> String {
    let out = cmd.output().expect("run the foreign client");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "foreign client failed\nstdout:\n{stdout}\nstderr:\n{}\nworker log:\n{}",
        String::from_utf8_lossy(&out.stderr),
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
