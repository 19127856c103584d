//! Bounds on what Courier copies from a command into the records it writes about it.
//!
//! A command the broker accepted must always be answerable: its final event, snapshot
//! and dead letter have to fit in a record too. So every echo of caller-supplied text
//! (the key in JSON, the command type, error messages, trace and correlation headers)
//! is capped here, once, and the caps are documented in the README. What the caps
//! cannot cover (a handler's huge result, a key near the size limit) is caught by the
//! worker's size check before anything is sent, which falls back to a minimal record.

use base64::Engine as _;

/// Longest key shown in JSON (`key` / `key_base64`); a longer key still travels whole
/// as the record key, which is what readers match on.
pub const MAX_KEY_ECHO: usize = 1024;

/// Longest command type, error code or reason echoed into an event or header.
pub const MAX_NAME_ECHO: usize = 256;

/// Longest human-readable message (an error's, a dead letter's) echoed anywhere.
pub const MAX_MESSAGE_ECHO: usize = 2048;

/// Longest header value carried from a command to its events (`ce_traceparent`,
/// Spring's `kafka_correlationId`); longer ones are not echoed.
pub const MAX_HEADER_ECHO: usize = 1024;

/// How a record key is shown in JSON: as text when it is UTF-8, else as standard
/// base64 in a separate field, so either way the bytes can be recovered exactly and
/// a text key can never be mistaken for an encoded one. Keys over [`MAX_KEY_ECHO`]
/// bytes are not shown at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyEcho {
    pub text: Option<String>,
    pub base64: Option<String>,
}

impl KeyEcho {
    pub fn of(key: Option<&[u8]>) -> Self {
        match key.filter(|k| k.len() <= MAX_KEY_ECHO) {
            None => KeyEcho::default(),
            Some(k) => match std::str::from_utf8(k) {
                Ok(text) => KeyEcho { text: Some(text.to_string()), base64: None },
                Err(_) => KeyEcho { text: None, base64: Some(base64::engine::general_purpose::STANDARD.encode(k)) },
            },
        }
    }

    /// The key's bytes back from its JSON fields (`None` when neither is present or
    /// the base64 is malformed).
    pub fn bytes(text: Option<&str>, base64: Option<&str>) -> Option<Vec<u8>> {
        match (text, base64) {
            (Some(t), _) => Some(t.as_bytes().to_vec()),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD.decode(b).ok(),
            (None, None) => None,
        }
    }
}

/// `text` cut to at most `max` bytes on a character boundary, marked with `…` when
/// cut, so an echo stays readable and bounded.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A header value worth echoing: present and within [`MAX_HEADER_ECHO`].
pub fn echo_header<T: AsRef<[u8]>>(value: Option<T>) -> Option<T> {
    value.filter(|v| v.as_ref().len() <= MAX_HEADER_ECHO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_shown_reversibly() {
        for key in [&b"user-1"[..], b"", b"\xff\x00\xfe", "ключ".as_bytes()] {
            let echo = KeyEcho::of(Some(key));
            assert_eq!(echo.text.is_some(), std::str::from_utf8(key).is_ok());
            assert_eq!(KeyEcho::bytes(echo.text.as_deref(), echo.base64.as_deref()).as_deref(), Some(key));
        }
        assert_eq!(KeyEcho::of(None), KeyEcho::default());
        assert_eq!(KeyEcho::of(Some(&vec![b'k'; MAX_KEY_ECHO + 1])), KeyEcho::default(), "too long to echo");
    }

    #[test]
    fn truncation_is_bounded_and_keeps_characters_whole() {
        assert_eq!(truncate("short", 10), "short");
        let long = "é".repeat(1000);
        let cut = truncate(&long, 101);
        assert!(cut.len() <= 101, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert!(truncate(&long, 0).len() <= '…'.len_utf8());
    }
}
