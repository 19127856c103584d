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

pub mod bounds;
mod command;
mod control;
mod dead_letter;
mod deferral;
mod headers;
mod reason;
mod result;
mod status;
mod time;
#[cfg(test)]
pub(crate) use deferral::test_deferral;
#[cfg(test)]
pub(crate) use status::test_snapshot;

pub use command::{rfc3339, Command, CommandHeaders, NewCommand};
pub use control::{CancelRequest, CANCEL_TYPE};
pub use dead_letter::{dlq_headers, is_replay, DeadLetter};
pub use deferral::{Completion, ControlRecord, Deferral, Released, COMPLETION_TYPE, DEFERRED_TYPE, RELEASED_TYPE};
pub use headers::{header_names, last_kafka_header, DecodeError, HeaderMap, KafkaHeaders};
pub(crate) use headers::kafka_headers_size;
pub use reason::Reason;
pub use status::{OperationSnapshot, SNAPSHOT_TYPE};
pub use result::{is_final_record, ErrorInfo, Progress, ResultData, ResultEvent, State, Timing};

/// The CloudEvents spec version Courier writes and accepts.
pub const SPEC_VERSION: &str = "1.0";

/// The envelope version Courier writes in the `ce_courierversion` header.
///
/// Readers accept any `1.x` (unknown optional fields are ignored) and reject other
/// major versions with [`DecodeError::UnsupportedVersion`], so an old worker never
/// misreads a command written by a newer, incompatible client.
///
/// `1.1`: final result events carry their command's `ce_callbackurl`, so a final
/// event of 1.1 or later without one is about a command that had none.
pub const ENVELOPE_VERSION: &str = "1.1";

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
    (json_bytes(data), event_headers(new_id(), source, event_type, time, subject))
}

/// `data` as JSON bytes, written into a buffer sized for a typical event up front: a
/// worker encodes two per command, and growing from empty copied each one five or six
/// times (a few percent of its CPU). Empty if `data` cannot be encoded.
pub(crate) fn json_bytes(data: &impl serde::Serialize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(EVENT_CAPACITY);
    match serde_json::to_writer(&mut buf, data) {
        Ok(()) => buf,
        Err(_) => Vec::new(),
    }
}

/// A final event or snapshot with a small result is 0.6 to 0.9 KiB.
const EVENT_CAPACITY: usize = 1024;

/// A fresh time-ordered id (UUIDv7) for commands and events. Ids minted by one
/// process strictly increase, even within a millisecond, so listing operations by id
/// is listing them by creation.
///
/// The 74 bits after the timestamp start each millisecond at a random value from the
/// OS generator (like `Uuid::now_v7`) and count up within it; the randomness is drawn
/// 4 KiB at a time, because a worker mints two ids per command and a `getrandom`
/// system call for each was 2-3% of its CPU.
pub fn new_id() -> uuid::Uuid {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let (millis, counter) = ID_STATE.lock().unwrap_or_else(|p| p.into_inner()).next(millis);
    let b = counter.to_be_bytes();
    // The builder takes 80 bits and keeps 74: 12 in bytes 0-1, 62 in bytes 2-9.
    let bits = [(counter >> 70) as u8 & 0x0f, (counter >> 62) as u8, b[8] & 0x3f, b[9], b[10], b[11], b[12], b[13], b[14], b[15]];
    uuid::Builder::from_unix_timestamp_millis(millis, &bits).into_uuid()
}

static ID_STATE: std::sync::Mutex<IdState> = std::sync::Mutex::new(IdState { millis: 0, counter: 0, pool: [0; 4096], used: 4096 });

/// The last id's timestamp and 74-bit counter, and OS randomness fetched in bulk.
struct IdState {
    millis: u64,
    counter: u128,
    pool: [u8; 4096],
    used: usize,
}

impl IdState {
    const COUNTER_BITS: u32 = 74;

    /// The next (timestamp, counter): a random start in a new millisecond (top bit
    /// clear, leaving 2^73 increments of room), the last plus one otherwise; a clock
    /// that stepped back keeps the last timestamp.
    fn next(&mut self, now: u64) -> (u64, u128) {
        if now > self.millis {
            self.millis = now;
            self.counter = self.random() >> (128 - Self::COUNTER_BITS + 1);
        } else {
            self.counter += 1;
            if self.counter >> Self::COUNTER_BITS != 0 {
                self.millis += 1;
                self.counter = self.random() >> (128 - Self::COUNTER_BITS + 1);
            }
        }
        (self.millis, self.counter)
    }

    fn random(&mut self) -> u128 {
        if self.used + 16 > self.pool.len() {
            if getrandom::fill(&mut self.pool).is_err() {
                // No OS generator (never seen on Linux): the uuid crate's own path.
                return uuid::Uuid::now_v7().as_u128() << 48;
            }
            self.used = 0;
        }
        let mut word = [0; 16];
        word.copy_from_slice(&self.pool[self.used..self.used + 16]);
        self.used += 16;
        u128::from_be_bytes(word)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::new_id;

    #[test]
    fn ids_are_version_7_stamped_now_and_never_repeat_across_pool_refills_and_threads() {
        let before = chrono::Utc::now().timestamp_millis() as u64;
        let mint = || (0..2_000).map(|_| new_id()).collect::<Vec<_>>();
        let mut ids = mint();
        let others: Vec<_> = (0..3).map(|_| std::thread::spawn(mint)).collect();
        for t in others {
            ids.extend(t.join().expect("minting thread"));
        }
        let after = chrono::Utc::now().timestamp_millis() as u64;
        // 8,000 ids span several milliseconds and pool refills.
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 8_000);
        for id in &ids {
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
            let (secs, nanos) = id.get_timestamp().expect("v7 has a timestamp").to_unix();
            let millis = secs * 1000 + u64::from(nanos) / 1_000_000;
            assert!((before..=after).contains(&millis), "{id}: {millis} not in {before}..={after}");
        }
    }

    #[test]
    fn ids_strictly_increase_within_a_millisecond_and_across_threads() {
        let ids: Vec<_> = (0..10_000).map(|_| new_id()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids minted in a row must sort in that order");
        let last = *ids.last().expect("ids");
        let later = std::thread::spawn(new_id).join().expect("minting thread");
        assert!(later > last);
    }

    #[test]
    fn the_counter_rolls_into_the_next_millisecond_instead_of_overflowing() {
        let mut state = super::IdState { millis: 5, counter: (1 << 74) - 1, pool: [0; 4096], used: 4096 };
        let (millis, counter) = state.next(5);
        assert_eq!(millis, 6);
        assert!(counter < 1 << 73);
        let (millis, next) = state.next(3);
        assert_eq!((millis, next), (6, counter + 1), "a clock stepping back keeps order");
    }
}
