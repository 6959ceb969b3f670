//! `/v3/bulk_import/*` (docs/td-api.md §5). Every call is allowed for write-only keys; sessions
//! belong to the caller's account. The session logic lives in `crate::bulk_import`.

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use rusqlite::Connection;
use serde_json::{json, Value};

use crate::accounts::Caller;
use crate::bulk_import::{self, PerformOptions};
use crate::routes::body::{read_gzip_body, GzipLimits};
use crate::routes::error::ApiResult;
use crate::routes::params::Params;
use crate::state::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v3/bulk_import/create/{name}/{db}/{table}", post(create))
        .route("/v3/bulk_import/show/{name}", get(show))
        .route("/v3/bulk_import/list", get(list))
        .route(
            "/v3/bulk_import/upload_part/{name}/{part}",
            // `read_gzip_body` applies the server's limits with a TD error itself.
            put(upload_part).layer(DefaultBodyLimit::disable()),
        )
        .route("/v3/bulk_import/list_parts/{name}", get(list_parts))
        .route("/v3/bulk_import/delete_part/{name}/{part}", post(delete_part))
        .route("/v3/bulk_import/freeze/{name}", post(freeze))
        .route("/v3/bulk_import/unfreeze/{name}", post(unfreeze))
        .route("/v3/bulk_import/perform/{name}", post(perform))
        .route("/v3/bulk_import/commit/{name}", post(commit))
        .route("/v3/bulk_import/delete/{name}", post(delete))
        .route("/v3/bulk_import/error_records/{name}", get(error_records))
}

fn named(name: &str) -> Json<Value> {
    Json(json!({ "name": name, "bulk_import": name }))
}

/// `{name, bulk_import, part_name}`: the answer of the part calls.
fn named_part(name: &str, part: &str) -> Json<Value> {
    Json(json!({ "name": name, "bulk_import": name, "part_name": part }))
}

/// Runs a write on session `name` of the caller's account and answers `reply`.
async fn session_write(
    state: &AppState,
    caller: &Caller,
    name: String,
    reply: Json<Value>,
    write: impl FnOnce(&Connection, i64, &str) -> crate::error::Result<()> + Send + 'static,
) -> ApiResult<Json<Value>> {
    let account = caller.account_id();
    state
        .store
        .write_async(move |tx| write(tx, account, &name))
        .await?;
    Ok(reply)
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, db, table)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    let reply = named(&name);
    session_write(&state, &caller, name, reply, move |tx, account, name| {
        bulk_import::create(tx, account, name, &db, &table)
    })
    .await
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let account = caller.account_id();
    let session = state
        .store
        .read_async(move |conn| bulk_import::load(conn, account, &name))
        .await?;
    Ok(Json(session.to_json()))
}

async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let account = caller.account_id();
    let sessions = state
        .store
        .read_async(move |conn| bulk_import::list(conn, account))
        .await?;
    let items: Vec<Value> = sessions.iter().map(bulk_import::Session::to_json).collect();
    Ok(Json(json!({ "bulk_imports": items })))
}

async fn upload_part(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, part)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    bulk_import::check_part_name(&part)?;
    let limits = GzipLimits {
        bytes: state.limits.part_bytes,
        inflated: state.limits.part_inflated_bytes,
    };
    let data = read_gzip_body(&headers, body, limits, "a bulk import part").await?;
    let reply = named_part(&name, &part);
    session_write(&state, &caller, name, reply, move |tx, account, name| {
        bulk_import::upload_part(tx, account, name, &part, &data)
    })
    .await
}

async fn list_parts(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let account = caller.account_id();
    let (session, parts) = state
        .store
        .read_async(move |conn| bulk_import::list_parts(conn, account, &name))
        .await?;
    Ok(Json(
        json!({ "name": session.name, "bulk_import": session.name, "parts": parts }),
    ))
}

async fn delete_part(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, part)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let reply = named_part(&name, &part);
    session_write(&state, &caller, name, reply, move |tx, account, name| {
        bulk_import::delete_part(tx, account, name, &part)
    })
    .await
}

async fn freeze(state: State<AppState>, caller: Caller, name: Path<String>) -> ApiResult<Json<Value>> {
    set_frozen(state, caller, name, true).await
}

async fn unfreeze(state: State<AppState>, caller: Caller, name: Path<String>) -> ApiResult<Json<Value>> {
    set_frozen(state, caller, name, false).await
}

async fn set_frozen(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    frozen: bool,
) -> ApiResult<Json<Value>> {
    let reply = named(&name);
    session_write(&state, &caller, name, reply, move |tx, account, name| {
        bulk_import::set_frozen(tx, account, name, frozen)
    })
    .await
}

/// Starts the perform job and answers at once (`crate::runner`).
async fn perform(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    params: Params,
) -> ApiResult<Json<Value>> {
    let options = PerformOptions {
        priority: params.int("priority")?.unwrap_or(0),
        pool_name: params.get("pool_name").map(str::to_owned),
    };
    let job_id = state
        .runner
        .perform(caller.account_id(), name.clone(), options)
        .await?;
    Ok(Json(
        // An integer here, where job ids are strings elsewhere (TD's API description).
        json!({ "name": name, "bulk_import": name, "job_id": job_id }),
    ))
}

async fn commit(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    state.runner.commit(caller.account_id(), name.clone()).await?;
    Ok(named(&name))
}

async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let reply = named(&name);
    session_write(&state, &caller, name, reply, bulk_import::delete).await
}

/// gzip'd msgpack of the rejected records; an empty body when there are none.
async fn error_records(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let account = caller.account_id();
    let body = state
        .store
        .read_async(move |conn| bulk_import::error_records(conn, account, &name))
        .await?;
    Ok(([(CONTENT_TYPE, "application/octet-stream")], body).into_response())
}
