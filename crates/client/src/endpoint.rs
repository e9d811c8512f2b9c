//! Endpoints as users write them: `host:port` or `http://host:port` (etcdctl's
//! `--endpoints` accepts both).
//!
//! Guarantees: a parsed [`Endpoint`] always has a host and a port and a scheme this
//! crate can dial; anything else is refused with [`Error::InvalidEndpoint`] naming the
//! text and the reason, before any connection is attempted. `https://` is refused until
//! the client has TLS (issue 13), rather than silently speaking plain text to it.

use std::fmt;

use crate::error::Error;

/// One member's client address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// What the user wrote (kept for messages and for etcdctl's output, which echoes it).
    pub original: String,
    /// The host name or IP address (IPv6 without brackets).
    pub host: String,
    /// The TCP port.
    pub port: u16,
}

impl Endpoint {
    /// Parses `host:port`, `http://host:port` or `[v6]:port`; a trailing `/` is allowed.
    pub fn parse(text: &str) -> Result<Endpoint, Error> {
        let bad = |reason: &str| Error::InvalidEndpoint {
            endpoint: text.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = text.trim();
        let rest = if let Some(r) = trimmed.strip_prefix("http://") {
            r
        } else if trimmed.starts_with("https://") {
            return Err(bad("https needs TLS, which this client does not have yet"));
        } else if trimmed.contains("://") {
            return Err(bad("only http:// endpoints or host:port are supported"));
        } else {
            trimmed
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
            host: host.to_string(),
            port,
        })
    }

    /// The URI the gRPC channel uses (`http://host:port`).
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
    }

    #[test]
    fn refuses_what_it_cannot_dial() {
        for bad in [
            "",
            "localhost",
            "http://h:port",
            "https://h:1",
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
