//! Which callback URLs Courier may call.
//!
//! A webhook URL comes from whoever submits a command, so it is untrusted: without a
//! check it would let any caller make Courier POST to the cloud metadata service or to
//! an internal admin port (SSRF). The gateway checks URLs when a command arrives (so
//! a bad one is a `400`, nothing published), and the dispatcher checks the *resolved*
//! addresses again right before each delivery (DNS can change in between).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What a callback URL may point at.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct UrlPolicy {
    /// Allow callback URLs on loopback addresses (tests, local development).
    #[arg(long, env = "COURIER_ALLOW_LOOPBACK_CALLBACKS")]
    pub allow_loopback: bool,
    /// Allow callback URLs on private networks (10/8, 172.16/12, 192.168/16, 100.64/10,
    /// fc00::/7, fec0::/10).
    #[arg(long, env = "COURIER_ALLOW_PRIVATE_CALLBACKS")]
    pub allow_private: bool,
}

/// Longest callback URL accepted, in its canonical serialisation: it is copied into
/// a header of every command and snapshot of the operation.
pub const MAX_URL_BYTES: usize = 4096;

/// Why a URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("callback URL is not a valid absolute URL: {0}")]
    Invalid(String),
    #[error("callback URL must not contain control characters or whitespace")]
    Unprintable,
    #[error("callback URL is longer than {MAX_URL_BYTES} bytes")]
    TooLong,
    #[error("callback URL scheme must be http or https, not {0}")]
    Scheme(String),
    #[error("callback URL has no host")]
    NoHost,
    #[error("callback URL must not carry credentials")]
    Credentials,
    #[error("callback URL resolves to {addr}, a {kind} address, which is not allowed")]
    Forbidden { addr: IpAddr, kind: &'static str },
    #[error("callback URL host {0} does not resolve")]
    Unresolvable(String),
}

impl UrlPolicy {
    /// Allows loopback, for tests and local development.
    pub fn allowing_loopback() -> Self {
        UrlPolicy { allow_loopback: true, allow_private: false }
    }

    /// Syntax and literal-address checks, no DNS: cheap enough for every request.
    ///
    /// Returns the URL parsed, whose serialisation (`as_str`) is the canonical form
    /// to store and call: the parser already turns every other spelling of an
    /// address (`2130706433`, `0x7f.1`, `127.1`, percent-encoded or full-width
    /// digits, `[0:0:0:0:0:0:0:1]`) into one, and that one is what is judged.
    pub fn check(&self, raw: &str) -> Result<url::Url, UrlError> {
        refuse_unprintable(raw)?;
        let url = url::Url::parse(raw).map_err(|e| UrlError::Invalid(e.to_string()))?;
        if url.as_str().len() > MAX_URL_BYTES {
            return Err(UrlError::TooLong);
        }
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UrlError::Scheme(url.scheme().to_string()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::Credentials);
        }
        self.check_host(url.host().ok_or(UrlError::NoHost)?)?;
        Ok(url)
    }

    fn check_host(&self, host: url::Host<&str>) -> Result<(), UrlError> {
        match host {
            url::Host::Ipv4(ip) => self.check_ip(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => self.check_ip(IpAddr::V6(ip)),
            url::Host::Domain(d) if d.trim_end_matches('.').is_empty() => Err(UrlError::NoHost),
            url::Host::Domain(d) if is_loopback_name(d) && !self.allow_loopback => {
                Err(UrlError::Forbidden { addr: IpAddr::V4(Ipv4Addr::LOCALHOST), kind: "loopback" })
            }
            url::Host::Domain(_) => Ok(()),
        }
    }

    /// [`UrlPolicy::check`] plus DNS: every address the host resolves to must be
    /// allowed. Returns the addresses, so the caller connects to one of exactly these.
    pub async fn check_resolved(&self, raw: &str) -> Result<(url::Url, Vec<std::net::SocketAddr>), UrlError> {
        let url = self.check(raw)?;
        let host = url.host_str().ok_or(UrlError::NoHost)?.trim_matches(|c| c == '[' || c == ']').to_string();
        let port = url.port_or_known_default().unwrap_or(80);
        let addrs: Vec<_> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|_| UrlError::Unresolvable(host.clone()))?
            .collect();
        if addrs.is_empty() {
            return Err(UrlError::Unresolvable(host));
        }
        for a in &addrs {
            self.check_ip(a.ip())?;
        }
        Ok((url, addrs))
    }

    fn check_ip(&self, ip: IpAddr) -> Result<(), UrlError> {
        let kind = classify(ip);
        let allowed = match kind {
            None => true,
            Some("loopback") => self.allow_loopback,
            Some("private") => self.allow_private,
            Some(_) => false,
        };
        match (allowed, kind) {
            (true, _) | (_, None) => Ok(()),
            (false, Some(kind)) => Err(UrlError::Forbidden { addr: ip, kind }),
        }
    }
}

/// Control characters (CR, LF, NUL, DEL, C1) and whitespace anywhere in the text.
/// Judged on the raw text because the URL parser would quietly drop tabs and
/// newlines and trim the ends, and a URL that needs that was not meant honestly.
fn refuse_unprintable(raw: &str) -> Result<(), UrlError> {
    if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(UrlError::Unprintable);
    }
    Ok(())
}

/// Names that mean this machine whatever DNS says: `localhost` and every name under
/// it (RFC 6761), and the loopback aliases `/etc/hosts` files commonly carry. A
/// trailing dot (the fully qualified spelling) names the same host.
fn is_loopback_name(domain: &str) -> bool {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    d == "localhost"
        || d.ends_with(".localhost")
        || matches!(d.as_str(), "localhost.localdomain" | "localhost6" | "localhost6.localdomain6" | "ip6-localhost" | "ip6-loopback")
}

/// Names the special range an address is in, if any.
fn classify(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

/// The IPv4 address an IPv6 one only wraps, so it is judged as that address:
/// mapped (`::ffff:a.b.c.d`), translated (`::ffff:0:a.b.c.d`), compatible
/// (`::a.b.c.d`, deprecated but still understood by stacks), NAT64
/// (`64:ff9b::a.b.c.d`) and 6to4 (`2002:aabb:ccdd::`). `::` and `::1` are their
/// own addresses, not wrapped ones.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let v4 = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        _ if ip.is_loopback() || ip.is_unspecified() => None,
        [0, 0, 0, 0, 0, 0xffff, hi, lo] | [0, 0, 0, 0, 0xffff, 0, hi, lo] | [0, 0, 0, 0, 0, 0, hi, lo] => Some(v4(hi, lo)),
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(v4(hi, lo)),
        [0x2002, hi, lo, ..] => Some(v4(hi, lo)),
        _ => None,
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
        Some("private")
    } else if o == [169, 254, 169, 254] || o == [100, 100, 100, 200] {
        Some("metadata")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || o[0] == 0 || o[0] >= 240 {
        Some("reserved")
    } else {
        None
    }
}

fn classify_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        // Inside fc00::/7, so before it: metadata is refused even with --allow-private.
        Some("metadata")
    } else if (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfec0 {
        Some("private")
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Some("link-local")
    } else if ip.is_unspecified() || ip.is_multicast() {
        Some("reserved")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_internal_targets_by_default() {
        let p = UrlPolicy::default();
        for bad in [
            "http://127.0.0.1/x",
            "http://localhost:8080/",
            "http://10.1.2.3/",
            "http://192.168.0.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://[fe80::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://0.0.0.0/",
            "ftp://example.com/",
            "http://user:pw@example.com/",
            "not a url",
        ] {
            assert!(p.check(bad).is_err(), "{bad} must be refused");
        }
        assert!(p.check("https://example.com/hooks").is_ok());
        assert!(p.check("http://93.184.216.34:8080/x").is_ok());
    }

    #[test]
    fn loopback_only_when_allowed() {
        let p = UrlPolicy::allowing_loopback();
        assert!(p.check("http://127.0.0.1:9999/hook").is_ok());
        assert!(p.check("http://localhost/hook").is_ok());
        assert!(p.check("http://169.254.169.254/").is_err(), "metadata is never allowed");
        let private = UrlPolicy { allow_loopback: true, allow_private: true };
        assert!(private.check("http://[fd00::1]/").is_ok());
        assert!(private.check("http://[fd00:ec2::254]/").is_err(), "not even inside the private range");
        assert!(p.check("http://10.0.0.1/").is_err());
    }

    /// Every other spelling of loopback, and of the other refused ranges, the way a
    /// hostile caller would write it: each must be refused by default.
    #[test]
    fn every_spelling_of_an_internal_host_is_refused() {
        let p = UrlPolicy::default();
        let loopback = [
            "http://localhost./",
            "http://localhost../",
            "http://LOCALHOST/",
            "http://LocalHost.:80/",
            "http://localhost.localdomain/",
            "http://LOCALHOST.LOCALDOMAIN./",
            "http://localhost6/",
            "http://ip6-localhost/",
            "http://api.localhost/",
            "http://a.b.localhost./",
            "http://local%68ost/",
            "http://%6c%6f%63%61%6c%68%6f%73%74/",
            "http://\u{24db}ocalhost/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0x7f.1/",
            "http://0x7F.0.0.1/",
            "http://017700000001/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://127.0.1/",
            "http://127.0.0.1./",
            "http://127.255.255.254/",
            "http://%31%32%37.0.0.1/",
            "http://\u{ff11}\u{ff12}\u{ff17}.0.0.1/",
            "http://[::1]/",
            "http://[0:0:0:0:0:0:0:1]/",
            "http://[0000:0000:0000:0000:0000:0000:0000:0001]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[::ffff:0:127.0.0.1]/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::127.0.0.1]/",
            "http://[2002:7f00:1::]/",
            "HTTP://127.0.0.1/",
            "http:\\\\127.0.0.1\\x",
            "http:/127.0.0.1/",
            "http:127.0.0.1/",
        ];
        for url in loopback {
            match p.check(url) {
                Err(UrlError::Forbidden { kind: "loopback", .. }) => {}
                other => panic!("{url} must be refused as loopback, got {other:?}"),
            }
            assert!(UrlPolicy::allowing_loopback().check(url).is_ok(), "{url} is loopback, allowed when loopback is");
        }
        let others = [
            ("http://0.0.0.0/", "reserved"),
            ("http://0/", "reserved"),
            ("http://0x0/", "reserved"),
            ("http://[::]/", "reserved"),
            ("http://[::ffff:0.0.0.0]/", "reserved"),
            ("http://255.255.255.255/", "reserved"),
            ("http://[ff02::1]/", "reserved"),
            ("http://10.0.0.1/", "private"),
            ("http://012.1/", "private"),
            ("http://167772161/", "private"),
            ("http://[::ffff:10.0.0.1]/", "private"),
            ("http://[::ffff:192.168.1.1]/", "private"),
            ("http://[64:ff9b::10.1.2.3]/", "private"),
            ("http://[2002:c0a8:101::1]/", "private"),
            ("http://[fd00::1]/", "private"),
            ("http://[fec0::1]/", "private"),
            ("http://100.64.0.1/", "private"),
            ("http://169.254.169.254/", "metadata"),
            ("http://0xa9fea9fe/", "metadata"),
            ("http://2852039166/", "metadata"),
            ("http://[::ffff:169.254.169.254]/", "metadata"),
            ("http://[::ffff:a9fe:a9fe]/", "metadata"),
            ("http://[fd00:ec2::254]/", "metadata"),
            ("http://169.254.1.1/", "link-local"),
            ("http://[fe80::1]/", "link-local"),
            ("http://[FE80::1]/", "link-local"),
        ];
        for (url, kind) in others {
            match p.check(url) {
                Err(UrlError::Forbidden { kind: k, .. }) if k == kind => {}
                other => panic!("{url} must be refused as {kind}, got {other:?}"),
            }
        }
    }

    #[test]
    fn tricks_that_are_not_addresses_are_refused_too() {
        let p = UrlPolicy::allowing_loopback();
        type Expect = fn(&UrlError) -> bool;
        let cases: [(&str, Expect); 8] = [
            ("http://evil@127.0.0.1/", |e| *e == UrlError::Credentials),
            ("http://127.0.0.1@evil.example/", |e| *e == UrlError::Credentials),
            ("http://a:b@example.com/", |e| *e == UrlError::Credentials),
            ("http://[fe80::1%25eth0]/", |e| matches!(e, UrlError::Invalid(_))),
            ("http://[fe80::1%eth0]/", |e| matches!(e, UrlError::Invalid(_))),
            ("http://./", |e| matches!(e, UrlError::NoHost | UrlError::Invalid(_))),
            ("file:///etc/passwd", |e| matches!(e, UrlError::Scheme(_))),
            ("javascript:alert(1)", |e| matches!(e, UrlError::Scheme(_))),
        ];
        for (url, expected) in cases {
            let got = p.check(url);
            assert!(got.as_ref().is_err_and(expected), "{url}: {got:?}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES));
        assert_eq!(p.check(&long).unwrap_err(), UrlError::TooLong);
    }

    #[test]
    fn control_characters_and_whitespace_are_refused_before_parsing() {
        let p = UrlPolicy::allowing_loopback();
        for url in [
            "http://example.com/\r\nX-Injected: 1",
            "http://example.com/a\nb",
            "http://exa\tmple.com/",
            "http://example.com/\0",
            "http://example.com/\u{7f}",
            "http://example.com/\u{85}",
            " http://example.com/",
            "http://example.com/ ",
            "http://example.com/a b",
            "http://example.com/\u{a0}",
            "http://example.com/\u{2028}",
            "\u{1b}[31mhttp://example.com/",
        ] {
            assert_eq!(p.check(url).unwrap_err(), UrlError::Unprintable, "{url:?}");
        }
    }

    #[test]
    fn the_canonical_form_is_what_is_kept() {
        let p = UrlPolicy::default();
        assert_eq!(p.check("HTTPS://Example.COM:443/Hook?a=1").unwrap().as_str(), "https://example.com/Hook?a=1");
        assert_eq!(p.check("http://93.184.216.34:80/x").unwrap().as_str(), "http://93.184.216.34/x");
        assert_eq!(p.check("http://1572395042/x").unwrap().as_str(), "http://93.184.216.34/x");
        assert_eq!(p.check("http://[2606:2800:0220:0001:0248:1893:25c8:1946]/").unwrap().as_str(), "http://[2606:2800:220:1:248:1893:25c8:1946]/");
        assert_eq!(p.check("https://b\u{fc}cher.example/").unwrap().as_str(), "https://xn--bcher-kva.example/");
        assert_eq!(p.check("http://:@example.com/").unwrap().as_str(), "http://example.com/", "empty userinfo is dropped");
        assert!(p.check("http://[::ffff:8.8.8.8]/").is_ok(), "a public v4 address in v6 clothing is still public");
        assert!(p.check("https://localhost.example.com/").is_ok(), "only names under localhost are loopback");
    }

    #[tokio::test]
    async fn resolved_addresses_are_checked() {
        let p = UrlPolicy::default();
        assert!(matches!(p.check_resolved("http://localhost:1/").await, Err(UrlError::Forbidden { .. })));
        let ok = UrlPolicy::allowing_loopback().check_resolved("http://localhost:1/").await.unwrap();
        assert!(ok.1.iter().all(|a| a.ip().is_loopback()));
    }
}
