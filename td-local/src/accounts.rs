//! Accounts and their API keys, generated once into `DIR/accounts.yml` and stable afterwards.

use std::path::Path;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::AppState;

/// One TD account: a master key (everything) and a write-only key (imports only).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Account {
    pub id: i64,
    pub name: String,
    pub master_key: String,
    pub write_only_key: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct AccountsFile {
    accounts: Vec<Account>,
}

pub const ACCOUNTS_FILE: &str = "accounts.yml";
const DEFAULT_ACCOUNTS: i64 = 2;

fn new_key(account_id: i64) -> String {
    let mut bytes = [0u8; 20];
    rand::rng().fill(&mut bytes);
    format!("{account_id}/{}", hex::encode(bytes))
}

/// Loads `DIR/accounts.yml`, creating two accounts with fresh keys the first time.
pub fn load_or_create(dir: &Path) -> anyhow::Result<Vec<Account>> {
    let path = dir.join(ACCOUNTS_FILE);
    if path.exists() {
        let text = std::fs::read_to_string(&path)?;
        let file: AccountsFile =
            serde_yaml_ng::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        anyhow::ensure!(!file.accounts.is_empty(), "{}: no accounts", path.display());
        return Ok(file.accounts);
    }
    let accounts: Vec<Account> = (1..=DEFAULT_ACCOUNTS)
        .map(|id| Account {
            id,
            name: format!("account{id}"),
            master_key: new_key(id),
            write_only_key: new_key(id),
        })
        .collect();
    let text = format!(
        "# td-local accounts: use master_key for everything, write_only_key for imports only.\n{}",
        serde_yaml_ng::to_string(&AccountsFile {
            accounts: accounts.clone()
        })?
    );
    let tmp = path.with_extension("yml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)?;
    Ok(accounts)
}

/// The authenticated caller of a request (`Authorization: TD1 <key>`).
#[derive(Debug, Clone)]
pub struct Caller {
    pub account: Arc<Account>,
    pub write_only: bool,
}

impl Caller {
    pub fn account_id(&self) -> i64 {
        self.account.id
    }

    /// Refuses a write-only key for calls that need the master key.
    pub fn require_master(&self, what: &str) -> Result<(), ApiError> {
        if self.write_only {
            Err(ApiError::forbidden(format!(
                "{what} is not allowed with a write-only API key; use the account's master API key"
            )))
        } else {
            Ok(())
        }
    }
}

/// Finds the account a key belongs to, and whether the key is write-only.
pub fn lookup(accounts: &[Arc<Account>], key: &str) -> Option<Caller> {
    accounts.iter().find_map(|a| {
        if a.master_key == key {
            Some(Caller {
                account: a.clone(),
                write_only: false,
            })
        } else if a.write_only_key == key {
            Some(Caller {
                account: a.clone(),
                write_only: true,
            })
        } else {
            None
        }
    })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::unauthorized("missing Authorization header (expected 'TD1 <apikey>')")
            })?;
        let key = header
            .strip_prefix("TD1 ")
            .map(str::trim)
            .ok_or_else(|| ApiError::unauthorized("Authorization header must be 'TD1 <apikey>'"))?;
        let caller = lookup(&state.accounts, key).ok_or_else(|| ApiError::unauthorized("invalid API key"))?;
        Ok(caller)
    }
}
