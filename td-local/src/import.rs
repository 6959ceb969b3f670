//! Streaming import (td-api.md §4): a gzip'd msgpack body into a table.
//!
//! A body is decoded completely before anything is stored (all or nothing), and its rows go in
//! with the import id in one transaction, so a repeated `import_with_id` is stored once.

use md5::{Digest, Md5};
use rusqlite::params;

use crate::catalog::table_id;
use crate::error::{Error, Result};
use crate::records::{decode_import, insert_rows};
use crate::store::Store;

/// The one import format TD's clients send.
pub const IMPORT_FORMAT: &str = "msgpack.gz";

/// Where an import goes, and its id if the caller gave one.
#[derive(Debug, Clone)]
pub struct ImportTarget {
    pub db: String,
    pub table: String,
    pub unique_id: Option<String>,
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct Imported {
    /// md5 of the body as received (the Go client checks it).
    pub md5_hex: String,
    pub rows: usize,
    /// False when `unique_id` was seen before and nothing was stored.
    pub stored: bool,
}

/// Refuses any format but msgpack.gz (before the body is read).
pub fn check_format(format: &str) -> Result<()> {
    if format == IMPORT_FORMAT {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "unsupported import format '{format}': use {IMPORT_FORMAT}"
        )))
    }
}

/// Decodes `body` and stores its rows in the target (blocking: call it from a blocking task).
pub fn import(store: &Store, account_id: i64, target: &ImportTarget, body: &[u8]) -> Result<Imported> {
    let md5_hex = hex::encode(Md5::digest(body));
    let rows = decode_import(body)?;
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
        insert_rows(tx, id, &rows)?;
        Ok(true)
    })?;
    Ok(Imported {
        md5_hex,
        rows: rows.len(),
        stored,
    })
}
