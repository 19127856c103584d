//! `courier gateway`: the HTTP operations API for the declared (or example) command types.

use std::process::ExitCode;

use anyhow::Context as _;
use courier::gateway::{Gateway, GatewayConfig};

#[derive(Debug, clap::Args)]
pub struct GatewayArgs {
    #[command(flatten)]
    pub gateway: GatewayConfig,
    #[command(flatten)]
    pub declared: super::process::ConfigArg,
    #[command(flatten)]
    pub auth: super::auth::AuthArgs,
}

pub async fn gateway(args: GatewayArgs) -> anyhow::Result<ExitCode> {
    let GatewayArgs { gateway: mut config, declared, auth } = args;
    super::require_bootstrap(&config.kafka)?;
    let shutdown = super::shutdown_signal();
    let router = declared.router()?;
    config.callback_keys = declared.callback_keys()?;
    config.access = super::auth::access(&declared, &auth, "courier gateway")?;
    let gateway = match Gateway::start(&config, &router, shutdown.clone()).await {
        Ok(g) => g,
        Err(courier::gateway::GatewayError::Follow(courier::FollowError::Stopped(_))) if shutdown.is_cancelled() => return Ok(ExitCode::SUCCESS),
        Err(e) => return Err(e).context("starting the gateway"),
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    gateway.serve(listener).await.context("serving HTTP")?;
    Ok(ExitCode::SUCCESS)
}
