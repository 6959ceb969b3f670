//! Result destinations (docs/td-api.md §6 "Result export", §7): `POST /v3/job/result_export/:id`,
//! saved results (`/v3/result/*`) and `GET /v3/connections/lookup`. Master key only for all of them.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use td_model::key::mask_keys;

use crate::accounts::Caller;
use crate::error::Error;
use crate::output;
use crate::results;
use crate::routes::error::ApiResult;
use crate::routes::jobs;
use crate::routes::params::Params;
use crate::state::AppState;
use crate::store::blocking;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v3/job/result_export/{job_id}", post(result_export))
        .route("/v3/result/list", get(list))
        .route("/v3/result/create/{name}", post(create))
        .route("/v3/result/delete/{name}", post(delete))
        .route("/v3/connections/lookup", get(lookup))
}

/// Starts an export of a job's result. TD answers 201 (td-client-ruby#120, citing TD's
/// controller) with the new job (TD's API description, setResultExport). `domain_key` is on the
/// request in TD's API description: td-local honours it as `job/issue` does (a repeat answers 409
/// naming the first export job); whether TD honours it on this call is unconfirmed.
async fn result_export(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(job_id): Path<String>,
    params: Params,
) -> ApiResult<(StatusCode, Json<Value>)> {
    caller.require_master("exporting a job result")?;
    let account = caller.account_id();
    let source_id: i64 = job_id
        .parse()
        .map_err(|_| Error::not_found(format!("job '{job_id}' does not exist")))?;
    let (store, accounts) = (state.store.clone(), state.accounts.clone());
    let request = params.result_request();
    let target =
        blocking(move || store.read(|conn| output::target(conn, &accounts, account, &request))).await?;
    let domain_key = params.get("domain_key").map(str::to_owned);
    let export_id = state
        .runner
        .export(account, source_id, target, domain_key)
        .await?;
    let job = state
        .store
        .read_async(move |conn| crate::jobs::load(conn, account, export_id))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(jobs::show_json(
            &job,
            &caller.account.name,
            &jobs::base_url(&headers),
        )),
    ))
}

/// Lists the account's saved results. The URLs are shown with their credentials masked
/// (`td://***@host/db`): TD's UI and clients display them, but a listing is easy to leak and
/// nothing needs the key back — `result_connection_id` and `NAME:TABLE` use the stored URL.
async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require_master("listing saved results")?;
    let account = caller.account_id();
    let saved = state
        .store
        .read_async(move |conn| results::list(conn, account))
        .await?;
    let items: Vec<Value> = saved
        .iter()
        // `{name, url, organization}`, no id (TD's API description, getConnections).
        .map(|r| json!({ "name": r.name, "url": mask_keys(&r.url), "organization": null }))
        .collect();
    Ok(Json(json!({ "results": items })))
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    params: Params,
) -> ApiResult<Json<Value>> {
    caller.require_master("creating a saved result")?;
    let url = params.required("url", Error::Invalid)?.to_string();
    let (account, saved) = (caller.account_id(), name.clone());
    state
        .store
        .write_async(move |tx| results::create(tx, account, &saved, &url))
        .await?;
    // `{name, result}` (TD's API description, createConnection).
    Ok(Json(json!({ "name": name, "result": name })))
}

async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_master("deleting a saved result")?;
    let (account, saved) = (caller.account_id(), name.clone());
    state
        .store
        .write_async(move |tx| results::delete(tx, account, &saved))
        .await?;
    Ok(Json(json!({ "result": name })))
}

/// `GET /v3/connections/lookup?name=N` → `{"id": N}`, the saved result's id.
async fn lookup(State(state): State<AppState>, caller: Caller, params: Params) -> ApiResult<Json<Value>> {
    caller.require_master("looking up a connection")?;
    let name = params.required("name", Error::Invalid)?.to_string();
    let account = caller.account_id();
    let id = state
        .store
        .read_async(move |conn| results::connection_id(conn, account, &name))
        .await?;
    Ok(Json(json!({ "id": id })))
}
