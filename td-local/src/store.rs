//! The embedded database: one SQLite file (`DIR/td-local.sqlite3`, WAL) holding every account's
//! databases, tables, rows, bulk-import sessions, jobs and saved results.
//!
//! Rows are stored as JSON text (`records.record`), keyed by table id: a rename or an overwrite is
//! a catalog update, and a commit is one transaction, so readers see all of a write or none of it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::error::{ApiError, ApiResult};

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
    UNIQUE (account_id, name)
);
"#;

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
    crate::query::register_functions(&conn)?;
    Ok(conn)
}

impl Store {
    pub fn open(dir: &Path) -> anyhow::Result<Store> {
        let path = dir.join(DB_FILE);
        let writer = open(&path)?;
        writer.execute_batch(SCHEMA)?;
        Ok(Store {
            inner: Arc::new(StoreInner {
                path,
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Runs `f` in one write transaction; it commits only if `f` returns `Ok`.
    pub fn write<T>(&self, f: impl FnOnce(&Transaction) -> ApiResult<T>) -> ApiResult<T> {
        let mut conn = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs `f` on a read connection (a consistent snapshot for the length of one statement,
    /// or of a transaction `f` opens).
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> ApiResult<T>) -> ApiResult<T> {
        let pooled = self.inner.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => open(&self.inner.path)?,
        };
        let out = f(&conn);
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
        f: impl FnOnce(&Transaction) -> ApiResult<T> + Send + 'static,
    ) -> ApiResult<T> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.write(f))
            .await
            .map_err(|e| ApiError::internal(format!("task failed: {e}")))?
    }

    /// `read` on the blocking pool, for async handlers.
    pub async fn read_async<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> ApiResult<T> + Send + 'static,
    ) -> ApiResult<T> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.read(f))
            .await
            .map_err(|e| ApiError::internal(format!("task failed: {e}")))?
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The id of an account's database, or 404.
pub fn database_id(conn: &Connection, account_id: i64, db: &str) -> ApiResult<i64> {
    conn.query_row(
        "SELECT id FROM databases WHERE account_id = ?1 AND name = ?2",
        params![account_id, db],
        |r| r.get(0),
    )
    .optional()?
    .ok_or_else(|| ApiError::not_found(format!("database '{db}' does not exist")))
}

/// The id of a table, or 404 naming whichever of database or table is missing.
pub fn table_id(conn: &Connection, account_id: i64, db: &str, table: &str) -> ApiResult<i64> {
    let db_id = database_id(conn, account_id, db)?;
    conn.query_row(
        "SELECT id FROM tables WHERE database_id = ?1 AND name = ?2",
        params![db_id, table],
        |r| r.get(0),
    )
    .optional()?
    .ok_or_else(|| ApiError::not_found(format!("table '{db}.{table}' does not exist")))
}

/// Creates a database if it does not exist; returns its id.
pub fn ensure_database(conn: &Connection, account_id: i64, db: &str) -> ApiResult<i64> {
    let t = now();
    conn.execute(
        "INSERT OR IGNORE INTO databases (account_id, name, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
        params![account_id, db, t],
    )?;
    database_id(conn, account_id, db)
}

/// Creates a table if it does not exist (the database must exist); returns its id.
pub fn ensure_table(conn: &Connection, account_id: i64, db: &str, table: &str) -> ApiResult<i64> {
    let db_id = database_id(conn, account_id, db)?;
    let t = now();
    conn.execute(
        "INSERT OR IGNORE INTO tables (database_id, name, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
        params![db_id, table, t],
    )?;
    table_id(conn, account_id, db, table)
}
