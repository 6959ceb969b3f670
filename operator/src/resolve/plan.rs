//! The plan an export runs: what the resolve stage hands to the run stages. No request has been
//! sent to make it.

use std::path::PathBuf;

use serde::Serialize;
use td_model::{ApiKey, Mode, TdUrl};

use super::endpoint::Endpoint;
use crate::spec::{Engine, Transfer};

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

#[cfg(test)]
mod tests {
    use super::*;

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
