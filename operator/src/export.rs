//! One export, start to end: connect the accounts → get the source job → move the rows with the
//! chosen engine → record what happened, under the task's own retries (`_retry`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use td_model::Mode;

use crate::connect::{connect, ConnectError, Connected, TableRef};
use crate::error::{Class, Classify, Exit};
use crate::options::Options;
use crate::progress::{Display, Reporter};
use crate::resolve::{ExportPlan, Source};
use crate::retry::PollPolicy;
use crate::source::{result_schema, source_job, SourceError};
use crate::spec::Transfer;
use crate::status::{now_rfc3339, Attempt, State, StatusDoc, StatusRecorder, TargetInfo};
use crate::td::{Job, JobStatus, TdClient};
use crate::transfer::append::append;
use crate::transfer::columns::{map_columns, td_schema, time_fill};
use crate::transfer::replace::{preflight, replace, ReplaceTarget};
use crate::transfer::session::SessionRef;
use crate::transfer::stream::{pipe, Moved, Progress};
use crate::transfer::transcode::Transcoder;
use crate::transfer::{key_hash, server, session_name, TransferError, Written};

/// Why an export failed: the stage that failed, with its own classification.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Transfer(#[from] TransferError),
    #[error(
        "interrupted by {signal}{}; the export can be run again safely",
        killed.as_ref().map(|id| format!(" (the query job {id} this export issued was killed)")).unwrap_or_default()
    )]
    Interrupted {
        signal: &'static str,
        /// The query job this export issued, killed because it was still running.
        killed: Option<String>,
    },
}

impl Classify for ExportError {
    fn class(&self) -> Class {
        match self {
            ExportError::Connect(e) => e.class(),
            ExportError::Source(e) => e.class(),
            ExportError::Transfer(e) => e.class(),
            ExportError::Interrupted { .. } => Class::new("Interrupted", Exit::Transient),
        }
    }
}

/// Runs the export with whole-task retries (`_retry`), reporting to `recorder`, until it ends or
/// `cancel` resolves (with the signal's name): then a query the export issued that is still
/// running is killed, as Digdag's `td>` does when a task is cancelled. An export job TD already
/// runs is left to finish: a rerun adopts it, which is safer than killing a half-written append.
pub async fn run(
    plan: &ExportPlan,
    recorder: &StatusRecorder,
    options: &Options,
    display: Display,
    cancel: impl Future<Output = &'static str>,
) -> Result<(), ExportError> {
    tokio::pin!(cancel);
    let mut previous = recorder.file().previous();
    let mut attempt = 0u32;
    loop {
        let at = now_rfc3339();
        let result = run_once(
            plan,
            recorder,
            previous.as_ref(),
            options,
            display,
            cancel.as_mut(),
        )
        .await;
        let (outcome, message) = match &result {
            Ok(()) => ("success".to_string(), None),
            Err(e) => (e.class().name.to_string(), Some(e.to_string())),
        };
        recorder.attempt(Attempt { at, outcome, message });
        match result {
            Err(e) if retryable(&e) && attempt < plan.retry.limit => {
                attempt += 1;
                let wait = options.scaled(plan.retry.interval_before(attempt));
                tracing::warn!(attempt, wait_s = wait.as_secs_f64(), error = %e, "retrying the export");
                recorder.write();
                // The next attempt resumes what this one recorded (the query job, a server export).
                previous = Some(recorder.snapshot());
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    signal = cancel.as_mut() => return Err(ExportError::Interrupted { signal, killed: None }),
                }
            }
            other => return other,
        }
    }
}

/// Whether `_retry` runs the task again after `e`: transient failures, but not an interruption
/// (the runner asked the task to stop).
fn retryable(e: &ExportError) -> bool {
    e.class().is_transient() && !matches!(e, ExportError::Interrupted { .. })
}

/// One attempt. `previous` is what an earlier run (or attempt) recorded.
async fn run_once<C: Future<Output = &'static str>>(
    plan: &ExportPlan,
    recorder: &StatusRecorder,
    previous: Option<&StatusDoc>,
    options: &Options,
    display: Display,
    mut cancel: Pin<&mut C>,
) -> Result<(), ExportError> {
    let connected = tokio::select! {
        connected = connect(plan, options) => connected?,
        signal = cancel.as_mut() => return Err(ExportError::Interrupted { signal, killed: None }),
    };
    tokio::select! {
        done = stages(plan, &connected, recorder, previous, options, display) => done,
        signal = cancel.as_mut() => Err(interrupted(plan, &connected, recorder, options, signal).await),
    }
}

/// The run stages on connected accounts: source → transfer, each reporting to `recorder`.
async fn stages(
    plan: &ExportPlan,
    connected: &Connected,
    recorder: &StatusRecorder,
    previous: Option<&StatusDoc>,
    options: &Options,
    display: Display,
) -> Result<(), ExportError> {
    let table = &connected.table;
    recorder.target(
        connected.transfer,
        &connected.transfer_reason,
        TargetInfo {
            endpoint: connected.target_endpoint.clone(),
            database: table.database.clone(),
            table: table.table.clone(),
            mode: table.mode,
        },
    );
    prepare_target(connected).await?;
    let unfinished = previous.filter(|p| p.state != State::Success);
    let job = source_job(
        &connected.source,
        &plan.source,
        domain_key(plan).as_deref(),
        unfinished.and_then(|p| p.export.source_job_id.as_deref()),
        &options.poll,
        |id| recorder.issued(id),
    )
    .await?;
    recorder.source_job(&job);
    let key = idempotency_key(plan, connected, &job);
    recorder.key(&key);
    match connected.transfer {
        Transfer::Stream => stream_export(plan, connected, &job, &key, recorder, options, display).await?,
        Transfer::Server => server_export(connected, &job, recorder, unfinished, options).await?,
    }
    Ok(())
}

/// The run was told to stop: kill the query job it issued if that still runs (within the
/// policy's grace), and say so.
async fn interrupted(
    plan: &ExportPlan,
    connected: &Connected,
    recorder: &StatusRecorder,
    options: &Options,
    signal: &'static str,
) -> ExportError {
    let issued = matches!(plan.source, Source::Query { .. })
        .then(|| recorder.snapshot().export.source_job_id)
        .flatten();
    let Some(id) = issued else {
        return ExportError::Interrupted { signal, killed: None };
    };
    let kill = tokio::time::timeout(options.poll.cancel_grace, connected.source.kill_job(&id)).await;
    let killed = match kill {
        Ok(Ok(former)) if !JobStatus::parse(&former).is_finished() => {
            tracing::warn!(job_id = %id, %signal, "killed the query job this export issued");
            recorder.killed(&id);
            Some(id)
        }
        Ok(Ok(_)) => None,
        Ok(Err(e)) => {
            tracing::warn!(job_id = %id, error = %e, "could not kill the query job this export issued");
            None
        }
        Err(_) => {
            tracing::warn!(job_id = %id, "no answer in time to the kill of the query job this export issued");
            None
        }
    };
    ExportError::Interrupted { signal, killed }
}

/// Before waiting on the source: a local target gets its database; a replace refuses a
/// write-only key before any data moves.
async fn prepare_target(connected: &Connected) -> Result<(), TransferError> {
    let Some(target) = &connected.target else {
        return Ok(());
    };
    if connected.target_is_local {
        target.create_database(&connected.table.database).await?;
    }
    if connected.table.mode == Mode::Replace && connected.transfer == Transfer::Stream {
        preflight(target, &connected.table.database).await?;
    }
    Ok(())
}

/// The `domain_key` a query is issued with, so that a rerun finds the job instead of issuing it
/// twice; only when the task names itself with `idempotency_key`.
fn domain_key(plan: &ExportPlan) -> Option<String> {
    let Source::Query { sql, database, .. } = &plan.source else {
        return None;
    };
    let key = plan.idempotency_key.as_deref()?;
    Some(format!(
        "tdre-{}",
        &key_hash(&format!("{key}|{database}|{sql}"))[..32]
    ))
}

/// The key names the export: a given `idempotency_key` (else the source job) and the target, so
/// one key shared by tasks writing to different tables never makes one look done.
fn idempotency_key(plan: &ExportPlan, connected: &Connected, job: &Job) -> String {
    let name = plan.idempotency_key.as_deref().unwrap_or(&job.job_id);
    let t = &connected.table;
    format!(
        "{name}|{}|{}|{}|{}",
        connected.target_endpoint, t.database, t.table, t.mode
    )
}

async fn stream_export(
    plan: &ExportPlan,
    connected: &Connected,
    job: &Job,
    key: &str,
    recorder: &StatusRecorder,
    options: &Options,
    display: Display,
) -> Result<(), TransferError> {
    let target = connected
        .target
        .as_ref()
        .expect("stream targets are resolved to an account");
    let columns = map_columns(&result_schema(job)?);
    let (fill, time_source) = time_fill(
        &columns,
        plan.target.time,
        plan.target.time_column.as_deref(),
        job,
    )?;
    let schema = td_schema(&columns);
    let session = session_name(key);
    recorder.mapping(&columns, time_source, &session);
    for c in columns.iter().filter(|c| c.source != c.target) {
        tracing::info!(source = %c.source, target = %c.target, "column renamed");
    }

    let progress = Arc::new(Progress::default());
    let reporter = Reporter::new(
        display,
        job.result_size.map(|n| n.max(0) as u64),
        job.num_records.map(|n| n.max(0) as u64),
    );
    let upload = |session: String| {
        let (source, target, job_id) = (connected.source.clone(), target.clone(), job.job_id.clone());
        let (columns, progress, part_bytes) = (columns.clone(), progress.clone(), options.part_bytes);
        async move {
            let body = source.job_result(&job_id, "msgpack.gz").await?;
            let moved = pipe(
                body,
                Transcoder::new(&columns, fill),
                part_bytes,
                progress,
                move |part, bytes| {
                    let (target, session) = (target.clone(), session.clone());
                    async move { target.upload_part(&session, &part, bytes).await }
                },
            )
            .await?;
            Ok::<Moved, TransferError>(moved)
        }
    };
    let moving = write_target(
        &connected.table,
        target,
        &session,
        key,
        &schema,
        &options.poll,
        upload,
    );
    let written: Written = tokio::select! {
        written = moving => written?,
        never = watch_progress(&progress, recorder, reporter, options) => match never {},
    };
    recorder.written(&written);
    Ok(())
}

/// Writes the target by the mode's protocol, `upload` filling the session it is handed.
async fn write_target<U, F>(
    table: &TableRef,
    client: &TdClient,
    session: &str,
    key: &str,
    schema: &serde_json::Value,
    poll: &PollPolicy,
    upload: U,
) -> Result<Written, TransferError>
where
    U: FnOnce(String) -> F,
    F: std::future::Future<Output = Result<Moved, TransferError>>,
{
    let (database, table, mode) = (table.database.as_str(), table.table.as_str(), table.mode);
    match mode {
        Mode::Append => {
            let s = SessionRef {
                client,
                name: session,
                database,
                table,
                poll,
            };
            append(&s, schema, upload).await
        }
        Mode::Replace => {
            let t = ReplaceTarget {
                client,
                database,
                table,
                poll,
            };
            replace(&t, key, schema, upload).await
        }
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
        reporter.update(rows, bytes_in, bytes_out);
        if last_write.elapsed() >= options.poll.status_every {
            last_write = tokio::time::Instant::now();
            recorder.progress(rows, bytes_in, bytes_out);
        }
    }
}

async fn server_export(
    connected: &Connected,
    job: &Job,
    recorder: &StatusRecorder,
    unfinished: Option<&StatusDoc>,
    options: &Options,
) -> Result<(), TransferError> {
    let destination = connected
        .destination
        .as_ref()
        .expect("server exports have a destination");
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
        &options.poll,
        |id| recorder.export_job(id),
    )
    .await?;
    recorder.exported(
        &exported.job_id,
        exported.num_records.unwrap_or_default().max(0) as u64,
    );
    Ok(())
}
