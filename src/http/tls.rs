//! HTTPS on Courier's listeners: a certificate and key from PEM files, optionally a
//! client CA that makes every caller present a certificate it signed (mTLS), and a
//! reload of all three on `SIGHUP` without dropping a connection.
//!
//! OpenSSL rather than rustls: librdkafka and reqwest already link it, so this adds a
//! thin async shim and no second TLS stack to build, audit and patch. The acceptor is
//! Mozilla's "intermediate" profile (TLS 1.2 and 1.3, forward-secret AEAD suites).
//!
//! A reload that fails (a file half written, a key that does not match) keeps the
//! acceptor in use and logs why, so a botched rotation never takes the listener down;
//! connections already open keep the certificate they were accepted with.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use openssl::ssl::{Ssl, SslAcceptor, SslFiletype, SslMethod, SslVerifyMode};
use openssl::x509::X509Name;
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

/// Where a listener's certificate, key and (for mTLS) client CA are.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate chain (leaf first) the listener presents; with `--tls-key`,
    /// the listener speaks HTTPS only. Re-read on SIGHUP.
    #[arg(long, env = "COURIER_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`. Re-read on SIGHUP.
    #[arg(long, env = "COURIER_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle: callers must present a client certificate it signed (mTLS);
    /// a handshake without one fails. Re-read on SIGHUP.
    #[arg(long, env = "COURIER_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

/// Why a listener's TLS files cannot be used. The message names the file and
/// OpenSSL's reason, never the key's contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--tls-cert and --tls-key go together")]
    Half,
    #[error("TLS: cannot use {what} {path}: {reason}")]
    File { what: &'static str, path: PathBuf, reason: openssl::error::ErrorStack },
    #[error("TLS: {0}")]
    Setup(openssl::error::ErrorStack),
}

/// A file's failure, named.
fn file(what: &'static str, path: &Path) -> impl FnOnce(openssl::error::ErrorStack) -> TlsError {
    let path = path.to_path_buf();
    move |reason| TlsError::File { what, path, reason }
}

impl TlsArgs {
    /// The acceptor these files make, or None when TLS is not configured.
    pub fn load(&self) -> Result<Option<Tls>, TlsError> {
        match (&self.tls_cert, &self.tls_key) {
            (None, None) if self.tls_client_ca.is_none() => Ok(None),
            (Some(_), Some(_)) => Ok(Some(Tls { acceptor: RwLock::new(Arc::new(self.acceptor()?)), args: self.clone() })),
            _ => Err(TlsError::Half),
        }
    }

    fn acceptor(&self) -> Result<SslAcceptor, TlsError> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else { return Err(TlsError::Half) };
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(TlsError::Setup)?;
        b.set_certificate_chain_file(cert).map_err(file("certificate chain", cert))?;
        b.set_private_key_file(key, SslFiletype::PEM).map_err(file("private key", key))?;
        b.check_private_key().map_err(file("private key (it does not match the certificate)", key))?;
        if let Some(ca) = &self.tls_client_ca {
            b.set_ca_file(ca).map_err(file("client CA", ca))?;
            b.set_client_ca_list(X509Name::load_client_ca_file(ca).map_err(file("client CA", ca))?);
            b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
        }
        Ok(b.build())
    }
}

/// A listener's live TLS acceptor, swapped whole on reload.
pub struct Tls {
    acceptor: RwLock<Arc<SslAcceptor>>,
    args: TlsArgs,
}

impl Tls {
    /// Re-reads the files; on failure the acceptor in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = Arc::new(self.args.acceptor()?);
        *self.acceptor.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// Whether client certificates are required.
    pub fn mutual(&self) -> bool {
        self.args.tls_client_ca.is_some()
    }

    /// The TLS handshake on an accepted connection (the caller bounds its time).
    pub async fn accept(&self, tcp: TcpStream) -> Result<SslStream<TcpStream>, openssl::ssl::Error> {
        let acceptor = self.acceptor.read().unwrap_or_else(|p| p.into_inner()).clone();
        let ssl = Ssl::new(acceptor.context())?;
        let mut stream = SslStream::new(ssl, tcp)?;
        Pin::new(&mut stream).accept().await?;
        Ok(stream)
    }

    /// Reloads on every SIGHUP until `stop` fires (logging each outcome).
    pub fn reload_on_hangup(self: &Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: TLS files are read only at start");
            return;
        };
        let tls = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    got = hangups.recv() => if got.is_none() { return },
                    _ = stop.cancelled() => return,
                }
                match tls.reload() {
                    Ok(()) => tracing::info!(cert = %tls.args.tls_cert.as_deref().unwrap_or(Path::new("")).display(), "TLS certificate reloaded"),
                    Err(e) => tracing::error!(error = %e, "TLS reload failed; the previous certificate stays in use"),
                }
            }
        });
    }
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("args", &self.args).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{serve, ConnectionLimits};
    use openssl::asn1::{Asn1Integer, Asn1Time};
    use openssl::bn::BigNum;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::{PKey, Private};
    use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
    use openssl::x509::{X509NameBuilder, X509};
    use tokio_util::sync::CancellationToken;

    /// A key and a certificate for `cn`, signed by `issuer` (self-signed when None).
    struct Pair {
        key: PKey<Private>,
        cert: X509,
    }

    fn pair(cn: &str, serial: u32, issuer: Option<&Pair>, ca: bool) -> Pair {
        let key = PKey::from_ec_key(EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
        let name = name.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&Asn1Integer::from_bn(&BigNum::from_u32(serial).unwrap()).unwrap()).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(issuer.map_or(&name, |i| i.cert.subject_name())).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap()).unwrap();
        b.set_not_after(&Asn1Time::days_from_now(2).unwrap()).unwrap();
        if ca {
            b.append_extension(BasicConstraints::new().critical().ca().build().unwrap()).unwrap();
        } else {
            let san = SubjectAlternativeName::new().ip("127.0.0.1").dns("localhost").build(&b.x509v3_context(issuer.map(|i| &*i.cert), None)).unwrap();
            b.append_extension(san).unwrap();
        }
        b.sign(issuer.map_or(&key, |i| &i.key), MessageDigest::sha256()).unwrap();
        Pair { key, cert: b.build() }
    }

    /// The PKI of one test, written into `dir`: a CA, two server certificates it
    /// signed (serials 2 and 3), a client certificate it signed, and a foreign CA's client.
    struct Pki {
        dir: PathBuf,
        ca: Pair,
        client: Pair,
        stranger: Pair,
    }

    impl Pki {
        fn new(tag: &str) -> Pki {
            let dir = std::env::temp_dir().join(format!("courier-tls-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let ca = pair("courier test CA", 1, None, true);
            let client = pair("billing-svc", 4, Some(&ca), false);
            let foreign = pair("foreign CA", 5, None, true);
            let stranger = pair("stranger", 6, Some(&foreign), false);
            std::fs::write(dir.join("ca.pem"), ca.cert.to_pem().unwrap()).unwrap();
            let pki = Pki { dir, ca, client, stranger };
            pki.install_server(2);
            pki
        }

        /// Writes a fresh server certificate with `serial` as the listener's files.
        fn install_server(&self, serial: u32) {
            let server = pair("localhost", serial, Some(&self.ca), false);
            std::fs::write(self.dir.join("server.pem"), server.cert.to_pem().unwrap()).unwrap();
            std::fs::write(self.dir.join("server.key"), server.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        }

        fn args(&self, mutual: bool) -> TlsArgs {
            TlsArgs {
                tls_cert: Some(self.dir.join("server.pem")),
                tls_key: Some(self.dir.join("server.key")),
                tls_client_ca: mutual.then(|| self.dir.join("ca.pem")),
            }
        }

        /// A real HTTPS client trusting the CA, presenting `identity` if given.
        fn client(&self, identity: Option<&Pair>) -> reqwest::Client {
            let mut b = reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(&self.ca.cert.to_pem().unwrap()).unwrap())
                .timeout(std::time::Duration::from_secs(5));
            if let Some(id) = identity {
                let (cert, key) = (id.cert.to_pem().unwrap(), id.key.private_key_to_pem_pkcs8().unwrap());
                b = b.identity(reqwest::Identity::from_pkcs8_pem(&cert, &key).unwrap());
            }
            b.build().unwrap()
        }
    }

    impl Drop for Pki {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Serves `GET /` ("hi") over `tls`; returns the port.
    async fn https(tls: Arc<Tls>, stop: &CancellationToken) -> u16 {
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "hi" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = stop.clone();
        tokio::spawn(async move { serve(listener, app, &ConnectionLimits::default(), Some(tls), stop).await });
        port
    }

    /// The serial number of the certificate the listener presents now.
    async fn served_serial(port: u16, pki: &Pki) -> u32 {
        let mut c = openssl::ssl::SslConnector::builder(SslMethod::tls_client()).unwrap();
        c.set_ca_file(pki.dir.join("ca.pem")).unwrap();
        let ssl = c.build().configure().unwrap().into_ssl("localhost").unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut stream = SslStream::new(ssl, tcp).unwrap();
        Pin::new(&mut stream).connect().await.unwrap();
        let serial = stream.ssl().peer_certificate().unwrap().serial_number().to_bn().unwrap();
        serial.to_dec_str().unwrap().parse().unwrap()
    }

    #[tokio::test]
    async fn https_is_served_and_plain_http_is_not() {
        let pki = Pki::new("plain");
        let stop = CancellationToken::new();
        let port = https(Arc::new(pki.args(false).load().unwrap().unwrap()), &stop).await;
        let ok = pki.client(None).get(format!("https://localhost:{port}/")).send().await.unwrap();
        assert_eq!((ok.status().as_u16(), ok.text().await.unwrap().as_str()), (200, "hi"));
        let untrusting = reqwest::Client::builder().timeout(std::time::Duration::from_secs(5)).build().unwrap();
        assert!(untrusting.get(format!("https://localhost:{port}/")).send().await.is_err(), "an unknown CA is refused by the client");
        assert!(untrusting.get(format!("http://127.0.0.1:{port}/")).send().await.is_err(), "plain HTTP gets no answer");
        let ok = pki.client(None).get(format!("https://127.0.0.1:{port}/")).send().await.unwrap();
        assert_eq!(ok.status().as_u16(), 200, "the listener still serves after a failed handshake");
        stop.cancel();
    }

    #[tokio::test]
    async fn mutual_tls_wants_a_client_certificate_from_its_ca() {
        let pki = Pki::new("mutual");
        let stop = CancellationToken::new();
        let tls = Arc::new(pki.args(true).load().unwrap().unwrap());
        assert!(tls.mutual());
        let port = https(tls, &stop).await;
        let url = format!("https://localhost:{port}/");
        assert!(pki.client(None).get(&url).send().await.is_err(), "no client certificate: the handshake fails");
        assert!(pki.client(Some(&pki.stranger)).get(&url).send().await.is_err(), "a foreign CA's client is refused");
        let ok = pki.client(Some(&pki.client)).get(&url).send().await.unwrap();
        assert_eq!(ok.status().as_u16(), 200);
        stop.cancel();
    }

    #[tokio::test]
    async fn sighup_reloads_the_certificate_and_a_bad_reload_keeps_the_old_one() {
        let pki = Pki::new("reload");
        let stop = CancellationToken::new();
        let tls = Arc::new(pki.args(false).load().unwrap().unwrap());
        let port = https(tls.clone(), &stop).await;
        assert_eq!(served_serial(port, &pki).await, 2);

        std::fs::write(pki.dir.join("server.key"), "not a key").unwrap();
        assert!(matches!(tls.reload(), Err(TlsError::File { .. })));
        assert_eq!(served_serial(port, &pki).await, 2, "a failed reload keeps serving the old certificate");

        pki.install_server(3);
        let hup = std::process::Command::new("kill").args(["-HUP", &std::process::id().to_string()]).status().unwrap();
        assert!(hup.success());
        let mut serial = 0;
        for _ in 0..50 {
            serial = served_serial(port, &pki).await;
            if serial == 3 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(serial, 3, "SIGHUP re-read the files");
        stop.cancel();
    }

    #[test]
    fn bad_files_are_named_at_load() {
        let pki = Pki::new("bad");
        assert!(TlsArgs::default().load().unwrap().is_none());
        let half = TlsArgs { tls_key: None, ..pki.args(false) };
        assert!(matches!(half.load(), Err(TlsError::Half)));
        let missing = TlsArgs { tls_cert: Some(pki.dir.join("nope.pem")), ..pki.args(false) };
        let e = missing.load().unwrap_err().to_string();
        assert!(e.contains("certificate chain") && e.contains("nope.pem"), "{e}");
        // A key that is not the certificate's.
        let other = pair("x", 9, None, false);
        std::fs::write(pki.dir.join("other.key"), other.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        let mismatched = TlsArgs { tls_key: Some(pki.dir.join("other.key")), ..pki.args(false) };
        let e = mismatched.load().unwrap_err().to_string();
        assert!(e.contains("private key") && e.contains("other.key") && e.contains("mismatch"), "{e}");
        assert!(!e.contains("PRIVATE KEY"), "no key material in the message: {e}");
    }
}
