//! The envelope: how a command and its result events look on the wire.
//!
//! Courier speaks CloudEvents 1.0 in the Kafka protocol binding's *binary mode*: every
//! CloudEvents attribute travels as a `ce_`-prefixed Kafka header, and the record value
//! is the bare JSON payload. Binary mode was chosen over structured mode because the
//! payload stays readable by any consumer that ignores headers, and routing (type,
//! id, deadline) needs no JSON parsing.
//!
//! A **command** is one request: `ce_id` is its command id (UUIDv7, so ids sort by
//! creation time), `ce_type` is the command type a handler is registered for. A
//! **result event** says what happened to a command: `ce_type` is
//! `courier.command.<state>`, `ce_subject` is the command id, and the value is a
//! [`ResultData`].
//!
//! Both are keyed the same way: by the command's key when it has one, else by its id,
//! so all events of one key land on one partition, in order.

mod command;
mod control;
mod headers;
mod result;
mod status;
#[cfg(test)]
pub(crate) use status::test_snapshot;

pub use command::{rfc3339, Command, CommandHeaders, NewCommand};
pub use control::{CancelRequest, CANCEL_TYPE};
pub use headers::{header_names, DecodeError, HeaderMap};
pub use status::{OperationSnapshot, SNAPSHOT_TYPE};
pub use result::{is_final_record, ErrorInfo, Progress, ResultData, ResultEvent, State, Timing};

/// The CloudEvents spec version Courier writes and accepts.
pub const SPEC_VERSION: &str = "1.0";

/// The envelope version Courier writes in the `ce_courierversion` header.
///
/// Readers accept any `1.x` (unknown optional fields are ignored) and reject other
/// major versions with [`DecodeError::UnsupportedVersion`], so an old worker never
/// misreads a command written by a newer, incompatible client.
pub const ENVELOPE_VERSION: &str = "1.0";

/// The content type of every Courier record value.
pub const CONTENT_TYPE: &str = "application/json";

/// Prefix of result event types: `courier.command.completed` and so on.
pub const RESULT_TYPE_PREFIX: &str = "courier.command.";

/// The CloudEvents attributes every event Courier writes carries (result events,
/// cancel requests, status snapshots): one builder, so they cannot drift apart.
pub(crate) fn event_headers(
    id: uuid::Uuid,
    source: &str,
    event_type: &str,
    time: chrono::DateTime<chrono::Utc>,
    subject: uuid::Uuid,
) -> HeaderMap {
    use headers::header_names as h;
    let mut headers = HeaderMap::new();
    headers
        .insert(h::SPEC_VERSION, SPEC_VERSION)
        .insert(h::ID, id.to_string())
        .insert(h::SOURCE, source)
        .insert(h::TYPE, event_type)
        .insert(h::TIME, rfc3339(time))
        .insert(h::SUBJECT, subject.to_string())
        .insert(h::CONTENT_TYPE, CONTENT_TYPE)
        .insert(h::VERSION, ENVELOPE_VERSION);
    headers
}

/// A new event (fresh `ce_id`) whose value is `data` as JSON: the value and headers
/// of cancel requests, status snapshots and the webhook dispatcher's records.
pub(crate) fn json_event(
    source: &str,
    event_type: &str,
    time: chrono::DateTime<chrono::Utc>,
    subject: uuid::Uuid,
    data: &impl serde::Serialize,
) -> (Vec<u8>, HeaderMap) {
    (serde_json::to_vec(data).unwrap_or_default(), event_headers(new_id(), source, event_type, time, subject))
}

/// A fresh time-ordered id (UUIDv7) for commands and events.
pub fn new_id() -> uuid::Uuid {
    uuid::Uuid::now_v7()
}
