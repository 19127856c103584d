//! Courier: Kafka-native async commands.
//!
//! Services produce **commands** to a Kafka topic; **workers** in one consumer group
//! run a handler per command type and publish **keyed result events**; callers learn
//! outcomes by subscribing to results (see [`Client`]). Everything rides on plain
//! Kafka topics with CloudEvents headers, described by a generated AsyncAPI document,
//! so callers in any language can take part.
//!
//! The path of one command, top to bottom:
//! [`Client::submit`] -> commands topic -> [`worker`] consumer thread (admit to the
//! ledger) -> lane task (decode [`envelope`], look up in [`Router`], run the
//! [`Handler`]) -> [`publish`] the final event and wait for its ack -> ledger marks it
//! finished -> the consumer thread commits the lowest unfinished offset.
//!
//! ```no_run
//! use courier::{Context, Handler, HandlerError, Router};
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
//! let router = Router::new().route("image.resize", ResizeHandler);
//! # let _ = router;
//! ```

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
