//! The target side of resolution: the target account (a td:// URL's, a connection's, or one to
//! look up at run time), the table and the settings, and — when the spec decides it — the engine.

use td_model::{did_you_mean, TdUrl};

use super::plan::{Account, EngineChoice, KeyFrom, Settings, Target, TargetAccount, UnknownSetting};
use super::{invalid_host, Endpoint};
use crate::error::{At, SpecError, SpecPath, Warning};
use crate::spec::{
    ConnectionSpec, ConnectionsFile, LoadedSpec, ResultSettings, ResultUrl, TargetSpec, Transfer,
    TransferChoice, KNOWN_SETTINGS,
};

/// The target: a td:// URL, a saved result (`NAME:TABLE`) or a `result_connection`, with the
/// settings that complete it.
pub(super) fn resolve_target(
    loaded: &LoadedSpec,
    source: &Account,
    force_local: bool,
) -> Result<Target, SpecError> {
    let settings = loaded.spec.result_settings.clone().unwrap_or_default();
    let time = settings.time.map(|t| t.0);
    let (account, database, table, url) = match &loaded.target {
        TargetSpec::Url(ResultUrl::Td { url, table }) => (
            url_account(loaded, url, source, force_local)?,
            url.database.clone(),
            table.clone(),
            Some(url),
        ),
        TargetSpec::Url(ResultUrl::Saved { name, table }) => (
            online_account(name, &settings, loaded, force_local)?,
            settings.user_database_name.clone(),
            table.clone(),
            None,
        ),
        TargetSpec::Connection { name, table } => (
            connection_account(loaded, name, &settings, source, force_local)?,
            settings.user_database_name.clone(),
            table.clone(),
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

/// What is known of the target account's key when the engine is chosen.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TargetKey<'a> {
    /// Usable here, from there.
    Here(&'a KeyFrom),
    /// Held only by TD: a connection made in TD's console, or a saved result whose key TD masks.
    OnlyTd { name: &'a str },
    /// Not known before the target, known only by name, is looked up (the resolve stage).
    NotLookedUp,
}

/// Which engine runs, and why: the one asked for; else, for `auto`, `server` in legacy mode,
/// `stream` when the target account's key is usable here and `server` when only TD holds it.
/// `None` while the target's key is not looked up yet. The resolve stage calls it with what the
/// spec says, the connect stage again once it has looked the target up: one rule for both.
pub(crate) fn choose_engine(
    choice: TransferChoice,
    legacy_mode: bool,
    key: TargetKey<'_>,
) -> Result<Option<EngineChoice>, String> {
    let decided = |transfer, reason: String| Ok(Some(EngineChoice { transfer, reason }));
    match (choice.fixed(), key) {
        (Some(Transfer::Stream), TargetKey::OnlyTd { name }) => Err(format!(
            "transfer: stream needs the target account's key, and only TD holds the key of `{name}` (a \
             connection made in the TD console, or a saved result whose key TD masks): set \
             result_settings.api_key, define `{name}` in --connections, or drop `transfer: stream` so \
             that TD exports it (transfer: auto)"
        )),
        (Some(fixed), _) => decided(fixed, format!("transfer: {fixed} was asked for")),
        (None, _) if legacy_mode => decided(
            Transfer::Server,
            "legacy_mode asks for TD's server-side connector".to_string(),
        ),
        (None, TargetKey::Here(from)) => decided(
            Transfer::Stream,
            format!("the target account's key is known here ({from})"),
        ),
        (None, TargetKey::OnlyTd { name }) => decided(
            Transfer::Server,
            format!("only TD holds the key of `{name}`: TD exports it by connection"),
        ),
        (None, TargetKey::NotLookedUp) => Ok(None),
    }
}

/// What the spec decides of the engine ([`choose_engine`] before any lookup), with the
/// `result_settings` keys this program does not know: an error for the stream engine, a
/// warning for the server engine.
pub(super) fn engine_of_spec(
    choice: TransferChoice,
    target: &Target,
) -> Result<(Option<EngineChoice>, Vec<Warning>), SpecError> {
    let key = match &target.account {
        TargetAccount::Known { key_from, .. } => TargetKey::Here(key_from),
        TargetAccount::Connection { .. } => TargetKey::NotLookedUp,
    };
    // A stream with an unknown key is decided only after the lookup.
    let engine = choose_engine(choice, target.legacy_mode, key).unwrap_or(None);
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
pub(crate) fn unknown_setting(unknown: &UnknownSetting) -> SpecError {
    SpecError::UnknownKey {
        at: unknown.at.clone(),
        key: unknown.key.clone(),
        suggestion: did_you_mean(&unknown.key, KNOWN_SETTINGS),
        allowed: KNOWN_SETTINGS.iter().map(|k| k.to_string()).collect(),
    }
}

/// A `result_settings` key the server engine sends to TD as written: a warning.
pub(crate) fn forwarded_setting(unknown: &UnknownSetting) -> Warning {
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
            KeyFrom::UrlKey {
                origin: loaded.interpolator.origin_of(key.expose()),
            },
        ),
        None => (source.api_key.clone(), KeyFrom::SourceAccount),
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
    name: &str,
    settings: &ResultSettings,
    source: &Account,
    force_local: bool,
) -> Result<TargetAccount, SpecError> {
    let name = name.to_string();
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
        (Some(key), _) => (key.clone(), KeyFrom::SettingsApiKey),
        (None, Some(key)) => (
            key.clone(),
            KeyFrom::Connection {
                name: name.clone(),
                defined_in: found.origin(),
            },
        ),
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
