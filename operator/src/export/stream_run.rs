//! The stream engine's run: map the result's columns, pipe its rows into parts, write the target
//! by the mode's protocol, and keep the display and the status document current meanwhile.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use td_model::Mode;

use super::resume::Resume;
use crate::connect::{Connected, TableRef};
use crate::options::Options;
use crate::progress::{Display, Reporter};
use crate::resolve::ExportPlan;
use crate::source::result_schema;
use crate::spec::OnSchemaConflict;
use crate::status::StatusRecorder;
use crate::td::{Job, TdClient};
use crate::transfer::append::{append, append_empty};
use crate::transfer::claim::{claim, Claimed};
use crate::transfer::columns::{map_columns, schema_conflicts, td_schema, time_fill};
use crate::transfer::replace::{replace, replace_empty};
use crate::transfer::session::{readable_table, Load, SessionRef};
use crate::transfer::stream::{pipe, Moved, Progress};
use crate::transfer::transcode::Transcoder;
use crate::transfer::{ExportId, Made, TransferError, Written};

/// Everything the stream engine's run works with.
pub(super) struct StreamRun<'a> {
    pub plan: &'a ExportPlan,
    pub connected: &'a Connected,
    /// The target account's client.
    pub target: &'a TdClient,
    pub job: &'a Job,
    pub id: &'a ExportId,
    pub recorder: &'a StatusRecorder,
    pub resume: Resume<'a>,
    pub options: &'a Options,
    pub made: &'a Made,
}

pub(super) async fn stream_export(run: &StreamRun<'_>, display: Display) -> Result<(), TransferError> {
    let StreamRun {
        plan,
        connected,
        target,
        job,
        id,
        recorder,
        resume,
        options,
        made,
    } = *run;
    let columns = map_columns(&result_schema(job)?);
    let (fill, time_source) = time_fill(
        &columns,
        plan.target.time,
        plan.target.time_column.as_deref(),
        job,
    )?;
    let schema = td_schema(&columns);
    let session = id.session.clone();
    recorder.mapping(&columns, time_source, &session);
    let _ = made.writing.set(id.clone());
    for c in columns.iter().filter(|c| c.source != c.target) {
        tracing::info!(source = %c.source, target = %c.target, "column renamed");
    }

    if connected.table.mode == Mode::Append && plan.target.on_schema_conflict == OnSchemaConflict::Stop {
        refuse_schema_conflicts(target, &connected.table, &columns).await?;
    }

    let progress = Arc::new(Progress::default());
    let reporter = Reporter::new(
        display,
        job.result_size.map(|n| n.max(0) as u64),
        job.num_records.map(|n| n.max(0) as u64),
    );
    let upload = |session: String| {
        let (source, target, job_id) = (connected.source.clone(), target.clone(), job.job_id.clone());
        let (columns, progress, parts) = (columns.clone(), progress.clone(), options.parts.clone());
        async move {
            let body = source.job_result(&job_id, "msgpack.gz").await?;
            let moved = pipe(
                body,
                Transcoder::new(&columns, fill),
                &parts,
                progress,
                move |part, payload| {
                    let (target, session) = (target.clone(), session.clone());
                    async move { target.upload_part(&session, &part, payload).await }
                },
            )
            .await?;
            Ok::<Moved, TransferError>(moved)
        }
    };
    // A session an ended run of this export left is resumed at once; one whose run may still be
    // going (a crash, or a run beside this one) is waited on until it stands still.
    // So is one whose run crashed on this machine (its document says `running`, its process is
    // gone): nothing can be filling the session any more.
    // A run whose claim on this machine is left unheld (see `claim`) crashed here too, with or
    // without a status document: py> keeps none between runs.
    let claimed = claim(&session);
    let crashed_here = match &claimed {
        Claimed::Crashed(_, pid) => {
            tracing::warn!(
                session = %session,
                pid = ?pid,
                "the run of this export that made the session ended on this machine without \
                 finishing: resuming its session at once"
            );
            true
        }
        Claimed::Held { pid } => {
            tracing::info!(
                session = %session,
                pid = ?pid,
                "another run of this export on this machine is writing the session"
            );
            false
        }
        Claimed::Fresh(_) | Claimed::Unknown => false,
    };
    let resume_now = crashed_here || resume.session_ended(&session);
    let _claim = claimed.into_claim();
    let load = Load {
        client: target,
        database: &connected.table.database,
        table: &connected.table.table,
        poll: &options.poll,
        resume_now,
        rows_expected: job.num_records.map(|n| n.max(0) as u64),
        made,
        phase: &progress.phase,
    };
    let moving = write_target(load, connected.table.mode, id, &schema, upload);
    let written: Written = tokio::select! {
        written = moving => written?,
        never = watch_progress(&progress, recorder, reporter, options) => match never {},
    };
    recorder.written(&written);
    Ok(())
}

/// Before a row moves: an existing table whose columns would read this result's values as NULL
/// stops the export (TD would store them and NULL them silently). A key that may not read the
/// table (write-only, where TD refuses `table/show`) skips the check.
async fn refuse_schema_conflicts(
    client: &TdClient,
    table: &TableRef,
    columns: &[crate::transfer::columns::MappedColumn],
) -> Result<(), TransferError> {
    let existing = readable_table(client, &table.database, &table.table).await?;
    let conflicts = existing
        .and_then(|t| t.schema)
        .map(|schema| schema_conflicts(columns, &schema))
        .unwrap_or_default();
    if conflicts.is_empty() {
        return Ok(());
    }
    Err(TransferError::SchemaConflict {
        database: table.database.clone(),
        table: table.table.clone(),
        conflicts,
    })
}

/// Writes the target by the mode's protocol, `upload` filling the session it is handed.
async fn write_target<U, F>(
    load: Load<'_>,
    mode: Mode,
    id: &ExportId,
    schema: &serde_json::Value,
    upload: U,
) -> Result<Written, TransferError>
where
    U: FnMut(String) -> F,
    F: std::future::Future<Output = Result<Moved, TransferError>>,
{
    let empty = load.rows_expected == Some(0);
    match (mode, empty) {
        (Mode::Append, true) => {
            append_empty(
                &SessionRef {
                    load,
                    name: &id.session,
                },
                schema,
            )
            .await
        }
        (Mode::Append, false) => {
            append(
                &SessionRef {
                    load,
                    name: &id.session,
                },
                schema,
                upload,
            )
            .await
        }
        (Mode::Replace, true) => replace_empty(&load, id, schema).await,
        (Mode::Replace, false) => replace(&load, id, schema, upload).await,
    }
}

/// Copies the transfer's counters into the display and the status document while it runs.
async fn watch_progress(
    progress: &Progress,
    recorder: &StatusRecorder,
    mut reporter: Reporter,
    options: &Options,
) -> std::convert::Infallible {
    let mut tick = tokio::time::interval(options.poll.progress_tick);
    let mut last_write = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        let (rows, bytes_in, bytes_out) = (
            progress.rows.load(Ordering::Relaxed),
            progress.bytes_in.load(Ordering::Relaxed),
            progress.bytes_out.load(Ordering::Relaxed),
        );
        let phase = progress.phase.get();
        reporter.update(rows, bytes_in, bytes_out, phase.as_ref());
        if last_write.elapsed() >= options.poll.status_every {
            last_write = tokio::time::Instant::now();
            recorder.progress(rows, bytes_in, bytes_out, phase.as_ref());
        }
    }
}
