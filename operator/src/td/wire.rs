//! What TD answers, typed: jobs, sessions, tables and saved results as the API describes them
//! (docs/td-api.md §3–7), with their states as enums.

use serde::Deserialize;
use serde_json::Value;

pub(crate) use td_model::states::{JobState, Reported, SessionState};

/// A job's status as TD reports it (one it may add later is kept as written).
pub(crate) type JobStatus = Reported<JobState>;
/// A session's status as TD reports it.
pub(crate) type SessionStatus = Reported<SessionState>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAction {
    Freeze,
    Perform,
    Commit,
    Delete,
}

impl SessionAction {
    pub fn verb(self) -> &'static str {
        match self {
            SessionAction::Freeze => "freeze",
            SessionAction::Perform => "perform",
            SessionAction::Commit => "commit",
            SessionAction::Delete => "delete",
        }
    }
}

/// A table as `table/show` describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct Table {
    pub name: String,
    #[serde(default)]
    pub count: i64,
    /// JSON text of `[[name, type(, alias)], …]`.
    #[serde(default)]
    pub schema: Option<String>,
}

/// A job as `job/show` describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct Job {
    #[serde(deserialize_with = "id_string")]
    pub job_id: String,
    pub status: JobStatus,
    /// The engine (`presto`, `hive`, …) or kind of job.
    #[serde(default, rename = "type")]
    pub job_type: Option<String>,
    #[serde(default)]
    pub database: Option<String>,
    /// The SQL the job ran.
    #[serde(default)]
    pub query: Option<String>,
    #[serde(default)]
    pub num_records: Option<i64>,
    #[serde(default)]
    pub result_size: Option<i64>,
    /// JSON text, e.g. `[["code","bigint"],["cnt","bigint"]]`.
    #[serde(default)]
    pub hive_result_schema: Option<String>,
    #[serde(default)]
    pub start_at: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub debug: Option<JobDebug>,
    /// The latest result export started from this job (TD links each new one here).
    #[serde(default, deserialize_with = "opt_id_string")]
    pub linked_result_export_job_id: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct JobDebug {
    #[serde(default)]
    pub stderr: Option<String>,
    #[serde(default)]
    pub cmdout: Option<String>,
}

impl Job {
    pub fn has_failed(&self) -> bool {
        self.status.has_failed()
    }

    pub fn is_finished(&self) -> bool {
        self.status.is_finished()
    }

    /// What the job said about its failure: `cmdout` then `stderr`, as Digdag shows them.
    pub fn failure_output(&self) -> Option<String> {
        let debug = self.debug.as_ref()?;
        let text: Vec<&str> = [debug.cmdout.as_deref(), debug.stderr.as_deref()]
            .into_iter()
            .flatten()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        (!text.is_empty()).then(|| text.join("\n"))
    }
}

/// A bulk-import session as `bulk_import/show` describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct Session {
    pub name: String,
    pub status: SessionStatus,
    #[serde(default)]
    pub upload_frozen: bool,
    #[serde(default)]
    pub database: Option<String>,
    #[serde(default)]
    pub table: Option<String>,
    #[serde(default, deserialize_with = "opt_id_string")]
    pub job_id: Option<String>,
    #[serde(default)]
    pub valid_records: Option<i64>,
    #[serde(default)]
    pub error_records: Option<i64>,
    /// Parts the perform could not read at all (their rows are in neither count).
    #[serde(default)]
    pub error_parts: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SavedResult {
    pub name: String,
    pub url: String,
}

pub(crate) fn id_to_string(v: Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Ids arrive as strings or numbers depending on the call.
pub(crate) fn id_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    id_to_string(Value::deserialize(d)?).ok_or_else(|| serde::de::Error::custom("expected an id"))
}

pub(crate) fn opt_id_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(id_to_string(Value::deserialize(d)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_parse_with_a_fallback_for_unknown_ones() {
        assert_eq!(JobStatus::parse("killed"), Reported::Known(JobState::Killed));
        let later: JobStatus = serde_json::from_str("\"paused\"").unwrap();
        assert_eq!(later, Reported::Other("paused".into()));
        assert!(!later.is_finished() && !later.has_failed());
        assert_eq!(later.to_string(), "paused");
        assert!(SessionStatus::parse("committing").is_busy());
    }

    #[test]
    fn a_failed_job_says_its_cmdout_then_its_stderr_as_digdag_shows_them() {
        let job: Job = serde_json::from_value(serde_json::json!({
            "job_id": "7", "status": "error",
            "debug": {"cmdout": "started at 12:00\n", "stderr": "Query failed: line 1:8"},
        }))
        .unwrap();
        assert_eq!(
            job.failure_output().as_deref(),
            Some("started at 12:00\nQuery failed: line 1:8")
        );
        let quiet: Job =
            serde_json::from_value(serde_json::json!({"job_id": 8, "status": "killed"})).unwrap();
        assert_eq!(quiet.failure_output(), None);
        assert_eq!(
            SessionStatus::Known(SessionState::Committed).as_str(),
            "committed"
        );
    }
}
