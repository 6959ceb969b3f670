//! Append, exactly once: the bulk-import session named after the idempotency key carries the
//! state across retries and reruns, and a committed session means "already done".

use std::future::Future;

use serde_json::Value;

use super::session::{drive, make_table, Committed, SessionRef};
use super::stream::Moved;
use super::verify::{confirm_count, Verification};
use super::Made;
use super::{TransferError, Written};
use crate::td::{SessionAction, TdClient, TdError};

/// Brings the session `s` (loading the target) to `committed`, then reads the target's count
/// for a while to confirm it (TD's counts lag: a count that has not caught up is no failure).
pub(crate) async fn append<U, F>(
    s: &SessionRef<'_>,
    schema: &Value,
    upload: U,
) -> Result<Written, TransferError>
where
    U: FnMut(String) -> F,
    F: Future<Output = Result<Moved, TransferError>>,
{
    let committed = drive(s, upload, schema).await?;
    let verification = if committed.by_this_run {
        let count = match committed.count_before {
            Some(before) => {
                let expected = before + committed.rows as i64;
                confirm_count(
                    s.load.client,
                    s.load.database,
                    s.load.table,
                    expected,
                    s.load.poll,
                )
                .await
            }
            None => None,
        };
        Verification::of(&committed, s.load.rows_expected, committed.count_before, count)
    } else {
        Verification::committed(Some(committed.rows as i64))
    };
    Ok(written(committed, Some(verification)))
}

/// An empty result (the source job's `num_records` is 0): no session — embulk-output-td skips
/// perform and commit when it has no part (PR #63) — only the table, made if missing, with the
/// result's columns added.
pub(crate) async fn append_empty(s: &SessionRef<'_>, schema: &Value) -> Result<Written, TransferError> {
    if s.load
        .client
        .table(s.load.database, s.load.table)
        .await?
        .is_none()
    {
        make_table(s).await?;
    }
    s.load
        .client
        .append_schema(s.load.database, s.load.table, schema)
        .await?;
    Ok(nothing_to_write(None))
}

/// What an empty result wrote: nothing, on TD's word (the job's `num_records` is 0).
pub(super) fn nothing_to_write(count: Option<(i64, Option<i64>)>) -> Written {
    let empty = Committed::empty();
    Written {
        verification: Some(Verification::of(&empty, Some(0), None, count)),
        ..written(empty, None)
    }
}

/// What a committed session wrote.
pub(super) fn written(c: Committed, verification: Option<Verification>) -> Written {
    Written {
        rows: c.rows,
        moved: c.uploaded.unwrap_or_default(),
        already_done: !c.by_this_run,
        verification,
        job_id: c.job_id,
        dropped: c.dropped,
    }
}

/// Drops an append's session unless it committed meanwhile, and the target table when this
/// run made it and it is empty. Returns whether the session is gone.
pub(crate) async fn drop_append(
    client: &TdClient,
    database: &str,
    table: &str,
    session: &str,
    made: &Made,
) -> Result<bool, TransferError> {
    if client
        .session(session)
        .await?
        .is_some_and(|s| s.status.has_committed())
    {
        return Ok(false);
    }
    client
        .session_action(session, SessionAction::Delete)
        .await
        .or_else(gone_is_fine)?;
    // Rows reach the table only by a commit, and this run committed nothing: an empty table
    // it made is dropped, whatever its (lagging) count says of other writers.
    if made.table()
        && client
            .table(database, table)
            .await?
            .is_some_and(|table| table.count == 0)
    {
        client.delete_table(database, table).await?;
    }
    Ok(true)
}

/// A delete whose thing is already gone has done its job.
fn gone_is_fine(e: TdError) -> Result<(), TdError> {
    if e.is_status(404) {
        Ok(())
    } else {
        Err(e)
    }
}
