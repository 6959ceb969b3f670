//! The most one request or one record may make td-local read, inflate and hold: every limit in
//! one place. A request over a limit is answered 413 with TD's error body; a bulk-import part
//! over one at perform time is an error part. Memory stays bounded by these numbers whatever a
//! body inflates to: bodies are streamed through the inflater while they arrive, and records are
//! decoded and stored one batch at a time.
//!
//! TD publishes no server limits for these calls. The defaults are set from what TD's own
//! clients send, with room to spare:
//! - fluent-plugin-td (lib/fluent/plugin/out_tdlog.rb) imports chunks of at most 32 MiB of
//!   msgpack (`IMPORT_SIZE_LIMIT`), and warns of records over 32 MiB (`record_size_limit`);
//! - embulk-output-td (`file_split_size`, 16 MB) and the operator (16 MiB) cut bulk-import
//!   parts at 16 MB of gzip.
//!
//! Which limits TD itself applies, and what it answers past them, is unconfirmed.

/// gzip'd bytes of one streaming import body: twice fluent-plugin-td's largest chunk.
pub const IMPORT_BODY_BYTES: usize = 64 << 20;
/// Bytes one streaming import body may inflate to.
pub const IMPORT_INFLATED_BYTES: usize = 64 << 20;
/// gzip'd bytes of one bulk-import part: four times the clients' 16 MB parts.
pub const PART_BYTES: usize = 64 << 20;
/// Bytes one bulk-import part may inflate to: 64 times a 16 MiB part, for results that
/// compress very well.
pub const PART_INFLATED_BYTES: usize = 1 << 30;
/// msgpack bytes of one record: fluent-plugin-td's `record_size_limit`.
pub const RECORD_BYTES: usize = 32 << 20;
/// Values in one record, nested ones included (a map entry counts its key and its value).
pub const RECORD_VALUES: usize = 1 << 20;
/// Rejected records a perform keeps for `error_records` (all of them are counted).
pub const KEPT_ERROR_RECORDS: usize = 10_000;
/// Rows decoded and stored per statement batch by an import or a perform, and the most bytes
/// of records such a batch holds: what memory holds of a body or part at once.
pub const BATCH_ROWS: usize = 5_000;
pub const BATCH_BYTES: usize = 8 << 20;
/// Bytes of a form, multipart or JSON request body (the parameters of a call).
pub const FORM_BODY_BYTES: usize = 16 << 20;

/// The limits one server applies; [`Limits::default`] is the constants above. Tests lower them
/// to reach a limit with a small body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub import_body_bytes: usize,
    pub import_inflated_bytes: usize,
    pub part_bytes: usize,
    pub part_inflated_bytes: usize,
    pub record: RecordLimits,
    pub kept_error_records: usize,
}

/// What one record may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLimits {
    pub bytes: usize,
    pub values: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            import_body_bytes: IMPORT_BODY_BYTES,
            import_inflated_bytes: IMPORT_INFLATED_BYTES,
            part_bytes: PART_BYTES,
            part_inflated_bytes: PART_INFLATED_BYTES,
            record: RecordLimits::default(),
            kept_error_records: KEPT_ERROR_RECORDS,
        }
    }
}

impl Default for RecordLimits {
    fn default() -> RecordLimits {
        RecordLimits {
            bytes: RECORD_BYTES,
            values: RECORD_VALUES,
        }
    }
}
