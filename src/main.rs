//! The `courier` command line: run workers, submit and watch commands, try it all on
//! an embedded broker. Errors get their context here (anyhow); the library's errors
//! are typed.

mod cli;

/// glibc's allocator serialises Courier's many small, cross-thread allocations on arena
/// locks (a third of worker CPU in profiles); mimalloc does not. With the crate's
/// `override` feature it serves librdkafka's C allocations too.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    // The bench prints its own progress; its topic set-up and tear-down, 17 topics per
    // scenario, would bury it at info.
    let default_level = if matches!(args.command, cli::Cmd::Bench(_)) { "warn" } else { "info" };
    cli::init_tracing(&args.log_format, default_level);
    match cli::run(args).await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "courier failed");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
