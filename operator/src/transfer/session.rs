//! Drives a bulk-import session from whatever state it is in to `committed`, so that a rerun
//! resumes where the last run stopped (uploading → frozen → performing → ready → committing →
//! committed) and a committed session means "already done".
//!
//! The session, named after the export's idempotency key, is also the lock between runs that
//! overlap (design.md §10): the run whose create made it owns the load. A run that finds it made
//! by another waits, polling, for that run's outcome — committed means "already done" — and takes
//! the load over only when the session stops moving for [`PollPolicy::stale_after`] (its run is
//! gone), or at once when it knows the run that made it has ended (`resume_now`).

use std::future::Future;
use std::time::Instant;

use serde_json::Value;

use super::phase::{PhaseCell, Step};
use super::stream::Moved;
use super::{Made, TransferError};
use crate::retry::PollPolicy;
use crate::td::{Session, SessionAction, SessionStatus, TdClient};

/// How a session reached `committed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Rows the session committed.
    pub rows: u64,
    /// What this run uploaded (None when it resumed past the upload).
    pub uploaded: Option<Moved>,
    /// False when the session was already committed before this run touched it.
    pub by_this_run: bool,
    /// The table's row count just before this run's commit (None: not readable with this key).
    pub count_before: Option<i64>,
    /// The perform's job: the TD job that wrote the rows.
    pub job_id: Option<String>,
}

/// Session `name` loading `db.table`.
pub struct SessionRef<'a> {
    pub client: &'a TdClient,
    pub name: &'a str,
    pub database: &'a str,
    pub table: &'a str,
    pub poll: &'a PollPolicy,
    /// The run that left an existing session is known to have ended (its status document says
    /// so): resume it without waiting to see it stand still.
    pub resume_now: bool,
    /// What this run makes (the session, the table), for clean-up.
    pub made: &'a Made,
    /// Where the write stands, for the display and the status document.
    pub phase: &'a PhaseCell,
}

/// Whose load a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// This run made the session, or took it over: it moves it on.
    Owner,
    /// Another run made it: wait for its outcome.
    Waiter,
}

/// What a session looks like to a waiter; any change is the owner's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    status: SessionStatus,
    frozen: bool,
    parts: usize,
    valid: Option<i64>,
    job: Option<String>,
}

/// Brings the session to `committed`. `upload` fills the session it is given (deterministic part
/// names, so a second upload overwrites); `schema` is appended to the table before commit.
pub async fn drive<U, F>(s: &SessionRef<'_>, upload: U, schema: &Value) -> Result<Committed, TransferError>
where
    U: FnOnce(String) -> F,
    F: Future<Output = Result<Moved, TransferError>>,
{
    let client = s.client;
    let mut upload = Some(upload);
    let mut uploaded: Option<Moved> = None;
    let mut committed_here = false;
    let mut count_before = None;
    // Since the last transition this run asked for: what the next wait is a share of.
    let mut since = Instant::now();
    let mut conflicts = 0u32;
    let mut role = None;
    loop {
        let Some(session) = client.session(s.name).await? else {
            role = Some(match create(s).await? {
                Created::Here => Role::Owner,
                Created::Elsewhere => Role::Waiter,
            });
            continue;
        };
        loads_our_table(s, &session)?;
        if *role.get_or_insert(if s.resume_now { Role::Owner } else { Role::Waiter }) == Role::Waiter {
            s.phase.set(Step::WaitForOtherRun, None);
            match wait_for_owner(s, session).await? {
                Waited::Committed(c) => return Ok(c),
                Waited::Stale => role = Some(Role::Owner),
                Waited::Vanished => role = None,
            }
            continue;
        }
        if let Some(step) = Step::of_session(&session.status) {
            s.phase.set(step, session.job_id.as_deref());
        }
        match (&session.status, session.upload_frozen) {
            (SessionStatus::Uploading, false) => {
                if let Some(upload) = upload.take() {
                    match upload_parts(s, upload).await? {
                        Some(moved) => uploaded = Some(moved),
                        None => continue,
                    }
                }
                transition(s, SessionAction::Freeze, &mut conflicts).await?;
            }
            (SessionStatus::Uploading, true) => {
                client.append_schema(s.database, s.table, schema).await?;
                transition(s, SessionAction::Perform, &mut conflicts).await?;
                since = Instant::now();
            }
            (SessionStatus::Ready, _) => {
                nothing_rejected(s, &session)?;
                count_before = table_count(s).await?;
                committed_here |= transition(s, SessionAction::Commit, &mut conflicts).await?;
                since = Instant::now();
            }
            (SessionStatus::Committed, _) => {
                return Ok(Committed {
                    rows: session.valid_records.unwrap_or(0).max(0) as u64,
                    uploaded,
                    by_this_run: committed_here,
                    count_before,
                    job_id: session.job_id,
                });
            }
            (SessionStatus::Performing | SessionStatus::Committing, _) => {
                if session.status == SessionStatus::Performing {
                    if let Some(stderr) = failed_perform(client, session.job_id.as_deref()).await {
                        let session = s.name.to_string();
                        return Err(TransferError::PerformFailed { session, stderr });
                    }
                }
                tokio::time::sleep(s.poll.session.after(since.elapsed())).await;
            }
            (SessionStatus::Other(other), _) => {
                return Err(TransferError::UnexpectedSession {
                    session: s.name.to_string(),
                    status: other.clone(),
                })
            }
        }
    }
}

/// Fills the session; `None` when another run froze it meanwhile: it uploaded the same parts
/// (their names and bytes follow from the key), so this run carries on from its state.
async fn upload_parts<U, F>(s: &SessionRef<'_>, upload: U) -> Result<Option<Moved>, TransferError>
where
    U: FnOnce(String) -> F,
    F: Future<Output = Result<Moved, TransferError>>,
{
    match upload(s.name.to_string()).await {
        Ok(moved) => {
            prune_parts(s, moved.parts).await?;
            Ok(Some(moved))
        }
        Err(e) if is_conflict(&e) => {
            tracing::info!(session = s.name, error = %e, "the session moved on during the upload");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// How waiting for another run's load ended.
enum Waited {
    /// It committed: the export is done.
    Committed(Committed),
    /// It stopped moving: its run is gone.
    Stale,
    /// The session is gone (its run failed and cleaned up, or a replace finished with it).
    Vanished,
}

/// Watches a session another run owns until it commits, vanishes or stands still for
/// `stale_after`. Waits `max_wait_for_owner` at most, then gives up: transient, run again later.
async fn wait_for_owner(s: &SessionRef<'_>, mut session: Session) -> Result<Waited, TransferError> {
    let mut watch = Watch::new(s);
    tracing::info!(session = s.name, status = %session.status, "another run owns this export's session; waiting for its outcome");
    loop {
        if session.status == SessionStatus::Committed {
            return Ok(Waited::Committed(Committed {
                rows: session.valid_records.unwrap_or(0).max(0) as u64,
                uploaded: None,
                by_this_run: false,
                count_before: None,
                job_id: session.job_id,
            }));
        }
        if watch.observe(&session).await? {
            tracing::warn!(
                session = s.name,
                "the run that made the session is gone; taking its load over"
            );
            return Ok(Waited::Stale);
        }
        session = match s.client.session(s.name).await? {
            Some(next) => next,
            None => return Ok(Waited::Vanished),
        };
    }
}

/// A waiter's view of another run's session: whether it still moves.
pub(super) struct Watch<'a> {
    s: &'a SessionRef<'a>,
    started: tokio::time::Instant,
    still_since: tokio::time::Instant,
    last: Option<Fingerprint>,
}

impl<'a> Watch<'a> {
    pub(super) fn new(s: &'a SessionRef<'a>) -> Watch<'a> {
        let now = tokio::time::Instant::now();
        Watch {
            s,
            started: now,
            still_since: now,
            last: None,
        }
    }

    /// Takes in the session as it is now, then waits one poll; `true` when it has stood still
    /// for `stale_after` (a perform or commit in flight is TD working, not standing still).
    pub(super) async fn observe(&mut self, session: &Session) -> Result<bool, TransferError> {
        let parts = match session.status {
            SessionStatus::Uploading => self.s.client.parts(self.s.name).await?.len(),
            _ => 0,
        };
        let now = Fingerprint {
            status: session.status.clone(),
            frozen: session.upload_frozen,
            parts,
            valid: session.valid_records,
            job: session.job_id.clone(),
        };
        if self.last.as_ref() != Some(&now) || now.status.is_busy() {
            self.still_since = tokio::time::Instant::now();
            self.last = Some(now);
        } else if self.still_since.elapsed() >= self.s.poll.stale_after {
            return Ok(true);
        }
        if self.started.elapsed() >= self.s.poll.max_wait_for_owner {
            return Err(TransferError::OwnedElsewhere {
                session: self.s.name.to_string(),
                status: session.status.clone(),
                waited_s: self.started.elapsed().as_secs(),
            });
        }
        tokio::time::sleep(self.s.poll.session.first).await;
        Ok(false)
    }
}

/// Whether an upload failed because the session is no longer open for parts (another run froze it).
fn is_conflict(e: &TransferError) -> bool {
    match e {
        TransferError::Td(td)
        | TransferError::Stream(super::stream::StreamError::Upload { source: td, .. }) => td.is_status(409),
        _ => false,
    }
}

/// A session of this name loading another table is not ours to resume or call done.
fn loads_our_table(s: &SessionRef<'_>, session: &Session) -> Result<(), TransferError> {
    let loads = (session.database.as_deref(), session.table.as_deref());
    if loads != (Some(s.database), Some(s.table)) && loads != (None, None) {
        return Err(TransferError::UnexpectedSession {
            session: s.name.to_string(),
            status: format!("loading {}.{}", loads.0.unwrap_or("?"), loads.1.unwrap_or("?")),
        });
    }
    Ok(())
}

/// A performed session commits only when every record and part was read: a part the perform
/// could not read loses its rows from both counts, as bad as rejected records.
fn nothing_rejected(s: &SessionRef<'_>, session: &Session) -> Result<(), TransferError> {
    let errors = session.error_records.unwrap_or(0) + session.error_parts.unwrap_or(0);
    if errors > 0 {
        return Err(TransferError::Rejected {
            session: s.name.to_string(),
            rejected: errors,
            valid: session.valid_records.unwrap_or(0),
        });
    }
    Ok(())
}

/// Sends a state transition. A 409 says the session is no longer in the state this run read:
/// an attempt whose answer was lost (a cut body, a timeout) already moved it, or another run
/// did. The caller reads the state again and carries on from there.
/// Returns whether this call made the transition (`false`: another call had made it).
async fn transition(
    s: &SessionRef<'_>,
    action: SessionAction,
    conflicts: &mut u32,
) -> Result<bool, TransferError> {
    match s.client.session_action(s.name, action).await {
        Err(e) if e.is_status(409) && *conflicts < s.poll.max_conflicts => {
            *conflicts += 1;
            tracing::info!(session = s.name, ?action, error = %e, "the session moved on; reading its state again");
            Ok(false)
        }
        Err(e) => Err(e.into()),
        Ok(()) => {
            *conflicts = 0;
            Ok(true)
        }
    }
}

/// Who made a session.
enum Created {
    Here,
    /// It existed: another run made it first.
    Elsewhere,
}

/// Creates the session; if the table is missing, creates it first (master key only).
async fn create(s: &SessionRef<'_>) -> Result<Created, TransferError> {
    let made = |created: bool| {
        s.made
            .session
            .fetch_or(created, std::sync::atomic::Ordering::Relaxed);
        if created {
            Created::Here
        } else {
            Created::Elsewhere
        }
    };
    match s.client.create_session(s.name, s.database, s.table).await {
        Err(e) if e.is_status(404) => {
            if !s.client.database_exists(s.database).await.unwrap_or(true) {
                return Err(TransferError::DatabaseMissing {
                    database: s.database.to_string(),
                });
            }
            match s.client.create_table(s.database, s.table).await {
                Err(e) if e.is_forbidden() => Err(TransferError::WriteOnlyCannotCreate {
                    database: s.database.to_string(),
                    table: s.table.to_string(),
                }),
                Err(e) => Err(e.into()),
                Ok(created) => {
                    s.made
                        .table
                        .fetch_or(created, std::sync::atomic::Ordering::Relaxed);
                    Ok(made(s.client.create_session(s.name, s.database, s.table).await?))
                }
            }
        }
        other => Ok(made(other?)),
    }
}

/// Deletes parts left by an earlier run that this run did not write (it wrote `part_0…part_{n-1}`).
async fn prune_parts(s: &SessionRef<'_>, written: u64) -> Result<(), TransferError> {
    let ours: Vec<String> = (0..written).map(super::stream::part_name).collect();
    for part in s.client.parts(s.name).await? {
        if !ours.contains(&part) {
            s.client.delete_part(s.name, &part).await?;
        }
    }
    Ok(())
}

/// The table's row count, or None when this key may not read it (write-only).
async fn table_count(s: &SessionRef<'_>) -> Result<Option<i64>, TransferError> {
    match s.client.table(s.database, s.table).await {
        Ok(t) => Ok(t.map(|t| t.count)),
        Err(e) if e.is_forbidden() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The stderr of a perform job that failed (None while it runs, or if it cannot be read).
async fn failed_perform(client: &TdClient, job_id: Option<&str>) -> Option<String> {
    let job = client.job(job_id?).await.ok()?;
    job.has_failed().then(|| {
        job.failure_output()
            .unwrap_or_else(|| format!("perform job {}", job.status))
    })
}
