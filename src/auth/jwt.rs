//! Bearer JWTs checked against a JWKS file.
//!
//! Teams with an identity provider give the gateway its public keys as a JWKS
//! document and the issuer and audience to expect; a request's bearer token is then
//! trusted only if one of those keys signed it, it names that issuer and audience,
//! and it is inside its validity window (30 s of clock skew either way).
//!
//! Architecture Invariant: only RS256 and ES256 are accepted, and a key verifies
//! only the algorithm its type implies. The token's `alg` header is never allowed to
//! choose how a key is used, so `none`, HMAC with a public key as secret (algorithm
//! confusion) and every other algorithm are refused before any key is touched.
//!
//! API Boundary: no fetching of JWKS over HTTP and no key rotation here; the caller
//! builds a new verifier when the file changes. Errors never quote the token or key
//! material, so they are safe to log.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::{hash, MessageDigest};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Public};
use openssl::rsa::Rsa;
use openssl::sign::Verifier;
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Longest token looked at: a real one is well under 2 KiB, and nothing is decoded
/// before this check, so an oversized header cannot make the gateway allocate.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Clock skew allowed between the identity provider and the gateway, in seconds.
const LEEWAY_SECS: i64 = 30;

/// Shortest RSA modulus accepted, in bits: shorter keys are breakable.
const MIN_RSA_BITS: u32 = 2048;

/// What a verified token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `sub`, required.
    pub subject: String,
    /// `tenant` claim (string), optional.
    pub tenant: Option<String>,
    /// `scope` (space-separated string) or `scp` (array of strings, or a
    /// space-separated string as some providers send it); empty if neither.
    pub scopes: Vec<String>,
    /// `exp`, unix seconds, required.
    pub expires: i64,
    /// `jti`.
    pub token_id: Option<String>,
}

/// Why a token or a JWKS was refused. Every token variant maps to a `401`; the
/// JWKS variants are configuration errors, reported at start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    /// Says which part is wrong, never its text.
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    #[error("token algorithm is not accepted (only RS256 and ES256)")]
    ForbiddenAlgorithm,
    #[error("no key fits the token's kid and algorithm")]
    UnknownKey,
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not yet valid")]
    NotYetValid,
    #[error("token issuer is not the expected one")]
    WrongIssuer,
    #[error("token audience does not include this service")]
    WrongAudience,
    #[error("token lacks the required claim {0}")]
    MissingClaim(&'static str),
    #[error("cannot read jwks file {path}: {kind}")]
    JwksUnreadable {
        path: PathBuf,
        kind: std::io::ErrorKind,
    },
    #[error("jwks is invalid: {0}")]
    JwksInvalid(&'static str),
    /// Names the key by its position, since its contents are key material.
    #[error("jwks key #{index} is invalid: {reason}")]
    JwksKey { index: usize, reason: &'static str },
}

/// Checks bearer tokens from one issuer for one audience against a fixed key set.
pub struct JwtVerifier {
    keys: Vec<Key>,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("keys", &self.keys.len())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

/// The two signing algorithms accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    Rs256,
    Es256,
}

impl Alg {
    fn parse(name: &str) -> Option<Alg> {
        match name {
            "RS256" => Some(Alg::Rs256),
            "ES256" => Some(Alg::Es256),
            _ => None,
        }
    }
}

/// One public key; its type fixes the only algorithm it verifies.
struct Key {
    kid: Option<String>,
    public: PublicKey,
}

enum PublicKey {
    Rsa(PKey<Public>),
    Ec(EcKey<Public>),
}

impl Key {
    fn alg(&self) -> Alg {
        match self.public {
            PublicKey::Rsa(_) => Alg::Rs256,
            PublicKey::Ec(_) => Alg::Es256,
        }
    }

    /// Whether `sig` is this key's signature over `input`; any openssl failure is a
    /// no, since it can only come from a signature that does not fit the key.
    fn verifies(&self, input: &[u8], sig: &[u8]) -> bool {
        match &self.public {
            PublicKey::Rsa(pkey) => verify_rs256(pkey, input, sig).unwrap_or(false),
            PublicKey::Ec(ec) => verify_es256(ec, input, sig).unwrap_or(false),
        }
    }
}

fn verify_rs256(
    pkey: &PKey<Public>,
    input: &[u8],
    sig: &[u8],
) -> Result<bool, openssl::error::ErrorStack> {
    let mut verifier = Verifier::new(MessageDigest::sha256(), pkey)?;
    verifier.update(input)?;
    verifier.verify(sig)
}

/// A JWS carries ES256 as raw `r || s`, 32 bytes each (RFC 7518 §3.4), not DER.
fn verify_es256(
    ec: &EcKey<Public>,
    input: &[u8],
    sig: &[u8],
) -> Result<bool, openssl::error::ErrorStack> {
    if sig.len() != 64 {
        return Ok(false);
    }
    let (r, s) = sig.split_at(32);
    let sig = EcdsaSig::from_private_components(BigNum::from_slice(r)?, BigNum::from_slice(s)?)?;
    sig.verify(&hash(MessageDigest::sha256(), input)?, ec)
}

/// A JWK as published; every member optional so unknown kinds can be skipped.
#[derive(Deserialize)]
struct Jwk {
    kty: Option<String>,
    kid: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
    alg: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<serde_json::Value>,
}

impl Jwk {
    /// The key, `None` if it is of a kind this verifier does not use, or an error
    /// (its reason) if it claims a usable kind but is broken.
    fn into_key(self) -> Result<Option<Key>, &'static str> {
        if self.usage.as_deref().is_some_and(|u| u != "sig") {
            return Ok(None);
        }
        let public = match (self.kty.as_deref(), self.crv.as_deref()) {
            (Some("RSA"), _) => PublicKey::Rsa(rsa_key(self.n.as_deref(), self.e.as_deref())?),
            (Some("EC"), Some("P-256")) => {
                PublicKey::Ec(ec_key(self.x.as_deref(), self.y.as_deref())?)
            }
            _ => return Ok(None),
        };
        let key = Key {
            kid: self.kid,
            public,
        };
        // A key restricted to another algorithm can never verify an accepted token.
        let fits = self
            .alg
            .as_deref()
            .is_none_or(|a| Alg::parse(a) == Some(key.alg()));
        Ok(fits.then_some(key))
    }
}

fn rsa_key(n: Option<&str>, e: Option<&str>) -> Result<PKey<Public>, &'static str> {
    let n = big_num(n.ok_or("rsa key lacks n")?).ok_or("rsa n is not base64url")?;
    let e = big_num(e.ok_or("rsa key lacks e")?).ok_or("rsa e is not base64url")?;
    if n.num_bits() < MIN_RSA_BITS as i32 {
        return Err("rsa key is shorter than 2048 bits");
    }
    // An exponent of 1, or an even one, would make every signature forgeable.
    if e.num_bits() < 2 || !e.is_bit_set(0) {
        return Err("rsa e is not an odd number above 1");
    }
    let rsa = Rsa::from_public_components(n, e).map_err(|_| "rsa key is not usable")?;
    PKey::from_rsa(rsa).map_err(|_| "rsa key is not usable")
}

fn ec_key(x: Option<&str>, y: Option<&str>) -> Result<EcKey<Public>, &'static str> {
    let coordinate = |c: Option<&str>| {
        let bytes = B64
            .decode(c.ok_or("ec key lacks x or y")?)
            .map_err(|_| "ec x or y is not base64url")?;
        if bytes.len() != 32 {
            return Err("ec x or y is not 32 bytes");
        }
        BigNum::from_slice(&bytes).map_err(|_| "ec key is not usable")
    };
    let (x, y) = (coordinate(x)?, coordinate(y)?);
    let group =
        EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(|_| "p-256 is not available")?;
    // openssl checks here that the point is on the curve.
    EcKey::from_public_key_affine_coordinates(&group, &x, &y)
        .map_err(|_| "ec point is not on p-256")
}

fn big_num(b64: &str) -> Option<BigNum> {
    BigNum::from_slice(&B64.decode(b64).ok()?).ok()
}

/// The JOSE header members this verifier reads.
#[derive(Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
    /// Extensions the token says must be understood; none are, so any is refused.
    crit: Option<serde_json::Value>,
}

/// A string or an array of strings, as `aud` and `scp` come.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// The payload members this verifier reads. Times are numbers that may carry a
/// fraction (NumericDate, RFC 7519 §2).
#[derive(Deserialize)]
struct Payload {
    sub: Option<String>,
    iss: Option<String>,
    aud: Option<OneOrMany>,
    exp: Option<f64>,
    nbf: Option<f64>,
    iat: Option<f64>,
    tenant: Option<String>,
    scope: Option<String>,
    scp: Option<OneOrMany>,
    jti: Option<String>,
}

impl JwtVerifier {
    /// Parses a JWKS document (`{"keys":[...]}`): RSA keys (kty RSA, n, e) and EC P-256
    /// keys (kty EC, crv P-256, x, y). Keys with `use` other than `sig`, or other kty/crv,
    /// are skipped (not an error); a document with no usable key is an error.
    pub fn from_jwks(jwks: &str, issuer: &str, audience: &str) -> Result<Self, JwtError> {
        let doc: Jwks = serde_json::from_str(jwks)
            .map_err(|_| JwtError::JwksInvalid("not a json object with keys"))?;
        let mut keys = Vec::new();
        for (index, value) in doc.keys.into_iter().enumerate() {
            let jwk: Jwk = serde_json::from_value(value).map_err(|_| JwtError::JwksKey {
                index,
                reason: "not a jwk",
            })?;
            if let Some(key) = jwk
                .into_key()
                .map_err(|reason| JwtError::JwksKey { index, reason })?
            {
                keys.push(key);
            }
        }
        if keys.is_empty() {
            return Err(JwtError::JwksInvalid(
                "no usable key (RSA, or EC P-256, for signing)",
            ));
        }
        Ok(JwtVerifier {
            keys,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        })
    }

    /// Reads the JWKS file at `path` (error names the path, not the content).
    pub fn from_jwks_file(path: &Path, issuer: &str, audience: &str) -> Result<Self, JwtError> {
        let jwks = std::fs::read_to_string(path).map_err(|e| JwtError::JwksUnreadable {
            path: path.to_owned(),
            kind: e.kind(),
        })?;
        JwtVerifier::from_jwks(&jwks, issuer, audience)
    }

    /// Verifies signature, alg, iss, aud, exp, nbf with a 30 s leeway; `now` is unix seconds.
    ///
    /// The signature is checked before the payload is parsed, so claims are only
    /// ever read from a token one of the keys signed.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::TooLong);
        }
        let parts: Vec<&str> = token.splitn(4, '.').collect();
        let [header_b64, payload_b64, signature_b64] = parts[..] else {
            return Err(JwtError::Malformed("not three dot-separated parts"));
        };
        let header: Header = decode_json(header_b64, "header is not base64url json")?;
        if header.crit.is_some() {
            return Err(JwtError::Malformed("unsupported critical header"));
        }
        let alg = Alg::parse(&header.alg).ok_or(JwtError::ForbiddenAlgorithm)?;
        let signature = B64
            .decode(signature_b64)
            .map_err(|_| JwtError::Malformed("signature is not base64url"))?;
        let signed = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
        self.check_signature(alg, header.kid.as_deref(), signed, &signature)?;
        let payload: Payload = decode_json(payload_b64, "payload is not base64url json claims")?;
        self.check_claims(payload, now)
    }

    /// Finds the keys the token may be signed with and asks whether one signed it.
    fn check_signature(
        &self,
        alg: Alg,
        kid: Option<&str>,
        signed: &[u8],
        sig: &[u8],
    ) -> Result<(), JwtError> {
        let mut candidates = self
            .keys
            .iter()
            .filter(|k| k.alg() == alg && kid.is_none_or(|kid| k.kid.as_deref() == Some(kid)))
            .peekable();
        if candidates.peek().is_none() {
            return Err(JwtError::UnknownKey);
        }
        if candidates.any(|k| k.verifies(signed, sig)) {
            Ok(())
        } else {
            Err(JwtError::BadSignature)
        }
    }

    /// The time window first (the commonest refusal), then who the token is from and
    /// for, then what it says.
    fn check_claims(&self, p: Payload, now: i64) -> Result<Claims, JwtError> {
        let expires = p.exp.map(seconds).ok_or(JwtError::MissingClaim("exp"))?;
        if now >= expires.saturating_add(LEEWAY_SECS) {
            return Err(JwtError::Expired);
        }
        let mut starts = p.nbf.into_iter().chain(p.iat).map(seconds);
        if starts.any(|t| t > now.saturating_add(LEEWAY_SECS)) {
            return Err(JwtError::NotYetValid);
        }
        if p.iss.as_deref() != Some(self.issuer.as_str()) {
            return Err(JwtError::WrongIssuer);
        }
        let for_us = match &p.aud {
            Some(OneOrMany::One(aud)) => *aud == self.audience,
            Some(OneOrMany::Many(auds)) => auds.contains(&self.audience),
            None => false,
        };
        if !for_us {
            return Err(JwtError::WrongAudience);
        }
        let scopes = match (p.scope, p.scp) {
            (Some(s), _) | (None, Some(OneOrMany::One(s))) => {
                s.split_whitespace().map(str::to_owned).collect()
            }
            (None, Some(OneOrMany::Many(list))) => list,
            (None, None) => Vec::new(),
        };
        Ok(Claims {
            subject: p.sub.ok_or(JwtError::MissingClaim("sub"))?,
            tenant: p.tenant,
            scopes,
            expires,
            token_id: p.jti,
        })
    }
}

/// A NumericDate as whole unix seconds (a fraction is dropped; `as` saturates).
fn seconds(t: f64) -> i64 {
    t.floor() as i64
}

/// One base64url part of the token, parsed as JSON; `what` is the refusal's reason.
fn decode_json<T: DeserializeOwned>(part: &str, what: &'static str) -> Result<T, JwtError> {
    let bytes = B64.decode(part).map_err(|_| JwtError::Malformed(what))?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed(what))
}

#[cfg(test)]
mod tests;
