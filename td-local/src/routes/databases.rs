//! `/v3/database/*`

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use rusqlite::params;
use serde_json::{json, Value};

use crate::accounts::Caller;
use crate::error::{ApiError, ApiResult};
use td_model::name::check_name;
use td_model::time::td_timestamp as td_time;

use crate::store::{database_id, now};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v3/database/list", get(list))
        .route("/v3/database/show/{db}", get(show))
        .route("/v3/database/create/{db}", post(create))
        .route("/v3/database/delete/{db}", post(delete))
}

const DATABASE_COLUMNS: &str = "d.id, d.name, d.created_at, d.updated_at, \
    (SELECT COUNT(*) FROM records r JOIN tables t ON r.table_id = t.id WHERE t.database_id = d.id)";

fn database_json(row: &rusqlite::Row) -> rusqlite::Result<Value> {
    let id: i64 = row.get(0)?;
    let name: String = row.get(1)?;
    let created: i64 = row.get(2)?;
    let updated: i64 = row.get(3)?;
    let count: i64 = row.get(4)?;
    Ok(json!({
        "id": id.to_string(),
        "name": name,
        "count": count,
        "created_at": td_time(created),
        "updated_at": td_time(updated),
        "permission": "administrator",
        "delete_protected": false,
        "organization": null,
        "datatank": false,
    }))
}

async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require_master("listing databases")?;
    let account = caller.account_id();
    let databases = state
        .store
        .read_async(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {DATABASE_COLUMNS} FROM databases d WHERE d.account_id = ?1 ORDER BY d.name"
            ))?;
            let rows = stmt.query_map(params![account], database_json)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await?;
    Ok(Json(json!({ "databases": databases })))
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
        .read_async(move |conn| {
            let id = database_id(conn, account, &db)?;
            Ok(conn.query_row(
                &format!("SELECT {DATABASE_COLUMNS} FROM databases d WHERE d.id = ?1"),
                params![id],
                database_json,
            )?)
        })
        .await?;
    Ok(Json(database))
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(db): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_master("creating a database")?;
    check_name("database", &db)?;
    let account = caller.account_id();
    let name = db.clone();
    state
        .store
        .write_async(move |tx| {
            let t = now();
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO databases (account_id, name, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
                params![account, name, t],
            )?;
            if inserted == 0 {
                return Err(ApiError::conflict(format!("database '{name}' already exists")));
            }
            Ok(())
        })
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
        .write_async(move |tx| {
            let id = database_id(tx, account, &name)?;
            tx.execute(
                "DELETE FROM records WHERE table_id IN (SELECT id FROM tables WHERE database_id = ?1)",
                params![id],
            )?;
            tx.execute(
                "DELETE FROM import_ids WHERE table_id IN (SELECT id FROM tables WHERE database_id = ?1)",
                params![id],
            )?;
            tx.execute("DELETE FROM tables WHERE database_id = ?1", params![id])?;
            tx.execute("DELETE FROM databases WHERE id = ?1", params![id])?;
            Ok(())
        })
        .await?;
    Ok(Json(json!({ "database": db })))
}
