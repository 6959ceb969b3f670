//! The `server` engine: TD writes the result itself (`POST /v3/job/result_export/:id`) on its own
//! distributed engine; nothing flows through this machine. The export job's id is handed to the
//! caller before polling, so a rerun polls that job instead of submitting a second export.

use crate::source::{wait_for_job, SourceError};
use crate::td::{Job, TdClient};

/// What to ask TD to write.
#[derive(Clone)]
pub enum Destination {
    /// A td:// URL (legacy mode); it carries the target key, so it never reaches a log.
    Url(String),
    /// A saved connection and the TD connector's settings (JSON text).
    Connection { id: String, settings: String },
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Url(_) => f.write_str("Url(td://***)"),
            Destination::Connection { id, settings } => f
                .debug_struct("Connection")
                .field("id", id)
                .field("settings", settings)
                .finish(),
        }
    }
}

/// Submits the export (unless `recorded` names one already submitted) and waits for it.
pub async fn export(
    source: &TdClient,
    job: &Job,
    destination: &Destination,
    recorded: Option<String>,
    on_submitted: impl FnOnce(&str),
) -> Result<Job, SourceError> {
    // A recorded export that failed is not resumed: the rerun (after a fix) exports anew.
    let export_id = match recorded {
        Some(id) if !source.job(&id).await?.has_failed() => id,
        _ => submit(source, job, destination).await?,
    };
    on_submitted(&export_id);
    wait_for_job(source, &export_id, |_| {}).await
}

/// Starts the export. `result_export` cannot be sent again blindly (a second export appends the
/// rows twice), so when its answer is lost the source job tells what happened: TD links a job
/// to its latest export, and a link that changed during the call names the export it started.
/// `job` is the source job as shown just before (the link it had then).
async fn submit(source: &TdClient, job: &Job, destination: &Destination) -> Result<String, SourceError> {
    let job_id = job.job_id.as_str();
    let form = match destination {
        Destination::Url(url) => vec![("result", url.clone())],
        Destination::Connection { id, settings } => vec![
            ("result_connection_id", id.clone()),
            ("result_connection_settings", settings.clone()),
        ],
    };
    let mut linked = job.linked_result_export_job_id.clone();
    let mut tries = 0;
    loop {
        match source.result_export(job_id, form.clone()).await {
            Err(e) if e.is_ambiguous() && tries < 3 => {
                tries += 1;
                let now = source.job(job_id).await?.linked_result_export_job_id;
                if let Some(started) = now.clone().filter(|id| Some(id) != linked.as_ref()) {
                    tracing::info!(export_job_id = %started, error = %e, "the export's answer was lost, but it started");
                    return Ok(started);
                }
                tracing::warn!(error = %e, "the export's answer was lost and no export started; submitting again");
                linked = now;
            }
            other => return Ok(other?),
        }
    }
}
