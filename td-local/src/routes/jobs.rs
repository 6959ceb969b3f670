//! `/v3/job/*`: issue, show, status, kill, list, and the result in every format
//! (`crate::result_format`), streamed from the blocking pool.

use std::io::{self, Read, Seek, SeekFrom, Write};

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, HOST, RANGE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use td_model::key::mask_keys;
use td_model::time::td_timestamp;

use crate::accounts::Caller;
use crate::error::Error;
use crate::jobs::{self, Job, JobState, ListRange, NewJob};
use crate::result_format::{self, Format, RangeRequest};
use crate::routes::error::{ApiError, ApiResult};
use crate::routes::params::Params;
use crate::state::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v3/job/issue/{type}/{db}", post(issue))
        .route("/v3/job/show/{id}", get(show))
        .route("/v3/job/status/{id}", get(status))
        .route("/v3/job/status_by_domain_key/{key}", get(status_by_domain_key))
        .route("/v3/job/kill/{id}", post(kill))
        .route("/v3/job/list", get(list))
        .route("/v3/job/result/{id}", get(result))
}

async fn issue(
    State(state): State<AppState>,
    caller: Caller,
    Path((job_type, db)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Json<Value>> {
    caller.require_master("issuing a job")?;
    let job = NewJob {
        account_id: caller.account_id(),
        job_type,
        database: db.clone(),
        query: params.get("query").unwrap_or_default().to_string(),
        result_url: params.get("result").unwrap_or_default().to_string(),
        priority: params.int("priority")?.unwrap_or(0),
        retry_limit: params.int("retry_limit")?.unwrap_or(0),
        pool_name: params.get("pool_name").map(str::to_owned),
        engine_version: params.get("engine_version").map(str::to_owned),
        scheduled_time: params.int("scheduled_time")?,
        domain_key: params.get("domain_key").map(str::to_owned),
        result_connection_id: params.get("result_connection_id").map(str::to_owned),
        result_connection_settings: params.get("result_connection_settings").map(str::to_owned),
        schedule_id: None,
    };
    let id = state.runner.issue_query(job).await?;
    Ok(Json(
        json!({ "job": id.to_string(), "job_id": id.to_string(), "database": db }),
    ))
}

fn status_json(job: &Job) -> Value {
    json!({
        "job_id": job.id.to_string(),
        "status": job.status.as_str(),
        "cpu_time": job.cpu_time,
        "created_at": td_timestamp(job.created_at),
        "updated_at": td_timestamp(job.updated_at),
        "start_at": job.start_at.map(td_timestamp),
        "end_at": job.end_at.map(td_timestamp),
        "duration": job.duration(),
        "num_records": job.num_records,
        "result_size": job.result_size,
    })
}

pub(crate) fn show_json(job: &Job, user_name: &str, base_url: &str) -> Value {
    let mut v = status_json(job);
    let fields = json!({
        "type": job.job_type,
        "database": job.database,
        "query": job.query,
        "url": format!("{base_url}/v3/job/show/{}", job.id),
        "user_name": user_name,
        "organization": null,
        // The options a job was issued with, under the names the clients read: `priority` and
        // `retry_limit` (td-client-python job_api.show_job, td-client-ruby api/job.rb,
        // td-client-go api_job.go), `engine_version` (td-client-java model/TDJob). No client
        // reads the pool or the scheduled time back; `pool_name` and `scheduled_at` (TD's
        // timestamp, as schedule history shows it) are unconfirmed names.
        "priority": job.priority,
        "retry_limit": job.retry_limit,
        "pool_name": job.pool_name,
        "engine_version": job.engine_version,
        "scheduled_at": job.scheduled_time.map(td_timestamp),
        // The URL carries the target account's key: shown masked, as saved results are.
        "result": mask_keys(&job.result_url),
        // td-client-python and -ruby read null or "" as "no schema yet".
        "hive_result_schema": job.hive_result_schema,
        // Integers, where `job_id` is a string (TD's API description, the Job object).
        "linked_result_export_job_id": job.linked_result_export_job_id,
        "result_export_target_job_id": job.result_export_target_job_id,
        "debug": { "cmdout": job.cmdout, "stderr": job.stderr },
    });
    if let (Value::Object(into), Value::Object(from)) = (&mut v, fields) {
        into.extend(from);
    }
    v
}

fn parse_job_id(id: &str) -> Result<i64, Error> {
    id.parse()
        .map_err(|_| Error::not_found(format!("job {id} does not exist")))
}

async fn load_job(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Job> {
    let (id, account) = (parse_job_id(id)?, caller.account_id());
    Ok(state
        .store
        .read_async(move |conn| jobs::load(conn, account, id))
        .await?)
}

/// `http://host:port` as the client reached us, for the job's `url`.
pub(crate) fn base_url(headers: &HeaderMap) -> String {
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
    let job = load_job(&state, &caller, &id).await?;
    Ok(Json(show_json(&job, &caller.account.name, &base_url(&headers))))
}

async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_master("reading a job's status")?;
    let job = load_job(&state, &caller, &id).await?;
    Ok(Json(status_json(&job)))
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
        .read_async(move |conn| jobs::by_domain_key(conn, account, &key))
        .await?;
    Ok(Json(status_json(&job)))
}

async fn kill(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_master("killing a job")?;
    let job_id = parse_job_id(&id)?;
    let (runner, account) = (state.runner.clone(), caller.account_id());
    let former = crate::store::blocking(move || runner.kill(account, job_id)).await?;
    Ok(Json(
        json!({ "job_id": job_id.to_string(), "former_status": former.as_str() }),
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
    let range = ListRange {
        from,
        to: params.int("to")?.unwrap_or(from + 19).max(from - 1),
        status: params.get("status").map(str::to_owned),
    };
    let (account, to) = (caller.account_id(), range.to);
    let rows = state
        .store
        .read_async(move |conn| jobs::list(conn, account, &range))
        .await?;
    let base = base_url(&headers);
    let jobs: Vec<Value> = rows
        .iter()
        .map(|j| show_json(j, &caller.account.name, &base))
        .collect();
    Ok(Json(
        json!({ "count": jobs.len(), "from": from, "to": to, "jobs": jobs }),
    ))
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
    let job = load_job(&state, &caller, &id).await?;
    if job.status != JobState::Success {
        return Err(Error::not_found(format!(
            "job {} has no result: its status is '{}'",
            job.id, job.status
        ))
        .into());
    }
    let path = jobs::result_path(&state.data_dir, job.id);
    let file = std::fs::File::open(&path)
        .map_err(|e| Error::not_found(format!("the result of job {} is missing: {e}", job.id)))?;
    if format == Format::MsgpackGz {
        return stored_result(file, job.id, headers.get(RANGE));
    }
    let names = result_format::column_names(job.hive_result_schema.as_deref());
    let header = params.flag("header").then_some(names);
    let body = blocking_body(move |out| result_format::convert(file, format, header.as_deref(), out));
    Ok(([(CONTENT_TYPE, format.content_type())], body).into_response())
}

/// The msgpack.gz file as stored: whole, or the one byte range asked for (206).
fn stored_result(mut file: std::fs::File, id: i64, range: Option<&HeaderValue>) -> ApiResult<Response> {
    let len = file.metadata().map_err(Error::from)?.len();
    let requested = range
        .and_then(|r| r.to_str().ok())
        .map(|r| result_format::parse_range(r, len));
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
    h.insert(ETAG, header_value(result_format::etag(id, len)));
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
