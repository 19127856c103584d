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
    /// Allow callback URLs on private networks (10/8, 172.16/12, 192.168/16, fc00::/7).
    #[arg(long, env = "COURIER_ALLOW_PRIVATE_CALLBACKS")]
    pub allow_private: bool,
}

/// Why a URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("callback URL is not a valid absolute URL: {0}")]
    Invalid(String),
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
    pub fn check(&self, raw: &str) -> Result<url::Url, UrlError> {
        let url = url::Url::parse(raw).map_err(|e| UrlError::Invalid(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UrlError::Scheme(url.scheme().to_string()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::Credentials);
        }
        match url.host() {
            None => return Err(UrlError::NoHost),
            Some(url::Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip))?,
            Some(url::Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip))?,
            Some(url::Host::Domain(d)) => {
                if (d.eq_ignore_ascii_case("localhost") || d.ends_with(".localhost")) && !self.allow_loopback {
                    return Err(UrlError::Forbidden { addr: IpAddr::V4(Ipv4Addr::LOCALHOST), kind: "loopback" });
                }
            }
        }
        Ok(url)
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

/// Names the special range an address is in, if any.
fn classify(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
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
    } else if (s[0] & 0xfe00) == 0xfc00 {
        Some("private")
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Some("link-local")
    } else if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        Some("metadata")
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
        assert!(p.check("http://10.0.0.1/").is_err());
    }

    #[tokio::test]
    async fn resolved_addresses_are_checked() {
        let p = UrlPolicy::default();
        assert!(matches!(p.check_resolved("http://localhost:1/").await, Err(UrlError::Forbidden { .. })));
        let ok = UrlPolicy::allowing_loopback().check_resolved("http://localhost:1/").await.unwrap();
        assert!(ok.1.iter().all(|a| a.ip().is_loopback()));
    }
}
