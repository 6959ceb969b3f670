//! The embedded database: one SQLite file (`DIR/td-local.sqlite3`, WAL) holding every account's
//! databases, tables, rows, bulk-import sessions, jobs and saved results.
//!
//! Rows are stored as JSON text (`records.record`), keyed by table id: a rename or an overwrite is
//! a catalog update, and a commit is one transaction, so readers see all of a write or none of it.
//! The SQL of each table lives with the module that owns it (`catalog`, `records`, `jobs`, …).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, Transaction};

use crate::error::{Error, Result};

pub const DB_FILE: &str = "td-local.sqlite3";

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS databases (
    id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (account_id, name)
);
CREATE TABLE IF NOT EXISTS tables (
    id INTEGER PRIMARY KEY,
    database_id INTEGER NOT NULL REFERENCES databases(id),
    name TEXT NOT NULL,
    schema TEXT NOT NULL DEFAULT '[]',
    description TEXT,
    expire_days INTEGER,
    include_v INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (database_id, name)
);
CREATE TABLE IF NOT EXISTS records (
    table_id INTEGER NOT NULL,
    time INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_table ON records (table_id);
CREATE TABLE IF NOT EXISTS import_ids (
    table_id INTEGER NOT NULL,
    unique_id TEXT NOT NULL,
    PRIMARY KEY (table_id, unique_id)
);
CREATE TABLE IF NOT EXISTS bulk_imports (
    id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    database_name TEXT NOT NULL,
    table_name TEXT NOT NULL,
    status TEXT NOT NULL,
    upload_frozen INTEGER NOT NULL DEFAULT 0,
    job_id INTEGER,
    valid_records INTEGER,
    error_records INTEGER,
    valid_parts INTEGER,
    error_parts INTEGER,
    new_columns TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (account_id, name)
);
CREATE TABLE IF NOT EXISTS bulk_import_parts (
    session_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    data BLOB NOT NULL,
    uploaded_at INTEGER NOT NULL,
    PRIMARY KEY (session_id, name)
);
CREATE TABLE IF NOT EXISTS bulk_import_staged (
    session_id INTEGER NOT NULL,
    time INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS staged_by_session ON bulk_import_staged (session_id);
CREATE TABLE IF NOT EXISTS bulk_import_errors (
    session_id INTEGER NOT NULL,
    record BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL,
    type TEXT NOT NULL,
    database_name TEXT NOT NULL,
    status TEXT NOT NULL,
    query TEXT NOT NULL DEFAULT '',
    result_url TEXT NOT NULL DEFAULT '',
    priority INTEGER NOT NULL DEFAULT 0,
    retry_limit INTEGER NOT NULL DEFAULT 0,
    pool_name TEXT,
    engine_version TEXT,
    scheduled_time INTEGER,
    domain_key TEXT,
    num_records INTEGER,
    result_size INTEGER,
    hive_result_schema TEXT,
    cpu_time INTEGER,
    cmdout TEXT NOT NULL DEFAULT '',
    stderr TEXT NOT NULL DEFAULT '',
    linked_result_export_job_id INTEGER,
    result_export_target_job_id INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    start_at INTEGER,
    end_at INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_by_domain_key ON jobs (account_id, domain_key) WHERE domain_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS saved_results (
    id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    url TEXT NOT NULL,
    console INTEGER NOT NULL DEFAULT 0,
    UNIQUE (account_id, name)
);
"#;

/// Columns added since the first data directories were made: `(table, column, declaration)`.
/// A data directory from an older td-local gets them at open, with their defaults.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("jobs", "engine_version", "TEXT"),
    ("jobs", "scheduled_time", "INTEGER"),
    ("saved_results", "console", "INTEGER NOT NULL DEFAULT 0"),
];

/// Adds the [`ADDED_COLUMNS`] a database lacks.
fn add_missing_columns(conn: &Connection) -> rusqlite::Result<()> {
    for (table, column, declaration) in ADDED_COLUMNS {
        let exists: bool = conn.query_row(
            &format!("SELECT COUNT(*) > 0 FROM pragma_table_info('{table}') WHERE name = ?1"),
            [column],
            |r| r.get(0),
        )?;
        if !exists {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {declaration}"))?;
        }
    }
    Ok(())
}

/// Handle to the embedded database. Writes are serialized through one connection; reads use
/// pooled connections that see the last committed state (WAL snapshot isolation).
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
}

struct StoreInner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

impl Store {
    /// Opens (or creates) `DIR/td-local.sqlite3` with every table td-local keeps.
    pub fn open(dir: &Path) -> Result<Store> {
        let path = dir.join(DB_FILE);
        let writer = open(&path)?;
        writer.execute_batch(SCHEMA)?;
        add_missing_columns(&writer)?;
        Ok(Store {
            inner: Arc::new(StoreInner {
                path,
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The database file, for the query engine that attaches it read-only.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` in one write transaction; it commits only if `f` returns `Ok`.
    pub fn write<T>(&self, f: impl FnOnce(&Transaction) -> Result<T>) -> Result<T> {
        let mut conn = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs `f` in one read transaction on a pooled connection: every statement `f` runs sees
    /// the same committed state (one WAL snapshot), so a name looked up and the rows read under
    /// it cannot straddle a concurrent rename, swap or replace.
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let pooled = self.inner.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => open(&self.inner.path)?,
        };
        let out = read_transaction(&mut conn, f);
        self.inner
            .readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
        out
    }

    /// `write` on the blocking pool, for async handlers.
    pub async fn write_async<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.clone();
        blocking(move || store.write(f)).await
    }

    /// `read` on the blocking pool, for async handlers.
    pub async fn read_async<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.clone();
        blocking(move || store.read(f)).await
    }
}

/// Runs blocking work (SQLite, files) on the blocking pool.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("task failed: {e}")))?
}

/// Runs `f` in a deferred transaction that only reads: its snapshot starts with the first
/// statement and lasts until `f` returns. Dropping the transaction ends it either way.
fn read_transaction<T>(conn: &mut Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Deferred)?;
    f(&tx)
}

/// An enum of states stored as words (`'queued'`, `'ready'`, …): `as_str`, `parse`, `Display`,
/// and SQL conversions, where a word the enum does not know is a read error, not a default.
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $($(#[$variant_meta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$variant_meta])* $variant,)+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<$name> {
                let text = value.as_str()?;
                $name::parse(text).ok_or_else(|| {
                    rusqlite::types::FromSqlError::Other(format!("{} '{text}'", $what).into())
                })
            }
        }

        impl rusqlite::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(rusqlite::types::ToSqlOutput::from(self.as_str()))
            }
        }
    };
}
pub(crate) use text_enum;

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_directory_from_before_the_added_columns_gets_them_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let old_schema = SCHEMA
            .replace("    engine_version TEXT,\n    scheduled_time INTEGER,\n", "")
            .replace("    console INTEGER NOT NULL DEFAULT 0,\n", "");
        assert_ne!(old_schema, SCHEMA, "the old schema lacks the added columns");
        let old = Connection::open(dir.path().join(DB_FILE)).unwrap();
        old.execute_batch(&old_schema).unwrap();
        old.execute(
            "INSERT INTO saved_results (account_id, name, url) VALUES (1, 'kept', 'td://@/db/t')",
            [],
        )
        .unwrap();
        drop(old);

        let store = Store::open(dir.path()).unwrap();
        let (console, scheduled): (i64, Option<i64>) = store
            .read(|conn| {
                let console =
                    conn.query_row("SELECT console FROM saved_results WHERE name = 'kept'", [], |r| {
                        r.get(0)
                    })?;
                let scheduled = conn.query_row("SELECT MAX(scheduled_time) FROM jobs", [], |r| r.get(0))?;
                Ok((console, scheduled))
            })
            .unwrap();
        assert_eq!((console, scheduled), (0, None));
        // Opening again finds nothing to add.
        drop(store);
        Store::open(dir.path()).unwrap();
    }
}
