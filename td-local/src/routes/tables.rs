//! `/v3/table/*` (td-api.md §3): list, show, create, delete, swap, rename, update, schema, tail.
//!
//! A table's rows are keyed by its id, so swap and rename are catalog updates inside one write
//! transaction; every read runs in one snapshot, so readers see a swap or a rename all or nothing.

use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::accounts::Caller;
use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use td_model::name::check_name;
use td_model::schema::{parse_table_schema, table_schema_json, TableColumn};
use td_model::time::td_timestamp as td_time;

use crate::records::{json_to_msgpack, table_schema};
use crate::store::{database_id, now, table_id};
use crate::AppState;

/// The only table type TD still creates.
const LOG_TYPE: &str = "log";
/// `tail` returns this many rows unless `count` says otherwise.
const DEFAULT_TAIL_COUNT: i64 = 10;
/// The most rows one `tail` returns.
const MAX_TAIL_COUNT: i64 = 10_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v3/table/list/{db}", get(list))
        .route("/v3/table/show/{db}/{table}", get(show))
        .route("/v3/table/create/{db}/{table}", post(create_log))
        .route("/v3/table/create/{db}/{table}/{type}", post(create))
        .route("/v3/table/delete/{db}/{table}", post(delete))
        .route("/v3/table/swap/{db}/{table1}/{table2}", post(swap))
        .route("/v3/table/rename/{db}/{table}/{new_name}", post(rename))
        .route("/v3/table/update/{db}/{table}", post(update))
        .route("/v3/table/update-schema/{db}/{table}", post(update_schema))
        .route("/v3/table/append-schema/{db}/{table}", post(append_schema))
        .route("/v3/table/tail/{db}/{table}", get(tail))
}

/// Runs `f` in one read transaction: every statement sees the same committed state, so a name
/// looked up and the rows counted under it cannot straddle a concurrent rename or swap.
fn in_snapshot<T>(conn: &Connection, f: impl FnOnce(&Connection) -> ApiResult<T>) -> ApiResult<T> {
    let tx = conn.unchecked_transaction()?;
    let out = f(&tx)?;
    tx.commit()?;
    Ok(out)
}

const TABLE_COLUMNS: &str = "t.id, t.name, t.schema, t.description, t.expire_days, t.include_v, \
    t.created_at, t.updated_at, \
    (SELECT COUNT(*) FROM records r WHERE r.table_id = t.id), \
    (SELECT COALESCE(SUM(LENGTH(r.record)), 0) FROM records r WHERE r.table_id = t.id), \
    (SELECT MAX(r.time) FROM records r WHERE r.table_id = t.id)";

/// ISO-8601 UTC, as TD writes `counter_updated_at` and `last_log_timestamp`.
fn iso_time(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The Table object of td-api.md §3; `schema` stays the JSON text it is stored as.
fn table_json(row: &rusqlite::Row) -> rusqlite::Result<Value> {
    let updated: i64 = row.get(7)?;
    let last_time: Option<i64> = row.get(10)?;
    Ok(json!({
        "id": row.get::<_, i64>(0)?,
        "name": row.get::<_, String>(1)?,
        "type": LOG_TYPE,
        "count": row.get::<_, i64>(8)?,
        "estimated_storage_size": row.get::<_, i64>(9)?,
        "counter_updated_at": iso_time(updated),
        "last_log_timestamp": last_time.map(iso_time),
        "created_at": td_time(row.get(6)?),
        "updated_at": td_time(updated),
        "expire_days": row.get::<_, Option<i64>>(4)?,
        "include_v": row.get::<_, bool>(5)?,
        "delete_protected": false,
        "description": row.get::<_, Option<String>>(3)?,
        "schema": row.get::<_, String>(2)?,
    }))
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(db): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_master("listing tables")?;
    let account = caller.account_id();
    let name = db.clone();
    let tables = state
        .store
        .read_async(move |conn| {
            in_snapshot(conn, |conn| {
                let db_id = database_id(conn, account, &name)?;
                let mut stmt = conn.prepare(&format!(
                    "SELECT {TABLE_COLUMNS} FROM tables t WHERE t.database_id = ?1 ORDER BY t.name"
                ))?;
                let rows = stmt.query_map(params![db_id], table_json)?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
        })
        .await?;
    Ok(Json(json!({ "database": db, "tables": tables })))
}

async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path((db, table)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require_master("showing a table")?;
    let account = caller.account_id();
    let shown = state
        .store
        .read_async(move |conn| {
            in_snapshot(conn, |conn| {
                let id = table_id(conn, account, &db, &table)?;
                Ok(conn.query_row(
                    &format!("SELECT {TABLE_COLUMNS} FROM tables t WHERE t.id = ?1"),
                    params![id],
                    table_json,
                )?)
            })
        })
        .await?;
    Ok(Json(shown))
}

/// `{database, table, type}`: the answer of create, delete, rename and the updates.
fn table_reply(db: &str, table: &str) -> Json<Value> {
    Json(json!({ "database": db, "table": table, "type": LOG_TYPE }))
}

async fn create_log(
    state: State<AppState>,
    caller: Caller,
    Path((db, table)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    create(state, caller, Path((db, table, LOG_TYPE.to_string()))).await
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path((db, table, kind)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require_master("creating a table")?;
    if kind != LOG_TYPE {
        return Err(ApiError::unprocessable(format!(
            "table type '{kind}' is not supported: only 'log' tables exist"
        )));
    }
    check_name("table", &table)?;
    let account = caller.account_id();
    let (db_name, name) = (db.clone(), table.clone());
    state
        .store
        .write_async(move |tx| {
            let db_id = database_id(tx, account, &db_name)?;
            let t = now();
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO tables (database_id, name, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
                params![db_id, name, t],
            )?;
            if inserted == 0 {
                return Err(ApiError::conflict(format!("table '{db_name}.{name}' already exists")));
            }
            Ok(())
        })
        .await?;
    Ok(table_reply(&db, &table))
}

/// Removes a table with its rows and import ids (inside the caller's transaction).
fn drop_table(conn: &Connection, id: i64) -> ApiResult<()> {
    conn.execute("DELETE FROM records WHERE table_id = ?1", params![id])?;
    conn.execute("DELETE FROM import_ids WHERE table_id = ?1", params![id])?;
    conn.execute("DELETE FROM tables WHERE id = ?1", params![id])?;
    Ok(())
}

async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path((db, table)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require_master("deleting a table")?;
    let account = caller.account_id();
    let (db_name, name) = (db.clone(), table.clone());
    state
        .store
        .write_async(move |tx| drop_table(tx, table_id(tx, account, &db_name, &name)?))
        .await?;
    Ok(table_reply(&db, &table))
}

fn set_table_name(conn: &Connection, id: i64, name: &str) -> ApiResult<()> {
    conn.execute(
        "UPDATE tables SET name = ?1, updated_at = ?2 WHERE id = ?3",
        params![name, now(), id],
    )?;
    Ok(())
}

/// Exchanges two tables' names, so each name now holds the other's rows and schema. Not
/// idempotent: a retried swap swaps back (td-api.md §3).
async fn swap(
    State(state): State<AppState>,
    caller: Caller,
    Path((db, table1, table2)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require_master("swapping tables")?;
    if table1 == table2 {
        return Err(ApiError::unprocessable(format!(
            "cannot swap table '{db}.{table1}' with itself"
        )));
    }
    let account = caller.account_id();
    let (db_name, first, second) = (db.clone(), table1.clone(), table2.clone());
    state
        .store
        .write_async(move |tx| {
            let first_id = table_id(tx, account, &db_name, &first)?;
            let second_id = table_id(tx, account, &db_name, &second)?;
            // Names are unique per database, so one table steps aside under a name no valid
            // table can have ('-' fails check_name) while the other takes its place.
            set_table_name(tx, first_id, &format!("{first}-swapping"))?;
            set_table_name(tx, second_id, &first)?;
            set_table_name(tx, first_id, &second)?;
            Ok(())
        })
        .await?;
    Ok(Json(
        json!({ "database": db, "table1": table1, "table2": table2 }),
    ))
}

/// Renames a table; with `overwrite=true` an existing target is dropped in the same
/// transaction, so readers of the target see its old rows or the new ones, never neither.
async fn rename(
    State(state): State<AppState>,
    caller: Caller,
    Path((db, table, new_name)): Path<(String, String, String)>,
    params: Params,
) -> ApiResult<Json<Value>> {
    caller.require_master("renaming a table")?;
    check_name("table", &new_name)?;
    if new_name == table {
        return Err(ApiError::unprocessable(format!(
            "cannot rename table '{db}.{table}' to its own name"
        )));
    }
    let overwrite = strict_bool(&params, "overwrite")?.unwrap_or(false);
    let account = caller.account_id();
    let (db_name, from, to) = (db.clone(), table.clone(), new_name.clone());
    state
        .store
        .write_async(move |tx| {
            let source = table_id(tx, account, &db_name, &from)?;
            if let Some(target) = existing_table(tx, account, &db_name, &to)? {
                if !overwrite {
                    return Err(ApiError::conflict(format!(
                        "table '{db_name}.{to}' already exists; pass overwrite=true to replace it"
                    )));
                }
                drop_table(tx, target)?;
            }
            set_table_name(tx, source, &to)
        })
        .await?;
    Ok(table_reply(&db, &new_name))
}

/// A table's id, or None if the table does not exist (the database must).
fn existing_table(conn: &Connection, account: i64, db: &str, table: &str) -> ApiResult<Option<i64>> {
    let db_id = database_id(conn, account, db)?;
    Ok(conn
        .query_row(
            "SELECT id FROM tables WHERE database_id = ?1 AND name = ?2",
            params![db_id, table],
            |r| r.get(0),
        )
        .optional()?)
}

/// A boolean parameter that must be spelled as one (`true`/`false`/`1`/`0`, any case).
fn strict_bool(params: &Params, key: &str) -> ApiResult<Option<bool>> {
    match params.get(key) {
        None => Ok(None),
        Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(Some(true)),
        Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(Some(false)),
        Some(v) => Err(ApiError::bad_request(format!(
            "parameter '{key}' must be true or false, got '{v}'"
        ))),
    }
}

/// The table settings `update` can change; absent ones stay as they are.
struct TableSettings {
    expire_days: Option<i64>,
    include_v: Option<bool>,
    description: Option<String>,
}

impl TableSettings {
    fn from_params(params: &Params) -> ApiResult<TableSettings> {
        let expire_days = params.int("expire_days")?;
        if let Some(days) = expire_days.filter(|d| *d < 1) {
            return Err(ApiError::unprocessable(format!(
                "expire_days must be a positive number of days, got {days}"
            )));
        }
        let settings = TableSettings {
            expire_days,
            include_v: strict_bool(params, "include_v")?,
            description: params.get("description").map(str::to_owned),
        };
        if settings.expire_days.is_none() && settings.include_v.is_none() && settings.description.is_none() {
            return Err(ApiError::bad_request(
                "nothing to update: give expire_days, include_v or description",
            ));
        }
        Ok(settings)
    }

    fn apply(&self, conn: &Connection, id: i64) -> ApiResult<()> {
        conn.execute(
            "UPDATE tables SET expire_days = COALESCE(?1, expire_days), include_v = COALESCE(?2, include_v), \
             description = COALESCE(?3, description), updated_at = ?4 WHERE id = ?5",
            params![self.expire_days, self.include_v, self.description, now(), id],
        )?;
        Ok(())
    }
}

async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path((db, table)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Json<Value>> {
    caller.require_master("updating a table")?;
    let settings = TableSettings::from_params(&params)?;
    let account = caller.account_id();
    let (db_name, name) = (db.clone(), table.clone());
    state
        .store
        .write_async(move |tx| settings.apply(tx, table_id(tx, account, &db_name, &name)?))
        .await?;
    Ok(table_reply(&db, &table))
}

/// The `schema` parameter, parsed; duplicate column names are refused.
fn schema_param(params: &Params) -> ApiResult<Vec<TableColumn>> {
    let text = params
        .get("schema")
        .ok_or_else(|| ApiError::bad_request("parameter 'schema' is required"))?;
    let columns = parse_table_schema(text)?;
    for (i, column) in columns.iter().enumerate() {
        if columns[..i].iter().any(|c| c.name == column.name) {
            return Err(ApiError::unprocessable(format!(
                "column '{}' appears twice in the schema",
                column.name
            )));
        }
    }
    Ok(columns)
}

fn store_schema(conn: &Connection, id: i64, columns: &[TableColumn]) -> ApiResult<()> {
    conn.execute(
        "UPDATE tables SET schema = ?1, updated_at = ?2 WHERE id = ?3",
        params![table_schema_json(columns), now(), id],
    )?;
    Ok(())
}

/// Replaces the schema (master key only).
async fn update_schema(
    State(state): State<AppState>,
    caller: Caller,
    Path((db, table)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Json<Value>> {
    caller.require_master("updating a table schema")?;
    let columns = schema_param(&params)?;
    let account = caller.account_id();
    let (db_name, name) = (db.clone(), table.clone());
    state
        .store
        .write_async(move |tx| store_schema(tx, table_id(tx, account, &db_name, &name)?, &columns))
        .await?;
    Ok(table_reply(&db, &table))
}

/// Adds the columns the table lacks; existing ones keep their type. Allowed for write-only keys.
async fn append_schema(
    State(state): State<AppState>,
    caller: Caller,
    Path((db, table)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Json<Value>> {
    let added = schema_param(&params)?;
    let account = caller.account_id();
    let (db_name, name) = (db.clone(), table.clone());
    state
        .store
        .write_async(move |tx| {
            let id = table_id(tx, account, &db_name, &name)?;
            let mut columns = table_schema(tx, id)?;
            for column in added {
                if !columns.iter().any(|c| c.name == column.name) {
                    columns.push(column);
                }
            }
            store_schema(tx, id, &columns)
        })
        .await?;
    Ok(table_reply(&db, &table))
}

#[derive(Debug, Deserialize)]
struct TailQuery {
    count: Option<String>,
    format: Option<String>,
}

/// How `tail` writes rows.
#[derive(Debug, Clone, Copy)]
enum TailFormat {
    /// msgpack maps back to back (what the clients ask for).
    Msgpack,
    /// One JSON object per line.
    Json,
}

impl TailQuery {
    fn count(&self) -> ApiResult<i64> {
        let Some(text) = self.count.as_deref().filter(|c| !c.is_empty()) else {
            return Ok(DEFAULT_TAIL_COUNT);
        };
        match text.trim().parse::<i64>() {
            Ok(n) if (1..=MAX_TAIL_COUNT).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "count must be an integer from 1 to {MAX_TAIL_COUNT}, got '{text}'"
            ))),
        }
    }

    fn format(&self) -> ApiResult<TailFormat> {
        match self.format.as_deref().unwrap_or("json") {
            "msgpack" => Ok(TailFormat::Msgpack),
            "json" => Ok(TailFormat::Json),
            other => Err(ApiError::bad_request(format!(
                "unsupported tail format '{other}': use msgpack or json"
            ))),
        }
    }
}

/// The newest `count` rows, newest first.
async fn tail(
    State(state): State<AppState>,
    caller: Caller,
    Path((db, table)): Path<(String, String)>,
    Query(query): Query<TailQuery>,
) -> ApiResult<Response> {
    caller.require_master("reading a table's tail")?;
    let count = query.count()?;
    let format = query.format()?;
    let account = caller.account_id();
    let records = state
        .store
        .read_async(move |conn| {
            in_snapshot(conn, |conn| {
                let id = table_id(conn, account, &db, &table)?;
                let mut stmt = conn.prepare(
                    "SELECT record FROM records WHERE table_id = ?1 ORDER BY time DESC, rowid DESC LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![id, count], |r| r.get::<_, String>(0))?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
        })
        .await?;
    match format {
        TailFormat::Msgpack => {
            let mut body = Vec::new();
            for text in &records {
                let value: Value = serde_json::from_str(text)
                    .map_err(|e| ApiError::internal(format!("stored record is not JSON: {e}")))?;
                rmpv::encode::write_value(&mut body, &json_to_msgpack(&value))
                    .map_err(|e| ApiError::internal(format!("msgpack encoding failed: {e}")))?;
            }
            Ok(([(CONTENT_TYPE, "application/x-msgpack")], body).into_response())
        }
        TailFormat::Json => {
            let body: String = records.iter().map(|r| format!("{r}\n")).collect();
            Ok(([(CONTENT_TYPE, "application/x-ndjson")], body).into_response())
        }
    }
}
