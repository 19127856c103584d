//! Connection settings shared by every Courier component that talks to Kafka.
//!
//! Courier passes any librdkafka property through (`--kafka-opt security.protocol=SSL`)
//! instead of wrapping each one, so TLS, SASL and tuning work the way librdkafka
//! documents them.

use rdkafka::ClientConfig;

/// Errors building a Kafka client or talking to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    #[error("--kafka-opt {0:?} is not KEY=VALUE")]
    BadOption(String),
    #[error("kafka client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("topic {0} does not exist: run `courier topics create`")]
    MissingTopic(String),
    #[error("could not start a thread: {0}")]
    Thread(String),
}

/// Where the cluster is and how to reach it.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Bootstrap servers (host:port,...). Empty means: start the embedded mock cluster
    /// (only `dev` and `demo` allow that).
    #[arg(long = "bootstrap", env = "COURIER_BOOTSTRAP", default_value = "")]
    pub bootstrap: String,
    /// Topic prefix: topics are `<prefix>.commands`, `<prefix>.results`, ...
    #[arg(long = "prefix", env = "COURIER_TOPIC_PREFIX", default_value = "courier")]
    pub prefix: String,
    /// Extra librdkafka properties, KEY=VALUE; repeat the flag or comma-separate in env.
    #[arg(long = "kafka-opt", env = "COURIER_KAFKA_OPTS", value_delimiter = ',')]
    pub kafka_opts: Vec<String>,
}

impl KafkaArgs {
    pub fn new(bootstrap: impl Into<String>, prefix: impl Into<String>) -> Self {
        KafkaArgs { bootstrap: bootstrap.into(), prefix: prefix.into(), kafka_opts: Vec::new() }
    }

    /// A librdkafka config with bootstrap servers and pass-through options applied.
    pub fn client_config(&self) -> Result<ClientConfig, KafkaSetupError> {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.bootstrap);
        cfg.set("client.id", "courier");
        for opt in &self.kafka_opts {
            let (k, v) = opt.split_once('=').ok_or_else(|| KafkaSetupError::BadOption(opt.clone()))?;
            cfg.set(k.trim(), v.trim());
        }
        Ok(cfg)
    }

    pub fn topics(&self) -> crate::topics::Topics {
        crate::topics::Topics::new(&self.prefix)
    }
}

/// Producer settings every Courier producer shares: idempotent (no duplicates or
/// reordering from internal retries), acks from all in-sync replicas, a short linger
/// for batching.
pub fn producer_config(args: &KafkaArgs) -> Result<ClientConfig, KafkaSetupError> {
    let mut cfg = args.client_config()?;
    set_default(&mut cfg, "enable.idempotence", "true");
    set_default(&mut cfg, "acks", "all");
    set_default(&mut cfg, "linger.ms", "5");
    set_default(&mut cfg, "message.timeout.ms", "30000");
    Ok(cfg)
}

/// Prefetch settings for a consumer that reads a backlog through one queue per
/// partition: the worker, and the bench's raw loop (so the ceiling it measures is
/// fetched the same way). librdkafka keeps at most `queued.min.messages` records and
/// `queued.max.messages.kbytes` per partition; its defaults (100,000 records, 64 MB)
/// let a backlog grow the process by gigabytes, while too small a queue leaves the
/// consumer waiting on fetches it asked for too late.
pub fn set_fetch_defaults(cfg: &mut ClientConfig) {
    set_default(cfg, "queued.max.messages.kbytes", FETCH_QUEUE_KBYTES);
    set_default(cfg, "queued.min.messages", FETCH_QUEUE_MESSAGES);
    // A partition whose queue drained fetches again at once, instead of after the
    // default 1 s back-off.
    set_default(cfg, "fetch.queue.backoff.ms", "10");
}

const FETCH_QUEUE_KBYTES: &str = "4096";
const FETCH_QUEUE_MESSAGES: &str = "10000";

/// Sets a property unless the user already set it through `--kafka-opt`.
pub fn set_default(cfg: &mut ClientConfig, key: &str, value: &str) {
    if cfg.get(key).is_none() {
        cfg.set(key, value);
    }
}

/// Low and high watermarks of a partition, retrying briefly: right after a topic is
/// created, brokers may not yet agree on its leader.
pub fn watermarks<C: rdkafka::consumer::Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    consumer: &C,
    topic: &str,
    partition: i32,
) -> Result<(i64, i64), rdkafka::error::KafkaError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        match consumer.fetch_watermarks(topic, partition, std::time::Duration::from_secs(5)) {
            Ok(w) => return Ok(w),
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::debug!(%topic, partition, error = %e, "watermarks not available yet; retrying");
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Fails fast, with the fix in the message (`MissingTopic`), when any of `topics` does
/// not exist: one metadata client for all of them. Blocking.
pub fn require_topics<'a>(kafka: &KafkaArgs, topics: impl IntoIterator<Item = &'a String>) -> Result<(), KafkaSetupError> {
    let consumer: rdkafka::consumer::BaseConsumer = kafka.client_config()?.create()?;
    for topic in topics {
        partitions_of(&consumer, topic)?;
    }
    Ok(())
}

/// The partition ids of a topic; `MissingTopic` when it does not exist. Retries for
/// a few seconds first: a topic created a moment ago may not be in every broker's
/// metadata yet.
pub fn partitions_of<C: rdkafka::consumer::Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    consumer: &C,
    topic: &str,
) -> Result<Vec<i32>, KafkaSetupError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let metadata = consumer.fetch_metadata(Some(topic), std::time::Duration::from_secs(10));
        let partitions: Vec<i32> = match &metadata {
            Ok(md) => md
                .topics()
                .iter()
                .filter(|t| t.name() == topic && t.error().is_none())
                .flat_map(|t| t.partitions().iter().filter(|p| p.error().is_none()).map(|p| p.id()))
                .collect(),
            Err(_) => Vec::new(),
        };
        if !partitions.is_empty() {
            return Ok(partitions);
        }
        if std::time::Instant::now() >= deadline {
            return match metadata {
                Err(e) => Err(e.into()),
                Ok(_) => Err(KafkaSetupError::MissingTopic(topic.to_string())),
            };
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}
