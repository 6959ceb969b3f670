//! Jobs as stored: the `jobs` table, a job's status and what it produced. Queries, bulk-import
//! performs and result exports are all jobs; what runs them is `runner` (and `bulk_import` for
//! performs), which move a job queued → running → success | error (or killed).

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{Error, Result};
use crate::results::ResultRequest;
use crate::store::{now, Store};

pub(crate) use td_model::states::JobState;

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
    /// As the caller gave it (`stable`, `experimental`, a version number).
    pub engine_version: Option<String>,
    /// Unix seconds: what `TD_SCHEDULED_TIME()` returns.
    pub scheduled_time: Option<i64>,
    pub domain_key: Option<String>,
    /// A saved result's id and the settings that override its parts: the other way TD takes a
    /// job's output (td-client-java `TDJobRequest`, digdag's `td>` with `result_connection:`).
    pub result_connection_id: Option<String>,
    pub result_connection_settings: Option<String>,
    /// The schedule this job is a run of.
    pub schedule_id: Option<i64>,
}

impl NewJob {
    /// Where the job's result goes, as it was asked.
    pub fn output(&self) -> ResultRequest {
        ResultRequest::new(
            &self.result_url,
            &self.result_connection_id,
            &self.result_connection_settings,
        )
    }
}

/// What a successful job produced.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outcome {
    pub num_records: i64,
    /// Bytes of the msgpack.gz result (0 when the job has no result).
    pub result_size: i64,
    /// JSON text of `[[name, presto_type], …]`, when the job has a result.
    pub hive_result_schema: Option<String>,
    pub cmdout: String,
}

/// A job as stored.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub account_id: i64,
    pub job_type: String,
    pub database: String,
    pub status: JobState,
    pub query: String,
    /// As given (with its key) for a query job; masked for an export job.
    pub result_url: String,
    pub result_connection_id: Option<String>,
    pub result_connection_settings: Option<String>,
    pub priority: i64,
    pub retry_limit: i64,
    pub pool_name: Option<String>,
    pub engine_version: Option<String>,
    pub scheduled_time: Option<i64>,
    pub num_records: Option<i64>,
    pub result_size: Option<i64>,
    pub hive_result_schema: Option<String>,
    pub cpu_time: Option<i64>,
    pub cmdout: String,
    pub stderr: String,
    pub linked_result_export_job_id: Option<i64>,
    pub result_export_target_job_id: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub start_at: Option<i64>,
    pub end_at: Option<i64>,
}

impl Job {
    /// What `TD_SCHEDULED_TIME()` returns in this job's query: the `scheduled_time` it was issued
    /// with, else the time it was issued. TD's own test (td-client-java TestTDClient
    /// `submitJobWithScheduledTime`) pins the first; the second is unconfirmed by a source beyond
    /// TD users' notes that an unscheduled query gets "the actual time" (jpdebug.com/p/1440384).
    pub fn effective_scheduled_time(&self) -> i64 {
        self.scheduled_time.unwrap_or(self.created_at)
    }

    /// Where the job's result goes, as it was asked.
    pub fn output(&self) -> ResultRequest {
        ResultRequest::new(
            &self.result_url,
            &self.result_connection_id,
            &self.result_connection_settings,
        )
    }

    /// Seconds the job has run (so far, while it runs).
    pub fn duration(&self) -> Option<i64> {
        self.start_at.map(|s| self.end_at.unwrap_or_else(now) - s)
    }
}

const JOB_COLUMNS: &str = "id, account_id, type, database_name, status, query, result_url, priority, \
    retry_limit, pool_name, engine_version, scheduled_time, num_records, result_size, hive_result_schema, cpu_time, cmdout, stderr, \
    linked_result_export_job_id, result_export_target_job_id, created_at, updated_at, start_at, end_at, \
    result_connection_id, result_connection_settings";

fn job_row(r: &rusqlite::Row) -> rusqlite::Result<Job> {
    Ok(Job {
        id: r.get(0)?,
        account_id: r.get(1)?,
        job_type: r.get(2)?,
        database: r.get(3)?,
        status: r.get(4)?,
        query: r.get(5)?,
        result_url: r.get(6)?,
        priority: r.get(7)?,
        retry_limit: r.get(8)?,
        pool_name: r.get(9)?,
        engine_version: r.get(10)?,
        scheduled_time: r.get(11)?,
        num_records: r.get(12)?,
        result_size: r.get(13)?,
        hive_result_schema: r.get(14)?,
        cpu_time: r.get(15)?,
        cmdout: r.get(16)?,
        stderr: r.get(17)?,
        linked_result_export_job_id: r.get(18)?,
        result_export_target_job_id: r.get(19)?,
        created_at: r.get(20)?,
        updated_at: r.get(21)?,
        start_at: r.get(22)?,
        end_at: r.get(23)?,
        result_connection_id: r.get(24)?,
        result_connection_settings: r.get(25)?,
    })
}

/// Any account's job by id.
pub(crate) fn get(conn: &Connection, id: i64) -> Result<Job> {
    conn.query_row(
        &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
        params![id],
        job_row,
    )
    .optional()?
    .ok_or_else(|| Error::not_found(format!("job {id} does not exist")))
}

/// A job's status (None: no such job).
pub(crate) fn status_of(conn: &Connection, id: i64) -> Result<Option<JobState>> {
    Ok(conn
        .query_row("SELECT status FROM jobs WHERE id = ?1", params![id], |r| r.get(0))
        .optional()?)
}

/// An account's job by id; another account's job does not exist for it.
pub(crate) fn load(conn: &Connection, account_id: i64, id: i64) -> Result<Job> {
    get(conn, id)
        .ok()
        .filter(|job| job.account_id == account_id)
        .ok_or_else(|| Error::not_found(format!("job {id} does not exist")))
}

/// The account's job with this `domain_key`.
pub(crate) fn by_domain_key(conn: &Connection, account_id: i64, key: &str) -> Result<Job> {
    conn.query_row(
        &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE account_id = ?1 AND domain_key = ?2"),
        params![account_id, key],
        job_row,
    )
    .optional()?
    .ok_or_else(|| Error::not_found(format!("no job has domain_key '{key}'")))
}

/// Which jobs `job/list` shows: positions `from..=to` of the newest-first list, optionally of
/// one status.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListRange {
    pub from: i64,
    pub to: i64,
    pub status: Option<String>,
}

pub(crate) fn list(conn: &Connection, account_id: i64, range: &ListRange) -> Result<Vec<Job>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE account_id = ?1 AND (?2 IS NULL OR status = ?2) \
         ORDER BY id DESC LIMIT ?3 OFFSET ?4"
    ))?;
    let limit = range.to - range.from + 1;
    let rows = stmt.query_map(params![account_id, range.status, limit, range.from], job_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// How many jobs the server holds, of every account.
pub(crate) fn count(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT COUNT(*) FROM jobs", [], |r| r.get(0))?)
}

/// Inserts a queued job and returns its id.
pub(crate) fn insert(conn: &Connection, job: &NewJob) -> Result<i64> {
    conn.execute(
        "INSERT INTO jobs (account_id, type, database_name, status, query, result_url, priority, retry_limit, \
         pool_name, engine_version, scheduled_time, domain_key, created_at, updated_at, \
         result_connection_id, result_connection_settings, schedule_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13, ?14, ?15, ?16)",
        params![
            job.account_id,
            job.job_type,
            job.database,
            JobState::Queued,
            job.query,
            job.result_url,
            job.priority,
            job.retry_limit,
            job.pool_name,
            job.engine_version,
            job.scheduled_time,
            job.domain_key,
            now(),
            job.result_connection_id,
            job.result_connection_settings,
            job.schedule_id,
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Records a queued job, refusing a `domain_key` the account already used (Conflict naming the
/// first job).
pub(crate) fn insert_unique(conn: &Connection, job: &NewJob) -> Result<i64> {
    if let Some(key) = &job.domain_key {
        let existing: Option<i64> = conn
            .query_row(
                "SELECT id FROM jobs WHERE account_id = ?1 AND domain_key = ?2",
                params![job.account_id, key],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(first) = existing {
            return Err(Error::Conflict {
                message: format!("domain_key '{key}' was already used by job {first}"),
                conflicts_with: Some(first),
            });
        }
    }
    insert(conn, job)
}

/// A job's current status.
pub(crate) fn status(store: &Store, id: i64) -> Result<JobState> {
    store.read(|conn| Ok(conn.query_row("SELECT status FROM jobs WHERE id = ?1", params![id], |r| r.get(0))?))
}

/// `queued` → `running`.
pub(crate) fn mark_running(store: &Store, id: i64) -> Result<()> {
    store.write(|tx| mark_running_since(tx, id, now()))
}

/// `queued` → `running`, started at `start_at`.
pub(crate) fn mark_running_since(conn: &Connection, id: i64, start_at: i64) -> Result<()> {
    conn.execute(
        "UPDATE jobs SET status = ?1, start_at = ?2, updated_at = ?2 WHERE id = ?3 AND status = ?4",
        params![JobState::Running, start_at, id, JobState::Queued],
    )?;
    Ok(())
}

/// Replaces a job's `hive_result_schema`.
pub(crate) fn set_result_schema(conn: &Connection, id: i64, schema: &str) -> Result<()> {
    conn.execute(
        "UPDATE jobs SET hive_result_schema = ?1 WHERE id = ?2",
        params![schema, id],
    )?;
    Ok(())
}

/// Stores what a running job produced without finishing it.
pub(crate) fn record_outcome(conn: &Connection, id: i64, outcome: &Outcome) -> Result<()> {
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

/// `running` → `success` (unless killed meanwhile).
pub(crate) fn mark_success(conn: &Connection, id: i64, outcome: &Outcome) -> Result<()> {
    conn.execute(
        "UPDATE jobs SET status = ?1, num_records = ?2, result_size = ?3, hive_result_schema = ?4, \
         cmdout = ?5, end_at = ?6, updated_at = ?6, cpu_time = 0 WHERE id = ?7 AND status IN (?8, ?9)",
        params![
            JobState::Success,
            outcome.num_records,
            outcome.result_size,
            outcome.hive_result_schema,
            outcome.cmdout,
            now(),
            id,
            JobState::Queued,
            JobState::Running
        ],
    )?;
    Ok(())
}

/// `running` → `error`, with the reason in `debug.stderr`.
pub(crate) fn mark_error(store: &Store, id: i64, stderr: &str) -> Result<()> {
    store.write(|tx| {
        tx.execute(
            "UPDATE jobs SET status = ?1, stderr = ?2, end_at = ?3, updated_at = ?3 \
             WHERE id = ?4 AND status IN (?5, ?6)",
            params![
                JobState::Error,
                stderr,
                now(),
                id,
                JobState::Queued,
                JobState::Running
            ],
        )?;
        Ok(())
    })
}

/// Marks a queued or running job of `account_id` killed; returns its former status. A finished
/// job is left as it is and its status returned.
pub(crate) fn kill(conn: &Connection, account_id: i64, id: i64) -> Result<JobState> {
    let status = load(conn, account_id, id)?.status;
    if status.is_active() {
        conn.execute(
            "UPDATE jobs SET status = ?1, end_at = ?2, updated_at = ?2 WHERE id = ?3",
            params![JobState::Killed, now(), id],
        )?;
    }
    Ok(status)
}

/// Checks that an account's job has a result an export can read.
pub(crate) fn check_exportable(conn: &Connection, account_id: i64, id: i64) -> Result<()> {
    let job = load(conn, account_id, id)?;
    if job.status != JobState::Success {
        return Err(Error::invalid(format!(
            "job {id} has no result to export: its status is '{}', not 'success'",
            job.status
        )));
    }
    if job.hive_result_schema.is_none() {
        return Err(Error::invalid(format!("job {id} has no result to export")));
    }
    Ok(())
}

/// Links an export job with the job whose result it exports.
pub(crate) fn link_export(conn: &Connection, source_id: i64, export_id: i64) -> Result<()> {
    conn.execute(
        "UPDATE jobs SET result_export_target_job_id = ?1 WHERE id = ?2",
        params![source_id, export_id],
    )?;
    conn.execute(
        "UPDATE jobs SET linked_result_export_job_id = ?1 WHERE id = ?2",
        params![export_id, source_id],
    )?;
    Ok(())
}

/// Marks jobs that were queued or running when the server stopped as failed: their work died
/// with the process.
pub(crate) fn recover(conn: &Connection) -> Result<()> {
    conn.execute(
        "UPDATE jobs SET status = ?1, stderr = 'td-local stopped while the job ran', end_at = ?2, \
         updated_at = ?2 WHERE status IN (?3, ?4)",
        params![JobState::Error, now(), JobState::Queued, JobState::Running],
    )?;
    Ok(())
}

/// Where a job's msgpack.gz result lives.
pub fn result_path(data_dir: &Path, id: i64) -> PathBuf {
    data_dir.join("results").join(format!("{id}.msgpack.gz"))
}

/// The runs of a schedule, newest first: the `from`-th to the `to`-th (from 0), and how many
/// there are.
pub(crate) fn of_schedule(
    conn: &Connection,
    schedule_id: i64,
    from: i64,
    to: i64,
) -> Result<(i64, Vec<Job>)> {
    let count: i64 = conn.query_row(
        "SELECT COUNT(*) FROM jobs WHERE schedule_id = ?1",
        params![schedule_id],
        |r| r.get(0),
    )?;
    let mut stmt = conn.prepare(&format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE schedule_id = ?1 ORDER BY id DESC LIMIT ?2 OFFSET ?3"
    ))?;
    let jobs = stmt
        .query_map(params![schedule_id, (to - from).max(0), from.max(0)], job_row)?
        .collect::<rusqlite::Result<_>>()?;
    Ok((count, jobs))
}
