//! `courier dlq list|replay` and `courier cancel`.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use courier::client::{DeadLetterFilter, DeadLetterRecord};
use courier::{Client, KafkaArgs};

#[derive(Debug, Subcommand)]
pub enum DlqCmd {
    /// Print dead letters as JSON lines.
    List {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Only this reason code (not_json, bad_headers, unknown_type, ...).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Send dead letters back to the commands topic for another try.
    Replay {
        #[command(flatten)]
        kafka: KafkaArgs,
        /// Only these command ids (repeatable).
        #[arg(long = "id")]
        ids: Vec<uuid::Uuid>,
        /// Only this reason code.
        #[arg(long)]
        reason: Option<String>,
        /// Replay every dead letter (required when no --id or --reason is given).
        #[arg(long)]
        all: bool,
        /// Show what would be replayed; send nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The command id.
    pub id: uuid::Uuid,
    #[arg(long)]
    pub reason: Option<String>,
}

pub async fn dlq(cmd: DlqCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        DlqCmd::List { kafka, reason } => {
            super::require_bootstrap(&kafka)?;
            let client = Client::new(kafka).context("creating client")?;
            let filter = DeadLetterFilter { ids: vec![], reason };
            for r in &client.dead_letters(&filter).await.context("reading the DLQ")? {
                println!("{}", describe(r));
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCmd::Replay { kafka, ids, reason, all, dry_run } => {
            super::require_bootstrap(&kafka)?;
            anyhow::ensure!(all || !ids.is_empty() || reason.is_some(), "say what to replay: --id, --reason or --all");
            let client = Client::new(kafka).context("creating client")?;
            let chosen = client.dead_letters(&DeadLetterFilter { ids, reason }).await.context("reading the DLQ")?;
            if !dry_run {
                client.replay_dead_letters(&chosen).await.context("replaying")?;
            }
            for r in &chosen {
                println!("{}", describe(r));
            }
            println!("{} {} dead letter(s)", if dry_run { "would replay" } else { "replayed" }, chosen.len());
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub async fn cancel(args: CancelArgs) -> anyhow::Result<ExitCode> {
    super::require_bootstrap(&args.kafka)?;
    let client = Client::new(args.kafka).context("creating client")?;
    client.cancel(args.id, args.reason).await.context("sending the cancel")?;
    println!("cancel requested for {}", args.id);
    Ok(ExitCode::SUCCESS)
}

fn describe(r: &DeadLetterRecord) -> serde_json::Value {
    serde_json::json!({
        "partition": r.partition,
        "offset": r.offset,
        "command_id": r.command_id(),
        "command_type": r.command_type(),
        "reason": r.letter.reason,
        "message": r.letter.message,
        "origin": format!("{}/{}@{}", r.letter.topic, r.letter.partition, r.letter.offset),
        "attempts": r.letter.attempts,
        "first_failure": courier::envelope::rfc3339(r.letter.first_failure),
        "last_failure": courier::envelope::rfc3339(r.letter.last_failure),
    })
}
