//! Replace, atomically: load a temp table `<table>_tdre_<8 hex>` through its own session, give it
//! the result's schema, then one `rename(temp → target, overwrite=true)`, so a reader sees the
//! old rows or the new rows, never a mix or an empty table.
//!
//! The session is the lock between overlapping runs of one replace (design.md §10): the run that
//! creates it owns the temp table and the rename; another waits for the outcome — the session
//! gone and the target holding the rows means "already done" — or takes over when the owner is
//! gone (the session stands still), starting over. Only the owner ever drops the temp table.

use std::future::Future;

use serde_json::Value;

use super::append::written;
use super::phase::{PhaseCell, Step};
use super::session::{drive, SessionRef, Watch};
use super::stream::Moved;
use super::{session_name, temp_table_name, Made, TransferError, Written};
use crate::retry::PollPolicy;
use crate::td::{Session, SessionAction, SessionStatus, TdClient};

/// The table a replace writes, and how it waits.
pub struct ReplaceTarget<'a> {
    pub client: &'a TdClient,
    pub database: &'a str,
    pub table: &'a str,
    pub poll: &'a PollPolicy,
    /// The run that left an existing session is known to have ended: start over at once.
    pub resume_now: bool,
    /// Rows the result has: a waiter checks the target against them when the owner is done.
    pub rows_expected: Option<u64>,
    /// Whether this run made the session (owns the temp table), for clean-up.
    pub made: &'a Made,
    /// Where the write stands, for the display and the status document.
    pub phase: &'a PhaseCell,
}

impl<'a> ReplaceTarget<'a> {
    /// The replace's session, loading the temp table.
    fn session<'s>(&'s self, name: &'s str, temp: &'s str, resume_now: bool) -> SessionRef<'s> {
        SessionRef {
            client: self.client,
            name,
            database: self.database,
            table: temp,
            poll: self.poll,
            resume_now,
            made: self.made,
            phase: self.phase,
        }
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
pub async fn preflight(client: &TdClient, database: &str) -> Result<(), TransferError> {
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
/// (best effort) by the run that owns it.
pub async fn replace<U, F>(
    t: &ReplaceTarget<'_>,
    idempotency_key: &str,
    schema: &Value,
    upload: U,
) -> Result<Written, TransferError>
where
    U: FnOnce(String) -> F,
    F: Future<Output = Result<Moved, TransferError>>,
{
    let temp = temp_table_name(t.table, idempotency_key);
    let session = session_name(idempotency_key);
    loop {
        match claim(t, &temp, &session, schema).await? {
            Claim::Owner => return own(t, &temp, &session, schema, upload).await,
            Claim::DoneElsewhere(written) => return Ok(written),
            Claim::Again => {}
        }
    }
}

/// Makes the session (and the temp table it loads) unless one exists; waits on one that another
/// run owns; discards one whose run is gone.
async fn claim(
    t: &ReplaceTarget<'_>,
    temp: &str,
    session: &str,
    schema: &Value,
) -> Result<Claim, TransferError> {
    let Some(found) = t.client.session(session).await? else {
        let fresh = t.client.create_table(t.database, temp).await?;
        // A temp table with rows and no session is what a run stopped mid-clean-up left.
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
    if t.resume_now {
        discard(t, temp, session).await?;
        return Ok(Claim::Again);
    }
    wait_for_owner(t, temp, session, found).await
}

/// Watches another run's replace: its session gone (or committed with the temp table renamed
/// away) and the target holding the result's rows means done; a session standing still means its
/// run is gone, and it is discarded so that this run starts over.
async fn wait_for_owner(
    t: &ReplaceTarget<'_>,
    temp: &str,
    session: &str,
    mut found: Session,
) -> Result<Claim, TransferError> {
    let s = t.session(session, temp, false);
    t.phase.set(Step::WaitForOtherRun, None);
    let mut watch = Watch::new(&s);
    let mut writer = None;
    tracing::info!(session, status = %found.status, "another run is replacing this table; waiting for its outcome");
    loop {
        writer = found.job_id.clone().or(writer);
        let renamed =
            found.status == SessionStatus::Committed && t.client.table(t.database, temp).await?.is_none();
        if renamed {
            return done_elsewhere(t, writer).await;
        }
        if watch.observe(&found).await? {
            tracing::warn!(
                session,
                "the run that made the session is gone; starting the replace over"
            );
            discard(t, temp, session).await?;
            return Ok(Claim::Again);
        }
        found = match t.client.session(session).await? {
            Some(next) => next,
            None => return done_elsewhere(t, writer).await,
        };
    }
}

/// The other run's session is gone: done when the target holds the result's rows; otherwise
/// that run failed (and cleaned up), and this one claims the replace anew.
async fn done_elsewhere(t: &ReplaceTarget<'_>, job_id: Option<String>) -> Result<Claim, TransferError> {
    let count = t
        .client
        .table(t.database, t.table)
        .await?
        .map(|table| table.count);
    match (count, t.rows_expected) {
        (Some(found), Some(expected)) if found == expected as i64 => Ok(Claim::DoneElsewhere(Written {
            rows: expected,
            moved: Moved::default(),
            already_done: true,
            verified: true,
            job_id,
        })),
        _ => Ok(Claim::Again),
    }
}

/// The owner's part: load the temp table, rename it over the target, delete the session.
async fn own<U, F>(
    t: &ReplaceTarget<'_>,
    temp: &str,
    session: &str,
    schema: &Value,
    upload: U,
) -> Result<Written, TransferError>
where
    U: FnOnce(String) -> F,
    F: Future<Output = Result<Moved, TransferError>>,
{
    let loaded = drive(&t.session(session, temp, true), upload, schema).await;
    let outcome = match loaded {
        Ok(c) => swap_in(t, temp).await.map(|()| c),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(committed) => {
            let _ = t.client.session_action(session, SessionAction::Delete).await;
            let verified = verify_replace(t, committed.rows).await?;
            Ok(Written {
                already_done: false,
                ..written(committed, verified)
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

/// Drops a replace's session and temp table (what an interrupted or failed owner leaves).
async fn discard(t: &ReplaceTarget<'_>, temp: &str, session: &str) -> Result<(), TransferError> {
    drop_temp(t.client, t.database, temp, session, t.poll).await
}

/// Drops a replace's session (waiting out a perform or commit in flight) and its temp table.
pub async fn drop_temp(
    client: &TdClient,
    database: &str,
    temp: &str,
    session: &str,
    poll: &PollPolicy,
) -> Result<(), TransferError> {
    discard_session(client, session, poll).await?;
    client.delete_table(database, temp).await?;
    Ok(())
}

/// Renames the loaded temp table over the target. `rename` cannot be sent again blindly, so
/// when its answer is lost the tables tell what happened: the temp table gone means it was
/// renamed; still there means it was not, and the rename is sent again.
async fn swap_in(t: &ReplaceTarget<'_>, temp: &str) -> Result<(), TransferError> {
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
            other => return Ok(other?),
        }
    }
}

/// Deletes a session left by an earlier attempt, waiting out a perform or commit in flight.
async fn discard_session(client: &TdClient, session: &str, poll: &PollPolicy) -> Result<(), TransferError> {
    let started = tokio::time::Instant::now();
    loop {
        match client.session(session).await? {
            None => return Ok(()),
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
                return Ok(());
            }
        }
    }
}

/// The target holds exactly the rows loaded.
async fn verify_replace(t: &ReplaceTarget<'_>, rows: u64) -> Result<bool, TransferError> {
    let found = t.client.table(t.database, t.table).await?.map_or(0, |t| t.count);
    if found != rows as i64 {
        return Err(TransferError::Verify {
            table: format!("{}.{}", t.database, t.table),
            expected: rows as i64,
            found,
        });
    }
    Ok(true)
}
