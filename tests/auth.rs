//! Who may call the gateway: a real `courier gateway` process started with an `auth:`
//! block in its `--config` file (and a real worker where an operation must finish),
//! asked over real sockets.
//!
//! 1. Credentials: missing, malformed, unknown, expired, wrong-audience, wrong-issuer
//!    and tampered ones are `401` with `WWW-Authenticate`; keys rotate (two keys, one
//!    principal) and revoke (entry removed, SIGHUP); ES256 and RS256 JWTs from a JWKS
//!    file; a rate limit answers `429` with `Retry-After` and recovers; `/healthz`
//!    needs nothing.
//! 2. Scopes and tenants: every `403` publishes nothing; another tenant's operation is
//!    `404` to get, wait on and cancel, and absent from its list; idempotency keys are
//!    per tenant.
//! 3. Start-up: no `auth:` block (and no `--insecure-no-auth`) or a bad one is a
//!    refusal naming the fix; `courier auth hash-key` prints the digest a file stores.
//!
//! No gateway log ever holds a key or a token the test used.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command as Proc, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::{hash, MessageDigest};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::sign::Signer;
use reqwest::{header, RequestBuilder, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const ISSUER: &str = "https://idp.test/";
const AUDIENCE: &str = "courier";

/// One `auth.api_keys` entry and the key it stands for.
struct ApiKey {
    secret: String,
    principal: &'static str,
    tenant: &'static str,
    scopes: &'static [&'static str],
    rate: Option<(f64, f64)>,
}

impl ApiKey {
    fn new(principal: &'static str, tenant: &'static str, scopes: &'static [&'static str]) -> ApiKey {
        let mut bytes = [0u8; 24];
        openssl::rand::rand_bytes(&mut bytes).expect("random key");
        let secret = format!("ck_{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
        ApiKey { secret, principal, tenant, scopes, rate: None }
    }

    fn limited(self, per_second: f64, burst: f64) -> ApiKey {
        ApiKey { rate: Some((per_second, burst)), ..self }
    }

    fn entry(&self) -> Value {
        let mut e = json!({ "principal": self.principal, "tenant": self.tenant, "sha256": sha256_hex(&self.secret), "scopes": self.scopes });
        if let Some((per_second, burst)) = self.rate {
            e["rate_limit"] = json!({ "per_second": per_second, "burst": burst });
        }
        e
    }
}

fn sha256_hex(key: &str) -> String {
    Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A `--config` file (JSON is YAML) whose `auth:` block lists `keys`, and trusts the
/// JWKS file beside it when `jwt`.
fn auth_config(keys: &[&ApiKey], jwt: bool) -> Value {
    let mut auth = json!({ "api_keys": keys.iter().map(|k| k.entry()).collect::<Vec<_>>() });
    if jwt {
        auth["jwks_file"] = json!("jwks.json");
        auth["issuer"] = json!(ISSUER);
        auth["audience"] = json!(AUDIENCE);
    }
    json!({ "auth": auth })
}

/// An identity provider of one's own: an EC P-256 and an RSA key, published as a JWKS.
struct Idp {
    ec: EcKey<Private>,
    rsa: PKey<Private>,
}

impl Idp {
    fn new() -> Idp {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        Idp { ec: EcKey::generate(&group).unwrap(), rsa: PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap() }
    }

    fn jwks(&self) -> Value {
        let (mut x, mut y) = (BigNum::new().unwrap(), BigNum::new().unwrap());
        self.ec.public_key().affine_coordinates(self.ec.group(), &mut x, &mut y, &mut BigNumContext::new().unwrap()).unwrap();
        let rsa = self.rsa.rsa().unwrap();
        json!({ "keys": [
            { "kty": "EC", "crv": "P-256", "use": "sig", "kid": "ec-1",
              "x": B64.encode(x.to_vec_padded(32).unwrap()), "y": B64.encode(y.to_vec_padded(32).unwrap()) },
            { "kty": "RSA", "use": "sig", "alg": "RS256", "kid": "rsa-1", "n": B64.encode(rsa.n().to_vec()), "e": B64.encode(rsa.e().to_vec()) },
        ]})
    }

    fn es256(&self, claims: &Value) -> String {
        let input = signing_input(&json!({ "alg": "ES256", "typ": "JWT", "kid": "ec-1" }), claims);
        let sig = EcdsaSig::sign(&hash(MessageDigest::sha256(), input.as_bytes()).unwrap(), &self.ec).unwrap();
        let mut raw = sig.r().to_vec_padded(32).unwrap();
        raw.extend(sig.s().to_vec_padded(32).unwrap());
        format!("{input}.{}", B64.encode(raw))
    }

    fn rs256(&self, claims: &Value) -> String {
        let input = signing_input(&json!({ "alg": "RS256", "typ": "JWT", "kid": "rsa-1" }), claims);
        let mut signer = Signer::new(MessageDigest::sha256(), &self.rsa).unwrap();
        signer.update(input.as_bytes()).unwrap();
        format!("{input}.{}", B64.encode(signer.sign_to_vec().unwrap()))
    }
}

fn signing_input(header: &Value, claims: &Value) -> String {
    format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()))
}

/// Valid claims for `sub` of tenant `red`, with `changes` laid over them.
fn claims(sub: &str, changes: Value) -> Value {
    let now = chrono::Utc::now().timestamp();
    let mut c = json!({ "sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": now + 300, "iat": now - 5, "tenant": "red", "scope": "submit:echo read" });
    for (k, v) in changes.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

/// A `courier gateway` child with authentication on (no `COURIER_INSECURE_NO_AUTH`),
/// its config file in a folder of its own; killed on drop.
struct AuthGateway {
    child: Child,
    base: String,
    log: PathBuf,
    config: PathBuf,
}

impl AuthGateway {
    fn start(t: &common::TestTopics, name: &str, config: &Value, jwks: Option<&Value>) -> AuthGateway {
        Self::start_with(t, name, config, jwks, &[])
    }

    /// Like [`AuthGateway::start`], with more arguments; `--tls-cert` among them makes
    /// the base URL `https://localhost`.
    fn start_with(t: &common::TestTopics, name: &str, config: &Value, jwks: Option<&Value>, extra: &[&str]) -> AuthGateway {
        let dir = std::env::temp_dir().join("courier-test-logs").join(format!("{}-{name}", t.kafka.prefix));
        std::fs::create_dir_all(&dir).expect("gateway dir");
        let (config_path, log) = (dir.join("courier.yaml"), dir.join("gateway.log"));
        std::fs::write(&config_path, serde_json::to_string_pretty(config).unwrap()).unwrap();
        if let Some(jwks) = jwks {
            std::fs::write(dir.join("jwks.json"), jwks.to_string()).unwrap();
        }
        let file = std::fs::File::create(&log).expect("log file");
        let port = common::free_port();
        let child = courier()
            .args(["gateway", "--bootstrap", &t.kafka.bootstrap, "--prefix", &t.kafka.prefix])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--config")
            .arg(&config_path)
            .args(extra)
            .env("RUST_LOG", "info,courier=debug,rdkafka=warn")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("spawn courier gateway");
        let base = if extra.contains(&"--tls-cert") { format!("https://localhost:{port}") } else { format!("http://127.0.0.1:{port}") };
        AuthGateway { child, base, log, config: config_path }
    }

    /// Waits until `/healthz` answers (the gateway listens once it has read the status
    /// topic); `/healthz` needs no credential, which is the first thing proved.
    async fn ready(&mut self, http: &reqwest::Client) {
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            if let Ok(r) = http.get(format!("{}/healthz", self.base)).send().await {
                assert_eq!(r.status(), StatusCode::OK, "/healthz with no credential");
                return;
            }
            assert!(self.child.try_wait().unwrap().is_none(), "gateway exited: {}", self.log_text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("gateway never became ready: {}", self.log_text());
    }

    /// Rewrites the config file and sends SIGHUP, which re-reads its `auth:` block.
    fn reload(&self, config: &Value) {
        std::fs::write(&self.config, serde_json::to_string_pretty(config).unwrap()).unwrap();
        let status = Proc::new("kill").args(["-HUP", &self.child.id().to_string()]).status().expect("kill -HUP");
        assert!(status.success());
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log never held any of `secrets`.
    fn assert_logged_no(&self, secrets: &[&str]) {
        let log = self.log_text();
        assert!(log.contains("gateway listening"), "the log is the gateway's: {log}");
        for s in secrets {
            assert!(!log.contains(s), "a credential reached the gateway's log");
        }
    }
}

impl Drop for AuthGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary, without anything that would switch authentication off or point it
/// at another config file.
fn courier() -> Proc {
    let mut cmd = Proc::new(env!("CARGO_BIN_EXE_courier"));
    cmd.env_remove("COURIER_INSECURE_NO_AUTH").env_remove("COURIER_CONFIG").env("NO_COLOR", "1");
    cmd
}

/// What a request was answered.
struct Answer {
    status: StatusCode,
    headers: header::HeaderMap,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }

    fn name(&self) -> String {
        self.body["name"].as_str().unwrap_or_else(|| panic!("no operation name in {}", self.body)).to_string()
    }
}

async fn answer(req: RequestBuilder) -> Answer {
    let resp = req.send().await.expect("http request");
    let (status, headers) = (resp.status(), resp.headers().clone());
    let text = resp.text().await.unwrap();
    Answer { status, headers, body: serde_json::from_str(&text).unwrap_or(Value::String(text)) }
}

/// The gateway's HTTP API, called as one key or token after another.
struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    fn get(&self, path: &str) -> RequestBuilder {
        self.http.get(format!("{}{path}", self.base))
    }

    fn post(&self, path: &str) -> RequestBuilder {
        self.http.post(format!("{}{path}", self.base))
    }

    async fn read(&self, who: &str, path: &str) -> Answer {
        answer(self.get(path).bearer_auth(who)).await
    }

    async fn submit(&self, who: &str, command_type: &str, payload: Value) -> Answer {
        answer(self.post("/v1/commands").bearer_auth(who).json(&json!({ "type": command_type, "payload": payload }))).await
    }

    async fn cancel(&self, who: &str, name: &str) -> Answer {
        answer(self.post(&format!("/v1/{name}:cancel")).bearer_auth(who)).await
    }

    /// The names in `who`'s `GET /v1/operations`.
    async fn listed(&self, who: &str) -> Vec<String> {
        let list = self.read(who, "/v1/operations?page_size=1000").await;
        assert_eq!(list.status, StatusCode::OK, "{}", list.body);
        list.body["operations"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap().to_string()).collect()
    }

    /// The operation once done, long-polling as `who`.
    async fn wait_done(&self, who: &str, name: &str) -> Value {
        for _ in 0..4 {
            let op = self.read(who, &format!("/v1/{name}?wait=30s")).await;
            assert_eq!(op.status, StatusCode::OK, "{}", op.body);
            if op.body["done"] == true {
                return op.body;
            }
        }
        panic!("{name} not done after two minutes");
    }
}

/// Records on `topic` now, read to its end.
fn records(t: &common::TestTopics, topic: &str) -> usize {
    let reader = common::TopicReader::new(t, topic);
    let mut seen = Vec::new();
    assert!(reader.read_to_end(topic, t.partitions, &mut seen, Duration::from_secs(20)), "could not read {topic} to its end");
    seen.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_are_checked_keys_rotate_and_revoke() {
    let t = common::fresh_topics("auth-keys", 1).await;
    let (old, new) = (ApiKey::new("billing", "red", &["submit:echo", "read"]), ApiKey::new("billing", "red", &["submit:echo", "read"]));
    let other = ApiKey::new("reports", "red", &["read"]);
    let slow = ApiKey::new("slow", "red", &["read"]).limited(1.0, 2.0);
    let idp = Idp::new();
    let mut gw = AuthGateway::start(&t, "gw", &auth_config(&[&old, &new, &other, &slow], true), Some(&idp.jwks()));
    let api = Api { http: reqwest::Client::new(), base: gw.base.clone() };
    gw.ready(&api.http).await;

    // 401, with WWW-Authenticate, for every credential that names nobody.
    let now = chrono::Utc::now().timestamp();
    let valid = idp.es256(&claims("jwt-user", json!({})));
    let forged = {
        let parts: Vec<&str> = valid.split('.').collect();
        format!("{}.{}.{}", parts[0], B64.encode(claims("jwt-user", json!({ "tenant": "blue", "scope": "admin" })).to_string()), parts[2])
    };
    let bad_tokens = [
        (idp.es256(&claims("jwt-user", json!({ "exp": now - 120 }))), "expired"),
        (idp.rs256(&claims("jwt-user", json!({ "aud": "someone-else" }))), "audience"),
        (idp.es256(&claims("jwt-user", json!({ "iss": "https://evil.test/" }))), "issuer"),
        (forged, "signature"),
    ];
    let list = || api.get("/v1/operations");
    let mut refused: Vec<(RequestBuilder, &str)> = vec![
        (list(), "no credentials"),
        (list().header(header::AUTHORIZATION, "Basic YmlsbGluZzpzZWNyZXQ="), "not a Bearer"),
        (list().header(header::AUTHORIZATION, "Bearer"), "not a Bearer"),
        (list().header(header::AUTHORIZATION, "Bearer    "), "not a Bearer"),
        (list().bearer_auth("ck_not-a-key-anyone-was-given"), "unknown or revoked"),
    ];
    refused.extend(bad_tokens.iter().map(|(token, why)| (list().bearer_auth(token), *why)));
    for (req, why) in refused {
        let a = answer(req).await;
        assert_eq!((a.status, a.code()), (StatusCode::UNAUTHORIZED, "unauthenticated"), "{why}: {}", a.body);
        assert!(a.body["error"]["message"].as_str().unwrap().contains(why), "{why}: {}", a.body);
        assert_eq!(a.headers.get(header::WWW_AUTHENTICATE).map(|v| v.to_str().unwrap()), Some("Bearer"), "{why}");
    }

    // Rotation: either key of the principal submits and reads the tenant's operations.
    let op = api.submit(&old.secret, "echo", json!({ "by": "old" })).await;
    assert_eq!(op.status, StatusCode::ACCEPTED, "{}", op.body);
    assert_eq!(api.read(&new.secret, &format!("/v1/{}", op.name())).await.status, StatusCode::OK);
    assert!(api.listed(&new.secret).await.contains(&op.name()) && api.listed(&old.secret).await.contains(&op.name()));

    // JWTs, ES256 and RS256: the token's tenant and scopes are what counts.
    let rsa_token = idp.rs256(&claims("jwt-user", json!({})));
    for token in [&valid, &rsa_token] {
        let mine = api.submit(token, "echo", json!({ "by": "jwt" })).await;
        assert_eq!(mine.status, StatusCode::ACCEPTED, "{}", mine.body);
        assert_eq!(api.read(token, &format!("/v1/{}", mine.name())).await.status, StatusCode::OK);
        assert_eq!(api.read(token, &format!("/v1/{}", op.name())).await.status, StatusCode::OK, "same tenant as the key");
        assert_eq!(api.submit(token, "sleep", json!({ "ms": 1 })).await.status, StatusCode::FORBIDDEN, "scope submit:echo only");
    }

    // The rate limit: a burst of two, then 429 with Retry-After, then room again.
    let statuses = [api.read(&slow.secret, "/v1/operations").await, api.read(&slow.secret, "/v1/operations").await];
    assert_eq!(statuses.map(|a| a.status), [StatusCode::OK; 2]);
    let limited = api.read(&slow.secret, "/v1/operations").await;
    assert_eq!((limited.status, limited.code()), (StatusCode::TOO_MANY_REQUESTS, "rate_limited"), "{}", limited.body);
    let retry_after: u64 = limited.headers[header::RETRY_AFTER].to_str().unwrap().parse().expect("Retry-After in whole seconds");
    assert!(retry_after >= 1);
    assert_eq!(api.read(&other.secret, "/v1/operations").await.status, StatusCode::OK, "other principals have their own bucket");
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(api.read(&slow.secret, "/v1/operations").await.status, StatusCode::OK, "recovered after Retry-After");

    // Revocation: drop the old key's entry, SIGHUP; it goes from 200 to 401, the rest work.
    assert_eq!(api.read(&old.secret, "/v1/operations").await.status, StatusCode::OK);
    gw.reload(&auth_config(&[&new, &other, &slow], true));
    let until = Instant::now() + Duration::from_secs(10);
    while api.read(&old.secret, "/v1/operations").await.status != StatusCode::UNAUTHORIZED {
        assert!(Instant::now() < until, "the revoked key still works after SIGHUP: {}", gw.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for key in [&new, &other] {
        assert_eq!(api.read(&key.secret, "/v1/operations").await.status, StatusCode::OK, "{} still works", key.principal);
    }
    assert_eq!(api.read(&valid, "/v1/operations").await.status, StatusCode::OK, "tokens still verify after the reload");
    assert!(gw.child.try_wait().unwrap().is_none(), "SIGHUP did not stop the gateway");

    let mut secrets = vec![old.secret.as_str(), new.secret.as_str(), other.secret.as_str(), slow.secret.as_str(), &valid, &rsa_token];
    secrets.extend(bad_tokens.iter().map(|(token, _)| token.as_str()));
    gw.assert_logged_no(&secrets);
}

#[tokio::test(flavor = "multi_thread")]
async fn scopes_and_tenants_hold_on_every_route() {
    let t = common::fresh_topics("auth-tenants", 2).await;
    let worker = common::WorkerProc::spawn(&t, "auth-w1", &[]);
    let red = ApiKey::new("red-app", "red", &["submit:echo", "submit:sleep", "read", "cancel"]);
    let red_submitter = ApiKey::new("red-batch", "red", &["submit:*", "read"]);
    let red_reader = ApiKey::new("red-viewer", "red", &["read"]);
    let blue = ApiKey::new("blue-app", "blue", &["submit:echo", "read", "cancel"]);
    let scraper = ApiKey::new("prometheus", "ops", &["metrics"]);
    let config = auth_config(&[&red, &red_submitter, &red_reader, &blue, &scraper], false);
    let mut gw = AuthGateway::start(&t, "gw", &config, None);
    let api = Api { http: reqwest::Client::new(), base: gw.base.clone() };
    gw.ready(&api.http).await;
    assert!(worker.wait_for_log("partitions assigned", Duration::from_secs(60)), "{}", worker.log_text());
    let published = |t: &common::TestTopics| [&t.topics.commands, &t.topics.status, &t.topics.control].map(|topic| records(t, topic));

    // 403 for every scope a principal lacks, and nothing published.
    let before = published(&t);
    let forbidden = [
        api.post("/v1/commands").bearer_auth(&red.secret).json(&json!({ "type": "fail", "payload": { "code": "x", "message": "y" } })),
        api.post("/v1/commands").bearer_auth(&red_reader.secret).json(&json!({ "type": "echo" })),
        api.get("/metrics").bearer_auth(&red_reader.secret),
        api.post("/v1/batches").bearer_auth(&red.secret).json(&json!({ "commands": [{ "type": "echo" }, { "type": "fail" }, { "type": "echo" }] })),
    ];
    for (i, req) in forbidden.into_iter().enumerate() {
        let a = answer(req).await;
        assert_eq!((a.status, a.code()), (StatusCode::FORBIDDEN, "permission_denied"), "case {i}: {}", a.body);
    }
    assert_eq!(published(&t), before, "no 403 published anything");
    assert_eq!(answer(api.get("/metrics").bearer_auth(&scraper.secret)).await.status, StatusCode::OK);

    // Tenant red's operations: one that completes, one that runs until cancelled.
    let shared_key = "order-7";
    let submit_keyed = |who: &str| answer(api.post("/v1/commands").bearer_auth(who).header("Idempotency-Key", shared_key).json(&json!({ "type": "echo", "payload": { "n": 7 } })));
    let done = submit_keyed(&red.secret).await;
    assert_eq!(done.status, StatusCode::ACCEPTED, "{}", done.body);
    assert_eq!(api.wait_done(&red.secret, &done.name()).await["response"], json!({ "echo": { "n": 7 } }));
    let running = api.submit(&red.secret, "sleep", json!({ "ms": 30000, "steps": 30 })).await;
    assert_eq!(running.status, StatusCode::ACCEPTED, "{}", running.body);

    // Cancels without the cancel scope: 403 (however the colon is spelt), nothing sent.
    let before = records(&t, &t.topics.control);
    for (who, path) in [
        (&red_reader, format!("/v1/{}:cancel", running.name())),
        (&red_submitter, format!("/v1/{}:cancel", running.name())),
        (&red_submitter, format!("/v1/{}%3Acancel", running.name())),
    ] {
        let a = answer(api.post(&path).bearer_auth(&who.secret)).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{} POST {path}: {}", who.principal, a.body);
    }

    // Another tenant: 404 to get, to long-poll (at once) and to cancel; not in its list.
    for name in [done.name(), running.name()] {
        let seen = api.read(&blue.secret, &format!("/v1/{name}")).await;
        assert_eq!((seen.status, seen.code()), (StatusCode::NOT_FOUND, "not_found"), "{}", seen.body);
        let started = Instant::now();
        let polled = api.read(&blue.secret, &format!("/v1/{name}?wait=2s")).await;
        assert_eq!(polled.status, StatusCode::NOT_FOUND, "{}", polled.body);
        assert!(started.elapsed() < Duration::from_millis(1500), "the long poll was held {:?}", started.elapsed());
        let cancelled = api.cancel(&blue.secret, &name).await;
        assert_eq!((cancelled.status, cancelled.code()), (StatusCode::NOT_FOUND, "not_found"), "{}", cancelled.body);
    }
    assert_eq!(records(&t, &t.topics.control), before, "no cancel was sent for a 403 or a cross-tenant 404");
    let unknown = api.read(&blue.secret, &format!("/v1/operations/{}", courier::envelope::new_id())).await;
    let foreign = api.read(&blue.secret, &format!("/v1/{}", done.name())).await;
    assert_eq!((unknown.status, unknown.code()), (foreign.status, foreign.code()), "another tenant's operation looks unknown");
    assert_eq!(keys_of(&unknown.body), keys_of(&foreign.body));
    let (red_list, blue_list) = (api.listed(&red.secret).await, api.listed(&blue.secret).await);
    assert!(red_list.contains(&done.name()) && red_list.contains(&running.name()), "{red_list:?}");
    assert!(!blue_list.contains(&done.name()) && !blue_list.contains(&running.name()), "{blue_list:?}");

    // The owner cancels: exactly one cancel record, and the operation ends CANCELLED.
    assert_eq!(api.cancel(&red.secret, &running.name()).await.status, StatusCode::OK);
    assert_eq!(records(&t, &t.topics.control), before + 1);
    assert_eq!(api.wait_done(&red.secret, &running.name()).await["error"]["code"], 1);

    // Idempotency keys are per tenant: blue's same key and body is a new operation.
    let again = submit_keyed(&red.secret).await;
    assert_eq!((again.status, again.name()), (StatusCode::ACCEPTED, done.name()));
    assert!(again.headers.contains_key("idempotent-replayed"), "red's own key replays");
    let blues = submit_keyed(&blue.secret).await;
    assert_eq!(blues.status, StatusCode::ACCEPTED, "{}", blues.body);
    assert!(!blues.headers.contains_key("idempotent-replayed"), "blue's key is blue's own");
    assert_ne!(blues.name(), done.name());
    assert_eq!(api.wait_done(&blue.secret, &blues.name()).await["response"], json!({ "echo": { "n": 7 } }));
    assert_eq!(api.listed(&blue.secret).await, vec![blues.name()]);

    gw.assert_logged_no(&[&red.secret, &red_submitter.secret, &red_reader.secret, &blue.secret, &scraper.secret]);
}

/// The member names of an error body, all the way down.
fn keys_of(body: &Value) -> Vec<String> {
    match body {
        Value::Object(m) => m.iter().flat_map(|(k, v)| std::iter::once(k.clone()).chain(keys_of(v).into_iter().map(move |s| format!("{k}.{s}")))).collect(),
        _ => Vec::new(),
    }
}

/// Runs `cmd` to its exit (within 20 s): (success, stdout, stderr).
fn run_to_exit(cmd: &mut Proc, stdin: &str) -> (bool, String, String) {
    use std::io::Write as _;
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn courier");
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let until = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            panic!("courier did not exit within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_gateway_refuses_to_start_open_or_with_a_bad_auth_block() {
    let gateway = |extra: &[&str]| {
        let mut cmd = courier();
        cmd.args(["gateway", "--bootstrap", "127.0.0.1:9", "--prefix", "never-used", "--listen", "127.0.0.1:0"]).args(extra);
        run_to_exit(&mut cmd, "")
    };
    let (ok, _, stderr) = gateway(&[]);
    assert!(!ok, "started open without being told to");
    assert!(stderr.contains("`auth:` block") && stderr.contains("--insecure-no-auth"), "{stderr}");

    let dir = std::env::temp_dir().join(format!("courier-auth-config-{}", courier::envelope::new_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "auth:\n  api_keys:\n    - { principal: billing, sha256: not-hex, scopes: [read] }\n").unwrap();
    let (ok, _, stderr) = gateway(&["--config", bad.to_str().unwrap()]);
    assert!(!ok && stderr.contains("auth.api_keys[0].sha256"), "{stderr}");

    let key = ApiKey::new("billing", "red", &["read"]);
    let good = dir.join("good.yaml");
    std::fs::write(&good, auth_config(&[&key], false).to_string()).unwrap();
    let (ok, _, stderr) = gateway(&["--config", good.to_str().unwrap(), "--insecure-no-auth"]);
    assert!(!ok && stderr.contains("contradict"), "{stderr}");
    assert!(!stderr.contains(&key.secret));

    // `courier auth hash-key` prints what an entry stores.
    let (ok, stdout, stderr) = run_to_exit(courier().args(["auth", "hash-key"]), &format!("{}\n", key.secret));
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), sha256_hex(&key.secret));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A CA, server and client certificates made with the `openssl` command, in `dir`.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(dir: PathBuf) -> Pki {
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Pki { dir };
        pki.openssl(&["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=courier test CA"]);
        pki.openssl(&["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "foreign.key", "-out", "foreign.pem", "-days", "2", "-subj", "/CN=foreign CA"]);
        pki.issue("server", "ca", 2);
        pki.issue("client", "ca", 4);
        pki.issue("stranger", "foreign", 5);
        pki
    }

    fn openssl(&self, args: &[&str]) {
        let out = Proc::new("openssl").args(args).current_dir(&self.dir).output().expect("the openssl command");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// `{name}.pem` and `{name}.key`, for localhost, signed by `ca`, with `serial`.
    fn issue(&self, name: &str, ca: &str, serial: u32) {
        let (key, csr, pem) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
        std::fs::write(self.dir.join("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
        self.openssl(&["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", &key, "-out", &csr, "-subj", &format!("/CN={name}")]);
        let (ca_pem, ca_key, serial) = (format!("{ca}.pem"), format!("{ca}.key"), serial.to_string());
        self.openssl(&["x509", "-req", "-in", &csr, "-CA", &ca_pem, "-CAkey", &ca_key, "-set_serial", &serial, "-days", "2", "-out", &pem, "-extfile", "san.ext"]);
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    /// An HTTPS client trusting the test CA (no connection reuse), presenting `identity`'s certificate.
    fn client(&self, identity: Option<&str>) -> reqwest::Client {
        let ca = std::fs::read(self.dir.join("ca.pem")).unwrap();
        let mut b = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .pool_max_idle_per_host(0)
            .tls_info(true)
            .timeout(Duration::from_secs(10));
        if let Some(name) = identity {
            let (cert, key) = (std::fs::read(self.dir.join(format!("{name}.pem"))).unwrap(), std::fs::read(self.dir.join(format!("{name}.key"))).unwrap());
            b = b.identity(reqwest::Identity::from_pkcs8_pem(&cert, &key).unwrap());
        }
        b.build().unwrap()
    }
}

/// The serial of the certificate `resp` came over.
fn served_serial(resp: &reqwest::Response) -> u32 {
    let info = resp.extensions().get::<reqwest::tls::TlsInfo>().expect("TLS info");
    let cert = openssl::x509::X509::from_der(info.peer_certificate().expect("a server certificate")).unwrap();
    cert.serial_number().to_bn().unwrap().to_dec_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_speaks_tls_wants_client_certificates_and_reloads_on_sighup() {
    let t = common::fresh_topics("authtls", 2).await;
    let key = ApiKey::new("tls-svc", "alpha", &["read"]);
    let pki = Pki::new(std::env::temp_dir().join("courier-test-logs").join(format!("{}-pki", t.kafka.prefix)));
    let tls = ["--tls-cert", &pki.path("server.pem"), "--tls-key", &pki.path("server.key"), "--tls-client-ca", &pki.path("ca.pem")];
    let mut gw = AuthGateway::start_with(&t, "tls", &auth_config(&[&key], false), None, &tls);
    let trusted = pki.client(Some("client"));
    gw.ready(&trusted).await;

    let listed = trusted.get(format!("{}/v1/operations", gw.base)).bearer_auth(&key.secret).send().await.unwrap();
    assert_eq!(listed.status(), StatusCode::OK, "client certificate and key: served");
    assert_eq!(served_serial(&listed), 2);
    let no_key = trusted.get(format!("{}/v1/operations", gw.base)).send().await.unwrap();
    assert_eq!(no_key.status(), StatusCode::UNAUTHORIZED, "a client certificate does not replace the bearer credential");
    assert!(pki.client(None).get(format!("{}/healthz", gw.base)).send().await.is_err(), "no client certificate: no handshake");
    assert!(pki.client(Some("stranger")).get(format!("{}/healthz", gw.base)).send().await.is_err(), "another CA's client certificate: no handshake");
    let plain = gw.base.replace("https://localhost", "http://127.0.0.1");
    assert!(reqwest::Client::new().get(format!("{plain}/healthz")).timeout(Duration::from_secs(10)).send().await.is_err(), "plain HTTP gets no answer");

    // Rotation: new files in place, then SIGHUP; new connections get the new certificate.
    pki.issue("server", "ca", 3);
    gw.reload(&auth_config(&[&key], false));
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let resp = trusted.get(format!("{}/healthz", gw.base)).send().await.expect("the listener survives the reload");
        if served_serial(&resp) == 3 {
            break;
        }
        assert!(Instant::now() < until, "the certificate was not reloaded: {}", gw.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gw.child.try_wait().unwrap().is_none(), "the gateway runs on");
    gw.assert_logged_no(&[&key.secret]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workers_metrics_need_the_metrics_scope_when_its_config_has_an_auth_block() {
    let t = common::fresh_topics("authmetrics", 1).await;
    let (scraper, reader) = (ApiKey::new("prometheus", "ops", &["metrics"]), ApiKey::new("reader", "ops", &["read"]));
    let dir = std::env::temp_dir().join("courier-test-logs").join(format!("{}-worker", t.kafka.prefix));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("courier.yaml");
    std::fs::write(&config, auth_config(&[&scraper, &reader], false).to_string()).unwrap();
    let port = common::free_port();
    let worker = common::WorkerProc::spawn(&t, "metrics", &["--metrics-addr", &format!("127.0.0.1:{port}"), "--config", &config.display().to_string()]);
    assert!(worker.wait_for_log("metrics endpoint listening", Duration::from_secs(60)), "{}", worker.log_text());
    let api = Api { http: reqwest::Client::new(), base: format!("http://127.0.0.1:{port}") };
    assert_eq!(answer(api.get("/healthz")).await.status, StatusCode::OK);
    let anonymous = answer(api.get("/metrics")).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{}", anonymous.body);
    assert_eq!(api.read(&reader.secret, "/metrics").await.status, StatusCode::FORBIDDEN);
    let scraped = api.read(&scraper.secret, "/metrics").await;
    assert_eq!(scraped.status, StatusCode::OK);
    assert!(scraped.body.as_str().unwrap_or_default().contains("courier_"), "Prometheus text: {}", scraped.body);
    assert!(!worker.log_text().contains(&scraper.secret));
}
