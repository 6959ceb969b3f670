//! The background work of jobs: a query (and the td:// output of its `result=`), a result export,
//! a bulk-import perform. Each is recorded first (`jobs`), answered at once, then run on the
//! blocking pool: queued → running → success | error. A job killed meanwhile stays `killed`
//! (the `jobs::mark_*` updates only move queued or running jobs).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

use rusqlite::InterruptHandle;

use crate::accounts::Accounts;
use crate::bulk_import::{self, PerformOptions};
use crate::catalog::database_id;
use crate::error::{Error, Result};
use crate::jobs::{self, JobState, NewJob, Outcome};
use crate::lag::CountLag;
use crate::limits::Limits;
use crate::output::{self, OutputTarget};
use crate::query::{Engine, QueryError};
use crate::schedules::{self, Schedule};
use crate::store::{blocking, Store};

/// The job types a query can be issued as.
pub(crate) const QUERY_TYPES: &[&str] = &["presto", "trino", "hive"];

/// What runs jobs: the store, the data directory of their results, and the accounts a result
/// URL's key may name.
#[derive(Clone)]
pub struct Runner {
    store: Store,
    data_dir: Arc<PathBuf>,
    accounts: Accounts,
    /// What a perform may take of one part and one record.
    limits: Limits,
    /// How long a table's count lags a commit.
    count_lag: CountLag,
}

impl Runner {
    pub fn new(
        store: Store,
        data_dir: &Path,
        accounts: Accounts,
        limits: Limits,
        count_lag: CountLag,
    ) -> Runner {
        Runner {
            store,
            data_dir: Arc::new(data_dir.to_path_buf()),
            accounts,
            limits,
            count_lag,
        }
    }

    /// At startup: the work of jobs and performs that were running when the server stopped died
    /// with it; their jobs fail and their sessions go back to `uploading`.
    pub fn recover(store: &Store) -> Result<()> {
        store.write(|tx| {
            jobs::recover(tx)?;
            bulk_import::recover(tx)
        })
    }

    /// Issues a query job: checks it, records it as queued and runs it in the background.
    pub async fn issue_query(&self, job: NewJob) -> Result<i64> {
        let runner = self.clone();
        let id = blocking(move || {
            runner.check_issuable(&job)?;
            let id = runner.store.write(|tx| jobs::insert_unique(tx, &job))?;
            tokio::task::spawn_blocking(move || runner.run_query_job(id));
            Ok(id)
        })
        .await?;
        Ok(id)
    }

    /// What `job/issue` refuses before a job is recorded: its options, its output (a td:// URL
    /// or a saved result that does not resolve; another scheme fails when the job runs, as TD's
    /// output would) and a database the account lacks. Blocking: it reads the store.
    pub fn check_issuable(&self, job: &NewJob) -> Result<()> {
        check_query(job)?;
        let request = job.output();
        if !request.is_empty() && request.foreign_scheme().is_none() {
            self.store
                .read(|conn| output::target(conn, &self.accounts, job.account_id, &request))?;
        }
        self.store
            .read(|conn| database_id(conn, job.account_id, &job.database))
            .map(drop)
    }

    /// Issues one run of a schedule: its query as a job whose `TD_SCHEDULED_TIME()` is the
    /// scheduled time, its result written where the schedule's `result` says.
    pub async fn issue_scheduled(&self, schedule: &Schedule, scheduled_time: i64) -> Result<i64> {
        self.issue_query(schedule.job(Some(scheduled_time))).await
    }

    /// Issues the schedules' runs due at `at` (Unix seconds); returns their job ids. A run that
    /// cannot be issued (its database deleted since, say) is logged and skipped, as TD moves on
    /// to the next time.
    pub async fn fire_schedules(&self, at: i64) -> Result<Vec<i64>> {
        // A read first: the writer (a bulk import's batches, say) is taken only when a run is due.
        if !self
            .store
            .read_async(move |conn| schedules::any_due(conn, at))
            .await?
        {
            return Ok(Vec::new());
        }
        let due = self
            .store
            .write_async(move |tx| schedules::take_due(tx, at))
            .await?;
        let mut issued = Vec::new();
        for run in due {
            match self.issue_scheduled(&run.schedule, run.scheduled_time).await {
                Ok(id) => issued.push(id),
                Err(e) => tracing::warn!(
                    schedule = %run.schedule.name,
                    scheduled_time = run.scheduled_time,
                    error = %e,
                    "a scheduled run could not be issued"
                ),
            }
        }
        Ok(issued)
    }

    /// queued → running → success | error. Every failure ends in `error` with its reason.
    fn run_query_job(&self, id: i64) {
        if let Err(message) = self.query_job(id) {
            tracing::info!(job = id, %message, "job failed");
            if let Err(e) = jobs::mark_error(&self.store, id, &message) {
                tracing::error!(job = id, error = %e, "could not record a job failure");
            }
            let _ = std::fs::remove_file(jobs::result_path(&self.data_dir, id));
        }
    }

    fn query_job(&self, id: i64) -> std::result::Result<(), String> {
        let job = self
            .store
            .read(|conn| jobs::get(conn, id))
            .map_err(|e| e.to_string())?;
        jobs::mark_running(&self.store, id).map_err(|e| e.to_string())?;
        if jobs::status(&self.store, id).map_err(|e| e.to_string())? != JobState::Running {
            return Ok(());
        }
        let path = jobs::result_path(&self.data_dir, id);
        let outcome = self.execute(&job, &path).map_err(|e| e.to_string())?;
        if !job.output().is_empty() {
            // The output reads the stored result and its schema, so record them first.
            self.store
                .write(|tx| jobs::record_outcome(tx, id, &outcome))
                .map_err(|e| e.to_string())?;
            self.write_output(&job)?;
        }
        self.store
            .write(|tx| jobs::mark_success(tx, id, &outcome))
            .map_err(|e| e.to_string())?;
        if jobs::status(&self.store, id).map_err(|e| e.to_string())? != JobState::Success {
            let _ = std::fs::remove_file(&path);
        }
        Ok(())
    }

    /// Runs the query, interruptible by `kill` while it runs.
    fn execute(&self, job: &jobs::Job, path: &Path) -> std::result::Result<Outcome, QueryError> {
        let engine = Engine::open(
            &self.store,
            job.account_id,
            &job.database,
            job.effective_scheduled_time(),
        )?;
        let _running = RunningQuery::register(&self.data_dir, job.id, engine.interrupt_handle());
        engine.run(&job.query, path)
    }

    fn write_output(&self, job: &jobs::Job) -> std::result::Result<(), String> {
        let request = job.output();
        if let Some(scheme) = request.foreign_scheme() {
            return Err(format!(
                "unsupported result type '{scheme}': td-local writes results only to td:// URLs"
            ));
        }
        let target = self
            .store
            .read(|conn| output::target(conn, &self.accounts, job.account_id, &request))
            .map_err(|e| e.to_string())?;
        output::write_job_result(&self.store, &self.data_dir, job.id, &target)
            .map(|_| ())
            .map_err(|e| format!("result output failed: {e}"))
    }

    /// Kills a queued or running job of `account_id`; returns its former status.
    pub fn kill(&self, account_id: i64, id: i64) -> Result<JobState> {
        let former = self.store.write(|tx| jobs::kill(tx, account_id, id))?;
        let key = (self.data_dir.to_path_buf(), id);
        if let Some(handle) = RUNNING.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            handle.interrupt();
        }
        Ok(former)
    }

    /// Starts a result export of `source_id`'s result into `target`: records the export job,
    /// linked with its source (which must have a result), and runs it in the background.
    pub async fn export(
        &self,
        account_id: i64,
        source_id: i64,
        target: OutputTarget,
        domain_key: Option<String>,
    ) -> Result<i64> {
        let runner = self.clone();
        blocking(move || {
            let export_id = runner.store.write(|tx| {
                jobs::check_exportable(tx, account_id, source_id)?;
                let export = NewJob {
                    account_id,
                    job_type: "result_export".to_string(),
                    database: target.database.clone(),
                    result_url: target.masked_url(),
                    domain_key,
                    ..NewJob::default()
                };
                let export_id = jobs::insert_unique(tx, &export)?;
                jobs::link_export(tx, source_id, export_id)?;
                Ok(export_id)
            })?;
            tokio::task::spawn_blocking(move || runner.run_export(export_id, source_id, &target));
            Ok(export_id)
        })
        .await
    }

    /// The export job's life: running → success with the rows written, or error with the reason.
    fn run_export(&self, export_id: i64, source_id: i64, target: &OutputTarget) {
        let finished = jobs::mark_running(&self.store, export_id)
            .and_then(|()| output::write_job_result(&self.store, &self.data_dir, source_id, target))
            .and_then(|rows| {
                let outcome = Outcome {
                    num_records: rows as i64,
                    cmdout: format!(
                        "wrote {rows} rows of job {source_id} to {}\n",
                        target.masked_url()
                    ),
                    ..Outcome::default()
                };
                self.store.write(|tx| jobs::mark_success(tx, export_id, &outcome))
            });
        if let Err(e) = finished {
            tracing::warn!(job = export_id, source = source_id, error = %e, "result export failed");
            if let Err(e) = jobs::mark_error(&self.store, export_id, &e.to_string()) {
                tracing::error!(job = export_id, error = %e, "cannot record the export job's failure");
            }
        }
    }

    /// Starts a perform job; the session is `performing` when this returns, so a client polling
    /// `show` never sees it still `uploading`.
    pub async fn perform(&self, account_id: i64, name: String, options: PerformOptions) -> Result<i64> {
        let (store, limits) = (self.store.clone(), self.limits);
        // On a blocking thread, which runs to its end whatever becomes of the request: a caller
        // gone once the session is `performing` (a killed client) must not leave its job queued
        // and never run, as TD runs a job it has accepted.
        blocking(move || {
            let (session_id, job_id) =
                store.write(|tx| bulk_import::start_perform(tx, account_id, &name, &options))?;
            tokio::task::spawn_blocking(move || {
                bulk_import::run_perform(&store, &limits, session_id, job_id)
            });
            Ok(job_id)
        })
        .await
    }

    /// Commits a session.
    pub async fn commit(&self, account_id: i64, name: String) -> Result<()> {
        let lag = self.count_lag;
        self.store
            .write_async(move |tx| bulk_import::commit(tx, account_id, &name, lag))
            .await?;
        Ok(())
    }
}

/// The checks TD makes of an issued query before it is queued.
/// The most automatic retries a job may ask for.
pub(crate) const MAX_RETRY_LIMIT: i64 = 32;

fn check_query(job: &NewJob) -> Result<()> {
    if !QUERY_TYPES.contains(&job.job_type.as_str()) {
        return Err(Error::invalid(format!(
            "unsupported job type '{}': use presto, trino or hive",
            job.job_type
        )));
    }
    if job.query.is_empty() {
        return Err(Error::bad_request("parameter 'query' is required"));
    }
    if !(-2..=2).contains(&job.priority) {
        return Err(Error::invalid(format!(
            "parameter 'priority' must be between -2 and 2, got {}",
            job.priority
        )));
    }
    // TD's API description bounds both (https://td-public.redocly.app/apis/td-api, createJob).
    if !(0..=MAX_RETRY_LIMIT).contains(&job.retry_limit) {
        return Err(Error::invalid(format!(
            "parameter 'retry_limit' must be between 0 and {MAX_RETRY_LIMIT}, got {}",
            job.retry_limit
        )));
    }
    // TD refuses a Presto pool it does not have: td-client-java's tests against the real API
    // (TestTDClient `submitPrestoJobWithInvalidPoolName`: "Presto resource pool with name
    // 'no_such_pool' does not exist"; `submitPrestoJobWithPoolName`: a Hive pool answers 400).
    // td-local has no Presto pools. Hive takes any pool name (`submitJobWithPoolName`).
    if let (Some(pool), "presto" | "trino") = (&job.pool_name, job.job_type.as_str()) {
        return Err(Error::bad_request(format!(
            "Presto resource pool with name '{pool}' does not exist"
        )));
    }
    if let Some(version) = &job.engine_version {
        check_engine_version(version)?;
    }
    if let Some(t) = job.scheduled_time {
        td_model::time::check_seconds(t)
            .map_err(|e| Error::invalid(format!("parameter 'scheduled_time' {t} {e}")))?;
    }
    Ok(())
}

/// TD answers 422 "Job engine version is invalid" for a made-up version (`AAAAAA`) and accepts
/// `stable` (td-client-java TestTDClient `submitJobWithInvalidEngineVersion*`). Which others it
/// accepts is unconfirmed: td-local takes `stable`, `experimental` and anything with a digit in
/// it (a version number such as `Hive TD 2018.01`, which td-client-java's EngineVersion names).
fn check_engine_version(version: &str) -> Result<()> {
    let named = ["stable", "experimental"].contains(&version.trim().to_ascii_lowercase().as_str());
    if named || version.bytes().any(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "Job engine version is invalid: '{version}' (use stable, experimental or a version number)"
        )))
    }
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
