//! Connection settings shared by every Courier component that talks to Kafka.
//!
//! Courier passes any librdkafka property through (`--kafka-opt security.protocol=SSL`)
//! instead of wrapping each one, so TLS, SASL and tuning work the way librdkafka
//! documents them.

mod copartition;
mod partitioner;
mod partitions;
mod preflight;

use std::fmt;

use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

pub use copartition::{partition_count, PartitionMismatch};
pub use partitioner::Partitioner;
pub(crate) use partitions::{assignment, commit_offsets, failed_commits, offset_list, partitions_in, set_paused};
pub(crate) use preflight::{check, Needs, Operation};

/// The environment variable holding extra librdkafka properties, comma-separated.
pub const KAFKA_OPTS_ENV: &str = "COURIER_KAFKA_OPTS";

/// Errors building a Kafka client or talking to the cluster.
///
/// None of them shows an option's value: `--kafka-opt` carries SASL passwords and
/// key passphrases, and these messages end up in logs.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    #[error("Kafka option #{position} (counting {KAFKA_OPTS_ENV} first, then each --kafka-opt) is not KEY=VALUE: {problem} (its text is not shown, as it may hold a secret)")]
    BadOption { position: usize, problem: &'static str },
    #[error("Kafka option {key}: {reason}")]
    BadProperty { key: String, reason: String },
    #[error("{KAFKA_OPTS_ENV}: {0}")]
    BadEnv(EnvOptsError),
    #[error("kafka client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("topic {0} does not exist: run `courier topics create`")]
    MissingTopic(String),
    /// `missing` lists grants: `WRITE on topic p.results; READ on consumer group g`.
    #[error("the Kafka cluster does not allow this principal {missing}: grant it the ACLs (README, \"Secured Kafka\", lists what each component needs)")]
    Denied { missing: String },
    #[error("the Kafka cluster refused this client's credentials or TLS handshake ({0}): check the security.protocol, sasl.* and ssl.* options")]
    Unauthenticated(RDKafkaErrorCode),
    #[error("could not start a thread: {0}")]
    Thread(String),
    #[error(transparent)]
    NotCoPartitioned(#[from] PartitionMismatch),
}

/// Why `COURIER_KAFKA_OPTS` could not be split; never shows its text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvOptsError {
    #[error("it is not valid UTF-8")]
    NotUnicode,
    #[error("a backslash at position {0} escapes neither ',' nor '\\' (write \\, for a comma, \\\\ for a backslash)")]
    BadEscape(usize),
}

/// A partition of a topic: what offsets are committed for, assignments are made of
/// and the ledger keeps a book per. Shown (`{}` and `{:?}`) as `topic[partition]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        TopicPartition { topic: topic.into(), partition }
    }

    /// The partition a consumed record came from.
    pub fn of(record: &impl rdkafka::message::Message) -> Self {
        TopicPartition::new(record.topic(), record.partition())
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.topic, self.partition)
    }
}

impl fmt::Debug for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Where the cluster is and how to reach it.
///
/// Parsed from flags through [`clap::FromArgMatches`], which also merges
/// `COURIER_KAFKA_OPTS` ([`KafkaArgs::with_env_opts`]): every subcommand that
/// flattens these args gets the same rules. [`KafkaArgs::new`] (for embedding)
/// reads no environment.
#[derive(Clone)]
pub struct KafkaArgs {
    /// Bootstrap servers; empty means the embedded mock cluster (`dev`, `demo`).
    pub bootstrap: String,
    /// Topic prefix: topics are `<prefix>.commands`, `<prefix>.results`, ...
    pub prefix: String,
    /// librdkafka properties, `KEY=VALUE` each; later ones win.
    pub kafka_opts: Vec<String>,
}

/// The flags themselves; [`KafkaArgs`] adds the environment variable.
#[derive(Clone, clap::Args)]
struct KafkaFlags {
    /// Bootstrap servers (host:port,...). Empty means: start the embedded mock cluster
    /// (only `dev` and `demo` allow that).
    #[arg(long = "bootstrap", env = "COURIER_BOOTSTRAP", default_value = "")]
    bootstrap: String,
    /// Topic prefix: topics are `<prefix>.commands`, `<prefix>.results`, ...
    #[arg(long = "prefix", env = "COURIER_TOPIC_PREFIX", default_value = "courier")]
    prefix: String,
    /// An extra librdkafka property, KEY=VALUE, taken whole (commas included);
    /// repeat the flag for more. COURIER_KAFKA_OPTS adds more, comma-separated, with
    /// `\,` for a literal comma and `\\` for a backslash; a flag wins over the env
    /// var for the same key.
    #[arg(long = "kafka-opt", value_name = "KEY=VALUE")]
    kafka_opts: Vec<String>,
}

impl clap::FromArgMatches for KafkaArgs {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Self::from_arg_matches_mut(&mut matches.clone())
    }

    fn from_arg_matches_mut(matches: &mut clap::ArgMatches) -> Result<Self, clap::Error> {
        let flags = KafkaFlags::from_arg_matches_mut(matches)?;
        let args = KafkaArgs { bootstrap: flags.bootstrap, prefix: flags.prefix, kafka_opts: flags.kafka_opts };
        args.with_env_opts().map_err(|e| clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{e}\n")))
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl clap::Args for KafkaArgs {
    fn group_id() -> Option<clap::Id> {
        KafkaFlags::group_id()
    }

    fn augment_args(cmd: clap::Command) -> clap::Command {
        KafkaFlags::augment_args(cmd)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        KafkaFlags::augment_args_for_update(cmd)
    }
}

impl std::fmt::Debug for KafkaArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opts: Vec<String> = self.kafka_opts.iter().map(|o| redacted(o)).collect();
        f.debug_struct("KafkaArgs").field("bootstrap", &self.bootstrap).field("prefix", &self.prefix).field("kafka_opts", &opts).finish()
    }
}

/// Parts of a property name that mark its value as a secret.
const SECRET_KEY_PARTS: [&str; 7] = ["password", "secret", "key", "token", "jaas", "credential", "oauthbearer"];

/// An option as `{:?}` may show it: the value of a secret-looking key replaced, and
/// an option without `=` (which may be a pasted secret) not shown at all.
fn redacted(opt: &str) -> String {
    match opt.split_once('=') {
        None => "<not KEY=VALUE, hidden>".to_string(),
        Some((key, _)) if SECRET_KEY_PARTS.iter().any(|p| key.to_ascii_lowercase().contains(p)) => format!("{}=<redacted>", key.trim()),
        Some(_) => opt.to_string(),
    }
}

/// Splits `COURIER_KAFKA_OPTS` on unescaped commas: `\,` is a literal comma and
/// `\\` a backslash (so SASL passwords with commas can be passed); empty entries
/// are skipped. Any other backslash is an error rather than a guess.
pub(crate) fn split_env_opts(text: &str) -> Result<Vec<String>, EnvOptsError> {
    let mut opts = Vec::new();
    let mut current = String::new();
    let mut chars = text.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, escaped @ (',' | '\\'))) => current.push(escaped),
                _ => return Err(EnvOptsError::BadEscape(at)),
            },
            ',' => opts.push(std::mem::take(&mut current)),
            other => current.push(other),
        }
    }
    opts.push(current);
    Ok(opts.into_iter().filter(|o| !o.trim().is_empty()).collect())
}

impl KafkaArgs {
    pub fn new(bootstrap: impl Into<String>, prefix: impl Into<String>) -> Self {
        KafkaArgs { bootstrap: bootstrap.into(), prefix: prefix.into(), kafka_opts: Vec::new() }
    }

    /// These args with the options of `COURIER_KAFKA_OPTS` put before their own, so
    /// a `--kafka-opt` for the same key wins. What every parsed command line gets.
    pub fn with_env_opts(mut self) -> Result<Self, KafkaSetupError> {
        let Some(raw) = std::env::var_os(KAFKA_OPTS_ENV) else { return Ok(self) };
        let text = raw.into_string().map_err(|_| KafkaSetupError::BadEnv(EnvOptsError::NotUnicode))?;
        let mut opts = split_env_opts(&text).map_err(KafkaSetupError::BadEnv)?;
        opts.append(&mut self.kafka_opts);
        self.kafka_opts = opts;
        Ok(self)
    }

    /// A librdkafka config with bootstrap servers and pass-through options applied,
    /// each checked by librdkafka now, so a bad one is named (by key) here rather than
    /// surfacing, value and all, from whichever client is created first.
    pub fn client_config(&self) -> Result<ClientConfig, KafkaSetupError> {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.bootstrap);
        cfg.set("client.id", "courier");
        for (i, opt) in self.kafka_opts.iter().enumerate() {
            let (k, v) = split_option(i + 1, opt)?;
            cfg.set(k, v);
        }
        cfg.create_native_config().map_err(scrubbed)?;
        Ok(cfg)
    }
}

/// `KEY=VALUE`, trimmed; `position` (from 1) names a bad one without showing it.
fn split_option(position: usize, opt: &str) -> Result<(&str, &str), KafkaSetupError> {
    let (k, v) = opt.split_once('=').ok_or(KafkaSetupError::BadOption { position, problem: "it has no '='" })?;
    if k.trim().is_empty() {
        return Err(KafkaSetupError::BadOption { position, problem: "its key is empty" });
    }
    Ok((k.trim(), v.trim()))
}

/// librdkafka's refusal of a property without the value: rdkafka's own error
/// prints it, and librdkafka's reason may quote it.
fn scrubbed(e: rdkafka::error::KafkaError) -> KafkaSetupError {
    match e {
        rdkafka::error::KafkaError::ClientConfig(_, reason, key, value) => {
            let reason = if value.is_empty() { reason } else { reason.replace(&value, "<value>") };
            KafkaSetupError::BadProperty { key, reason }
        }
        other => KafkaSetupError::Client(other),
    }
}

/// Producer settings every Courier producer shares: idempotent (no duplicates or
/// reordering from internal retries), acks from all in-sync replicas, a short linger
/// for batching.
pub(crate) fn producer_config(args: &KafkaArgs) -> Result<ClientConfig, KafkaSetupError> {
    producer_config_timed(args, "30000")
}

/// A transactional producer's settings: a worker's exactly-once outbox. Short
/// timeouts, so a crashed worker's open transaction stops blocking read_committed
/// readers soon even when no successor reuses its id (a delivery must time out within
/// the transaction). A user's `--kafka-opt` still wins over both.
pub(crate) fn transactional_producer_config(args: &KafkaArgs, transactional_id: &str) -> Result<ClientConfig, KafkaSetupError> {
    let mut cfg = producer_config_timed(args, "10000")?;
    cfg.set("transactional.id", transactional_id);
    set_default(&mut cfg, "transaction.timeout.ms", "10000");
    Ok(cfg)
}

fn producer_config_timed(args: &KafkaArgs, message_timeout_ms: &str) -> Result<ClientConfig, KafkaSetupError> {
    let mut cfg = args.client_config()?;
    set_default(&mut cfg, "enable.idempotence", "true");
    set_default(&mut cfg, "acks", "all");
    set_default(&mut cfg, "linger.ms", "5");
    set_default(&mut cfg, "message.timeout.ms", message_timeout_ms);
    Ok(cfg)
}

/// Prefetch settings for a consumer that reads a backlog through one queue per
/// partition: the worker, and the bench's raw loop (so the ceiling it measures is
/// fetched the same way). librdkafka keeps at most `queued.min.messages` records and
/// `queued.max.messages.kbytes` per partition; its defaults (100,000 records, 64 MB)
/// let a backlog grow the process by gigabytes, while too small a queue leaves the
/// consumer waiting on fetches it asked for too late.
pub(crate) fn set_fetch_defaults(cfg: &mut ClientConfig) {
    set_default(cfg, "queued.max.messages.kbytes", FETCH_QUEUE_KBYTES);
    set_default(cfg, "queued.min.messages", FETCH_QUEUE_MESSAGES);
    // A partition whose queue drained fetches again at once, instead of after the
    // default 1 s back-off.
    set_default(cfg, "fetch.queue.backoff.ms", "10");
}

const FETCH_QUEUE_KBYTES: &str = "4096";
const FETCH_QUEUE_MESSAGES: &str = "10000";

/// Sets a property unless the user already set it through `--kafka-opt`.
pub(crate) fn set_default(cfg: &mut ClientConfig, key: &str, value: &str) {
    if cfg.get(key).is_none() {
        cfg.set(key, value);
    }
}

/// A follower's group: never joined, but librdkafka looks up its coordinator, which
/// a cluster with ACLs allows only with DESCRIBE on the group. Under the deployment's
/// prefix, so one ACL (`DESCRIBE` on groups prefixed `<prefix>.follower-`) covers
/// every follower.
pub(crate) fn follower_group(prefix: &str) -> String {
    format!("{}{}", follower_group_prefix(prefix), crate::envelope::new_id())
}

/// What every follower group of the deployment under `prefix` starts with.
pub(crate) fn follower_group_prefix(prefix: &str) -> String {
    format!("{prefix}.follower-")
}

/// Low and high watermarks of a partition, retrying briefly: right after a topic is
/// created, brokers may not yet agree on its leader.
pub(crate) fn watermarks<C: rdkafka::consumer::Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
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

/// `Unauthenticated` for an error that says the cluster refused the client (its
/// credentials or the TLS handshake).
pub(crate) fn refused(e: &rdkafka::error::KafkaError) -> Result<(), KafkaSetupError> {
    match e.rdkafka_error_code() {
        Some(code @ (RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed | RDKafkaErrorCode::SSL)) => Err(KafkaSetupError::Unauthenticated(code)),
        _ => Ok(()),
    }
}

/// The partition ids of a topic; `MissingTopic` when it does not exist. Retries for
/// a few seconds first: a topic created a moment ago may not be in every broker's
/// metadata yet.
pub(crate) fn partitions_of<C: rdkafka::consumer::Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    consumer: &C,
    topic: &str,
) -> Result<Vec<i32>, KafkaSetupError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let metadata = consumer.fetch_metadata(Some(topic), std::time::Duration::from_secs(10));
        // Refusals are final: waiting would not change them.
        if let Err(e) = &metadata {
            refused(e)?;
        }
        if let Ok(md) = &metadata {
            let denied = md.topics().iter().any(|t| t.name() == topic && t.error().map(RDKafkaErrorCode::from) == Some(RDKafkaErrorCode::TopicAuthorizationFailed));
            if denied {
                return Err(KafkaSetupError::Denied { missing: format!("DESCRIBE on topic {topic}") });
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_shows_as_topic_and_index() {
        let tp = TopicPartition::new("c.commands", 3);
        assert_eq!(tp.to_string(), "c.commands[3]");
        assert_eq!(format!("{:?}", [tp]), "[c.commands[3]]");
    }

    #[test]
    fn the_env_var_splits_on_unescaped_commas() {
        let split = |t: &str| split_env_opts(t).unwrap();
        assert_eq!(split("a=1,b=2"), vec!["a=1", "b=2"]);
        assert_eq!(split(r"sasl.password=S3cr3t\,with\,commas,acks=all"), vec!["sasl.password=S3cr3t,with,commas", "acks=all"]);
        assert_eq!(split(r"k=back\\slash,k2=\\\,"), vec![r"k=back\slash", r"k2=\,"]);
        assert_eq!(split(",,a=1, ,"), vec!["a=1"]);
        assert!(split("").is_empty());
        assert_eq!(split_env_opts(r"k=a\b"), Err(EnvOptsError::BadEscape(3)));
        assert_eq!(split_env_opts(r"k=trailing\"), Err(EnvOptsError::BadEscape(10)));
    }

    #[test]
    fn bad_options_are_named_by_position_or_key_never_shown() {
        let secret = "S3cr3t-never-shown";
        let with = |opts: &[&str]| KafkaArgs { kafka_opts: opts.iter().map(|o| o.to_string()).collect(), ..KafkaArgs::new("localhost:9092", "p") };
        let e = with(&["acks=all", secret]).client_config().unwrap_err().to_string();
        assert!(e.contains("#2") && e.contains("no '='") && !e.contains(secret), "{e}");
        let e = with(&[&format!("={secret}")]).client_config().unwrap_err().to_string();
        assert!(e.contains("key is empty") && !e.contains(secret), "{e}");
        let e = with(&[&format!("sasl.pasword={secret}")]).client_config().unwrap_err().to_string();
        assert!(e.contains("sasl.pasword") && !e.contains(secret), "{e}");
        let e = with(&[&format!("acks={secret}")]).client_config().unwrap_err().to_string();
        assert!(e.contains("acks") && !e.contains(secret), "{e}");
        assert!(with(&["sasl.password=p,with,commas", "security.protocol=plaintext"]).client_config().is_ok());
    }

    #[test]
    fn debug_output_redacts_secret_values() {
        let args = KafkaArgs {
            kafka_opts: vec![
                "sasl.password=S3cr3t,with,commas".into(),
                "ssl.key.password=Pa55".into(),
                "sasl.jaas.config=org.Module required password=J4as;".into(),
                "sasl.oauthbearer.client.secret=0Auth".into(),
                "no-equals-Pasted5ecret".into(),
                "acks=all".into(),
            ],
            ..KafkaArgs::new("b:9092", "p")
        };
        let shown = format!("{args:?}");
        for secret in ["S3cr3t", "Pa55", "J4as", "0Auth", "Pasted5ecret"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("acks=all") && shown.contains("sasl.password=<redacted>"), "{shown}");
    }
}
