//! What a dispatcher's consumer thread and delivery tasks share, built once by
//! [`Dispatcher::start`](super::Dispatcher::start).

use std::sync::Arc;

use super::config::WebhookConfig;
use super::{callbacks, deliver, endpoints, metrics, schedule};
use crate::publish::Publisher;
use crate::topics::Topics;

/// What delivery tasks share.
pub(crate) struct DispatcherState {
    pub(super) config: WebhookConfig,
    pub(super) topics: Topics,
    pub(super) schedule: schedule::Schedule,
    pub(super) clients: deliver::Clients,
    pub(super) publisher: Publisher,
    pub(super) callbacks: Arc<callbacks::Callbacks>,
    pub(super) endpoints: Arc<endpoints::Endpoints>,
    pub(super) metrics: Arc<metrics::WebhookMetrics>,
    /// `ce_source` of the records the dispatcher writes.
    pub(super) source: String,
}
