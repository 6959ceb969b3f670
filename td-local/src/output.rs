//! Server-side result output: what TD's td:// connector does when a job is issued with
//! `result=td://…` or exported with `POST /v3/job/result_export/:id`.
//!
//! A td:// URL is `td://[APIKEY]@[HOST]/DATABASE/TABLE[?mode=append|replace&time=T]`. Every host is
//! this server; the key picks the target account (empty = the caller's own). API keys never leave
//! this module: errors and logs show URLs as `td://***@host/db/t` ([`mask_url`]).

use std::fs::File;

use flate2::read::MultiGzDecoder;
use percent_encoding::percent_decode_str;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::records::{self, Column, Row};
use crate::store::{check_name, ensure_table, now};
use crate::AppState;

/// Where a job's rows go and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputTarget {
    /// The account that owns the target table (picked by the URL's key; the job's own when empty).
    pub account_id: i64,
    /// Whether the key that picked it is write-only (replace then fails).
    pub write_only: bool,
    pub database: String,
    pub table: String,
    pub replace: bool,
    /// `time` for every row when the result has no `time` column.
    pub time: Option<i64>,
    /// The URL's host, kept only to print the target (every host is this server).
    pub host: String,
    /// Whether the URL carried a key (shown as `***`) or was `td://@…`.
    pub has_key: bool,
}

impl OutputTarget {
    /// The target as a td:// URL with the key masked, safe for logs, messages and job rows.
    pub fn masked_url(&self) -> String {
        let user = if self.has_key { "***" } else { "" };
        let mode = if self.replace { "replace" } else { "append" };
        let mut url = format!(
            "td://{user}@{}/{}/{}?mode={mode}",
            self.host, self.database, self.table
        );
        if let Some(t) = self.time {
            url.push_str(&format!("&time={t}"));
        }
        url
    }
}

/// Hides the credentials of any `scheme://user@host/…` URL: everything between `://` and the last
/// `@` before the query becomes `***` (keys contain `/`, so the user part runs up to the last `@`).
pub fn mask_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let after_scheme = scheme_end + 3;
    let query_start = url.find('?').unwrap_or(url.len()).max(after_scheme);
    match url[after_scheme..query_start].rfind('@') {
        Some(0) | None => url.to_string(),
        Some(at) => format!("{}***{}", &url[..after_scheme], &url[after_scheme + at..]),
    }
}

/// Write mode of a td:// output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Append,
    Replace,
}

impl Mode {
    fn parse(value: &str, source: &str) -> ApiResult<Mode> {
        match value {
            "append" => Ok(Mode::Append),
            "replace" => Ok(Mode::Replace),
            other => Err(ApiError::unprocessable(format!(
                "invalid mode '{other}' in {source}: use append or replace"
            ))),
        }
    }
}

/// A td:// URL taken apart, before its key is resolved. Database and table may be missing in a
/// saved result (`td://@/testdb`), whose settings name the table at use time.
#[derive(Clone, PartialEq, Eq)]
pub struct TdUrl {
    key: String,
    pub host: String,
    pub database: Option<String>,
    pub table: Option<String>,
    pub mode: Option<Mode>,
    pub time: Option<i64>,
}

impl std::fmt::Debug for TdUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TdUrl")
            .field("key", &if self.key.is_empty() { "" } else { "***" })
            .field("host", &self.host)
            .field("database", &self.database)
            .field("table", &self.table)
            .field("mode", &self.mode)
            .field("time", &self.time)
            .finish()
    }
}

const URL_FORM: &str = "td://[APIKEY]@[HOST]/DATABASE/TABLE[?mode=append|replace]";

impl TdUrl {
    /// Parses the syntax of a td:// URL and checks the names in it; the key is not looked up.
    pub fn parse(url: &str) -> ApiResult<TdUrl> {
        let bad =
            |what: &str| ApiError::unprocessable(format!("invalid result URL: {what} (expected {URL_FORM})"));
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("td") => rest,
            Some((scheme, _)) => {
                return Err(ApiError::unprocessable(format!(
                    "unsupported result URL scheme '{scheme}': td-local writes td:// results only"
                )))
            }
            None => return Err(bad("it does not start with td://")),
        };
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (user, host_and_path) = location.rsplit_once('@').ok_or_else(|| {
            bad("the '@' after the API key is missing (use td://@/DATABASE/TABLE for your own account)")
        })?;
        let key = percent_decode_str(user)
            .decode_utf8()
            .map_err(|_| bad("the API key is not valid UTF-8 once percent-decoded"))?
            .into_owned();
        let (host, path) = host_and_path.split_once('/').unwrap_or((host_and_path, ""));
        let (database, table) = parse_path(path)?;
        let mut parsed = TdUrl {
            key,
            host: host.to_string(),
            database,
            table,
            mode: None,
            time: None,
        };
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match name.as_ref() {
                "mode" => parsed.mode = Some(Mode::parse(&value, "result URL")?),
                "time" => parsed.time = Some(parse_time(&value, "result URL parameter 'time'")?),
                other => {
                    return Err(bad(&format!(
                        "unknown parameter '{other}' (td:// takes mode and time)"
                    )))
                }
            }
        }
        Ok(parsed)
    }

    /// The same URL with its key masked.
    pub fn masked(&self) -> String {
        let user = if self.key.is_empty() { "" } else { "***" };
        let mut url = format!("td://{user}@{}", self.host);
        for part in [&self.database, &self.table].into_iter().flatten() {
            url.push('/');
            url.push_str(part);
        }
        url
    }

    /// Resolves the key to an account and checks that the URL names a table.
    pub fn resolve(&self, state: &AppState, caller_account_id: i64) -> ApiResult<OutputTarget> {
        let (account_id, write_only) = if self.key.is_empty() {
            (caller_account_id, false)
        } else {
            let owner = crate::accounts::lookup(&state.accounts, &self.key)
                .ok_or_else(|| ApiError::unauthorized("invalid API key in result URL"))?;
            (owner.account_id(), owner.write_only)
        };
        let database = self.database.clone().ok_or_else(|| {
            ApiError::unprocessable(format!(
                "result URL {} names no database (expected {URL_FORM})",
                self.masked()
            ))
        })?;
        let table = self.table.clone().ok_or_else(|| {
            ApiError::unprocessable(format!(
                "result URL {} names no table (expected {URL_FORM})",
                self.masked()
            ))
        })?;
        Ok(OutputTarget {
            account_id,
            write_only,
            database,
            table,
            replace: self.mode == Some(Mode::Replace),
            time: self.time,
            host: self.host.clone(),
            has_key: !self.key.is_empty(),
        })
    }

    /// Applies a result connection's settings (JSON object text): `user_database_name` (or
    /// `database`), `user_table_name` (or `table`), `mode`, `time`. Other keys belong to other
    /// connectors' settings and are ignored, as TD's open settings object allows.
    pub fn apply_settings(&mut self, settings: &str) -> ApiResult<()> {
        let what = "result_connection_settings";
        let value: Value = serde_json::from_str(settings)
            .map_err(|e| ApiError::unprocessable(format!("{what} must be a JSON object: {e}")))?;
        let Value::Object(map) = value else {
            return Err(ApiError::unprocessable(format!(
                "{what} must be a JSON object, got {value}"
            )));
        };
        let text = |keys: &[&str]| -> ApiResult<Option<String>> {
            for &key in keys {
                match map.get(key) {
                    None | Some(Value::Null) => continue,
                    Some(Value::String(s)) => return Ok(Some(s.clone())),
                    Some(other) => {
                        return Err(ApiError::unprocessable(format!(
                            "{what}.{key} must be a string, got {other}"
                        )))
                    }
                }
            }
            Ok(None)
        };
        if let Some(db) = text(&["user_database_name", "database"])? {
            check_name("database", &db)?;
            self.database = Some(db);
        }
        if let Some(table) = text(&["user_table_name", "table"])? {
            check_name("table", &table)?;
            self.table = Some(table);
        }
        if let Some(mode) = text(&["mode"])? {
            self.mode = Some(Mode::parse(&mode, what)?);
        }
        match map.get("time") {
            None | Some(Value::Null) => {}
            Some(Value::Number(n)) => {
                self.time = Some(n.as_i64().ok_or_else(|| {
                    ApiError::unprocessable(format!("{what}.time must be whole seconds, got {n}"))
                })?)
            }
            Some(Value::String(s)) => self.time = Some(parse_time(s, &format!("{what}.time"))?),
            Some(other) => {
                return Err(ApiError::unprocessable(format!(
                    "{what}.time must be unix seconds or a timestamp, got {other}"
                )))
            }
        }
        Ok(())
    }
}

/// `/DATABASE/TABLE` (each percent-decoded and name-checked); a trailing `/` is tolerated.
fn parse_path(path: &str) -> ApiResult<(Option<String>, Option<String>)> {
    let path = path.strip_suffix('/').unwrap_or(path);
    if path.is_empty() {
        return Ok((None, None));
    }
    let parts: Vec<String> = path
        .split('/')
        .map(|p| percent_decode_str(p).decode_utf8_lossy().into_owned())
        .collect();
    if parts.len() > 2 {
        return Err(ApiError::unprocessable(format!(
            "invalid result URL: its path has {} parts; expected /DATABASE/TABLE",
            parts.len()
        )));
    }
    check_name("database", &parts[0])?;
    if let Some(table) = parts.get(1) {
        check_name("table", table)?;
    }
    Ok((parts.first().cloned(), parts.get(1).cloned()))
}

/// A `time` setting: unix seconds, RFC 3339, `YYYY-MM-DD HH:MM:SS[ UTC]` or `YYYY-MM-DD` (UTC).
fn parse_time(value: &str, what: &str) -> ApiResult<i64> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<i64>() {
        return Ok(secs);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(v) {
        return Ok(t.timestamp());
    }
    let naive = v.strip_suffix(" UTC").unwrap_or(v);
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(naive, "%Y-%m-%d %H:%M:%S") {
        return Ok(t.and_utc().timestamp());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(naive, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc().timestamp());
    }
    Err(ApiError::unprocessable(format!(
        "{what} must be unix seconds or a timestamp like 2024-01-31 00:00:00 UTC, got '{value}'"
    )))
}

/// Validates a `result=` value when a job is issued and resolves its target: a td:// URL, or
/// `NAME[:TABLE]` naming one of the caller's saved results (`td result:create` + `--result NAME:TABLE`).
pub fn parse_result_url(state: &AppState, caller_account_id: i64, url: &str) -> ApiResult<OutputTarget> {
    let destination = if url.contains("://") {
        TdUrl::parse(url)?
    } else {
        state
            .store
            .read(|conn| destination(conn, caller_account_id, url))?
    };
    destination.resolve(state, caller_account_id)
}

/// A `result=` value as a [`TdUrl`]: a URL, or a saved result's `NAME[:TABLE]`.
pub fn destination(conn: &Connection, account_id: i64, value: &str) -> ApiResult<TdUrl> {
    if value.contains("://") {
        return TdUrl::parse(value);
    }
    let (name, table) = value.split_once(':').unwrap_or((value, ""));
    let is_name = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    // Anything else may be a mistyped URL holding a key: say what is expected, never echo it.
    if name.is_empty() || !is_name(name) || !is_name(table) {
        return Err(ApiError::unprocessable(format!(
            "invalid result: expected {URL_FORM} or the name of a saved result (NAME or NAME:TABLE)"
        )));
    }
    let url: String = conn
        .query_row(
            "SELECT url FROM saved_results WHERE account_id = ?1 AND name = ?2",
            params![account_id, name],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| ApiError::not_found(format!("saved result '{name}' does not exist")))?;
    let mut parsed = TdUrl::parse(&url)?;
    if !table.is_empty() {
        check_name("table", table)?;
        parsed.table = Some(table.to_string());
    }
    Ok(parsed)
}

/// What the writer needs to know about the source job.
struct SourceJob {
    columns: Vec<(String, String)>,
    start_at: i64,
}

fn load_source_job(conn: &Connection, job_id: i64) -> ApiResult<SourceJob> {
    let row: Option<(Option<String>, Option<i64>, i64)> = conn
        .query_row(
            "SELECT hive_result_schema, start_at, created_at FROM jobs WHERE id = ?1",
            params![job_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let (schema, start_at, created_at) =
        row.ok_or_else(|| ApiError::not_found(format!("job {job_id} does not exist")))?;
    let schema = schema
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::unprocessable(format!("job {job_id} has no result schema")))?;
    Ok(SourceJob {
        columns: parse_result_schema(job_id, &schema)?,
        start_at: start_at.unwrap_or(created_at),
    })
}

/// `hive_result_schema`: `[[name, presto_type], …]`.
fn parse_result_schema(job_id: i64, text: &str) -> ApiResult<Vec<(String, String)>> {
    let bad = || ApiError::internal(format!("job {job_id} has a malformed hive_result_schema"));
    let value: Value = serde_json::from_str(text).map_err(|_| bad())?;
    value
        .as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|col| match col.as_array().map(Vec::as_slice) {
            Some([Value::String(name), Value::String(ty), ..]) => Ok((name.clone(), ty.clone())),
            _ => Err(bad()),
        })
        .collect()
}

/// The TD column type of a Presto/Hive result type (design.md §6).
pub fn td_type(presto: &str) -> String {
    let ty = presto.trim().to_ascii_lowercase();
    if let Some(inner) = ty.strip_prefix("array(").and_then(|t| t.strip_suffix(')')) {
        return format!("array<{}>", td_type(inner));
    }
    if let Some(inner) = ty.strip_prefix("map(").and_then(|t| t.strip_suffix(')')) {
        if let Some((k, v)) = split_top_level_comma(inner) {
            return format!("map<{},{}>", td_type(k), td_type(v));
        }
    }
    let base = ty.split('(').next().unwrap_or("");
    match base {
        "bigint" | "integer" | "int" | "smallint" | "tinyint" | "boolean" => "long",
        "double" | "real" | "float" => "double",
        _ => "string",
    }
    .to_string()
}

fn split_top_level_comma(s: &str) -> Option<(&str, &str)> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => return Some((&s[..i], &s[i + 1..])),
            _ => {}
        }
    }
    None
}

fn is_integer_type(presto: &str) -> bool {
    matches!(
        presto.trim().to_ascii_lowercase().as_str(),
        "bigint" | "integer" | "int" | "smallint" | "tinyint"
    )
}

/// Turns result arrays into rows: keys from the column names, `time` from an integer `time`
/// column, else the fallback (the target's `time` setting or the source job's start).
struct RowMapper {
    names: Vec<String>,
    booleans: Vec<bool>,
    time_index: Option<usize>,
    fallback_time: i64,
}

impl RowMapper {
    fn new(columns: &[(String, String)], fallback_time: i64) -> RowMapper {
        RowMapper {
            names: columns.iter().map(|(n, _)| n.clone()).collect(),
            booleans: columns
                .iter()
                .map(|(_, t)| t.trim().eq_ignore_ascii_case("boolean"))
                .collect(),
            time_index: columns
                .iter()
                .position(|(n, t)| n == "time" && is_integer_type(t)),
            fallback_time,
        }
    }

    fn row(&self, job_id: i64, index: usize, value: rmpv::Value) -> ApiResult<Row> {
        let rmpv::Value::Array(items) = value else {
            return Err(ApiError::internal(format!(
                "row {index} of job {job_id}'s result is not a msgpack array"
            )));
        };
        if items.len() != self.names.len() {
            return Err(ApiError::internal(format!(
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
        let time = self
            .time_index
            .and_then(|i| record.get(&self.names[i]).and_then(Value::as_i64))
            .unwrap_or(self.fallback_time);
        record.insert("time".to_string(), Value::from(time));
        Ok(Row { time, record })
    }
}

/// The target schema: for replace exactly the result's columns, for append the existing schema
/// plus the result's new columns (existing columns keep their type, as append-schema does).
fn target_schema(existing: Vec<Column>, columns: &[(String, String)], replace: bool) -> Vec<Column> {
    let mut schema = if replace { Vec::new() } else { existing };
    for (name, ty) in columns {
        if name == "time" || name == "v" || schema.iter().any(|c| c.name == *name) {
            continue;
        }
        schema.push(Column {
            name: name.clone(),
            r#type: td_type(ty),
            alias: None,
        });
    }
    schema
}

const BATCH_ROWS: usize = 5_000;

/// Writes the rows of `source_job_id`'s stored result into `target`; returns the rows written.
/// Blocking: call it from a blocking task.
///
/// Both modes run in one write transaction, streaming the result in batches: readers see the
/// table before or after the whole output (replace: old rows or new rows, never a mix).
pub fn write_job_result(state: &AppState, source_job_id: i64, target: &OutputTarget) -> ApiResult<u64> {
    if target.replace && target.write_only {
        return Err(ApiError::forbidden(format!(
            "mode=replace needs the target account's master API key; the write-only key in {} can only append",
            target.masked_url()
        )));
    }
    let source = state.store.read(|conn| load_source_job(conn, source_job_id))?;
    let path = crate::jobs::result_path(&state.data_dir, source_job_id);
    let file = File::open(&path)
        .map_err(|e| ApiError::internal(format!("the result of job {source_job_id} cannot be read: {e}")))?;
    let mapper = RowMapper::new(&source.columns, target.time.unwrap_or(source.start_at));
    let written = state.store.write(|tx| {
        let table_id = open_target(tx, target)?;
        let existing = records::table_schema(tx, table_id)?;
        let schema = target_schema(existing, &source.columns, target.replace);
        tx.execute(
            "UPDATE tables SET schema = ?1, updated_at = ?2 WHERE id = ?3",
            params![records::schema_to_json(&schema), now(), table_id],
        )?;
        let mut batch = Vec::with_capacity(BATCH_ROWS);
        let mut written = 0u64;
        records::read_msgpack_values(MultiGzDecoder::new(file), |value| {
            batch.push(mapper.row(source_job_id, written as usize + batch.len(), value)?);
            if batch.len() == BATCH_ROWS {
                records::insert_rows(tx, table_id, &batch)?;
                written += batch.len() as u64;
                batch.clear();
            }
            Ok(())
        })?;
        records::insert_rows(tx, table_id, &batch)?;
        Ok(written + batch.len() as u64)
    })?;
    tracing::info!(
        job = source_job_id,
        target = %target.masked_url(),
        rows = written,
        "wrote job result"
    );
    Ok(written)
}

/// Creates the target table if missing (its database must exist); for replace, empties it.
fn open_target(tx: &Connection, target: &OutputTarget) -> ApiResult<i64> {
    crate::store::database_id(tx, target.account_id, &target.database).map_err(|e| {
        if e.status != axum::http::StatusCode::NOT_FOUND {
            return e;
        }
        ApiError::not_found(format!(
            "database '{}' does not exist in the target account of {}; create it first",
            target.database,
            target.masked_url()
        ))
    })?;
    let table_id = ensure_table(tx, target.account_id, &target.database, &target.table)?;
    if target.replace {
        tx.execute("DELETE FROM records WHERE table_id = ?1", params![table_id])?;
    }
    Ok(table_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_with_slashes_and_at_signs_are_masked_up_to_the_last_at() {
        assert_eq!(
            mask_url("td://1/abc@def@host:80/db/t?mode=replace"),
            "td://***@host:80/db/t?mode=replace"
        );
        assert_eq!(mask_url("td://@/db/t"), "td://@/db/t");
        assert_eq!(mask_url("mysql://u:p@h/db/t"), "mysql://***@h/db/t");
        assert_eq!(mask_url("no url"), "no url");
    }

    #[test]
    fn url_parts_are_taken_apart_and_decoded() {
        let u = TdUrl::parse("td://1%2Fab@c@api.example.com/mydb/mytable?mode=replace&time=100").unwrap();
        assert_eq!(u.key, "1/ab@c");
        assert_eq!(u.host, "api.example.com");
        assert_eq!(
            (u.database.as_deref(), u.table.as_deref()),
            (Some("mydb"), Some("mytable"))
        );
        assert_eq!((u.mode, u.time), (Some(Mode::Replace), Some(100)));
        assert_eq!(u.masked(), "td://***@api.example.com/mydb/mytable");
        assert!(!format!("{u:?}").contains("ab@c"));
        let own = TdUrl::parse("td://@/testdb/").unwrap();
        assert_eq!((own.key.as_str(), own.table), ("", None));
    }

    #[test]
    fn bad_urls_name_the_wrong_part_without_the_key() {
        let cases = [
            ("mysql://u:p@h/d/t", "scheme 'mysql'"),
            ("td://secretkey/db/t", "'@'"),
            ("td://secretkey@h/db/t/x", "3 parts"),
            ("td://secretkey@h/DB/tbl", "database name 'DB'"),
            ("td://secretkey@h/db1/t", "table name 't'"),
            ("td://secretkey@h/db1/tbl?mode=upsert", "mode 'upsert'"),
            ("td://secretkey@h/db1/tbl?time=soon", "'time'"),
            ("td://secretkey@h/db1/tbl?mdoe=replace", "'mdoe'"),
        ];
        for (url, needle) in cases {
            let e = TdUrl::parse(url).unwrap_err();
            assert_eq!(e.status.as_u16(), 422, "{url}");
            assert!(e.message.contains(needle), "{url}: {}", e.message);
            assert!(!e.message.contains("secretkey"), "{url}: {}", e.message);
        }
    }

    #[test]
    fn presto_types_map_to_td_types() {
        for (presto, td) in [
            ("bigint", "long"),
            ("INTEGER", "long"),
            ("tinyint", "long"),
            ("boolean", "long"),
            ("real", "double"),
            ("double", "double"),
            ("varchar(10)", "string"),
            ("decimal(10,2)", "string"),
            ("timestamp", "string"),
            ("array(varchar)", "array<string>"),
            ("map(varchar,array(bigint))", "map<string,array<long>>"),
        ] {
            assert_eq!(td_type(presto), td, "{presto}");
        }
    }

    #[test]
    fn time_settings_accept_seconds_and_timestamps() {
        assert_eq!(parse_time("1700000000", "t").unwrap(), 1_700_000_000);
        assert_eq!(parse_time("2023-11-14 22:13:20 UTC", "t").unwrap(), 1_700_000_000);
        assert_eq!(parse_time("2023-11-14T22:13:20Z", "t").unwrap(), 1_700_000_000);
        assert_eq!(parse_time("1970-01-02", "t").unwrap(), 86_400);
        assert!(parse_time("yesterday", "t").is_err());
    }

    #[test]
    fn settings_override_the_saved_url() {
        let mut u = TdUrl::parse("td://@/testdb").unwrap();
        u.apply_settings(
            r#"{"user_table_name":"out_t","mode":"replace","time":"1970-01-01 00:01:40 UTC","other":1}"#,
        )
        .unwrap();
        assert_eq!(
            (u.database.as_deref(), u.table.as_deref(), u.mode, u.time),
            (Some("testdb"), Some("out_t"), Some(Mode::Replace), Some(100))
        );
        u.apply_settings(r#"{"database":"otherdb","table":"tbl2"}"#)
            .unwrap();
        assert_eq!(
            (u.database.as_deref(), u.table.as_deref()),
            (Some("otherdb"), Some("tbl2"))
        );
        for bad in [
            r#"[1]"#,
            r#"{"mode":"merge"}"#,
            r#"{"user_table_name":"X"}"#,
            r#"{"time":true}"#,
        ] {
            assert_eq!(u.apply_settings(bad).unwrap_err().status.as_u16(), 422, "{bad}");
        }
    }
}
