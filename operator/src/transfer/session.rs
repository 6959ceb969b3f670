//! Drives a bulk-import session from whatever state it is in to `committed`, so that a rerun
//! resumes where the last run stopped (uploading → frozen → performing → ready → committing →
//! committed) and a committed session means "already done".

use std::future::Future;

use serde_json::Value;

use super::stream::Moved;
use super::TransferError;
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
    let mut acted = false;
    let mut count_before = None;
    let mut wait = s.poll.session.first;
    let mut conflicts = 0u32;
    loop {
        let Some(session) = client.session(s.name).await? else {
            create(s).await?;
            acted = true;
            continue;
        };
        loads_our_table(s, &session)?;
        match (&session.status, session.upload_frozen) {
            (SessionStatus::Uploading, false) => {
                if let Some(upload) = upload.take() {
                    let moved = upload(s.name.to_string()).await?;
                    prune_parts(s, moved.parts).await?;
                    uploaded = Some(moved);
                }
                transition(s, SessionAction::Freeze, &mut conflicts).await?;
                acted = true;
            }
            (SessionStatus::Uploading, true) => {
                client.append_schema(s.database, s.table, schema).await?;
                transition(s, SessionAction::Perform, &mut conflicts).await?;
                acted = true;
            }
            (SessionStatus::Ready, _) => {
                nothing_rejected(s, &session)?;
                count_before = table_count(s).await?;
                transition(s, SessionAction::Commit, &mut conflicts).await?;
                acted = true;
            }
            (SessionStatus::Committed, _) => {
                return Ok(Committed {
                    rows: session.valid_records.unwrap_or(0).max(0) as u64,
                    uploaded,
                    by_this_run: acted,
                    count_before,
                    job_id: session.job_id,
                });
            }
            (SessionStatus::Performing, _) => {
                if let Some(stderr) = failed_perform(client, session.job_id.as_deref()).await {
                    return Err(TransferError::PerformFailed {
                        session: s.name.to_string(),
                        stderr,
                    });
                }
                tokio::time::sleep(wait).await;
                wait = s.poll.session.next(wait);
            }
            (SessionStatus::Committing, _) => {
                tokio::time::sleep(wait).await;
                wait = s.poll.session.next(wait);
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
async fn transition(
    s: &SessionRef<'_>,
    action: SessionAction,
    conflicts: &mut u32,
) -> Result<(), TransferError> {
    match s.client.session_action(s.name, action).await {
        Err(e) if e.is_status(409) && *conflicts < s.poll.max_conflicts => {
            *conflicts += 1;
            tracing::info!(session = s.name, ?action, error = %e, "the session moved on; reading its state again");
            Ok(())
        }
        Err(e) => Err(e.into()),
        Ok(()) => {
            *conflicts = 0;
            Ok(())
        }
    }
}

/// Creates the session; if the table is missing, creates it first (master key only).
async fn create(s: &SessionRef<'_>) -> Result<(), TransferError> {
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
                Ok(()) => Ok(s.client.create_session(s.name, s.database, s.table).await?),
            }
        }
        other => Ok(other?),
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
