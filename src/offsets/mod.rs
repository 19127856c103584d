//! Offsets: which consumed records may start, and which offsets may be committed.
//!
//! Shared by the worker (commands) and the webhook dispatcher (results and webhook
//! tiers). Bookkeeping only, no I/O: the callers own the consumers and producers.

pub(crate) mod hold;
pub(crate) mod ledger;

pub use ledger::OrderBy;
pub(crate) use hold::TierHold;
pub(crate) use ledger::{Entry, Lane, Ledger};
