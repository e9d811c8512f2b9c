//! Endpoints as users write them: `host:port`, `http://host:port` or
//! `https://host:port` (etcdctl's `--endpoints` accepts all three).
//!
//! Guarantees: a parsed [`Endpoint`] always has a host and a port and a scheme this
//! crate can dial; anything else is refused with [`Error::InvalidEndpoint`] naming the
//! text and the reason, before any connection is attempted. The scheme decides the
//! transport as in etcd's client: `http://` is always plain text, `https://` always
//! TLS, and no scheme is TLS exactly when the client has TLS options.

use std::fmt;

use crate::error::Error;

/// The scheme an endpoint was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `host:port`: TLS when the client has TLS options, else plain text.
    Unspecified,
    /// `http://`: plain text.
    Http,
    /// `https://`: TLS (the client's TLS options, or the defaults).
    Https,
}

/// One member's client address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// What the user wrote (kept for messages and for etcdctl's output, which echoes it).
    pub original: String,
    /// The scheme written.
    pub scheme: Scheme,
    /// The host name or IP address (IPv6 without brackets).
    pub host: String,
    /// The TCP port.
    pub port: u16,
}

impl Endpoint {
    /// Parses `host:port`, `http://host:port`, `https://host:port` or `[v6]:port`; a
    /// trailing `/` is allowed.
    pub fn parse(text: &str) -> Result<Endpoint, Error> {
        let bad = |reason: &str| Error::InvalidEndpoint {
            endpoint: text.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = text.trim();
        let (scheme, rest) = if let Some(r) = trimmed.strip_prefix("http://") {
            (Scheme::Http, r)
        } else if let Some(r) = trimmed.strip_prefix("https://") {
            (Scheme::Https, r)
        } else if trimmed.contains("://") {
            return Err(bad(
                "only http:// and https:// endpoints or host:port are supported",
            ));
        } else {
            (Scheme::Unspecified, trimmed)
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return Err(bad("an endpoint has no path"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, p) = v6
                .split_once("]:")
                .ok_or_else(|| bad("expected [ipv6]:port"))?;
            (h, p)
        } else {
            rest.rsplit_once(':')
                .ok_or_else(|| bad("expected host:port"))?
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        let port: u16 = port.parse().map_err(|_| bad("bad port"))?;
        Ok(Endpoint {
            original: trimmed.to_string(),
            scheme,
            host: host.to_string(),
            port,
        })
    }

    /// The URI the gRPC channel dials (`http://host:port`; the connector adds TLS).
    pub fn uri(&self) -> String {
        if self.host.contains(':') {
            format!("http://[{}]:{}", self.host, self.port)
        } else {
            format!("http://{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_etcdctl_accepts() {
        let e = Endpoint::parse("127.0.0.1:2379").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 2379));
        assert_eq!(e.uri(), "http://127.0.0.1:2379");
        let e = Endpoint::parse("http://localhost:23790/").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("localhost", 23790));
        assert_eq!(e.original, "http://localhost:23790/");
        let e = Endpoint::parse("[::1]:2379").unwrap();
        assert_eq!(e.uri(), "http://[::1]:2379");
        assert_eq!(e.scheme, Scheme::Unspecified);
        let e = Endpoint::parse("https://127.0.0.1:2379").unwrap();
        assert_eq!((e.scheme, e.port), (Scheme::Https, 2379));
        assert_eq!(e.uri(), "http://127.0.0.1:2379");
        assert_eq!(Endpoint::parse("http://h:1").unwrap().scheme, Scheme::Http);
    }

    #[test]
    fn refuses_what_it_cannot_dial() {
        for bad in [
            "",
            "localhost",
            "http://h:port",
            "https://h",
            "unix://x:1",
            ":1",
            "h:1/p",
        ] {
            assert!(
                matches!(Endpoint::parse(bad), Err(Error::InvalidEndpoint { .. })),
                "{bad:?}"
            );
        }
    }
}
