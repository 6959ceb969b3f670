//! The connect stage: start the embedded td-local when an endpoint is `local`, build a client per
//! account, and settle what the spec left to run time — a `result_connection` found only among
//! the source account's saved results, and what the server engine asks TD to write to.

use td_model::{ApiKey, TdUrl};

use crate::error::{Class, Classify, Exit};
use crate::options::Options;
use crate::resolve::{Account, Endpoint, ExportPlan, TargetAccount};
use crate::spec::Transfer;
use crate::td::{http_client, TdClient, TdError};

/// Where the embedded td-local keeps its data when no directory is named.
pub const DEFAULT_LOCAL_DIR: &str = ".td-local";

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Td(#[from] TdError),
    #[error("result_connection '{name}': {problem}")]
    Connection { name: String, problem: String },
    #[error("starting the embedded td-local in {dir}: {message}")]
    Local { dir: String, message: String },
}

impl Classify for ConnectError {
    fn class(&self) -> Class {
        match self {
            ConnectError::Td(e) => e.class(),
            ConnectError::Connection { .. } => Class::new("ConnectionNotFound", Exit::Invalid),
            ConnectError::Local { .. } => Class::new("LocalServerFailed", Exit::Invalid),
        }
    }
}

/// What the server engine asks TD to write to.
#[derive(Clone)]
pub enum Destination {
    /// A td:// URL (legacy mode, or no saved connection); it carries the target key, so it never
    /// reaches a log.
    Url(TdUrl),
    /// A saved connection and the TD connector's settings (JSON text).
    Connection { id: String, settings: String },
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Url(url) => write!(f, "Url({url})"),
            Destination::Connection { id, settings } => f
                .debug_struct("Connection")
                .field("id", id)
                .field("settings", settings)
                .finish(),
        }
    }
}

/// The accounts, connected.
pub struct Connected {
    pub source: TdClient,
    /// The target account's client; `None` when only TD knows the target (a saved connection
    /// the server engine exports to by id).
    pub target: Option<TdClient>,
    /// The target endpoint as configured ("local", not this run's port), for the status document
    /// and the idempotency key, which must be the same on every rerun.
    pub target_endpoint: String,
    pub target_is_local: bool,
    /// For the server engine.
    pub destination: Option<Destination>,
    _local: Option<td_local::TdLocal>,
}

/// Connects the plan's accounts.
pub async fn connect(plan: &ExportPlan, options: &Options) -> Result<Connected, ConnectError> {
    let local = match plan.uses_local() {
        true => Some(start_local(plan.local_dir.as_deref().unwrap_or(DEFAULT_LOCAL_DIR.as_ref())).await?),
        false => None,
    };
    let local_url = local.as_ref().map(|l| l.base_url());
    let http = http_client();
    let client = |account: &Account| {
        let base = match &account.endpoint {
            Endpoint::Url(u) => u.as_str().trim_end_matches('/').to_string(),
            Endpoint::Local => local_url.clone().expect("td-local started for a local endpoint"),
        };
        TdClient::new(
            http.clone(),
            &base,
            account.api_key.expose(),
            options.retry.clone(),
        )
    };
    let source = client(&plan.source_account);
    let target_account = match &plan.target.account {
        TargetAccount::Known { account, .. } => Some(account.clone()),
        // TD resolves a saved connection itself (by id): its key, masked in listings, is not needed.
        TargetAccount::Connection { .. } if plan.transfer == Transfer::Server && !plan.target.legacy_mode => {
            None
        }
        TargetAccount::Connection {
            name,
            api_key,
            endpoint,
        } => Some(
            lookup_connection(
                &source,
                name,
                api_key.clone(),
                endpoint.clone(),
                &plan.source_account,
            )
            .await?,
        ),
    };
    let destination = match plan.transfer {
        Transfer::Server => Some(destination(plan, &source, target_account.as_ref()).await?),
        Transfer::Stream => None,
    };
    Ok(Connected {
        target: target_account.as_ref().map(client),
        target_endpoint: target_account
            .as_ref()
            .map_or_else(|| "connection".to_string(), |a| a.endpoint.to_string()),
        target_is_local: target_account
            .as_ref()
            .is_some_and(|a| a.endpoint == Endpoint::Local),
        destination,
        source,
        _local: local,
    })
}

async fn start_local(dir: &std::path::Path) -> Result<td_local::TdLocal, ConnectError> {
    td_local::TdLocal::start(td_local::Config::new(dir))
        .await
        .map_err(|e| ConnectError::Local {
            dir: dir.display().to_string(),
            message: e.to_string(),
        })
}

/// Finds a connection that is not defined locally among the source account's saved results.
async fn lookup_connection(
    source: &TdClient,
    name: &str,
    api_key: Option<ApiKey>,
    endpoint: Option<Endpoint>,
    source_account: &Account,
) -> Result<Account, ConnectError> {
    let problem = |problem: String| ConnectError::Connection {
        name: name.to_string(),
        problem,
    };
    let saved = source.saved_results().await?;
    let Some(found) = saved.into_iter().find(|r| r.name == name) else {
        return Err(problem(
            "not found in --connections, the spec's connections:, or the source account's saved results; \
             define it in a connections file"
                .into(),
        ));
    };
    let url = TdUrl::parse(&found.url).map_err(|e| problem(e.to_string()))?;
    let key = api_key
        .or(url.api_key)
        .unwrap_or_else(|| source_account.api_key.clone());
    if key.expose().contains('*') {
        // The account masks keys in listings: the stream engine cannot write with it.
        return Err(problem(
            "its API key is not readable from the account; set result_settings.api_key, or use transfer: server"
                .into(),
        ));
    }
    let endpoint = match (endpoint, url.host) {
        (Some(e), _) => e,
        (None, Some(host)) => Endpoint::parse(&host, true)
            .map_err(problem)?
            .unwrap_or_else(|| source_account.endpoint.clone()),
        (None, None) => source_account.endpoint.clone(),
    };
    Ok(Account {
        endpoint,
        api_key: key,
    })
}

/// What the server engine asks TD to write to: the saved connection by id (with the connector's
/// settings), or a td:// URL (legacy mode, or a target given by URL or defined locally).
async fn destination(
    plan: &ExportPlan,
    source: &TdClient,
    target: Option<&Account>,
) -> Result<Destination, ConnectError> {
    let t = &plan.target;
    let connection = match &t.account {
        TargetAccount::Known { connection, .. } => connection.clone(),
        TargetAccount::Connection { name, .. } => Some(name.clone()),
    };
    if let (false, Some(name)) = (t.legacy_mode, &connection) {
        if let Some(id) = source.connection_id(name).await? {
            let mut settings = serde_json::json!({
                "user_database_name": t.database, "user_table_name": t.table, "mode": t.mode.as_str(),
            });
            if let Some(time) = t.time {
                settings["time"] = time.into();
            }
            return Ok(Destination::Connection {
                id,
                settings: settings.to_string(),
            });
        }
    }
    if let (None, None, Some(name)) = (&t.url, target, &connection) {
        return Err(ConnectError::Connection {
            name: name.clone(),
            problem: "not found on the source account (/v3/connections/lookup); save it there, \
                      or define it in a connections file"
                .into(),
        });
    }
    // The target's key and host (empty = the source account, as TD reads it).
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
        (None, None) => (None, None),
    };
    Ok(Destination::Url(TdUrl {
        api_key,
        host,
        database: Some(t.database.clone()),
        table: Some(t.table.clone()),
        mode: Some(t.mode),
        time: t.time,
        legacy: None,
    }))
}
