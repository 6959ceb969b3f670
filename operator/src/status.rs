//! The status document (docs/architecture.md §3): a superset of Digdag `py>`'s output.json, written
//! atomically on every exit path and while running, so a runner can watch it. One
//! [`StatusRecorder`] owns the document and its file for a run; the stages tell it what happened.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use td_model::Mode;

use crate::error::{Classify, Exit};
use crate::spec::Transfer;
use crate::td::Job;
use crate::transfer::columns::MappedColumn;
pub(crate) use crate::transfer::columns::TimeSource;
use crate::transfer::phase::{Phase, Step};
use crate::transfer::verify::{Verification, Verified};
use crate::transfer::Written;

/// JSON Schema (draft 2020-12) of the status document; `schema/` holds the source.
pub const STATUS_SCHEMA: &str = include_str!("../schema/status.schema.json");

pub(crate) const SCHEMA_VERSION: u32 = 1;

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

impl ErrorInfo {
    /// The document's account of `e`: its class, message and chain of causes.
    pub fn of<E: Classify + ?Sized>(e: &E) -> ErrorInfo {
        let mut backtrace = Vec::new();
        let mut source = e.source();
        while let Some(s) = source {
            backtrace.push(s.to_string());
            source = s.source();
        }
        let class = e.class();
        ErrorInfo {
            class: class.name.into(),
            message: e.to_string(),
            retryable: class.is_transient(),
            backtrace,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetInfo {
    /// Base URL of the target account's API (no key).
    pub endpoint: String,
    pub database: String,
    pub table: String,
    pub mode: Mode,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExportInfo {
    pub source_job_id: Option<String>,
    pub transfer: Transfer,
    /// Why that engine moves the rows (asked for, or what `auto` found).
    #[serde(default)]
    pub transfer_reason: String,
    pub target: Option<TargetInfo>,
    pub rows: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub time_source: Option<TimeSource>,
    pub columns: Vec<ColumnInfo>,
    pub idempotency_key: Option<String>,
    pub session: Option<String>,
    pub already_done: bool,
    /// How far the rows were verified (None: not verified, as with the server engine).
    pub verified: Option<Verified>,
    /// The numbers behind `verified`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// An earlier run's session of this export that could not be committed (rejected records,
    /// a wrong count), dropped so that this run started over: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped_session: Option<String>,
    /// The server engine's export job, recorded before polling so a rerun polls it.
    pub export_job_id: Option<String>,
    /// Set just before the server engine asks TD to export. A rerun that finds it without an
    /// `export_job_id` (the run died while the call was in flight) adopts the export that TD has
    /// linked to the source job since, instead of submitting a second one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitting: Option<Submitting>,
    /// Rows expected in all (from the source job), while running.
    pub rows_total: Option<u64>,
    /// The TD job that wrote the rows: the export job (server) or the perform job (stream).
    pub writer_job_id: Option<String>,
    /// The step a running stream export is at (absent before rows move and after the run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<PhaseInfo>,
    /// A query job this run issued and killed when it was interrupted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub killed_job_id: Option<String>,
    /// What a failed or interrupted run left on the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left: Option<Left>,
}

/// A step of the write as the status document shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseInfo {
    pub step: Step,
    pub job_id: Option<String>,
    pub started_at: String,
}

impl From<&Phase> for PhaseInfo {
    fn from(p: &Phase) -> Self {
        PhaseInfo {
            step: p.step,
            job_id: p.job_id.clone(),
            started_at: p.started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }
    }
}

/// What a run that did not finish left on the target, and whether a rerun resumes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Left {
    /// The bulk-import session left in place, if any.
    pub session: Option<String>,
    /// A replace's temp table left in place, if any.
    pub temp_table: Option<String>,
    /// A rerun resumes the session (an append's parts are kept).
    pub resumable: bool,
    /// What was left and why, in words.
    pub note: String,
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
    /// The process that wrote the document, so that a rerun on the same machine can tell a run
    /// that crashed (its process gone) from one still going.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessInfo>,
}

/// Which process on which machine (since its last boot) a run is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub host: String,
    /// Linux's id of the machine's current boot: a pid means nothing across a reboot.
    pub boot_id: String,
}

impl ProcessInfo {
    /// This process.
    pub fn current() -> ProcessInfo {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        ProcessInfo {
            pid: std::process::id(),
            host: read("/proc/sys/kernel/hostname"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
        }
    }

    /// Whether this is known to be a process of this machine's current boot that has ended
    /// (its pid gone, or taken by a program that is not this one). Unknown: false.
    pub fn has_ended_here(&self) -> bool {
        let here = ProcessInfo::current();
        if self.boot_id.is_empty() || self.host != here.host || self.boot_id != here.boot_id {
            return false;
        }
        match std::fs::read(format!("/proc/{}/cmdline", self.pid)) {
            Ok(cmdline) => !String::from_utf8_lossy(&cmdline).contains("td-result-export"),
            Err(_) => true,
        }
    }
}

/// `export` is written as `null` while its target is unknown, as the schema says, and read back
/// as an empty [`ExportInfo`].
mod export_or_null {
    use super::ExportInfo;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(export: &ExportInfo, s: S) -> Result<S::Ok, S::Error> {
        match export.target {
            Some(_) => export.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ExportInfo, D::Error> {
        Ok(Option::<ExportInfo>::deserialize(d)?.unwrap_or_default())
    }
}

pub(crate) fn now_rfc3339() -> String {
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
            process: Some(ProcessInfo::current()),
        }
    }

    /// What the next tasks of a workflow read: `${td.last_job_id}` names the job that wrote the
    /// rows, as after Digdag's own `td_result_export>`; the rest is under `td_result_export`.
    fn store_success(&mut self) {
        let e = &self.export;
        let target = e.target.as_ref();
        self.store_params = json!({
            "td": {"last_job_id": e.writer_job_id, "last_job": {"id": e.writer_job_id, "num_records": e.rows}},
            "td_result_export": {
                "source_job_id": e.source_job_id,
                "writer_job_id": e.writer_job_id,
                "rows": e.rows,
                "already_done": e.already_done,
                "transfer": e.transfer,
                "database": target.map(|t| t.database.as_str()),
                "table": target.map(|t| t.table.as_str()),
                "mode": target.map(|t| t.mode),
            },
        });
    }

    pub fn finish(&mut self, exit: Exit, error: Option<ErrorInfo>) {
        if exit == Exit::Success {
            self.store_success();
        }
        self.state = if exit == Exit::Success {
            State::Success
        } else {
            State::Failed
        };
        self.error = error;
        self.export.phase = None;
        self.exit_code = Some(exit.code());
        self.finished_at = Some(now_rfc3339());
    }
}

impl Default for StatusDoc {
    fn default() -> Self {
        Self::new()
    }
}

/// The most of an earlier document read: one run writes a few kilobytes.
const MAX_STATUS_BYTES: u64 = 16 << 20;

/// An earlier document's text: only from a regular file, and only up to [`MAX_STATUS_BYTES`].
fn read_previous(path: &Path) -> Option<String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_STATUS_BYTES {
        return None;
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_STATUS_BYTES)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
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
            .and_then(read_previous)
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
        // The directory must exist: a path with a typo in it is an error, not a new directory.
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !dir.is_dir() {
            let problem = format!("the directory {} does not exist", dir.display());
            return Err(std::io::Error::new(std::io::ErrorKind::NotFound, problem));
        }
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("no file can be created in {}: {}", dir.display(), e.kind()),
            )
        })?;
        let text = serde_json::to_string_pretty(doc)?;
        tmp.write_all(crate::redact::scrub(&text).as_bytes())?;
        tmp.write_all(b"\n")?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// The status document of one run and the file it is written to: the stages report what
/// happened, the recorder keeps the document and rewrites the file (atomically) when it matters.
#[derive(Debug)]
pub struct StatusRecorder {
    doc: Mutex<StatusDoc>,
    file: StatusFile,
}

impl StatusRecorder {
    pub fn new(file: StatusFile) -> StatusRecorder {
        StatusRecorder {
            doc: Mutex::new(StatusDoc::new()),
            file,
        }
    }

    pub fn file(&self) -> &StatusFile {
        &self.file
    }

    /// The document as it is now.
    pub fn snapshot(&self) -> StatusDoc {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, StatusDoc> {
        self.doc.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the document as it is now, or says why it cannot.
    pub fn try_write(&self) -> std::io::Result<()> {
        self.file.write(&self.snapshot())
    }

    /// Writes the document as it is now; a failure is logged (the run goes on).
    pub fn write(&self) {
        let snapshot = self.snapshot();
        if let Err(e) = self.file.write(&snapshot) {
            tracing::warn!(error = %e, "could not write the status document");
        }
    }

    fn update(&self, change: impl FnOnce(&mut StatusDoc)) {
        change(&mut self.lock());
    }

    /// The engine (and why it was chosen) and the target, once known.
    pub fn target(&self, transfer: Transfer, reason: &str, target: TargetInfo) {
        self.update(|d| {
            d.export.transfer = transfer;
            d.export.transfer_reason = reason.to_string();
            d.export.target = Some(target);
        });
    }

    /// A query job this run issued (written at once: a rerun reuses it).
    pub fn issued(&self, job_id: &str) {
        self.update(|d| d.export.source_job_id = Some(job_id.to_string()));
        self.write();
    }

    /// The finished source job.
    pub fn source_job(&self, job: &Job) {
        self.update(|d| {
            d.export.source_job_id = Some(job.job_id.clone());
            d.export.rows_total = job.num_records.map(|n| n.max(0) as u64);
        });
    }

    /// The idempotency key that names the export.
    pub fn key(&self, key: &str) {
        self.update(|d| d.export.idempotency_key = Some(key.to_string()));
        self.write();
    }

    /// How the stream engine maps the result: columns, `time`, the session it loads.
    pub fn mapping(&self, columns: &[MappedColumn], time_source: TimeSource, session: &str) {
        self.update(|d| {
            d.export.columns = columns.iter().map(ColumnInfo::from).collect();
            d.export.time_source = Some(time_source);
            d.export.session = Some(session.to_string());
        });
        self.write();
    }

    /// Rows and bytes moved so far, and the step the write is at.
    pub fn progress(&self, rows: u64, bytes_in: u64, bytes_out: u64, phase: Option<&Phase>) {
        self.update(|d| {
            d.export.phase = phase.map(PhaseInfo::from);
            d.export.rows = rows;
            d.export.bytes_in = bytes_in;
            d.export.bytes_out = bytes_out;
        });
        self.write();
    }

    /// The server engine is about to ask TD to export (see [`Submitting`]).
    pub fn submitting(&self, linked_before: Option<String>) {
        self.update(|d| d.export.submitting = Some(Submitting { linked_before }));
        self.write();
    }

    /// TD's export job, recorded before it is polled, so a rerun polls it instead of exporting twice.
    pub fn export_job(&self, id: &str) {
        self.update(|d| d.export.export_job_id = Some(id.to_string()));
        self.write();
    }

    /// What the stream engine wrote.
    pub fn written(&self, w: &Written) {
        self.update(|d| {
            d.export.rows = w.rows;
            d.export.bytes_in = w.moved.bytes_in;
            d.export.bytes_out = w.moved.bytes_out;
            d.export.already_done = w.already_done;
            d.export.verified = w.verification.as_ref().map(|v| v.verified);
            d.export.verification = w.verification.clone();
            d.export.dropped_session = w.dropped.clone();
            d.export.writer_job_id = w.job_id.clone();
        });
    }

    /// What the server engine's export job wrote; `by_earlier_submit` when another submit of this
    /// export made that job (this run found it by its domain key): then this run wrote nothing.
    pub fn exported(&self, job_id: &str, rows: u64, by_earlier_submit: bool) {
        self.update(|d| {
            d.export.rows = rows;
            d.export.writer_job_id = Some(job_id.to_string());
            d.export.already_done = by_earlier_submit;
        });
    }

    /// The server engine's export was done by an earlier run: the same export job and rows.
    pub fn already_exported(&self, earlier: &ExportInfo) {
        self.update(|d| {
            d.export.rows = earlier.rows;
            d.export.export_job_id = earlier.export_job_id.clone();
            d.export.writer_job_id = earlier.writer_job_id.clone();
            d.export.already_done = true;
        });
    }

    /// What this run leaves on the target.
    pub fn left(&self, left: Left) {
        self.update(|d| d.export.left = Some(left));
    }

    /// A query job this run issued was killed because the run was interrupted.
    pub fn killed(&self, job_id: &str) {
        self.update(|d| d.export.killed_job_id = Some(job_id.to_string()));
    }

    /// One attempt of the task ended.
    pub fn attempt(&self, attempt: Attempt) {
        self.update(|d| d.attempts.push(attempt));
    }

    /// The run ended: the final document, written.
    pub fn finish(&self, exit: Exit, error: Option<ErrorInfo>) -> StatusDoc {
        self.update(|d| d.finish(exit, error));
        self.write();
        self.snapshot()
    }
}
