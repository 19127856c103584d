//! Offsets: which consumed records may start, and which offsets may be committed.
//!
//! Shared by the worker (commands) and the webhook dispatcher (results and webhook
//! tiers; the retry relay uses [`TierHold`] too):
//! - [`Ledger`]: lanes, parked keys, epochs, commit points;
//! - [`TierHold`]: delay-tier records held until due, per partition;
//! - [`commit`]: the one commit path: take the points, send them the caller's way,
//!   forget them on failure; [`Cadence`] says when.
//!
//! Architecture invariant: no I/O here. No consumer or producer: the callers pass the
//! sending in as a closure, and `crate::kafka` turns points into librdkafka's lists.
//! Layering: above `kafka` (for [`TopicPartition`]) and `publish`, below `worker`
//! and `webhooks`; `retry` uses it beside them. It imports none of worker, webhooks,
//! retry, gateway or client.
//!
//! [`TopicPartition`]: crate::kafka::TopicPartition

mod commit;
mod hold;
mod ledger;

pub use ledger::OrderBy;
pub(crate) use commit::{commit, commit_failed, commit_taken, lock, Cadence};
pub(crate) use hold::TierHold;
pub(crate) use ledger::{Entry, Lane, Ledger};
