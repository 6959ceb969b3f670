//! The `server` engine: TD writes the result itself (`POST /v3/job/result_export/:id`) on its own
//! distributed engine; nothing flows through this machine. The export job's id is handed to the
//! caller before polling, so a rerun polls that job instead of submitting a second export.

use super::TransferError;
use crate::connect::Destination;
use crate::retry::PollPolicy;
use crate::source::finished_job;
use crate::td::{nth_domain_key, Job, Submitted, TdClient};
use td_model::states::JobState;

/// Submits the export (unless `recorded` names one already submitted) and waits for it.
/// `domain_key` names this export to TD: a second submit of it (another run beside this one, a
/// rerun without the status document) answers 409 naming the first export job, which is then
/// waited for instead of exporting twice. td-local honours it; TD lists it on the call, but
/// whether it honours it there is unconfirmed (docs/td-semantics.md).
pub(crate) async fn export(
    source: &TdClient,
    job: &Job,
    destination: &Destination,
    recorded: Option<String>,
    domain_key: &str,
    poll: &PollPolicy,
    on_submitted: impl FnOnce(&str),
) -> Result<Exported, TransferError> {
    // A recorded export that failed is not resumed: the rerun (after a fix) exports anew.
    let submitted = match recorded {
        Some(id) if !source.job(&id).await?.has_failed() => Submitted {
            job_id: id,
            earlier: false,
        },
        _ => submit_once(source, job, destination, domain_key, poll).await?,
    };
    if submitted.earlier {
        tracing::info!(export_job_id = %submitted.job_id, "this export was submitted before (its domain key names that job): waiting for it instead of exporting again");
    }
    on_submitted(&submitted.job_id);
    let done = finished_job(source, &submitted.job_id, poll, |_| {}).await?;
    if !done.status.is(JobState::Success) {
        return Err(TransferError::ExportJobFailed {
            id: submitted.job_id,
            output: done.failure_output(),
            status: done.status,
        });
    }
    Ok(Exported {
        job: done,
        by_earlier_submit: submitted.earlier,
    })
}

/// TD's finished export job, and whether another submit of this export (not this run) made it.
pub(crate) struct Exported {
    pub job: Job,
    pub by_earlier_submit: bool,
}

/// Starts the export under `domain_key`; when the export of that key failed (an earlier run's,
/// after a fix), under the next key, so that a rerun still gets an export that can succeed.
async fn submit_once(
    source: &TdClient,
    job: &Job,
    destination: &Destination,
    domain_key: &str,
    poll: &PollPolicy,
) -> Result<Submitted, TransferError> {
    let mut attempt = 0;
    loop {
        let key = nth_domain_key(domain_key, attempt);
        let submitted = submit(source, job, destination, &key, poll).await?;
        // Only an earlier submit's job can have failed already; this one's is waited for.
        if !submitted.earlier
            || attempt >= poll.max_reissues
            || !source.job(&submitted.job_id).await?.has_failed()
        {
            return Ok(submitted);
        }
        tracing::info!(export_job_id = %submitted.job_id, domain_key = %key, "the export of this domain key failed; exporting again");
        attempt += 1;
    }
}

/// Starts the export. `result_export` cannot be sent again blindly (a second export appends the
/// rows twice), so when its answer is lost the source job tells what happened: TD links a job
/// to its latest export, and a link that changed during the call names the export it started.
/// `job` is the source job as shown just before (the link it had then).
async fn submit(
    source: &TdClient,
    job: &Job,
    destination: &Destination,
    domain_key: &str,
    poll: &PollPolicy,
) -> Result<Submitted, TransferError> {
    let job_id = job.job_id.as_str();
    let mut form = match destination {
        Destination::Url(url) => vec![("result", url.expose())],
        Destination::Connection { id, settings } => vec![
            ("result_connection_id", id.clone()),
            ("result_connection_settings", settings.clone()),
        ],
    };
    form.push(("domain_key", domain_key.to_string()));
    let mut linked = job.linked_result_export_job_id.clone();
    let mut rechecks = 0;
    loop {
        match source.result_export(job_id, form.clone()).await {
            Err(e) if e.is_ambiguous() && rechecks < poll.lost_answer_rechecks => {
                rechecks += 1;
                let now = source.job(job_id).await?.linked_result_export_job_id;
                if let Some(started) = now.clone().filter(|id| Some(id) != linked.as_ref()) {
                    tracing::info!(export_job_id = %started, error = %e, "the export's answer was lost, but it started");
                    return Ok(Submitted {
                        job_id: started,
                        earlier: false,
                    });
                }
                tracing::warn!(error = %e, "the export's answer was lost and no export started; submitting again");
                linked = now;
            }
            other => return Ok(other?),
        }
    }
}
