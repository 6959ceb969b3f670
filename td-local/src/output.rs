//! Server-side result output: what TD's td:// connector does when a job is issued with
//! `result=td://…` or exported with `POST /v3/job/result_export/:id`.

use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// Where a job's rows go and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputTarget {
    /// The account that owns the target table (picked by the URL's key; the job's own when empty).
    pub account_id: i64,
    /// Whether the key that picked it is write-only (replace then fails).
    pub write_only: bool,
    pub database: String,
    pub table: String,
    pub replace: bool,
    /// `time` for every row when the result has no `time` column.
    pub time: Option<i64>,
}

/// Writes the rows of `source_job_id`'s stored result into `target`; returns the rows written.
/// Blocking: call it from a blocking task.
pub fn write_job_result(_state: &AppState, _source_job_id: i64, _target: &OutputTarget) -> ApiResult<u64> {
    Err(ApiError::internal("result output is not implemented yet"))
}

/// Parses a `td://[KEY]@[HOST]/DATABASE/TABLE[?mode=…&time=…]` result URL for a job of
/// `caller_account_id`: the key picks the target account (the caller's when empty).
pub fn parse_result_url(_state: &AppState, _caller_account_id: i64, _url: &str) -> ApiResult<OutputTarget> {
    Err(ApiError::internal("td:// result output is not implemented yet"))
}
