//! `courier asyncapi`: writes the contract for the built-in handlers, or for the
//! command types a `--config` file declares.
//!
//! The checked-in `asyncapi/asyncapi.yaml` is this command's output with no flags but
//! `--out`; `tests/contract.rs` fails when the two differ.

use std::process::ExitCode;

use anyhow::Context as _;
use courier::contract::{asyncapi_document, to_yaml, ContractInfo};

#[derive(Debug, clap::Args)]
pub struct AsyncapiArgs {
    /// Write here instead of stdout (e.g. asyncapi/asyncapi.yaml).
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// Topic prefix used in channel addresses.
    #[arg(long, default_value = "courier")]
    pub prefix: String,
    #[command(flatten)]
    pub declared: super::process::ConfigArg,
}

pub fn write(args: AsyncapiArgs) -> anyhow::Result<ExitCode> {
    let info = ContractInfo { prefix: args.prefix, ..ContractInfo::default() };
    let yaml = to_yaml(&asyncapi_document(&args.declared.router()?, &info))?;
    match args.out {
        Some(path) => std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?,
        None => print!("{yaml}"),
    }
    Ok(ExitCode::SUCCESS)
}
