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
//! # What is public
//!
//! What a user embeds: [`client`], [`envelope`] (the wire format, the contract's
//! types), [`router`], [`worker`], [`gateway`], [`webhooks`], [`contract`], and
//! [`kafka`]/[`topics`] for connection settings and topic names. The machinery under
//! them (publishing, the topic follower, retry tiers, the DLQ reader, the offset
//! ledger, HTTP and metrics plumbing) is internal; the few of its types a user meets
//! are re-exported here ([`StartAt`], [`FollowError`], [`RetryPolicy`],
//! [`UrlPolicy`], [`ConnectionLimits`]). The `courier` binary is built on this
//! public API alone, plus what the default feature `cli` adds for it: the bench
//! harness and the demo handlers ([`demo`]).
//!
//! # Where things are
//!
//! ARCHITECTURE.md (in the repository) maps the modules, their layers and
//! invariants; the path of one command reads top to bottom in `src/worker/lane.rs`.

// Every type a public item hands out can be named by the user (re-exported where
// its module is internal): the API boundary below stays honest.
#![warn(unnameable_types)]

#[cfg(feature = "cli")]
#[doc(hidden)]
pub mod bench;
pub mod auth;
pub mod capability;
pub mod client;
pub mod contract;
pub mod declared;
#[cfg(any(test, feature = "cli"))]
pub mod demo;
pub(crate) mod dlq;
pub mod duration;
pub mod envelope;
pub(crate) mod follow;
pub mod gateway;
pub(crate) mod http;
pub mod kafka;
pub(crate) mod metrics;
pub(crate) mod offsets;
pub(crate) mod publish;
pub(crate) mod retry;
pub mod router;
pub mod topics;
mod view;
pub(crate) mod supervise;
#[cfg(test)]
mod testing;
pub(crate) mod urlpolicy;
pub mod webhooks;
pub mod worker;

pub use client::{Client, ClientError};
pub use envelope::{Command, NewCommand, ResultEvent, State};
pub use follow::{FollowError, StartAt};
pub use http::{ConnectionLimits, LimitsError, Tls, TlsArgs, TlsError};
pub use publish::PublishError;
pub use kafka::KafkaArgs;
pub use router::{Context, Handler, HandlerError, RouteError, Router};
pub use urlpolicy::{UrlError, UrlPolicy};
pub use view::{StoreError, ViewError};
pub use worker::{Metrics, OrderBy, RetryPolicy, Worker, WorkerConfig, WorkerError};

/// Compiles the README's examples as doc tests, so the documented handler stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
