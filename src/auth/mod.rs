//! Who is calling, and what they may do: API keys and JWTs, scopes, tenants and rate
//! limits for every HTTP surface (the gateway, the webhook dispatcher's listener).
//!
//! Configured in the `auth:` block of the `--config` file ([`AuthSpec`], checked
//! into an [`Auth`] at start; a bad block stops the process with where and why):
//!
//! ```yaml
//! auth:
//!   api_keys:
//!     - principal: billing-svc
//!       tenant: billing
//!       sha256: 9f86d081...            # `courier auth hash-key` prints it; the key itself is never stored
//!       scopes: ["submit:billing.*", "read", "cancel"]
//!       rate_limit: { per_second: 100, burst: 200 }   # optional, else the block's default
//!   jwks_file: jwks.json               # optional: RS256/ES256 tokens from an identity provider
//!   issuer: https://idp.internal/
//!   audience: courier
//!   rate_limit: { per_second: 50, burst: 100 }      # optional default per principal
//! ```
//!
//! Rotation: a principal may have several keys (one entry each, same principal and
//! tenant); revocation: remove the entry and restart (or send SIGHUP, which re-reads
//! the file). A JWT's principal is its `sub`, its tenant the `tenant` claim, its
//! scopes `scope` (space-separated) or `scp`.
//!
//! **Tenants.** A principal's tenant is stamped on what it submits
//! (`ce_couriertenant`, the snapshots' `tenant`); it sees, lists, waits on and
//! cancels only operations of its own tenant. Another tenant's operation answers
//! `404`, like an unknown one. A principal without a tenant is in the unnamed tenant
//! (operations without one). Completion tokens of handed-off commands are capability
//! tokens, checked by the callback routes themselves, not here.

pub mod jwt;
mod keys;
mod layer;
mod limit;
mod scope;

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

pub use keys::{constant_time_eq, from_hex, hash_key, to_hex};
pub use layer::{authenticate, Access, Caller, Denied};
pub use limit::{Limiter, Rate};
pub use scope::{allows, Need, Scope};

/// The `auth:` block as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSpec {
    #[serde(default)]
    pub api_keys: Vec<ApiKeySpec>,
    pub jwks_file: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub rate_limit: Option<RateSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySpec {
    pub principal: String,
    pub tenant: Option<String>,
    pub sha256: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub rate_limit: Option<RateSpec>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateSpec {
    pub per_second: f64,
    pub burst: Option<f64>,
}

/// An authenticated caller's identity and rights.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub name: String,
    /// None: the unnamed tenant.
    pub tenant: Option<String>,
    pub scopes: Vec<Scope>,
    /// None: not limited.
    pub rate: Option<Rate>,
}

impl Principal {
    /// Whether this principal may `need`.
    pub fn may(&self, need: Need<'_>) -> bool {
        allows(&self.scopes, need)
    }

    /// Whether an operation of `tenant` is this principal's to see.
    pub fn owns(&self, tenant: Option<&str>) -> bool {
        self.tenant.as_deref() == tenant
    }
}

struct StoredKey {
    digest: [u8; 32],
    principal: Arc<Principal>,
}

/// The checked `auth:` block: what requests are authenticated against.
pub struct Auth {
    keys: Vec<StoredKey>,
    jwt: Option<jwt::JwtVerifier>,
    default_rate: Option<Rate>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("api_keys", &self.keys.len()).field("jwt", &self.jwt.is_some()).finish()
    }
}

/// Why a credential was refused (all `401`). Never carries the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unauthenticated {
    #[error("no credentials: send Authorization: Bearer <key or token>")]
    Missing,
    #[error("the Authorization header is not a Bearer credential")]
    Malformed,
    #[error("unknown or revoked API key")]
    UnknownKey,
    #[error("invalid token: {0}")]
    Token(String),
}

impl Auth {
    /// Checks the block; `folder` is where a relative `jwks_file` is read from. The
    /// error is (where in the block, what is wrong), never a key.
    pub fn from_spec(spec: AuthSpec, folder: &Path) -> Result<Auth, (String, String)> {
        let default_rate = spec.rate_limit.map(|r| rate("auth.rate_limit", r)).transpose()?;
        let mut keys = Vec::new();
        let mut tenants: std::collections::HashMap<String, Option<String>> = Default::default();
        for (i, k) in spec.api_keys.into_iter().enumerate() {
            let at = format!("auth.api_keys[{i}]");
            check_name(&format!("{at}.principal"), &k.principal)?;
            if let Some(t) = &k.tenant {
                check_name(&format!("{at}.tenant"), t)?;
            }
            match tenants.insert(k.principal.clone(), k.tenant.clone()) {
                Some(other) if other != k.tenant => {
                    return Err((format!("{at}.tenant"), format!("principal {:?} has another tenant in an earlier entry", k.principal)))
                }
                _ => {}
            }
            let digest = from_hex(&k.sha256).ok_or_else(|| (format!("{at}.sha256"), "not 64 hex digits (`courier auth hash-key` prints one)".to_string()))?;
            if keys.iter().any(|s: &StoredKey| s.digest == digest) {
                return Err((format!("{at}.sha256"), "the same key is listed twice".into()));
            }
            let scopes = k.scopes.iter().map(|s| Scope::parse(s)).collect::<Result<Vec<_>, _>>().map_err(|m| (format!("{at}.scopes"), m))?;
            if scopes.is_empty() {
                return Err((format!("{at}.scopes"), "give at least one scope (submit:<type pattern>, read, cancel, metrics, admin)".into()));
            }
            let own_rate = k.rate_limit.map(|r| rate(&format!("{at}.rate_limit"), r)).transpose()?;
            let principal = Principal { name: k.principal, tenant: k.tenant, scopes, rate: own_rate.or(default_rate) };
            keys.push(StoredKey { digest, principal: Arc::new(principal) });
        }
        let jwt = match (spec.jwks_file, spec.issuer, spec.audience) {
            (None, None, None) => None,
            (Some(file), Some(issuer), Some(audience)) => {
                let path = folder.join(file);
                Some(jwt::JwtVerifier::from_jwks_file(&path, &issuer, &audience).map_err(|e| ("auth.jwks_file".to_string(), e.to_string()))?)
            }
            _ => return Err(("auth".into(), "jwks_file, issuer and audience go together".into())),
        };
        if keys.is_empty() && jwt.is_none() {
            return Err(("auth".into(), "no api_keys and no jwks_file: nobody could call".into()));
        }
        Ok(Auth { keys, jwt, default_rate })
    }

    /// The principal a bearer credential stands for, at unix time `now`. Every stored
    /// key is compared (no early exit), each in constant time.
    pub fn principal(&self, credential: &str, now: i64) -> Result<Arc<Principal>, Unauthenticated> {
        if let Some(jwt) = &self.jwt {
            if credential.split('.').count() == 3 {
                let claims = jwt.verify(credential, now).map_err(|e| Unauthenticated::Token(e.to_string()))?;
                let scopes = claims.scopes.iter().filter_map(|s| Scope::parse(s).ok()).collect();
                return Ok(Arc::new(Principal { name: claims.subject, tenant: claims.tenant, scopes, rate: self.default_rate }));
            }
        }
        let digest = hash_key(credential);
        let mut found = None;
        for key in &self.keys {
            if constant_time_eq(&digest, &key.digest) {
                found = Some(key.principal.clone());
            }
        }
        found.ok_or(Unauthenticated::UnknownKey)
    }
}

fn rate(at: &str, r: RateSpec) -> Result<Rate, (String, String)> {
    if !(r.per_second.is_finite() && r.per_second > 0.0) {
        return Err((format!("{at}.per_second"), "must be a positive number".into()));
    }
    let burst = r.burst.unwrap_or(r.per_second.max(1.0));
    if !(burst.is_finite() && burst >= 1.0) {
        return Err((format!("{at}.burst"), "must be at least 1".into()));
    }
    Ok(Rate { per_second: r.per_second, burst })
}

/// Principal and tenant names: 1 to 64 of `A-Z a-z 0-9 . _ -` (they go into headers
/// and logs as they are).
fn check_name(at: &str, name: &str) -> Result<(), (String, String)> {
    let ok = !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err((at.to_string(), "1 to 64 letters, digits, '.', '_' or '-'".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> AuthSpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn auth(yaml: &str) -> Result<Auth, (String, String)> {
        Auth::from_spec(spec(yaml), Path::new("."))
    }

    #[test]
    fn keys_authenticate_by_digest_and_rotate() {
        let yaml = format!(
            "api_keys:\n  - {{ principal: billing, tenant: t1, sha256: {}, scopes: [read] }}\n  - {{ principal: billing, tenant: t1, sha256: {}, scopes: [read] }}\n",
            to_hex(&hash_key("old-key")),
            to_hex(&hash_key("new-key"))
        );
        let a = auth(&yaml).unwrap();
        for k in ["old-key", "new-key"] {
            let p = a.principal(k, 0).unwrap();
            assert_eq!((p.name.as_str(), p.tenant.as_deref()), ("billing", Some("t1")));
        }
        assert_eq!(a.principal("other", 0).unwrap_err(), Unauthenticated::UnknownKey);
        assert!(!format!("{a:?}").contains(&to_hex(&hash_key("old-key"))));
    }

    #[test]
    fn bad_blocks_say_where() {
        let h = to_hex(&hash_key("k"));
        for (yaml, at) in [
            ("api_keys: [{ principal: a, sha256: nothex, scopes: [read] }]".to_string(), "auth.api_keys[0].sha256"),
            (format!("api_keys: [{{ principal: a, sha256: {h}, scopes: [write] }}]"), "auth.api_keys[0].scopes"),
            (format!("api_keys: [{{ principal: a, sha256: {h}, scopes: [] }}]"), "auth.api_keys[0].scopes"),
            (format!("api_keys: [{{ principal: 'a b', sha256: {h}, scopes: [read] }}]"), "auth.api_keys[0].principal"),
            (format!("api_keys: [{{ principal: a, sha256: {h}, scopes: [read], rate_limit: {{ per_second: 0 }} }}]"), "auth.api_keys[0].rate_limit.per_second"),
            ("api_keys: []".to_string(), "auth"),
            ("issuer: x".to_string(), "auth"),
        ] {
            assert_eq!(auth(&yaml).unwrap_err().0, at, "{yaml}");
        }
        let twice = format!("api_keys: [{{ principal: a, sha256: {h}, scopes: [read] }}, {{ principal: b, sha256: {h}, scopes: [read] }}]");
        assert!(auth(&twice).unwrap_err().1.contains("twice"));
        let two_tenants = format!(
            "api_keys: [{{ principal: a, tenant: x, sha256: {h}, scopes: [read] }}, {{ principal: a, tenant: y, sha256: {}, scopes: [read] }}]",
            to_hex(&hash_key("k2"))
        );
        assert!(auth(&two_tenants).unwrap_err().1.contains("another tenant"));
    }
}
