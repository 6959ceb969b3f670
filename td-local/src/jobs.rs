//! Jobs: queries, bulk-import performs and result exports, each run asynchronously
//! (queued → running → success | error). This module owns the `jobs` rows; what a job does
//! lives with its kind (`query`, `routes::bulk_import`, `output`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};

use rusqlite::{params, Connection, InterruptHandle, OptionalExtension};

use crate::error::{ApiError, ApiResult};
use crate::query::{Engine, QueryError};
use crate::store::{now, Store};
use crate::AppState;

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

/// Records a queued job, refusing a `domain_key` the account already used (409 naming the first
/// job in `details.conflicts_with`). Runs inside the caller's transaction.
pub fn insert_unique(conn: &Connection, job: &NewJob) -> ApiResult<i64> {
    if let Some(key) = &job.domain_key {
        let existing: Option<i64> = conn
            .query_row(
                "SELECT id FROM jobs WHERE account_id = ?1 AND domain_key = ?2",
                params![job.account_id, key],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(first) = existing {
            return Err(
                ApiError::conflict(format!("domain_key '{key}' was already used by job {first}"))
                    .with_details(serde_json::json!({ "conflicts_with": first.to_string() })),
            );
        }
    }
    insert(conn, job)
}

/// Issues a query job: records it as queued and runs it in the background.
pub async fn issue_query(state: &AppState, job: NewJob) -> ApiResult<i64> {
    let id = state.store.write_async(move |tx| insert_unique(tx, &job)).await?;
    let runner = state.clone();
    tokio::task::spawn_blocking(move || run_query_job(&runner, id));
    Ok(id)
}

/// What the runner needs of a job row.
struct QueuedQuery {
    account_id: i64,
    database: String,
    query: String,
    result_url: String,
}

fn load_query(store: &Store, id: i64) -> ApiResult<QueuedQuery> {
    store.read(|conn| {
        Ok(conn.query_row(
            "SELECT account_id, database_name, query, result_url FROM jobs WHERE id = ?1",
            params![id],
            |r| {
                Ok(QueuedQuery {
                    account_id: r.get(0)?,
                    database: r.get(1)?,
                    query: r.get(2)?,
                    result_url: r.get(3)?,
                })
            },
        )?)
    })
}

/// A job's current status.
pub fn status(store: &Store, id: i64) -> ApiResult<String> {
    store.read(|conn| Ok(conn.query_row("SELECT status FROM jobs WHERE id = ?1", params![id], |r| r.get(0))?))
}

/// queued → running → success | error. Every failure ends in `error` with its reason; a job
/// killed meanwhile stays `killed` (the `mark_*` updates only move queued or running jobs).
fn run_query_job(state: &AppState, id: i64) {
    let outcome = (|| -> Result<(), String> {
        let job = load_query(&state.store, id).map_err(|e| e.message)?;
        mark_running(&state.store, id).map_err(|e| e.message)?;
        if status(&state.store, id).map_err(|e| e.message)? != "running" {
            return Ok(());
        }
        let path = result_path(&state.data_dir, id);
        let outcome = execute(state, id, &job, &path).map_err(|e| e.to_string())?;
        if !job.result_url.is_empty() {
            // The output reads the stored result and its schema, so record them first.
            state
                .store
                .write(|tx| record_outcome(tx, id, &outcome))
                .map_err(|e| e.message)?;
            write_output(state, id, &job)?;
        }
        state
            .store
            .write(|tx| mark_success(tx, id, &outcome))
            .map_err(|e| e.message)?;
        if status(&state.store, id).map_err(|e| e.message)? != "success" {
            let _ = std::fs::remove_file(&path);
        }
        Ok(())
    })();
    if let Err(message) = outcome {
        tracing::info!(job = id, %message, "job failed");
        if let Err(e) = mark_error(&state.store, id, &message) {
            tracing::error!(job = id, error = %e, "could not record a job failure");
        }
        let _ = std::fs::remove_file(result_path(&state.data_dir, id));
    }
}

/// Runs the query, interruptible by `kill` while it runs.
fn execute(state: &AppState, id: i64, job: &QueuedQuery, path: &Path) -> Result<Outcome, QueryError> {
    let engine = Engine::open(&state.data_dir, job.account_id, &job.database)?;
    let _running = RunningQuery::register(&state.data_dir, id, engine.interrupt_handle());
    engine.run(&job.query, path)
}

fn write_output(state: &AppState, id: i64, job: &QueuedQuery) -> Result<(), String> {
    if !job.result_url.starts_with("td://") {
        let scheme = job.result_url.split(':').next().unwrap_or_default();
        return Err(format!(
            "unsupported result type '{scheme}': td-local writes results only to td:// URLs"
        ));
    }
    let target =
        crate::output::parse_result_url(state, job.account_id, &job.result_url).map_err(|e| e.message)?;
    crate::output::write_job_result(state, id, &target)
        .map(|_| ())
        .map_err(|e| format!("result output failed: {}", e.message))
}

/// Stores what a running job produced without finishing it.
fn record_outcome(conn: &Connection, id: i64, outcome: &Outcome) -> ApiResult<()> {
    conn.execute(
        "UPDATE jobs SET num_records = ?1, result_size = ?2, hive_result_schema = ?3, cmdout = ?4, \
         updated_at = ?5 WHERE id = ?6",
        params![
            outcome.num_records,
            outcome.result_size,
            outcome.hive_result_schema,
            outcome.cmdout,
            now(),
            id
        ],
    )?;
    Ok(())
}

/// Queries running now, by data directory and job id (several servers can share a process).
static RUNNING: LazyLock<Mutex<HashMap<(PathBuf, i64), InterruptHandle>>> = LazyLock::new(Default::default);

/// Registration of a running query; removed when dropped.
struct RunningQuery {
    key: (PathBuf, i64),
}

impl RunningQuery {
    fn register(data_dir: &Path, id: i64, handle: InterruptHandle) -> RunningQuery {
        let key = (data_dir.to_path_buf(), id);
        RUNNING
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), handle);
        RunningQuery { key }
    }
}

impl Drop for RunningQuery {
    fn drop(&mut self) {
        RUNNING
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

/// Kills a queued or running job of `account_id`; returns its former status. A finished job is
/// left as it is and its status returned.
pub fn kill(state: &AppState, account_id: i64, id: i64) -> ApiResult<String> {
    let former = state.store.write(|tx| {
        let status: String = tx
            .query_row(
                "SELECT status FROM jobs WHERE id = ?1 AND account_id = ?2",
                params![id, account_id],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| ApiError::not_found(format!("job {id} does not exist")))?;
        if status == "queued" || status == "running" {
            let t = now();
            tx.execute(
                "UPDATE jobs SET status = 'killed', end_at = ?1, updated_at = ?1 WHERE id = ?2",
                params![t, id],
            )?;
        }
        Ok(status)
    })?;
    let key = (state.data_dir.to_path_buf(), id);
    if let Some(handle) = RUNNING.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        handle.interrupt();
    }
    Ok(former)
}
