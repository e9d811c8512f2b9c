//! URLs in etcd's `scheme://host:port` form, and the URL-list flags built on them.
//!
//! Guarantees: a [`Url`] is an `http` or `https` URL with a host and a port and no
//! path, kept as written (etcd hashes the string form of peer URLs into member IDs, so
//! it must not be normalized); `https` URLs are served and dialed with TLS, never as
//! plaintext. `unix` and `unixs` sockets are refused.

use std::collections::BTreeMap;
use std::fmt;

use super::ConfigError;

/// A validated listen or advertise URL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Url {
    text: String,
    scheme_len: usize,
}

/// etcd's URL syntax check (any of its schemes): the lower-cased scheme and
/// `host:port`, or etcd's reason text.
pub fn check_syntax(text: &str) -> Result<(String, String), String> {
    let text = text.trim();
    let scheme_err = || format!("URL scheme must be http, https, unix, or unixs: {text}");
    let Some((scheme, rest)) = text.split_once("://") else {
        return Err(scheme_err());
    };
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "http" | "https" | "unix" | "unixs") {
        return Err(scheme_err());
    }
    if let Some(at) = rest.find('/') {
        if &rest[at..] != "/" {
            return Err(format!("URL must not contain a path: {text}"));
        }
    }
    let hostport = rest.trim_end_matches('/');
    if !valid_host_port(hostport) {
        return Err(format!(
            "URL address does not have the form \"host:port\": {text}"
        ));
    }
    Ok((scheme, hostport.to_string()))
}

/// The host of a `host:port` (an IPv6 address without its brackets).
pub fn host_of(host_port: &str) -> &str {
    let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

impl Url {
    /// Parses one URL with etcd's rules; `Err` carries etcd's reason text.
    pub fn parse(text: &str) -> Result<Url, String> {
        let (scheme, hostport) = check_syntax(text)?;
        match scheme.as_str() {
            "http" | "https" => {}
            _ => {
                return Err(format!(
                    "unix sockets are not supported yet: {}",
                    text.trim()
                ))
            }
        }
        Ok(Url {
            text: format!("{scheme}://{hostport}"),
            scheme_len: scheme.len(),
        })
    }

    /// Whether the URL is served (or dialed) with TLS: `https`.
    pub fn is_tls(&self) -> bool {
        self.scheme_len == 5
    }

    /// The host without the port (an IPv6 address without its brackets).
    pub fn host(&self) -> &str {
        host_of(self.host_port())
    }

    /// `host:port`, as written (a name such as `localhost` is resolved when binding).
    pub fn host_port(&self) -> &str {
        &self.text[self.scheme_len + 3..]
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn valid_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner.ends_with(']') && inner.len() > 1
    } else {
        !host.is_empty() && !host.contains(':')
    };
    host_ok && port.parse::<u16>().is_ok()
}

fn invalid<'a>(flag: &'static str, value: &'a str) -> impl Fn(String) -> ConfigError + 'a {
    move |reason| ConfigError::InvalidValue {
        flag,
        value: value.to_string(),
        reason,
    }
}

/// A comma-separated URL list flag (at least one URL).
pub fn parse_urls(flag: &'static str, value: &str) -> Result<Vec<Url>, ConfigError> {
    let mut urls = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        urls.push(Url::parse(part).map_err(invalid(flag, value))?);
    }
    if urls.is_empty() {
        return Err(invalid(flag, value)("no URL given".to_string()));
    }
    Ok(urls)
}

/// `--cors`: etcd 3.4 parses it as a URL list in which `*` is also allowed, and
/// matches a request's `Origin` header against the entries as written.
pub fn parse_cors(value: &str) -> Result<Vec<String>, ConfigError> {
    let mut origins = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part != "*" {
            check_syntax(part).map_err(invalid("cors", value))?;
        }
        if !origins.iter().any(|o| o == part) {
            origins.push(part.to_string());
        }
    }
    Ok(origins)
}

/// Parses `name=url,name=url,...`; a name may appear several times (several URLs).
pub fn parse_initial_cluster(value: &str) -> Result<BTreeMap<String, Vec<Url>>, ConfigError> {
    let bad = invalid("initial-cluster", value);
    let mut members: BTreeMap<String, Vec<Url>> = BTreeMap::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, url)) = part.split_once('=') else {
            return Err(bad(format!("{part:?} is not of the form name=url")));
        };
        let url = Url::parse(url).map_err(&bad)?;
        members.entry(name.to_string()).or_default().push(url);
    }
    if members.is_empty() {
        return Err(bad("no member given".to_string()));
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        assert_eq!(
            Url::parse("HTTP://[::1]:2379").unwrap().as_str(),
            "http://[::1]:2379"
        );
        assert_eq!(Url::parse("http://h:1/").unwrap().host_port(), "h:1");
        assert!(Url::parse("http://h:99999").is_err());
        let tls = Url::parse("HTTPS://[::1]:2379").unwrap();
        assert!(tls.is_tls());
        assert_eq!(tls.host(), "::1");
        assert!(!Url::parse("http://h:1").unwrap().is_tls());
        assert!(Url::parse("unixs://h:1").is_err());
        assert!(Url::parse("unix://h:1").unwrap_err().contains("unix"));
    }

    #[test]
    fn cors_entries_are_urls_or_star() {
        assert_eq!(parse_cors("*").unwrap(), vec!["*"]);
        assert_eq!(
            parse_cors("https://a.example:443,*").unwrap(),
            vec!["https://a.example:443", "*"]
        );
        let err = parse_cors("http://a.com").unwrap_err().to_string();
        assert!(
            err.contains("URL address does not have the form \"host:port\": http://a.com"),
            "{err}"
        );
        assert!(parse_cors("").unwrap().is_empty());
    }
}
