//! The HTTP side of one delivery attempt, and everything that keeps it safe.
//!
//! The URL came from whoever submitted the command, so it is untrusted:
//! - it is checked, and its host resolved and every address checked, right before
//!   the attempt ([`UrlPolicy::check_resolved`]); a refused URL is never called;
//! - the connection goes to those vetted addresses only (the client's resolver is
//!   pinned to them), so a DNS answer that changes in between (rebinding) cannot
//!   point the request elsewhere;
//! - redirects are not followed (a `3xx` is a failed attempt), no proxy from the
//!   environment is used, connecting and the whole exchange are time-limited, and at
//!   most `max_response_bytes` of the answer are read.
//!
//! Clients are kept per host *and* vetted address set ([`Clients`]): building one
//! loads the TLS trust store, far too slow to do per attempt, and keying on the
//! addresses keeps the pinning exact: a host whose DNS answer changes gets a new
//! client, pinned to the new (vetted) addresses, never a connection to the old ones.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::urlpolicy::UrlPolicy;

/// Limits on one attempt.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub connect_timeout: Duration,
    /// From sending the request to having read the (capped) response.
    pub response_timeout: Duration,
    pub max_response_bytes: usize,
}

/// What an attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A `2xx` within the timeout: acknowledged.
    Delivered,
    /// `410 Gone`: the receiver wants no more deliveries at this URL.
    Gone,
    /// Anything else: an error status, a redirect, a timeout, no connection.
    Failed,
    /// The URL (or an address it resolves to) is not allowed; nothing was sent.
    Refused,
    /// The endpoint is disabled (decided before any HTTP); nothing was sent.
    Skipped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Gone => "gone",
            Outcome::Failed => "failed",
            Outcome::Refused => "refused",
            Outcome::Skipped => "skipped",
        }
    }
}

/// An attempt's result, as the delivery log records it.
#[derive(Debug, Clone)]
pub struct Response {
    pub outcome: Outcome,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub latency: Duration,
}

/// HTTP clients by host and pinned addresses; see the module docs.
pub struct Clients {
    limits: HttpLimits,
    cache: Mutex<HashMap<(String, Vec<SocketAddr>), reqwest::Client>>,
}

/// More distinct (host, addresses) pairs than this and the cache starts over: a
/// bound on memory when callers use many hosts, at the price of rebuilding clients.
const MAX_CLIENTS: usize = 1024;

impl Clients {
    pub fn new(limits: HttpLimits) -> Self {
        Clients { limits, cache: Mutex::default() }
    }

    fn client(&self, url: &url::Url, addrs: &[SocketAddr]) -> Result<reqwest::Client, reqwest::Error> {
        let host = match url.host() {
            Some(url::Host::Domain(host)) => Some(host.to_string()),
            _ => None,
        };
        let mut sorted = addrs.to_vec();
        sorted.sort();
        let key = (host.clone().unwrap_or_default(), sorted);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = cache.get(&key) {
            return Ok(client.clone());
        }
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(self.limits.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(8)
            .user_agent(concat!("courier-webhooks/", env!("CARGO_PKG_VERSION")));
        if let Some(host) = &host {
            builder = builder.resolve_to_addrs(host, addrs);
        }
        let client = builder.build()?;
        if cache.len() >= MAX_CLIENTS {
            cache.clear();
        }
        cache.insert(key, client.clone());
        Ok(client)
    }

    pub fn limits(&self) -> &HttpLimits {
        &self.limits
    }
}

/// POSTs `body` to `url` with `headers`, within `policy` and the clients' limits.
pub async fn post(clients: &Clients, policy: &UrlPolicy, url: &str, headers: &[(&str, String)], body: Vec<u8>) -> Response {
    let started = Instant::now();
    let limits = clients.limits();
    let done = |outcome, status, error: Option<String>| Response { outcome, status, error, latency: started.elapsed() };
    let (parsed, addrs) = match policy.check_resolved(url).await {
        Ok(vetted) => vetted,
        Err(e) => return done(Outcome::Refused, None, Some(e.to_string())),
    };
    let client = match clients.client(&parsed, &addrs) {
        Ok(c) => c,
        Err(e) => return done(Outcome::Failed, None, Some(format!("http client: {e}"))),
    };
    let mut request = client.post(parsed).body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let exchange = async {
        let mut response = request.send().await?;
        let status = response.status();
        let mut read = 0usize;
        while read < limits.max_response_bytes {
            match response.chunk().await? {
                Some(chunk) => read += chunk.len(),
                None => break,
            }
        }
        Ok::<_, reqwest::Error>(status)
    };
    match tokio::time::timeout(limits.response_timeout, exchange).await {
        Err(_) => done(Outcome::Failed, None, Some(format!("no response within {:?}", limits.response_timeout))),
        Ok(Err(e)) => done(Outcome::Failed, e.status().map(|s| s.as_u16()), Some(describe(&e))),
        Ok(Ok(status)) => {
            let code = Some(status.as_u16());
            if status.is_success() {
                done(Outcome::Delivered, code, None)
            } else if status == reqwest::StatusCode::GONE {
                done(Outcome::Gone, code, Some("410 Gone: endpoint disabled".into()))
            } else if status.is_redirection() {
                done(Outcome::Failed, code, Some(format!("HTTP {status}: redirects are not followed")))
            } else {
                done(Outcome::Failed, code, Some(format!("HTTP {status}")))
            }
        }
    }
}

/// A reqwest error with its causes: the top level alone ("error sending request")
/// does not say whether the connection was refused or timed out.
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use axum::routing::post as route_post;

    async fn receiver() -> std::net::SocketAddr {
        let app = axum::Router::new()
            .route("/ok", route_post(|| async { "fine" }))
            .route("/gone", route_post(|| async { StatusCode::GONE }))
            .route("/moved", route_post(|| async { (StatusCode::FOUND, [("location", "/ok")]) }))
            .route("/huge", route_post(|| async { vec![b'x'; 8 << 20] }))
            .route("/slow", route_post(|| async { tokio::time::sleep(Duration::from_secs(3)).await }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    #[tokio::test]
    async fn answers_are_judged_within_the_limits() {
        let addr = receiver().await;
        let limits = HttpLimits { connect_timeout: Duration::from_secs(1), response_timeout: Duration::from_millis(500), max_response_bytes: 1024 };
        let policy = UrlPolicy::allowing_loopback();
        let clients = std::sync::Arc::new(Clients::new(limits));
        let call = |path: &str| {
            let (policy, clients) = (policy.clone(), clients.clone());
            let url = format!("http://localhost:{}{path}", addr.port());
            async move { post(&clients, &policy, &url, &[("content-type", "application/json".into())], b"{}".to_vec()).await }
        };
        assert_eq!(call("/ok").await.outcome, Outcome::Delivered);
        assert_eq!(call("/huge").await.outcome, Outcome::Delivered, "a huge answer is cut short, not waited for");
        let gone = call("/gone").await;
        assert_eq!((gone.outcome, gone.status), (Outcome::Gone, Some(410)));
        let moved = call("/moved").await;
        assert_eq!((moved.outcome, moved.status), (Outcome::Failed, Some(302)), "redirects are not followed");
        let slow = call("/slow").await;
        assert_eq!(slow.outcome, Outcome::Failed);
        assert!(slow.latency < Duration::from_secs(2), "{slow:?}");
        let refused = post(&clients, &UrlPolicy::default(), &format!("http://127.0.0.1:{}/ok", addr.port()), &[], vec![]).await;
        assert_eq!((refused.outcome, refused.status), (Outcome::Refused, None));
    }
}
