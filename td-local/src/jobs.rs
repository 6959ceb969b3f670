//! Jobs: queries, bulk-import performs and result exports, each run asynchronously
//! (queued → running → success | error). This module owns the `jobs` rows; what a job does
//! lives with its kind (`query`, `routes::bulk_import`, `output`).

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};

use crate::error::ApiResult;
use crate::store::{now, Store};

/// A job to be recorded as `queued`.
#[derive(Debug, Clone, Default)]
pub struct NewJob {
    pub account_id: i64,
    /// `presto`, `trino`, `hive`, `bulk_import` or `result_export`.
    pub job_type: String,
    pub database: String,
    pub query: String,
    pub result_url: String,
    pub priority: i64,
    pub retry_limit: i64,
    pub pool_name: Option<String>,
    pub domain_key: Option<String>,
}

/// Inserts a queued job and returns its id.
pub fn insert(conn: &Connection, job: &NewJob) -> ApiResult<i64> {
    let t = now();
    conn.execute(
        "INSERT INTO jobs (account_id, type, database_name, status, query, result_url, priority, retry_limit, \
         pool_name, domain_key, created_at, updated_at) VALUES (?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
        params![
            job.account_id,
            job.job_type,
            job.database,
            job.query,
            job.result_url,
            job.priority,
            job.retry_limit,
            job.pool_name,
            job.domain_key,
            t
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

/// `queued` → `running`.
pub fn mark_running(store: &Store, id: i64) -> ApiResult<()> {
    store.write(|tx| {
        let t = now();
        tx.execute(
            "UPDATE jobs SET status = 'running', start_at = ?1, updated_at = ?1 WHERE id = ?2 AND status = 'queued'",
            params![t, id],
        )?;
        Ok(())
    })
}

/// What a successful job produced.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub num_records: i64,
    /// Bytes of the msgpack.gz result (0 when the job has no result).
    pub result_size: i64,
    /// JSON text of `[[name, presto_type], …]`, when the job has a result.
    pub hive_result_schema: Option<String>,
    pub cmdout: String,
}

/// `running` → `success` (unless killed meanwhile).
pub fn mark_success(conn: &Connection, id: i64, outcome: &Outcome) -> ApiResult<()> {
    let t = now();
    conn.execute(
        "UPDATE jobs SET status = 'success', num_records = ?1, result_size = ?2, hive_result_schema = ?3, \
         cmdout = ?4, end_at = ?5, updated_at = ?5, cpu_time = 0 WHERE id = ?6 AND status IN ('queued', 'running')",
        params![outcome.num_records, outcome.result_size, outcome.hive_result_schema, outcome.cmdout, t, id],
    )?;
    Ok(())
}

/// `running` → `error`, with the reason in `debug.stderr`.
pub fn mark_error(store: &Store, id: i64, stderr: &str) -> ApiResult<()> {
    store.write(|tx| {
        let t = now();
        tx.execute(
            "UPDATE jobs SET status = 'error', stderr = ?1, end_at = ?2, updated_at = ?2 \
             WHERE id = ?3 AND status IN ('queued', 'running')",
            params![stderr, t, id],
        )?;
        Ok(())
    })
}

/// Where a job's msgpack.gz result lives.
pub fn result_path(data_dir: &Path, id: i64) -> PathBuf {
    data_dir.join("results").join(format!("{id}.msgpack.gz"))
}

/// Marks jobs that were queued or running when the server stopped as failed: their work died
/// with the process.
pub fn recover(store: &Store) -> anyhow::Result<()> {
    store.write(|tx| {
        let t = now();
        tx.execute(
            "UPDATE jobs SET status = 'error', stderr = 'td-local stopped while the job ran', end_at = ?1, \
             updated_at = ?1 WHERE status IN ('queued', 'running')",
            params![t],
        )?;
        Ok(())
    })?;
    Ok(())
}
