//! `courier auth hash-key`, and how `gateway` and `webhooks run` decide who may call
//! them: the `auth:` block of --config, or open only when told `--insecure-no-auth`.

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use courier::auth::Access;

#[derive(Debug, Subcommand)]
pub enum AuthCmd {
    /// Read an API key on stdin, print the hex SHA-256 an `auth.api_keys` entry stores.
    HashKey,
}

pub fn auth(cmd: AuthCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        AuthCmd::HashKey => {
            let mut key = String::new();
            std::io::stdin().read_to_string(&mut key).context("reading the key from stdin")?;
            let key = key.trim();
            anyhow::ensure!(key.len() >= 16, "an API key is at least 16 characters (give it on stdin)");
            println!("{}", courier::auth::to_hex(&courier::auth::hash_key(key)));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `--insecure-no-auth`, for the components that serve HTTP.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthArgs {
    /// Serve without authentication (every caller may do everything). Without it, the
    /// --config file must have an `auth:` block.
    /// The variable takes the usual spellings (`1`, `true`, `yes`, `on`; `0`...).
    #[arg(long, env = "COURIER_INSECURE_NO_AUTH", action = clap::ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_value = "false", default_missing_value = "true", require_equals = true)]
    pub insecure_no_auth: bool,
}

/// The access a component starts with, and a SIGHUP task that re-reads the file's
/// `auth:` block (rotation, revocation) while it runs. `what` names the component.
pub fn access(declared: &super::process::ConfigArg, args: &AuthArgs, what: &str) -> anyhow::Result<Access> {
    let auth = declared.load()?.and_then(|d| d.auth);
    match (auth, args.insecure_no_auth) {
        (Some(_), true) => anyhow::bail!("--insecure-no-auth and an `auth:` block in --config contradict each other; drop one"),
        (None, false) => anyhow::bail!(
            "{what} has no authentication configured: add an `auth:` block to the --config file \
             (api_keys and/or jwks_file; `courier auth hash-key` hashes a key), or pass --insecure-no-auth"
        ),
        (None, true) => {
            tracing::warn!(component = what, "serving HTTP WITHOUT authentication (--insecure-no-auth): anyone who can connect may submit, read and cancel");
            Ok(Access::open())
        }
        (Some(auth), false) => {
            tracing::info!(component = what, ?auth, "authentication required on every route but /healthz");
            let access = Access::checked(auth);
            reload_on_hangup(declared.clone(), access.clone());
            Ok(access)
        }
    }
}

/// Who may scrape a worker's `/metrics`: the `--config` file's `auth:` block when it
/// has one (reloaded on SIGHUP), else anyone, said once in the log. Metrics name
/// command types and rates, not payloads, so open is the default here, unlike the
/// gateway's and dispatcher's routes.
pub fn metrics_access(declared: &super::process::ConfigArg) -> anyhow::Result<Access> {
    match declared.load()?.and_then(|d| d.auth) {
        Some(auth) => {
            let access = Access::checked(auth);
            reload_on_hangup(declared.clone(), access.clone());
            tracing::info!("/metrics needs a credential with the metrics scope");
            Ok(access)
        }
        None => {
            tracing::warn!("/metrics is open to anyone who can connect: add an `auth:` block to --config to require the metrics scope");
            Ok(Access::open())
        }
    }
}

#[cfg(unix)]
fn reload_on_hangup(declared: super::process::ConfigArg, access: Access) {
    let Ok(mut hangup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; the auth block is read only at start");
        return;
    };
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match declared.load().map(|d| d.and_then(|d| d.auth)) {
                Ok(Some(auth)) => {
                    tracing::info!(?auth, "SIGHUP: auth block reloaded");
                    access.reload(auth);
                }
                Ok(None) => tracing::error!("SIGHUP: the --config file has no auth block any more; keeping the current one"),
                Err(e) => tracing::error!(error = %format!("{e:#}"), "SIGHUP: --config not reloaded; keeping the current auth block"),
            }
        }
    });
}

#[cfg(not(unix))]
fn reload_on_hangup(_: super::process::ConfigArg, _: Access) {}
