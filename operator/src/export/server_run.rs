//! The server engine's run: ask TD to export (once: a rerun adopts the export an earlier run
//! submitted, or finds it done), and wait for TD's export job.

use crate::connect::{Connected, Destination};
use crate::options::Options;
use crate::status::{State, StatusDoc, StatusRecorder};
use crate::td::Job;
use crate::transfer::{server, ExportId, TransferError};

pub(super) async fn server_export(
    connected: &Connected,
    destination: &Destination,
    job: &Job,
    id: &ExportId,
    recorder: &StatusRecorder,
    previous: Option<&StatusDoc>,
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
    // One that says this very export (same key) succeeded means it is done; a second export
    // would append twice.
    if let Some(done) = previous
        .filter(|p| p.state == State::Success && p.export.idempotency_key.as_deref() == Some(id.key.as_str()))
    {
        tracing::info!(export_job_id = ?done.export.export_job_id, "this export was done by an earlier run");
        recorder.already_exported(&done.export);
        return Ok(());
    }
    let unfinished = previous.filter(|p| p.state != State::Success);
    // An earlier run of the same source job that did not finish: poll the export it recorded,
    // or, if it died while submitting, the export TD has linked to the job since.
    let recorded = unfinished
        .filter(|p| p.export.source_job_id.as_deref() == Some(job.job_id.as_str()))
        .and_then(|p| {
            p.export.export_job_id.clone().or_else(|| {
                let before = p.export.submitting.as_ref()?.linked_before.as_ref();
                job.linked_result_export_job_id
                    .clone()
                    .filter(|now| Some(now) != before)
            })
        });
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
