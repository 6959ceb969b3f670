//! Server-side result output: what TD's td:// connector does when a job is issued with
//! `result=td://…` or exported with `POST /v3/job/result_export/:id`.
//!
//! The td:// URL is td-model's [`TdUrl`]. Every host is this server; the key (before the `@` or
//! as `apikey=`) picks the target account (none = the caller's own). API keys never leave this
//! module: errors and logs show URLs as `td://***@host/db/t`.

use std::fs::File;
use std::path::Path;

use flate2::read::MultiGzDecoder;
use rusqlite::Connection;
use serde_json::{Map, Value};
use td_model::name::{check_name, is_reserved_column};
use td_model::schema::{parse_result_schema, ResultColumn, TableColumn};
use td_model::settings;
use td_model::time::{parse_time, row_time, RowTime, TimeCandidate};
use td_model::types::{is_boolean_type, td_type};
use td_model::{Mode, TdUrl};

use crate::accounts::Accounts;
use crate::catalog::{self, database_id, ensure_table};
use crate::error::{Error, Result};
use crate::jobs;
use crate::records::{self, Row};
use crate::results::{self, ResultRequest, URL_FORM};
use crate::store::Store;

/// Where a job's rows go and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputTarget {
    /// The account that owns the target table (picked by the URL's key; the job's own when none).
    pub account_id: i64,
    /// Whether the key that picked it is write-only (replace then fails).
    pub write_only: bool,
    pub database: String,
    pub table: String,
    pub mode: Mode,
    /// `time` for every row when the result has no `time` column.
    pub time: Option<i64>,
    /// The result column each row's `time` is read from (seconds or a timestamp), when set.
    pub time_column: Option<String>,
    /// The URL it was resolved from, kept only to print the target (every host is this server).
    url: TdUrl,
}

impl OutputTarget {
    /// The target as a td:// URL with the key masked and the mode spelled out, safe for logs,
    /// messages and job rows.
    pub fn masked_url(&self) -> String {
        let mut shown = self.url.clone();
        shown.mode = Some(self.mode);
        shown.to_string()
    }
}

/// Where an export goes: a td:// URL (saved or given) with what the export's settings add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Destination {
    pub url: TdUrl,
    /// `result_connection_settings.time_column`.
    pub time_column: Option<String>,
}

impl From<TdUrl> for Destination {
    fn from(url: TdUrl) -> Destination {
        Destination {
            url,
            time_column: None,
        }
    }
}

/// Resolves the URL's key to an account and checks that it names a table.
pub(crate) fn resolve(
    destination: &Destination,
    accounts: &Accounts,
    caller_account_id: i64,
) -> Result<OutputTarget> {
    let url = &destination.url;
    let (account_id, write_only) = match &url.api_key {
        None => (caller_account_id, false),
        Some(key) => {
            let owner = accounts
                .lookup(key.expose())
                .ok_or_else(|| Error::Unauthorized("invalid API key in result URL".into()))?;
            (owner.account_id(), owner.write_only)
        }
    };
    let named = |part: &Option<String>, what: &str| {
        part.clone()
            .ok_or_else(|| Error::invalid(format!("result URL {url} names no {what} (expected {URL_FORM})")))
    };
    Ok(OutputTarget {
        account_id,
        write_only,
        database: named(&url.database, "database")?,
        table: named(&url.table, "table")?,
        mode: url.mode.unwrap_or_default(),
        time: url.time,
        time_column: destination.time_column.clone(),
        url: url.clone(),
    })
}

/// Applies a result connection's settings (JSON object text) to its URL: `user_database_name`
/// (or `database`), `user_table_name` (or `table`), `mode`, `time` and `time_column`, what TD's
/// td connector reads (docs/td-api.md §7; `time_column` as digdag's `result_settings` passes it on,
/// its support by TD's connector unconfirmed). Other keys belong to other connectors' settings
/// and are ignored, as TD's open settings object allows.
///
/// That includes `api_key` and `api_hostname`: the connection holds the key, and the rows go to
/// the account of the connection's key. Whether TD lets a key in the settings override the
/// connection's is unconfirmed; ignoring it means a settings object can never redirect writes
/// into another account than the connection names.
pub(crate) fn apply_settings(destination: &mut Destination, settings: &str) -> Result<()> {
    let url = &mut destination.url;
    let what = "result_connection_settings";
    let value: Value = serde_json::from_str(settings)
        .map_err(|e| Error::invalid(format!("{what} must be a JSON object: {e}")))?;
    let Value::Object(map) = value else {
        return Err(Error::invalid(format!(
            "{what} must be a JSON object, got {value}"
        )));
    };
    let text = |keys: &[&str]| -> Result<Option<String>> {
        for &key in keys {
            match map.get(key) {
                None | Some(Value::Null) => continue,
                Some(Value::String(s)) => return Ok(Some(s.clone())),
                Some(other) => {
                    return Err(Error::invalid(format!(
                        "{what}.{key} must be a string, got {other}"
                    )))
                }
            }
        }
        Ok(None)
    };
    if let Some(db) = text(&settings::spellings(settings::DATABASE))? {
        check_name("database", &db)?;
        url.database = Some(db);
    }
    if let Some(table) = text(&settings::spellings(settings::TABLE))? {
        check_name("table", &table)?;
        url.table = Some(table);
    }
    if let Some(mode) = text(&["mode"])? {
        url.mode = Some(
            Mode::parse(&mode)
                .ok_or_else(|| Error::invalid(format!("{what}.mode `{mode}` is not append or replace")))?,
        );
    }
    match map.get("time") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) => {
            url.time = Some(
                n.as_i64()
                    .ok_or_else(|| Error::invalid(format!("{what}.time must be whole seconds, got {n}")))?,
            )
        }
        Some(Value::String(s)) => {
            url.time = Some(parse_time(s).map_err(|e| Error::invalid(format!("{what}.time `{s}` {e}")))?)
        }
        Some(other) => {
            return Err(Error::invalid(format!(
                "{what}.time must be unix seconds or a timestamp, got {other}"
            )))
        }
    }
    if let Some(column) = text(&["time_column"])? {
        destination.time_column = Some(column);
    }
    Ok(())
}

/// Where the rows of a job (`job/issue`) or an export (`job/result_export`) of `account_id` go:
/// one path for both, as TD's connector is one.
pub(crate) fn target(
    conn: &Connection,
    accounts: &Accounts,
    account_id: i64,
    request: &ResultRequest,
) -> Result<OutputTarget> {
    resolve(&destination(conn, account_id, request)?, accounts, account_id)
}

/// The destination asked for: `result` (a td:// URL or a saved result's `NAME[:TABLE]`), or
/// `result_connection_id` (a saved result) with `result_connection_settings` overriding its parts.
pub(crate) fn destination(
    conn: &Connection,
    account_id: i64,
    request: &ResultRequest,
) -> Result<Destination> {
    let (result, connection_id, settings) = (
        request.result.as_deref(),
        request.connection_id.as_deref(),
        request.settings.as_deref(),
    );
    if let Some(url) = result {
        return Ok(results::destination(conn, account_id, url)?.into());
    }
    let Some(id) = connection_id else {
        return Err(Error::invalid(
            "either 'result' (a td:// URL) or 'result_connection_id' with 'result_connection_settings' is required",
        ));
    };
    let id: i64 = id
        .trim()
        .parse()
        .map_err(|_| Error::invalid(format!("result_connection_id must be an integer, got '{id}'")))?;
    let mut destination = Destination::from(results::connection_url(conn, account_id, id)?);
    if let Some(settings) = settings {
        apply_settings(&mut destination, settings)?;
    }
    Ok(destination)
}

/// What the writer needs to know about the source job.
struct SourceJob {
    columns: Vec<ResultColumn>,
    start_at: i64,
}

fn load_source_job(conn: &Connection, job_id: i64) -> Result<SourceJob> {
    let job = jobs::get(conn, job_id)?;
    let schema = job
        .hive_result_schema
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::invalid(format!("job {job_id} has no result schema")))?;
    let columns = parse_result_schema(&schema)
        .map_err(|e| Error::internal(format!("job {job_id} has a malformed hive_result_schema: {e}")))?;
    Ok(SourceJob {
        columns,
        start_at: job.start_at.unwrap_or(job.created_at),
    })
}

/// Where each row's `time` comes from.
#[derive(Debug, Clone, Copy)]
enum TimeFrom {
    /// The result's integer `time` column (a NULL in it takes the fallback).
    TimeColumn(usize, i64),
    /// The `time_column` setting's column: seconds or a timestamp, read for every row.
    Parsed(usize),
    /// The target's `time` setting or the source job's start.
    Fixed(i64),
}

/// Turns result arrays into rows: keys from the column names, `time` from `time_column` if set,
/// else from an integer `time` column, else the fallback (the target's `time` setting or the
/// source job's start).
struct RowMapper {
    names: Vec<String>,
    booleans: Vec<bool>,
    time: TimeFrom,
}

impl RowMapper {
    fn new(columns: &[ResultColumn], fallback_time: i64, time_column: Option<&str>) -> Result<RowMapper> {
        let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
        let candidates: Vec<TimeCandidate<'_>> = columns
            .iter()
            .map(|c| TimeCandidate {
                name: &c.name,
                target: &c.name,
                result_type: &c.result_type,
            })
            .collect();
        let time = match row_time(&candidates, time_column).map_err(|e| Error::invalid(e.to_string()))? {
            RowTime::Parsed(i) => TimeFrom::Parsed(i),
            RowTime::Column(i) => TimeFrom::TimeColumn(i, fallback_time),
            RowTime::Fallback => TimeFrom::Fixed(fallback_time),
        };
        Ok(RowMapper {
            booleans: columns.iter().map(|c| is_boolean_type(&c.result_type)).collect(),
            names,
            time,
        })
    }

    fn row(&self, job_id: i64, index: usize, value: rmpv::Value) -> Result<Row> {
        let rmpv::Value::Array(items) = value else {
            return Err(Error::internal(format!(
                "row {index} of job {job_id}'s result is not a msgpack array"
            )));
        };
        if items.len() != self.names.len() {
            return Err(Error::internal(format!(
                "row {index} of job {job_id}'s result has {} values for {} columns",
                items.len(),
                self.names.len()
            )));
        }
        let mut record = Map::with_capacity(items.len() + 1);
        for (i, item) in items.into_iter().enumerate() {
            let mut value = records::msgpack_to_json(item);
            if self.booleans[i] {
                if let Value::Bool(b) = value {
                    value = Value::from(i64::from(b));
                }
            }
            record.insert(self.names[i].clone(), value);
        }
        let time = match self.time {
            TimeFrom::Fixed(t) => t,
            TimeFrom::TimeColumn(i, fallback) => record[&self.names[i]].as_i64().unwrap_or(fallback),
            TimeFrom::Parsed(i) => time_of(&record[&self.names[i]]).map_err(|value| {
                Error::invalid(format!(
                    "row {} of job {job_id}'s result: its time_column `{}` holds {value}, which is not a \
                     time (Unix seconds, ISO-8601 or YYYY-MM-DD HH:MM:SS[.fff] with an optional zone); \
                     nothing was written",
                    index + 1,
                    self.names[i]
                ))
            })?,
        };
        record.insert("time".to_string(), Value::from(time));
        Ok(Row { time, record })
    }
}

/// A `time_column` value as Unix seconds: an integer, or a timestamp td-model reads. `Err` shows
/// the value (cut short).
fn time_of(value: &Value) -> std::result::Result<i64, String> {
    let shown = || {
        let text = value.to_string();
        match text.char_indices().nth(80) {
            Some((end, _)) => format!("{}…", &text[..end]),
            None => text,
        }
    };
    match value {
        Value::Number(n) => n
            .as_i64()
            .and_then(|t| td_model::time::check_seconds(t).ok())
            .ok_or_else(shown),
        Value::String(text) => parse_time(text).map_err(|_| shown()),
        _ => Err(shown()),
    }
}

/// The target schema: for replace exactly the result's columns, for append the existing schema
/// plus the result's new columns (existing columns keep their type, as append-schema does).
fn target_schema(existing: Vec<TableColumn>, columns: &[ResultColumn], mode: Mode) -> Vec<TableColumn> {
    let mut schema = if mode == Mode::Replace {
        Vec::new()
    } else {
        existing
    };
    for column in columns {
        // Rows are written under the result's column names: a name a column already reads (or
        // is named by) adds none.
        if is_reserved_column(&column.name) || catalog::has_column_for(&schema, &column.name) {
            continue;
        }
        schema.push(TableColumn::new(&column.name, td_type(&column.result_type)));
    }
    schema
}

const BATCH_ROWS: usize = 5_000;

/// Writes the rows of `source_job_id`'s stored result into `target`; returns the rows written.
/// Blocking: call it from a blocking task.
///
/// Both modes run in one write transaction, streaming the result in batches: readers see the
/// table before or after the whole output (replace: old rows or new rows, never a mix).
pub(crate) fn write_job_result(
    store: &Store,
    data_dir: &Path,
    source_job_id: i64,
    target: &OutputTarget,
) -> Result<u64> {
    if target.mode == Mode::Replace && target.write_only {
        return Err(Error::Forbidden(format!(
            "mode=replace needs the target account's master API key; the write-only key in {} can only append",
            target.masked_url()
        )));
    }
    let source = store.read(|conn| load_source_job(conn, source_job_id))?;
    let path = jobs::result_path(data_dir, source_job_id);
    let file = File::open(&path)
        .map_err(|e| Error::internal(format!("the result of job {source_job_id} cannot be read: {e}")))?;
    let mapper = RowMapper::new(
        &source.columns,
        target.time.unwrap_or(source.start_at),
        target.time_column.as_deref(),
    )?;
    let written = store.write(|tx| {
        let table_id = open_target(tx, target)?;
        let existing = catalog::table_schema(tx, table_id)?;
        catalog::set_table_schema(
            tx,
            table_id,
            &target_schema(existing, &source.columns, target.mode),
        )?;
        copy_rows(tx, table_id, file, |index, value| {
            mapper.row(source_job_id, index, value)
        })
    })?;
    tracing::info!(
        job = source_job_id,
        target = %target.masked_url(),
        rows = written,
        "wrote job result"
    );
    Ok(written)
}

/// Streams the msgpack arrays of a result file into a table in batches; returns the rows.
fn copy_rows(
    tx: &Connection,
    table_id: i64,
    file: File,
    to_row: impl Fn(usize, rmpv::Value) -> Result<Row>,
) -> Result<u64> {
    let mut batch = Vec::with_capacity(BATCH_ROWS);
    let mut written = 0u64;
    records::read_msgpack_values(MultiGzDecoder::new(file), |value| {
        batch.push(to_row(written as usize + batch.len(), value)?);
        if batch.len() == BATCH_ROWS {
            records::insert_rows(tx, table_id, &batch)?;
            written += batch.len() as u64;
            batch.clear();
        }
        Ok(())
    })?;
    records::insert_rows(tx, table_id, &batch)?;
    Ok(written + batch.len() as u64)
}

/// Creates the target table if missing (its database must exist); for replace, empties it.
fn open_target(tx: &Connection, target: &OutputTarget) -> Result<i64> {
    database_id(tx, target.account_id, &target.database).map_err(|e| match e {
        Error::NotFound(_) => Error::not_found(format!(
            "database '{}' does not exist in the target account of {}; create it first",
            target.database,
            target.masked_url()
        )),
        other => other,
    })?;
    let table_id = ensure_table(tx, target.account_id, &target.database, &target.table)?;
    if target.mode == Mode::Replace {
        crate::segments::delete_table_rows(tx, "?1", table_id)?;
    }
    Ok(table_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_override_the_saved_url() {
        let mut d = Destination::from(TdUrl::parse("td://@/testdb").unwrap());
        apply_settings(
            &mut d,
            r#"{"user_table_name":"out_t","mode":"replace","time":"1970-01-01 00:01:40 UTC","other":1,
                "time_column":"ts","api_key":"2/made-up"}"#,
        )
        .unwrap();
        assert_eq!(d.time_column.as_deref(), Some("ts"));
        assert_eq!(
            d.url.api_key, None,
            "a key in the settings is not the connection's key"
        );
        let u = &mut d;
        assert_eq!(
            (
                u.url.database.as_deref(),
                u.url.table.as_deref(),
                u.url.mode,
                u.url.time
            ),
            (Some("testdb"), Some("out_t"), Some(Mode::Replace), Some(100))
        );
        apply_settings(u, r#"{"database":"otherdb","table":"tbl2"}"#).unwrap();
        assert_eq!(
            (u.url.database.as_deref(), u.url.table.as_deref()),
            (Some("otherdb"), Some("tbl2"))
        );
        for bad in [
            r#"[1]"#,
            r#"{"mode":"merge"}"#,
            r#"{"user_table_name":"X"}"#,
            r#"{"time":true}"#,
            r#"{"time_column":5}"#,
        ] {
            assert!(matches!(apply_settings(u, bad), Err(Error::Invalid(_))), "{bad}");
        }
    }

    #[test]
    fn a_target_shows_its_mode_and_never_its_key() {
        let url = TdUrl::parse("td://@h/db1/tbl?apikey=1%2Fsecret&time=100").unwrap();
        let target = OutputTarget {
            account_id: 1,
            write_only: false,
            database: "db1".into(),
            table: "tbl".into(),
            mode: Mode::Append,
            time: url.time,
            time_column: None,
            url,
        };
        assert_eq!(target.masked_url(), "td://***@h/db1/tbl?mode=append&time=100");
    }
}
