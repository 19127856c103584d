//! `courier dev` and `courier demo`: Courier end to end with nothing installed.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use courier::client::StartAt;
use courier::demo::{example_router, Embedded};
use courier::duration::parse_duration;
use courier::topics::TopicSpec;
use courier::worker::Ready;
use courier::{Client, KafkaArgs, NewCommand, Router, State, Worker, WorkerConfig};
use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Submit an example command this often.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub every: Duration,
    /// Serve the HTTP gateway (`/v1/commands`, `/v1/operations/...`) here.
    #[arg(long, env = "COURIER_GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub gateway_listen: std::net::SocketAddr,
    /// Do not start the HTTP gateway.
    #[arg(long)]
    pub no_gateway: bool,
    /// Serve these declared command types too, beside the examples.
    #[command(flatten)]
    pub declared: super::process::ConfigArg,
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Commands to round-trip.
    #[arg(long, default_value_t = 300)]
    pub count: usize,
}

/// How long the demo's worker may take to join its group before the demo gives up.
const JOIN_WITHIN: Duration = Duration::from_secs(60);

/// Starts the cluster (embedded unless --bootstrap) and a worker on it.
async fn start(kafka: KafkaArgs, group: &str, router: Router, spec: &TopicSpec) -> anyhow::Result<(Embedded, CancellationToken, tokio::task::JoinHandle<()>, Ready)> {
    let embedded = Embedded::start_or_connect(kafka, spec).await.context("starting the broker")?;
    let mut config = WorkerConfig::new(embedded.args.bootstrap.clone());
    config.kafka = embedded.args.clone();
    config.group_id = group.to_string();
    config.shutdown_grace = Duration::from_secs(5);
    let worker = Worker::new(config, router).context("starting worker")?;
    let ready = worker.ready();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let handle = tokio::spawn(async move {
        if let Err(e) = worker.run(token).await {
            tracing::error!(error = %e, "worker failed");
        }
    });
    Ok((embedded, stop, handle, ready))
}

/// The i-th example command: mostly quick echoes, some slow I/O, some CPU, some failures.
fn example_command(i: usize) -> NewCommand {
    let cmd = match i % 10 {
        0..=5 => NewCommand::new("echo", json!({ "n": i })),
        6 | 7 => NewCommand::new("sleep", json!({ "ms": 20 + (i % 5) * 20, "steps": 2 })),
        8 => NewCommand::new("primes", json!({ "n": 20_000 + i })),
        _ => NewCommand::new("fail", json!({ "code": "demo_failure", "message": format!("command {i} fails on purpose") })),
    };
    cmd.key(format!("customer-{}", i % 25))
}

pub async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let booting = Instant::now();
    let (embedded, stop, worker, ready) = start(args.kafka, "courier-demo", example_router(), &TopicSpec::default()).await?;
    let client = Client::new(embedded.args.clone()).context("creating client")?;
    println!(
        "courier demo: {} commands through {} ({})",
        args.count,
        embedded.args.bootstrap,
        if embedded.is_mock() { "embedded mock cluster" } else { "external cluster" }
    );
    // Time the commands, not the consumer group join (a few seconds on any broker).
    tokio::time::timeout(JOIN_WITHIN, ready.wait()).await.context("the worker did not join its consumer group")?;
    println!("  worker ready after {:.2}s (broker start and consumer group join; not counted below)", booting.elapsed().as_secs_f64());
    let started = Instant::now();
    let waits = (0..args.count).map(|i| {
        let client = client.clone();
        async move {
            let t = Instant::now();
            let r = client.submit_and_wait(example_command(i), Duration::from_secs(120)).await;
            (i, r, t.elapsed())
        }
    });
    let results = futures::future::join_all(waits).await;
    let elapsed = started.elapsed();
    let mut by_state: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut latencies: Vec<Duration> = Vec::new();
    let mut wrong = 0;
    for (i, r, latency) in &results {
        match r {
            Ok(ev) => {
                *by_state.entry(ev.state().as_str()).or_default() += 1;
                latencies.push(*latency);
                let expected = if i % 10 == 9 { State::Failed } else { State::Completed };
                if ev.state() != expected {
                    wrong += 1;
                }
            }
            Err(e) => {
                *by_state.entry("no_result").or_default() += 1;
                tracing::error!(command = i, error = %e, "no result");
            }
        }
    }
    latencies.sort();
    let pct = |p: f64| latencies.get(((latencies.len() as f64 - 1.0) * p) as usize).copied().unwrap_or_default();
    println!("\n  state        count");
    for (state, n) in &by_state {
        println!("  {state:<12} {n:>5}");
    }
    println!(
        "\n  {} commands in {:.2}s ({:.0}/s); round trip p50 {:?}, p99 {:?}\n  (all submitted at once, in order per key over 25 keys: a round trip includes waiting\n  behind the same customer's earlier commands, some of which sleep 20-100 ms)",
        args.count,
        elapsed.as_secs_f64(),
        args.count as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99)
    );
    stop.cancel();
    let _ = worker.await;
    // Let go of the broker before it goes away with this process (no AllBrokersDown).
    client.close().await;
    let ok = latencies.len() == args.count && wrong == 0;
    println!("  {}", if ok { "every command got its expected final event" } else { "MISSING OR WRONG RESULTS" });
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub async fn dev(args: DevArgs) -> anyhow::Result<ExitCode> {
    let mut spec = TopicSpec::default();
    let loaded = args.declared.load()?;
    let callback_keys = loaded.as_ref().and_then(|d| d.callbacks.as_ref()).map(|c| c.verifying_keys()).unwrap_or_default();
    let router = match loaded {
        Some(declared) => {
            spec.retry_tiers.extend(declared.retry_tiers());
            let types: Vec<&str> = declared.commands.keys().map(String::as_str).collect();
            println!("courier dev: serving {} from {} beside the examples", types.join(", "), declared.path.display());
            let examples = example_router();
            let replaced: Vec<&str> = types.iter().copied().filter(|t| examples.get(t).is_some()).collect();
            if !replaced.is_empty() {
                println!("courier dev: declared types replace the built-in examples of the same name: {}", replaced.join(", "));
            }
            declared.router(examples)?
        }
        None => example_router(),
    };
    let (embedded, stop, worker, _ready) = start(args.kafka, "courier-dev", router.clone(), &spec).await?;
    let client = Client::new(embedded.args.clone()).context("creating client")?;
    let mut events = client.subscribe(StartAt::Now).await.context("subscribing")?;
    println!("courier dev: broker {} ({})", embedded.args.bootstrap,
        if embedded.is_mock() { "embedded mock cluster" } else { "external cluster" });
    println!("  try, from another terminal:");
    println!("  courier submit --bootstrap {} --wait primes '{{\"n\": 100000}}'", embedded.args.bootstrap);
    if !args.no_gateway {
        match serve_gateway(&embedded.args, args.gateway_listen, &router, callback_keys, stop.clone()).await {
            Ok(addr) => {
                println!(
                    "  curl -si {addr}/v1/commands -H 'content-type: application/json' -d '{{\"type\": \"primes\", \"payload\": {{\"n\": 100000}}}}'   (then GET the Location)"
                );
                println!("  the HTTP gateway on {addr} is OPEN (no authentication): fine for dev; `courier gateway` needs an `auth:` block");
            }
            Err(e) => println!("  (HTTP gateway not started: {e:#})"),
        }
    }
    println!("  Ctrl-C stops.\n");
    let shutdown = super::shutdown_signal();
    let mut tick = tokio::time::interval(args.every);
    let mut i = 0usize;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                let cmd = example_command(i);
                let ty = cmd.command_type.clone();
                match client.submit(cmd).await {
                    Ok(id) => println!("-> {ty:<7} {id}"),
                    Err(e) => println!("!! submit failed: {e}"),
                }
                i += 1;
            }
            Some(ev) = events.next() => {
                let detail = match (&ev.data.result, &ev.data.error, &ev.data.progress) {
                    (Some(r), _, _) => r.to_string(),
                    (_, Some(e), _) => format!("{}: {}", e.code, e.message),
                    (_, _, Some(p)) => format!("{:.0}% {}", p.percent, p.message.clone().unwrap_or_default()),
                    _ => String::new(),
                };
                println!("<- {:<9} {} {}", ev.state().as_str(), ev.command_id(), detail);
            }
        }
    }
    stop.cancel();
    let _ = worker.await;
    Ok(ExitCode::SUCCESS)
}

/// Where `courier dev` keeps its gateway's store: this prefix and the process id.
const DEV_STORE: &str = "courier-dev-store-";

/// Removes the stores of earlier `courier dev` runs whose process is gone (one that
/// exits on a signal may not get to remove its own).
fn remove_stale_dev_stores() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(DEV_STORE)) else { continue };
        if !std::path::Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The HTTP gateway over the dev cluster, serving the worker's command types.
async fn serve_gateway(
    kafka: &KafkaArgs,
    listen: std::net::SocketAddr,
    router: &Router,
    callback_keys: Vec<courier::capability::SigningKey>,
    stop: CancellationToken,
) -> anyhow::Result<std::net::SocketAddr> {
    let mut config = courier::gateway::GatewayConfig::new(kafka.clone());
    config.listen = listen;
    config.callback_keys = callback_keys;
    // The operations view on disk, as a deployment keeps it, in a directory of this
    // run's own: the embedded cluster starts empty each time, and so must the view.
    let store = std::env::temp_dir().join(format!("{DEV_STORE}{}", std::process::id()));
    remove_stale_dev_stores();
    let _ = std::fs::remove_dir_all(&store);
    config.store_dir = Some(store.clone());
    let cleanup = stop.clone();
    tokio::spawn(async move {
        cleanup.cancelled().await;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let _ = std::fs::remove_dir_all(&store);
    });
    let gateway = courier::gateway::Gateway::start(&config, router, stop).await.context("starting the gateway")?;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr().context("gateway address")?;
    tokio::spawn(async move {
        if let Err(e) = gateway.serve(listener).await {
            tracing::error!(error = %e, "gateway failed");
        }
    });
    Ok(addr)
}
