//! One export, start to end: connect the accounts → get the source job → move the rows with the
//! chosen engine ([`stream`] or [`server`]) → record what happened, under the task's own retries
//! (`_retry`); a run that stops early cleans up after itself ([`stop`]).

mod resume;
mod server_run;
mod stop;
mod stream_run;

use std::future::Future;
use std::pin::Pin;

use td_model::Mode;

use crate::connect::{connect, ConnectError, Connected, Engine};
use crate::error::{Class, Classify, Exit};
use crate::options::Options;
use crate::progress::{Display, JobWatch};
use crate::resolve::{ExportPlan, Source};
use crate::source::{source_job, SourceError};
use crate::status::{now_rfc3339, Attempt, State, StatusDoc, StatusRecorder, TargetInfo};
use crate::td::Job;
use crate::transfer::replace::preflight;
use crate::transfer::{key_hash, ExportId, Made, TransferError};
use resume::Resume;

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
) -> Result<Connected, ExportError> {
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
            Ok(_) => ("success".to_string(), None),
            Err(e) => (e.class().name.to_string(), Some(e.to_string())),
        };
        recorder.attempt(Attempt { at, outcome, message });
        match result {
            Err(e) if retryable(&e) && attempt < plan.retry.limit => {
                attempt += 1;
                let wait = options.scaled(plan.retry.interval_before(attempt));
                tracing::warn!(attempt, wait_s = wait.as_secs_f64(), error = %e, "retrying the export");
                recorder.write();
                // The next attempt resumes what this one recorded (the query job, a server export,
                // the session: this attempt has ended, so its session is not waited for).
                let mut ended = recorder.snapshot();
                ended.state = State::Failed;
                previous = Some(ended);
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

/// One attempt. `previous` is what an earlier run (or attempt) recorded. A successful one hands
/// back its connected accounts (what `--show` then reads the target through).
async fn run_once<C: Future<Output = &'static str>>(
    plan: &ExportPlan,
    recorder: &StatusRecorder,
    previous: Option<&StatusDoc>,
    options: &Options,
    display: Display,
    mut cancel: Pin<&mut C>,
) -> Result<Connected, ExportError> {
    let connected = tokio::select! {
        connected = connect(plan, options) => connected?,
        signal = cancel.as_mut() => return Err(ExportError::Interrupted { signal, killed: None }),
    };
    let made = Made::default();
    tokio::select! {
        done = stages(plan, &connected, recorder, previous, options, display, &made) => {
            if let Err(e) = &done {
                stop::clean_up(&connected, recorder, &made, &options.poll, e).await;
            }
            done
        }
        signal = cancel.as_mut() => Err(stop::interrupted(plan, &connected, recorder, options, signal, &made).await),
    }?;
    Ok(connected)
}

/// The run stages on connected accounts: source → transfer, each reporting to `recorder`.
async fn stages(
    plan: &ExportPlan,
    connected: &Connected,
    recorder: &StatusRecorder,
    previous: Option<&StatusDoc>,
    options: &Options,
    display: Display,
    made: &Made,
) -> Result<(), ExportError> {
    let table = &connected.table;
    recorder.target(
        connected.transfer(),
        &connected.engine_reason,
        TargetInfo {
            endpoint: connected.target_shown.clone(),
            database: table.database.clone(),
            table: table.table.clone(),
            mode: table.mode,
        },
    );
    prepare_target(connected).await?;
    let resume = Resume::new(previous);
    let mut watch = JobWatch::new(display, connected.source.base_url());
    let job = source_job(
        &connected.source,
        &plan.source,
        domain_key(plan).as_deref(),
        resume.source_job(),
        &options.poll,
        |id| recorder.issued(id),
        |job| watch.update(job),
    )
    .await?;
    drop(watch);
    recorder.source_job(&job);
    let id = ExportId::new(idempotency_key(plan, connected, &job), &connected.table.table);
    recorder.key(&id.key);
    match &connected.engine {
        Engine::Stream { target, .. } => {
            let run = stream_run::StreamRun {
                plan,
                connected,
                target,
                job: &job,
                id: &id,
                recorder,
                resume,
                options,
                made,
            };
            stream_run::stream_export(&run, display).await?
        }
        Engine::Server { destination } => {
            server_run::server_export(connected, destination, &job, &id, recorder, resume, options).await?
        }
    }
    Ok(())
}

/// Before waiting on the source: a replace refuses a write-only key before any data moves. A
/// missing target database is never made here (TD's connector refuses one, and so does
/// td-local: `td-result-export local db:create` makes it).
async fn prepare_target(connected: &Connected) -> Result<(), TransferError> {
    if let (Engine::Stream { target, .. }, Mode::Replace) = (&connected.engine, connected.table.mode) {
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
        connected.target_key_part(),
        t.database,
        t.table,
        t.mode
    )
}
