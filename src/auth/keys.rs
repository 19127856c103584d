//! API keys at rest: only their SHA-256 is kept (in the config file and in memory),
//! and a presented key is compared by digest, in constant time.

use sha2::{Digest, Sha256};

/// The digest a config file stores for `key` (what `courier auth hash-key` prints).
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.trim().as_bytes()).into()
}

/// Hex of a digest, lowercase.
pub fn to_hex(digest: &[u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A digest from its hex form (64 hex digits, either case).
pub fn from_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Equal digests, in time that does not depend on where they first differ: every byte
/// is looked at, and the only branch is on the folded difference. An attacker timing
/// answers learns nothing about how much of a stored digest they matched.
#[inline(never)]
pub fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for i in 0..32 {
        diff |= a[i] ^ b[i];
    }
    // black_box keeps the optimiser from turning the fold back into an early exit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let d = hash_key("test");
        assert_eq!(to_hex(&d), "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
        assert_eq!(from_hex(&to_hex(&d)), Some(d));
        assert_eq!(from_hex(&to_hex(&d).to_uppercase()), Some(d));
        for bad in ["", "9f86", &"z".repeat(64), &"é".repeat(32)] {
            assert_eq!(from_hex(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn equal_only_when_every_byte_is() {
        let a = hash_key("a");
        assert!(constant_time_eq(&a, &a));
        for i in [0, 15, 31] {
            let mut b = a;
            b[i] ^= 1;
            assert!(!constant_time_eq(&a, &b));
        }
    }

    /// The least time of many rounds of `n` comparisons against `b`.
    fn fastest(a: &[u8; 32], b: &[u8; 32], n: u32) -> Duration {
        (0..25)
            .map(|_| {
                let started = Instant::now();
                for _ in 0..n {
                    std::hint::black_box(constant_time_eq(std::hint::black_box(a), std::hint::black_box(b)));
                }
                started.elapsed()
            })
            .min()
            .unwrap_or_default()
    }

    /// A digest differing in its first byte takes as long to refuse as one differing
    /// only in its last (an early-exit comparison is many times faster on the first).
    /// Minimums of interleaved rounds, so a busy machine slows both alike.
    #[test]
    fn comparison_time_does_not_depend_on_the_matched_prefix() {
        let stored = hash_key("the stored key");
        let mut first = stored;
        first[0] ^= 0xff;
        let mut last = stored;
        last[31] ^= 0xff;
        let n = 20_000;
        let (mut early, mut late) = (Duration::MAX, Duration::MAX);
        for _ in 0..4 {
            early = early.min(fastest(&stored, &first, n));
            late = late.min(fastest(&stored, &last, n));
        }
        let ratio = late.as_secs_f64() / early.as_secs_f64().max(1e-9);
        assert!((0.5..2.0).contains(&ratio), "first-byte {early:?} vs last-byte {late:?} ({ratio:.2}x)");
    }
}
