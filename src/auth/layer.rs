//! The HTTP side: one axum middleware ([`authenticate`]) in front of a surface's
//! routes. It names the caller (a [`Caller`] in the request's extensions), checks the
//! scope the route needs, and applies the principal's rate limit; the routes then
//! check what only they know (the command type of a submission, the tenant of an
//! operation).
//!
//! Which scope a route needs is read from its method and path, the same on every
//! surface: `GET /healthz` needs nothing; the callbacks of a handed-off command
//! (`POST /v1/operations/{id}:complete|:progress|:heartbeat`) carry their own
//! capability token and are checked by their route; `GET /metrics` needs `metrics`;
//! any other `GET` needs `read`; `:cancel` and RunPod's `/cancel/` need `cancel`;
//! RunPod's `purge-queue` needs `admin`; any other `POST` is a submission (some
//! `submit:` scope here, the type's own at admission).

use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::{Auth, Limiter, Need, Principal, Scope, Unauthenticated};

/// Who may call a surface.
#[derive(Clone, Debug)]
pub struct Access {
    mode: Arc<Mode>,
    limiter: Arc<Limiter>,
    /// Requests refused, by `why` (`unauthenticated`, `forbidden`, `rate_limited`).
    pub refused: Family<Vec<(String, String)>, Counter>,
}

#[derive(Debug)]
enum Mode {
    /// Anyone: `courier dev`, or `--insecure-no-auth`.
    Open,
    /// The `auth:` block; replaced whole on reload.
    Checked(RwLock<Arc<Auth>>),
}

impl Access {
    /// Every caller is an anonymous admin.
    pub fn open() -> Self {
        Access::with(Mode::Open)
    }

    /// Callers authenticate against `auth`.
    pub fn checked(auth: Arc<Auth>) -> Self {
        Access::with(Mode::Checked(RwLock::new(auth)))
    }

    fn with(mode: Mode) -> Self {
        Access { mode: Arc::new(mode), limiter: Arc::default(), refused: Family::default() }
    }

    pub fn is_open(&self) -> bool {
        matches!(*self.mode, Mode::Open)
    }

    /// Swaps in a re-read `auth:` block (SIGHUP): revoked keys stop working at once,
    /// requests in progress finish as they were authenticated. No-op when open.
    pub fn reload(&self, auth: Arc<Auth>) {
        if let Mode::Checked(current) = &*self.mode {
            *current.write().unwrap_or_else(|p| p.into_inner()) = auth;
        }
    }

    fn principal(&self, req: &Request) -> Result<Arc<Principal>, Unauthenticated> {
        let auth = match &*self.mode {
            Mode::Open => return Ok(anonymous()),
            Mode::Checked(auth) => auth.read().unwrap_or_else(|p| p.into_inner()).clone(),
        };
        let value = req.headers().get(header::AUTHORIZATION).ok_or(Unauthenticated::Missing)?;
        let text = value.to_str().map_err(|_| Unauthenticated::Malformed)?;
        let credential = match text.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") && !rest.trim().is_empty() => rest.trim(),
            _ => return Err(Unauthenticated::Malformed),
        };
        auth.principal(credential, chrono::Utc::now().timestamp())
    }

    fn refuse(&self, why: &str) {
        self.refused.get_or_create(&vec![("why".into(), why.into())]).inc();
    }
}

fn anonymous() -> Arc<Principal> {
    static ANONYMOUS: std::sync::OnceLock<Arc<Principal>> = std::sync::OnceLock::new();
    ANONYMOUS.get_or_init(|| Arc::new(Principal { name: "anonymous".into(), tenant: None, scopes: vec![Scope::Admin], rate: None })).clone()
}

/// The authenticated principal of a request, for the routes.
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<Principal>);

impl Caller {
    /// An anonymous admin: what routes see when no middleware ran (embedding, tests).
    pub fn anonymous() -> Self {
        Caller(anonymous())
    }

    /// `403` unless the principal may `need`.
    pub fn require(&self, need: Need<'_>) -> Result<(), Denied> {
        if self.0.may(need) {
            Ok(())
        } else {
            Err(Denied::Forbidden(describe(need)))
        }
    }

    pub fn tenant(&self) -> Option<&str> {
        self.0.tenant.as_deref()
    }
}

/// A request refused by the middleware or a route's own check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("this principal lacks the {0} scope")]
    Forbidden(String),
    #[error("rate limit reached; retry in {0} s")]
    RateLimited(u64),
}

impl Denied {
    pub fn status(&self) -> StatusCode {
        match self {
            Denied::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Denied::Forbidden(_) => StatusCode::FORBIDDEN,
            Denied::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Denied::Unauthenticated(_) => "unauthenticated",
            Denied::Forbidden(_) => "permission_denied",
            Denied::RateLimited(_) => "rate_limited",
        }
    }
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code(), "message": self.to_string() } });
        let mut response = (self.status(), axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            Denied::Unauthenticated(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Denied::RateLimited(secs) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            Denied::Forbidden(_) => {}
        }
        response
    }
}

fn describe(need: Need<'_>) -> String {
    match need {
        Need::Submit(t) => format!("submit:{t}"),
        Need::AnySubmit => "submit".into(),
        Need::Read => "read".into(),
        Need::Cancel => "cancel".into(),
        Need::Metrics => "metrics".into(),
        Need::Admin => "admin".into(),
    }
}

/// What a request needs, from its method and path (module doc); None: nothing here.
pub fn need_of(method: &Method, path: &str) -> Option<Need<'static>> {
    // The router percent-decodes a segment before matching it, so `{id}%3Acancel` is
    // the cancel route: read the method suffix the way the router will.
    let last = path.rsplit('/').next().unwrap_or_default().replace("%3A", ":").replace("%3a", ":");
    let last = last.as_str();
    if *method == Method::GET || *method == Method::HEAD {
        return match path {
            "/healthz" => None,
            "/metrics" => Some(Need::Metrics),
            _ => Some(Need::Read),
        };
    }
    if path.starts_with("/v1/operations/") {
        if let Some((_, m)) = last.split_once(':') {
            return match m {
                "complete" | "progress" | "heartbeat" => None,
                "cancel" => Some(Need::Cancel),
                _ => Some(Need::Read),
            };
        }
    }
    if path.starts_with("/v2/") && path.contains("/cancel/") {
        return Some(Need::Cancel);
    }
    if path.starts_with("/v2/") && last == "purge-queue" {
        return Some(Need::Admin);
    }
    Some(Need::AnySubmit)
}

/// The middleware: authenticate, check the route's scope, rate-limit, then pass the
/// [`Caller`] on. Refusals are logged (principal, path; never the credential).
pub async fn authenticate(State(access): State<Access>, mut req: Request, next: Next) -> Response {
    let Some(need) = need_of(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let principal = match access.principal(&req) {
        Ok(p) => p,
        Err(e) => {
            access.refuse("unauthenticated");
            tracing::info!(target: "courier::audit", action = "refused", why = %e, path = %req.uri().path(), "unauthenticated request");
            return Denied::Unauthenticated(e.to_string()).into_response();
        }
    };
    let caller = Caller(principal);
    if let Err(denied) = caller.require(need) {
        access.refuse("forbidden");
        tracing::info!(target: "courier::audit", action = "refused", principal = %caller.0.name, tenant = caller.tenant().unwrap_or(""), path = %req.uri().path(), why = %denied, "forbidden request");
        return denied.into_response();
    }
    if let Some(rate) = caller.0.rate {
        if let Err(wait) = access.limiter.take(&caller.0.name, rate, Instant::now()) {
            access.refuse("rate_limited");
            return Denied::RateLimited(wait.as_secs_f64().ceil().max(1.0) as u64).into_response();
        }
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_what_the_module_says() {
        let (get, post) = (Method::GET, Method::POST);
        assert_eq!(need_of(&get, "/healthz"), None);
        assert_eq!(need_of(&get, "/metrics"), Some(Need::Metrics));
        assert_eq!(need_of(&get, "/v1/operations/x"), Some(Need::Read));
        assert_eq!(need_of(&post, "/v1/operations/x:complete"), None);
        assert_eq!(need_of(&post, "/v1/operations/x:heartbeat"), None);
        assert_eq!(need_of(&post, "/v1/operations/x:cancel"), Some(Need::Cancel));
        assert_eq!(need_of(&post, "/v1/operations/x%3Acancel"), Some(Need::Cancel), "the router decodes the colon");
        assert_eq!(need_of(&post, "/v1/operations/x%3acomplete"), None);
        assert_eq!(need_of(&post, "/v1/commands"), Some(Need::AnySubmit));
        assert_eq!(need_of(&post, "/v1/batches"), Some(Need::AnySubmit));
        assert_eq!(need_of(&post, "/v2/echo/run"), Some(Need::AnySubmit));
        assert_eq!(need_of(&post, "/v2/echo/cancel/abc"), Some(Need::Cancel));
        assert_eq!(need_of(&post, "/v2/echo/purge-queue"), Some(Need::Admin));
    }
}
