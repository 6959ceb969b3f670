//! Resolution: a validated [`TaskSpec`](crate::spec::TaskSpec) becomes an [`ExportPlan`] — the
//! source, both accounts (base URL + key), the target table and how to write it. Reads only local
//! files (query file, connections file, td-local's accounts); sends nothing.
//!
//! Rules decided here (design.md leaves them open):
//! - A blank target host (td:// URL or connection) means the source account's endpoint, as an empty
//!   td:// host does; so a spec on `td: {endpoint: local}` stays local throughout.
//! - `--local DIR` sends every endpoint, source and target, to the embedded td-local: a production
//!   spec can be tried locally unchanged (keys then come from `${local:…}` or a local secrets file).
//! - With `endpoint: local` and no `td.apikey`, the source key is td-local's account 1 master key
//!   (not `TD_API_KEY`, which belongs to real TD).
//! - `--connections FILE` entries win over the spec's `connections:` of the same name; a name found in
//!   neither stays [`TargetAccount::Connection`] for the online lookup.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize, Serializer};
use url::Url;

use crate::error::{shown, At, SpecError, SpecPath};
use crate::spec::schema::{did_you_mean, Schema};
use crate::spec::{self, ConnectionSpec, Engine, Inputs, LoadedSpec, Mode, RetrySpec, Transfer};

/// The US region's API, used when nothing names a host.
pub const DEFAULT_ENDPOINT: &str = "https://api.treasuredata.com";

/// A TD API key. Never printed: Debug, Display and Serialize all give `***`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }

    /// The key itself, for the `Authorization: TD1 …` header and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for ApiKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

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

fn is_loopback(url: &Url) -> bool {
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

/// `td://[APIKEY]@[HOST[:PORT]]/DATABASE/TABLE[?mode=append|replace]`. Displays as
/// `td://***@host/db/t`; [`TdUrl::expose`] gives the text with the key (for TD's legacy connector).
#[derive(Clone, PartialEq, Eq)]
pub struct TdUrl {
    /// The key before the last `@`; `None` when empty (the source account's key).
    pub api_key: Option<ApiKey>,
    /// `host[:port]` (or `local`); `None` when empty (the source account's endpoint).
    pub host: Option<String>,
    pub database: String,
    pub table: String,
    pub mode: Option<Mode>,
}

/// A td:// URL cut into (user, host, path, query) as TD cuts it.
fn split_td_url(text: &str) -> Result<(&str, &str, &str, Option<&str>), String> {
    let rest = text
        .strip_prefix("td://")
        .ok_or_else(|| "does not start with td://".to_string())?;
    let (body, query) = match rest.rfind('?') {
        Some(q) if q > rest.rfind('@').unwrap_or(0) => (&rest[..q], Some(&rest[q + 1..])),
        _ => (rest, None),
    };
    // Keys contain `/` (`123/abc…`): the user part runs up to the LAST `@`.
    let (user, location) = match body.rfind('@') {
        Some(at) => (&body[..at], &body[at + 1..]),
        None => ("", body),
    };
    let (host, path) = location.split_once('/').unwrap_or((location, ""));
    Ok((user, host, path, query))
}

impl TdUrl {
    /// The key and host of a td:// URL that need not name a table: a saved result's URL may
    /// stop at the database (`td://KEY@host/db`), its settings naming the table.
    pub fn parse_account(text: &str) -> Result<(Option<ApiKey>, Option<String>), String> {
        let (user, host, _, _) = split_td_url(text)?;
        let user = percent_decode_str(user).decode_utf8_lossy().into_owned();
        Ok((
            (!user.is_empty()).then(|| ApiKey::new(user)),
            (!host.is_empty()).then(|| host.to_string()),
        ))
    }

    pub fn parse(text: &str) -> Result<TdUrl, String> {
        let (user, host, path, query) = split_td_url(text)?;
        let segments: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect();
        let [database, table] = <[String; 2]>::try_from(segments).map_err(|s| {
            format!(
                "must name a database and a table (/DATABASE/TABLE), found {} path part(s)",
                s.len()
            )
        })?;
        for name in [&database, &table] {
            if !spec::is_td_name(name) {
                return Err(format!(
                    "`{name}` is not a valid TD name (3 to 128 characters of lowercase a-z, 0-9 and _)"
                ));
            }
        }
        let user = percent_decode_str(user).decode_utf8_lossy().into_owned();
        if !host.is_empty() {
            Endpoint::parse(host, true).map_err(|e| format!("host `{host}` {e}"))?;
        }
        Ok(TdUrl {
            api_key: (!user.is_empty()).then(|| ApiKey::new(user)),
            host: (!host.is_empty()).then(|| host.to_string()),
            database,
            table,
            mode: query.map(parse_url_query).transpose()?.flatten(),
        })
    }

    /// The URL with its key, for TD's server-side legacy connector only.
    pub fn expose(&self) -> String {
        self.render(self.api_key.as_ref().map(ApiKey::expose))
    }

    fn render(&self, key: Option<&str>) -> String {
        // The key goes in raw: TD reads the user part up to the last `@`, `/` included.
        let mut out = format!(
            "td://{}@{}/{}/{}",
            key.unwrap_or_default(),
            self.host.as_deref().unwrap_or(""),
            self.database,
            self.table
        );
        if let Some(mode) = self.mode {
            out.push_str(&format!("?mode={mode}"));
        }
        out
    }
}

fn parse_url_query(query: &str) -> Result<Option<Mode>, String> {
    let mut mode = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "mode" => {
                mode = Some(match value {
                    "append" => Mode::Append,
                    "replace" => Mode::Replace,
                    other => return Err(format!("mode `{other}` is not append or replace")),
                })
            }
            other => {
                let hint = did_you_mean(other, ["mode"])
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                return Err(format!(
                    "query parameter `{other}` is not supported{hint}; only mode=append|replace is"
                ));
            }
        }
    }
    Ok(mode)
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
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl TryFrom<String> for TdUrl {
    type Error = String;
    fn try_from(text: String) -> Result<TdUrl, String> {
        TdUrl::parse(&text)
    }
}

impl<'de> Deserialize<'de> for TdUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TdUrl, D::Error> {
        let text = String::deserialize(d)?;
        TdUrl::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// An account: where its API is and the key to use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    pub endpoint: Endpoint,
    pub api_key: ApiKey,
}

/// What to export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// An existing job (waited for if still running).
    Job { id: String },
    /// A query to issue (with the idempotency key as `domain_key`).
    Query {
        sql: String,
        database: String,
        engine: Engine,
    },
}

/// The target's account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TargetAccount {
    /// Endpoint and key known now (a td:// URL, or a connection from `--connections`/`connections:`).
    Known {
        account: Account,
        /// The connection's name, when it came from one.
        connection: Option<String>,
    },
    /// A `result_connection` defined nowhere locally: looked up on the source account at run time
    /// (`/v3/connections/lookup`, `/v3/result/list`). `result_settings.api_key`/`api_hostname`
    /// override what the lookup finds.
    Connection {
        name: String,
        api_key: Option<ApiKey>,
        endpoint: Option<Endpoint>,
    },
}

/// Where the rows go and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub account: TargetAccount,
    pub database: String,
    pub table: String,
    pub mode: Mode,
    /// Unix seconds for rows when the result has no `time` column.
    pub time: Option<i64>,
    pub legacy_mode: bool,
    /// The td:// URL as written (key included, shown redacted), when the target was given as one.
    pub url: Option<TdUrl>,
}

/// Whole-task retries (Digdag's `_retry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TaskRetry {
    /// Retries after the first attempt (0: none).
    pub limit: u32,
    /// Seconds before the first retry.
    pub interval_secs: u64,
    /// Double the interval after each retry.
    pub exponential: bool,
    /// Cap of an exponential interval, in seconds.
    pub max_interval_secs: Option<u64>,
}

impl TaskRetry {
    pub const NONE: TaskRetry = TaskRetry {
        limit: 0,
        interval_secs: 0,
        exponential: false,
        max_interval_secs: None,
    };

    /// Wait before retry number `n` (1-based).
    pub fn interval_before(&self, n: u32) -> std::time::Duration {
        let secs = if self.exponential {
            let grown = self
                .interval_secs
                .saturating_mul(1u64 << n.saturating_sub(1).min(32));
            self.max_interval_secs.map_or(grown, |cap| grown.min(cap))
        } else {
            self.interval_secs
        };
        std::time::Duration::from_secs(secs)
    }
}

/// Everything the export needs, resolved and checked; no request has been sent yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportPlan {
    pub source: Source,
    /// The account that ran (or runs) the source job.
    pub source_account: Account,
    pub target: Target,
    pub transfer: Transfer,
    pub retry: TaskRetry,
    /// `idempotency_key:` when given; otherwise the export derives it from the source job id and target.
    pub idempotency_key: Option<String>,
    /// Data directory of the embedded td-local, when any endpoint is [`Endpoint::Local`].
    pub local_dir: Option<PathBuf>,
}

impl ExportPlan {
    pub fn uses_local(&self) -> bool {
        self.source_account.endpoint == Endpoint::Local
            || match &self.target.account {
                TargetAccount::Known { account, .. } => account.endpoint == Endpoint::Local,
                TargetAccount::Connection { endpoint, .. } => endpoint.as_ref() == Some(&Endpoint::Local),
            }
    }
}

/// Resolves a loaded spec. With `inputs.local_dir` set (`--local DIR`), every endpoint becomes the
/// embedded td-local, so a production spec can be tried locally unchanged.
pub fn resolve(loaded: &LoadedSpec, inputs: &Inputs) -> Result<ExportPlan, SpecError> {
    let force_local = inputs.local_dir.is_some();
    let source = resolve_source(loaded)?;
    let source_account = resolve_source_account(loaded, force_local)?;
    let target = resolve_target(loaded, inputs, &source_account, force_local)?;
    let spec = &loaded.spec;
    let mut plan = ExportPlan {
        source,
        source_account,
        target,
        transfer: spec.transfer.unwrap_or_default(),
        retry: resolve_retry(spec.retry.as_ref()),
        idempotency_key: spec.idempotency_key.clone(),
        local_dir: None,
    };
    if plan.uses_local() {
        plan.local_dir = Some(loaded.interpolator.local_dir().to_path_buf());
    }
    Ok(plan)
}

fn resolve_source(loaded: &LoadedSpec) -> Result<Source, SpecError> {
    let spec = &loaded.spec;
    if let Some(id) = &spec.job_id {
        return Ok(Source::Job { id: id.clone() });
    }
    let database = spec.database.clone().unwrap_or_default();
    let engine = spec.engine.unwrap_or_default();
    let sql = match (&spec.query, &spec.query_file) {
        (Some(sql), _) => sql.clone(),
        (None, Some(file)) => read_query_file(loaded, file)?,
        (None, None) => unreachable!("the spec stage guarantees one source"),
    };
    Ok(Source::Query {
        sql,
        database,
        engine,
    })
}

fn read_query_file(loaded: &LoadedSpec, file: &str) -> Result<String, SpecError> {
    let path = loaded.base_dir.join(file);
    let text = std::fs::read_to_string(&path).map_err(|e| SpecError::Invalid {
        at: loaded.at(&SpecPath::parse("query_file")),
        problem: format!("cannot read the query file `{}`: {e}", path.display()),
        fix: "query_file is relative to the spec file's directory.".to_string(),
    })?;
    let at = At {
        file: path.display().to_string().into(),
        line: None,
        path: SpecPath::parse("query_file"),
    };
    loaded
        .interpolator
        .interpolate(&text)
        .map_err(|u| spec::unresolved_error(u, at))
}

fn resolve_source_account(loaded: &LoadedSpec, force_local: bool) -> Result<Account, SpecError> {
    let td = &loaded.spec.td;
    let use_ssl = td.use_ssl.unwrap_or(true);
    let endpoint_at = loaded.at(&SpecPath::parse("td.endpoint"));
    let endpoint = if force_local {
        Endpoint::Local
    } else {
        let (text, origin) = match td.endpoint.as_deref().filter(|e| !e.trim().is_empty()) {
            Some(text) => (Some(text.to_string()), "td.endpoint"),
            None => (
                loaded.interpolator.secret("td.endpoint").ok(),
                "TD_API_SERVER or ~/.td/td.conf",
            ),
        };
        match text {
            Some(text) => Endpoint::parse(&text, use_ssl)
                .map_err(|e| invalid_host(endpoint_at, &text, origin, &e))?
                .unwrap_or_else(Endpoint::default_us),
            None => Endpoint::default_us(),
        }
    };
    let api_key = match td.apikey.clone().filter(|k| !k.expose().trim().is_empty()) {
        Some(key) => key,
        None if endpoint == Endpoint::Local => local_key(loaded, 1, &SpecPath::parse("td.apikey"))?,
        None => loaded
            .interpolator
            .secret("td.apikey")
            .map(ApiKey::new)
            .map_err(|tried| SpecError::Invalid {
                at: loaded.at(&SpecPath::parse("td")),
                problem: format!(
                    "no API key for the source account (looked in: td.apikey, {})",
                    tried.join(", ")
                ),
                fix: "Add `td: {apikey: \"${secret:td.apikey}\"}` with --secrets FILE, or set TD_API_KEY."
                    .to_string(),
            })?,
    };
    Ok(Account { endpoint, api_key })
}

fn invalid_host(at: At, text: &str, origin: &str, problem: &str) -> SpecError {
    let value = shown(&SpecPath::parse("host"), text);
    let problem = if at.path.to_string() == origin {
        format!("{value} {problem}")
    } else {
        format!("{value} (from {origin}) {problem}")
    };
    SpecError::Invalid {
        at,
        problem,
        fix: "Give a bare host (api.treasuredata.co.jp), a base URL (http://127.0.0.1:8950) or `local`."
            .to_string(),
    }
}

/// The master key of td-local's account `id`.
fn local_key(loaded: &LoadedSpec, id: i64, path: &SpecPath) -> Result<ApiKey, SpecError> {
    let accounts = loaded
        .interpolator
        .local_accounts()
        .map_err(|problem| SpecError::Invalid {
            at: loaded.at(path),
            problem,
            fix: "Check that --local DIR is a writable directory.".to_string(),
        })?;
    let account = accounts
        .iter()
        .find(|a| a.id == id)
        .ok_or_else(|| SpecError::Invalid {
            at: loaded.at(path),
            problem: format!("td-local has no account {id}"),
            fix: "Give the key explicitly, e.g. ${local:account1.master_key}.".to_string(),
        })?;
    Ok(ApiKey::new(account.master_key.clone()))
}

fn resolve_target(
    loaded: &LoadedSpec,
    inputs: &Inputs,
    source: &Account,
    force_local: bool,
) -> Result<Target, SpecError> {
    let spec = &loaded.spec;
    let settings = spec.result_settings.clone().unwrap_or_default();
    let time = settings
        .time
        .as_ref()
        .map(|t| t.to_seconds().expect("checked by the spec stage"));
    let legacy_mode = settings.legacy_mode.unwrap_or(false);
    if let Some(url) = &spec.result_url {
        let endpoint = match (&url.host, force_local) {
            (_, true) => Endpoint::Local,
            (Some(host), false) => Endpoint::parse(host, true)
                .map_err(|e| invalid_host(loaded.at(&SpecPath::parse("result_url")), host, "result_url", &e))?
                .unwrap_or_else(|| source.endpoint.clone()),
            (None, false) => source.endpoint.clone(),
        };
        let api_key = url.api_key.clone().unwrap_or_else(|| source.api_key.clone());
        return Ok(Target {
            account: TargetAccount::Known {
                account: Account { endpoint, api_key },
                connection: None,
            },
            database: url.database.clone(),
            table: url.table.clone(),
            mode: settings.mode.or(url.mode).unwrap_or_default(),
            time,
            legacy_mode,
            url: Some(url.clone()),
        });
    }
    let name = spec
        .result_connection
        .clone()
        .expect("the spec stage guarantees one target");
    let settings_host = |path: &str| -> Result<Option<Endpoint>, SpecError> {
        match settings.api_hostname.as_deref() {
            Some(host) => Endpoint::parse(host, true)
                .map_err(|e| invalid_host(loaded.at(&SpecPath::parse(path)), host, path, &e)),
            None => Ok(None),
        }
    };
    let host_override = settings_host("result_settings.api_hostname")?;
    let account = match find_connection(loaded, inputs, &name)? {
        Some((connection, conn_path, at)) => {
            let endpoint = match (force_local, host_override) {
                (true, _) => Endpoint::Local,
                (false, Some(endpoint)) => endpoint,
                (false, None) => match connection.api_hostname.as_deref() {
                    Some(host) => Endpoint::parse(host, true)
                        .map_err(|e| {
                            invalid_host(at(&conn_path.key("api_hostname")), host, "the connection", &e)
                        })?
                        .unwrap_or_else(|| source.endpoint.clone()),
                    None => source.endpoint.clone(),
                },
            };
            let api_key = settings
                .api_key
                .clone()
                .or(connection.api_key.clone())
                .ok_or_else(|| SpecError::Invalid {
                    at: at(&conn_path),
                    problem: format!("connection `{name}` has no api_key"),
                    fix: "Add api_key: ${secret:NAME} to the connection, or result_settings.api_key."
                        .to_string(),
                })?;
            TargetAccount::Known {
                account: Account { endpoint, api_key },
                connection: Some(name.clone()),
            }
        }
        None => TargetAccount::Connection {
            name: name.clone(),
            api_key: settings.api_key.clone(),
            endpoint: if force_local {
                Some(Endpoint::Local)
            } else {
                host_override
            },
        },
    };
    Ok(Target {
        account,
        database: settings
            .user_database_name
            .clone()
            .expect("checked by the spec stage"),
        table: settings
            .user_table_name
            .clone()
            .expect("checked by the spec stage"),
        mode: settings.mode.unwrap_or_default(),
        time,
        legacy_mode,
        url: None,
    })
}

type Locate<'a> = Box<dyn Fn(&SpecPath) -> At + 'a>;

/// A connection by name: the `--connections` file first, then the spec's `connections:`.
fn find_connection<'a>(
    loaded: &'a LoadedSpec,
    inputs: &Inputs,
    name: &str,
) -> Result<Option<(ConnectionSpec, SpecPath, Locate<'a>)>, SpecError> {
    if let Some(file) = &inputs.connections_file {
        let connections = load_connections_file(loaded, file)?;
        if let Some((connection, at)) = connections.remove_entry_with(name) {
            return Ok(Some((connection, SpecPath::parse(name), at)));
        }
    }
    Ok(loaded.spec.connections.get(name).map(|c| {
        let path = SpecPath::parse("connections").key(name);
        let at: Locate<'a> = Box::new(move |p: &SpecPath| loaded.at(p));
        (c.clone(), path, at)
    }))
}

struct ConnectionsFile {
    connections: BTreeMap<String, ConnectionSpec>,
    file: std::sync::Arc<str>,
    locator: spec::locate::Locator,
}

impl ConnectionsFile {
    fn remove_entry_with<'a>(mut self, name: &str) -> Option<(ConnectionSpec, Locate<'a>)> {
        let connection = self.connections.remove(name)?;
        let (file, locator) = (self.file, self.locator);
        let at: Locate<'a> = Box::new(move |p: &SpecPath| At {
            file: file.clone(),
            line: locator.line(p),
            path: p.clone(),
        });
        Some((connection, at))
    }
}

/// Reads, interpolates and validates a `--connections` file (`NAME: {type, api_key, api_hostname}`).
fn load_connections_file(loaded: &LoadedSpec, path: &Path) -> Result<ConnectionsFile, SpecError> {
    let file: std::sync::Arc<str> = path.display().to_string().into();
    let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
        what: "connections file",
        path: path.to_path_buf(),
        source,
    })?;
    let mut doc = spec::parse_yaml(&text, &file)?;
    if doc.is_null() {
        doc = serde_json::json!({});
    }
    let locator = spec::locate::Locator::new(&text);
    let at = |p: &SpecPath| At {
        file: file.clone(),
        line: locator.line(p),
        path: p.clone(),
    };
    spec::interpolate_tree(&loaded.interpolator, &mut doc, &SpecPath::root(), &at)?;
    if let Some((_, _, err)) = spec::first_error(Schema::connections_file().check(&doc, &at)) {
        return Err(err);
    }
    let connections = serde_json::from_value(doc).map_err(|e| SpecError::Invalid {
        at: at(&SpecPath::root()),
        problem: e.to_string(),
        fix: "Write NAME: {type: treasure_data, api_key: …, api_hostname: …}.".to_string(),
    })?;
    Ok(ConnectionsFile {
        connections,
        file,
        locator,
    })
}

fn resolve_retry(retry: Option<&RetrySpec>) -> TaskRetry {
    match retry {
        None => TaskRetry::NONE,
        Some(RetrySpec::Limit(limit)) => TaskRetry {
            limit: *limit,
            ..TaskRetry::NONE
        },
        Some(RetrySpec::Full {
            limit,
            interval,
            interval_type,
            max_interval,
        }) => TaskRetry {
            limit: *limit,
            interval_secs: interval.unwrap_or(0),
            exponential: interval_type.as_deref() == Some("exponential"),
            max_interval_secs: *max_interval,
        },
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

    #[test]
    fn td_urls_split_the_key_at_the_last_at_sign() {
        let key = format!("123/{}", "ab".repeat(20));
        let url = TdUrl::parse(&format!(
            "td://{key}@127.0.0.1:8950/testdb/output_table?mode=replace"
        ))
        .unwrap();
        assert_eq!(url.api_key.as_ref().unwrap().expose(), key);
        assert_eq!(url.host.as_deref(), Some("127.0.0.1:8950"));
        assert_eq!(
            (url.database.as_str(), url.table.as_str(), url.mode),
            ("testdb", "output_table", Some(Mode::Replace))
        );
        assert_eq!(
            url.to_string(),
            "td://***@127.0.0.1:8950/testdb/output_table?mode=replace"
        );
        assert_eq!(
            format!("{url:?}"),
            "TdUrl(td://***@127.0.0.1:8950/testdb/output_table?mode=replace)"
        );
        let url = TdUrl::parse("td://a@b@host/db1/t_1").unwrap();
        assert_eq!(url.api_key.unwrap().expose(), "a@b");
    }

    #[test]
    fn empty_key_and_host_mean_the_source_account() {
        let url = TdUrl::parse("td://@/testdb/output_table").unwrap();
        assert_eq!((url.api_key, url.host, url.mode), (None, None, None));
        assert_eq!(
            TdUrl::parse("td://@/testdb/out").unwrap().to_string(),
            "td://@/testdb/out"
        );
        assert_eq!(
            TdUrl::parse("td://KEY@/db1/tbl").unwrap().expose(),
            "td://KEY@/db1/tbl"
        );
        let percent = TdUrl::parse("td://1%2Fabc@/db1/tbl").unwrap();
        assert_eq!(percent.api_key.as_ref().unwrap().expose(), "1/abc");
        assert_eq!(percent.expose(), "td://1/abc@/db1/tbl");
    }

    #[test]
    fn malformed_td_urls_say_what_is_wrong() {
        let err = |u: &str| TdUrl::parse(u).unwrap_err();
        assert!(err("td://@/onlydb").contains("database and a table"));
        assert!(err("td://@/db1/t1/extra").contains("found 3"));
        assert!(err("td://@/Bad-Db/t_1").contains("`Bad-Db` is not a valid TD name"));
        assert!(err("td://@/db1/tbl?mode=upsert").contains("mode `upsert`"));
        assert!(err("td://@/db1/tbl?mdoe=append").contains("did you mean `mode`"));
        assert!(err("http://x/db1/tbl").contains("td://"));
        assert!(err("td://k@bad host/db1/tbl").contains("host `bad host`"));
    }

    #[test]
    fn api_keys_never_print() {
        let key = ApiKey::new("1/secret");
        assert_eq!(format!("{key} {key:?}"), "*** ***");
        assert_eq!(serde_json::to_string(&key).unwrap(), "\"***\"");
    }

    #[test]
    fn exponential_task_retry_intervals_double_up_to_the_cap() {
        let retry = TaskRetry {
            limit: 5,
            interval_secs: 2,
            exponential: true,
            max_interval_secs: Some(10),
        };
        let secs: Vec<u64> = (1..=4).map(|n| retry.interval_before(n).as_secs()).collect();
        assert_eq!(secs, [2, 4, 8, 10]);
        let constant = TaskRetry {
            exponential: false,
            ..retry
        };
        assert_eq!(constant.interval_before(3).as_secs(), 2);
    }
}
