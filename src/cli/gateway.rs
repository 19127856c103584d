//! `courier gateway`: the HTTP operations API for the example command types.

use std::process::ExitCode;

use anyhow::Context as _;
use courier::gateway::{Gateway, GatewayConfig};

pub async fn gateway(config: GatewayConfig) -> anyhow::Result<ExitCode> {
    super::require_bootstrap(&config.kafka)?;
    let shutdown = super::shutdown_signal();
    let router = courier::demo::example_router();
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
