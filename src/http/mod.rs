//! Serving HTTP with bounds a client cannot stretch: every Courier listener (the
//! gateway, the webhook dispatcher's, the worker's `/metrics`) goes through [`serve`].
//!
//! `axum::serve` has no header-read timeout, so a client that opens a connection and
//! sends nothing, or half a request head, holds a socket and a task for as long as
//! it likes; a few thousand of those exhaust the file descriptors. Here each
//! connection is hyper's HTTP/1 connection with:
//!
//! - a **header-read timeout**: a request head must arrive complete within
//!   `--header-read-timeout` of the connection becoming ready for one. That covers
//!   the first request *and* the idle time between requests on a keep-alive
//!   connection (hyper starts the same timer whenever it waits for a head), so one
//!   bound closes silent, slow and idle connections alike;
//! - a **head size bound**: more than [`MAX_HEADERS`] header lines, or a head over
//!   `--max-header-bytes`, is answered `431` by hyper and the connection closed (a
//!   malformed head gets `400`); hyper answers these itself, before any route, so
//!   their bodies are empty.
//!
//! - **TLS** when `--tls-cert`/`--tls-key` are given ([`tls`]): the handshake must
//!   finish within the same header-read timeout, and a client CA makes it mutual.
//!
//! Graceful shutdown is kept: when the token fires the listener stops accepting,
//! every connection finishes the request it is serving and closes, and [`serve`]
//! returns once all have.
//!
//! API Boundary: what happens inside a request (body size, body read time, JSON) is
//! the router's business; this module only bounds connections and request heads.

pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::duration::parse_duration;

/// Most header lines in one request (hyper's own default, named here).
pub const MAX_HEADERS: usize = 100;

pub use tls::{Tls, TlsArgs, TlsError};

/// Per-connection settings of an HTTP listener: the bounds a client cannot stretch,
/// and TLS.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionLimits {
    /// A request head must arrive complete this soon after the connection is ready
    /// for one (also the longest a keep-alive connection may sit idle); otherwise it
    /// is closed.
    #[arg(long, env = "COURIER_HTTP_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// Largest request head (request line plus headers) accepted; larger gets `431`.
    #[arg(long, env = "COURIER_HTTP_MAX_HEADER_BYTES", default_value_t = 64 * 1024)]
    pub max_header_bytes: usize,
    #[command(flatten)]
    pub tls: TlsArgs,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits { header_read_timeout: Duration::from_secs(10), max_header_bytes: 64 * 1024, tls: TlsArgs::default() }
    }
}

/// Why limits cannot be served with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error("--header-read-timeout must be positive")]
    NoHeaderTimeout,
    #[error("--max-header-bytes must be between 1 KiB and 1 MiB")]
    HeaderBytes,
}

impl ConnectionLimits {
    /// Checked at start: a zero timeout would close every connection at once, and
    /// hyper's read buffer must hold the largest head.
    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.header_read_timeout.is_zero() {
            return Err(LimitsError::NoHeaderTimeout);
        }
        if !(1024..=1024 * 1024).contains(&self.max_header_bytes) {
            return Err(LimitsError::HeaderBytes);
        }
        Ok(())
    }

    fn builder(&self) -> hyper::server::conn::http1::Builder {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .max_headers(MAX_HEADERS)
            .max_header_size(self.max_header_bytes)
            // hyper's buffer must fit the largest head it is to parse; it panics below 8 KiB.
            .max_buf_size(self.max_header_bytes.max(8192) + 8192);
        builder
    }
}

/// Serves `app` on `listener` within `limits` (over `tls` when given, reloading it on
/// SIGHUP) until `shutdown` fires, then lets the requests in progress finish and
/// returns.
pub async fn serve(listener: TcpListener, app: axum::Router, limits: &ConnectionLimits, tls: Option<Arc<Tls>>, shutdown: CancellationToken) {
    let builder = limits.builder();
    let graceful = GracefulShutdown::new();
    if let Some(tls) = &tls {
        tls.reload_on_hangup(shutdown.clone());
    }
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of descriptors, or a connection reset before it was taken:
                // wait a moment rather than spin, and go on.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (builder, app, watcher, tls) = (builder.clone(), app.clone(), graceful.watcher(), tls.clone());
        let handshake_within = limits.header_read_timeout;
        tokio::spawn(async move {
            let Some(tls) = tls else { return connection(builder, stream, app, watcher, peer).await };
            match tokio::time::timeout(handshake_within, tls.accept(stream)).await {
                Ok(Ok(stream)) => connection(builder, stream, app, watcher, peer).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// One HTTP/1 connection over `io` (plain or TLS), watched for graceful shutdown.
async fn connection<I>(builder: hyper::server::conn::http1::Builder, io: I, app: axum::Router, watcher: Watcher, peer: std::net::SocketAddr)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A listener serving `GET /` within a 300 ms header-read timeout.
    async fn server(stop: &CancellationToken) -> std::net::SocketAddr {
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "hi" }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = ConnectionLimits { header_read_timeout: Duration::from_millis(300), max_header_bytes: 4096, ..Default::default() };
        let stop = stop.clone();
        tokio::spawn(async move { serve(listener, app, &limits, None, stop).await });
        addr
    }

    /// Everything the server sends until it closes, and how long that took.
    async fn until_closed(stream: &mut tokio::net::TcpStream) -> (String, Duration) {
        let started = Instant::now();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "the server never closed the connection");
        (String::from_utf8_lossy(&out).into_owned(), started.elapsed())
    }

    #[tokio::test]
    async fn silent_half_sent_and_idle_connections_are_closed() {
        let stop = CancellationToken::new();
        let addr = server(&stop).await;
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (said, took) = until_closed(&mut silent).await;
        assert!(said.is_empty() && took < Duration::from_secs(2), "{said:?} after {took:?}");
        let mut half = tokio::net::TcpStream::connect(addr).await.unwrap();
        half.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        let (_, took) = until_closed(&mut half).await;
        assert!(took < Duration::from_secs(2), "{took:?}");
        let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let (said, took) = until_closed(&mut idle).await;
        assert!(said.starts_with("HTTP/1.1 200") && said.ends_with("hi"), "{said:?}");
        assert!(took < Duration::from_secs(2), "an idle keep-alive connection is closed too: {took:?}");
        stop.cancel();
    }

    #[tokio::test]
    async fn oversized_heads_get_431_and_bad_ones_400() {
        let stop = CancellationToken::new();
        let addr = server(&stop).await;
        let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(8000));
        let many = format!("GET / HTTP/1.1\r\nHost: x\r\n{}\r\n", "X-A: 1\r\n".repeat(MAX_HEADERS + 1));
        for (head, status) in [(big.as_str(), "431"), (many.as_str(), "431"), ("GET / HTTP/1.1\r\nBad Header\r\n\r\n", "400")] {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(head.as_bytes()).await.unwrap();
            let (said, _) = until_closed(&mut s).await;
            assert!(said.starts_with(&format!("HTTP/1.1 {status}")), "{said:?}");
        }
        stop.cancel();
    }

    #[tokio::test]
    async fn shutdown_stops_accepting_and_returns() {
        let app = axum::Router::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let served = tokio::spawn({
            let stop = stop.clone();
            async move { serve(listener, app, &ConnectionLimits::default(), None, stop).await }
        });
        let _idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), served).await.expect("serve returns on shutdown").unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no longer listening");
    }

    #[test]
    fn limits_are_validated() {
        assert_eq!(ConnectionLimits::default().validate(), Ok(()));
        let zero = ConnectionLimits { header_read_timeout: Duration::ZERO, ..Default::default() };
        assert_eq!(zero.validate(), Err(LimitsError::NoHeaderTimeout));
        let tiny = ConnectionLimits { max_header_bytes: 10, ..Default::default() };
        assert_eq!(tiny.validate(), Err(LimitsError::HeaderBytes));
    }
}
