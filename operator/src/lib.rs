//! `td_result_export>`: exports a Treasure Data job's result into a table of another TD account,
//! exactly once and atomically.
//!
//! The data's trip, one module per stage: [`spec`] (load YAML, interpolate, validate against the
//! JSON Schema, typed [`spec::TaskSpec`]) → [`resolve`] (secrets, connections, td:// URLs →
//! [`resolve::ExportPlan`]) → the export stages (next). [`prepare`] runs the first two.

pub mod error;
pub mod export;
pub mod progress;
pub mod resolve;
pub mod retry;
pub mod source;
pub mod spec;
pub mod status;
pub mod td;
pub mod transfer;

use std::path::Path;

pub use error::{At, SpecError, SpecPath, Warning};
pub use resolve::{ApiKey, Endpoint, ExportPlan, Source, Target, TargetAccount, TdUrl};
pub use spec::{Inputs, LoadedSpec, TaskSpec};

/// JSON Schema (draft 2020-12) of the task spec.
pub const TASK_SCHEMA: &str = include_str!("../../schema/td_result_export.schema.json");
/// JSON Schema (draft 2020-12) of the status document.
pub const STATUS_SCHEMA: &str = include_str!("../../schema/status.schema.json");

/// Process exit codes.
pub mod exit {
    /// Success, also when the export had already been done.
    pub const SUCCESS: i32 = 0;
    /// Failed permanently: auth, permission, not found, source job failed, rejected rows.
    pub const FAILED: i32 = 1;
    /// Invalid spec, usage or configuration: nothing was written (for an invalid spec, nothing sent).
    pub const INVALID: i32 = 2;
    /// Transient failure after retries: safe to run again.
    pub const TRANSIENT: i32 = 3;
}

/// Any failure of the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Export(#[from] export::ExportError),
}

impl Error {
    /// The status document's `error` for this failure.
    pub fn info(&self) -> status::ErrorInfo {
        match self {
            Error::Export(e) => export::error_info(e),
            Error::Spec(e) => status::ErrorInfo {
                class: "InvalidSpec".into(),
                message: e.to_string(),
                retryable: false,
                backtrace: Vec::new(),
            },
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Spec(e) => e.exit_code(),
            Error::Export(e) => e.exit_code(),
        }
    }
}

/// A spec turned into a plan, with the warnings to show.
#[derive(Debug)]
pub struct Prepared {
    pub plan: ExportPlan,
    pub warnings: Vec<Warning>,
}

/// Loads, validates and resolves a spec file. Reads local files only; sends nothing.
pub fn prepare(spec_path: &Path, inputs: &Inputs) -> Result<Prepared, SpecError> {
    let loaded = spec::load(spec_path, inputs)?;
    let plan = resolve::resolve(&loaded, inputs)?;
    Ok(Prepared {
        plan,
        warnings: loaded.warnings,
    })
}
