//! The embedded database: one SQLite file (`DIR/td-local.sqlite3`, WAL) holding every account's
//! databases, tables, rows, bulk-import sessions, jobs and saved results.
//!
//! Rows are stored as JSON text, packed into blocks (`blocks`), in segments: each write (an import body, a
//! batch of a bulk-import perform, a result written into a table) makes segments of its own,
//! which belong to a table, or to a bulk-import session until its commit hands them to the
//! table. So a rename, an overwrite and a commit are catalog updates that move no rows, each in
//! one transaction: readers see all of a write or none of it. A segment keeps its row count,
//! bytes and newest `time`, which is what `table/show` answers from.
//! The SQL of each table lives with the module that owns it (`catalog`, `records`, `jobs`, …).

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, Transaction};

use crate::error::{Error, Result};

pub(crate) const DB_FILE: &str = "td-local.sqlite3";

/// The writer connection's page cache, in KiB (readers keep SQLite's 2 MiB).
const WRITER_CACHE_KIB: i64 = 16 << 10;

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
    idempotent_key TEXT,
    UNIQUE (database_id, name)
);
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
    end_at INTEGER,
    result_connection_id TEXT,
    result_connection_settings TEXT,
    schedule_id INTEGER
);
CREATE TABLE IF NOT EXISTS schedules (
    id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    cron TEXT,
    timezone TEXT NOT NULL DEFAULT 'UTC',
    delay INTEGER NOT NULL DEFAULT 0,
    query TEXT NOT NULL,
    database_name TEXT NOT NULL,
    type TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    retry_limit INTEGER NOT NULL DEFAULT 0,
    engine_version TEXT,
    pool_name TEXT,
    result TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    next_time INTEGER,
    UNIQUE (account_id, name)
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

fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        &format!("SELECT COUNT(*) > 0 FROM pragma_table_info('{table}') WHERE name = ?1"),
        [column],
        |r| r.get(0),
    )
}

/// A data directory from before segments keeps a table's rows as `records(table_id, …)` and
/// staged rows in `bulk_import_staged`: the rows are written again, each table's together and
/// then each session's, and each run becomes a segment of rowids, the layout before blocks
/// (which `segments::pack_rows_into_blocks` then packs). One transaction.
fn move_rows_into_segments(conn: &Connection) -> rusqlite::Result<()> {
    if !has_column(conn, "records", "table_id")? {
        return Ok(());
    }
    conn.execute_batch(
        "BEGIN IMMEDIATE;
         CREATE TABLE segments (id INTEGER PRIMARY KEY, table_id INTEGER, session_id INTEGER,
             first_row INTEGER NOT NULL, rows INTEGER NOT NULL DEFAULT 0,
             bytes INTEGER NOT NULL DEFAULT 0, max_time INTEGER);
         CREATE TABLE IF NOT EXISTS bulk_import_staged (session_id INTEGER, time INTEGER, record TEXT);
         CREATE TEMP TABLE old_rows AS
             SELECT table_id, NULL AS session_id, rowid AS old_row, time, record FROM records
             UNION ALL SELECT NULL, session_id, rowid, time, record FROM bulk_import_staged
             ORDER BY 2 NULLS FIRST, 1, 3;
         DROP TABLE records;
         DROP TABLE bulk_import_staged;
         CREATE TABLE records (time INTEGER NOT NULL, record TEXT NOT NULL);
         INSERT INTO records (rowid, time, record) SELECT rowid, time, record FROM temp.old_rows;
         INSERT INTO segments (table_id, session_id, first_row, rows, bytes, max_time)
             SELECT table_id, session_id, MIN(rowid), COUNT(*),
                 SUM(LENGTH(CAST(record AS BLOB))), MAX(time)
             FROM temp.old_rows GROUP BY table_id, session_id ORDER BY MIN(rowid);
         DROP TABLE temp.old_rows;
         COMMIT;",
    )
}

/// Columns added since the first data directories were made: `(table, column, declaration)`.
/// A data directory from an older td-local gets them at open, with their defaults.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("jobs", "engine_version", "TEXT"),
    ("jobs", "scheduled_time", "INTEGER"),
    ("saved_results", "console", "INTEGER NOT NULL DEFAULT 0"),
    ("jobs", "result_connection_id", "TEXT"),
    ("jobs", "result_connection_settings", "TEXT"),
    // The schedule a job ran for (`crate::schedules`).
    ("jobs", "schedule_id", "INTEGER"),
    // The count a table shows while a change of its rows lags (`crate::lag`), and until when
    // (Unix milliseconds).
    ("tables", "lag_count", "INTEGER"),
    ("tables", "lag_until", "INTEGER"),
    // The idempotent_key a table was created with (`table/create`).
    ("tables", "idempotent_key", "TEXT"),
];

/// Adds the [`ADDED_COLUMNS`] a database lacks.
fn add_missing_columns(conn: &Connection) -> rusqlite::Result<()> {
    for (table, column, declaration) in ADDED_COLUMNS {
        if !has_column(conn, table, column)? {
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
    /// Wakes the checkpointer after a commit (see [`spawn_checkpointer`]).
    checkpoint: SyncSender<()>,
}

fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

/// The WAL file's size kept when it restarts (`journal_size_limit`).
const WAL_KEPT_BYTES: i64 = 64 << 20;

/// The checkpointer's rest after a checkpoint, so that a run of small commits is copied (and
/// fsync'd) once rather than once each.
const CHECKPOINT_REST: std::time::Duration = std::time::Duration::from_millis(100);

/// Starts the thread that copies committed pages from the WAL into the database, woken after
/// commits: so a writer never does the copy and its fsync itself (SQLite's autocheckpoint makes
/// the committing writer do both). PASSIVE: it never blocks a reader or a writer. It ends when
/// the store is dropped.
fn spawn_checkpointer(path: &Path) -> Result<SyncSender<()>> {
    let conn = open(path)?;
    let (wake, woken) = sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("td-local-checkpoint".into())
        .spawn(move || {
            while woken.recv().is_ok() {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "checkpoint failed");
                }
                std::thread::sleep(CHECKPOINT_REST);
            }
        })
        .map_err(|e| Error::internal(format!("starting the checkpoint thread: {e}")))?;
    Ok(wake)
}

impl Store {
    /// Opens (or creates) `DIR/td-local.sqlite3` with every table td-local keeps.
    pub fn open(dir: &Path) -> Result<Store> {
        let path = dir.join(DB_FILE);
        let writer = open(&path)?;
        // A write transaction (a batch of up to `limits::BATCH_BYTES` of rows) keeps the pages
        // it dirties in memory instead of spilling them to the WAL and reading them back.
        writer.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
        move_rows_into_segments(&writer)?;
        writer.execute_batch(SCHEMA)?;
        crate::segments::create_tables(&writer)?;
        if has_column(&writer, "segments", "first_row")? {
            crate::segments::pack_rows_into_blocks(&writer)?;
        }
        add_missing_columns(&writer)?;
        // Checkpoints run on a thread of their own instead of in the committing writer.
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        // A WAL that grew while checkpoints lagged is cut back to this when it restarts.
        writer.pragma_update(None, "journal_size_limit", WAL_KEPT_BYTES)?;
        let checkpoint = spawn_checkpointer(&path)?;
        Ok(Store {
            inner: Arc::new(StoreInner {
                path,
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
                checkpoint,
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
        // Full means a wake-up is already pending.
        let _ = self.inner.checkpoint.try_send(());
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
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
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

/// Seconds since the Unix epoch.
pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::type_complexity)]
    fn segments_of(store: &Store) -> Vec<(Option<i64>, Option<i64>, i64, i64, Option<i64>)> {
        store
            .read(|conn| Ok(crate::segments::segment_rows(conn)))
            .unwrap()
    }

    fn rows_of(store: &Store, table: i64) -> Vec<(i64, String)> {
        store
            .read(|conn| Ok(crate::segments::rows_of(conn, table)))
            .unwrap()
    }

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

    #[test]
    fn a_data_directory_from_before_segments_keeps_its_rows_and_staged_rows() {
        let dir = tempfile::tempdir().unwrap();
        let old = Connection::open(dir.path().join(DB_FILE)).unwrap();
        old.execute_batch(
            "CREATE TABLE records (table_id INTEGER NOT NULL, time INTEGER NOT NULL, record TEXT NOT NULL);
             CREATE INDEX records_by_table ON records (table_id);
             CREATE TABLE bulk_import_staged (session_id INTEGER NOT NULL, time INTEGER NOT NULL, record TEXT NOT NULL);
             INSERT INTO records VALUES (7, 1, '{\"time\":1,\"s\":\"é\"}'), (7, 5, '{\"time\":5}'), (9, 2, '{\"time\":2}');
             INSERT INTO bulk_import_staged VALUES (3, 4, '{\"time\":4}');",
        )
        .unwrap();
        drop(old);

        let store = Store::open(dir.path()).unwrap();
        let segments = segments_of(&store);
        assert_eq!(
            segments,
            vec![
                (Some(7), None, 2, 29, Some(5)),
                (Some(9), None, 1, 10, Some(2)),
                (None, Some(3), 1, 10, Some(4))
            ],
            "each table's rows and each session's staged rows are a segment, bytes counted as bytes"
        );
        let rows = |table| {
            store
                .read(|conn| Ok(crate::segments::rows_of(conn, table)))
                .unwrap()
        };
        assert_eq!(
            rows(7),
            vec![
                (1, "{\"time\":1,\"s\":\"é\"}".to_string()),
                (5, "{\"time\":5}".to_string())
            ]
        );
        assert_eq!(rows(9), vec![(2, "{\"time\":2}".to_string())]);
        let staged = store.read(|conn| crate::segments::session_rows(conn, 3)).unwrap();
        assert_eq!(staged, 1);
        // Opening again finds nothing to move.
        drop(store);
        Store::open(dir.path()).unwrap();
    }

    /// td-local before blocks: `segments(first_row, rows, …)` over one `records` row per row.
    #[test]
    fn a_data_directory_from_before_blocks_keeps_its_rows_owners_and_order() {
        let dir = tempfile::tempdir().unwrap();
        let old = Connection::open(dir.path().join(DB_FILE)).unwrap();
        old.execute_batch(
            "CREATE TABLE records (time INTEGER NOT NULL, record TEXT NOT NULL);
             CREATE TABLE segments (id INTEGER PRIMARY KEY, table_id INTEGER, session_id INTEGER,
                 first_row INTEGER NOT NULL, rows INTEGER NOT NULL DEFAULT 0,
                 bytes INTEGER NOT NULL DEFAULT 0, max_time INTEGER);
             INSERT INTO records (rowid, time, record) VALUES
                 (1, 1, '{\"time\":1,\"s\":\"é\"}'), (2, 5, '{\"time\":5}'), (3, 2, '{\"time\":2}'),
                 (4, 4, '{\"time\":4}'), (5, 3, '{\"time\":3}');
             INSERT INTO segments (table_id, session_id, first_row, rows, bytes, max_time) VALUES
                 (7, NULL, 4, 1, 10, 4), (7, NULL, 1, 2, 29, 5), (NULL, 3, 3, 1, 10, 2), (9, NULL, 6, 0, 0, NULL),
                 (9, NULL, 5, 1, 10, 3);",
        )
        .unwrap();
        drop(old);

        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            rows_of(&store, 7),
            vec![
                (4, r#"{"time":4}"#.to_string()),
                (1, r#"{"time":1,"s":"é"}"#.to_string()),
                (5, r#"{"time":5}"#.to_string())
            ]
        );
        assert_eq!(rows_of(&store, 9), vec![(3, r#"{"time":3}"#.to_string())]);
        let segments = segments_of(&store);
        assert_eq!(
            segments,
            vec![
                (Some(7), None, 1, 10, Some(4)),
                (Some(7), None, 2, 29, Some(5)),
                (None, Some(3), 1, 10, Some(2)),
                (Some(9), None, 0, 0, None),
                (Some(9), None, 1, 10, Some(3)),
            ],
            "each segment keeps its owner, counts and place"
        );
        let staged = store.read(|conn| crate::segments::session_rows(conn, 3)).unwrap();
        assert_eq!(staged, 1);
        // Opening again finds nothing to pack.
        drop(store);
        Store::open(dir.path()).unwrap();
    }

    #[test]
    fn committed_pages_are_copied_into_the_database_by_the_checkpointer_not_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let row = "x".repeat(1000);
        for _ in 0..8 {
            store
                .write(|tx| {
                    let mut insert = tx.prepare("INSERT INTO blocks (data) VALUES (?1)")?;
                    for _ in 0..1000 {
                        insert.execute([&row])?;
                    }
                    Ok(())
                })
                .unwrap();
        }
        // The writer never checkpoints (wal_autocheckpoint is 0): only the checkpointer can
        // have moved the 8 MB into the database file.
        let db = dir.path().join(DB_FILE);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::metadata(&db).unwrap().len() < 7_000_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint copied the rows"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let autocheckpoint: i64 = store
            .write(|tx| Ok(tx.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(autocheckpoint, 0);
    }
}
