//! Deciding, before anything is published, whether a request can become a command.
//!
//! Everything a worker would reject later is rejected here instead, as a `400` the
//! caller sees at once: a body that is not JSON, an unknown command type, a payload
//! that does not match the type's JSON Schema (compiled once, at start, from the
//! router's handler types), a deadline that does not parse, a callback URL the
//! [`UrlPolicy`] refuses. A rejected request leaves no trace on any topic.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{ApiError, GatewayError};
use crate::envelope::NewCommand;
use crate::router::{Route, Router};
use crate::urlpolicy::UrlPolicy;

/// Most schema violations reported for one payload.
const MAX_REPORTED_VIOLATIONS: usize = 10;

/// One command as the HTTP API accepts it: the body of `POST /v1/commands`, and each
/// element of a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    #[serde(rename = "type")]
    pub command_type: String,
    #[serde(default)]
    pub payload: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// Relative to arrival, e.g. `30s`, `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_in: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
}

impl CommandRequest {
    /// Parses a request body: `malformed_json` if it is not JSON at all,
    /// `invalid_request` if it is JSON of the wrong shape.
    pub fn from_body(body: &[u8]) -> Result<Self, ApiError> {
        parse_body(body)
    }

    pub fn from_value(value: Value) -> Result<Self, ApiError> {
        serde_json::from_value(value).map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))
    }

    /// Hex SHA-256 of the request in canonical form (sorted keys, no whitespace, absent
    /// and `null` optional fields alike): two bodies that mean the same hash the same.
    pub fn request_hash(&self) -> String {
        let mut text = String::new();
        write_canonical(&serde_json::to_value(self).unwrap_or(Value::Null), &mut text);
        Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Parses a JSON request body: `malformed_json` if it is not JSON at all (or nests
/// deeper than 128 levels, or repeats an object key), `invalid_request` if it is
/// JSON of the wrong shape.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let Strict(value) = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("malformed_json", format!("request body is not acceptable JSON: {e}")))?;
    serde_json::from_value(value).map_err(|e| ApiError::bad_request("invalid_request", e.to_string()))
}

/// A JSON value whose objects repeat no key. Parsers disagree on which of two equal
/// keys wins (serde_json keeps the last, others the first), so with duplicates the
/// body a caller's tooling checked and the command Courier runs could differ.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                let shown: String = key.chars().take(64).collect();
                return Err(serde::de::Error::custom(format!("duplicate key {shown:?}")));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// JSON with object keys sorted at every level, whatever order the map keeps them in.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The command types this gateway accepts, with their compiled payload schemas.
pub struct Checker {
    schemas: HashMap<String, (jsonschema::Validator, Route)>,
    urls: UrlPolicy,
}

impl Checker {
    /// Compiles every route's input schema; a schema that does not compile is a
    /// startup error, not a surprise on the first request.
    pub fn new(router: &Router, urls: UrlPolicy) -> Result<Self, GatewayError> {
        let mut schemas = HashMap::new();
        for (command_type, route) in router.routes() {
            let schema = route.input_schema.as_value();
            let validator = jsonschema::validator_for(schema)
                .map_err(|e| GatewayError::Schema { command_type: command_type.to_string(), reason: e.to_string() })?;
            schemas.insert(command_type.to_string(), (validator, route.clone()));
        }
        if schemas.is_empty() {
            return Err(GatewayError::Config("the router has no command types to serve".into()));
        }
        Ok(Checker { schemas, urls })
    }

    pub fn knows(&self, command_type: &str) -> bool {
        self.schemas.contains_key(command_type)
    }

    /// The command a valid request asks for.
    pub fn check(&self, req: &CommandRequest) -> Result<NewCommand, ApiError> {
        let Some((schema, route)) = self.schemas.get(&req.command_type) else {
            let mut known: Vec<&String> = self.schemas.keys().collect();
            known.sort();
            return Err(ApiError::bad_request("unknown_type", format!("unknown command type {:?}", req.command_type))
                .with_details(json!({ "known_types": known })));
        };
        let violations: Vec<Value> = schema
            .iter_errors(&req.payload)
            .take(MAX_REPORTED_VIOLATIONS)
            .map(|e| json!({ "path": e.instance_path().to_string(), "message": e.to_string() }))
            .collect();
        if let Some(first) = violations.first() {
            let message = format!("payload does not match the schema of {:?}: {}", req.command_type, first["message"].as_str().unwrap_or(""));
            return Err(ApiError::bad_request("invalid_payload", message).with_details(Value::Array(violations)));
        }
        route.decodes(&req.payload).map_err(|e| {
            ApiError::bad_request("invalid_payload", format!("payload does not decode as the input of {:?}: {e}", req.command_type))
        })?;
        let mut cmd = NewCommand::new(req.command_type.clone(), req.payload.clone());
        if let Some(key) = &req.key {
            if key.is_empty() {
                return Err(ApiError::bad_request("invalid_request", "key must not be empty"));
            }
            cmd = cmd.key(key.clone());
        }
        cmd.deadline = deadline(req)?;
        if cmd.deadline.is_none() {
            // The type's default, from now: the operation shows the deadline the worker keeps.
            cmd.deadline = route.default_deadline.and_then(|d| deadline_after(chrono::Utc::now(), d));
        }
        if let Some(raw) = &req.callback_url {
            // The canonical serialisation is stored, never the text as sent: that is
            // the form the policy judged, and it cannot smuggle anything into a header.
            let url = self.urls.check(raw).map_err(|e| ApiError::bad_request("invalid_callback_url", e.to_string()))?;
            cmd = cmd.callback_url(String::from(url));
        }
        Ok(cmd)
    }
}

fn deadline(req: &CommandRequest) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    let bad = |m: String| ApiError::bad_request("invalid_deadline", m);
    match (&req.deadline, &req.deadline_in) {
        (Some(_), Some(_)) => Err(bad("give deadline or deadline_in, not both".into())),
        (Some(at), None) => chrono::DateTime::parse_from_rfc3339(at)
            .map(|t| Some(t.with_timezone(&chrono::Utc)))
            .map_err(|e| bad(format!("deadline {at:?} is not RFC 3339: {e}"))),
        (None, Some(within)) => {
            let d = crate::duration::parse_duration(within).map_err(bad)?;
            let at = deadline_after(chrono::Utc::now(), d)
                .ok_or_else(|| bad(format!("deadline_in {within:?} is past the last representable date")))?;
            Ok(Some(at))
        }
        (None, None) => Ok(None),
    }
}

/// `now + within`, or `None` when the sum is not a date chrono can hold: the
/// duration comes from the request, and unchecked date arithmetic panics on
/// overflow, which would drop the caller's connection instead of answering `400`.
fn deadline_after(now: chrono::DateTime<chrono::Utc>, within: std::time::Duration) -> Option<chrono::DateTime<chrono::Utc>> {
    let delta = chrono::Duration::from_std(within).ok()?;
    now.checked_add_signed(delta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker() -> Checker {
        Checker::new(&crate::demo::example_router(), UrlPolicy::default()).unwrap()
    }

    fn code(body: &str) -> &'static str {
        match CommandRequest::from_body(body.as_bytes()).and_then(|r| checker().check(&r)) {
            Ok(_) => "ok",
            Err(e) => e.code,
        }
    }

    #[test]
    fn every_kind_of_bad_request_has_its_code() {
        assert_eq!(code(r#"{"type":"sleep","payload":{"ms":5}}"#), "ok");
        assert_eq!(code(r#"{"type":"sleep","payload":{"ms":5"#), "malformed_json");
        assert_eq!(code(r#"{"payload":{}}"#), "invalid_request");
        assert_eq!(code(r#"{"type":"echo","surprise":1}"#), "invalid_request");
        assert_eq!(code(r#"{"type":"nope"}"#), "unknown_type");
        assert_eq!(code(r#"{"type":"sleep","payload":{"ms":"soon"}}"#), "invalid_payload");
        assert_eq!(code(r#"{"type":"sleep","payload":{"ms":-1}}"#), "invalid_payload");
        assert_eq!(code(r#"{"type":"echo","deadline":"tomorrow"}"#), "invalid_deadline");
        assert_eq!(code(r#"{"type":"echo","deadline_in":"5 days"}"#), "invalid_deadline");
        assert_eq!(code(r#"{"type":"echo","callback_url":"http://169.254.169.254/"}"#), "invalid_callback_url");
    }

    #[test]
    fn callback_urls_are_refused_with_control_characters_and_kept_canonical() {
        for url in ["http://example.com/\r\nX-Injected: 1", "http://exa\tmple.com/", " https://example.com/", "http://localhost./", "http://0x7f.1/"] {
            let body = json!({"type": "echo", "callback_url": url}).to_string();
            assert_eq!(code(&body), "invalid_callback_url", "{url:?}");
        }
        let req = CommandRequest::from_body(br#"{"type":"echo","callback_url":"HTTPS://Example.COM:443/hook"}"#).unwrap();
        let cmd = checker().check(&req).unwrap();
        assert_eq!(cmd.callback_url.as_deref(), Some("https://example.com/hook"));
    }

    #[test]
    fn hostile_bodies_are_refused_with_their_codes() {
        assert_eq!(code(r#"{"type":"echo","type":"sleep"}"#), "malformed_json", "a repeated key");
        assert_eq!(code(r#"{"type":"echo","payload":{"a":1,"a":2}}"#), "malformed_json", "a repeated nested key");
        assert_eq!(code(&"[".repeat(100_000)), "malformed_json");
        assert_eq!(code(&format!("{}{}", "[".repeat(200), "]".repeat(200))), "malformed_json", "too deep even when balanced");
        assert_eq!(code(&format!(r#"{{"type":"echo","payload":{}1{}}}"#, "[".repeat(100), "]".repeat(100))), "ok", "100 levels are fine");
        assert_eq!(code(r#"{"type":"sleep","payload":{"ms":99999999999999999999999}}"#), "invalid_payload", "overflows u64");
        assert_eq!(code(r#"{"type":"sleep","payload":{"ms":5.0}}"#), "invalid_payload", "an integer to JSON Schema, not to u64");
        assert_eq!(code(r#"{"type":"sleep","payload":{"ms":1e400}}"#), "malformed_json");
        assert_eq!(CommandRequest::from_body(b"{\"type\":\"echo\",\"key\":\"\xff\xfe\"}").unwrap_err().code, "malformed_json");
        assert_eq!(code(""), "malformed_json");
        assert_eq!(code("null"), "invalid_request");
        assert_eq!(code(r#"{"type":"echo","key":""}"#), "invalid_request");
    }

    #[test]
    fn deadlines_past_the_end_of_time_are_refused_not_panicked_on() {
        for within in ["9000000000000000s", "9223372036854775807ms", "18446744073709551615s", "1e400s", "99999999999999999999999999h"] {
            let body = format!(r#"{{"type":"echo","deadline_in":"{within}"}}"#);
            assert_eq!(code(&body), "invalid_deadline", "{within}");
        }
        assert_eq!(code(r#"{"type":"echo","deadline_in":"9000000000s"}"#), "ok", "285 years ahead is a date");
        assert_eq!(code(r#"{"type":"echo","deadline":"+262143-12-31T23:59:59Z"}"#), "invalid_deadline");
        let now = chrono::Utc::now();
        assert_eq!(deadline_after(now, std::time::Duration::MAX), None);
        assert_eq!(deadline_after(now, std::time::Duration::from_secs(9_000_000_000_000_000)), None);
        assert!(deadline_after(now, std::time::Duration::from_secs(60)).is_some_and(|t| t > now));
    }

    #[test]
    fn the_hash_ignores_key_order_and_spelled_out_nulls() {
        let a = CommandRequest::from_body(br#"{"type":"echo","payload":{"a":1,"b":[1,{"y":2,"x":1}]}}"#).unwrap();
        let b = CommandRequest::from_body(br#"{"payload":{"b":[1,{"x":1,"y":2}],"a":1},"key":null,"type":"echo"}"#).unwrap();
        let c = CommandRequest::from_body(br#"{"type":"echo","payload":{"a":2}}"#).unwrap();
        assert_eq!(a.request_hash(), b.request_hash());
        assert_ne!(a.request_hash(), c.request_hash());
        assert_eq!(a.request_hash().len(), 64);
    }
}
