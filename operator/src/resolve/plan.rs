//! The plan an export runs: what the resolve stage hands to the run stages. No request has been
//! sent to make it.

use std::path::PathBuf;

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use td_model::{ApiKey, Mode, TdUrl};

use super::endpoint::Endpoint;
use crate::spec::{Engine, IntervalType, OnSchemaConflict, Transfer, TransferChoice};

/// An account: where its API is and the key to use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Account {
    pub endpoint: Endpoint,
    pub api_key: ApiKey,
}

/// Where an account's key came from: named when TD refuses it, and the spec path a key of the
/// wrong shape is blamed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFrom {
    /// `td.apikey` written in the spec.
    SpecApikey,
    /// The master key of td-local's account N (`endpoint: local` with no `td.apikey`).
    LocalAccount(i64),
    /// The secret `td.apikey`, and where it was found (a secrets file, an environment variable).
    Secret { found: String },
    /// The key part of a td:// `result_url`, and the secret it came from, when one.
    UrlKey { origin: Option<String> },
    /// The source account's: `result_url` left its key empty.
    SourceAccount,
    /// `result_settings.api_key`.
    SettingsApiKey,
    /// A connection defined here (`--connections` or the spec's `connections:`).
    Connection { name: String, defined_in: &'static str },
    /// The URL of a result saved on the source account (an empty key there: the source account's).
    SavedResult { name: String, empty: bool },
    /// A connection looked up on the source account: only TD holds its key.
    LookedUp { name: String },
}

impl KeyFrom {
    /// The spec key a key of the wrong shape is blamed on.
    pub fn spec_path(&self) -> &'static str {
        match self {
            KeyFrom::SpecApikey | KeyFrom::LocalAccount(_) | KeyFrom::Secret { .. } => "td.apikey",
            KeyFrom::UrlKey { .. } | KeyFrom::SourceAccount | KeyFrom::SavedResult { .. } => "result_url",
            KeyFrom::SettingsApiKey => "result_settings.api_key",
            KeyFrom::Connection { .. } | KeyFrom::LookedUp { .. } => "result_connection",
        }
    }
}

impl std::fmt::Display for KeyFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyFrom::SpecApikey => write!(f, "td.apikey in the spec"),
            KeyFrom::LocalAccount(id) => write!(f, "td-local's account {id}"),
            KeyFrom::Secret { found } => write!(f, "secret td.apikey, found in {found}"),
            KeyFrom::UrlKey { origin: Some(origin) } => write!(f, "result_url's key: {origin}"),
            KeyFrom::UrlKey { origin: None } => write!(f, "result_url's key"),
            KeyFrom::SourceAccount => write!(f, "the source account's, as result_url's key is empty"),
            KeyFrom::SettingsApiKey => write!(f, "result_settings.api_key"),
            KeyFrom::Connection { name, defined_in } => write!(f, "connection `{name}` in {defined_in}"),
            KeyFrom::SavedResult { name, empty: false } => write!(f, "saved result `{name}`'s URL"),
            KeyFrom::SavedResult { name, empty: true } => {
                write!(
                    f,
                    "the source account's, as saved result `{name}`'s URL has no key"
                )
            }
            KeyFrom::LookedUp { name } => write!(f, "the connection '{name}'"),
        }
    }
}

impl Serialize for KeyFrom {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
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
        options: QueryOptions,
    },
}

/// How a query job is issued, as `td>` and `td query` issue it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueryOptions {
    /// -2 (VERY LOW) to 2 (VERY HIGH).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i8>,
    /// Retries TD itself makes of a failed job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_version: Option<String>,
    /// Unix seconds: what `TD_SCHEDULED_TIME()` returns in the query.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_time: Option<i64>,
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
        /// Where the key came from, for the status document's account of the engine chosen.
        key_from: KeyFrom,
    },
    /// A `result_connection` defined nowhere locally, or a saved result (`result_url: NAME:TABLE`):
    /// looked up on the source account at run time (`/v3/result/list`, `/v3/connections/lookup`).
    /// `result_settings.api_key`/`api_hostname` override what the lookup finds.
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
    /// `None`: the database of the saved result the target names (known once it is looked up).
    pub database: Option<String>,
    pub table: String,
    /// `None`: the saved result's mode when it has one, else append.
    pub mode: Option<Mode>,
    /// Unix seconds for rows when the result has no `time` column.
    pub time: Option<i64>,
    /// The result column every row's `time` is read from.
    pub time_column: Option<String>,
    pub legacy_mode: bool,
    /// What an append does when a result column would read as NULL under the table's type.
    pub on_schema_conflict: OnSchemaConflict,
    /// The td:// URL as written (key included, shown redacted), when the target was given as one.
    pub url: Option<TdUrl>,
    /// `result_settings` as written, for the server engine.
    pub settings: Settings,
    /// Keys of `result_settings` this program does not know (forwarded only by the server engine).
    pub unknown_settings: Vec<UnknownSetting>,
}

/// A `result_settings` key this program does not know, and where it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnknownSetting {
    pub key: String,
    #[serde(skip)]
    pub at: crate::error::At,
}

/// `result_settings` as the user wrote them (interpolated). Values under key-named keys and the
/// user part of URLs never print: Debug and Serialize mask them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Settings(pub Map<String, Value>);

impl Settings {
    fn masked(&self) -> Value {
        fn mask(value: &Value, key: &str) -> Value {
            match value {
                Value::String(_) if td_model::key::is_key_name(key) => Value::from("***"),
                Value::String(s) => Value::from(td_model::key::mask_keys(s)),
                Value::Object(map) => {
                    Value::Object(map.iter().map(|(k, v)| (k.clone(), mask(v, k))).collect())
                }
                Value::Array(items) => Value::Array(items.iter().map(|v| mask(v, key)).collect()),
                other => other.clone(),
            }
        }
        mask(&Value::Object(self.0.clone()), "")
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Settings({})", self.masked())
    }
}

impl Serialize for Settings {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.masked().serialize(s)
    }
}

/// The engine that moves the rows, and why (for the status document).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EngineChoice {
    pub transfer: Transfer,
    pub reason: String,
}

/// An HTTP proxy for every call to TD (`td.proxy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyPlan {
    /// `http://host:port`
    pub url: String,
    pub user: Option<String>,
    pub password: Option<ApiKey>,
}

/// Whole-task retries (Digdag's `_retry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TaskRetry {
    /// Retries after the first attempt (0: none).
    pub limit: u32,
    /// Seconds before the first retry.
    pub interval_secs: u64,
    /// Constant, or doubled after each retry.
    pub interval_type: IntervalType,
    /// Cap of an exponential interval, in seconds.
    pub max_interval_secs: Option<u64>,
}

impl TaskRetry {
    pub const NONE: TaskRetry = TaskRetry {
        limit: 0,
        interval_secs: 0,
        interval_type: IntervalType::Constant,
        max_interval_secs: None,
    };

    /// No wait between whole-task retries is longer than a day.
    pub const MAX_INTERVAL_SECS: u64 = 86_400;

    /// Wait before retry number `n` (1-based).
    pub fn interval_before(&self, n: u32) -> std::time::Duration {
        let secs = if self.interval_type == IntervalType::Exponential {
            let grown = self
                .interval_secs
                .saturating_mul(1u64 << n.saturating_sub(1).min(32));
            self.max_interval_secs.map_or(grown, |cap| grown.min(cap))
        } else {
            self.interval_secs
        };
        std::time::Duration::from_secs(secs.min(Self::MAX_INTERVAL_SECS))
    }
}

/// Everything the export needs, resolved and checked; no request has been sent yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportPlan {
    pub source: Source,
    /// The account that ran (or runs) the source job.
    pub source_account: Account,
    pub target: Target,
    /// The engine the spec asks for.
    pub transfer: TransferChoice,
    /// The engine, when the spec decides it (asked for, or auto with the target's key known);
    /// `None` leaves it to the connect stage.
    pub engine: Option<EngineChoice>,
    /// `td.proxy`, when enabled.
    pub proxy: Option<ProxyPlan>,
    pub retry: TaskRetry,
    /// `idempotency_key:` when given; otherwise the export derives it from the source job id and target.
    pub idempotency_key: Option<String>,
    /// Data directory of the embedded td-local, when any endpoint is [`Endpoint::Local`].
    pub local_dir: Option<PathBuf>,
    /// Where the source account's key came from.
    #[serde(skip)]
    pub source_key_from: KeyFrom,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_task_retry_intervals_double_up_to_the_cap() {
        let retry = TaskRetry {
            limit: 5,
            interval_secs: 2,
            interval_type: IntervalType::Exponential,
            max_interval_secs: Some(10),
        };
        let secs: Vec<u64> = (1..=4).map(|n| retry.interval_before(n).as_secs()).collect();
        assert_eq!(secs, [2, 4, 8, 10]);
        let constant = TaskRetry {
            interval_type: IntervalType::Constant,
            ..retry
        };
        assert_eq!(constant.interval_before(3).as_secs(), 2);
    }
}
