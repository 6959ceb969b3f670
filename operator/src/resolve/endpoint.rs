//! Where an account's API is: a base URL, or the embedded td-local. Hosts are written as TD users
//! write them (a bare host, a full URL, `local`, blank for the US default).

use std::fmt;
use std::net::IpAddr;

use serde::{Serialize, Serializer};
use url::Url;

/// The US region's API, used when nothing names a host.
pub(crate) const DEFAULT_ENDPOINT: &str = "https://api.treasuredata.com";

/// Where an account's API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A base URL without path: `https://api.treasuredata.com`, `http://127.0.0.1:8950`.
    Url(Url),
    /// The embedded td-local (its loopback URL is known once it has started).
    Local,
}

impl Endpoint {
    pub fn default_us() -> Endpoint {
        Endpoint::Url(Url::parse(DEFAULT_ENDPOINT).expect("valid URL"))
    }

    /// `None` for [`Endpoint::Local`].
    pub fn url(&self) -> Option<&Url> {
        match self {
            Endpoint::Url(url) => Some(url),
            Endpoint::Local => None,
        }
    }

    /// Parses a host setting: blank → `None` (the caller's default), `local` → Local, a full
    /// `http(s)://` URL is kept, a bare `host[:port]` gets HTTPS (plain HTTP when `use_ssl` is false
    /// or the host is loopback: 127.0.0.1, localhost, ::1).
    pub fn parse(text: &str, use_ssl: bool) -> Result<Option<Endpoint>, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        if text.eq_ignore_ascii_case("local") {
            return Ok(Some(Endpoint::Local));
        }
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            let url = Url::parse(text).map_err(|e| format!("is not a URL ({e})"))?;
            return base_url(url).map(|u| Some(Endpoint::Url(u)));
        }
        if text.contains("://") {
            return Err("only http:// and https:// URLs (or a bare host) can name an API".to_string());
        }
        // A bare IPv6 address such as ::1 needs brackets to be read as a host.
        let host = if text.matches(':').count() > 1 && !text.starts_with('[') {
            format!("[{text}]")
        } else {
            text.to_string()
        };
        let probe =
            Url::parse(&format!("https://{host}")).map_err(|e| format!("is not a host name ({e})"))?;
        let scheme = if use_ssl && !is_loopback(&probe) {
            "https"
        } else {
            "http"
        };
        let url =
            Url::parse(&format!("{scheme}://{host}")).map_err(|e| format!("is not a host name ({e})"))?;
        base_url(url).map(|u| Some(Endpoint::Url(u)))
    }
}

/// A URL usable as an API base: a host, no credentials, no path beyond `/`, no query.
fn base_url(url: Url) -> Result<Url, String> {
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host name".to_string());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials; put the key in apikey/api_key".to_string());
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err("must be a host or base URL only (no path such as /v3, no query)".to_string());
    }
    Ok(url)
}

/// Whether `url`'s host is this machine: 127.0.0.0/8, ::1 or localhost.
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Url(url) => f.write_str(url.as_str().trim_end_matches('/')),
            Endpoint::Local => f.write_str("local"),
        }
    }
}

impl Serialize for Endpoint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(text: &str) -> String {
        Endpoint::parse(text, true)
            .unwrap()
            .map_or("(default)".to_string(), |e| e.to_string())
    }

    #[test]
    fn hosts_become_base_urls() {
        assert_eq!(
            endpoint("api.treasuredata.co.jp"),
            "https://api.treasuredata.co.jp"
        );
        assert_eq!(endpoint("  "), "(default)");
        assert_eq!(endpoint("http://api.example.com"), "http://api.example.com");
        assert_eq!(
            endpoint("https://api.example.com:8443/"),
            "https://api.example.com:8443"
        );
        assert_eq!(endpoint("local"), "local");
        assert_eq!(Endpoint::default_us().to_string(), DEFAULT_ENDPOINT);
        assert_eq!(
            Endpoint::parse("api.example.com", false)
                .unwrap()
                .unwrap()
                .to_string(),
            "http://api.example.com"
        );
    }

    #[test]
    fn loopback_hosts_use_plain_http() {
        assert_eq!(endpoint("127.0.0.1:8950"), "http://127.0.0.1:8950");
        assert_eq!(endpoint("localhost:8950"), "http://localhost:8950");
        assert_eq!(endpoint("::1"), "http://[::1]");
        assert_eq!(endpoint("[::1]:8950"), "http://[::1]:8950");
        assert_eq!(
            endpoint("https://127.0.0.1:8950"),
            "https://127.0.0.1:8950",
            "a full URL is kept"
        );
    }

    #[test]
    fn bad_hosts_are_refused_with_the_reason() {
        assert!(Endpoint::parse("https://api.example.com/v3", true)
            .unwrap_err()
            .contains("no path"));
        assert!(Endpoint::parse("ftp://x", true).unwrap_err().contains("http://"));
        assert!(Endpoint::parse("https://u:p@x", true)
            .unwrap_err()
            .contains("credentials"));
        assert!(Endpoint::parse("bad host", true).is_err());
    }
}
