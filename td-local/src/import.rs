//! Streaming import (docs/td-api.md §4): a gzip'd msgpack body into a table.
//!
//! A body's rows go in with the import id in one transaction, decoded and stored a batch at a
//! time: the first bad record rolls the whole body back (all or nothing), a repeated
//! `import_with_id` is stored once, and memory holds one batch whatever the body inflates to
//! (which the route has already checked against the limits).

use flate2::read::MultiGzDecoder;
use md5::{Digest, Md5};
use rusqlite::params;

use crate::catalog::table_id;
use crate::error::{Error, Result};
use crate::inflate::Capped;
use crate::limits::{Limits, BATCH_BYTES, BATCH_ROWS};
use crate::records::{decode_record, insert_rows, read_records, to_row};
use crate::store::Store;

/// The one import format TD's clients send.
pub(crate) const IMPORT_FORMAT: &str = "msgpack.gz";

/// Where an import goes, and its id if the caller gave one.
#[derive(Debug, Clone)]
pub(crate) struct ImportTarget {
    pub db: String,
    pub table: String,
    pub unique_id: Option<String>,
}

/// What an import did.
#[derive(Debug, Clone)]
pub(crate) struct Imported {
    /// md5 of the body as received (the Go client checks it).
    pub md5_hex: String,
    pub rows: usize,
    /// False when `unique_id` was seen before and nothing was stored.
    pub stored: bool,
}

/// Refuses any format but msgpack.gz (before the body is read).
pub(crate) fn check_format(format: &str) -> Result<()> {
    if format == IMPORT_FORMAT {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "unsupported import format '{format}': use {IMPORT_FORMAT}"
        )))
    }
}

/// Decodes `body` and stores its rows in the target (blocking: call it from a blocking task).
/// A record over the limits is 413 (TooLarge), one that is not a map with an integer `time`
/// 400; either stores nothing.
pub(crate) fn import(
    store: &Store,
    limits: &Limits,
    account_id: i64,
    target: &ImportTarget,
    body: &[u8],
) -> Result<Imported> {
    let md5_hex = hex::encode(Md5::digest(body));
    let mut rows = 0;
    let stored = store.write(|tx| {
        let id = table_id(tx, account_id, &target.db, &target.table)?;
        if let Some(unique_id) = &target.unique_id {
            let first_time = tx.execute(
                "INSERT OR IGNORE INTO import_ids (table_id, unique_id) VALUES (?1, ?2)",
                params![id, unique_id],
            )? == 1;
            if !first_time {
                return Ok(false);
            }
        }
        if body.is_empty() {
            return Ok(true);
        }
        let (mut batch, mut batch_bytes) = (Vec::new(), 0);
        let inflated = Capped::new(MultiGzDecoder::new(body), limits.import_inflated_bytes);
        read_records(inflated, limits.record, |index, raw| {
            let value = decode_record(index, raw)?;
            batch.push(to_row(index, value).map_err(|e| Error::bad_request(e.to_string()))?);
            batch_bytes += raw.len();
            if batch.len() == BATCH_ROWS || batch_bytes >= BATCH_BYTES {
                insert_rows(tx, id, &batch)?;
                rows += batch.len();
                batch.clear();
                batch_bytes = 0;
            }
            Ok(())
        })?;
        insert_rows(tx, id, &batch)?;
        rows += batch.len();
        Ok(true)
    })?;
    Ok(Imported {
        md5_hex,
        rows,
        stored,
    })
}
