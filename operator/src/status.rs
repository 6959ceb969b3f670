//! The status document (design.md §5): a superset of Digdag `py>`'s output.json, written
//! atomically on every exit path and while running, so a runner can watch it.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::transfer::columns::MappedColumn;

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Running,
    Success,
    Failed,
}

/// `error` of the document: Digdag's class/message/backtrace, plus whether a rerun may help.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub class: String,
    pub message: String,
    pub retryable: bool,
    pub backtrace: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetInfo {
    /// Base URL of the target account's API (no key).
    pub endpoint: String,
    pub database: String,
    pub table: String,
    pub mode: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExportInfo {
    pub source_job_id: Option<String>,
    pub transfer: String,
    pub target: Option<TargetInfo>,
    pub rows: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// `column`, `setting` or `job_start`.
    pub time_source: Option<String>,
    pub columns: Vec<ColumnInfo>,
    pub idempotency_key: Option<String>,
    pub session: Option<String>,
    pub already_done: bool,
    pub verified: bool,
    /// The server engine's export job, recorded before polling so a rerun polls it.
    pub export_job_id: Option<String>,
    /// Set just before the server engine asks TD to export. A rerun that finds it without an
    /// `export_job_id` (the run died while the call was in flight) adopts the export that TD has
    /// linked to the source job since, instead of submitting a second one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitting: Option<Submitting>,
    /// Rows expected in all (from the source job), while running.
    pub rows_total: Option<u64>,
}

/// The server engine's export as it was about to be submitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitting {
    /// The source job's `linked_result_export_job_id` before the call (TD links a job to its
    /// latest export, so a different link afterwards names the export the call started).
    pub linked_before: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnInfo {
    pub source: String,
    pub target: String,
    #[serde(rename = "type")]
    pub td_type: String,
}

impl From<&MappedColumn> for ColumnInfo {
    fn from(c: &MappedColumn) -> Self {
        ColumnInfo {
            source: c.source.clone(),
            target: c.target.clone(),
            td_type: c.td_type.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub at: String,
    /// `success`, or the class of the error the attempt ended with.
    pub outcome: String,
    /// The error message of a failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The whole document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusDoc {
    pub schema_version: u32,
    pub operator: String,
    pub state: State,
    pub store_params: Value,
    pub export_params: Value,
    pub subtask_config: Value,
    pub error: Option<ErrorInfo>,
    /// `null` in the document until the target is known (an invalid spec never gets that far).
    #[serde(with = "export_or_null")]
    pub export: ExportInfo,
    pub attempts: Vec<Attempt>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub exit_code: Option<i32>,
}

/// `export` is written as `null` while its target is unknown, as the schema says, and read back
/// as an empty [`ExportInfo`].
mod export_or_null {
    use super::ExportInfo;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(export: &ExportInfo, s: S) -> Result<S::Ok, S::Error> {
        match export.target {
            Some(_) => export.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ExportInfo, D::Error> {
        Ok(Option::<ExportInfo>::deserialize(d)?.unwrap_or_default())
    }
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl StatusDoc {
    pub fn new() -> StatusDoc {
        StatusDoc {
            schema_version: SCHEMA_VERSION,
            operator: "td_result_export".into(),
            state: State::Running,
            store_params: json!({}),
            export_params: json!({}),
            subtask_config: json!({}),
            error: None,
            export: ExportInfo::default(),
            attempts: Vec::new(),
            started_at: now_rfc3339(),
            finished_at: None,
            exit_code: None,
        }
    }

    /// Digdag's `${td.last_job_id}` and `${td.last_job.num_records}` for the next tasks.
    pub fn set_last_job(&mut self, id: &str, num_records: Option<i64>) {
        self.store_params =
            json!({"td": {"last_job_id": id, "last_job": {"id": id, "num_records": num_records}}});
    }

    pub fn finish(&mut self, exit_code: i32, error: Option<ErrorInfo>) {
        self.state = if exit_code == 0 {
            State::Success
        } else {
            State::Failed
        };
        self.error = error;
        self.exit_code = Some(exit_code);
        self.finished_at = Some(now_rfc3339());
    }
}

impl Default for StatusDoc {
    fn default() -> Self {
        Self::new()
    }
}

/// Where the document goes; `None` writes nothing.
#[derive(Debug, Clone, Default)]
pub struct StatusFile {
    path: Option<PathBuf>,
    /// The document found there before this run wrote its own (read once, at [`StatusFile::new`]).
    previous: Option<Box<StatusDoc>>,
}

impl StatusFile {
    /// Reads the document an earlier run left at `path` now, before this run overwrites it.
    pub fn new(path: Option<PathBuf>) -> StatusFile {
        let previous = path
            .as_deref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|text| serde_json::from_str(&text).ok())
            .map(Box::new);
        StatusFile { path, previous }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The document an earlier run left, if any (to resume its query job or server export).
    pub fn previous(&self) -> Option<StatusDoc> {
        self.previous.as_deref().cloned()
    }

    /// Writes `doc` atomically: a temp file in the same directory, then a rename.
    pub fn write(&self, doc: &StatusDoc) -> std::io::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        serde_json::to_writer_pretty(&mut tmp, doc)?;
        tmp.write_all(b"\n")?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}
