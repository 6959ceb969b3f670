//! Drives a bulk-import session from whatever state it is in to `committed`, so that a rerun
//! resumes where the last run stopped (uploading → frozen → performing → ready → committing →
//! committed) and a committed session means "already done".
//!
//! The session, named after the export's idempotency key, is also the lock between runs that
//! overlap (docs/architecture.md §8): the run whose create made it owns the load. A run that finds it made
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
use crate::td::{Session, SessionAction, SessionStatus, Table, TdClient, TdError};
use td_model::states::{Reported, SessionState};

/// How a session reached `committed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// Rows the session committed (its perform's `valid_records`: TD's own number).
    pub rows: u64,
    /// What this run uploaded (None when it resumed past the upload).
    pub uploaded: Option<Moved>,
    /// False when the session was already committed before this run touched it.
    pub by_this_run: bool,
    /// The table's row count just before this run's commit (None: not readable with this key).
    pub count_before: Option<i64>,
    /// The perform's job: the TD job that wrote the rows.
    pub job_id: Option<String>,
    /// An earlier run's session of this export that could not be committed, dropped so that
    /// this run started over: why, in words.
    pub dropped: Option<String>,
}

impl Committed {
    /// What this run "committed" of an empty result: nothing, with no session.
    pub fn empty() -> Committed {
        Committed {
            rows: 0,
            uploaded: Some(Moved::default()),
            by_this_run: true,
            count_before: None,
            job_id: None,
            dropped: None,
        }
    }
}

/// What a load works with: the target account's client, the table it fills, and what the run
/// shares with its stages. One context for an append's session, a replace (whose table is the
/// target) and a replace's session (whose table is the temp table).
#[derive(Clone, Copy)]
pub struct Load<'a> {
    pub client: &'a TdClient,
    pub database: &'a str,
    pub table: &'a str,
    pub poll: &'a PollPolicy,
    /// The run that left an existing session is known to have ended (its status document says
    /// so): resume it without waiting to see it stand still.
    pub resume_now: bool,
    /// The source job's `num_records`: the rows the upload must read and the perform count.
    pub rows_expected: Option<u64>,
    /// What this run makes (the session, the table), for clean-up.
    pub made: &'a Made,
    /// Where the write stands, for the display and the status document.
    pub phase: &'a PhaseCell,
}

/// Session `name` loading `load.database`.`load.table`.
pub struct SessionRef<'a> {
    pub load: Load<'a>,
    pub name: &'a str,
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

/// What this run has done to the session so far.
#[derive(Debug, Default)]
struct Progress {
    /// This run's complete upload (the parts it wrote, the rows it read).
    uploaded: Option<Moved>,
    /// Uploads refused because the session was not open for parts when they arrived.
    refused_uploads: u32,
    /// Perform trials this run started.
    trials: u32,
    /// This run sent the commit from `ready`.
    committed_here: bool,
    count_before: Option<i64>,
    dropped: Option<String>,
}

/// Brings the session to `committed`. `upload` fills the session it is given (deterministic part
/// names, so a second upload overwrites); `schema` is appended to the table before commit.
///
/// Nothing is committed on anything but proof (docs/architecture.md §8): the upload read every row the
/// source job has, the session holds exactly this export's parts, and the perform counted
/// every row with none rejected.
pub async fn drive<U, F>(
    s: &SessionRef<'_>,
    mut upload: U,
    schema: &Value,
) -> Result<Committed, TransferError>
where
    U: FnMut(String) -> F,
    F: Future<Output = Result<Moved, TransferError>>,
{
    let client = s.load.client;
    let mut done = Progress::default();
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
        if *role.get_or_insert(if s.load.resume_now {
            Role::Owner
        } else {
            Role::Waiter
        }) == Role::Waiter
        {
            s.load.phase.set(Step::WaitForOtherRun, None);
            match wait_for_owner(s, session).await? {
                Waited::Committed(c) => return Ok(c),
                Waited::Stale => role = Some(Role::Owner),
                Waited::Vanished => role = None,
            }
            continue;
        }
        if let Some(step) = Step::of_session(&session.status) {
            s.load.phase.set(step, session.job_id.as_deref());
        }
        match (&session.status, session.upload_frozen) {
            (Reported::Known(SessionState::Uploading), false) => {
                if done.uploaded.is_none() {
                    match upload_parts(s, &mut upload).await? {
                        Some(moved) => done.uploaded = Some(moved),
                        None => {
                            refused_upload(s, &mut done)?;
                            continue;
                        }
                    }
                }
                if let Some(moved) = &done.uploaded {
                    holds_our_parts(s, moved.parts).await?;
                }
                transition(s, SessionAction::Freeze, &mut conflicts).await?;
            }
            (Reported::Known(SessionState::Uploading), true) => {
                if done.trials >= s.load.poll.max_trials {
                    return Err(TransferError::PerformStuck {
                        session: s.name.to_string(),
                        trials: done.trials,
                    });
                }
                client
                    .append_schema(s.load.database, s.load.table, schema)
                    .await?;
                done.trials += u32::from(perform(s, &mut conflicts).await?);
                since = Instant::now();
            }
            (Reported::Known(SessionState::Ready), _) => {
                if let Err(e) = committable(s, &session, done.uploaded.as_ref()) {
                    // A session this run did not perform, found uncommittable, is an earlier
                    // run's failure: it is dropped (nothing of it was ever committed) and the
                    // export starts over, once.
                    if done.trials == 0 && done.dropped.is_none() {
                        tracing::warn!(session = s.name, error = %e, "dropping an earlier run's session that cannot be committed; starting over");
                        client.session_action(s.name, SessionAction::Delete).await?;
                        done.dropped = Some(format!("{e}; it was dropped and the export started over"));
                        done.uploaded = None;
                        continue;
                    }
                    return Err(e);
                }
                done.count_before = table_count(s).await?;
                // The commit is this run's once it is sent from `ready`: a 409 to its retry
                // after a lost answer is this commit's own doing.
                transition(s, SessionAction::Commit, &mut conflicts).await?;
                done.committed_here = true;
                since = Instant::now();
            }
            (Reported::Known(SessionState::Committed), _) => {
                return Ok(Committed {
                    rows: session.valid_records.unwrap_or(0).max(0) as u64,
                    uploaded: done.uploaded,
                    by_this_run: done.committed_here,
                    count_before: done.count_before,
                    job_id: session.job_id,
                    dropped: done.dropped,
                });
            }
            (Reported::Known(SessionState::Performing), _) => {
                if let Some(failed) = failed_perform(client, session.job_id.as_deref()).await {
                    // TD leaves a session `performing` when its perform job died; a new
                    // trial (perform again) is how it is moved on.
                    if done.trials >= s.load.poll.max_trials {
                        return Err(TransferError::PerformFailed {
                            session: s.name.to_string(),
                            stderr: failed,
                        });
                    }
                    tracing::warn!(session = s.name, job = ?session.job_id, output = %failed, "the perform job failed; performing again");
                    done.trials += u32::from(perform(s, &mut conflicts).await?);
                    since = Instant::now();
                    continue;
                }
                if since.elapsed() >= s.load.poll.max_perform {
                    return Err(TransferError::SessionBusy {
                        session: s.name.to_string(),
                        status: Reported::Known(SessionState::Performing),
                        waited_s: since.elapsed().as_secs(),
                    });
                }
                tokio::time::sleep(s.load.poll.session.after(since.elapsed())).await;
            }
            (Reported::Known(SessionState::Committing), _) => {
                tokio::time::sleep(s.load.poll.session.after(since.elapsed())).await;
            }
            (Reported::Other(other), _) => {
                return Err(TransferError::UnexpectedSession {
                    session: s.name.to_string(),
                    status: other.clone(),
                })
            }
        }
    }
}

/// An upload refused because the session was not open for parts: read its state again (it was
/// frozen by another run, or TD refused a retried request), a bounded number of times.
fn refused_upload(s: &SessionRef<'_>, done: &mut Progress) -> Result<(), TransferError> {
    done.refused_uploads += 1;
    if done.refused_uploads > s.load.poll.max_conflicts {
        return Err(TransferError::UnexpectedSession {
            session: s.name.to_string(),
            status: format!(
                "refusing parts ({} uploads answered 409 while it was open)",
                done.refused_uploads
            ),
        });
    }
    Ok(())
}

/// Sends perform once; returns whether TD took it (a new trial started). A lost answer is not
/// sent again blindly (TD would start a second trial): the caller reads the session, and
/// performs again only if it is still frozen — a bounded number of times.
async fn perform(s: &SessionRef<'_>, conflicts: &mut u32) -> Result<bool, TransferError> {
    match s.load.client.session_action(s.name, SessionAction::Perform).await {
        Err(e) if (e.is_ambiguous() || e.is_status(409)) && *conflicts < s.load.poll.max_conflicts => {
            *conflicts += 1;
            tracing::info!(session = s.name, error = %e, "the perform's answer was lost or refused; reading the session");
            Ok(false)
        }
        Err(e) => Err(gone(s, e)),
        Ok(()) => {
            *conflicts = 0;
            Ok(true)
        }
    }
}

/// The proof a `ready` session needs before it is committed: nothing rejected, and the perform
/// counted exactly the rows of the source (the job's `num_records`, else what this run read).
fn committable(s: &SessionRef<'_>, session: &Session, uploaded: Option<&Moved>) -> Result<(), TransferError> {
    nothing_rejected(s, session)?;
    let valid = session.valid_records.unwrap_or(0);
    let expected = s.load.rows_expected.or(uploaded.map(|m| m.rows));
    match expected {
        Some(expected) if valid != expected as i64 => Err(TransferError::CountMismatch {
            session: s.name.to_string(),
            valid,
            expected,
        }),
        _ => Ok(()),
    }
}

/// After this run's upload and before the freeze: the session holds exactly the parts this
/// export made (`part_0…part_{n-1}`), an earlier run's extra parts deleted. TD's part list names
/// parts but gives no sizes; the perform's record count checks their contents.
async fn holds_our_parts(s: &SessionRef<'_>, written: u64) -> Result<(), TransferError> {
    let ours: Vec<String> = (0..written).map(super::stream::part_name).collect();
    let mut found = s.load.client.parts(s.name).await.map_err(|e| gone(s, e))?;
    for part in found.iter().filter(|p| !ours.contains(p)) {
        s.load
            .client
            .delete_part(s.name, part)
            .await
            .map_err(|e| gone(s, e))?;
    }
    found.retain(|p| ours.contains(p));
    if found.len() != ours.len() {
        let missing: Vec<&String> = ours.iter().filter(|p| !found.contains(p)).collect();
        return Err(TransferError::SessionChanged {
            session: s.name.to_string(),
            detail: format!(
                "{} of its {} parts are missing ({missing:?}…)",
                missing.len(),
                ours.len()
            ),
        });
    }
    Ok(())
}

/// Fills the session, checking that every row of the source was read; `None` when TD refused a
/// part with 409 (the session was frozen, or TD refused a retried request): the caller reads
/// the state and carries on from it — the parts' names and bytes follow from the key, so an
/// upload sent again, or another run's, writes the same parts.
async fn upload_parts<U, F>(s: &SessionRef<'_>, upload: &mut U) -> Result<Option<Moved>, TransferError>
where
    U: FnMut(String) -> F,
    F: Future<Output = Result<Moved, TransferError>>,
{
    match upload(s.name.to_string()).await {
        Ok(moved) => match s.load.rows_expected {
            Some(expected) if moved.rows != expected => Err(TransferError::ResultCut {
                read: moved.rows,
                expected,
            }),
            _ => Ok(Some(moved)),
        },
        Err(e) if is_refused_part(&e) => {
            tracing::info!(session = s.name, error = %e, "a part was refused; reading the session again");
            Ok(None)
        }
        Err(TransferError::Stream(super::stream::StreamError::Upload { source, .. }))
            if source.is_status(404) =>
        {
            Err(gone(s, source))
        }
        Err(e) => Err(e),
    }
}

/// A 404 on a call about this run's own session: it was deleted under the run (by hand, or by
/// another run of the export cleaning up). Nothing of it was committed (a committed session is
/// never deleted): transient, and a rerun starts over. Any other error is passed on.
fn gone(s: &SessionRef<'_>, e: crate::td::TdError) -> TransferError {
    if e.is_status(404) {
        TransferError::SessionChanged {
            session: s.name.to_string(),
            detail: "it was deleted while this run worked on it".into(),
        }
    } else {
        e.into()
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
    announce_wait(s.name, &session, s.load.poll);
    loop {
        if session.status.is(SessionState::Committed) {
            return Ok(Waited::Committed(Committed {
                rows: session.valid_records.unwrap_or(0).max(0) as u64,
                uploaded: None,
                by_this_run: false,
                count_before: None,
                job_id: session.job_id,
                dropped: None,
            }));
        }
        if watch.observe(&session).await? {
            tracing::warn!(
                session = s.name,
                "the run that made the session is gone; taking its load over"
            );
            return Ok(Waited::Stale);
        }
        session = match s.load.client.session(s.name).await? {
            Some(next) => next,
            None => return Ok(Waited::Vanished),
        };
    }
}

/// Says, once, what a wait for another run is about and how long it lasts at most.
pub(super) fn announce_wait(name: &str, session: &Session, poll: &PollPolicy) {
    tracing::warn!(
        "another run of this export holds bulk import session '{name}' ({}): waiting for it to \
         finish; if the session stands still for {} s this run takes it over, and it gives up \
         (exit 3) after {} s. A run of this export that crashed on this machine is resumed at once, \
         without this wait.",
        session.status,
        poll.stale_after.as_secs(),
        poll.max_wait_for_owner.as_secs()
    );
}

/// A waiter's view of another run's session: whether it still moves.
pub(super) struct Watch<'a> {
    s: &'a SessionRef<'a>,
    started: tokio::time::Instant,
    still_since: tokio::time::Instant,
    /// When the wait last said where it stands.
    reported: tokio::time::Instant,
    last: Option<Fingerprint>,
}

impl<'a> Watch<'a> {
    pub(super) fn new(s: &'a SessionRef<'a>) -> Watch<'a> {
        let now = tokio::time::Instant::now();
        Watch {
            s,
            started: now,
            still_since: now,
            reported: now,
            last: None,
        }
    }

    /// Takes in the session as it is now, then waits one poll; `true` when it has stood still
    /// for `stale_after` (a perform or commit in flight is TD working, not standing still).
    pub(super) async fn observe(&mut self, session: &Session) -> Result<bool, TransferError> {
        let parts = match session.status {
            // A session deleted between the two reads: the next read of it shows it gone.
            Reported::Known(SessionState::Uploading) => match self.s.load.client.parts(self.s.name).await {
                Err(e) if e.is_status(404) => 0,
                listed => listed?.len(),
            },
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
        } else if self.still_since.elapsed() >= self.s.load.poll.stale_after {
            return Ok(true);
        }
        if self.reported.elapsed() >= self.s.load.poll.wait_report_every {
            self.reported = tokio::time::Instant::now();
            tracing::warn!(
                "still waiting for bulk import session '{}' ({}): unchanged for {} s (taken over \
                 at {} s), waited {} s of at most {} s",
                self.s.name,
                session.status,
                self.still_since.elapsed().as_secs(),
                self.s.load.poll.stale_after.as_secs(),
                self.started.elapsed().as_secs(),
                self.s.load.poll.max_wait_for_owner.as_secs()
            );
        }
        if self.started.elapsed() >= self.s.load.poll.max_wait_for_owner {
            return Err(TransferError::OwnedElsewhere {
                session: self.s.name.to_string(),
                status: session.status.clone(),
                waited_s: self.started.elapsed().as_secs(),
            });
        }
        tokio::time::sleep(self.s.load.poll.session.first).await;
        Ok(false)
    }
}

/// Whether the upload failed because TD refused a part with 409. Only the target's part
/// uploads count: a 409 from the source (reading the result) is no session event.
fn is_refused_part(e: &TransferError) -> bool {
    matches!(e, TransferError::Stream(super::stream::StreamError::Upload { source, .. }) if source.is_status(409))
}

/// A session of this name loading another table is not ours to resume or call done.
fn loads_our_table(s: &SessionRef<'_>, session: &Session) -> Result<(), TransferError> {
    let loads = (session.database.as_deref(), session.table.as_deref());
    if loads != (Some(s.load.database), Some(s.load.table)) && loads != (None, None) {
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
async fn transition(
    s: &SessionRef<'_>,
    action: SessionAction,
    conflicts: &mut u32,
) -> Result<(), TransferError> {
    match s.load.client.session_action(s.name, action).await {
        Err(e) if e.is_status(409) && *conflicts < s.load.poll.max_conflicts => {
            *conflicts += 1;
            tracing::info!(session = s.name, ?action, error = %e, "the session moved on; reading its state again");
            Ok(())
        }
        Err(e) => Err(gone(s, e)),
        Ok(()) => {
            *conflicts = 0;
            Ok(())
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
        s.load
            .made
            .session
            .fetch_or(created, std::sync::atomic::Ordering::Relaxed);
        if created {
            Created::Here
        } else {
            Created::Elsewhere
        }
    };
    match s
        .load
        .client
        .create_session(s.name, s.load.database, s.load.table)
        .await
    {
        Err(e) if e.is_status(404) => {
            make_table(s).await?;
            Ok(made(
                s.load
                    .client
                    .create_session(s.name, s.load.database, s.load.table)
                    .await?,
            ))
        }
        other => Ok(made(other?)),
    }
}

/// Creates the session's table, in a database that must exist (a write-only key cannot).
pub(super) async fn make_table(s: &SessionRef<'_>) -> Result<(), TransferError> {
    if !s
        .load
        .client
        .database_exists(s.load.database)
        .await
        .unwrap_or(true)
    {
        return Err(TransferError::DatabaseMissing {
            database: s.load.database.to_string(),
        });
    }
    match s.load.client.create_table(s.load.database, s.load.table).await {
        Err(e) if e.is_forbidden() => Err(TransferError::WriteOnlyCannotCreate {
            database: s.load.database.to_string(),
            table: s.load.table.to_string(),
        }),
        Err(e) => Err(e.into()),
        Ok(created) => {
            s.load
                .made
                .table
                .fetch_or(created, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }
    }
}

/// `db.table`, or None when it does not exist or this key may not read it (write-only).
pub(crate) async fn readable_table(
    client: &TdClient,
    db: &str,
    table: &str,
) -> Result<Option<Table>, TdError> {
    match client.table(db, table).await {
        Err(e) if e.is_forbidden() => Ok(None),
        found => found,
    }
}

/// The table's row count, or None when this key may not read it (write-only).
async fn table_count(s: &SessionRef<'_>) -> Result<Option<i64>, TransferError> {
    Ok(readable_table(s.load.client, s.load.database, s.load.table)
        .await?
        .map(|t| t.count))
}

/// The stderr of a perform job that failed (None while it runs, or if it cannot be read).
async fn failed_perform(client: &TdClient, job_id: Option<&str>) -> Option<String> {
    let job = client.job(job_id?).await.ok()?;
    job.has_failed().then(|| {
        job.failure_output()
            .unwrap_or_else(|| format!("perform job {}", job.status))
    })
}
