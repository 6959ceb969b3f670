//! Moving the rows: transcoding, the upload pipe, and the append and replace protocols.

pub mod columns;
pub mod server;
pub mod session;
pub mod stream;
pub mod transcode;

use std::future::Future;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::td::{TdClient, TdError};
use session::{drive, Committed, SessionRef};
use stream::{Moved, StreamError};

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Td(#[from] TdError),
    #[error(transparent)]
    Stream(#[from] StreamError<TdError>),
    #[error(
        "bulk import '{session}' rejected {rejected} record(s) or part(s) ({valid} valid records); nothing \
         was committed. Inspect them with `td import:error_records {session}`"
    )]
    Rejected {
        session: String,
        rejected: i64,
        valid: i64,
    },
    #[error("bulk import '{session}' failed to perform: {stderr}")]
    PerformFailed { session: String, stderr: String },
    #[error("bulk import '{session}' is in an unexpected state '{status}'")]
    UnexpectedSession { session: String, status: String },
    #[error(
        "target table {database}.{table} does not exist and a write-only API key cannot create it: \
         create the table first, or use the target account's master API key"
    )]
    WriteOnlyCannotCreate { database: String, table: String },
    #[error("target database '{database}' does not exist: create it first (`td db:create {database}`)")]
    DatabaseMissing { database: String },
    #[error(
        "replace needs the target account's master API key: the key given is write-only \
         (TD answered 403 reading database '{database}'); use a master key, or mode: append"
    )]
    ReplaceNeedsMaster { database: String },
    #[error("verification failed: {table} should have {expected} row(s) after the export but has {found}")]
    Verify {
        table: String,
        expected: i64,
        found: i64,
    },
}

impl TransferError {
    /// Whether running the task again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            TransferError::Td(e) => e.is_transient(),
            TransferError::Stream(StreamError::Upload { source, .. }) => source.is_transient(),
            TransferError::Stream(StreamError::Transcode(transcode::TranscodeError::Io(e))) => {
                io_is_transient(e)
            }
            _ => false,
        }
    }
}

/// A failed download is transient as its TD error is; a result that is not valid gzip or msgpack
/// stays so on a rerun.
fn io_is_transient(e: &std::io::Error) -> bool {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<TdError>()) {
        Some(td) => td.is_transient(),
        None => e.kind() != std::io::ErrorKind::InvalidData,
    }
}

/// Names derived from the idempotency key: equal keys give equal names, on every machine.
pub fn key_hash(idempotency_key: &str) -> String {
    hex::encode(Sha256::digest(idempotency_key.as_bytes()))
}

/// The bulk-import session for an idempotency key: `tdre_<16 hex>`.
pub fn session_name(idempotency_key: &str) -> String {
    format!("tdre_{}", &key_hash(idempotency_key)[..16])
}

/// The temp table of a replace: `<table>_tdre_<8 hex>`, the base cut so the whole is ≤ 128.
pub fn temp_table_name(table: &str, idempotency_key: &str) -> String {
    let suffix = format!("_tdre_{}", &key_hash(idempotency_key)[..8]);
    let keep = table.len().min(128 - suffix.len());
    format!("{}{suffix}", &table[..keep])
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub rows: u64,
    pub moved: Moved,
    /// True when a committed session showed the work was done by an earlier run.
    pub already_done: bool,
    /// Whether the target's row count was checked.
    pub verified: bool,
}

/// Appends exactly once: the session named after the idempotency key carries the state across
/// retries and reruns.
pub async fn append<U, F>(
    client: &TdClient,
    database: &str,
    table: &str,
    session: &str,
    schema: &Value,
    upload: U,
) -> Result<Written, TransferError>
where
    U: FnOnce(String) -> F,
    F: Future<Output = Result<Moved, TransferError>>,
{
    let s = SessionRef {
        client,
        name: session,
        database,
        table,
    };
    let committed = drive(&s, upload, schema).await?;
    let verified = verify_append(client, database, table, &committed).await?;
    Ok(written(committed, verified))
}

fn written(c: Committed, verified: bool) -> Written {
    Written {
        rows: c.rows,
        moved: c.uploaded.unwrap_or_default(),
        already_done: !c.by_this_run,
        verified,
    }
}

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

/// Checks, before any data moves, that a replace can run: the key must read the database
/// (a write-only key cannot) and the database must exist.
pub async fn preflight_replace(client: &TdClient, database: &str) -> Result<(), TransferError> {
    match client.database_exists(database).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(TransferError::DatabaseMissing {
            database: database.to_string(),
        }),
        Err(e) if crate::td::is_forbidden(&e) => Err(TransferError::ReplaceNeedsMaster {
            database: database.to_string(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Replaces atomically: load a temp table through its own session, then one
/// `rename(temp → target, overwrite)`. The temp table is dropped on failure (best effort).
pub async fn replace<U, F>(
    client: &TdClient,
    database: &str,
    table: &str,
    idempotency_key: &str,
    schema: &Value,
    upload: U,
) -> Result<Written, TransferError>
where
    U: FnOnce(String) -> F,
    F: Future<Output = Result<Moved, TransferError>>,
{
    let temp = temp_table_name(table, idempotency_key);
    let session = session_name(idempotency_key);
    // A replace always starts over: stale leftovers of an earlier attempt go first.
    discard_session(client, &session).await?;
    client.delete_table(database, &temp).await?;
    let loaded = load_temp(client, database, &temp, &session, schema, upload).await;
    let outcome = match loaded {
        Ok(c) => swap_in(client, database, &temp, table).await.map(|()| c),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(committed) => {
            let _ = client
                .session_action(&session, crate::td::SessionAction::Delete)
                .await;
            let verified = verify_replace(client, database, table, committed.rows).await?;
            Ok(Written {
                already_done: false,
                ..written(committed, verified)
            })
        }
        Err(e) => {
            if let Err(cleanup) = client.delete_table(database, &temp).await {
                tracing::warn!(table = %temp, error = %cleanup, "could not drop the temp table");
            }
            Err(e)
        }
    }
}

/// Renames the loaded temp table over the target. `rename` cannot be sent again blindly, so
/// when its answer is lost the tables tell what happened: the temp table gone means it was
/// renamed; still there means it was not, and the rename is sent again.
async fn swap_in(client: &TdClient, database: &str, temp: &str, table: &str) -> Result<(), TransferError> {
    let mut tries = 0;
    loop {
        match client.rename_table(database, temp, table, true).await {
            Err(e) if e.is_ambiguous() && tries < 3 => {
                tries += 1;
                if client.table(database, temp).await?.is_none() {
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
    client: &TdClient,
    database: &str,
    temp: &str,
    session: &str,
    schema: &Value,
    upload: U,
) -> Result<Committed, TransferError>
where
    U: FnOnce(String) -> F,
    F: Future<Output = Result<Moved, TransferError>>,
{
    client.create_table(database, temp).await?;
    client.update_schema(database, temp, schema).await?;
    let s = SessionRef {
        client,
        name: session,
        database,
        table: temp,
    };
    drive(&s, upload, schema).await
}

/// Deletes a session left by an earlier attempt, waiting out a perform in flight.
async fn discard_session(client: &TdClient, session: &str) -> Result<(), TransferError> {
    for _ in 0..600 {
        match client.session(session).await? {
            None => return Ok(()),
            Some(s) if s.status == "performing" || s.status == "committing" => {
                tokio::time::sleep(crate::retry::scaled(std::time::Duration::from_secs(1))).await;
            }
            Some(_) => {
                client
                    .session_action(session, crate::td::SessionAction::Delete)
                    .await?;
                return Ok(());
            }
        }
    }
    Err(TransferError::UnexpectedSession {
        session: session.to_string(),
        status: "stuck performing".into(),
    })
}

async fn verify_replace(
    client: &TdClient,
    database: &str,
    table: &str,
    rows: u64,
) -> Result<bool, TransferError> {
    let Some(found) = client.table(database, table).await?.map(|t| t.count) else {
        return Err(TransferError::Verify {
            table: format!("{database}.{table}"),
            expected: rows as i64,
            found: 0,
        });
    };
    if found != rows as i64 {
        return Err(TransferError::Verify {
            table: format!("{database}.{table}"),
            expected: rows as i64,
            found,
        });
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_result_is_permanent_and_a_cut_download_transient() {
        use std::io::{Error, ErrorKind};
        let transcode =
            |e: Error| TransferError::Stream(StreamError::Transcode(transcode::TranscodeError::Io(e)));
        assert!(!transcode(Error::new(ErrorKind::InvalidData, "corrupt deflate stream")).is_transient());
        assert!(transcode(Error::from(ErrorKind::UnexpectedEof)).is_transient());
        let refused = TdError::Api {
            call: "GET /v3/job/result/1".into(),
            status: 404,
            message: "gone".into(),
            conflicts_with: None,
        };
        assert!(!transcode(Error::other(refused)).is_transient());
    }

    #[test]
    fn temp_table_names_stay_within_128_characters() {
        let long = "t".repeat(128);
        let name = temp_table_name(&long, "key");
        assert_eq!(name.len(), 128);
        assert!(name.ends_with(&format!("_tdre_{}", &key_hash("key")[..8])));
        assert_eq!(
            temp_table_name("output_table", "key"),
            format!("output_table_tdre_{}", &key_hash("key")[..8])
        );
    }

    #[test]
    fn session_names_are_deterministic_and_valid() {
        let a = session_name("job 1 → testdb.t append");
        assert_eq!(a, session_name("job 1 → testdb.t append"));
        assert_ne!(a, session_name("job 2 → testdb.t append"));
        assert!(
            a.len() <= 128
                && a.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        );
    }
}
