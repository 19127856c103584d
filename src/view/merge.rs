//! What both backends of the view share: how a newer snapshot meets the one held,
//! and the types they hand around.

use std::collections::HashMap;

use tokio::sync::watch;

use crate::envelope::OperationSnapshot;

/// What a newer snapshot `s` makes of the one held (`old`): `None` when it changes
/// nothing. Later snapshots win, with two exceptions that keep the view true when
/// records arrive late or twice: a final state is never replaced by a non-final one,
/// and what only the gateway's own `queued` snapshot knows (the request hash, the
/// idempotency key, the batch, the tenant, the callback) is kept when a worker's
/// snapshot lacks it.
pub(super) fn merged(old: &OperationSnapshot, mut s: OperationSnapshot) -> Option<OperationSnapshot> {
    if old.state.is_final() && !s.state.is_final() {
        return None;
    }
    s.request_hash = s.request_hash.take().or_else(|| old.request_hash.clone());
    s.idempotency_key = s.idempotency_key.take().or_else(|| old.idempotency_key.clone());
    s.batch_id = s.batch_id.take().or_else(|| old.batch_id.clone());
    s.tenant = s.tenant.take().or_else(|| old.tenant.clone());
    s.callback_url = s.callback_url.take().or_else(|| old.callback_url.clone());
    s.created = s.created.min(old.created);
    Some(s)
}

/// Where the view stands in the status topic: the next offset to read per partition.
pub type Positions = HashMap<i32, i64>;

/// A `true` once an operation is done; long polls wait on it.
pub(super) type DoneFlag = watch::Sender<bool>;
