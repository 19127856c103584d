//! `courier submit` and `courier watch`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use courier::client::StartAt;
use courier::duration::parse_duration;
use courier::{Client, KafkaArgs, NewCommand, ResultEvent, State};
use futures::StreamExt;

#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Command type, e.g. `echo`.
    pub command_type: String,
    /// JSON payload.
    #[arg(default_value = "{}")]
    pub payload: String,
    /// Key: commands with one key run one at a time, in order.
    #[arg(long)]
    pub key: Option<String>,
    /// Deadline from now, e.g. 30s.
    #[arg(long, value_parser = parse_duration)]
    pub deadline: Option<Duration>,
    /// Webhook URL for the outcome.
    #[arg(long)]
    pub callback_url: Option<String>,
    /// Wait for the final result event and print it.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub timeout: Duration,
}

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Start from the oldest retained event instead of now.
    #[arg(long)]
    pub from_beginning: bool,
    /// Only final events.
    #[arg(long)]
    pub final_only: bool,
    /// Exit after this many events.
    #[arg(long)]
    pub limit: Option<usize>,
}

pub async fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    super::require_bootstrap(&args.kafka)?;
    let payload: serde_json::Value =
        serde_json::from_str(&args.payload).with_context(|| format!("payload {:?} is not JSON", args.payload))?;
    let mut cmd = NewCommand::new(&args.command_type, payload);
    cmd.key = args.key.map(String::into_bytes);
    cmd.callback_url = args.callback_url;
    if let Some(d) = args.deadline {
        cmd = cmd.deadline_in(d);
    }
    let client = Client::new(args.kafka).context("creating client")?;
    if !args.wait {
        let id = client.submit(cmd).await.context("submitting")?;
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    let event = client.submit_and_wait(cmd, args.timeout).await.context("waiting for the result")?;
    println!("{}", event_json(&event));
    Ok(if event.state() == State::Completed { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The command id (UUID).
    pub id: uuid::Uuid,
    /// Wait up to this long for the command to finish, then print its final snapshot.
    #[arg(long, value_parser = parse_duration)]
    pub wait: Option<Duration>,
}

/// Prints the operation snapshot as JSON; exit code 0 when found, 1 when the status
/// topic has no record of the id, 2 when `--wait` ran out first.
pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    super::require_bootstrap(&args.kafka)?;
    let client = Client::new(args.kafka).context("creating client")?;
    let snapshot = match args.wait {
        Some(timeout) => match client.wait(args.id, timeout).await {
            Ok(s) => Some(s),
            Err(courier::ClientError::Timeout { .. }) => {
                eprintln!("command {} did not finish within {timeout:?}", args.id);
                return Ok(ExitCode::from(2));
            }
            Err(e) => return Err(e).context("waiting on the status topic"),
        },
        None => client.status(args.id).await.context("reading the status topic")?,
    };
    match snapshot {
        Some(s) => {
            println!("{}", serde_json::to_string(&s).context("encoding the snapshot")?);
            Ok(ExitCode::SUCCESS)
        }
        None => {
            eprintln!("no status recorded for command {}", args.id);
            Ok(ExitCode::from(1))
        }
    }
}

pub async fn watch(args: WatchArgs) -> anyhow::Result<ExitCode> {
    super::require_bootstrap(&args.kafka)?;
    let client = Client::new(args.kafka).context("creating client")?;
    let start = if args.from_beginning { StartAt::Beginning } else { StartAt::Now };
    let mut events = client.subscribe(start).await.context("subscribing to results")?;
    let stop = super::shutdown_signal();
    let mut seen = 0usize;
    loop {
        let next = tokio::select! {
            e = events.next() => e,
            _ = stop.cancelled() => None,
        };
        let Some(event) = next else { break };
        if args.final_only && !event.state().is_final() {
            continue;
        }
        println!("{}", event_json(&event));
        seen += 1;
        if args.limit.is_some_and(|l| seen >= l) {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One result event as a JSON line: CloudEvents attributes plus data.
/// A binary record key is shown as `key_base64`, as in the events' own data.
pub fn event_json(event: &ResultEvent) -> serde_json::Value {
    let mut line = serde_json::json!({
        "id": event.id,
        "type": event.state().event_type(),
        "subject": event.command_id(),
        "time": courier::envelope::rfc3339(event.time),
        "data": event.data,
    });
    match std::str::from_utf8(&event.key) {
        Ok(text) => line["key"] = text.into(),
        Err(_) => line["key_base64"] = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &event.key).into(),
    }
    line
}
