//! Command types declared in a file (`--config courier.yaml`), not written in Rust:
//! what lets a team run Courier around handlers in any language.
//!
//! One file, read by `courier worker`, `gateway`, `asyncapi`, `topics create` and
//! `dev`, declares each command type: its optional input and output JSON Schemas
//! (a file, relative to the config file's folder, or inline), its HTTP push handler
//! (`router::push`), its own retry tiers and default deadline:
//!
//! ```yaml
//! commands:
//!   resize-image:
//!     description: Resizes an image     # optional, shown in the contract
//!     input_schema: schemas/resize.json
//!     output_schema: { type: object }
//!     http:
//!       url: http://127.0.0.1:9000/resize
//!       timeout: 30s                     # per attempt (default 30s)
//!       concurrency: 64                  # in flight for this type, per worker (default 64)
//!       headers: { x-api-key: "${RESIZE_KEY}" }
//!       max_response_bytes: 1048576      # default 1 MiB
//!       profile: courier                 # or ouro, runpod: a platform's request shape (router::push)
//!     retry: { tiers: [1s, 10s, 1m], max_attempts: 5 }
//!     deadline: 10m
//!     heartbeat: 5m                      # lease of a handed-off (202) command
//!     cancel_url: http://127.0.0.1:9000/cancel   # POSTed when a handed-off command is cancelled
//!     ordering: key                      # or none: no key order for this type
//! callbacks:                             # deferred completion: handlers answer 202 and call back
//!   public_url: http://gateway.internal:8080
//!   signing_keys: ["${COURIER_CALLBACK_KEY}"]
//!   token_ttl: 7d                        # a token's life when the command has no deadline
//! ```
//!
//! `${VAR}` in any value expands from the environment (`$${` is a literal `${`); a
//! variable that is not set is an error naming it. Everything is checked when the
//! file is loaded, so a bad file stops the process at start with the place and the
//! reason (unknown keys, unreadable or invalid schemas, bad URLs, bad durations),
//! and no error ever shows an expanded value (it may be a secret).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap as HttpHeaders, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::Value;

use crate::duration::parse_duration;
use crate::retry::RetryPolicy;
use crate::router::push::{push_client, push_route, CancelHook, PushProfile, PushTarget, Schemas};
use crate::router::Router;

/// The per-attempt timeout of a push handler that declares none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests in flight per type and worker when a type declares no `concurrency`.
pub const DEFAULT_CONCURRENCY: usize = 64;
/// The largest handler answer read when a type declares no `max_response_bytes`.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Why a config file was refused: always with the file and, for a value, where in it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {at}: {message}")]
    Invalid { path: PathBuf, at: String, message: String },
}

/// A loaded, checked config file.
#[derive(Debug, Clone)]
pub struct Declared {
    /// The file it came from.
    pub path: PathBuf,
    /// The declared command types, by name.
    pub commands: BTreeMap<String, DeclaredType>,
    /// Where handlers reach a gateway for deferred completion, and its signing keys.
    pub callbacks: Option<Callbacks>,
    /// Who may call the HTTP surfaces (`auth:`, see [`crate::auth`]).
    pub auth: Option<Arc<crate::auth::Auth>>,
}

/// One declared command type, checked.
#[derive(Debug, Clone)]
pub struct DeclaredType {
    pub description: String,
    /// The payload's JSON Schema (none: any JSON).
    pub input_schema: Option<Value>,
    /// The result's JSON Schema (none: any JSON).
    pub output_schema: Option<Value>,
    pub target: PushTarget,
    /// This type's retry tiers and attempts (none: the worker's `--retry-tiers`).
    pub retry: Option<RetryPolicy>,
    /// Deadline of a command sent without one, from when it was sent.
    pub deadline: Option<Duration>,
    /// The lease of a command its handler took over (`202`).
    pub heartbeat: Option<Duration>,
    /// Where the cancel of a handed-off command is POSTed.
    pub cancel_url: Option<url::Url>,
    /// `ordering: none`: no key order for this type.
    pub unordered: bool,
    /// The two schemas, compiled once at load (which is where a bad one is refused).
    compiled: Schemas,
}

/// The `callbacks` block: read and checked now, for deferred completion.
#[derive(Clone)]
pub struct Callbacks {
    pub public_url: url::Url,
    /// The first signs, every one verifies (rotation). Never printed.
    pub signing_keys: Vec<String>,
    /// How long a token lasts when its command has no deadline.
    pub token_ttl: Duration,
}

/// A token's life when the command has no deadline and the file names none.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

impl Callbacks {
    /// The keys that verify a callback token.
    pub fn verifying_keys(&self) -> Vec<crate::capability::SigningKey> {
        self.signing_keys.iter().map(|k| crate::capability::SigningKey::new(k.as_bytes())).collect()
    }

    /// What a push route signs its callback headers with.
    pub fn signer(&self) -> Option<crate::router::push::CallbackSigner> {
        let key = self.signing_keys.first()?;
        Some(crate::router::push::CallbackSigner { public_url: self.public_url.clone(), key: crate::capability::SigningKey::new(key.as_bytes()), token_ttl: self.token_ttl })
    }
}

impl std::fmt::Debug for Callbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callbacks")
            .field("public_url", &self.public_url.as_str())
            .field("signing_keys", &self.signing_keys.len())
            .field("token_ttl", &self.token_ttl)
            .finish()
    }
}

// The file as written. Strings stay unexpanded here, so that a parse error quotes
// the file, never an environment value.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    commands: BTreeMap<String, CommandSpec>,
    callbacks: Option<CallbacksSpec>,
    auth: Option<crate::auth::AuthSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandSpec {
    description: Option<String>,
    input_schema: Option<SchemaSpec>,
    output_schema: Option<SchemaSpec>,
    http: HttpSpec,
    retry: Option<RetrySpec>,
    deadline: Option<String>,
    heartbeat: Option<String>,
    cancel_url: Option<String>,
    ordering: Option<Ordering>,
}

#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Ordering {
    Key,
    None,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SchemaSpec {
    File(String),
    Inline(serde_yaml_ng::Mapping),
    Bool(bool),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpSpec {
    url: String,
    timeout: Option<String>,
    concurrency: Option<Count>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    max_response_bytes: Option<Count>,
    profile: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetrySpec {
    tiers: Option<Vec<String>>,
    max_attempts: Option<Count>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallbacksSpec {
    public_url: String,
    #[serde(default)]
    signing_keys: Vec<String>,
    token_ttl: Option<String>,
}

/// A number written as one, or as a string (so that `${VAR}` can give it).
#[derive(Deserialize)]
#[serde(untagged)]
enum Count {
    N(u64),
    Text(String),
}

impl Declared {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Declared, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Declared::parse(path, &text, &|name| std::env::var(name).ok())
    }

    /// Checks `text` as the file at `path` (whose folder relative schema paths are
    /// read from), expanding `${VAR}` with `env`.
    pub fn parse(path: &Path, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Declared, ConfigError> {
        let spec: FileSpec = serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        let cx = Checking { path, folder: path.parent().unwrap_or(Path::new(".")), env };
        let mut commands = BTreeMap::new();
        for (name, command) in spec.commands {
            let at = format!("commands.{name}");
            check_type_name(&name).map_err(|m| cx.invalid(&at, m))?;
            commands.insert(name, cx.command(&at, command)?);
        }
        let callbacks = spec.callbacks.map(|c| cx.callbacks(c)).transpose()?;
        let auth = spec
            .auth
            .map(|a| crate::auth::Auth::from_spec(a, cx.folder).map(Arc::new).map_err(|(at, message)| cx.invalid(&at, message)))
            .transpose()?;
        Ok(Declared { path: path.to_path_buf(), commands, callbacks, auth })
    }

    /// `base` with a push route for every declared type (a declared type replaces a
    /// route of the same name). All routes share one HTTP connection pool.
    pub fn router(&self, base: Router) -> Result<Router, ConfigError> {
        let client = push_client().map_err(|e| ConfigError::Invalid { path: self.path.clone(), at: "http".into(), message: format!("HTTP client: {e}") })?;
        let mut router = base;
        for (name, t) in &self.commands {
            let contract = |schema: &Option<Value>| schemars::Schema::try_from(schema.clone().unwrap_or(Value::Bool(true))).unwrap_or_else(|_| schemars::Schema::from(true));
            let mut target = t.target.clone();
            target.callbacks = self.callbacks.as_ref().and_then(Callbacks::signer);
            let mut route = push_route(target, client.clone(), t.compiled.clone(), contract(&t.input_schema), contract(&t.output_schema), t.description.clone());
            route.retry = t.retry.clone();
            route.default_deadline = t.deadline;
            route.heartbeat = t.heartbeat;
            route.cancel = t.cancel_url.clone().map(|url| CancelHook { url, headers: t.target.headers.clone() });
            route.unordered = t.unordered;
            route.hands_off = self.callbacks.is_some();
            route.profile = t.target.profile;
            router = router.route_built(name.clone(), route);
        }
        Ok(router)
    }

    /// Every retry tier the declared types use, for `topics create`.
    pub fn retry_tiers(&self) -> Vec<Duration> {
        self.commands.values().filter_map(|t| t.retry.as_ref()).flat_map(|p| p.tiers.iter().copied()).collect()
    }
}

/// Command type names end up in headers, metric labels and URLs.
fn check_type_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty() && name.len() <= crate::envelope::bounds::MAX_NAME_ECHO && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err("a command type name is 1 to 256 of the characters A-Z a-z 0-9 - _ . :".into())
    }
}

struct Checking<'a> {
    path: &'a Path,
    folder: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Checking<'_> {
    fn invalid(&self, at: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid { path: self.path.to_path_buf(), at: at.to_string(), message: message.into() }
    }

    /// `text` with `${VAR}` expanded.
    fn expand(&self, at: &str, text: &str) -> Result<String, ConfigError> {
        expand_env(text, self.env).map_err(|m| self.invalid(at, m))
    }

    /// An expanded duration. The message quotes the file's text only when nothing
    /// was expanded into it.
    fn duration(&self, at: &str, text: &str) -> Result<Duration, ConfigError> {
        let expanded = self.expand(at, text)?;
        parse_duration(&expanded).map_err(|m| self.invalid(at, if expanded == text { m } else { "not a duration like 500ms, 30s, 5m, 2h".into() }))
    }

    fn count(&self, at: &str, count: Count, min: u64) -> Result<u64, ConfigError> {
        let n = match count {
            Count::N(n) => n,
            Count::Text(text) => self.expand(at, &text)?.trim().parse().map_err(|_| self.invalid(at, "not a whole number"))?,
        };
        if n < min {
            return Err(self.invalid(at, format!("must be at least {min}")));
        }
        Ok(n)
    }

    fn url(&self, at: &str, text: &str) -> Result<url::Url, ConfigError> {
        let expanded = self.expand(at, text)?;
        let url = url::Url::parse(&expanded).map_err(|e| self.invalid(at, format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(self.invalid(at, format!("the scheme must be http or https, not {:?}", url.scheme())));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(self.invalid(at, "the URL has no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(self.invalid(at, "credentials in the URL would be logged with it: put them in `headers`"));
        }
        Ok(url)
    }

    fn command(&self, at: &str, spec: CommandSpec) -> Result<DeclaredType, ConfigError> {
        let description = spec.description.map(|d| self.expand(&format!("{at}.description"), &d)).transpose()?.unwrap_or_default();
        let (input_schema, input) = spec.input_schema.map(|s| self.schema(&format!("{at}.input_schema"), s)).transpose()?.unzip();
        let (output_schema, output) = spec.output_schema.map(|s| self.schema(&format!("{at}.output_schema"), s)).transpose()?.unzip();
        let target = self.http(&format!("{at}.http"), spec.http)?;
        let retry = spec.retry.map(|r| self.retry(&format!("{at}.retry"), r)).transpose()?;
        let deadline = spec.deadline.map(|d| self.duration(&format!("{at}.deadline"), &d)).transpose()?;
        if deadline.is_some_and(|d| d.is_zero()) {
            return Err(self.invalid(&format!("{at}.deadline"), "must be longer than 0"));
        }
        let heartbeat = spec.heartbeat.map(|d| self.duration(&format!("{at}.heartbeat"), &d)).transpose()?;
        if heartbeat.is_some_and(|d| d < Duration::from_secs(1)) {
            return Err(self.invalid(&format!("{at}.heartbeat"), "a lease is at least 1s"));
        }
        let cancel_url = spec.cancel_url.map(|u| self.url(&format!("{at}.cancel_url"), &u)).transpose()?;
        let unordered = spec.ordering == Some(Ordering::None);
        Ok(DeclaredType { description, input_schema, output_schema, target, retry, deadline, heartbeat, cancel_url, unordered, compiled: Schemas { input, output } })
    }

    fn http(&self, at: &str, spec: HttpSpec) -> Result<PushTarget, ConfigError> {
        let url = self.url(&format!("{at}.url"), &spec.url)?;
        let timeout = spec.timeout.map(|t| self.duration(&format!("{at}.timeout"), &t)).transpose()?.unwrap_or(DEFAULT_TIMEOUT);
        if timeout.is_zero() {
            return Err(self.invalid(&format!("{at}.timeout"), "must be longer than 0"));
        }
        let concurrency = spec.concurrency.map(|c| self.count(&format!("{at}.concurrency"), c, 1)).transpose()?.map_or(DEFAULT_CONCURRENCY, |n| n as usize);
        let max_response_bytes =
            spec.max_response_bytes.map(|c| self.count(&format!("{at}.max_response_bytes"), c, 1)).transpose()?.map_or(DEFAULT_MAX_RESPONSE_BYTES, |n| n as usize);
        let mut headers = HttpHeaders::new();
        for (name, value) in spec.headers {
            let here = format!("{at}.headers.{name}");
            let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| self.invalid(&here, "not a valid header name"))?;
            if header.as_str().starts_with("ce-") || header.as_str().starts_with("courier-") || header == reqwest::header::CONTENT_TYPE {
                return Err(self.invalid(&here, "ce-*, courier-* and content-type are set by the worker"));
            }
            let mut value = HeaderValue::from_str(&self.expand(&here, &value)?).map_err(|_| self.invalid(&here, "not a valid header value"))?;
            value.set_sensitive(true);
            headers.insert(header, value);
        }
        let profile = match spec.profile {
            None => PushProfile::Courier,
            Some(text) => {
                let name = self.expand(&format!("{at}.profile"), &text)?;
                let shown = if name == text { format!("{name:?} is") } else { "the value is".into() };
                PushProfile::named(&name).ok_or_else(|| self.invalid(&format!("{at}.profile"), format!("{shown} not a profile: courier, ouro or runpod")))?
            }
        };
        Ok(PushTarget { url, timeout, concurrency, headers, max_response_bytes, callbacks: None, profile })
    }

    fn retry(&self, at: &str, spec: RetrySpec) -> Result<RetryPolicy, ConfigError> {
        let default = RetryPolicy::default();
        let tiers = match spec.tiers {
            Some(tiers) => tiers.iter().enumerate().map(|(i, t)| self.duration(&format!("{at}.tiers[{i}]"), t)).collect::<Result<Vec<_>, _>>()?,
            None => default.tiers,
        };
        if tiers.is_empty() {
            return Err(self.invalid(&format!("{at}.tiers"), "needs at least one delay"));
        }
        if let Some(i) = tiers.iter().position(|t| t.as_millis() == 0) {
            return Err(self.invalid(&format!("{at}.tiers[{i}]"), "a delay tier is at least 1ms"));
        }
        let max_attempts = spec.max_attempts.map(|c| self.count(&format!("{at}.max_attempts"), c, 1)).transpose()?.map_or(default.max_attempts, |n| n.min(u32::MAX as u64) as u32);
        Ok(RetryPolicy { tiers, max_attempts })
    }

    /// A schema, inline or read from a JSON or YAML file, and compiled.
    fn schema(&self, at: &str, spec: SchemaSpec) -> Result<(Value, Arc<jsonschema::Validator>), ConfigError> {
        let value = match spec {
            SchemaSpec::Bool(b) => Value::Bool(b),
            SchemaSpec::Inline(mapping) => serde_json::to_value(expand_tree(serde_yaml_ng::Value::Mapping(mapping), self.env).map_err(|m| self.invalid(at, m))?)
                .map_err(|e| self.invalid(at, format!("not a JSON value: {e}")))?,
            SchemaSpec::File(file) => {
                let file = self.folder.join(self.expand(at, &file)?);
                let text = std::fs::read_to_string(&file).map_err(|e| self.invalid(at, format!("cannot read {}: {e}", file.display())))?;
                serde_yaml_ng::from_str::<Value>(&text).map_err(|e| self.invalid(at, format!("{} is not JSON or YAML: {e}", file.display())))?
            }
        };
        if !(value.is_object() || value.is_boolean()) {
            return Err(self.invalid(at, "a JSON Schema is an object or true/false"));
        }
        let compiled = jsonschema::validator_for(&value).map_err(|e| self.invalid(at, format!("not a valid JSON Schema: {e}")))?;
        Ok((value, Arc::new(compiled)))
    }

    fn callbacks(&self, spec: CallbacksSpec) -> Result<Callbacks, ConfigError> {
        let public_url = self.url("callbacks.public_url", &spec.public_url)?;
        if spec.signing_keys.is_empty() {
            return Err(self.invalid("callbacks.signing_keys", "give at least one key (the first signs, all verify)"));
        }
        let mut signing_keys = Vec::new();
        for (i, key) in spec.signing_keys.iter().enumerate() {
            let at = format!("callbacks.signing_keys[{i}]");
            let key = self.expand(&at, key)?;
            if key.len() < 16 {
                return Err(self.invalid(&at, "a signing key is at least 16 bytes"));
            }
            signing_keys.push(key);
        }
        let token_ttl = spec.token_ttl.map(|t| self.duration("callbacks.token_ttl", &t)).transpose()?.unwrap_or(DEFAULT_TOKEN_TTL);
        if token_ttl < Duration::from_secs(60) {
            return Err(self.invalid("callbacks.token_ttl", "a token lives at least 1m"));
        }
        Ok(Callbacks { public_url, signing_keys, token_ttl })
    }
}

/// `${VAR}` replaced by `env(VAR)`; `$${` stays a literal `${`. The error names the
/// variable, never a value.
pub fn expand_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail.find('}').ok_or("an unclosed ${ (write $${ for a literal one)")?;
            let name = &tail[..end];
            let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(format!("${{{}}} is not an environment variable name", crate::envelope::bounds::truncate(name, 64)));
            }
            out.push_str(&env(name).ok_or_else(|| format!("environment variable {name} is not set"))?);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn expand_tree(value: serde_yaml_ng::Value, env: &dyn Fn(&str) -> Option<String>) -> Result<serde_yaml_ng::Value, String> {
    use serde_yaml_ng::Value as Y;
    Ok(match value {
        Y::String(s) => Y::String(expand_env(&s, env)?),
        Y::Sequence(items) => Y::Sequence(items.into_iter().map(|v| expand_tree(v, env)).collect::<Result<_, _>>()?),
        Y::Mapping(map) => Y::Mapping(map.into_iter().map(|(k, v)| Ok((k, expand_tree(v, env)?))).collect::<Result<_, String>>()?),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("s3cret-value".into()),
            "PORT" => Some("9000".into()),
            "N" => Some("8".into()),
            "LONG" => Some("a-callback-signing-key-of-some-length".into()),
            _ => None,
        }
    }

    fn parse(text: &str) -> Result<Declared, ConfigError> {
        Declared::parse(Path::new("/nowhere/courier.yaml"), text, &env)
    }

    fn refusal(text: &str) -> String {
        let e = parse(text).expect_err("should be refused").to_string();
        assert!(!e.contains("s3cret-value"), "an expanded value leaked: {e}");
        e
    }

    const FULL: &str = r#"
commands:
  resize-image:
    description: Resizes
    input_schema: { type: object, required: [w], properties: { w: { type: integer } } }
    output_schema: true
    http:
      url: http://127.0.0.1:${PORT}/resize
      timeout: 2s
      concurrency: "${N}"
      headers: { x-api-key: "${KEY}" }
    retry: { tiers: [1s, 10s], max_attempts: 5 }
    deadline: 10m
callbacks:
  public_url: http://127.0.0.1:8080
  signing_keys: ["${LONG}"]
"#;

    #[test]
    fn a_full_file_loads_with_its_values_expanded() {
        let d = parse(FULL).unwrap();
        let t = &d.commands["resize-image"];
        assert_eq!(t.target.url.as_str(), "http://127.0.0.1:9000/resize");
        assert_eq!((t.target.timeout, t.target.concurrency), (Duration::from_secs(2), 8));
        assert_eq!(t.target.headers["x-api-key"], "s3cret-value");
        assert_eq!(t.retry.as_ref().map(|r| (r.tiers.len(), r.max_attempts)), Some((2, 5)));
        assert_eq!(t.deadline, Some(Duration::from_secs(600)));
        assert_eq!(t.output_schema, Some(Value::Bool(true)));
        assert_eq!(d.retry_tiers(), vec![Duration::from_secs(1), Duration::from_secs(10)]);
        let shown = format!("{d:?}");
        assert!(!shown.contains("s3cret-value") && !shown.contains("a-callback-signing-key"), "{shown}");
        let router = d.router(Router::new()).unwrap();
        let route = router.get("resize-image").unwrap();
        assert!(route.decodes(&serde_json::json!({"w": 3})).is_ok());
        assert!(route.decodes(&serde_json::json!({"w": "3"})).is_err());
        assert_eq!(route.default_deadline, Some(Duration::from_secs(600)));
    }

    #[test]
    fn defaults_fill_what_a_type_leaves_out() {
        let d = parse("commands:\n  echo:\n    http: { url: 'https://handler.internal/echo' }\n").unwrap();
        let t = &d.commands["echo"];
        assert_eq!((t.target.timeout, t.target.concurrency, t.target.max_response_bytes), (DEFAULT_TIMEOUT, DEFAULT_CONCURRENCY, DEFAULT_MAX_RESPONSE_BYTES));
        assert!(t.retry.is_none() && t.deadline.is_none() && t.input_schema.is_none() && d.callbacks.is_none());
        assert_eq!(t.target.profile, PushProfile::Courier);
        let d = parse("commands:\n  gen:\n    http: { url: 'https://h/run', profile: runpod }\n").unwrap();
        assert_eq!(d.commands["gen"].target.profile, PushProfile::Runpod);
        assert_eq!(d.router(Router::new()).unwrap().get("gen").unwrap().profile, PushProfile::Runpod);
    }

    #[test]
    fn bad_files_are_refused_with_where_and_why() {
        let cases: &[(&str, &str)] = &[
            ("commands:\n  a:\n    http: { url: 'http://h/x' }\n    colour: red\n", "unknown field `colour`"),
            ("commands:\n  a:\n    http: { url: 'http://h/x', tiemout: 1s }\n", "unknown field `tiemout`"),
            ("comands: {}\n", "unknown field `comands`"),
            ("commands:\n  a: {}\n", "missing field `http`"),
            ("commands:\n  a:\n    http: { url: 'ftp://h/x' }\n", "commands.a.http.url: the scheme must be http or https"),
            ("commands:\n  a:\n    http: { url: 'not a url' }\n", "commands.a.http.url: not a URL"),
            ("commands:\n  a:\n    http: { url: 'http://u:p@h/x' }\n", "credentials in the URL"),
            ("commands:\n  a:\n    http: { url: 'http://h/x', timeout: soon }\n", "commands.a.http.timeout"),
            ("commands:\n  a:\n    http: { url: 'http://h/x', timeout: 0s }\n", "must be longer than 0"),
            ("commands:\n  a:\n    http: { url: 'http://h/x', concurrency: 0 }\n", "commands.a.http.concurrency: must be at least 1"),
            ("commands:\n  a:\n    http: { url: 'http://h/x', headers: { x-k: '${NOPE}' } }\n", "environment variable NOPE is not set"),
            ("commands:\n  a:\n    http: { url: 'http://h/x', headers: { ce-id: x } }\n", "set by the worker"),
            ("commands:\n  a:\n    http: { url: 'http://h/x', headers: { x-k: \"${KEY}\\n\" } }\n", "not a valid header value"),
            ("commands:\n  a:\n    http: { url: 'http://h/x' }\n    input_schema: missing.json\n", "commands.a.input_schema: cannot read /nowhere/missing.json"),
            ("commands:\n  a:\n    http: { url: 'http://h/x' }\n    input_schema: { type: 12 }\n", "not a valid JSON Schema"),
            ("commands:\n  a:\n    http: { url: 'http://h/x' }\n    retry: { tiers: [] }\n", "commands.a.retry.tiers: needs at least one delay"),
            ("commands:\n  a:\n    http: { url: 'http://h/x' }\n    retry: { tiers: [1s, 2x] }\n", "commands.a.retry.tiers[1]"),
            ("commands:\n  a:\n    http: { url: 'http://h/x' }\n    deadline: '${KEY}'\n", "not a duration"),
            ("commands:\n  'bad name':\n    http: { url: 'http://h/x' }\n", "a command type name"),
            ("callbacks: { public_url: 'http://g' }\n", "give at least one key"),
            ("callbacks: { public_url: 'http://g', signing_keys: [short] }\n", "at least 16 bytes"),
            ("commands: [\n", "/nowhere/courier.yaml"),
            ("commands:\n  a:\n    http: { url: 'http://h/x', profile: celery }\n", "commands.a.http.profile: \"celery\" is not a profile: courier, ouro or runpod"),
            ("commands:\n  a:\n    http: { url: 'http://h/x', profile: '${KEY}' }\n", "commands.a.http.profile: the value is not a profile"),
        ];
        for (text, expected) in cases {
            let e = refusal(text);
            assert!(e.contains(expected), "{text:?}: {e}");
        }
    }

    #[test]
    fn expansion_names_the_variable_and_keeps_literals() {
        assert_eq!(expand_env("a${PORT}b$${PORT}c$d", &env).unwrap(), "a9000b${PORT}c$d");
        assert_eq!(expand_env("${NOPE}", &env).unwrap_err(), "environment variable NOPE is not set");
        assert!(expand_env("${PORT", &env).unwrap_err().contains("unclosed"));
        assert!(expand_env("${a b}", &env).unwrap_err().contains("not an environment variable name"));
    }

    #[test]
    fn a_schema_file_that_is_not_a_schema_object_is_refused() {
        let dir = std::env::temp_dir().join(format!("courier-declared-text-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("notes.txt"), "just some text\n").unwrap();
        std::fs::write(dir.join("list.json"), "[1, 2]").unwrap();
        for file in ["notes.txt", "list.json"] {
            let text = format!("commands:\n  a:\n    http: {{ url: 'http://h/x' }}\n    input_schema: {file}\n");
            let e = Declared::parse(&dir.join("courier.yaml"), &text, &env).unwrap_err().to_string();
            assert!(e.contains("commands.a.input_schema: a JSON Schema is an object or true/false"), "{file}: {e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_schema_file_is_read_relative_to_the_config_file() {
        let dir = std::env::temp_dir().join(format!("courier-declared-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("schemas")).unwrap();
        std::fs::write(dir.join("schemas/in.json"), r#"{"type":"object","required":["n"]}"#).unwrap();
        let text = "commands:\n  a:\n    http: { url: 'http://h/x' }\n    input_schema: schemas/in.json\n";
        let d = Declared::parse(&dir.join("courier.yaml"), text, &env).unwrap();
        assert_eq!(d.commands["a"].input_schema.as_ref().unwrap()["required"][0], "n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
