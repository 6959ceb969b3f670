//! Resolution: a validated [`TaskSpec`](crate::spec::TaskSpec) becomes an [`ExportPlan`] — the
//! source, both accounts (base URL + key), the target table and how to write it. Reads only the
//! query file and what the spec stage loaded; sends nothing.
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

mod endpoint;
mod plan;

use td_model::{ApiKey, TdUrl};

pub use endpoint::{Endpoint, DEFAULT_ENDPOINT};
pub use plan::{Account, ExportPlan, Source, Target, TargetAccount, TaskRetry};

use crate::error::{shown, At, SpecError, SpecPath};
use crate::spec::{self, ConnectionSpec, ConnectionsFile, Inputs, LoadedSpec, ResultSettings, RetrySpec};

/// Resolves a loaded spec. With `inputs.local_dir` set (`--local DIR`), every endpoint becomes the
/// embedded td-local, so a production spec can be tried locally unchanged.
pub fn resolve(loaded: &LoadedSpec, inputs: &Inputs) -> Result<ExportPlan, SpecError> {
    let force_local = inputs.local_dir.is_some();
    let source = resolve_source(loaded)?;
    let source_account = resolve_source_account(loaded, force_local)?;
    let target = resolve_target(loaded, &source_account, force_local)?;
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
    let text = spec::read_text(&path, "query file").map_err(|e| SpecError::Invalid {
        at: loaded.at(&SpecPath::parse("query_file")),
        problem: e.to_string(),
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

fn resolve_target(loaded: &LoadedSpec, source: &Account, force_local: bool) -> Result<Target, SpecError> {
    let spec = &loaded.spec;
    let settings = spec.result_settings.clone().unwrap_or_default();
    let url = spec.result_url.as_ref();
    let time = settings
        .time
        .as_ref()
        .map(|t| t.to_seconds().expect("checked by the spec stage"));
    let (database, table, account) = match url {
        Some(url) => (
            url.database
                .clone()
                .expect("the spec stage checked the URL names a table"),
            url.table
                .clone()
                .expect("the spec stage checked the URL names a table"),
            url_account(loaded, url, source, force_local)?,
        ),
        None => (
            settings
                .user_database_name
                .clone()
                .expect("checked by the spec stage"),
            settings
                .user_table_name
                .clone()
                .expect("checked by the spec stage"),
            connection_account(loaded, &settings, source, force_local)?,
        ),
    };
    Ok(Target {
        account,
        database,
        table,
        mode: settings.mode.or(url.and_then(|u| u.mode)).unwrap_or_default(),
        time: time.or(url.and_then(|u| u.time)),
        legacy_mode: settings
            .legacy_mode
            .or(url.and_then(|u| u.legacy))
            .unwrap_or(false),
        url: url.cloned(),
    })
}

/// A td:// URL's account: its key and host, or the source account's where it leaves them empty.
fn url_account(
    loaded: &LoadedSpec,
    url: &TdUrl,
    source: &Account,
    force_local: bool,
) -> Result<TargetAccount, SpecError> {
    let endpoint = match (&url.host, force_local) {
        (_, true) => Endpoint::Local,
        (Some(host), false) => Endpoint::parse(host, true)
            .map_err(|e| invalid_host(loaded.at(&SpecPath::parse("result_url")), host, "result_url", &e))?
            .unwrap_or_else(|| source.endpoint.clone()),
        (None, false) => source.endpoint.clone(),
    };
    let api_key = url.api_key.clone().unwrap_or_else(|| source.api_key.clone());
    Ok(TargetAccount::Known {
        account: Account { endpoint, api_key },
        connection: None,
    })
}

/// A `result_connection`'s account: from `--connections` or `connections:` when defined there
/// (`result_settings.api_key`/`api_hostname` override it), else looked up at run time.
fn connection_account(
    loaded: &LoadedSpec,
    settings: &ResultSettings,
    source: &Account,
    force_local: bool,
) -> Result<TargetAccount, SpecError> {
    let name = loaded
        .spec
        .result_connection
        .clone()
        .expect("the spec stage guarantees one target");
    let host_override = match settings.api_hostname.as_deref() {
        Some(host) => {
            let path = "result_settings.api_hostname";
            Endpoint::parse(host, true)
                .map_err(|e| invalid_host(loaded.at(&SpecPath::parse(path)), host, path, &e))?
        }
        None => None,
    };
    let Some(found) = find_connection(loaded, &name) else {
        return Ok(TargetAccount::Connection {
            name,
            api_key: settings.api_key.clone(),
            endpoint: if force_local {
                Some(Endpoint::Local)
            } else {
                host_override
            },
        });
    };
    let endpoint = match (force_local, host_override, found.spec.api_hostname.as_deref()) {
        (true, _, _) => Endpoint::Local,
        (false, Some(endpoint), _) => endpoint,
        (false, None, Some(host)) => Endpoint::parse(host, true)
            .map_err(|e| {
                invalid_host(
                    found.at(&found.path.key("api_hostname")),
                    host,
                    "the connection",
                    &e,
                )
            })?
            .unwrap_or_else(|| source.endpoint.clone()),
        (false, None, None) => source.endpoint.clone(),
    };
    let api_key = settings
        .api_key
        .clone()
        .or(found.spec.api_key.clone())
        .ok_or_else(|| SpecError::Invalid {
            at: found.at(&found.path),
            problem: format!("connection `{name}` has no api_key"),
            fix: "Add api_key: ${secret:NAME} to the connection, or result_settings.api_key.".to_string(),
        })?;
    Ok(TargetAccount::Known {
        account: Account { endpoint, api_key },
        connection: Some(name),
    })
}

/// A connection defined locally, and where it was written (for messages).
struct Found<'a> {
    spec: &'a ConnectionSpec,
    path: SpecPath,
    file: Option<&'a ConnectionsFile>,
    loaded: &'a LoadedSpec,
}

impl Found<'_> {
    fn at(&self, path: &SpecPath) -> At {
        match self.file {
            Some(file) => file.at(path),
            None => self.loaded.at(path),
        }
    }
}

/// A connection by name: the `--connections` file first, then the spec's `connections:`.
fn find_connection<'a>(loaded: &'a LoadedSpec, name: &str) -> Option<Found<'a>> {
    if let Some(file) = &loaded.connections_file {
        if let Some(spec) = file.get(name) {
            return Some(Found {
                spec,
                path: SpecPath::parse(name),
                file: Some(file),
                loaded,
            });
        }
    }
    loaded.spec.connections.get(name).map(|spec| Found {
        spec,
        path: SpecPath::parse("connections").key(name),
        file: None,
        loaded,
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
