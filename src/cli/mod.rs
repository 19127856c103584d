//! Subcommands and their flags.

mod asyncapi;
mod auth;
mod bench;
mod demo;
mod dlq;
mod gateway;
mod process;
mod submit;
mod webhooks;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use courier::topics::TopicSpec;
use courier::{KafkaArgs, Worker, WorkerConfig};
use process::{require_bootstrap, shutdown_signal};

#[derive(Debug, Parser)]
#[command(name = "courier", version, about = "Kafka-native async commands")]
pub struct Cli {
    /// Log format: `text` or `json`. Filter with RUST_LOG (default info).
    #[arg(long, env = "COURIER_LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Manage topics.
    Topics {
        #[command(subcommand)]
        action: TopicsCmd,
    },
    /// Run a worker for the command types of --config (HTTP push handlers), or for
    /// the built-in example handlers (echo, sleep, primes, fail).
    Worker(WorkerArgs),
    /// Submit one command; with --wait, print its final result event.
    Submit(submit::SubmitArgs),
    /// Print result events as JSON lines.
    Watch(submit::WatchArgs),
    /// Print a command's latest operation snapshot (state, progress, result or error).
    Status(submit::StatusArgs),
    /// Cancel a command (queued: skipped; running: its token fires).
    Cancel(dlq::CancelArgs),
    /// Inspect and replay dead letters.
    Dlq {
        #[command(subcommand)]
        action: dlq::DlqCmd,
    },
    /// Embedded broker (unless --bootstrap) + worker + a trickle of example commands.
    Dev(demo::DevArgs),
    /// Round-trip a few hundred commands on the embedded broker, print a summary.
    Demo(demo::DemoArgs),
    /// Write the AsyncAPI 3.0 document for the built-in handlers.
    Asyncapi(asyncapi::AsyncapiArgs),
    /// Measure throughput, latency and memory against a raw rdkafka loop, side by side.
    Bench(courier::bench::BenchConfig),
    /// HTTP API: POST commands, poll operations (AIP-151), RunPod-style /v2 routes.
    Gateway(gateway::GatewayArgs),
    /// API keys for the `auth:` block of --config.
    Auth {
        #[command(subcommand)]
        action: auth::AuthCmd,
    },
    /// Webhook dispatcher: POST final results to callback URLs; replay given-up ones.
    Webhooks {
        #[command(subcommand)]
        action: webhooks::WebhooksCmd,
    },
}

#[derive(Debug, Subcommand)]
pub enum TopicsCmd {
    /// Create all Courier topics (existing ones are left alone).
    Create {
        #[command(flatten)]
        kafka: KafkaArgs,
        #[command(flatten)]
        spec: TopicSpec,
        /// Also create the retry tier topics the declared command types use.
        #[command(flatten)]
        declared: process::ConfigArg,
    },
}

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub worker: WorkerConfig,
    #[command(flatten)]
    pub declared: process::ConfigArg,
}

/// Logs to stderr at `default_level` unless RUST_LOG says otherwise.
pub fn init_tracing(format: &str, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default_level},rdkafka=warn")));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    shutdown_signal();
    match cli.command {
        Cmd::Topics { action: TopicsCmd::Create { kafka, mut spec, declared } } => {
            require_bootstrap(&kafka)?;
            if let Some(declared) = declared.load()? {
                spec.retry_tiers.extend(declared.retry_tiers());
            }
            let created = courier::topics::create_topics(&kafka, &spec).await.context("creating topics")?;
            println!("created {} topic(s): {}", created.len(), created.join(", "));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Worker(WorkerArgs { worker: mut config, declared }) => {
            require_bootstrap(&config.kafka)?;
            if config.metrics_addr.is_some() {
                config.metrics_access = auth::metrics_access(&declared)?;
            }
            let worker = Worker::new(config, declared.router()?).context("starting worker")?;
            worker.run(shutdown_signal()).await.context("worker")?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Submit(args) => submit::submit(args).await,
        Cmd::Watch(args) => submit::watch(args).await,
        Cmd::Status(args) => submit::status(args).await,
        Cmd::Cancel(args) => dlq::cancel(args).await,
        Cmd::Dlq { action } => dlq::dlq(action).await,
        Cmd::Dev(args) => demo::dev(args).await,
        Cmd::Demo(args) => demo::demo(args).await,
        Cmd::Bench(cfg) => bench::bench(cfg).await,
        Cmd::Asyncapi(args) => asyncapi::write(args),
        Cmd::Gateway(cfg) => gateway::gateway(cfg).await,
        Cmd::Webhooks { action } => webhooks::webhooks(action).await,
        Cmd::Auth { action } => auth::auth(action),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// The Kafka args of every subcommand that has them.
    fn kafka_of(cmd: Cmd) -> KafkaArgs {
        match cmd {
            Cmd::Topics { action: TopicsCmd::Create { kafka, .. } } => kafka,
            Cmd::Worker(c) => c.worker.kafka,
            Cmd::Submit(a) => a.kafka,
            Cmd::Status(a) => a.kafka,
            Cmd::Cancel(a) => a.kafka,
            Cmd::Gateway(c) => c.gateway.kafka,
            Cmd::Webhooks { action: webhooks::WebhooksCmd::Run(c) } => c.config.kafka,
            Cmd::Webhooks { action: webhooks::WebhooksCmd::Replay(a) } => a.kafka,
            Cmd::Dev(a) => a.kafka,
            Cmd::Bench(c) => c.kafka,
            other => panic!("no kafka args in {other:?}"),
        }
    }

    /// One test, so no other test in this binary reads the env var while it is set.
    #[test]
    fn kafka_opt_flags_are_taken_whole_and_the_env_var_is_merged_everywhere() {
        let id = "01a20e65-7676-7288-b863-4588369ab535";
        let subcommands: [&[&str]; 10] = [
            &["topics", "create"],
            &["worker"],
            &["submit", "echo"],
            &["status", id],
            &["cancel", id],
            &["gateway"],
            &["webhooks", "run"],
            &["webhooks", "replay", "--all"],
            &["dev"],
            &["bench"],
        ];
        let parse = |sub: &[&str]| {
            let mut argv = vec!["courier"];
            argv.extend_from_slice(sub);
            argv.extend(["--kafka-opt", "sasl.password=S3cr3t,with,commas", "--kafka-opt", "acks=all"]);
            kafka_of(Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{sub:?}: {e}")).command).kafka_opts
        };
        std::env::remove_var(courier::kafka::KAFKA_OPTS_ENV);
        for sub in subcommands {
            assert_eq!(parse(sub), ["sasl.password=S3cr3t,with,commas", "acks=all"], "{sub:?}");
        }
        std::env::set_var(courier::kafka::KAFKA_OPTS_ENV, r"sasl.username=u\,1,linger.ms=7");
        for sub in subcommands {
            assert_eq!(parse(sub), ["sasl.username=u,1", "linger.ms=7", "sasl.password=S3cr3t,with,commas", "acks=all"], "{sub:?}");
        }
        std::env::set_var(courier::kafka::KAFKA_OPTS_ENV, r"sasl.password=S3cr3t\q");
        let e = Cli::try_parse_from(["courier", "worker"]).unwrap_err().render().to_string();
        assert!(e.contains("COURIER_KAFKA_OPTS") && !e.contains("S3cr3t"), "{e}");
        std::env::remove_var(courier::kafka::KAFKA_OPTS_ENV);
    }
}
