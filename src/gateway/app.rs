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
use crate::view::Store;
use super::submit::Submitter;

/// The state of every route.
pub(crate) struct GatewayState {
    pub(super) store: Arc<Store>,
    pub(super) checker: Checker,
    pub(super) submitter: Submitter,
    /// Checks the callbacks of handed-off commands (`:complete`, ...).
    pub(super) callbacks: CallbackAuth,
    pub(super) metrics: Arc<GatewayMetrics>,
    /// The longest `?wait=` a long poll gets.
    pub(super) max_wait: Duration,
    /// How large and how slow a request body may be.
    pub(super) body: BodyLimits,
    /// Fires on shutdown; long polls end early on it.
    pub(super) shutdown: CancellationToken,
    /// One permit per long poll held (`--max-long-polls`); none left: `429`.
    pub(super) long_polls: Arc<tokio::sync::Semaphore>,
    /// This gateway's place in its group (`--group`); `None`: it holds every partition.
    pub(super) cluster: Option<Arc<super::cluster::Cluster>>,
    /// The HTTP client requests are forwarded to other gateways of the group with.
    pub(super) peers: reqwest::Client,
}

impl FromRef<Arc<GatewayState>> for BodyLimits {
    fn from_ref(app: &Arc<GatewayState>) -> Self {
        app.body
    }
}

/// What the callback routes check against: the signing keys, the declared output
/// schemas and the types' completion shapes.
pub(crate) struct CallbackAuth {
    pub(super) keys: Vec<crate::capability::SigningKey>,
    pub(super) outputs: std::collections::HashMap<String, jsonschema::Validator>,
    /// Each push type's profile, whose completion shape is accepted too.
    pub(super) profiles: std::collections::HashMap<String, crate::router::push::PushProfile>,
}

impl CallbackAuth {
    /// `keys` verify tokens (none: every callback is `401`); results are checked
    /// against each route's output schema.
    pub fn new(keys: Vec<crate::capability::SigningKey>, router: &crate::router::Router) -> Self {
        let outputs = router
            .routes()
            .filter_map(|(name, route)| Some((name.to_string(), jsonschema::validator_for(route.output_schema.as_value()).ok()?)))
            .collect();
        let profiles = router.routes().map(|(name, route)| (name.to_string(), route.profile)).collect();
        CallbackAuth { keys, outputs, profiles }
    }
}
