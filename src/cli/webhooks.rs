//! `courier webhooks run|replay`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use courier::webhooks::{choose_dead_deliveries, read_dead_deliveries, replay_dead_deliveries};
use courier::webhooks::{Dispatcher, WebhookConfig, WebhookError};
use courier::KafkaArgs;

#[derive(Debug, Subcommand)]
pub enum WebhooksCmd {
    /// Deliver final results to callback URLs: signed, retried, logged.
    Run(Box<RunArgs>),
    /// Send deliveries given up on (the webhook DLQ) back for another try.
    Replay(ReplayArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: WebhookConfig,
    /// The file whose `auth:` block guards the listener (its command types are not used).
    #[command(flatten)]
    pub declared: super::process::ConfigArg,
    #[command(flatten)]
    pub auth: super::auth::AuthArgs,
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Only these command ids (repeatable).
    #[arg(long = "id")]
    pub ids: Vec<uuid::Uuid>,
    /// Replay every dead delivery (required when no --id is given).
    #[arg(long)]
    pub all: bool,
    /// Show what would be replayed; send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The dispatchers' schedule: replays go through its first tier.
    #[arg(long = "webhook-schedule", env = "COURIER_WEBHOOK_SCHEDULE", value_delimiter = ',', value_parser = courier::duration::parse_duration, default_value = courier::topics::DEFAULT_WEBHOOK_SCHEDULE)]
    pub schedule: Vec<Duration>,
}

pub async fn webhooks(cmd: WebhooksCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        WebhooksCmd::Run(args) => {
            let RunArgs { mut config, declared, auth } = *args;
            config.access = super::auth::access(&declared, &auth, "courier webhooks run")?;
            run(config).await
        }
        WebhooksCmd::Replay(args) => replay_dead(args).await,
    }
}

async fn run(config: WebhookConfig) -> anyhow::Result<ExitCode> {
    super::require_bootstrap(&config.kafka)?;
    let shutdown = super::shutdown_signal();
    let dispatcher = match Dispatcher::start(config, shutdown.clone()).await {
        Ok(d) => d,
        Err(WebhookError::Follow(courier::FollowError::Stopped(_))) if shutdown.is_cancelled() => return Ok(ExitCode::SUCCESS),
        Err(e) => return Err(e).context("starting the webhook dispatcher"),
    };
    eprintln!("webhook dispatcher listening on {}", dispatcher.local_addr());
    dispatcher.wait().await.context("webhook dispatcher")?;
    Ok(ExitCode::SUCCESS)
}

async fn replay_dead(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    super::require_bootstrap(&args.kafka)?;
    anyhow::ensure!(args.all || !args.ids.is_empty(), "say what to replay: --id or --all");
    let first_tier = *args.schedule.first().context("--webhook-schedule is empty")?;
    let dead = read_dead_deliveries(&args.kafka).await.context("reading the webhook DLQ")?;
    let picked = choose_dead_deliveries(dead, &args.ids);
    for d in &picked {
        println!("{}", d.describe());
    }
    if !args.dry_run {
        replay_dead_deliveries(&args.kafka, first_tier, &picked).await.context("replaying")?;
    }
    println!("{} {} delivery(ies)", if args.dry_run { "would replay" } else { "replayed" }, picked.len());
    Ok(ExitCode::SUCCESS)
}
