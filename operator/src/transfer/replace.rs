//! Replace, atomically: load a temp table `<table>_tdre_<8 hex>` through its own session, give it
//! the result's schema, then one `rename(temp → target, overwrite=true)`, so a reader sees the
//! old rows or the new rows, never a mix or an empty table.
//!
//! The session is the lock between overlapping runs of one replace (docs/architecture.md §8) and, once
//! committed, the record that the replace happened: it is never deleted, so a rerun finds it
//! committed with its temp table renamed away and is done, or committed with the temp table
//! still there and renames it. A run that finds the session made by another waits for that
//! proof; when the session stands still it takes the load over where it stands, never by
//! deleting what the other run may still be filling. A failed owner drops the temp table and
//! its session only when the session never committed.

use std::future::Future;

use serde_json::Value;

use super::append::{nothing_to_write, written};
use super::phase::Step;
use super::session::{announce_wait, drive, Load, SessionRef, Watch};
use super::stream::Moved;
use super::verify::{confirm_count, Verification};
use super::{ExportId, TransferError, Written};
use crate::retry::PollPolicy;
use crate::td::{Session, SessionAction, TdClient};
use td_model::states::{Reported, SessionState};

/// The replace's session `name`, loading the temp table.
fn temp_session<'s>(t: &Load<'s>, name: &'s str, temp: &'s str, resume_now: bool) -> SessionRef<'s> {
    SessionRef {
        load: Load {
            table: temp,
            resume_now,
            ..*t
        },
        name,
    }
}

/// Where a run stands with the replace's session.
enum Claim {
    /// This run made the session: it loads the temp table and renames it.
    Owner,
    /// Another run did the replace.
    DoneElsewhere(Written),
    /// Read the session again.
    Again,
}

/// Checks, before any data moves, that a replace can run: the key must read the database
/// (a write-only key cannot) and the database must exist.
pub(crate) async fn preflight(client: &TdClient, database: &str) -> Result<(), TransferError> {
    match client.database_exists(database).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(TransferError::DatabaseMissing {
            database: database.to_string(),
        }),
        Err(e) if e.is_forbidden() => Err(TransferError::ReplaceNeedsMaster {
            database: database.to_string(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Replaces the target's rows with what `upload` loads. The temp table is dropped on failure
/// (best effort) by the run that owns it, unless its session committed: then a rerun renames it.
pub async fn replace<U, F>(
    t: &Load<'_>,
    id: &ExportId,
    schema: &Value,
    upload: U,
) -> Result<Written, TransferError>
where
    U: FnMut(String) -> F,
    F: Future<Output = Result<Moved, TransferError>>,
{
    let (temp, session) = (id.temp_table.as_str(), id.session.clone());
    let started = tokio::time::Instant::now();
    loop {
        match claim(t, temp, &session, schema).await? {
            Claim::Owner => return own(t, temp, &session, schema, upload).await,
            Claim::DoneElsewhere(written) => return Ok(written),
            Claim::Again => {
                if started.elapsed() >= t.poll.max_wait_for_owner {
                    return Err(TransferError::OwnedElsewhere {
                        session,
                        status: Reported::Other("gone and made again".into()),
                        waited_s: started.elapsed().as_secs(),
                    });
                }
                tokio::time::sleep(t.poll.session.first).await;
            }
        }
    }
}

/// An empty result (the source job's `num_records` is 0): no session. An empty temp table with
/// the result's columns is renamed over the target, which a reader then sees empty at once.
pub(crate) async fn replace_empty(
    t: &Load<'_>,
    id: &ExportId,
    schema: &Value,
) -> Result<Written, TransferError> {
    let temp = id.temp_table.as_str();
    let fresh = t.client.create_table(t.database, temp).await?;
    t.made.table.fetch_or(fresh, std::sync::atomic::Ordering::Relaxed);
    t.client.update_schema(t.database, temp, schema).await?;
    swap_in(t, temp).await?;
    let count = confirm_count(t.client, t.database, t.table, 0, t.poll).await;
    Ok(nothing_to_write(count))
}

/// Makes the session (and the temp table it loads) unless one exists; a committed one is the
/// record of a replace (done if its temp table was renamed away, else its rename is still to
/// do); one that another run may be filling is waited on.
async fn claim(t: &Load<'_>, temp: &str, session: &str, schema: &Value) -> Result<Claim, TransferError> {
    let Some(found) = t.client.session(session).await? else {
        let fresh = t.client.create_table(t.database, temp).await?;
        // Rows reach a temp table only by its session's commit, and a committed session is
        // never deleted: a temp table with rows and no session is what something outside this
        // export left (a session deleted by hand, or expired).
        if !fresh
            && t.client
                .table(t.database, temp)
                .await?
                .is_some_and(|table| table.count > 0)
        {
            t.client.delete_table(t.database, temp).await?;
            return Ok(Claim::Again);
        }
        t.client.update_schema(t.database, temp, schema).await?;
        let owner = t.client.create_session(session, t.database, temp).await?;
        t.made
            .session
            .fetch_or(owner, std::sync::atomic::Ordering::Relaxed);
        return Ok(if owner { Claim::Owner } else { Claim::Again });
    };
    if found.table.as_deref().is_some_and(|table| table != temp) {
        return Err(TransferError::UnexpectedSession {
            session: session.to_string(),
            status: format!("loading {}", found.table.unwrap_or_default()),
        });
    }
    if found.status.is(SessionState::Committed) || t.resume_now {
        return resume(t, temp, found).await;
    }
    wait_for_owner(t, temp, session, found).await
}

/// A session this run takes on: committed and renamed away is done; anything else this run
/// moves on from where it stands (the parts follow from the key: nothing is discarded).
async fn resume(t: &Load<'_>, temp: &str, found: Session) -> Result<Claim, TransferError> {
    if found.status.is(SessionState::Committed) && t.client.table(t.database, temp).await?.is_none() {
        return Ok(Claim::DoneElsewhere(Written {
            rows: found.valid_records.unwrap_or(0).max(0) as u64,
            moved: Moved::default(),
            already_done: true,
            verification: Some(Verification::committed(found.valid_records)),
            job_id: found.job_id,
            dropped: None,
        }));
    }
    Ok(Claim::Owner)
}

/// Watches another run's replace until its session commits and its temp table is renamed away
/// (done), the session goes (its run failed and cleaned up: claim again), or the session stands
/// still for `stale_after`: then this run takes the load over where it stands — never by
/// deleting what the other run may still be filling.
async fn wait_for_owner(
    t: &Load<'_>,
    temp: &str,
    session: &str,
    mut found: Session,
) -> Result<Claim, TransferError> {
    let s = temp_session(t, session, temp, false);
    t.phase.set(Step::WaitForOtherRun, None);
    let mut watch = Watch::new(&s);
    announce_wait(session, &found, t.poll);
    loop {
        if found.status.is(SessionState::Committed) && t.client.table(t.database, temp).await?.is_none() {
            return resume(t, temp, found).await;
        }
        if watch.observe(&found).await? {
            tracing::warn!(
                session,
                "the run that made the session has not moved it; taking its load over"
            );
            return Ok(Claim::Owner);
        }
        found = match t.client.session(session).await? {
            Some(next) => next,
            None => return Ok(Claim::Again),
        };
    }
}

/// The owner's part: load the temp table, rename it over the target. The committed session
/// stays: it is the record that this replace was done.
async fn own<U, F>(
    t: &Load<'_>,
    temp: &str,
    session: &str,
    schema: &Value,
    upload: U,
) -> Result<Written, TransferError>
where
    U: FnMut(String) -> F,
    F: Future<Output = Result<Moved, TransferError>>,
{
    let loaded = drive(&temp_session(t, session, temp, true), upload, schema).await;
    let outcome = match loaded {
        Ok(c) => swap_in(t, temp).await.map(|()| c),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(committed) => {
            let count = confirm_count(t.client, t.database, t.table, committed.rows as i64, t.poll).await;
            let verification = Verification::of(&committed, t.rows_expected, None, count);
            Ok(Written {
                already_done: false,
                ..written(committed, Some(verification))
            })
        }
        Err(e) => {
            if let Err(cleanup) = discard(t, temp, session).await {
                tracing::warn!(table = %temp, error = %cleanup, "could not drop the temp table and its session");
            }
            Err(e)
        }
    }
}

/// Drops a replace's session and temp table (what a failed owner leaves), unless it committed.
async fn discard(t: &Load<'_>, temp: &str, session: &str) -> Result<(), TransferError> {
    drop_temp(t.client, t.database, temp, session, t.poll)
        .await
        .map(drop)
}

/// Drops a replace's session (waiting out a perform in flight) and its temp table, unless the
/// session reached `committing` or `committed`: that is the record of the load, kept with its
/// temp table for a rerun to rename. Returns whether they were dropped.
pub(crate) async fn drop_temp(
    client: &TdClient,
    database: &str,
    temp: &str,
    session: &str,
    poll: &PollPolicy,
) -> Result<bool, TransferError> {
    if !discard_session(client, session, poll).await? {
        return Ok(false);
    }
    client.delete_table(database, temp).await?;
    Ok(true)
}

/// Renames the loaded temp table over the target. `rename` cannot be sent again blindly, so
/// when its answer is lost the tables tell what happened: the temp table gone means it was
/// renamed; still there means it was not, and the rename is sent again. A rename refused
/// because the temp table is gone was done by another run taking the same committed load on.
async fn swap_in(t: &Load<'_>, temp: &str) -> Result<(), TransferError> {
    t.phase.set(Step::Rename, None);
    let mut rechecks = 0;
    loop {
        match t.client.rename_table(t.database, temp, t.table, true).await {
            Err(e) if e.is_ambiguous() && rechecks < t.poll.lost_answer_rechecks => {
                rechecks += 1;
                if t.client.table(t.database, temp).await?.is_none() {
                    tracing::info!(table = %temp, error = %e, "the rename's answer was lost, but it was done");
                    return Ok(());
                }
                tracing::warn!(table = %temp, error = %e, "the rename's answer was lost and it was not done; renaming again");
            }
            Err(e) if e.is_status(404) && t.client.table(t.database, temp).await?.is_none() => {
                tracing::info!(table = %temp, "the temp table was renamed by another run");
                return Ok(());
            }
            other => return Ok(other?),
        }
    }
}

/// Deletes a session left by an earlier attempt, waiting out a perform in flight (bounded by
/// `settle`); a session that reached `committing` or `committed` is kept. Returns whether the
/// session is gone.
async fn discard_session(client: &TdClient, session: &str, poll: &PollPolicy) -> Result<bool, TransferError> {
    let started = tokio::time::Instant::now();
    loop {
        match client.session(session).await? {
            None => return Ok(true),
            Some(s) if s.status.has_committed() => return Ok(false),
            Some(s) if s.status.is_busy() => {
                if started.elapsed() >= poll.settle {
                    return Err(TransferError::SessionBusy {
                        session: session.to_string(),
                        status: s.status,
                        waited_s: poll.settle.as_secs(),
                    });
                }
                tokio::time::sleep(poll.session.first).await;
            }
            Some(_) => {
                client.session_action(session, SessionAction::Delete).await?;
                return Ok(true);
            }
        }
    }
}
