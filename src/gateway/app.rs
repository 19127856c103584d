//! What every request handler shares: the store, admission, submission, metrics and
//! the limits of one request. Its own file so that every surface (`routes`,
//! `batches`, `runpod`) and the body extractor can use it without going through the
//! module that assembles them.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use tokio_util::sync::CancellationToken;

use super::admission::Checker;
use super::error::BodyLimits;
use super::metrics::GatewayMetrics;
use super::store::Store;
use super::submit::Submitter;

/// The state of every route.
pub(crate) struct GatewayState {
    pub(super) store: Arc<Store>,
    pub(super) checker: Checker,
    pub(super) submitter: Submitter,
    /// Checks the callbacks of handed-off commands (`:complete`, ...).
    pub(super) callbacks: super::callbacks::CallbackAuth,
    pub(super) metrics: Arc<GatewayMetrics>,
    /// The longest `?wait=` a long poll gets.
    pub(super) max_wait: Duration,
    /// How large and how slow a request body may be.
    pub(super) body: BodyLimits,
    /// Fires on shutdown; long polls end early on it.
    pub(super) shutdown: CancellationToken,
}

impl FromRef<Arc<GatewayState>> for BodyLimits {
    fn from_ref(app: &Arc<GatewayState>) -> Self {
        app.body
    }
}
