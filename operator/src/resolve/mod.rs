//! Resolution: a validated [`TaskSpec`](crate::spec::TaskSpec) becomes an [`ExportPlan`] — the
//! source, both accounts (base URL + key), the target table and how to write it. Reads only the
//! query file and what the spec stage loaded; sends nothing.
//!
//! Rules decided here (the stage of docs/architecture.md §1 that owns them):
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
mod target;

use td_model::ApiKey;

pub(crate) use endpoint::is_loopback;
pub use endpoint::Endpoint;
pub(crate) use plan::{Account, EngineChoice, KeyFrom, ProxyPlan, QueryOptions, TaskRetry};
pub use plan::{ExportPlan, Source, Target, TargetAccount};
pub(crate) use target::{choose_engine, forwarded_setting, unknown_setting, TargetKey};

use crate::error::{shown, At, SpecError, SpecPath, Warning};
use crate::spec::{self, Inputs, LoadedSpec, QueryText, RetrySpec, SourceSpec};

/// Resolves a loaded spec into the plan and the warnings it gives. With `inputs.local_dir` set
/// (`--local DIR`), every endpoint becomes the embedded td-local, so a production spec can be tried
/// locally unchanged.
pub(crate) fn resolve(loaded: &LoadedSpec, inputs: &Inputs) -> Result<(ExportPlan, Vec<Warning>), SpecError> {
    let force_local = inputs.local_dir.is_some();
    // The parts that do not depend on each other are all resolved, so that one run names every
    // problem of the spec, in file order.
    let source = resolve_source(loaded);
    let account = resolve_source_account(loaded, force_local);
    let target = account
        .as_ref()
        .ok()
        .map(|(account, _)| target::resolve_target(loaded, account, force_local));
    let proxy = resolve_proxy(loaded);
    let (source, (source_account, source_key_from), target, proxy) = match (source, account, target, proxy) {
        (Ok(source), Ok(account), Some(Ok(target)), Ok(proxy)) => (source, account, target, proxy),
        (source, account, target, proxy) => {
            return Err(in_file_order(
                [
                    source.err(),
                    account.err(),
                    target.and_then(Result::err),
                    proxy.err(),
                ]
                .into_iter()
                .flatten(),
            ))
        }
    };
    let spec = &loaded.spec;
    let transfer = spec.transfer.unwrap_or_default();
    let (engine, mut warnings) = target::engine_of_spec(transfer, &target)?;
    warnings.extend(unknown_td_host(
        &source_account.endpoint,
        loaded.at(&SpecPath::parse("td.endpoint")),
    ));
    if let TargetAccount::Known { account, .. } = &target.account {
        warnings.extend(unknown_td_host(
            &account.endpoint,
            loaded.at(&SpecPath::parse("result_url")),
        ));
    }
    let mut plan = ExportPlan {
        source,
        source_account,
        target,
        transfer,
        engine,
        proxy,
        retry: resolve_retry(spec.retry.as_ref()),
        idempotency_key: spec.idempotency_key.clone(),
        local_dir: None,
        source_key_from,
    };
    if plan.uses_local() {
        if !cfg!(feature = "local") {
            return Err(no_local(loaded, force_local));
        }
        plan.local_dir = Some(loaded.interpolator.local_dir().to_path_buf());
    }
    check_keys(&plan, loaded)?;
    Ok((plan, warnings))
}

/// Several errors as one, in the order of their lines in the file (those without a line last).
fn in_file_order(errors: impl Iterator<Item = SpecError>) -> SpecError {
    let mut all: Vec<SpecError> = errors
        .flat_map(|e| match e {
            SpecError::Several { errors } => errors,
            e => vec![e],
        })
        .collect();
    all.sort_by_key(|e| e.at().and_then(|at| at.line).unwrap_or(usize::MAX));
    match <[SpecError; 1]>::try_from(all) {
        Ok([one]) => one,
        Err(all) => SpecError::Several { errors: all },
    }
}

/// TD's API hosts, one per region, as TD's API description lists its servers
/// (https://td-public.redocly.app/apis/td-api).
pub(crate) const TD_API_HOSTS: [&str; 4] = [
    "api.treasuredata.com",
    "api.treasuredata.co.jp",
    "api.ap02.treasuredata.com",
    "api.eu01.treasuredata.com",
];

/// A warning for a host that looks meant for TD but is none of its API hosts (a console host, a
/// typo): every call would fail there. Loopback, td-local and other hosts (a proxy, a test
/// server) pass.
fn unknown_td_host(endpoint: &Endpoint, at: At) -> Option<Warning> {
    let host = endpoint.url()?.host_str()?.to_ascii_lowercase();
    if TD_API_HOSTS.contains(&host.as_str()) {
        return None;
    }
    let suggestion = td_model::did_you_mean(&host, TD_API_HOSTS);
    if !host.contains("treasuredata") && suggestion.is_none() {
        return None;
    }
    let meant = suggestion
        .map(|s| format!(" Did you mean `{s}`?"))
        .unwrap_or_default();
    Some(Warning {
        at,
        message: format!(
            "`{host}` is not one of TD's API hosts ({}).{meant}",
            TD_API_HOSTS.join(", ")
        ),
    })
}

/// Every key the plan would send has the shape of a TD API key: a key cut short, or with a
/// stray character, is refused here rather than sent (never shown: it is a key).
fn check_keys(plan: &ExportPlan, loaded: &LoadedSpec) -> Result<(), SpecError> {
    let target = match &plan.target.account {
        TargetAccount::Known {
            account, key_from, ..
        } => Some((&account.api_key, key_from.clone())),
        TargetAccount::Connection { api_key, .. } => api_key.as_ref().map(|k| (k, KeyFrom::SettingsApiKey)),
    };
    let keys = [
        Some((&plan.source_account.api_key, plan.source_key_from.clone())),
        target,
    ];
    for (key, from) in keys.into_iter().flatten() {
        if !td_model::key::is_api_key(key.expose()) {
            return Err(SpecError::Invalid {
                at: loaded.at(&SpecPath::parse(from.spec_path())),
                problem: format!("the API key ({from}) is not shaped like a TD API key"),
                fix: "A TD API key is <user id>/<40 hex characters>, e.g. 1234/0123…cdef: check it was copied whole."
                    .to_string(),
            });
        }
    }
    Ok(())
}

fn resolve_source(loaded: &LoadedSpec) -> Result<Source, SpecError> {
    let spec = &loaded.spec;
    let (text, database) = match &loaded.source {
        SourceSpec::Job { id } => return Ok(Source::Job { id: id.clone() }),
        SourceSpec::Query { text, database } => (text, database.clone()),
    };
    let sql = match text {
        QueryText::Inline(sql) => sql.clone(),
        QueryText::File(file) => read_query_file(loaded, file)?,
    };
    let options = QueryOptions {
        priority: spec.priority.map(|p| p.0),
        retry_limit: spec.retry_limit,
        pool_name: spec.pool_name.clone(),
        engine_version: spec.engine_version.clone(),
        scheduled_time: spec.scheduled_time.map(|t| t.0),
    };
    Ok(Source::Query {
        sql,
        database,
        engine: spec.engine.unwrap_or_default(),
        options,
    })
}

fn read_query_file(loaded: &LoadedSpec, file: &str) -> Result<String, SpecError> {
    let path = loaded.base_dir.join(file);
    let text =
        spec::read_text(&path, "query file", spec::MAX_QUERY_BYTES).map_err(|e| SpecError::Invalid {
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

fn resolve_source_account(loaded: &LoadedSpec, force_local: bool) -> Result<(Account, KeyFrom), SpecError> {
    let td = &loaded.spec.td;
    // As Digdag reads td.*: the spec's value, else the secret of the same name.
    let use_ssl = match td.use_ssl {
        Some(b) => b,
        None => match loaded.interpolator.secret("td.use_ssl") {
            Ok(text) => parse_bool(&text).ok_or_else(|| SpecError::Invalid {
                at: loaded.at(&SpecPath::parse("td.use_ssl")),
                problem: format!(
                    "the secret td.use_ssl is {}, not true or false",
                    shown(&SpecPath::parse("x"), &text)
                ),
                fix: "Set it to true or false.".to_string(),
            })?,
            Err(_) => true,
        },
    };
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
    if endpoint == Endpoint::Local && !cfg!(feature = "local") {
        return Err(no_local(loaded, force_local));
    }
    let (api_key, key_from) = match td.apikey.clone().filter(|k| !k.expose().trim().is_empty()) {
        Some(key) => (key, KeyFrom::SpecApikey),
        None if endpoint == Endpoint::Local => (
            local_key(loaded, 1, &SpecPath::parse("td.apikey"))?,
            KeyFrom::LocalAccount(1),
        ),
        None => loaded
            .interpolator
            .secret_found("td.apikey")
            .map(|(key, found)| {
                (
                    ApiKey::new(key),
                    KeyFrom::Secret {
                        found: found.to_string(),
                    },
                )
            })
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
    Ok((Account { endpoint, api_key }, key_from))
}

/// `endpoint: local` or `--local` in a build without td-local.
fn no_local(loaded: &LoadedSpec, force_local: bool) -> SpecError {
    let path = if force_local { "--local" } else { "td.endpoint" };
    SpecError::Invalid {
        at: loaded.at(&SpecPath::parse(path)),
        problem: format!("`local` names the embedded td-local, and {}", crate::NO_LOCAL),
        fix: "Give a TD API host (api.treasuredata.com), a running td-local's URL (http://127.0.0.1:8950), \
              or use a build with td-local (the wheel, or a default cargo build)."
            .to_string(),
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// `td.proxy`, when enabled: an HTTP proxy for every call to TD.
fn resolve_proxy(loaded: &LoadedSpec) -> Result<Option<ProxyPlan>, SpecError> {
    let Some(proxy) = &loaded.spec.td.proxy else {
        return Ok(None);
    };
    if proxy.enabled == Some(false) {
        return Ok(None);
    }
    let host = proxy
        .host
        .as_deref()
        .filter(|h| !h.trim().is_empty())
        .ok_or_else(|| SpecError::Invalid {
            at: loaded.at(&SpecPath::parse("td.proxy")),
            problem: "`host` is missing".to_string(),
            fix: "Add td.proxy.host (and port), or enabled: false.".to_string(),
        })?;
    let scheme = if proxy.use_ssl.unwrap_or(false) {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{}:{}", host.trim(), proxy.port.unwrap_or(8080));
    url::Url::parse(&url).map_err(|e| SpecError::Invalid {
        at: loaded.at(&SpecPath::parse("td.proxy.host")),
        problem: format!("{} is not a host ({e})", shown(&SpecPath::parse("host"), host)),
        fix: "Give a host name or address, e.g. proxy.example.com.".to_string(),
    })?;
    Ok(Some(ProxyPlan {
        url,
        user: proxy.user.clone().filter(|u| !u.is_empty()),
        password: proxy.password.clone(),
    }))
}

pub(super) fn invalid_host(at: At, text: &str, origin: &str, problem: &str) -> SpecError {
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
            interval_type: interval_type.unwrap_or_default(),
            max_interval_secs: *max_interval,
        },
    }
}
