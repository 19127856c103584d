//! Why Courier gave up on a record: the stable codes of dead letters.
//!
//! A code is written three times over (the `courier_dlq_reason` header, the `code` of
//! the `failed` event that follows, the `reason` label of the dead-letter metric) and
//! read by operators, dashboards and foreign callers, so it is a closed set in one
//! place rather than string literals at each site. [`Reason::from_code`] reads one
//! back; a handler's own error codes are not reasons and read back as `None`.

use std::fmt;

/// A dead letter's reason code. The `as_str` spelling is the wire contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    // The record is not a command Courier can read.
    /// The value is empty or not JSON.
    NotJson,
    /// The value is not UTF-8.
    NotUtf8,
    /// A required `ce_*` header is missing or invalid.
    BadHeaders,
    /// A header Courier reads as text is not UTF-8.
    BadHeader,
    /// The envelope's major version is one this build does not read.
    UnsupportedVersion,
    /// The record is over `--max-message-bytes`.
    TooLarge,
    // What happened when it ran.
    /// No handler is registered for the command type.
    UnknownType,
    /// The payload does not decode as the handler's input.
    SchemaViolation,
    /// The handler panicked.
    HandlerPanic,
    /// A retryable failure reached `--max-attempts`.
    RetriesExhausted,
    // Courier could not write what the command ended with.
    /// Courier itself failed on the record (a bug; see the log).
    InternalError,
    /// An output is larger than the producer takes.
    OutputTooLarge,
    /// The broker refused an output for good (topic gone, access denied).
    Unpublishable,
    // Webhook deliveries.
    /// The callback URL answered 410 Gone.
    EndpointGone,
    /// The callback URL is not allowed (the SSRF policy).
    UrlRefused,
    /// The endpoint is disabled.
    EndpointDisabled,
    /// The endpoint failed for longer than `--disable-after` and was disabled.
    EndpointExhausted,
    /// Every delay of the webhook schedule was used.
    ScheduleExhausted,
    /// The webhook give-up time passed.
    GiveUpTime,
}

impl Reason {
    /// Every reason, for the contract and for tests.
    pub const ALL: [Reason; 19] = [
        Reason::NotJson,
        Reason::NotUtf8,
        Reason::BadHeaders,
        Reason::BadHeader,
        Reason::UnsupportedVersion,
        Reason::TooLarge,
        Reason::UnknownType,
        Reason::SchemaViolation,
        Reason::HandlerPanic,
        Reason::RetriesExhausted,
        Reason::InternalError,
        Reason::OutputTooLarge,
        Reason::Unpublishable,
        Reason::EndpointGone,
        Reason::UrlRefused,
        Reason::EndpointDisabled,
        Reason::EndpointExhausted,
        Reason::ScheduleExhausted,
        Reason::GiveUpTime,
    ];

    /// The code on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::NotJson => "not_json",
            Reason::NotUtf8 => "not_utf8",
            Reason::BadHeaders => "bad_headers",
            Reason::BadHeader => "bad_header",
            Reason::UnsupportedVersion => "unsupported_version",
            Reason::TooLarge => "too_large",
            Reason::UnknownType => "unknown_type",
            Reason::SchemaViolation => "schema_violation",
            Reason::HandlerPanic => "handler_panic",
            Reason::RetriesExhausted => "retries_exhausted",
            Reason::InternalError => "internal_error",
            Reason::OutputTooLarge => "output_too_large",
            Reason::Unpublishable => "unpublishable",
            Reason::EndpointGone => "endpoint_gone",
            Reason::UrlRefused => "url_refused",
            Reason::EndpointDisabled => "endpoint_disabled",
            Reason::EndpointExhausted => "endpoint_exhausted",
            Reason::ScheduleExhausted => "schedule_exhausted",
            Reason::GiveUpTime => "give_up_time",
        }
    }

    /// The reason a code names, if it is one of Courier's.
    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == code)
    }

    /// Whether the fault is in the input itself (the caller must change it): the
    /// gateway reports these as `INVALID_ARGUMENT`.
    pub const fn is_bad_input(self) -> bool {
        matches!(self, Reason::NotJson | Reason::NotUtf8 | Reason::BadHeaders | Reason::BadHeader | Reason::TooLarge | Reason::SchemaViolation)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_read_back() {
        let codes: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(codes.len(), Reason::ALL.len());
        for r in Reason::ALL {
            assert_eq!(Reason::from_code(r.as_str()), Some(r));
        }
        assert_eq!(Reason::from_code("invalid_width"), None, "a handler's own code is not a reason");
    }
}
