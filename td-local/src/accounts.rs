//! Accounts and their API keys, generated once into `DIR/accounts.yml` (mode 0600: the keys are
//! secrets) and stable afterwards.

use std::path::Path;
use std::sync::Arc;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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
pub fn load_or_create(dir: &Path) -> Result<Vec<Account>> {
    let path = dir.join(ACCOUNTS_FILE);
    let unreadable = |why: String| Error::internal(format!("{}: {why}", path.display()));
    let load = || -> Result<Vec<Account>> {
        let text = std::fs::read_to_string(&path)?;
        let file: AccountsFile = serde_yaml_ng::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
        if file.accounts.is_empty() {
            return Err(unreadable("no accounts".into()));
        }
        Ok(file.accounts)
    };
    if path.exists() {
        return load();
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
        })
        .map_err(|e| unreadable(e.to_string()))?
    );
    // Several processes may make a new directory's accounts at once: the first file linked in
    // place wins (a link never replaces a file), and every other process reads that one.
    let tmp = path.with_extension(format!("yml.tmp.{}", std::process::id()));
    write_private(&tmp, text.as_bytes())?;
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(accounts),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load(),
        Err(e) => Err(e.into()),
    }
}

/// Writes a file only its owner can read or write (mode 0600 from its creation, so the keys are
/// never readable by others, not even for a moment).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The accounts of one server, shared by every request and job.
#[derive(Debug, Clone)]
pub struct Accounts(Arc<[Arc<Account>]>);

impl Accounts {
    pub fn new(accounts: Vec<Account>) -> Accounts {
        Accounts(accounts.into_iter().map(Arc::new).collect())
    }

    pub fn all(&self) -> &[Arc<Account>] {
        &self.0
    }

    /// Finds the account a key belongs to, and whether the key is write-only.
    pub fn lookup(&self, key: &str) -> Option<Caller> {
        self.0.iter().find_map(|a| {
            let write_only = if a.master_key == key {
                false
            } else if a.write_only_key == key {
                true
            } else {
                return None;
            };
            Some(Caller {
                account: a.clone(),
                write_only,
            })
        })
    }
}

/// Whoever holds a key: the account it belongs to, and whether it is write-only.
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
    pub fn require_master(&self, what: &str) -> Result<()> {
        if self.write_only {
            Err(Error::Forbidden(format!(
                "{what} is not allowed with a write-only API key; use the account's master API key"
            )))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn accounts_yml_is_created_readable_by_its_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let created = load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(ACCOUNTS_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
        assert_eq!(
            load_or_create(dir.path()).unwrap(),
            created,
            "read back as written"
        );
    }
}
