//! Writing timestamps. A worker writes five per command (two `ce_time` headers, the
//! snapshot's `created` and `updated`, and more on retries), and chrono formats them
//! through `fmt` machinery, a few percent of a worker's CPU; these write the same text
//! straight into a buffer.

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};

/// RFC 3339 with millisecond precision and a `Z`: the `ce_time` form, as
/// `to_rfc3339_opts(SecondsFormat::Millis, true)` writes it.
pub(crate) fn millis(t: DateTime<Utc>) -> String {
    write(t, Fraction::Millis).unwrap_or_else(|| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// Serializes like chrono's own `Serialize` for `DateTime<Utc>` (RFC 3339, `Z`, as
/// many fractional digits as the value needs: 0, 3, 6 or 9), which readers and the
/// schema already expect.
pub(crate) fn serialize<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    match write(*t, Fraction::Auto) {
        Some(text) => s.serialize_str(&text),
        None => s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
    }
}

#[derive(Clone, Copy)]
enum Fraction {
    Millis,
    Auto,
}

/// `None` where chrono's general path is needed: years outside 0..=9999 and leap
/// seconds (which chrono keeps as nanoseconds past 10^9).
fn write(t: DateTime<Utc>, fraction: Fraction) -> Option<String> {
    let year = t.year();
    let nanos = t.nanosecond();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return None;
    }
    let mut out = String::with_capacity(30);
    push_digits(&mut out, year as u32, 4);
    out.push('-');
    push_digits(&mut out, t.month(), 2);
    out.push('-');
    push_digits(&mut out, t.day(), 2);
    out.push('T');
    push_digits(&mut out, t.hour(), 2);
    out.push(':');
    push_digits(&mut out, t.minute(), 2);
    out.push(':');
    push_digits(&mut out, t.second(), 2);
    let (value, width) = match fraction {
        Fraction::Millis => (nanos / 1_000_000, 3),
        Fraction::Auto if nanos == 0 => (0, 0),
        Fraction::Auto if nanos % 1_000_000 == 0 => (nanos / 1_000_000, 3),
        Fraction::Auto if nanos % 1_000 == 0 => (nanos / 1_000, 6),
        Fraction::Auto => (nanos, 9),
    };
    if width > 0 {
        out.push('.');
        push_digits(&mut out, value, width);
    }
    out.push('Z');
    Some(out)
}

fn push_digits(out: &mut String, n: u32, width: u32) {
    for place in (0..width).rev() {
        out.push(char::from(b'0' + (n / 10u32.pow(place) % 10) as u8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// Every nanosecond pattern chrono treats differently, over a spread of dates.
    fn samples() -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let secs = (seed % 253_402_300_799) as i64; // 1970 to 9999-12-31T23:59:59
            let nanos = match seed % 5 {
                0 => 0,
                1 => (seed >> 20) as u32 % 1_000 * 1_000_000,
                2 => (seed >> 20) as u32 % 1_000_000 * 1_000,
                _ => (seed >> 20) as u32 % 1_000_000_000,
            };
            out.push(Utc.timestamp_opt(secs, nanos).single().expect("in range"));
        }
        out.extend([Utc.timestamp_opt(0, 0).unwrap(), Utc.timestamp_opt(-62_167_219_200, 5).unwrap(), Utc::now()]);
        out
    }

    #[test]
    fn writes_what_chrono_writes() {
        for t in samples() {
            assert_eq!(millis(t), t.to_rfc3339_opts(SecondsFormat::Millis, true), "{t:?}");
            let mine = serde_json::to_string(&Wrapped(t)).unwrap();
            assert_eq!(mine, serde_json::to_string(&t).unwrap(), "{t:?}");
        }
    }

    #[test]
    fn leap_seconds_and_far_years_take_chronos_path() {
        let leap = Utc.with_ymd_and_hms(2016, 12, 31, 23, 59, 59).unwrap().with_nanosecond(1_500_000_000).unwrap();
        let far = Utc.with_ymd_and_hms(12_345, 1, 2, 3, 4, 5).unwrap();
        let before = Utc.with_ymd_and_hms(-1, 1, 2, 3, 4, 5).unwrap();
        for t in [leap, far, before] {
            assert_eq!(millis(t), t.to_rfc3339_opts(SecondsFormat::Millis, true));
            assert_eq!(serde_json::to_string(&Wrapped(t)).unwrap(), serde_json::to_string(&t).unwrap());
        }
    }

    struct Wrapped(DateTime<Utc>);

    impl serde::Serialize for Wrapped {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            serialize(&self.0, s)
        }
    }
}
