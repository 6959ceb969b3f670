//! The connect stage: start the embedded td-local when an endpoint is `local`, build a client per
//! account, and settle what the spec left to run time — a target known only by name on the
//! source account (a connection, a saved result), the engine that moves the rows when the spec
//! left the choice (`transfer: auto`, docs/architecture.md §6), and what the server engine asks TD to write.

use serde_json::{Map, Value};
use td_model::{settings, ApiKey, Mode, TdUrl};

use crate::error::{Class, Classify, Exit, SpecError};
use crate::options::Options;
use crate::resolve::{
    choose_engine, forwarded_setting, unknown_setting, Account, Endpoint, EngineChoice, ExportPlan, KeyFrom,
    TargetAccount, TargetKey,
};
use crate::spec::Transfer;
use crate::td::{http_client, Proxies, SavedResult, TdClient, TdError};

/// Where the embedded td-local keeps its data when no directory is named.
pub(crate) const DEFAULT_LOCAL_DIR: &str = ".td-local";

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Td(#[from] TdError),
    #[error("result_connection '{name}': {problem}")]
    Connection { name: String, problem: String },
    /// The target cannot be written the way the spec asks (a stream without the target's key, say).
    #[error("{0}")]
    Unusable(String),
    /// A `result_settings` key the stream engine does not honour (found once the engine was chosen).
    #[error(transparent)]
    Setting(Box<SpecError>),
    #[error("starting the embedded td-local in {dir}: {message}")]
    Local { dir: String, message: String },
}

impl Classify for ConnectError {
    fn class(&self) -> Class {
        match self {
            ConnectError::Td(e) => e.class(),
            ConnectError::Connection { .. } => Class::new("ConnectionNotFound", Exit::Invalid),
            ConnectError::Unusable(_) => Class::new("TargetNotWritable", Exit::Invalid),
            ConnectError::Setting(e) => e.class(),
            ConnectError::Local { .. } => Class::new("LocalServerFailed", Exit::Invalid),
        }
    }
}

/// What the server engine asks TD to write to.
#[derive(Clone)]
pub enum Destination {
    /// A td:// URL (legacy mode, or a target whose key is known); it carries the target key, so it
    /// never reaches a log.
    Url(TdUrl),
    /// A saved connection and the TD connector's settings (JSON text, as the user wrote them).
    Connection { id: String, settings: String },
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Url(url) => write!(f, "Url({url})"),
            Destination::Connection { id, .. } => write!(f, "Connection({id})"),
        }
    }
}

/// The target table, complete (a saved result may have given the database or the mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRef {
    pub database: String,
    pub table: String,
    pub mode: Mode,
}

/// The engine that moves the rows, with what only it needs.
pub enum Engine {
    /// This program streams the rows into the target account, through its own client.
    Stream {
        target: TdClient,
        /// The target endpoint as configured ("local", not this run's port).
        endpoint: Endpoint,
    },
    /// TD exports them (`result_export`), to where `destination` says.
    Server { destination: Destination },
}

/// The accounts, connected.
pub struct Connected {
    pub source: TdClient,
    pub table: TableRef,
    pub engine: Engine,
    /// Why the engine was chosen (the status document).
    pub engine_reason: String,
    /// Where the target is, as the status document and the messages name it: its endpoint when
    /// known here (a legacy td:// target the server engine writes too), else the connection.
    pub target_shown: String,
    _local: Option<Embedded>,
}

impl Connected {
    pub fn transfer(&self) -> Transfer {
        match self.engine {
            Engine::Stream { .. } => Transfer::Stream,
            Engine::Server { .. } => Transfer::Server,
        }
    }

    /// The target account's client, when this run writes the target itself.
    pub fn target(&self) -> Option<&TdClient> {
        match &self.engine {
            Engine::Stream { target, .. } => Some(target),
            Engine::Server { .. } => None,
        }
    }

    /// The target's part of the idempotency key, the same on every rerun: the endpoint as
    /// configured when this run writes it, else `connection` (TD writes it).
    pub fn target_key_part(&self) -> String {
        match &self.engine {
            Engine::Stream { endpoint, .. } => endpoint.to_string(),
            Engine::Server { .. } => "connection".to_string(),
        }
    }
}

/// What a lookup on the source account found of a target known only by name.
struct Looked {
    /// The target account and where its key came from, when the key is usable here.
    account: Option<(Account, KeyFrom)>,
    /// The saved result's URL (its database and mode complete the table).
    saved: Option<TdUrl>,
}

/// Connects the plan's accounts and settles the target.
pub(crate) async fn connect(plan: &ExportPlan, options: &Options) -> Result<Connected, ConnectError> {
    let local = match plan.uses_local() {
        true => Some(start_local(plan.local_dir.as_deref().unwrap_or(DEFAULT_LOCAL_DIR.as_ref())).await?),
        false => None,
    };
    let http = http_client(&proxies(plan, options))?;
    let client = |account: &Account, side: &'static str, key_from: &KeyFrom| {
        let base = match (&account.endpoint, &local) {
            (Endpoint::Url(u), _) => u.as_str().trim_end_matches('/').to_string(),
            (Endpoint::Local, Some(local)) => local.base_url(),
            (Endpoint::Local, None) => {
                return Err(ConnectError::Local {
                    dir: String::new(),
                    message: "td-local was not started for a local endpoint".to_string(),
                })
            }
        };
        Ok(TdClient::new(
            http.clone(),
            &base,
            account.api_key.expose(),
            options.retry.clone(),
        )
        .for_account(side, &key_from.to_string()))
    };
    let source = client(&plan.source_account, "source", &plan.source_key_from)?;
    let looked = match &plan.target.account {
        TargetAccount::Known {
            account, key_from, ..
        } => Looked {
            account: Some((account.clone(), key_from.clone())),
            saved: None,
        },
        TargetAccount::Connection {
            name,
            api_key,
            endpoint,
        } => {
            look_up(
                &source,
                name,
                api_key.clone(),
                endpoint.clone(),
                &plan.source_account,
            )
            .await?
        }
    };
    let table = complete_table(plan, looked.saved.as_ref())?;
    let chosen = choose(plan, looked.account.as_ref().map(|(_, from)| from))?;
    let target_shown = match (&looked.account, &plan.target.account) {
        (Some((account, _)), _) | (None, TargetAccount::Known { account, .. }) => {
            account.endpoint.to_string()
        }
        (None, TargetAccount::Connection { name, .. }) => format!("connection {name}"),
    };
    let engine = match (chosen.transfer, looked.account) {
        (Transfer::Stream, Some((account, key_from))) => Engine::Stream {
            target: client(&account, "target", &key_from)?,
            endpoint: account.endpoint,
        },
        // `choose` refuses a stream without the key; kept an error, not a panic.
        (Transfer::Stream, None) => {
            return Err(ConnectError::Unusable(
                "transfer: stream needs the target account's key".to_string(),
            ))
        }
        (Transfer::Server, account) => Engine::Server {
            destination: destination(plan, &source, account.as_ref().map(|(a, _)| a), &table).await?,
        },
    };
    Ok(Connected {
        source,
        table,
        engine,
        engine_reason: chosen.reason,
        target_shown,
        _local: local,
    })
}

/// `td.proxy` when the spec enables one, else the environment's proxies.
fn proxies(plan: &ExportPlan, options: &Options) -> Proxies {
    match &plan.proxy {
        Some(p) => Proxies {
            all: Some((
                p.url.clone(),
                p.user
                    .clone()
                    .map(|u| (u, p.password.as_ref().map_or("", |k| k.expose()).to_string())),
            )),
            ..Proxies::default()
        },
        None => options.proxies.clone(),
    }
}

/// The td-local of `endpoint: local`: one already serving the directory (`td-local serve`) is
/// used; another run's embedded one is waited for (one server per directory); else its own.
#[cfg(feature = "local")]
async fn start_local(dir: &std::path::Path) -> Result<Embedded, ConnectError> {
    td_local::TdLocal::embedded(td_local::Config::new(dir))
        .await
        .map_err(|e| ConnectError::Local {
            dir: dir.display().to_string(),
            message: e.to_string(),
        })
}

#[cfg(feature = "local")]
type Embedded = td_local::Embedded;

/// A build without td-local has none to start (the resolve stage refuses such a plan first).
#[cfg(not(feature = "local"))]
async fn start_local(dir: &std::path::Path) -> Result<Embedded, ConnectError> {
    Err(ConnectError::Local {
        dir: dir.display().to_string(),
        message: crate::NO_LOCAL.to_string(),
    })
}

#[cfg(not(feature = "local"))]
enum Embedded {}

#[cfg(not(feature = "local"))]
impl Embedded {
    fn base_url(&self) -> String {
        match *self {}
    }
}

/// Finds a target known only by name among the source account's saved results. Its key is
/// usable when given in `result_settings.api_key`, or readable in the saved URL (empty = the
/// source account's); otherwise only TD can write with it. A name that is not a saved result
/// may still be a connection made in the TD console, which only the server engine can use.
async fn look_up(
    source: &TdClient,
    name: &str,
    api_key: Option<ApiKey>,
    endpoint: Option<Endpoint>,
    source_account: &Account,
) -> Result<Looked, ConnectError> {
    let problem = |problem: String| ConnectError::Connection {
        name: name.to_string(),
        problem,
    };
    let saved: Option<SavedResult> = source.saved_results().await?.into_iter().find(|r| r.name == name);
    let url = match &saved {
        Some(found) => Some(TdUrl::parse(&found.url).map_err(|e| problem(e.to_string()))?),
        None => None,
    };
    let saved_key = |empty| KeyFrom::SavedResult {
        name: name.to_string(),
        empty,
    };
    let key = match (&api_key, url.as_ref().map(|u| &u.api_key)) {
        (Some(key), _) => Some((key.clone(), KeyFrom::SettingsApiKey)),
        // TD masks keys in listings: a masked key is one only TD holds.
        (None, Some(Some(key))) => {
            Some((key.clone(), saved_key(false))).filter(|(k, _)| !k.expose().contains('*'))
        }
        (None, Some(None)) => Some((source_account.api_key.clone(), saved_key(true))),
        (None, None) => None,
    };
    let endpoint = match (endpoint, url.as_ref().and_then(|u| u.host.clone())) {
        (Some(e), _) => e,
        (None, Some(host)) => Endpoint::parse(&host, true)
            .map_err(problem)?
            .unwrap_or_else(|| source_account.endpoint.clone()),
        (None, None) => source_account.endpoint.clone(),
    };
    if url.is_none() && source.connection_id(name).await?.is_none() {
        return Err(problem(
            "not found in --connections, the spec's connections:, or the source account's saved results \
             and connections; define it in a connections file"
                .into(),
        ));
    }
    Ok(Looked {
        account: key.map(|(api_key, from)| (Account { endpoint, api_key }, from)),
        saved: url,
    })
}

/// The table, with what a saved result gives (its database, its mode) where the spec is silent.
fn complete_table(plan: &ExportPlan, saved: Option<&TdUrl>) -> Result<TableRef, ConnectError> {
    let t = &plan.target;
    let database = t
        .database
        .clone()
        .or_else(|| saved.and_then(|u| u.database.clone()))
        .ok_or_else(|| {
            ConnectError::Unusable(format!(
                "the saved result names no database, and result_settings has none: add \
                 result_settings.user_database_name (the target table is {})",
                t.table
            ))
        })?;
    Ok(TableRef {
        database,
        table: t.table.clone(),
        mode: t.mode.or(saved.and_then(|u| u.mode)).unwrap_or_default(),
    })
}

/// The engine, by the one rule (`resolve::choose_engine`) with the target looked up. Keys of
/// `result_settings` the stream engine does not honour are refused when the engine is chosen
/// only here, and sent to TD as written by the server engine; the resolve stage judged them when
/// the spec decided it.
fn choose(plan: &ExportPlan, key: Option<&KeyFrom>) -> Result<EngineChoice, ConnectError> {
    let name = match &plan.target.account {
        TargetAccount::Connection { name, .. } => name.as_str(),
        TargetAccount::Known { .. } => "",
    };
    let key = key.map_or(TargetKey::OnlyTd { name }, TargetKey::Here);
    let chosen = choose_engine(plan.transfer, plan.target.legacy_mode, key)
        .map_err(ConnectError::Unusable)?
        .ok_or_else(|| ConnectError::Unusable(format!("no engine could be chosen for `{name}`")))?;
    if plan.engine.is_none() {
        for unknown in &plan.target.unknown_settings {
            match chosen.transfer {
                Transfer::Stream => return Err(ConnectError::Setting(Box::new(unknown_setting(unknown)))),
                Transfer::Server => tracing::warn!("{}", forwarded_setting(unknown)),
            }
        }
    }
    Ok(chosen)
}

/// What the server engine asks TD to write to: the connection by id (with the settings as the
/// user wrote them), or a td:// URL (legacy mode, or a target whose account is known here).
async fn destination(
    plan: &ExportPlan,
    source: &TdClient,
    target: Option<&Account>,
    table: &TableRef,
) -> Result<Destination, ConnectError> {
    let t = &plan.target;
    let connection = match &t.account {
        TargetAccount::Known { connection, .. } => connection.clone(),
        TargetAccount::Connection { name, .. } => Some(name.clone()),
    };
    if let (false, Some(name)) = (t.legacy_mode, &connection) {
        if let Some(id) = source.connection_id(name).await? {
            let settings = Value::Object(connector_settings(&t.settings.0, table));
            return Ok(Destination::Connection {
                id,
                settings: settings.to_string(),
            });
        }
    }
    let (api_key, host) = match (&t.url, target) {
        (Some(url), _) => (url.api_key.clone(), url.host.clone()),
        (None, Some(account)) => (
            Some(account.api_key.clone()),
            account.endpoint.url().and_then(|u| {
                u.host_str().map(|h| match u.port() {
                    Some(p) => format!("{h}:{p}"),
                    None => h.to_string(),
                })
            }),
        ),
        (None, None) => {
            return Err(ConnectError::Unusable(format!(
                "legacy_mode writes through a td:// URL, which needs the target's key, and only TD holds the \
                 key of `{}`: drop legacy_mode, or give the key (result_settings.api_key)",
                connection.unwrap_or_default()
            )))
        }
    };
    Ok(Destination::Url(TdUrl {
        api_key,
        host,
        database: Some(table.database.clone()),
        table: Some(table.table.clone()),
        mode: Some(table.mode),
        time: t.time,
        legacy: None,
    }))
}

/// The TD connector's settings for an export by connection id: what the user wrote, with this
/// program's aliases (`database`, `table`) under TD's names and the table completed.
fn connector_settings(written: &Map<String, Value>, table: &TableRef) -> Map<String, Value> {
    let mut out = Map::new();
    for (key, value) in written {
        // This program's own setting, not the connector's.
        if key == "on_schema_conflict" {
            continue;
        }
        out.insert(settings::canonical(key).to_string(), value.clone());
    }
    out.entry(settings::DATABASE)
        .or_insert_with(|| table.database.clone().into());
    out.entry(settings::TABLE)
        .or_insert_with(|| table.table.clone().into());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_by_connection_sends_the_settings_as_written_with_tds_names() {
        let written = serde_json::json!({
            "database": "testdb", "mode": "replace", "time": "2024-01-31", "time_column": "created_at",
            "api_hostname": "api.treasuredata.co.jp", "column_options": {"id": {"type": "long"}},
        });
        let table = TableRef {
            database: "testdb".into(),
            table: "out_t".into(),
            mode: Mode::Replace,
        };
        let sent = connector_settings(written.as_object().unwrap(), &table);
        assert_eq!(
            Value::Object(sent),
            serde_json::json!({
                "user_database_name": "testdb", "user_table_name": "out_t", "mode": "replace",
                "time": "2024-01-31", "time_column": "created_at", "api_hostname": "api.treasuredata.co.jp",
                "column_options": {"id": {"type": "long"}},
            })
        );
    }
}
