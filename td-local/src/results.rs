//! Saved result destinations (docs/td-api.md §7): `td result:create NAME URL`, listed, deleted, looked
//! up by name as a connection, and named by a job's `result=NAME[:TABLE]` or an export's
//! `result_connection_id`. A saved result is also the connection its id names.
//!
//! A connection made in TD's console (an "authentication" of type treasure_data) is one more
//! kind: `connections/lookup` finds it and `result_connection_id` uses it, but `result/list`
//! does not show it and `result/delete` cannot remove it: its key is held by TD alone. td-local
//! keeps both in one table (`console` tells them apart), so ids never collide.

use rusqlite::{params, Connection, OptionalExtension};
use td_model::name::check_name;
use td_model::TdUrl;

use crate::error::{Error, Result};

/// The form of a td:// result URL, for messages.
pub(crate) const URL_FORM: &str = "td://[APIKEY]@[HOST]/DATABASE/TABLE[?mode=append|replace]";

/// Where a job's or an export's rows are to go, as TD takes it: `result` (a td:// URL or a saved
/// result's `NAME[:TABLE]`), or `result_connection_id` (a saved result or console connection)
/// with `result_connection_settings` (JSON text) overriding its parts. `job/issue` and
/// `job/result_export` take the same three (td-client-java `TDJobRequest` and
/// `TDExportResultJobRequest`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultRequest {
    pub result: Option<String>,
    pub connection_id: Option<String>,
    pub settings: Option<String>,
}

impl ResultRequest {
    /// From a job's stored columns (`result_url` is "" when none was given).
    pub fn new(result: &str, connection_id: &Option<String>, settings: &Option<String>) -> ResultRequest {
        ResultRequest {
            result: Some(result.to_string()).filter(|r| !r.is_empty()),
            connection_id: connection_id.clone().filter(|c| !c.is_empty()),
            settings: settings.clone().filter(|s| !s.is_empty()),
        }
    }

    /// No output asked for: the result stays with the job.
    pub fn is_empty(&self) -> bool {
        self.result.is_none() && self.connection_id.is_none()
    }

    /// The scheme of a `result` URL that is not td:// (`s3`, `mysql`, …): TD takes such a job and
    /// its output fails when it runs; td-local writes only to TD.
    pub fn foreign_scheme(&self) -> Option<&str> {
        let result = self.result.as_deref()?;
        let (scheme, _) = result.split_once("://")?;
        (scheme != "td").then_some(scheme)
    }
}

/// A saved result as stored; `url` holds its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SavedResult {
    pub id: i64,
    pub name: String,
    pub url: String,
}

/// Saved result names: 1–128 letters, digits, `_` and `-` (TD's exact rule is unconfirmed).
fn check_result_name(name: &str) -> Result<()> {
    let ok = (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid result name '{name}': use 1 to 128 letters, digits, '_' and '-'"
        )))
    }
}

/// td:// URLs are checked now (syntax and names; the key when used). TD saves many other kinds
/// of destination, so other schemes are kept as given: td-local refuses them only when an export
/// uses them.
fn check_saved_url(url: &str) -> Result<()> {
    match url.split_once("://") {
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("td") => {
            TdUrl::parse(url).map(drop).map_err(Error::from)
        }
        Some((scheme, _)) if !scheme.is_empty() => Ok(()),
        _ => Err(Error::invalid(
            "invalid url: expected td://[APIKEY]@[HOST]/DATABASE[/TABLE] or another scheme://…",
        )),
    }
}

/// Saves a destination: Invalid for a bad name or URL, Conflict if the name is taken.
pub(crate) fn create(conn: &Connection, account_id: i64, name: &str, url: &str) -> Result<()> {
    check_saved_url(url)?;
    insert(conn, account_id, name, url, false).map(drop)
}

/// Records a connection as TD's console makes one: a td:// URL whose key picks the account the
/// rows go to (its database and table may be left to the export's settings). Returns its id.
pub(crate) fn create_console_connection(
    conn: &Connection,
    account_id: i64,
    name: &str,
    url: &str,
) -> Result<i64> {
    TdUrl::parse(url)?;
    insert(conn, account_id, name, url, true)
}

/// Stores a saved result or a console connection under a free name; returns its id.
fn insert(conn: &Connection, account_id: i64, name: &str, url: &str, console: bool) -> Result<i64> {
    check_result_name(name)?;
    let inserted = conn.execute(
        "INSERT OR IGNORE INTO saved_results (account_id, name, url, console) VALUES (?1, ?2, ?3, ?4)",
        params![account_id, name, url, console],
    )?;
    if inserted == 0 {
        return Err(Error::conflict(format!("result '{name}' already exists")));
    }
    Ok(conn.last_insert_rowid())
}

/// The account's saved results, by name (console connections are not among them).
pub(crate) fn list(conn: &Connection, account_id: i64) -> Result<Vec<SavedResult>> {
    let mut stmt = conn.prepare(
        "SELECT id, name, url FROM saved_results WHERE account_id = ?1 AND console = 0 ORDER BY name",
    )?;
    let rows = stmt.query_map(params![account_id], saved_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn saved_row(r: &rusqlite::Row) -> rusqlite::Result<SavedResult> {
    Ok(SavedResult {
        id: r.get(0)?,
        name: r.get(1)?,
        url: r.get(2)?,
    })
}

/// Deletes a saved result (a console connection is not one).
pub(crate) fn delete(conn: &Connection, account_id: i64, name: &str) -> Result<()> {
    let deleted = conn.execute(
        "DELETE FROM saved_results WHERE account_id = ?1 AND name = ?2 AND console = 0",
        params![account_id, name],
    )?;
    if deleted == 0 {
        return Err(Error::not_found(format!("result '{name}' does not exist")));
    }
    Ok(())
}

fn by_name(conn: &Connection, account_id: i64, name: &str) -> Result<Option<SavedResult>> {
    Ok(conn
        .query_row(
            "SELECT id, name, url FROM saved_results WHERE account_id = ?1 AND name = ?2",
            params![account_id, name],
            saved_row,
        )
        .optional()?)
}

/// The id of the connection named `name` (`connections/lookup`).
pub(crate) fn connection_id(conn: &Connection, account_id: i64, name: &str) -> Result<i64> {
    by_name(conn, account_id, name)?
        .map(|saved| saved.id)
        .ok_or_else(|| Error::not_found(format!("connection '{name}' does not exist")))
}

/// The URL of the connection with this id (`result_connection_id`).
pub(crate) fn connection_url(conn: &Connection, account_id: i64, id: i64) -> Result<TdUrl> {
    let url: String = conn
        .query_row(
            "SELECT url FROM saved_results WHERE id = ?1 AND account_id = ?2",
            params![id, account_id],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| Error::not_found(format!("result connection {id} does not exist")))?;
    Ok(TdUrl::parse(&url)?)
}

/// A `result=` value as a [`TdUrl`]: a URL, or a saved result's `NAME[:TABLE]` (`td result:create`
/// + `--result NAME:TABLE` means table TABLE in the saved destination's database).
pub(crate) fn destination(conn: &Connection, account_id: i64, value: &str) -> Result<TdUrl> {
    if value.contains("://") {
        return Ok(TdUrl::parse(value)?);
    }
    let (name, table) = value.split_once(':').unwrap_or((value, ""));
    let is_name = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    // Anything else may be a mistyped URL holding a key: say what is expected, never echo it.
    if name.is_empty() || !is_name(name) || !is_name(table) {
        return Err(Error::invalid(format!(
            "invalid result: expected {URL_FORM} or the name of a saved result (NAME or NAME:TABLE)"
        )));
    }
    let saved = by_name(conn, account_id, name)?
        .ok_or_else(|| Error::not_found(format!("saved result '{name}' does not exist")))?;
    let mut parsed = TdUrl::parse(&saved.url)?;
    if !table.is_empty() {
        check_name("table", table)?;
        parsed.table = Some(table.to_string());
    }
    Ok(parsed)
}
