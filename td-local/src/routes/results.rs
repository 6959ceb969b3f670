//! Result destinations (td-api.md §6 "Result export", §7): `POST /v3/job/result_export/:id`,
//! saved results (`/v3/result/*`) and `GET /v3/connections/lookup`. Master key only for all of them.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use td_model::key::mask_keys;

use crate::accounts::Caller;
use crate::error::Error;
use crate::output;
use crate::results;
use crate::routes::error::ApiResult;
use crate::routes::params::Params;
use crate::state::AppState;
use crate::store::blocking;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v3/job/result_export/{job_id}", post(result_export))
        .route("/v3/result/list", get(list))
        .route("/v3/result/create/{name}", post(create))
        .route("/v3/result/delete/{name}", post(delete))
        .route("/v3/connections/lookup", get(lookup))
}

async fn result_export(
    State(state): State<AppState>,
    caller: Caller,
    Path(job_id): Path<String>,
    params: Params,
) -> ApiResult<Json<Value>> {
    caller.require_master("exporting a job result")?;
    let account = caller.account_id();
    let source_id: i64 = job_id
        .parse()
        .map_err(|_| Error::not_found(format!("job '{job_id}' does not exist")))?;
    let (store, accounts) = (state.store.clone(), state.accounts.clone());
    let target = blocking(move || {
        let destination = store.read(|conn| {
            output::export_destination(
                conn,
                account,
                params.get("result"),
                params.get("result_connection_id"),
                params.get("result_connection_settings"),
            )
        })?;
        output::resolve(&destination, &accounts, account)
    })
    .await?;
    let database = target.database.clone();
    let export_id = state.runner.export(account, source_id, target).await?;
    Ok(Json(json!({
        "job_id": export_id.to_string(),
        "job": export_id.to_string(),
        "database": database,
    })))
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
        .map(|r| json!({ "id": r.id, "name": r.name, "url": mask_keys(&r.url), "organization": null }))
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
    Ok(Json(json!({ "result": name })))
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
