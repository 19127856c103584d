//! What every subcommand shares about the process: the check that a broker was
//! named, and the shutdown signal.

use courier::KafkaArgs;
use tokio_util::sync::CancellationToken;

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
