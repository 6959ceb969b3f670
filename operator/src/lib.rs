//! `td_result_export>`: exports a Treasure Data job's result into a table of another TD account,
//! exactly once and atomically.
//!
//! The data's trip, one module per stage, each importing only the ones before it:
//! [`spec`] (load YAML, interpolate, validate against the JSON Schema, typed [`spec::TaskSpec`]) →
//! [`resolve`] (secrets, connections, td:// URLs → [`resolve::ExportPlan`]) → [`connect`] (clients,
//! the embedded td-local, run-time lookups) → [`source`] (the finished source job) → [`transfer`]
//! (the `stream` and `server` engines) → [`status`] (the status document). [`export`] drives the
//! run stages; [`td`] is the API client they share, under [`retry`]'s policies and [`options`].
//! TD's own rules (URLs, names, times, types) live in the `td-model` crate, shared with td-local.

#![warn(unreachable_pub)]

/// `println!` and `eprintln!` that never panic: a reader gone (the pipe of a killed py> runner)
/// must not turn an orderly exit into a crash, and the exit's clean-up must still run.
#[doc(hidden)]
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

#[doc(hidden)]
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod connect;
mod error;
mod export;
mod options;
mod preview;
mod progress;
mod redact;
mod resolve;
mod retry;
mod source;
mod spec;
mod status;
mod td;
mod transfer;

use std::path::Path;

// What the binary runs: prepare a spec, run its export, report it.
pub use connect::Connected;
pub use error::{At, Class, Classify, Exit, SpecError, SpecPath, Warning};
pub use export::{run as run_export, ExportError};
pub use options::Options;
pub use preview::{preview, Preview, PreviewError};
pub use progress::Display;
pub use redact::{scrub, Scrubbed};
pub use resolve::{Endpoint, ExportPlan, Source, Target, TargetAccount};
pub use spec::schema::TASK_SCHEMA;
pub use spec::{Environment, Inputs, LoadedSpec, LocalAccount, LocalAccounts, Runner, TaskSpec};
pub use status::{ErrorInfo, StatusDoc, StatusFile, StatusRecorder, STATUS_SCHEMA};
pub use td_model::{ApiKey, TdUrl};

/// Pieces the benchmarks and the end-to-end tests drive directly. Not an API: no promise holds
/// from one version to the next.
#[doc(hidden)]
pub mod internals {
    pub use crate::retry::{PollPolicy, RetryPolicy};
    pub use crate::source::{job_start_time, result_schema};
    pub use crate::td::{http_client, Job, Payload, Proxies, Session, SessionAction, TdClient};
    pub use crate::transfer::columns::{map_columns, time_fill};
    pub use crate::transfer::phase::PhaseCell;
    pub use crate::transfer::replace::replace;
    pub use crate::transfer::session::{drive, Load, SessionRef};
    pub use crate::transfer::stream::Moved;
    pub use crate::transfer::stream::{pipe, PartOptions, Progress, PART_BYTES, PART_LEVEL};
    pub use crate::transfer::transcode::{Input, Transcoder};
    pub use crate::transfer::{ExportId, Made, TransferError, Written};
}

/// Any failure of the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Export(#[from] ExportError),
}

impl Classify for Error {
    fn class(&self) -> Class {
        match self {
            Error::Spec(e) => e.class(),
            Error::Export(e) => e.class(),
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
    let (plan, more) = resolve::resolve(&loaded, inputs)?;
    remember_secrets(&plan, &loaded);
    let mut warnings = loaded.warnings;
    warnings.extend(more);
    Ok(Prepared { plan, warnings })
}

/// Every key the plan holds, however it was given (a literal, `TD_API_KEY`, `~/.td/td.conf`), and
/// every key of the embedded td-local when the plan uses it, are masked from now on.
fn remember_secrets(plan: &ExportPlan, loaded: &LoadedSpec) {
    let mut keys = vec![plan.source_account.api_key.expose().to_string()];
    match &plan.target.account {
        TargetAccount::Known { account, .. } => keys.push(account.api_key.expose().to_string()),
        TargetAccount::Connection { api_key, .. } => {
            keys.extend(api_key.as_ref().map(|k| k.expose().to_string()))
        }
    }
    keys.extend(
        plan.proxy
            .as_ref()
            .and_then(|p| p.password.as_ref())
            .map(|p| p.expose().to_string()),
    );
    if plan.uses_local() {
        if let Ok(accounts) = loaded.local_accounts() {
            keys.extend(
                accounts
                    .iter()
                    .flat_map(|a| [a.master_key.clone(), a.write_only_key.clone()]),
            );
        }
    }
    redact::remember(keys);
}

/// Why a build without the `local` feature refuses the embedded td-local.
pub const NO_LOCAL: &str =
    "this build of td-result-export has no embedded td-local (it was built without the \
     `local` feature)";

/// The embedded td-local's accounts in a data directory, created (with fresh keys) the first time,
/// as starting td-local would: what `${local:…}` reads.
#[cfg(not(feature = "local"))]
pub fn embedded_local_accounts() -> LocalAccounts {
    LocalAccounts::new(|_| Err(NO_LOCAL.to_string()))
}

/// The embedded td-local's accounts in a data directory, created (with fresh keys) the first time,
/// as starting td-local would: what `${local:…}` reads.
#[cfg(feature = "local")]
pub fn embedded_local_accounts() -> LocalAccounts {
    LocalAccounts::new(|dir| {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let accounts = td_local::accounts::load_or_create(dir).map_err(|e| e.to_string())?;
        Ok(accounts
            .into_iter()
            .map(|a| LocalAccount {
                id: a.id,
                master_key: a.master_key,
                write_only_key: a.write_only_key,
            })
            .collect())
    })
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    /// Every property of both schemas carries a description (the schemas are the reference docs).
    #[test]
    fn every_property_in_both_schemas_is_described() {
        fn walk(node: &Value, path: &str, missing: &mut Vec<String>) {
            match node {
                Value::Object(map) => {
                    if let Some(Value::Object(props)) = map.get("properties") {
                        for (name, prop) in props {
                            if prop
                                .get("description")
                                .and_then(Value::as_str)
                                .is_none_or(str::is_empty)
                            {
                                missing.push(format!("{path}/{name}"));
                            }
                        }
                    }
                    for (k, v) in map {
                        walk(v, &format!("{path}/{k}"), missing);
                    }
                }
                Value::Array(items) => items.iter().for_each(|v| walk(v, path, missing)),
                _ => {}
            }
        }
        for text in [super::TASK_SCHEMA, super::STATUS_SCHEMA] {
            let json: Value = serde_json::from_str(text).unwrap();
            let mut missing = Vec::new();
            walk(&json, "", &mut missing);
            assert!(
                missing.is_empty(),
                "properties without a description: {missing:?}"
            );
            assert!(
                jsonschema::draft202012::meta::is_valid(&json),
                "a valid draft 2020-12 schema"
            );
        }
    }
}
