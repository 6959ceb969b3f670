//! Replace, atomically: load a temp table `<table>_tdre_<8 hex>` through its own session, give it
//! the result's schema, then one `rename(temp → target, overwrite=true)`, so a reader sees the
//! old rows or the new rows, never a mix or an empty table.

use std::future::Future;

use serde_json::Value;

use super::append::written;
use super::session::{drive, Committed, SessionRef};
use super::stream::Moved;
use super::{session_name, temp_table_name, TransferError, Written};
use crate::retry::PollPolicy;
use crate::td::{SessionAction, TdClient};

/// The table a replace writes, and how it waits.
pub struct ReplaceTarget<'a> {
    pub client: &'a TdClient,
    pub database: &'a str,
    pub table: &'a str,
    pub poll: &'a PollPolicy,
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
/// (best effort).
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
    // A replace always starts over: stale leftovers of an earlier attempt go first.
    discard_session(t, &session).await?;
    t.client.delete_table(t.database, &temp).await?;
    let loaded = load_temp(t, &temp, &session, schema, upload).await;
    let outcome = match loaded {
        Ok(c) => swap_in(t, &temp).await.map(|()| c),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(committed) => {
            let _ = t.client.session_action(&session, SessionAction::Delete).await;
            let verified = verify_replace(t, committed.rows).await?;
            Ok(Written {
                already_done: false,
                ..written(committed, verified)
            })
        }
        Err(e) => {
            if let Err(cleanup) = t.client.delete_table(t.database, &temp).await {
                tracing::warn!(table = %temp, error = %cleanup, "could not drop the temp table");
            }
            Err(e)
        }
    }
}

/// Renames the loaded temp table over the target. `rename` cannot be sent again blindly, so
/// when its answer is lost the tables tell what happened: the temp table gone means it was
/// renamed; still there means it was not, and the rename is sent again.
async fn swap_in(t: &ReplaceTarget<'_>, temp: &str) -> Result<(), TransferError> {
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

async fn load_temp<U, F>(
    t: &ReplaceTarget<'_>,
    temp: &str,
    session: &str,
    schema: &Value,
    upload: U,
) -> Result<Committed, TransferError>
where
    U: FnOnce(String) -> F,
    F: Future<Output = Result<Moved, TransferError>>,
{
    t.client.create_table(t.database, temp).await?;
    t.client.update_schema(t.database, temp, schema).await?;
    let s = SessionRef {
        client: t.client,
        name: session,
        database: t.database,
        table: temp,
        poll: t.poll,
    };
    drive(&s, upload, schema).await
}

/// Deletes a session left by an earlier attempt, waiting out a perform or commit in flight.
async fn discard_session(t: &ReplaceTarget<'_>, session: &str) -> Result<(), TransferError> {
    let started = tokio::time::Instant::now();
    loop {
        match t.client.session(session).await? {
            None => return Ok(()),
            Some(s) if s.status.is_busy() => {
                if started.elapsed() >= t.poll.settle {
                    return Err(TransferError::SessionBusy {
                        session: session.to_string(),
                        status: s.status,
                        waited_s: t.poll.settle.as_secs(),
                    });
                }
                tokio::time::sleep(t.poll.session.first).await;
            }
            Some(_) => {
                t.client.session_action(session, SessionAction::Delete).await?;
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
