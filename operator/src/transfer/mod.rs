//! The transfer stage: moving the rows. The `stream` engine maps the columns ([`columns`]),
//! transcodes rows ([`transcode`]) through the upload pipe ([`stream`]) into a bulk-import session
//! ([`session`]) and writes the target by the [`append`] or [`replace`] protocol; the `server`
//! engine ([`server`]) asks TD to do it.

pub(crate) mod append;
pub(crate) mod claim;
pub(crate) mod columns;
pub(crate) mod phase;
pub(crate) mod replace;
pub(crate) mod server;
pub(crate) mod session;
pub(crate) mod stream;
pub(crate) mod transcode;
pub(crate) mod verify;

use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};

use crate::error::{Class, Classify, Exit};
use crate::source::SourceError;
use crate::td::{JobStatus, SessionStatus, TdError};
use stream::{Moved, StreamError};

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Td(#[from] TdError),
    #[error(transparent)]
    Stream(#[from] StreamError<TdError>),
    /// The result cannot be written as it is (a `time` column that is not an integer, say).
    #[error("{message}")]
    NotExportable { message: String },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(
        "bulk import '{session}' rejected {rejected} record(s) or part(s) ({valid} valid records); nothing \
         was committed. Inspect them with `td import:error_records {session}`"
    )]
    Rejected {
        session: String,
        rejected: i64,
        valid: i64,
    },
    #[error(
        "bulk import '{session}' failed to perform: {stderr}\nTo clear it, delete the session \
         (`td import:delete {session}`) and run the export again"
    )]
    PerformFailed { session: String, stderr: String },
    #[error(
        "bulk import '{session}' is still frozen after {trials} perform trial(s) of this run; \
         delete the session (`td import:delete {session}`) and run the export again"
    )]
    PerformStuck { session: String, trials: u32 },
    #[error(
        "the source's result ended after {read} of its {expected} rows (the job's num_records); \
         nothing was committed: run again to read it whole"
    )]
    ResultCut { read: u64, expected: u64 },
    #[error(
        "bulk import '{session}' counted {valid} valid records where the source has {expected} \
         rows; nothing was committed, and the session is dropped so a rerun starts over"
    )]
    CountMismatch {
        session: String,
        valid: i64,
        expected: u64,
    },
    #[error("bulk import '{session}' changed under this run: {detail}; nothing was committed, run again")]
    SessionChanged { session: String, detail: String },
    #[error("bulk import '{session}' is in an unexpected state '{status}'")]
    UnexpectedSession { session: String, status: String },
    #[error(
        "bulk import '{session}' stayed {status} longer than the {waited_s} s a replace waits for an earlier \
         attempt's perform to end; run again later"
    )]
    SessionBusy {
        session: String,
        status: SessionStatus,
        waited_s: u64,
    },
    #[error(
        "another run is exporting the same thing (bulk import '{session}' is {status}); waited {waited_s} s \
         for it to end: run again later"
    )]
    OwnedElsewhere {
        session: String,
        status: SessionStatus,
        waited_s: u64,
    },
    #[error("TD's export job {id} ended with status '{status}'{}", .output.as_deref().map(|o| format!(":\n{o}")).unwrap_or_default())]
    ExportJobFailed {
        id: String,
        status: JobStatus,
        output: Option<String>,
    },
    #[error(
        "target table {database}.{table} does not exist and a write-only API key cannot create it: \
         create the table first, or use the target account's master API key"
    )]
    WriteOnlyCannotCreate { database: String, table: String },
    #[error(
        "target database '{database}' does not exist: create it first (`td db:create {database}`; \
         on td-local: `td-result-export local db:create --account N {database}`)"
    )]
    DatabaseMissing { database: String },
    #[error(
        "{database}.{table} has columns whose type differs from the result's, and TD would store \
         these values and read them back as NULL: {}. Nothing was written. Cast each column in the \
         query to the table's type (e.g. CAST(x AS BIGINT) for long, CAST(x AS DOUBLE), \
         CAST(x AS VARCHAR) for string), or set result_settings.on_schema_conflict: write to \
         write them anyway",
        .conflicts.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    SchemaConflict {
        database: String,
        table: String,
        conflicts: Vec<columns::SchemaConflict>,
    },
    #[error(
        "replace needs the target account's master API key: the key given is write-only \
         (TD answered 403 reading database '{database}'); use a master key, or mode: append"
    )]
    ReplaceNeedsMaster { database: String },
}

impl Classify for TransferError {
    fn class(&self) -> Class {
        let failed = |name| Class::new(name, Exit::Failed);
        match self {
            TransferError::Td(e) | TransferError::Stream(StreamError::Upload { source: e, .. }) => e.class(),
            TransferError::Stream(StreamError::Transcode(transcode::TranscodeError::Io(e))) => io_class(e),
            // A full disk may have room on the retry; a directory that cannot be written will not.
            TransferError::Stream(StreamError::Spill { source, .. }) => match source.kind() {
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                    Class::new("LocalDiskError", Exit::Transient)
                }
                _ => failed("LocalDiskError"),
            },
            TransferError::Stream(_) => failed("TransferFailed"),
            TransferError::NotExportable { .. } => failed("ResultNotExportable"),
            TransferError::Source(e) => e.class(),
            TransferError::Rejected { .. } => failed("RejectedRows"),
            TransferError::SessionBusy { .. } | TransferError::OwnedElsewhere { .. } => {
                Class::new("ExportInProgress", Exit::Transient)
            }
            TransferError::ExportJobFailed { .. } => failed("ExportJobFailed"),
            TransferError::PerformFailed { .. }
            | TransferError::PerformStuck { .. }
            | TransferError::UnexpectedSession { .. } => failed("TransferFailed"),
            // A cut download, a perform that lost rows or parts changed under the run: nothing
            // was committed, and a rerun reads and loads again.
            TransferError::ResultCut { .. } => Class::new("ResultCut", Exit::Transient),
            TransferError::CountMismatch { .. } | TransferError::SessionChanged { .. } => {
                Class::new("NotCommitted", Exit::Transient)
            }
            TransferError::WriteOnlyCannotCreate { .. } => Class::new("WriteOnlyCannotCreate", Exit::Invalid),
            TransferError::ReplaceNeedsMaster { .. } => Class::new("ReplaceNeedsMasterKey", Exit::Invalid),
            TransferError::DatabaseMissing { .. } => failed("DatabaseNotFound"),
            TransferError::SchemaConflict { .. } => Class::new("SchemaConflict", Exit::Invalid),
        }
    }
}

/// A failed read of the result: the download's TD error when that is what cut it (transient as
/// that error is); a result that is not valid gzip or msgpack stays so on a rerun.
fn io_class(e: &std::io::Error) -> Class {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<TdError>()) {
        Some(td) => td.class(),
        None if e.kind() == std::io::ErrorKind::InvalidData => Class::new("TransferFailed", Exit::Failed),
        None => Class::new("NetworkError", Exit::Transient),
    }
}

/// Names derived from the idempotency key: equal keys give equal names, on every machine.
pub(crate) fn key_hash(idempotency_key: &str) -> String {
    hex::encode(Sha256::digest(idempotency_key.as_bytes()))
}

/// One export's names, each derived once from its idempotency key: the same on every rerun, on
/// every machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportId {
    /// The task's `idempotency_key` (else the source job) and the target.
    pub key: String,
    /// The bulk-import session that loads the rows: `tdre_<16 hex>`.
    pub session: String,
    /// A replace's temp table: `<table>_tdre_<8 hex>`, the base cut so the whole is ≤ 128.
    pub temp_table: String,
    /// The `domain_key` the server engine's export is submitted under: `tdre-x-<32 hex>`.
    pub export_domain_key: String,
}

impl ExportId {
    pub fn new(key: String, table: &str) -> ExportId {
        let hash = key_hash(&key);
        let suffix = format!("_tdre_{}", &hash[..8]);
        let keep = table.len().min(td_model::name::MAX_NAME - suffix.len());
        ExportId {
            session: format!("tdre_{}", &hash[..16]),
            temp_table: format!("{}{suffix}", &table[..keep]),
            export_domain_key: format!("tdre-x-{}", &hash[..32]),
            key,
        }
    }
}

/// What this run made on the target, and the names it wrote under, so that a failed or
/// interrupted run can remove what it made and say what it left (shared with the stages: a run
/// stopped mid-way still knows), without reading them back from the status document.
#[derive(Debug, Default)]
pub struct Made {
    /// This run created the session (it owns the load).
    pub session: AtomicBool,
    /// This run created the target table.
    pub table: AtomicBool,
    /// The export's names, once the stream engine writes under them.
    pub(crate) writing: std::sync::OnceLock<ExportId>,
}

impl Made {
    pub fn session(&self) -> bool {
        self.session.load(Ordering::Relaxed)
    }

    pub fn table(&self) -> bool {
        self.table.load(Ordering::Relaxed)
    }
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub rows: u64,
    pub moved: Moved,
    /// True when a committed session showed the work was done by an earlier run.
    pub already_done: bool,
    /// What was verified, with the numbers (None: nothing could be, as for the server engine).
    pub verification: Option<verify::Verification>,
    /// The job that wrote the rows (the bulk import's perform job), when TD named it.
    pub job_id: Option<String>,
    /// An earlier run's session that could not be committed, dropped so this run started over.
    pub dropped: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_result_is_permanent_and_a_cut_download_transient() {
        use std::io::{Error, ErrorKind};
        let transcode =
            |e: Error| TransferError::Stream(StreamError::Transcode(transcode::TranscodeError::Io(e)));
        assert!(
            !transcode(Error::new(ErrorKind::InvalidData, "corrupt deflate stream"))
                .class()
                .is_transient()
        );
        assert!(transcode(Error::from(ErrorKind::UnexpectedEof))
            .class()
            .is_transient());
        let refused = TdError::Api {
            call: "GET /v3/job/result/1".into(),
            status: 404,
            message: "gone".into(),
            conflicts_with: None,
            after_lost_answer: false,
            at: None,
        };
        assert!(!transcode(Error::other(refused)).class().is_transient());
    }

    #[test]
    fn temp_table_names_stay_within_128_characters() {
        let long = "t".repeat(128);
        let name = ExportId::new("key".into(), &long).temp_table;
        assert_eq!(name.len(), 128);
        assert!(name.ends_with(&format!("_tdre_{}", &key_hash("key")[..8])));
        assert_eq!(
            ExportId::new("key".into(), "output_table").temp_table,
            format!("output_table_tdre_{}", &key_hash("key")[..8])
        );
    }

    #[test]
    fn an_exports_names_are_deterministic_and_valid() {
        let id = |key: &str| ExportId::new(key.into(), "t");
        let a = id("job 1 → testdb.t append");
        assert_eq!(a, id("job 1 → testdb.t append"));
        assert_ne!(a.session, id("job 2 → testdb.t append").session);
        assert!(td_model::name::is_td_name(&a.session));
        assert!(a.export_domain_key.starts_with("tdre-x-") && a.export_domain_key.len() == 39);
    }
}
