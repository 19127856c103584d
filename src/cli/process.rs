//! What every subcommand shares about the process: the check that a broker was
//! named, and the shutdown signal.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use courier::declared::Declared;
use courier::{KafkaArgs, Router};
use tokio_util::sync::CancellationToken;

/// `--config`: the file that declares command types (HTTP push handlers, schemas).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArg {
    /// Declared command types (YAML): without it, the built-in example handlers.
    #[arg(long = "config", env = "COURIER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    /// The file, loaded and checked, if one was named.
    pub fn load(&self) -> anyhow::Result<Option<Declared>> {
        self.config.as_deref().map(load).transpose()
    }

    /// What a component serves: the declared types when a file declares some
    /// (nothing else: a deployment does not serve the demo's types), else the examples.
    pub fn router(&self) -> anyhow::Result<Router> {
        match self.load()? {
            Some(declared) if !declared.commands.is_empty() => Ok(declared.router(Router::new())?),
            _ => Ok(courier::demo::example_router()),
        }
    }
}

impl ConfigArg {
    /// The keys that verify callback tokens (the file's `callbacks.signing_keys`).
    pub fn callback_keys(&self) -> anyhow::Result<Vec<courier::capability::SigningKey>> {
        Ok(self.load()?.and_then(|d| d.callbacks).map(|c| c.verifying_keys()).unwrap_or_default())
    }
}

fn load(path: &Path) -> anyhow::Result<Declared> {
    let declared = Declared::load(path).context("loading the --config file")?;
    anyhow::ensure!(
        !declared.commands.is_empty() || declared.auth.is_some(),
        "{}: declares no command types (a `commands:` block) and no `auth:` block",
        path.display()
    );
    tracing::info!(file = %path.display(), types = declared.commands.len(), "declared command types loaded");
    Ok(declared)
}

/// Fails with the fix in the message when no bootstrap servers were given.
pub fn require_bootstrap(kafka: &KafkaArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !kafka.bootstrap.trim().is_empty(),
        "no Kafka bootstrap servers: pass --bootstrap HOST:PORT or set COURIER_BOOTSTRAP \
         (only `courier dev` and `courier demo` start an embedded broker)"
    );
    Ok(())
}

static SHUTDOWN: std::sync::OnceLock<CancellationToken> = std::sync::OnceLock::new();

/// A token that fires on SIGINT or SIGTERM. The handlers are installed by the first
/// call, which `run` makes before anything else, so a signal during start-up is
/// never the default (abrupt) termination.
pub fn shutdown_signal() -> CancellationToken {
    SHUTDOWN.get_or_init(install_signal_handlers).clone()
}

fn install_signal_handlers() -> CancellationToken {
    let token = CancellationToken::new();
    let fire = token.clone();
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    tokio::spawn(async move {
        #[cfg(unix)]
        match term {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown signal received");
        fire.cancel();
    });
    token
}
