//! The server engine's run: ask TD to export (once: a rerun adopts the export an earlier run
//! submitted, or finds it done), and wait for TD's export job.

use super::resume::Resume;
use crate::connect::{Connected, Destination};
use crate::options::Options;
use crate::status::StatusRecorder;
use crate::td::Job;
use crate::transfer::{server, ExportId, TransferError};

pub(super) async fn server_export(
    connected: &Connected,
    destination: &Destination,
    job: &Job,
    id: &ExportId,
    recorder: &StatusRecorder,
    resume: Resume<'_>,
    options: &Options,
) -> Result<(), TransferError> {
    // The export goes under a domain key that td-local honours; whether TD honours it on
    // result_export is unconfirmed, so on TD the status document is the sure record.
    if recorder.file().path().is_none() && connected.table.mode == td_model::Mode::Append {
        tracing::warn!(
            "this append is TD's own export (transfer: server) and no --status file records it: \
             it is submitted under a domain key, which td-local honours but TD may not \
             (unconfirmed), so a rerun against TD may append the rows again. Pass --status FILE \
             (the same file on every rerun), or use transfer: stream"
        );
    }
    if let Some(done) = resume.server_done(&id.key) {
        tracing::info!(export_job_id = ?done.export_job_id, "this export was done by an earlier run");
        recorder.already_exported(done);
        return Ok(());
    }
    let recorded = resume.server_export(job);
    match &recorded {
        Some(id) => tracing::info!(export_job_id = %id, "resuming the export job an earlier run submitted"),
        None => recorder.submitting(job.linked_result_export_job_id.clone()),
    }
    let exported = server::export(
        &connected.source,
        job,
        destination,
        recorded,
        &id.export_domain_key,
        &options.poll,
        |id| recorder.export_job(id),
    )
    .await?;
    recorder.exported(
        &exported.job.job_id,
        exported.job.num_records.unwrap_or_default().max(0) as u64,
        exported.by_earlier_submit,
    );
    Ok(())
}
