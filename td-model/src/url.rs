//! `td://[APIKEY]@[HOST[:PORT]]/DATABASE/TABLE[?mode=append|replace&time=T&legacy=true&apikey=K]`,
//! the URL of TD's own result connector (docs/td-api.md §7, the seed page of the connector).
//!
//! - An empty key and host (`td://@/db/t`) mean the account and region that run the job.
//! - Keys contain `/` (`123/abc…`) and may contain `@`: the user part runs up to the **last** `@`.
//! - A saved result may stop at the database (`td://@/testdb`), its settings naming the table.
//! - Parameters: `mode`, `time` (seconds or a timestamp), `legacy` (TD's older connector) and
//!   `apikey` (the key, instead of before the `@`). Any other, or one given twice, is an error.
//!
//! Displays with the key masked (`td://***@host/db/t`); [`TdUrl::expose`] gives it back, for TD's
//! own connector and nothing else.

use std::fmt;

use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};

use crate::key::{mask_keys, ApiKey};
use crate::name::{check_name, NameError};
use crate::time::{parse_time, TimeError};

/// How the rows reach the target table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Add the rows (TD's default).
    #[default]
    Append,
    /// Replace the table's rows with these, atomically.
    Replace,
}

impl Mode {
    pub const NAMES: [&'static str; 2] = ["append", "replace"];

    pub fn parse(text: &str) -> Option<Mode> {
        match text {
            "append" => Some(Mode::Append),
            "replace" => Some(Mode::Replace),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Append => "append",
            Mode::Replace => "replace",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The parameters a td:// URL may carry.
pub const PARAMS: [&str; 4] = ["mode", "time", "legacy", "apikey"];

/// A td:// URL taken apart.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct TdUrl {
    /// `None` when empty: the account running the job.
    pub api_key: Option<ApiKey>,
    /// `host[:port]`; `None` when empty: the region running the job.
    pub host: Option<String>,
    pub database: Option<String>,
    pub table: Option<String>,
    pub mode: Option<Mode>,
    /// `time` of rows when the result has none (Unix seconds).
    pub time: Option<i64>,
    /// TD's older server-side connector.
    pub legacy: Option<bool>,
}

/// Why a text is not a td:// URL. Messages never hold the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("does not start with td://")]
    NotTd,
    #[error("scheme `{0}` is not td:// (only TD's own connector is supported)")]
    Scheme(String),
    #[error("the `@` after the API key is missing (td://@/DATABASE/TABLE is the job's own account)")]
    NoAt,
    #[error("the API key is not valid UTF-8 once percent-decoded")]
    KeyEncoding,
    #[error("host `{0}` is not a host name")]
    Host(String),
    #[error("must name a database and a table (/DATABASE/TABLE), found {0} path part(s)")]
    PathParts(usize),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("mode `{0}` is not append or replace")]
    Mode(String),
    #[error("time `{value}` {error}")]
    Time { value: String, error: TimeError },
    #[error("legacy `{0}` is not true or false")]
    Legacy(String),
    #[error("query parameter `{name}` is not supported{}; td:// takes {}", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default(), PARAMS.join(", "))]
    UnknownParam {
        name: String,
        suggestion: Option<String>,
    },
    #[error("query parameter `{0}` is given twice")]
    DuplicateParam(String),
    #[error("the API key is given twice (before the `@` and as apikey=)")]
    TwoKeys,
}

/// A value as it may appear in a message: keys masked, cut short.
fn shown(value: &str) -> String {
    let masked = mask_keys(value);
    let mut out: String = masked.chars().take(40).collect();
    if masked.chars().count() > 40 {
        out.push('…');
    }
    out
}

impl TdUrl {
    /// Parses a td:// URL; database and table may be missing (a saved result's URL).
    pub fn parse(text: &str) -> Result<TdUrl, UrlError> {
        let rest = match text.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("td") => rest,
            Some((scheme, _)) if !scheme.is_empty() && !scheme.contains(['/', '@', '?']) => {
                return Err(UrlError::Scheme(shown(scheme)))
            }
            _ => return Err(UrlError::NotTd),
        };
        let last_at = rest.rfind('@').ok_or(UrlError::NoAt)?;
        let (body, query) = match rest[last_at..].find('?') {
            Some(q) => (&rest[..last_at + q], Some(&rest[last_at + q + 1..])),
            None => (rest, None),
        };
        let (user, location) = (&body[..last_at], &body[last_at + 1..]);
        let key = percent_decode_str(user)
            .decode_utf8()
            .map_err(|_| UrlError::KeyEncoding)?
            .into_owned();
        let (host, path) = location.split_once('/').unwrap_or((location, ""));
        if !host.is_empty() {
            check_host(host)?;
        }
        let segments: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect();
        if segments.len() > 2 {
            return Err(UrlError::PathParts(segments.len()));
        }
        if let Some(db) = segments.first() {
            check_name("database", db)?;
        }
        if let Some(table) = segments.get(1) {
            check_name("table", table)?;
        }
        let mut url = TdUrl {
            api_key: (!key.is_empty()).then(|| ApiKey::new(key)),
            host: (!host.is_empty()).then(|| host.to_string()),
            database: segments.first().cloned(),
            table: segments.get(1).cloned(),
            ..TdUrl::default()
        };
        url.read_params(query.unwrap_or(""))?;
        Ok(url)
    }

    /// Parses a td:// URL that must name both a database and a table.
    pub fn parse_table(text: &str) -> Result<TdUrl, UrlError> {
        let url = TdUrl::parse(text)?;
        match (&url.database, &url.table) {
            (Some(_), Some(_)) => Ok(url),
            (db, _) => Err(UrlError::PathParts(usize::from(db.is_some()))),
        }
    }

    fn read_params(&mut self, query: &str) -> Result<(), UrlError> {
        let mut seen: Vec<String> = Vec::new();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if seen.iter().any(|s| *s == name) {
                return Err(UrlError::DuplicateParam(shown(&name)));
            }
            seen.push(name.to_string());
            match name.as_ref() {
                "mode" => self.mode = Some(Mode::parse(&value).ok_or_else(|| UrlError::Mode(shown(&value)))?),
                "time" => {
                    let time = parse_time(&value).map_err(|error| UrlError::Time {
                        value: shown(&value),
                        error,
                    })?;
                    self.time = Some(time);
                }
                "legacy" => {
                    self.legacy = Some(match value.to_ascii_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(UrlError::Legacy(shown(&value))),
                    })
                }
                "apikey" => {
                    if self.api_key.is_some() {
                        return Err(UrlError::TwoKeys);
                    }
                    self.api_key = (!value.is_empty()).then(|| ApiKey::new(value.into_owned()));
                }
                other => {
                    return Err(UrlError::UnknownParam {
                        name: shown(other),
                        suggestion: crate::did_you_mean(other, PARAMS),
                    })
                }
            }
        }
        Ok(())
    }

    /// The URL with its key, for TD's own connector only.
    pub fn expose(&self) -> String {
        self.render(self.api_key.as_ref().map(ApiKey::expose))
    }

    fn render(&self, key: Option<&str>) -> String {
        // The key goes in raw: TD reads the user part up to the last `@`, `/` included.
        let mut out = format!(
            "td://{}@{}",
            key.unwrap_or_default(),
            self.host.as_deref().unwrap_or("")
        );
        for part in [&self.database, &self.table].into_iter().flatten() {
            out.push('/');
            out.push_str(part);
        }
        let params: Vec<String> = [
            self.mode.map(|m| format!("mode={m}")),
            self.time.map(|t| format!("time={t}")),
            self.legacy.map(|l| format!("legacy={l}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !params.is_empty() {
            out.push('?');
            out.push_str(&params.join("&"));
        }
        out
    }
}

/// `host[:port]` as TD would reach it: a name or an address, nothing else.
fn check_host(host: &str) -> Result<(), UrlError> {
    // A bare IPv6 address such as ::1 needs brackets to be read as a host.
    let bracketed = if host.matches(':').count() > 1 && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    match url::Url::parse(&format!("https://{bracketed}")) {
        Ok(u)
            if u.host_str().is_some_and(|h| !h.is_empty()) && u.path() == "/" && u.username().is_empty() =>
        {
            Ok(())
        }
        _ => Err(UrlError::Host(shown(host))),
    }
}

impl fmt::Display for TdUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(self.api_key.as_ref().map(|_| "***")))
    }
}

impl fmt::Debug for TdUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TdUrl({self})")
    }
}

impl Serialize for TdUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        format!("123/{}", "ab".repeat(20))
    }

    #[test]
    fn keys_split_at_the_last_at_sign() {
        let url = TdUrl::parse_table(&format!(
            "td://{}@127.0.0.1:8950/testdb/output_table?mode=replace",
            key()
        ))
        .unwrap();
        assert_eq!(url.api_key.as_ref().unwrap().expose(), key());
        assert_eq!(url.host.as_deref(), Some("127.0.0.1:8950"));
        assert_eq!(
            (url.database.as_deref(), url.table.as_deref(), url.mode),
            (Some("testdb"), Some("output_table"), Some(Mode::Replace))
        );
        assert_eq!(
            url.to_string(),
            "td://***@127.0.0.1:8950/testdb/output_table?mode=replace"
        );
        assert_eq!(
            format!("{url:?}"),
            "TdUrl(td://***@127.0.0.1:8950/testdb/output_table?mode=replace)"
        );
        assert_eq!(
            TdUrl::parse("td://a@b@host/db1/t_1")
                .unwrap()
                .api_key
                .unwrap()
                .expose(),
            "a@b"
        );
        let percent = TdUrl::parse("td://1%2Fabc@/db1/tbl").unwrap();
        assert_eq!(percent.api_key.as_ref().unwrap().expose(), "1/abc");
        assert_eq!(percent.expose(), "td://1/abc@/db1/tbl");
    }

    #[test]
    fn empty_key_and_host_mean_the_jobs_own_account() {
        let url = TdUrl::parse("td://@/testdb/output_table").unwrap();
        assert_eq!(
            (url.api_key.clone(), url.host.clone(), url.mode),
            (None, None, None)
        );
        assert_eq!(url.to_string(), "td://@/testdb/output_table");
        let saved = TdUrl::parse("td://@/testdb/").unwrap();
        assert_eq!((saved.database.as_deref(), saved.table), (Some("testdb"), None));
        assert_eq!(TdUrl::parse_table("td://@/testdb"), Err(UrlError::PathParts(1)));
    }

    #[test]
    fn time_legacy_and_apikey_parameters_are_read() {
        let url = TdUrl::parse(
            "td://@h/db1/tbl?mode=append&time=2023-11-14%2022:13:20%20UTC&legacy=true&apikey=1%2Fk",
        )
        .unwrap();
        assert_eq!(
            (url.mode, url.time, url.legacy),
            (Some(Mode::Append), Some(1_700_000_000), Some(true))
        );
        assert_eq!(url.api_key.as_ref().unwrap().expose(), "1/k");
        assert_eq!(
            url.to_string(),
            "td://***@h/db1/tbl?mode=append&time=1700000000&legacy=true"
        );
        assert_eq!(TdUrl::parse("td://k@h/db1/tbl?apikey=x"), Err(UrlError::TwoKeys));
    }

    #[test]
    fn malformed_urls_say_what_is_wrong_without_the_key() {
        let err = |u: &str| TdUrl::parse(u).unwrap_err().to_string();
        let k = key();
        for (url, needle) in [
            ("mysql://u:p@h/d/t".to_string(), "scheme `mysql`".to_string()),
            ("http://x/db1/tbl".into(), "scheme `http`".into()),
            ("td:/x@h/db1/t".into(), "td://".into()),
            (format!("td://{k}/db/t"), "`@`".into()),
            (format!("td://{k}@h/db1/t1/extra"), "found 3".into()),
            (
                format!("td://{k}@h/Bad-Db/t_1"),
                "`Bad-Db` is not a valid TD name for a database".into(),
            ),
            (
                format!("td://{k}@h/db1/t"),
                "`t` is not a valid TD name for a table".into(),
            ),
            (format!("td://{k}@h/db1/tbl?mode=upsert"), "mode `upsert`".into()),
            (
                format!("td://{k}@h/db1/tbl?time=soon"),
                "time `soon` is not a time".into(),
            ),
            (
                format!("td://{k}@h/db1/tbl?mdoe=append"),
                "did you mean `mode`".into(),
            ),
            (
                format!("td://{k}@h/db1/tbl?mode=replace&mode=append"),
                "`mode` is given twice".into(),
            ),
            (
                format!("td://{k}@h/db1/tbl?legacy=maybe"),
                "legacy `maybe`".into(),
            ),
            (format!("td://{k}@bad host/db1/tbl"), "host `bad host`".into()),
            (format!("td://x@h/db1/tbl?mode={k}"), "mode `***`".into()),
        ] {
            let e = err(&url);
            assert!(e.contains(&needle), "{url}: {e}");
            assert!(!e.contains(&k), "{url}: {e}");
        }
    }
}
