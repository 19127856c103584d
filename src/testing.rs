//! Unit tests that need the real broker: crate-internal parts (the publisher) whose
//! behaviour the integration tests cannot reach through the public API.
//!
//! The broker is `$COURIER_BOOTSTRAP`, else the project's own (`scripts/kafka.sh
//! start`, which reuses a running one), as in `tests/common`.

use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::envelope::HeaderMap;
use crate::follow::{read_to_end, StartAt};
use crate::kafka::KafkaArgs;
use crate::topics::{create_topics, TopicSpec};

fn bootstrap() -> String {
    static BOOTSTRAP: OnceLock<String> = OnceLock::new();
    BOOTSTRAP
        .get_or_init(|| {
            if let Some(b) = std::env::var("COURIER_BOOTSTRAP").ok().filter(|b| !b.trim().is_empty()) {
                return b;
            }
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh");
            let out = Command::new("bash").arg(script).arg("start").stderr(Stdio::inherit()).output().expect("run scripts/kafka.sh");
            assert!(out.status.success(), "scripts/kafka.sh start failed");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("COURIER_BOOTSTRAP="))
                .expect("kafka.sh printed no COURIER_BOOTSTRAP")
                .trim()
                .to_string()
        })
        .clone()
}

/// Fresh Courier topics of their own for one test.
pub async fn fresh_kafka(name: &str, partitions: i32) -> KafkaArgs {
    let suffix = &crate::envelope::new_id().simple().to_string()[20..];
    let kafka = KafkaArgs::new(bootstrap(), format!("u-{name}-{suffix}"));
    let spec = TopicSpec { partitions, replication: 1, retention_hours: 24, ..TopicSpec::default() };
    create_topics(&kafka, &spec).await.expect("create topics");
    kafka
}

/// Every record of `topic` now: (key, headers).
pub async fn keys_and_headers(kafka: &KafkaArgs, topic: &str) -> Vec<(Option<Vec<u8>>, HeaderMap)> {
    let mut out = Vec::new();
    let within = Some(std::time::Duration::from_secs(30));
    read_to_end(kafka, topic, StartAt::Beginning, within, |seen| out.push((seen.key().map(<[u8]>::to_vec), seen.headers())))
        .await
        .expect("read back");
    out
}
