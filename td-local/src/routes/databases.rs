//! `/v3/database/*`

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use td_model::time::td_timestamp;

use crate::accounts::Caller;
use crate::catalog::{self, Database};
use crate::routes::error::ApiResult;
use crate::state::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v3/database/list", get(list))
        .route("/v3/database/show/{db}", get(show))
        .route("/v3/database/create/{db}", post(create))
        .route("/v3/database/delete/{db}", post(delete))
}

fn database_json(d: &Database) -> Value {
    json!({
        "id": d.id.to_string(),
        "name": d.name,
        "count": d.count,
        "created_at": td_timestamp(d.created_at),
        "updated_at": td_timestamp(d.updated_at),
        "permission": "administrator",
        "delete_protected": false,
        "organization": null,
        "datatank": false,
    })
}

async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require_master("listing databases")?;
    let account = caller.account_id();
    let databases = state
        .store
        .read_async(move |conn| catalog::list_databases(conn, account))
        .await?;
    let items: Vec<Value> = databases.iter().map(database_json).collect();
    Ok(Json(json!({ "databases": items })))
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(db): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_master("showing a database")?;
    let account = caller.account_id();
    let database = state
        .store
        .read_async(move |conn| catalog::show_database(conn, account, &db))
        .await?;
    Ok(Json(database_json(&database)))
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(db): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_master("creating a database")?;
    let account = caller.account_id();
    let name = db.clone();
    state
        .store
        .write_async(move |tx| catalog::create_database(tx, account, &name))
        .await?;
    Ok(Json(json!({ "database": db })))
}

async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(db): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_master("deleting a database")?;
    let account = caller.account_id();
    let name = db.clone();
    state
        .store
        .write_async(move |tx| catalog::delete_database(tx, account, &name))
        .await?;
    Ok(Json(json!({ "database": db })))
}
