//! The `server` engine: TD writes the result itself (`POST /v3/job/result_export/:id`) on its own
//! distributed engine; nothing flows through this machine. The export job's id is handed to the
//! caller before polling, so a rerun polls that job instead of submitting a second export.

use super::TransferError;
use crate::connect::Destination;
use crate::retry::PollPolicy;
use crate::source::finished_job;
use crate::td::{Job, JobStatus, TdClient};

/// Submits the export (unless `recorded` names one already submitted) and waits for it.
pub async fn export(
    source: &TdClient,
    job: &Job,
    destination: &Destination,
    recorded: Option<String>,
    poll: &PollPolicy,
    on_submitted: impl FnOnce(&str),
) -> Result<Job, TransferError> {
    // A recorded export that failed is not resumed: the rerun (after a fix) exports anew.
    let export_id = match recorded {
        Some(id) if !source.job(&id).await?.has_failed() => id,
        _ => submit(source, job, destination, poll).await?,
    };
    on_submitted(&export_id);
    let done = finished_job(source, &export_id, poll, |_| {}).await?;
    if done.status != JobStatus::Success {
        return Err(TransferError::ExportJobFailed {
            id: export_id,
            output: done.failure_output(),
            status: done.status,
        });
    }
    Ok(done)
}

/// Starts the export. `result_export` cannot be sent again blindly (a second export appends the
/// rows twice), so when its answer is lost the source job tells what happened: TD links a job
/// to its latest export, and a link that changed during the call names the export it started.
/// `job` is the source job as shown just before (the link it had then).
async fn submit(
    source: &TdClient,
    job: &Job,
    destination: &Destination,
    poll: &PollPolicy,
) -> Result<String, TransferError> {
    let job_id = job.job_id.as_str();
    let form = match destination {
        Destination::Url(url) => vec![("result", url.expose())],
        Destination::Connection { id, settings } => vec![
            ("result_connection_id", id.clone()),
            ("result_connection_settings", settings.clone()),
        ],
    };
    let mut linked = job.linked_result_export_job_id.clone();
    let mut rechecks = 0;
    loop {
        match source.result_export(job_id, form.clone()).await {
            Err(e) if e.is_ambiguous() && rechecks < poll.lost_answer_rechecks => {
                rechecks += 1;
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
