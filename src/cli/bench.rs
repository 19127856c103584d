//! `courier bench`.

use std::process::ExitCode;

use anyhow::Context as _;
use courier::bench::{run, table, BenchConfig};

pub async fn bench(cfg: BenchConfig) -> anyhow::Result<ExitCode> {
    super::require_bootstrap(&cfg.kafka)?;
    println!(
        "courier bench against {}: {} messages of {} bytes, {} partitions, {} cores",
        cfg.kafka.bootstrap,
        cfg.messages,
        cfg.size,
        cfg.partitions,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    if cfg.peers {
        let report = courier::bench::peers::run(&cfg, |step| println!("  running {step} ...")).await.context("bench --peers")?;
        println!("\n{}", courier::bench::peers::table(&report));
        if cfg.json {
            println!("{}", serde_json::to_string(&report).context("encoding the report")?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let report = run(&cfg, |step| println!("  running {step} ...")).await.context("bench")?;
    println!("\n{}", table(&report));
    if cfg.json {
        println!("{}", serde_json::to_string(&report).context("encoding the report")?);
    }
    Ok(ExitCode::SUCCESS)
}
