//! `/v3/job/*`: issue, show, status, kill, list, and the result in every format.

use std::io::{self, Read, Seek, SeekFrom, Write};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, HOST, RANGE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flate2::read::MultiGzDecoder;
use rusqlite::{params, OptionalExtension};
use serde_json::{json, Value};

use crate::accounts::Caller;
use crate::error::{ApiError, ApiResult};
use crate::jobs::{self, NewJob};
use crate::params::Params;
use crate::records::{msgpack_to_json, read_msgpack_values};
use td_model::time::td_timestamp as td_time;

use crate::store::{database_id, now};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v3/job/issue/{type}/{db}", post(issue))
        .route("/v3/job/show/{id}", get(show))
        .route("/v3/job/status/{id}", get(status))
        .route("/v3/job/status_by_domain_key/{key}", get(status_by_domain_key))
        .route("/v3/job/kill/{id}", post(kill))
        .route("/v3/job/list", get(list))
        .route("/v3/job/result/{id}", get(result))
}

const QUERY_TYPES: &[&str] = &["presto", "trino", "hive"];

async fn issue(
    State(state): State<AppState>,
    caller: Caller,
    Path((job_type, db)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Json<Value>> {
    caller.require_master("issuing a job")?;
    if !QUERY_TYPES.contains(&job_type.as_str()) {
        return Err(ApiError::unprocessable(format!(
            "unsupported job type '{job_type}': use presto, trino or hive"
        )));
    }
    let query = params
        .get("query")
        .ok_or_else(|| ApiError::bad_request("parameter 'query' is required"))?;
    let priority = params.int("priority")?.unwrap_or(0);
    if !(-2..=2).contains(&priority) {
        return Err(ApiError::unprocessable(format!(
            "parameter 'priority' must be between -2 and 2, got {priority}"
        )));
    }
    let retry_limit = params.int("retry_limit")?.unwrap_or(0);
    if retry_limit < 0 {
        return Err(ApiError::unprocessable(format!(
            "parameter 'retry_limit' must not be negative, got {retry_limit}"
        )));
    }
    let result_url = params.get("result").unwrap_or_default().to_string();
    let account = caller.account_id();
    // Only td:// can be checked now; other schemes fail when the job runs, as TD's would.
    if result_url.starts_with("td://") {
        let (check_state, url) = (state.clone(), result_url.clone());
        tokio::task::spawn_blocking(move || crate::output::parse_result_url(&check_state, account, &url))
            .await
            .map_err(|e| ApiError::internal(format!("task failed: {e}")))??;
    }
    let name = db.clone();
    state
        .store
        .read_async(move |conn| database_id(conn, account, &name).map(|_| ()))
        .await?;
    let job = NewJob {
        account_id: account,
        job_type,
        database: db.clone(),
        query: query.to_string(),
        result_url,
        priority,
        retry_limit,
        pool_name: params.get("pool_name").map(str::to_owned),
        domain_key: params.get("domain_key").map(str::to_owned),
    };
    let id = jobs::issue_query(&state, job).await?;
    Ok(Json(
        json!({ "job": id.to_string(), "job_id": id.to_string(), "database": db }),
    ))
}

/// A `jobs` row as the routes show it.
struct JobRow {
    id: i64,
    job_type: String,
    database: String,
    status: String,
    query: String,
    result_url: String,
    priority: i64,
    retry_limit: i64,
    num_records: Option<i64>,
    result_size: Option<i64>,
    hive_result_schema: Option<String>,
    cpu_time: Option<i64>,
    cmdout: String,
    stderr: String,
    linked_result_export_job_id: Option<i64>,
    result_export_target_job_id: Option<i64>,
    created_at: i64,
    updated_at: i64,
    start_at: Option<i64>,
    end_at: Option<i64>,
}

const JOB_COLUMNS: &str = "id, type, database_name, status, query, result_url, priority, retry_limit, \
    num_records, result_size, hive_result_schema, cpu_time, cmdout, stderr, linked_result_export_job_id, \
    result_export_target_job_id, created_at, updated_at, start_at, end_at";

fn job_row(r: &rusqlite::Row) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        id: r.get(0)?,
        job_type: r.get(1)?,
        database: r.get(2)?,
        status: r.get(3)?,
        query: r.get(4)?,
        result_url: r.get(5)?,
        priority: r.get(6)?,
        retry_limit: r.get(7)?,
        num_records: r.get(8)?,
        result_size: r.get(9)?,
        hive_result_schema: r.get(10)?,
        cpu_time: r.get(11)?,
        cmdout: r.get(12)?,
        stderr: r.get(13)?,
        linked_result_export_job_id: r.get(14)?,
        result_export_target_job_id: r.get(15)?,
        created_at: r.get(16)?,
        updated_at: r.get(17)?,
        start_at: r.get(18)?,
        end_at: r.get(19)?,
    })
}

impl JobRow {
    /// Seconds the job has run (so far, while it runs).
    fn duration(&self) -> Option<i64> {
        self.start_at.map(|s| self.end_at.unwrap_or_else(now) - s)
    }

    fn status_json(&self) -> Value {
        json!({
            "job_id": self.id.to_string(),
            "status": self.status,
            "cpu_time": self.cpu_time,
            "created_at": td_time(self.created_at),
            "updated_at": td_time(self.updated_at),
            "start_at": self.start_at.map(td_time),
            "end_at": self.end_at.map(td_time),
            "duration": self.duration(),
            "num_records": self.num_records,
            "result_size": self.result_size,
        })
    }

    fn show_json(&self, user_name: &str, base_url: &str) -> Value {
        let mut v = self.status_json();
        let fields = json!({
            "type": self.job_type,
            "database": self.database,
            "query": self.query,
            "url": format!("{base_url}/v3/job/show/{}", self.id),
            "user_name": user_name,
            "organization": null,
            "priority": self.priority,
            "retry_limit": self.retry_limit,
            // The URL carries the target account's key: shown masked, as saved results are.
            "result": td_model::key::mask_keys(&self.result_url),
            // td-client-python and -ruby read null or "" as "no schema yet".
            "hive_result_schema": self.hive_result_schema,
            "linked_result_export_job_id": self.linked_result_export_job_id.map(|i| i.to_string()),
            "result_export_target_job_id": self.result_export_target_job_id.map(|i| i.to_string()),
            "debug": { "cmdout": self.cmdout, "stderr": self.stderr },
        });
        if let (Value::Object(into), Value::Object(from)) = (&mut v, fields) {
            into.extend(from);
        }
        v
    }
}

fn parse_job_id(id: &str) -> ApiResult<i64> {
    id.parse()
        .map_err(|_| ApiError::not_found(format!("job {id} does not exist")))
}

async fn load_job(state: &AppState, account: i64, id: &str) -> ApiResult<JobRow> {
    let id = parse_job_id(id)?;
    state
        .store
        .read_async(move |conn| {
            conn.query_row(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1 AND account_id = ?2"),
                params![id, account],
                job_row,
            )
            .optional()?
            .ok_or_else(|| ApiError::not_found(format!("job {id} does not exist")))
        })
        .await
}

/// `http://host:port` as the client reached us, for the job's `url`.
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_master("showing a job")?;
    let job = load_job(&state, caller.account_id(), &id).await?;
    Ok(Json(job.show_json(&caller.account.name, &base_url(&headers))))
}

async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_master("reading a job's status")?;
    let job = load_job(&state, caller.account_id(), &id).await?;
    Ok(Json(job.status_json()))
}

async fn status_by_domain_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_master("reading a job's status")?;
    let account = caller.account_id();
    let job = state
        .store
        .read_async(move |conn| {
            conn.query_row(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE account_id = ?1 AND domain_key = ?2"),
                params![account, key],
                job_row,
            )
            .optional()?
            .ok_or_else(|| ApiError::not_found(format!("no job has domain_key '{key}'")))
        })
        .await?;
    Ok(Json(job.status_json()))
}

async fn kill(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_master("killing a job")?;
    let job_id = parse_job_id(&id)?;
    let account = caller.account_id();
    let killer = state.clone();
    let former = tokio::task::spawn_blocking(move || jobs::kill(&killer, account, job_id))
        .await
        .map_err(|e| ApiError::internal(format!("task failed: {e}")))??;
    Ok(Json(
        json!({ "job_id": job_id.to_string(), "former_status": former }),
    ))
}

/// Newest first; `from` and `to` are positions in that list (`to` inclusive, 20 jobs by default),
/// as td-client-python documents them.
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    params: Params,
) -> ApiResult<Json<Value>> {
    caller.require_master("listing jobs")?;
    let from = params.int("from")?.unwrap_or(0).max(0);
    let to = params.int("to")?.unwrap_or(from + 19).max(from - 1);
    let status = params.get("status").map(str::to_owned);
    let account = caller.account_id();
    let rows = state
        .store
        .read_async(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE account_id = ?1 AND (?2 IS NULL OR status = ?2) \
                 ORDER BY id DESC LIMIT ?3 OFFSET ?4"
            ))?;
            let rows = stmt.query_map(params![account, status, to - from + 1, from], job_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await?;
    let base = base_url(&headers);
    let jobs: Vec<Value> = rows
        .iter()
        .map(|j| j.show_json(&caller.account.name, &base))
        .collect();
    Ok(Json(
        json!({ "count": jobs.len(), "from": from, "to": to, "jobs": jobs }),
    ))
}

/// The formats a result can be read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    MsgpackGz,
    Msgpack,
    Json,
    Csv,
    Tsv,
}

impl Format {
    fn parse(text: &str) -> ApiResult<Format> {
        Ok(match text {
            "msgpack.gz" => Format::MsgpackGz,
            "msgpack" => Format::Msgpack,
            "json" => Format::Json,
            "csv" => Format::Csv,
            "tsv" => Format::Tsv,
            other => {
                return Err(ApiError::unprocessable(format!(
                    "invalid format '{other}': use json, csv, tsv, msgpack or msgpack.gz"
                )))
            }
        })
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::MsgpackGz => "application/octet-stream",
            Format::Msgpack => "application/x-msgpack",
            Format::Json => "application/json",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Tsv => "text/tab-separated-values; charset=utf-8",
        }
    }
}

async fn result(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    caller.require_master("reading a job result")?;
    let format = Format::parse(params.get("format").unwrap_or("tsv"))?;
    let job = load_job(&state, caller.account_id(), &id).await?;
    if job.status != "success" {
        return Err(ApiError::not_found(format!(
            "job {} has no result: its status is '{}'",
            job.id, job.status
        )));
    }
    let path = jobs::result_path(&state.data_dir, job.id);
    let file = std::fs::File::open(&path)
        .map_err(|e| ApiError::not_found(format!("the result of job {} is missing: {e}", job.id)))?;
    if format == Format::MsgpackGz {
        return stored_result(file, job.id, headers.get(RANGE));
    }
    let names = column_names(job.hive_result_schema.as_deref());
    let header = params.flag("header").then_some(names);
    let body = blocking_body(move |out| convert(file, format, header.as_deref(), out));
    Ok(([(CONTENT_TYPE, format.content_type())], body).into_response())
}

/// The msgpack.gz file as stored: whole, or the one byte range asked for (206).
fn stored_result(mut file: std::fs::File, id: i64, range: Option<&HeaderValue>) -> ApiResult<Response> {
    let len = file.metadata()?.len();
    let etag = format!("\"td-local-result-{id}-{len}\"");
    let requested = range.and_then(|r| r.to_str().ok()).map(|r| parse_range(r, len));
    let (status, start, end) = match requested {
        None | Some(RangeRequest::Ignored) => (StatusCode::OK, 0, len),
        Some(RangeRequest::Satisfiable(start, end)) => (StatusCode::PARTIAL_CONTENT, start, end),
        Some(RangeRequest::Unsatisfiable) => {
            let mut response = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("range is outside the {len} bytes of the result"),
            )
            .into_response();
            response
                .headers_mut()
                .insert(CONTENT_RANGE, header_value(format!("bytes */{len}")));
            return Ok(response);
        }
    };
    let body = blocking_body(move |out| {
        file.seek(SeekFrom::Start(start))?;
        io::copy(&mut file.take(end - start), out)?;
        Ok(())
    });
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(Format::MsgpackGz.content_type()),
    );
    h.insert(CONTENT_LENGTH, header_value((end - start).to_string()));
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(ETAG, header_value(etag));
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            CONTENT_RANGE,
            header_value(format!("bytes {start}-{}/{len}", end - 1)),
        );
    }
    Ok(response)
}

fn header_value(text: String) -> HeaderValue {
    HeaderValue::from_str(&text).expect("ASCII header value")
}

/// A `Range` header against a body of known length; `end` is exclusive.
#[derive(Debug, PartialEq, Eq)]
enum RangeRequest {
    Satisfiable(u64, u64),
    Unsatisfiable,
    /// Not a single byte range we serve (several ranges, other units): send the whole body.
    Ignored,
}

fn parse_range(header: &str, len: u64) -> RangeRequest {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeRequest::Ignored;
    };
    if spec.contains(',') {
        return RangeRequest::Ignored;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return RangeRequest::Ignored;
    };
    let (first, last) = (first.trim(), last.trim());
    let parse = |s: &str| s.parse::<u64>().ok();
    let (start, end) = match (first.is_empty(), last.is_empty()) {
        (true, true) => return RangeRequest::Ignored,
        (true, false) => match parse(last) {
            Some(0) => return RangeRequest::Unsatisfiable,
            Some(n) => (len.saturating_sub(n), len),
            None => return RangeRequest::Ignored,
        },
        (false, _) => {
            let Some(start) = parse(first) else {
                return RangeRequest::Ignored;
            };
            let end = if last.is_empty() {
                len
            } else {
                match parse(last) {
                    Some(l) if l >= start => (l + 1).min(len),
                    _ => return RangeRequest::Ignored,
                }
            };
            (start, end)
        }
    };
    if start >= len {
        RangeRequest::Unsatisfiable
    } else {
        RangeRequest::Satisfiable(start, end)
    }
}

/// Column names from `hive_result_schema` (`[[name, type], …]`).
fn column_names(schema: Option<&str>) -> Vec<String> {
    let parsed: Vec<Vec<String>> = schema
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    parsed
        .into_iter()
        .map(|c| c.into_iter().next().unwrap_or_default())
        .collect()
}

/// Writes the stored result in `format` (anything but msgpack.gz).
fn convert(
    file: std::fs::File,
    format: Format,
    header: Option<&[String]>,
    out: &mut dyn Write,
) -> io::Result<()> {
    let mut rows = MultiGzDecoder::new(io::BufReader::new(file));
    if format == Format::Msgpack {
        io::copy(&mut rows, out)?;
        return Ok(());
    }
    let mut line = Vec::new();
    if let Some(names) = header {
        let names: Vec<Value> = names.iter().map(|n| Value::from(n.as_str())).collect();
        write_row(format, &names, &mut line);
        out.write_all(&line)?;
    }
    read_msgpack_values(rows, |value| {
        let cells = match msgpack_to_json(value) {
            Value::Array(cells) => cells,
            other => vec![other],
        };
        line.clear();
        write_row(format, &cells, &mut line);
        out.write_all(&line)
            .map_err(|e| ApiError::internal(format!("sending the result: {e}")))
    })
    .map_err(|e| io::Error::other(e.message))
}

/// One row as a line of JSON, CSV (RFC 4180 quoting) or TSV (backslash escapes).
fn write_row(format: Format, cells: &[Value], line: &mut Vec<u8>) {
    match format {
        Format::Json => {
            serde_json::to_writer(&mut *line, cells).expect("JSON into memory");
        }
        Format::Csv | Format::Tsv => {
            for (i, cell) in cells.iter().enumerate() {
                if i > 0 {
                    line.push(if format == Format::Csv { b',' } else { b'\t' });
                }
                let text = cell_text(cell);
                if format == Format::Csv {
                    csv_field(&text, line);
                } else {
                    tsv_field(&text, line);
                }
            }
        }
        Format::Msgpack | Format::MsgpackGz => unreachable!("binary formats are copied, not converted"),
    }
    line.push(b'\n');
}

fn cell_text(cell: &Value) -> String {
    match cell {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn csv_field(text: &str, line: &mut Vec<u8>) {
    if text.contains([',', '"', '\n', '\r']) {
        line.push(b'"');
        line.extend_from_slice(text.replace('"', "\"\"").as_bytes());
        line.push(b'"');
    } else {
        line.extend_from_slice(text.as_bytes());
    }
}

fn tsv_field(text: &str, line: &mut Vec<u8>) {
    for c in text.chars() {
        match c {
            '\t' => line.extend_from_slice(b"\\t"),
            '\n' => line.extend_from_slice(b"\\n"),
            '\r' => line.extend_from_slice(b"\\r"),
            '\\' => line.extend_from_slice(b"\\\\"),
            c => {
                let mut buf = [0; 4];
                line.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

/// A response body produced by blocking code writing to it; backpressure comes from a small
/// channel, and a write error ends the body early (the client sees a truncated transfer).
fn blocking_body(produce: impl FnOnce(&mut dyn Write) -> io::Result<()> + Send + 'static) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut writer = ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        let done = produce(&mut writer).and_then(|()| writer.flush());
        if let Err(e) = done {
            let _ = writer.tx.blocking_send(Err(e));
        }
    });
    Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

const CHUNK: usize = 64 * 1024;

struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        use RangeRequest::*;
        assert_eq!(parse_range("bytes=0-9", 100), Satisfiable(0, 10));
        assert_eq!(parse_range("bytes=90-200", 100), Satisfiable(90, 100));
        assert_eq!(parse_range("bytes=95-", 100), Satisfiable(95, 100));
        assert_eq!(parse_range("bytes=-10", 100), Satisfiable(90, 100));
        assert_eq!(parse_range("bytes=-500", 100), Satisfiable(0, 100));
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-2", 100), Ignored);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Ignored);
        assert_eq!(parse_range("items=0-1", 100), Ignored);
    }

    #[test]
    fn csv_and_tsv_escape_what_would_break_a_line() {
        let cells = [
            json!("a,b"),
            json!("say \"hi\""),
            json!(null),
            json!(1.5),
            json!("x\ty\nz"),
        ];
        let mut csv = Vec::new();
        write_row(Format::Csv, &cells, &mut csv);
        assert_eq!(
            String::from_utf8(csv).unwrap(),
            "\"a,b\",\"say \"\"hi\"\"\",,1.5,\"x\ty\nz\"\n"
        );
        let mut tsv = Vec::new();
        write_row(Format::Tsv, &cells, &mut tsv);
        assert_eq!(
            String::from_utf8(tsv).unwrap(),
            "a,b\tsay \"hi\"\t\t1.5\tx\\ty\\nz\n"
        );
    }
}
