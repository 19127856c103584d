//! The DLQ topic: dead-letter records built to fit, read back, and sent back for
//! another try. What a dead letter *is* (its reason headers) is the contract's,
//! `envelope::DeadLetter`.

use chrono::Utc;

use crate::envelope::{dlq_headers, DeadLetter, HeaderMap};
use crate::publish::Outgoing;

/// Room kept in a minimal dead letter for its reason headers and framing.
const MINIMAL_RESERVE: usize = 16 * 1024;

impl DeadLetter {
    /// The DLQ record: original key, value and headers, plus the reason headers.
    pub(crate) fn to_record(&self, dlq_topic: &str, key: Option<&[u8]>, value: Option<&[u8]>, original: &HeaderMap) -> Outgoing {
        let mut headers = original.clone();
        self.write_headers(&mut headers);
        Outgoing {
            topic: dlq_topic.to_string(),
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            headers,
            partition: None,
        }
    }

    /// The DLQ record if it fits in `limit` bytes, else [`DeadLetter::minimal_record`].
    pub(crate) fn to_record_within(&self, dlq_topic: &str, key: Option<&[u8]>, value: Option<&[u8]>, original: &HeaderMap, limit: usize) -> Outgoing {
        let full = self.to_record(dlq_topic, key, value, original);
        if full.wire_size() <= limit {
            return full;
        }
        self.minimal_record(dlq_topic, key, value, original, limit)
    }

    /// A dead letter that always fits in `limit`: the reason headers; the original
    /// headers if they fit beside the key, else only the id and type (cut to their
    /// bounds); the key and then the value only if they fit; and their sizes. What it
    /// leaves out is still at topic/partition/offset.
    pub(crate) fn minimal_record(&self, dlq_topic: &str, key: Option<&[u8]>, value: Option<&[u8]>, original: &HeaderMap, limit: usize) -> Outgoing {
        use crate::envelope::bounds::MAX_NAME_ECHO;
        use crate::envelope::header_names as h;
        use dlq_headers as d;
        let whole_headers = original.wire_size() + key.map_or(0, <[u8]>::len) + MINIMAL_RESERVE <= limit;
        let mut headers = if whole_headers { original.clone() } else { HeaderMap::new() };
        if !whole_headers {
            for name in [h::ID, h::TYPE] {
                if let Some(v) = original.get(name) {
                    headers.insert(name, &v[..v.len().min(MAX_NAME_ECHO)]);
                }
            }
        }
        self.write_headers(&mut headers);
        headers.set(d::TRUNCATED, "true");
        headers.set(d::KEY_BYTES, key.map_or(0, <[u8]>::len).to_string());
        headers.set(d::VALUE_BYTES, value.map_or(0, <[u8]>::len).to_string());
        let mut room = limit.saturating_sub(MINIMAL_RESERVE + headers.wire_size());
        let key = key.filter(|k| k.len() <= room).map(<[u8]>::to_vec);
        room -= key.as_ref().map_or(0, Vec::len);
        let value = value.filter(|v| v.len() <= room).map(<[u8]>::to_vec);
        Outgoing { topic: dlq_topic.to_string(), key, value, headers, partition: None }
    }

}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Reason;

    #[test]
    fn reason_headers_round_trip_and_original_kept() {
        let mut original = HeaderMap::new();
        original.insert("ce_id", "abc");
        let letter = DeadLetter::new("courier.commands", 3, 42, Reason::NotJson, "expected value", 1);
        let out = letter.to_record("courier.commands.dlq", Some(b"k"), Some(b"{bad"), &original);
        assert_eq!(out.value.as_deref(), Some(&b"{bad"[..]));
        assert_eq!(out.headers.get_str("ce_id").unwrap(), Some("abc"));
        let back = DeadLetter::from_headers(&out.headers).unwrap();
        assert_eq!(back.reason, "not_json");
        assert_eq!((back.partition, back.offset), (3, 42));
    }

    #[test]
    fn a_letter_that_cannot_fit_whole_falls_back_to_a_minimal_one_that_does() {
        let limit = 1_000_000;
        let mut original = HeaderMap::new();
        original.insert("ce_id", "abc").insert("ce_type", "t".repeat(600_000));
        let message = format!("no handler for command type {:?}", "t".repeat(600_000));
        let letter = DeadLetter::new("c", 0, 7, Reason::UnknownType, &message, 1);
        assert!(letter.message.len() <= crate::envelope::bounds::MAX_MESSAGE_ECHO);
        let fits = letter.to_record_within("c.dlq", Some(b"k"), Some(b"{}"), &original, limit);
        assert!(fits.headers.get(dlq_headers::TRUNCATED).is_none(), "a 600 KB type fits once the message is bounded");
        let big_key = vec![b'k'; 600_000];
        let big_value = vec![b'v'; 600_000];
        let out = letter.to_record_within("c.dlq", Some(&big_key), Some(&big_value), &original, limit);
        assert!(out.wire_size() <= limit, "{}", out.wire_size());
        assert_eq!(out.headers.get_str(dlq_headers::TRUNCATED).unwrap(), Some("true"));
        assert_eq!(out.key.as_deref(), Some(&big_key[..]), "the key is kept while it fits");
        assert!(out.value.is_none(), "the value is not");
        assert_eq!(out.headers.get_str(dlq_headers::VALUE_BYTES).unwrap(), Some("600000"));
        assert_eq!(out.headers.get("ce_type").map(<[u8]>::len), Some(crate::envelope::bounds::MAX_NAME_ECHO));
        let huge_key = vec![b'k'; limit];
        let out = letter.minimal_record("c.dlq", Some(&huge_key), None, &original, limit);
        assert!(out.wire_size() <= limit && out.key.is_none());
        assert_eq!(DeadLetter::from_headers(&out.headers).unwrap().reason, "unknown_type");
    }
}

/// One record read back from the DLQ topic.
#[derive(Debug, Clone)]
pub struct DeadLetterRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: HeaderMap,
    pub letter: DeadLetter,
}

impl DeadLetterRecord {
    /// The command id, when the original record had a readable one.
    pub fn command_id(&self) -> Option<uuid::Uuid> {
        crate::envelope::Command::peek_id(&self.headers)
    }

    pub fn command_type(&self) -> Option<String> {
        self.headers.get_str(crate::envelope::header_names::TYPE).ok().flatten().map(str::to_string)
    }

    /// The record that sends this dead letter back to the commands topic: original
    /// key, value and headers, the DLQ and retry bookkeeping stripped, attempt reset,
    /// and a replay mark so duplicate detection lets it through.
    pub(crate) fn replay_record(&self, commands_topic: &str) -> Outgoing {
        let mut headers = HeaderMap::new();
        for (name, value) in self.headers.iter() {
            if !name.starts_with(b"courier_") && name != crate::envelope::header_names::ATTEMPT.as_bytes() {
                headers.insert(name, value);
            }
        }
        headers.insert(crate::envelope::header_names::ATTEMPT, "1");
        headers.insert(dlq_headers::REPLAYED_AT, crate::envelope::rfc3339(Utc::now()));
        Outgoing {
            topic: commands_topic.to_string(),
            key: self.key.clone(),
            value: self.value.clone(),
            headers,
            partition: None,
        }
    }
}

/// Which dead letters to act on: all by default.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterFilter {
    pub ids: Vec<uuid::Uuid>,
    pub reason: Option<String>,
}

impl DeadLetterFilter {
    /// Whether `r` is one of these command ids (any, when none is given) with this
    /// reason (any, when none is given).
    pub fn matches(&self, r: &DeadLetterRecord) -> bool {
        let by_id = self.ids.is_empty() || r.command_id().is_some_and(|id| self.ids.contains(&id));
        let by_reason = self.reason.as_ref().is_none_or(|want| *want == r.letter.reason);
        by_id && by_reason
    }
}

/// How long reading the DLQ to its end may take before it is given up.
const READ_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

/// Reads every dead letter currently in the DLQ topic (up to its end now). Records
/// without reason headers are not dead letters and are skipped.
pub(crate) async fn read_all(args: &crate::KafkaArgs) -> Result<Vec<DeadLetterRecord>, crate::follow::FollowError> {
    use crate::follow::{read_to_end, StartAt};
    let mut out = Vec::new();
    read_to_end(args, &args.topics().dlq, StartAt::Beginning, Some(READ_WITHIN), |seen| {
        let headers = seen.headers();
        let Some(letter) = DeadLetter::from_headers(&headers) else { return };
        out.push(DeadLetterRecord {
            partition: seen.partition(),
            offset: seen.offset(),
            key: seen.key().map(<[u8]>::to_vec),
            value: seen.value().map(<[u8]>::to_vec),
            headers,
            letter,
        });
    })
    .await?;
    Ok(out)
}
