//! The token checks, with keys made in the test: each way a token can be wrong.

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
