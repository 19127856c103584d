//! Standard Webhooks signatures.
//!
//! A delivery carries `webhook-id` (stable across retries, the receiver's dedupe key),
//! `webhook-timestamp` (unix seconds) and `webhook-signature`: space-separated
//! `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` entries, one per active
//! secret, so a secret can be rotated with no window where receivers reject
//! deliveries. The timestamp is signed too, and checked against a tolerance, so a
//! captured delivery cannot be replayed later.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Why a secret or a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Says what is wrong, never the text: it is a signing key.
    #[error("secret must be `whsec_` followed by base64: {0}")]
    BadSecret(&'static str),
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("webhook-timestamp is not a unix time")]
    BadTimestamp,
    #[error("webhook-timestamp is {0} s away from now, beyond the tolerance")]
    OutsideTolerance(i64),
    #[error("no signature matches")]
    NoMatch,
}

/// A signing secret (`whsec_<base64>`).
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl std::str::FromStr for Secret {
    type Err = SignatureError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let encoded = s.trim().strip_prefix("whsec_").ok_or(SignatureError::BadSecret("it does not start with whsec_"))?;
        let key = B64.decode(encoded).map_err(|_| SignatureError::BadSecret("what follows whsec_ is not base64"))?;
        if key.is_empty() {
            return Err(SignatureError::BadSecret("the key after whsec_ is empty"));
        }
        Ok(Secret(key))
    }
}

impl Secret {
    /// `v1,<signature>` of one delivery.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", B64.encode(self.mac(id, timestamp, body).finalize().into_bytes()))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length; this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!("hmac takes any key"));
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    fn verifies(&self, id: &str, timestamp: i64, body: &[u8], signature_b64: &str) -> bool {
        let Ok(given) = B64.decode(signature_b64) else { return false };
        // Constant-time comparison inside `verify_slice`.
        self.mac(id, timestamp, body).verify_slice(&given).is_ok()
    }
}

/// The `webhook-signature` header value for a delivery: one entry per secret.
pub fn signature_header(secrets: &[Secret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets.iter().map(|s| s.sign(id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

/// How far a delivery's `webhook-timestamp` may be from the receiver's clock: the
/// spec's recommendation, and what [`verify`] is meant to be called with.
pub const DEFAULT_TOLERANCE: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// Verifies a received delivery: any `v1` entry of `webhook-signature` made with any
/// of `secrets` over these headers and this exact body, and a `webhook-timestamp`
/// within `tolerance` of this machine's clock (either way). A receiver that knows
/// only the newer secret of a rotation still verifies.
pub fn verify(
    secrets: &[Secret],
    headers: &axum::http::HeaderMap,
    body: &[u8],
    tolerance: std::time::Duration,
) -> Result<(), SignatureError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    verify_at(secrets, header, body, chrono::Utc::now().timestamp(), tolerance)
}

/// [`verify`] with the clock and the header lookup given: for tests, and for
/// receivers whose HTTP library has its own header type.
pub fn verify_at(
    secrets: &[Secret],
    header: impl Fn(&str) -> Option<String>,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let id = header("webhook-id").ok_or(SignatureError::MissingHeader("webhook-id"))?;
    let ts = header("webhook-timestamp").ok_or(SignatureError::MissingHeader("webhook-timestamp"))?;
    let sigs = header("webhook-signature").ok_or(SignatureError::MissingHeader("webhook-signature"))?;
    let timestamp: i64 = ts.trim().parse().map_err(|_| SignatureError::BadTimestamp)?;
    let skew = now.saturating_sub(timestamp);
    if skew.saturating_abs() > tolerance_secs {
        return Err(SignatureError::OutsideTolerance(skew));
    }
    let matched = sigs
        .split_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .any(|sig| secrets.iter().any(|s| s.verifies(&id, timestamp, body, sig)));
    if matched { Ok(()) } else { Err(SignatureError::NoMatch) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    // The example delivery of the Standard Webhooks spec; the expected signatures here
    // were computed independently (Python's hmac and base64 modules, following the
    // spec's algorithm: HMAC-SHA256 over "{id}.{timestamp}.{body}" keyed with the
    // base64-decoded part of the secret after `whsec_`).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn headers(sig: &str) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<&str, String> =
            [("webhook-id", ID.to_string()), ("webhook-timestamp", TS.to_string()), ("webhook-signature", sig.to_string())].into();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn matches_the_known_vector() {
        let secret: Secret = SECRET.parse().unwrap();
        assert_eq!(secret.sign(ID, TS, BODY), EXPECTED);
        assert_eq!(verify_at(&[secret], headers(EXPECTED), BODY, TS + 10, 300), Ok(()));
    }

    /// `whsec_` + base64("second secret for rotation").
    const SECOND: &str = "whsec_c2Vjb25kIHNlY3JldCBmb3Igcm90YXRpb24=";

    #[test]
    fn second_secret_and_a_courier_shaped_delivery_match_known_vectors() {
        let new: Secret = SECOND.parse().unwrap();
        assert_eq!(new.sign(ID, TS, BODY), "v1,IcU4n8+6QBLt4Dsfuv6Ocy2hr1SZ8OwNqBauaehcOLg=");
        let body = br#"{"job_id":"x","status":"completed"}"#;
        let id = "0190f0e2-7c1a-7d4e-9a5b-3c2d1e0f4a5b";
        assert_eq!(new.sign(id, 1700000000, body), "v1,fq69+UrtMLKoPk15NbvrhOOgYztcU1V/lCyLFvoomn0=");
    }

    #[test]
    fn rotation_signs_with_both_and_either_verifies() {
        let old: Secret = SECRET.parse().unwrap();
        let new: Secret = SECOND.parse().unwrap();
        let header = signature_header(&[old.clone(), new.clone()], ID, TS, BODY);
        assert_eq!(header, format!("{EXPECTED} v1,IcU4n8+6QBLt4Dsfuv6Ocy2hr1SZ8OwNqBauaehcOLg="));
        assert_eq!(verify_at(&[new], headers(&header), BODY, TS, 300), Ok(()));
        assert_eq!(verify_at(&[old], headers(&header), BODY, TS, 300), Ok(()));
    }

    #[test]
    fn rejects_tampering_staleness_and_bad_input() {
        let secret: Secret = SECRET.parse().unwrap();
        let s = std::slice::from_ref(&secret);
        assert_eq!(verify_at(s, headers(EXPECTED), br#"{"test": 1}"#, TS, 300), Err(SignatureError::NoMatch));
        assert_eq!(verify_at(s, headers(EXPECTED), BODY, TS + 301, 300), Err(SignatureError::OutsideTolerance(301)));
        assert_eq!(verify_at(s, headers(EXPECTED), BODY, TS - 301, 300), Err(SignatureError::OutsideTolerance(-301)));
        assert_eq!(verify_at(s, headers("v1,!!notbase64"), BODY, TS, 300), Err(SignatureError::NoMatch));
        assert_eq!(verify_at(s, |_| None, BODY, TS, 300), Err(SignatureError::MissingHeader("webhook-id")));
        assert!("nope".parse::<Secret>().is_err());
        assert!("whsec_".parse::<Secret>().is_err());
    }

    #[test]
    fn verify_checks_real_headers_against_the_clock() {
        let secret: Secret = SECRET.parse().unwrap();
        let now = chrono::Utc::now().timestamp();
        let headers_at = |ts: i64| {
            let mut h = axum::http::HeaderMap::new();
            h.insert("webhook-id", ID.parse().unwrap());
            h.insert("webhook-timestamp", ts.to_string().parse().unwrap());
            h.insert("webhook-signature", secret.sign(ID, ts, BODY).parse().unwrap());
            h
        };
        let s = std::slice::from_ref(&secret);
        assert_eq!(verify(s, &headers_at(now - 10), BODY, DEFAULT_TOLERANCE), Ok(()));
        assert!(matches!(verify(s, &headers_at(now - 400), BODY, DEFAULT_TOLERANCE), Err(SignatureError::OutsideTolerance(_))));
        assert!(matches!(verify(s, &headers_at(now + 400), BODY, DEFAULT_TOLERANCE), Err(SignatureError::OutsideTolerance(_))));
    }
}
