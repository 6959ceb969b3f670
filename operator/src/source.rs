//! The source: wait for a job (or issue a query), and read its result schema.

use std::time::Duration;

use crate::retry::scaled;
use crate::td::{Job, TdClient, TdError};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source job {id} ended with status '{status}'{}", stderr_suffix(.stderr))]
    JobFailed {
        id: String,
        status: String,
        stderr: Option<String>,
    },
    #[error("source job {id} has no readable result schema ({detail})")]
    BadSchema { id: String, detail: String },
    #[error(transparent)]
    Td(#[from] TdError),
}

fn stderr_suffix(stderr: &Option<String>) -> String {
    match stderr.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => format!(":\n{}", s.chars().take(2000).collect::<String>()),
        None => String::new(),
    }
}

/// Polling of a running job: 1 s, doubling to 30 s.
pub const POLL_FIRST: Duration = Duration::from_secs(1);
pub const POLL_MAX: Duration = Duration::from_secs(30);

/// Waits until job `id` finishes; an error or killed job is a `JobFailed` with its stderr.
pub async fn wait_for_job(
    client: &TdClient,
    id: &str,
    mut on_wait: impl FnMut(&Job),
) -> Result<Job, SourceError> {
    let mut wait = POLL_FIRST;
    loop {
        let job = client.job(id).await?;
        if job.is_finished() {
            if job.status == "success" {
                return Ok(job);
            }
            let stderr = job.debug.as_ref().and_then(|d| d.stderr.clone());
            return Err(SourceError::JobFailed {
                id: id.to_string(),
                status: job.status,
                stderr,
            });
        }
        on_wait(&job);
        tokio::time::sleep(scaled(wait)).await;
        wait = (wait * 2).min(POLL_MAX);
    }
}

/// The result columns of a finished job: `[(name, type)]` from `hive_result_schema`.
pub fn result_schema(job: &Job) -> Result<Vec<(String, String)>, SourceError> {
    let bad = |detail: String| SourceError::BadSchema {
        id: job.job_id.clone(),
        detail,
    };
    let text = job
        .hive_result_schema
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| bad("it is empty".into()))?;
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    value
        .as_array()
        .ok_or_else(|| bad("not a JSON array".into()))?
        .iter()
        .map(|col| match col.as_array().map(Vec::as_slice) {
            Some([name, ty, ..]) => match (name.as_str(), ty.as_str()) {
                (Some(n), Some(t)) => Ok((n.to_string(), t.to_string())),
                _ => Err(bad(format!("column {col} is not [name, type]"))),
            },
            _ => Err(bad(format!("column {col} is not [name, type]"))),
        })
        .collect()
}

/// When the job started, in unix seconds: the `time` of every row when neither the result nor
/// the spec gives one, so a rerun writes identical rows.
pub fn job_start_time(job: &Job) -> Option<i64> {
    [job.start_at.as_deref(), job.created_at.as_deref()]
        .into_iter()
        .flatten()
        .find_map(parse_td_time)
}

/// Parses TD's timestamps: `2024-01-02 03:04:05 UTC` or RFC 3339.
pub fn parse_td_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S UTC") {
        return Some(t.and_utc().timestamp());
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn td_and_rfc3339_times_parse() {
        assert_eq!(parse_td_time("2014-10-03 07:20:45 UTC"), Some(1_412_320_845));
        assert_eq!(parse_td_time("2014-10-03T07:20:45Z"), Some(1_412_320_845));
        assert_eq!(parse_td_time("yesterday"), None);
    }
}
