//! A handler whose payload scripts what it does, for the router's unit tests.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Context, Handler, HandlerError};

/// What one call of [`Scripted`] does.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub(super) enum Outcome {
    /// Returns its command type at once.
    Succeed,
    /// Fails permanently with this code.
    Fail(String),
    /// Returns its command type once its token fires (never, unless the test cancels).
    Hang,
}

/// Counts the calls that reached it, so a test can tell a held call from a run one.
#[derive(Clone, Default)]
pub(super) struct Scripted(Arc<AtomicUsize>);

impl Scripted {
    pub(super) fn started(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Handler for Scripted {
    type Input = Outcome;
    type Output = String;
    async fn handle(&self, outcome: Outcome, ctx: Context) -> Result<String, HandlerError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        match outcome {
            Outcome::Succeed => Ok(ctx.command_type),
            Outcome::Fail(code) => Err(HandlerError::permanent(code, "as scripted")),
            Outcome::Hang => {
                ctx.cancel.cancelled().await;
                Ok(ctx.command_type)
            }
        }
    }
}
