//! The source stage: the finished job whose result is exported — an existing job waited for, or a
//! query issued (with a domain key, so a rerun reuses its job) — and its result schema.

use std::time::Instant;

use td_model::schema::{parse_result_schema, ResultColumn};
use td_model::time::parse_td_timestamp;

use crate::error::{Class, Classify, Exit};
use crate::resolve::{QueryOptions, Source};
use crate::retry::PollPolicy;
use crate::td::{nth_domain_key, Job, JobStatus, TdClient, TdError};
use td_model::states::JobState;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source job {id} ended with status '{status}'{}", output_suffix(.output))]
    JobFailed {
        id: String,
        status: JobStatus,
        /// What the job said: its cmdout, then its stderr.
        output: Option<String>,
    },
    #[error("source job {id} has no readable result schema ({detail})")]
    BadSchema { id: String, detail: String },
    #[error(transparent)]
    Td(#[from] TdError),
}

fn output_suffix(output: &Option<String>) -> String {
    match output.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => format!(":\n{}", s.chars().take(2000).collect::<String>()),
        None => String::new(),
    }
}

impl Classify for SourceError {
    fn class(&self) -> Class {
        match self {
            SourceError::JobFailed { .. } => Class::new("SourceJobFailed", Exit::Failed),
            SourceError::BadSchema { .. } => Class::new("BadResultSchema", Exit::Failed),
            SourceError::Td(e) => e.class(),
        }
    }
}

/// Waits until job `id` has finished, whatever its end; `on_wait` sees it while it runs.
pub(crate) async fn finished_job(
    client: &TdClient,
    id: &str,
    poll: &PollPolicy,
    mut on_wait: impl FnMut(&Job),
) -> Result<Job, TdError> {
    let started = Instant::now();
    loop {
        let job = client.job(id).await?;
        if job.is_finished() {
            return Ok(job);
        }
        on_wait(&job);
        tokio::time::sleep(poll.job.after(started.elapsed())).await;
    }
}

/// Waits until job `id` finishes; an error or killed job is a `JobFailed` with what it said.
pub(crate) async fn wait_for_job(client: &TdClient, id: &str, poll: &PollPolicy) -> Result<Job, SourceError> {
    wait_for_job_watched(client, id, poll, |_| {}).await
}

/// As [`wait_for_job`], with `on_wait` seeing the job each time it is found still running.
pub(crate) async fn wait_for_job_watched(
    client: &TdClient,
    id: &str,
    poll: &PollPolicy,
    mut on_wait: impl FnMut(&Job),
) -> Result<Job, SourceError> {
    let started = Instant::now();
    let job = finished_job(client, id, poll, |job| {
        tracing::info!(job_id = %job.job_id, status = %job.status, waited_s = started.elapsed().as_secs(), "waiting for the source job");
        on_wait(job);
    })
    .await?;
    if job.status.is(JobState::Success) {
        return Ok(job);
    }
    Err(SourceError::JobFailed {
        id: id.to_string(),
        output: job.failure_output(),
        status: job.status,
    })
}

/// The finished source job: the one named, or the query's. `recorded` is the query job an
/// unfinished earlier run left; it is reused when it ran the same query and has not failed.
/// `on_issued` hears of a job issued now, before it is waited for; `on_wait` sees the job while
/// it runs.
pub(crate) async fn source_job(
    client: &TdClient,
    source: &Source,
    domain_key: Option<&str>,
    recorded: Option<&str>,
    poll: &PollPolicy,
    on_issued: impl FnOnce(&str),
    on_wait: impl FnMut(&Job),
) -> Result<Job, SourceError> {
    let id = match source {
        Source::Job { id } => id.clone(),
        Source::Query {
            sql,
            database,
            engine,
            options,
        } => {
            let reusable = match recorded {
                Some(id) => reusable_job(client, id, sql, database).await?,
                None => None,
            };
            match reusable {
                Some(id) => id,
                None => {
                    let query = Query {
                        engine: engine.as_str(),
                        database,
                        sql,
                        options: issue_form(options),
                    };
                    let id = issue(client, &query, domain_key, poll).await?;
                    tracing::info!(job_id = %id, "issued the query");
                    on_issued(&id);
                    id
                }
            }
        }
    };
    wait_for_job_watched(client, &id, poll, on_wait).await
}

/// A query to issue.
struct Query<'a> {
    engine: &'a str,
    database: &'a str,
    sql: &'a str,
    options: Vec<(&'static str, String)>,
}

/// The issue call's form fields for the options given, as the official clients send them.
fn issue_form(o: &QueryOptions) -> Vec<(&'static str, String)> {
    [
        ("priority", o.priority.map(|p| p.to_string())),
        ("retry_limit", o.retry_limit.map(|r| r.to_string())),
        ("pool_name", o.pool_name.clone()),
        ("engine_version", o.engine_version.clone()),
        ("scheduled_time", o.scheduled_time.map(|t| t.to_string())),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|v| (name, v)))
    .collect()
}

/// Issues the query. A domain key makes a rerun find the job an earlier run issued instead of
/// issuing it twice; when that job failed or was killed (a run interrupted, say), the query is
/// issued again under the next key, so a rerun still gets a job that can succeed.
async fn issue(
    client: &TdClient,
    q: &Query<'_>,
    domain_key: Option<&str>,
    poll: &PollPolicy,
) -> Result<String, TdError> {
    let Some(key) = domain_key else {
        return client
            .issue_query(q.engine, q.database, q.sql, None, &q.options)
            .await;
    };
    let mut attempt = 0;
    loop {
        let key = nth_domain_key(key, attempt);
        let id = client
            .issue_query(q.engine, q.database, q.sql, Some(&key), &q.options)
            .await?;
        if attempt >= poll.max_reissues || !client.job(&id).await?.has_failed() {
            return Ok(id);
        }
        tracing::info!(job_id = %id, domain_key = %key, "the job of this domain key failed; issuing the query again");
        attempt += 1;
    }
}

/// `id` when that job ran `sql` on `database` and has not failed: a rerun waits for it instead
/// of issuing the query again.
async fn reusable_job(
    client: &TdClient,
    id: &str,
    sql: &str,
    database: &str,
) -> Result<Option<String>, TdError> {
    let job = match client.job(id).await {
        Ok(job) => job,
        Err(e) if e.is_status(404) => return Ok(None),
        Err(e) => return Err(e),
    };
    let same_query = job.query.as_deref() == Some(sql) && job.database.as_deref() == Some(database);
    Ok((same_query && !job.has_failed()).then(|| id.to_string()))
}

/// The result columns of a finished job, from `hive_result_schema`.
pub fn result_schema(job: &Job) -> Result<Vec<ResultColumn>, SourceError> {
    parse_result_schema(job.hive_result_schema.as_deref().unwrap_or("")).map_err(|e| SourceError::BadSchema {
        id: job.job_id.clone(),
        detail: e.to_string(),
    })
}

/// When the job started, in unix seconds: the `time` of every row when neither the result nor
/// the spec gives one, so a rerun writes identical rows.
pub fn job_start_time(job: &Job) -> Option<i64> {
    [job.start_at.as_deref(), job.created_at.as_deref()]
        .into_iter()
        .flatten()
        .find_map(parse_td_timestamp)
}
