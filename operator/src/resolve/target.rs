//! The target side of resolution: the target account (a td:// URL's, a connection's, or one to
//! look up at run time), the table and the settings, and — when the spec decides it — the engine.

use td_model::{did_you_mean, TdUrl};

use super::plan::{Account, EngineChoice, Settings, Target, TargetAccount, UnknownSetting};
use super::{invalid_host, Endpoint};
use crate::error::{At, SpecError, SpecPath, Warning};
use crate::spec::{
    ConnectionSpec, ConnectionsFile, LoadedSpec, ResultSettings, ResultUrl, Transfer, TransferChoice,
    KNOWN_SETTINGS,
};

/// The target: a td:// URL, a saved result (`NAME:TABLE`) or a `result_connection`, with the
/// settings that complete it.
pub(super) fn resolve_target(
    loaded: &LoadedSpec,
    source: &Account,
    force_local: bool,
) -> Result<Target, SpecError> {
    let spec = &loaded.spec;
    let settings = spec.result_settings.clone().unwrap_or_default();
    let time = settings
        .time
        .as_ref()
        .map(|t| t.to_seconds().expect("checked by the spec stage"));
    let (account, database, table, url) = match &spec.result_url {
        Some(ResultUrl::Td(url)) => (
            url_account(loaded, url, source, force_local)?,
            url.database.clone(),
            url.table
                .clone()
                .expect("the spec stage checked the URL names a table"),
            Some(url),
        ),
        Some(ResultUrl::Saved { name, table }) => (
            online_account(name, &settings, loaded, force_local)?,
            settings.user_database_name.clone(),
            table.clone(),
            None,
        ),
        None => (
            connection_account(loaded, &settings, source, force_local)?,
            settings.user_database_name.clone(),
            settings
                .user_table_name
                .clone()
                .expect("checked by the spec stage"),
            None,
        ),
    };
    let unknown_settings = loaded
        .raw_settings
        .keys()
        .filter(|k| !KNOWN_SETTINGS.contains(&k.as_str()))
        .map(|key| UnknownSetting {
            key: key.clone(),
            at: loaded.at(&SpecPath::parse("result_settings").key(key)),
        })
        .collect();
    let mode = settings.mode.or(url.and_then(|u| u.mode));
    // A saved result may give the mode; any other target appends unless told otherwise.
    let mode = match &account {
        TargetAccount::Known { .. } => Some(mode.unwrap_or_default()),
        TargetAccount::Connection { .. } => mode,
    };
    Ok(Target {
        account,
        database,
        table,
        mode,
        time: time.or(url.and_then(|u| u.time)),
        time_column: settings.time_column.clone(),
        legacy_mode: settings
            .legacy_mode
            .or(url.and_then(|u| u.legacy))
            .unwrap_or(false),
        on_schema_conflict: settings.on_schema_conflict.unwrap_or_default(),
        url: url.cloned(),
        settings: Settings(loaded.raw_settings.clone()),
        unknown_settings,
    })
}

/// Which engine runs, when the spec decides it: the one asked for; or, for `auto`, `server` in
/// legacy mode and `stream` when the target account's key is known here. Otherwise the connect
/// stage decides, once it has looked the target up. Keys of `result_settings` this program does
/// not know are an error for the stream engine and a warning for the server engine.
pub(super) fn choose_engine(
    choice: TransferChoice,
    target: &Target,
) -> Result<(Option<EngineChoice>, Vec<Warning>), SpecError> {
    let decided = |transfer, reason: String| Some(EngineChoice { transfer, reason });
    let engine = match (choice.fixed(), &target.account) {
        (Some(fixed), _) => decided(fixed, format!("transfer: {fixed} was asked for")),
        (None, _) if target.legacy_mode => decided(
            Transfer::Server,
            "legacy_mode asks for TD's server-side connector".to_string(),
        ),
        (None, TargetAccount::Known { key_from, .. }) => decided(
            Transfer::Stream,
            format!("the target account's key is known here ({key_from})"),
        ),
        (None, TargetAccount::Connection { .. }) => None,
    };
    let mut warnings = Vec::new();
    for unknown in &target.unknown_settings {
        match engine.as_ref().map(|e| e.transfer) {
            Some(Transfer::Server) => warnings.push(forwarded_setting(unknown)),
            Some(Transfer::Stream) => return Err(unknown_setting(unknown)),
            None => {}
        }
    }
    Ok((engine, warnings))
}

/// A `result_settings` key the stream engine does not honour: an error (with a "did you mean").
pub fn unknown_setting(unknown: &UnknownSetting) -> SpecError {
    SpecError::UnknownKey {
        at: unknown.at.clone(),
        key: unknown.key.clone(),
        suggestion: did_you_mean(&unknown.key, KNOWN_SETTINGS),
        allowed: KNOWN_SETTINGS.iter().map(|k| k.to_string()).collect(),
    }
}

/// A `result_settings` key the server engine sends to TD as written: a warning.
pub fn forwarded_setting(unknown: &UnknownSetting) -> Warning {
    Warning {
        at: unknown.at.clone(),
        message: format!(
            "`{}` is not a setting this program reads; TD's export gets it as written",
            unknown.key
        ),
    }
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
    let (api_key, key_from) = match &url.api_key {
        Some(key) => (
            key.clone(),
            match loaded.interpolator.origin_of(key.expose()) {
                Some(origin) => format!("result_url's key: {origin}"),
                None => "result_url's key".to_string(),
            },
        ),
        None => (
            source.api_key.clone(),
            "the source account's, as result_url's key is empty".to_string(),
        ),
    };
    Ok(TargetAccount::Known {
        account: Account { endpoint, api_key },
        connection: None,
        key_from,
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
    let (api_key, key_from) = match (&settings.api_key, &found.spec.api_key) {
        (Some(key), _) => (key.clone(), "result_settings.api_key".to_string()),
        (None, Some(key)) => (key.clone(), format!("connection `{name}` in {}", found.origin())),
        (None, None) => {
            return Err(SpecError::Invalid {
                at: found.at(&found.path),
                problem: format!("connection `{name}` has no api_key"),
                fix: "Add api_key: ${secret:NAME} to the connection, or result_settings.api_key.".to_string(),
            })
        }
    };
    Ok(TargetAccount::Known {
        account: Account { endpoint, api_key },
        connection: Some(name),
        key_from,
    })
}

/// A target known only by name on the source account: a connection or a saved result, looked up
/// when the run connects.
fn online_account(
    name: &str,
    settings: &ResultSettings,
    loaded: &LoadedSpec,
    force_local: bool,
) -> Result<TargetAccount, SpecError> {
    Ok(TargetAccount::Connection {
        name: name.to_string(),
        api_key: settings.api_key.clone(),
        endpoint: if force_local {
            Some(Endpoint::Local)
        } else {
            settings_host(loaded, settings)?
        },
    })
}

/// `result_settings.api_hostname`, when given.
fn settings_host(loaded: &LoadedSpec, settings: &ResultSettings) -> Result<Option<Endpoint>, SpecError> {
    match settings.api_hostname.as_deref() {
        Some(host) => {
            let path = "result_settings.api_hostname";
            Endpoint::parse(host, true)
                .map_err(|e| invalid_host(loaded.at(&SpecPath::parse(path)), host, path, &e))
        }
        None => Ok(None),
    }
}

/// A connection defined locally, and where it was written (for messages).
struct Found<'a> {
    spec: &'a ConnectionSpec,
    path: SpecPath,
    file: Option<&'a ConnectionsFile>,
    loaded: &'a LoadedSpec,
}

impl Found<'_> {
    /// Where the connection was defined, for the status document.
    fn origin(&self) -> &'static str {
        match self.file {
            Some(_) => "--connections",
            None => "the spec's connections:",
        }
    }

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
