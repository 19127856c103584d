//! Callback tokens: the capability a handler that answered `202` holds to complete,
//! report progress on or keep alive the one command attempt it took over.
//!
//! A token names what it is for (command id and attempt) and until when, in clear,
//! and carries an HMAC-SHA256 of exactly that under the first signing key. Any listed
//! key verifies, so keys rotate by adding the new one first and dropping the old one
//! once tokens it signed have expired. A token grants nothing else: it is not an API
//! key and never names a principal.
//!
//! ```text
//! v1.<command id>.<attempt>.<expiry, unix seconds>.<signature, base64url>
//! ```

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

/// A key that signs or verifies callback tokens. Its bytes never print.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl SigningKey {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        SigningKey(bytes.into())
    }

    fn mac(&self, claim: &str) -> Hmac<Sha256> {
        // HMAC takes a key of any length; the error arm cannot happen.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!("hmac takes any key"));
        mac.update(b"courier-callback-v1:");
        mac.update(claim.as_bytes());
        mac
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

/// What a token is for: one attempt of one command, until `expires`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub command_id: Uuid,
    pub attempt: u32,
    pub expires: DateTime<Utc>,
}

/// Why a token was refused. The first two mean the caller has no valid token (`401`),
/// the last that it has one for something else (`403`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the callback token is malformed or its signature does not verify")]
    Forged,
    #[error("the callback token expired at {0}")]
    Expired(DateTime<Utc>),
    #[error("the callback token is for another command or attempt")]
    OtherTarget,
}

impl Grant {
    fn claim(&self) -> String {
        format!("{}.{}.{}", self.command_id, self.attempt, self.expires.timestamp())
    }

    /// The token for this grant, signed with `key`.
    pub fn sign(&self, key: &SigningKey) -> String {
        let claim = self.claim();
        let signature = URL_SAFE_NO_PAD.encode(key.mac(&claim).finalize().into_bytes());
        format!("v1.{claim}.{signature}")
    }

    /// Reads and verifies `token` against every key, at `now`. Says nothing about
    /// which command it names: check that with [`Grant::require`].
    pub fn verify(token: &str, keys: &[SigningKey], now: DateTime<Utc>) -> Result<Grant, TokenError> {
        let rest = token.strip_prefix("v1.").ok_or(TokenError::Forged)?;
        let (claim, signature) = rest.rsplit_once('.').ok_or(TokenError::Forged)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Forged)?;
        // `verify_slice` compares in constant time.
        if !keys.iter().any(|key| key.mac(claim).verify_slice(&signature).is_ok()) {
            return Err(TokenError::Forged);
        }
        let mut parts = claim.split('.');
        let (Some(id), Some(attempt), Some(expires), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Forged);
        };
        let command_id = Uuid::parse_str(id).map_err(|_| TokenError::Forged)?;
        let attempt = attempt.parse().map_err(|_| TokenError::Forged)?;
        let expires = expires.parse::<i64>().ok().and_then(|s| DateTime::from_timestamp(s, 0)).ok_or(TokenError::Forged)?;
        if expires <= now {
            return Err(TokenError::Expired(expires));
        }
        Ok(Grant { command_id, attempt, expires })
    }

    /// Whether this grant is for `command_id`, attempt `attempt`.
    pub fn require(&self, command_id: Uuid, attempt: u32) -> Result<(), TokenError> {
        if self.command_id == command_id && self.attempt == attempt {
            Ok(())
        } else {
            Err(TokenError::OtherTarget)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        Grant { command_id: Uuid::now_v7(), attempt: 2, expires: Utc::now() + chrono::Duration::hours(1) }
    }

    #[test]
    fn a_signed_token_verifies_with_any_listed_key_and_names_its_target() {
        let (old, new) = (SigningKey::new("old-key-0123456789"), SigningKey::new("new-key-0123456789"));
        let g = grant();
        let token = g.sign(&old);
        let back = Grant::verify(&token, &[new.clone(), old], Utc::now()).unwrap();
        assert_eq!((back.command_id, back.attempt, back.expires.timestamp()), (g.command_id, 2, g.expires.timestamp()));
        assert_eq!(back.require(g.command_id, 2), Ok(()));
        assert_eq!(back.require(g.command_id, 3), Err(TokenError::OtherTarget));
        assert_eq!(back.require(Uuid::now_v7(), 2), Err(TokenError::OtherTarget));
        assert_eq!(Grant::verify(&token, &[new], Utc::now()), Err(TokenError::Forged), "a dropped key no longer verifies");
    }

    #[test]
    fn forged_altered_and_expired_tokens_are_refused() {
        let key = SigningKey::new("key-0123456789abcdef");
        let g = grant();
        let token = g.sign(&key);
        let other = Uuid::now_v7();
        let swapped = token.replace(&g.command_id.to_string(), &other.to_string());
        let bumped = token.replacen(".2.", ".3.", 1);
        for bad in [swapped.as_str(), bumped.as_str(), "", "v1.", "v1.x.y", "Bearer", &token[..token.len() - 2], &format!("v2{}", &token[2..])] {
            assert_eq!(Grant::verify(bad, std::slice::from_ref(&key), Utc::now()), Err(TokenError::Forged), "{bad}");
        }
        let past = Grant { expires: Utc::now() - chrono::Duration::seconds(1), ..g }.sign(&key);
        assert!(matches!(Grant::verify(&past, &[key], Utc::now()), Err(TokenError::Expired(_))));
    }

    #[test]
    fn a_key_never_prints() {
        assert_eq!(format!("{:?}", SigningKey::new("secret-value-123456")), "SigningKey(..)");
    }
}
