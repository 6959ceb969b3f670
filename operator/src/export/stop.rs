//! A run that stops early: interrupted (the query it issued is killed, as Digdag's `td>` does on
//! cancel), or failed. Either way it removes what it made that nobody can use, and the status
//! document says what is left on the target.

use td_model::Mode;

use super::ExportError;
use crate::connect::Connected;
use crate::error::Classify;
use crate::options::Options;
use crate::resolve::{ExportPlan, Source};
use crate::retry::PollPolicy;
use crate::spec::Transfer;
use crate::status::{Left, StatusRecorder};
use crate::td::JobStatus;
use crate::transfer::append::drop_append;
use crate::transfer::replace::drop_temp;
use crate::transfer::{Made, TransferError};

/// The run was told to stop: kill the query job it issued if that still runs (within the
/// policy's grace), and say so.
pub(super) async fn interrupted(
    plan: &ExportPlan,
    connected: &Connected,
    recorder: &StatusRecorder,
    options: &Options,
    signal: &'static str,
    made: &Made,
) -> ExportError {
    let grace = options.poll.cancel_grace;
    if tokio::time::timeout(grace, leave(connected, recorder, made, &options.poll, true))
        .await
        .is_err()
    {
        let session = made.writing.get().map(|id| id.session.clone());
        recorder.left(Left {
            note: format!(
                "no time was left to clean up: bulk import {} may be left",
                session.as_deref().unwrap_or("?")
            ),
            session,
            temp_table: None,
            resumable: false,
        });
    }
    // The status document is the record of the query job the run issued, in any attempt.
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

/// After a failed attempt of the stream engine: what this run made that nobody can use is removed,
/// and the status document says what is left.
pub(super) async fn clean_up(
    connected: &Connected,
    recorder: &StatusRecorder,
    made: &Made,
    poll: &PollPolicy,
    e: &ExportError,
) {
    if connected.transfer() != Transfer::Stream || matches!(e, ExportError::Interrupted { .. }) {
        return;
    }
    let resumable =
        e.class().is_transient() || matches!(e, ExportError::Transfer(TransferError::Rejected { .. }));
    leave(connected, recorder, made, poll, resumable).await;
}

/// Leaves the target as clean as this run can, and records what is left. Only the run that made
/// a session touches it, and never once it reached `committing` or `committed`: it is then the
/// record that the rows were written, which a rerun reads as "already done" (a replace's temp
/// table stays with it, for the rerun to rename). Otherwise a replace's temp table and session
/// go; an append's session stays when a rerun can resume it (or its rejected records are to be
/// inspected), else it goes, with the target table when this run made it and it is still empty.
async fn leave(
    connected: &Connected,
    recorder: &StatusRecorder,
    made: &Made,
    poll: &PollPolicy,
    resumable: bool,
) {
    let (Some(client), Some(id)) = (connected.target(), made.writing.get()) else {
        return;
    };
    let t = &connected.table;
    let (session, temp) = (id.session.clone(), id.temp_table.clone());
    let found = client.session(&session).await;
    // No session at all (the run stopped before making one): nothing of it is on the target.
    if matches!(found, Ok(None)) && !made.session() {
        recorder.left(Left {
            session: None,
            temp_table: None,
            resumable: false,
            note: "nothing of this run is left on the target".to_string(),
        });
        return;
    }
    // Unknown (the session could not be read): kept, as if committed, since deleting a commit's
    // record is the one thing clean-up must never do.
    let committed = match &found {
        Ok(found) => found.as_ref().is_some_and(|s| s.status.has_committed()),
        Err(_) => true,
    };
    if committed {
        let renamed_later = t.mode == Mode::Replace;
        recorder.left(Left {
            session: Some(session.clone()),
            temp_table: renamed_later.then(|| temp.clone()),
            resumable: true,
            note: match (&found, renamed_later) {
                (Err(e), _) => format!(
                    "bulk import {session} could not be read ({e}): it is kept in case it committed, \
                     and a rerun finds out"
                ),
                (Ok(_), true) => {
                    format!("bulk import {session} committed the rows into {temp}: a rerun renames it over the target")
                }
                (Ok(_), false) => format!(
                    "bulk import {session} committed the rows: it is kept as the record, and a rerun reports them done"
                ),
            },
        });
        return;
    }
    let keep = !made.session() || (t.mode == Mode::Append && resumable);
    let mut note = match (keep, made.session()) {
        (true, false) => format!("bulk import {session} belongs to another run and was left to it"),
        (true, true) => format!("bulk import {session} is left for a rerun to resume"),
        (false, _) => "nothing of this run is left on the target".to_string(),
    };
    let mut left = Left {
        session: keep.then(|| session.clone()),
        temp_table: None,
        resumable: keep && made.session(),
        note: String::new(),
    };
    if !keep {
        let gone = match t.mode {
            Mode::Replace => drop_temp(client, &t.database, &temp, &session, poll).await,
            Mode::Append => drop_append(client, &t.database, &t.table, &session, made).await,
        };
        match gone {
            Ok(true) => {}
            Ok(false) => {
                note = format!(
                    "bulk import {session} committed meanwhile: it and {temp} are kept for a rerun to rename"
                );
                left.session = Some(session);
                left.temp_table = Some(temp);
                left.resumable = true;
            }
            Err(e) => {
                note = format!("could not clean up ({e}): bulk import {session} may be left");
                left.session = Some(session);
                left.temp_table = (t.mode == Mode::Replace).then_some(temp);
            }
        }
    }
    left.note = note;
    recorder.left(left);
}
