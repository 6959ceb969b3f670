//! Append, exactly once: the bulk-import session named after the idempotency key carries the
//! state across retries and reruns, and a committed session means "already done".

use std::future::Future;

use serde_json::Value;

use super::session::{drive, Committed, SessionRef};
use super::stream::Moved;
use super::{TransferError, Written};
use crate::td::TdClient;

/// Brings the session `s` (loading the target) to `committed`, then checks the target's count.
pub async fn append<U, F>(s: &SessionRef<'_>, schema: &Value, upload: U) -> Result<Written, TransferError>
where
    U: FnOnce(String) -> F,
    F: Future<Output = Result<Moved, TransferError>>,
{
    let committed = drive(s, upload, schema).await?;
    let verified = verify_append(s.client, s.database, s.table, &committed).await?;
    Ok(written(committed, verified))
}

/// What a committed session wrote.
pub(super) fn written(c: Committed, verified: bool) -> Written {
    Written {
        rows: c.rows,
        moved: c.uploaded.unwrap_or_default(),
        already_done: !c.by_this_run,
        verified,
        job_id: c.job_id,
    }
}

/// The target grew by exactly the committed rows (when this key may read its count).
async fn verify_append(
    client: &TdClient,
    database: &str,
    table: &str,
    c: &Committed,
) -> Result<bool, TransferError> {
    let Some(before) = c.count_before else {
        return Ok(false);
    };
    let Some(after) = client.table(database, table).await?.map(|t| t.count) else {
        return Ok(false);
    };
    let expected = before + c.rows as i64;
    if after != expected {
        return Err(TransferError::Verify {
            table: format!("{database}.{table}"),
            expected,
            found: after,
        });
    }
    Ok(true)
}
