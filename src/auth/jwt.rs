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
mod tests {
    use super::*;
    use openssl::ec::EcKeyRef;
    use openssl::pkey::Private;
    use openssl::sign::Signer;
    use serde_json::{json, Value};
    use std::sync::OnceLock;

    const NOW: i64 = 1_700_000_000;
    const ISS: &str = "https://idp.example.com/";
    const AUD: &str = "courier-gateway";

    /// Keys made once for all tests: RSA 2048 and EC P-256 in the JWKS, one RSA
    /// key that is not.
    struct Keys {
        rsa: PKey<Private>,
        ec: EcKey<Private>,
        stranger: PKey<Private>,
        jwks: String,
    }

    fn keys() -> &'static Keys {
        static KEYS: OnceLock<Keys> = OnceLock::new();
        KEYS.get_or_init(|| {
            let rsa = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
            let ec = EcKey::generate(&group).unwrap();
            let stranger = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
            let jwks = json!({ "keys": [
                { "kty": "oct", "k": "c2VjcmV0", "kid": "hmac" },
                { "kty": "RSA", "use": "enc", "kid": "enc", "n": "AQAB", "e": "AQAB" },
                rsa_jwk(&rsa, "rsa-1"),
                ec_jwk(&ec, "ec-1"),
            ]});
            Keys {
                rsa,
                ec,
                stranger,
                jwks: jwks.to_string(),
            }
        })
    }

    fn rsa_jwk(key: &PKey<Private>, kid: &str) -> Value {
        let rsa = key.rsa().unwrap();
        json!({ "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
                "n": B64.encode(rsa.n().to_vec()), "e": B64.encode(rsa.e().to_vec()) })
    }

    fn ec_jwk(key: &EcKeyRef<Private>, kid: &str) -> Value {
        let (mut x, mut y) = (BigNum::new().unwrap(), BigNum::new().unwrap());
        let mut ctx = openssl::bn::BigNumContext::new().unwrap();
        key.public_key()
            .affine_coordinates(key.group(), &mut x, &mut y, &mut ctx)
            .unwrap();
        json!({ "kty": "EC", "crv": "P-256", "kid": kid,
                "x": B64.encode(x.to_vec_padded(32).unwrap()), "y": B64.encode(y.to_vec_padded(32).unwrap()) })
    }

    fn verifier() -> JwtVerifier {
        JwtVerifier::from_jwks(&keys().jwks, ISS, AUD).unwrap()
    }

    fn claims() -> Value {
        json!({ "sub": "user-7", "iss": ISS, "aud": AUD, "exp": NOW + 300, "iat": NOW - 5,
                "tenant": "acme", "scope": "commands:submit commands:read", "jti": "t-1" })
    }

    /// `header.payload` of a token, before signing.
    fn signing_input(header: &Value, claims: &Value) -> String {
        format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        )
    }

    fn rs256(key: &PKey<Private>, kid: Option<&str>, claims: &Value) -> String {
        let input = signing_input(&json!({ "alg": "RS256", "typ": "JWT", "kid": kid }), claims);
        let mut signer = Signer::new(MessageDigest::sha256(), key).unwrap();
        signer.update(input.as_bytes()).unwrap();
        format!("{input}.{}", B64.encode(signer.sign_to_vec().unwrap()))
    }

    fn es256(key: &EcKeyRef<Private>, kid: Option<&str>, claims: &Value) -> String {
        let input = signing_input(&json!({ "alg": "ES256", "kid": kid }), claims);
        let sig = EcdsaSig::sign(
            &hash(MessageDigest::sha256(), input.as_bytes()).unwrap(),
            key,
        )
        .unwrap();
        let mut raw = sig.r().to_vec_padded(32).unwrap();
        raw.extend(sig.s().to_vec_padded(32).unwrap());
        format!("{input}.{}", B64.encode(raw))
    }

    fn with(changes: Value) -> Value {
        let mut c = claims();
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    fn check(claims: &Value) -> Result<Claims, JwtError> {
        verifier().verify(&rs256(&keys().rsa, Some("rsa-1"), claims), NOW)
    }

    #[test]
    fn valid_rs256_token_gives_its_claims() {
        let got = check(&claims()).unwrap();
        let want = Claims {
            subject: "user-7".into(),
            tenant: Some("acme".into()),
            scopes: vec!["commands:submit".into(), "commands:read".into()],
            expires: NOW + 300,
            token_id: Some("t-1".into()),
        };
        assert_eq!(got, want);
    }

    #[test]
    fn valid_es256_token_with_scp_array_gives_its_claims() {
        let c = with(json!({ "scope": null, "tenant": null, "jti": null, "scp": ["a", "b"] }));
        let got = verifier()
            .verify(&es256(&keys().ec, Some("ec-1"), &c), NOW)
            .unwrap();
        assert_eq!(got.scopes, ["a", "b"]);
        assert_eq!((got.tenant, got.token_id), (None, None));
        // Without a kid, the keys whose type fits the algorithm are tried.
        assert!(verifier().verify(&es256(&keys().ec, None, &c), NOW).is_ok());
        assert!(verifier()
            .verify(&rs256(&keys().rsa, None, &c), NOW)
            .is_ok());
    }

    #[test]
    fn no_scope_claim_means_no_scopes() {
        assert!(check(&with(json!({ "scope": null })))
            .unwrap()
            .scopes
            .is_empty());
    }

    #[test]
    fn expiry_allows_the_leeway_and_no_more() {
        assert!(check(&with(json!({ "exp": NOW - 10 }))).is_ok());
        assert_eq!(
            check(&with(json!({ "exp": NOW - 60 }))),
            Err(JwtError::Expired)
        );
        assert_eq!(
            check(&with(json!({ "exp": null }))),
            Err(JwtError::MissingClaim("exp"))
        );
    }

    #[test]
    fn a_token_from_the_future_is_not_yet_valid() {
        assert_eq!(
            check(&with(json!({ "nbf": NOW + 120 }))),
            Err(JwtError::NotYetValid)
        );
        assert_eq!(
            check(&with(json!({ "iat": NOW + 120 }))),
            Err(JwtError::NotYetValid)
        );
        assert!(check(&with(json!({ "nbf": NOW + 10, "iat": NOW + 10 }))).is_ok());
    }

    #[test]
    fn issuer_must_match() {
        assert_eq!(
            check(&with(json!({ "iss": "https://evil.example/" }))),
            Err(JwtError::WrongIssuer)
        );
        assert_eq!(
            check(&with(json!({ "iss": null }))),
            Err(JwtError::WrongIssuer)
        );
    }

    #[test]
    fn audience_must_include_this_service() {
        assert_eq!(
            check(&with(json!({ "aud": "other" }))),
            Err(JwtError::WrongAudience)
        );
        assert_eq!(
            check(&with(json!({ "aud": ["other", "more"] }))),
            Err(JwtError::WrongAudience)
        );
        assert_eq!(
            check(&with(json!({ "aud": null }))),
            Err(JwtError::WrongAudience)
        );
        assert!(check(&with(json!({ "aud": ["other", AUD] }))).is_ok());
    }

    #[test]
    fn subject_is_required() {
        assert_eq!(
            check(&with(json!({ "sub": null }))),
            Err(JwtError::MissingClaim("sub"))
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let token = format!("{}.", signing_input(&json!({ "alg": "none" }), &claims()));
        assert_eq!(
            verifier().verify(&token, NOW),
            Err(JwtError::ForbiddenAlgorithm)
        );
    }

    #[test]
    fn hs256_with_the_public_key_as_secret_is_refused() {
        let pem = keys().rsa.public_key_to_pem().unwrap();
        for kid in [Some("rsa-1"), None] {
            let input = signing_input(&json!({ "alg": "HS256", "kid": kid }), &claims());
            let mut signer =
                Signer::new(MessageDigest::sha256(), &PKey::hmac(&pem).unwrap()).unwrap();
            signer.update(input.as_bytes()).unwrap();
            let token = format!("{input}.{}", B64.encode(signer.sign_to_vec().unwrap()));
            assert_eq!(
                verifier().verify(&token, NOW),
                Err(JwtError::ForbiddenAlgorithm)
            );
        }
    }

    #[test]
    fn a_tampered_payload_fails_the_signature() {
        let token = rs256(&keys().rsa, Some("rsa-1"), &claims());
        let parts: Vec<&str> = token.splitn(4, '.').collect();
        let forged = B64.encode(with(json!({ "sub": "admin" })).to_string());
        let token = format!("{}.{forged}.{}", parts[0], parts[2]);
        assert_eq!(verifier().verify(&token, NOW), Err(JwtError::BadSignature));
    }

    #[test]
    fn an_unknown_kid_or_a_kid_of_the_wrong_type_is_refused() {
        let unknown = rs256(&keys().rsa, Some("rsa-9"), &claims());
        assert_eq!(verifier().verify(&unknown, NOW), Err(JwtError::UnknownKey));
        // ES256 naming the RSA key: the key's type decides, not the header.
        let crossed = es256(&keys().ec, Some("rsa-1"), &claims());
        assert_eq!(verifier().verify(&crossed, NOW), Err(JwtError::UnknownKey));
    }

    #[test]
    fn a_key_outside_the_jwks_is_refused() {
        for kid in [Some("rsa-1"), None] {
            let token = rs256(&keys().stranger, kid, &claims());
            assert_eq!(verifier().verify(&token, NOW), Err(JwtError::BadSignature));
        }
    }

    #[test]
    fn an_es256_signature_must_be_64_raw_bytes() {
        let token = es256(&keys().ec, Some("ec-1"), &claims());
        let (input, sig) = token.rsplit_once('.').unwrap();
        let mut sig = B64.decode(sig).unwrap();
        sig.push(0);
        let longer = format!("{input}.{}", B64.encode(&sig));
        assert_eq!(verifier().verify(&longer, NOW), Err(JwtError::BadSignature));
        let shorter = format!("{input}.{}", B64.encode(&sig[..63]));
        assert_eq!(
            verifier().verify(&shorter, NOW),
            Err(JwtError::BadSignature)
        );
    }

    #[test]
    fn malformed_tokens_are_refused_without_panic() {
        let v = verifier();
        let good = rs256(&keys().rsa, Some("rsa-1"), &claims());
        let (input, _) = good.rsplit_once('.').unwrap();
        let cases = [
            String::new(),
            "...".to_string(),
            input.to_string(),
            format!("{good}.x"),
            format!("{input}.not*base64"),
            format!("!!.{}", good.split_once('.').unwrap().1),
            format!("{}.{}.", B64.encode("[1,2]"), B64.encode("{}")),
            format!(
                "{}.{}.",
                B64.encode(r#"{"alg":"RS256","crit":["exp"]}"#),
                B64.encode("{}")
            ),
        ];
        for token in &cases {
            assert!(
                matches!(v.verify(token, NOW), Err(JwtError::Malformed(_))),
                "{token:?}"
            );
        }
        let huge = format!("{}.{}.sig", "a".repeat(MAX_TOKEN_BYTES), "b");
        assert_eq!(v.verify(&huge, NOW), Err(JwtError::TooLong));
        let bad_payload = format!("{}.!!.{}", input.split_once('.').unwrap().0, "AA");
        assert!(v.verify(&bad_payload, NOW).is_err());
    }

    #[test]
    fn errors_never_quote_the_token() {
        let token = rs256(&keys().stranger, Some("rsa-1"), &claims());
        let message = verifier().verify(&token, NOW).unwrap_err().to_string();
        assert!(!message.contains(token.split('.').nth(1).unwrap()));
        assert!(!message.contains("user-7"));
    }

    #[test]
    fn a_jwks_without_a_usable_key_is_an_error() {
        let mut for_encryption = rsa_jwk(&keys().rsa, "enc");
        for_encryption["use"] = json!("enc");
        let mut other_alg = ec_jwk(&keys().ec, "ec-384");
        other_alg["alg"] = json!("ES384");
        let unusable = json!({ "keys": [
            { "kty": "oct", "k": "c2VjcmV0" },
            { "kty": "EC", "crv": "P-384", "x": "AA", "y": "AA" },
            for_encryption,
            other_alg,
        ]});
        for doc in ["not json", "{}", r#"{"keys":[]}"#, &unusable.to_string()] {
            assert!(JwtVerifier::from_jwks(doc, ISS, AUD).is_err(), "{doc}");
        }
    }

    #[test]
    fn a_broken_or_weak_key_is_named_by_position_not_content() {
        let weak = PKey::from_rsa(Rsa::generate(1024).unwrap()).unwrap();
        let doc =
            json!({ "keys": [rsa_jwk(&keys().rsa, "ok"), rsa_jwk(&weak, "weak")] }).to_string();
        let err = JwtVerifier::from_jwks(&doc, ISS, AUD).unwrap_err();
        assert_eq!(
            err,
            JwtError::JwksKey {
                index: 1,
                reason: "rsa key is shorter than 2048 bits"
            }
        );
        let off_curve = json!({ "keys": [{ "kty": "EC", "crv": "P-256", "x": B64.encode([1; 32]), "y": B64.encode([2; 32]) }] });
        let err = JwtVerifier::from_jwks(&off_curve.to_string(), ISS, AUD).unwrap_err();
        assert!(matches!(err, JwtError::JwksKey { index: 0, .. }));
        assert!(!err.to_string().contains(&B64.encode([1; 32])));
        let mut forgeable = rsa_jwk(&keys().rsa, "e-is-1");
        forgeable["e"] = json!("AQ");
        let doc = json!({ "keys": [forgeable] }).to_string();
        let err = JwtVerifier::from_jwks(&doc, ISS, AUD).unwrap_err();
        assert_eq!(
            err,
            JwtError::JwksKey {
                index: 0,
                reason: "rsa e is not an odd number above 1"
            }
        );
    }

    #[test]
    fn a_jwks_file_is_read_and_a_missing_one_is_named() {
        let path = std::env::temp_dir().join(format!("courier-jwks-{}.json", std::process::id()));
        std::fs::write(&path, &keys().jwks).unwrap();
        let read = JwtVerifier::from_jwks_file(&path, ISS, AUD);
        std::fs::remove_file(&path).unwrap();
        assert!(read
            .unwrap()
            .verify(&rs256(&keys().rsa, Some("rsa-1"), &claims()), NOW)
            .is_ok());
        let err = JwtVerifier::from_jwks_file(&path, ISS, AUD).unwrap_err();
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_verifier_can_be_shared_across_tasks() {
        fn shareable<T: Send + Sync>() {}
        shareable::<JwtVerifier>();
    }
}
