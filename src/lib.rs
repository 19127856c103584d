//! Courier: Kafka-native async commands.
//!
//! Services produce **commands** to a Kafka topic; **workers** in one consumer group
//! run a handler per command type and publish **keyed result events**; callers learn
//! outcomes by subscribing to results ([`Client`]), by signed webhooks
//! ([`webhooks`]) or by polling an operation over HTTP ([`gateway`]). Everything rides
//! on plain Kafka topics with CloudEvents headers, described by a generated AsyncAPI
//! document ([`contract`]), so callers and handlers in any language can take part.
//!
//! # Embedding Courier
//!
//! Four steps, each a type of this crate:
//!
//! 1. Write a [`Handler`] per command type: typed input and output (both derive
//!    `JsonSchema`, which is how they reach the contract), an async `handle`, a
//!    [`HandlerError`] that says whether another attempt could succeed.
//! 2. Register handlers on a [`Router`], and compose any [`tower`] middleware around
//!    them: a timeout, a concurrency or rate limit, tracing, on one command type
//!    ([`Router::route_layer`]) or on all ([`Router::layer`]).
//! 3. Run a [`Worker`] with a [`WorkerConfig`] (flags, env vars, or code): it consumes
//!    the commands topic in a consumer group and gives every command a final result
//!    event, or a dead letter with its reason.
//! 4. Submit and wait from the caller's side with a [`Client`], or put the
//!    [`gateway`] in front for HTTP callers.
//!
//! ```no_run
//! use std::time::Duration;
//! use courier::{Context, Handler, HandlerError, Router, Worker, WorkerConfig};
//! use schemars::JsonSchema;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize, JsonSchema)]
//! struct Resize { url: String, width: u32 }
//!
//! #[derive(Serialize, JsonSchema)]
//! struct Resized { url: String }
//!
//! struct ResizeHandler;
//!
//! impl Handler for ResizeHandler {
//!     type Input = Resize;
//!     type Output = Resized;
//!     async fn handle(&self, cmd: Resize, ctx: Context) -> Result<Resized, HandlerError> {
//!         if cmd.width == 0 {
//!             return Err(HandlerError::permanent("bad_width", "width must be positive"));
//!         }
//!         ctx.progress(50.0, Some("halfway".to_string()));
//!         Ok(Resized { url: format!("{}?w={}", cmd.url, cmd.width) })
//!     }
//! }
//!
//! # async fn run() -> Result<(), courier::WorkerError> {
//! let router = Router::new()
//!     .route("image.resize", ResizeHandler)
//!     // A per-type tower layer: a resize that takes over 30 s is retried later.
//!     .route_layer("image.resize", tower::timeout::TimeoutLayer::new(Duration::from_secs(30)));
//! let worker = Worker::new(WorkerConfig::new("127.0.0.1:9092"), router)?;
//! worker.run(tokio_util::sync::CancellationToken::new()).await
//! # }
//! ```
//!
//! Test a handler without Kafka: `handler.handle(input, Context::for_test("image.resize"))`.
//!
//! # Where things are
//!
//! ARCHITECTURE.md (in the repository) maps the modules, their layers and
//! invariants; the path of one command reads top to bottom in `src/worker/lane.rs`.

pub mod bench;
pub mod client;
pub mod contract;
pub mod demo;
pub mod dlq;
pub mod duration;
pub mod envelope;
pub mod follow;
pub mod gateway;
pub mod http;
pub mod kafka;
pub mod metrics;
pub(crate) mod offsets;
pub mod publish;
pub mod retry;
pub mod router;
pub mod topics;
pub(crate) mod supervise;
pub mod urlpolicy;
pub mod webhooks;
pub mod worker;

pub use client::{Client, ClientError};
pub use envelope::{Command, NewCommand, ResultEvent, State};
pub use kafka::KafkaArgs;
pub use router::{Context, Handler, HandlerError, RouteError, Router};
pub use worker::{OrderBy, Worker, WorkerConfig, WorkerError};

/// Compiles the README's examples as doc tests, so the documented handler stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
