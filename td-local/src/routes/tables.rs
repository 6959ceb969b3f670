//! `/v3/table/*` (docs/td-api.md §3): list, show, create, delete, swap, rename, update, schema, tail.

use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use td_model::time::td_timestamp;

use crate::accounts::Caller;
use crate::catalog::{self, NewTable, Table, TableSettings, LOG_TYPE, MAX_TAIL_COUNT};
use crate::error::Error;
use crate::records::json_to_msgpack;
use crate::routes::error::ApiResult;
use crate::routes::params::Params;
use crate::state::AppState;

/// `tail` returns this many rows unless `count` says otherwise.
const DEFAULT_TAIL_COUNT: i64 = 10;

pub(super) fn routes() -> Router<AppState> {
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

/// ISO-8601 UTC, as TD writes `counter_updated_at` and `last_log_timestamp`.
fn iso_time(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The Table object of docs/td-api.md §3; `schema` stays the JSON text it is stored as.
fn table_json(t: &Table) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "type": LOG_TYPE,
        "count": t.count,
        "estimated_storage_size": t.estimated_storage_size,
        "counter_updated_at": iso_time(t.updated_at),
        "last_log_timestamp": t.last_log_time.map(iso_time),
        "created_at": td_timestamp(t.created_at),
        "updated_at": td_timestamp(t.updated_at),
        "expire_days": t.expire_days,
        "include_v": t.include_v,
        "delete_protected": false,
        "description": t.description,
        "schema": t.schema,
    })
}

/// A database's tables; master key only (an import-only key is refused, treasure-data/td PR #38).
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
        .read_async(move |conn| catalog::list_tables(conn, account, &name))
        .await?;
    let items: Vec<Value> = tables.iter().map(table_json).collect();
    Ok(Json(json!({ "database": db, "tables": items })))
}

/// One table. Allowed for write-only keys: embulk-output-td reads the target with `showTable`
/// (PR #64, https://github.com/treasure-data/embulk-output-td/pull/64) and never handles a 403
/// from it, and PR #65 (https://github.com/treasure-data/embulk-output-td/pull/65) reports a
/// successful run with a write-only key. `table/list` stays master-only: an import-only key is
/// refused it (treasure-data/td PR #38).
async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path((db, table)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let account = caller.account_id();
    let shown = state
        .store
        .read_async(move |conn| catalog::show_table(conn, account, &db, &table))
        .await?;
    Ok(Json(table_json(&shown)))
}

/// `{database, table, type}`: the answer of create, delete, rename and the updates.
fn table_reply(db: &str, table: &str) -> Json<Value> {
    Json(json!({ "database": db, "table": table, "type": LOG_TYPE }))
}

/// Runs a write of the catalog on `db.table` of the caller's account and answers [`table_reply`].
async fn table_write(
    state: &AppState,
    caller: &Caller,
    (db, table): (String, String),
    write: impl FnOnce(&rusqlite::Connection, i64, &str, &str) -> crate::error::Result<()> + Send + 'static,
) -> ApiResult<Json<Value>> {
    let account = caller.account_id();
    let reply = table_reply(&db, &table);
    state
        .store
        .write_async(move |tx| write(tx, account, &db, &table))
        .await?;
    Ok(reply)
}

async fn create_log(
    state: State<AppState>,
    caller: Caller,
    Path((db, table)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Json<Value>> {
    create(state, caller, Path((db, table, LOG_TYPE.to_string())), params).await
}

/// The settings `table/create` and `table/update` take.
fn settings_param(params: &Params) -> ApiResult<TableSettings> {
    Ok(TableSettings {
        expire_days: params.int("expire_days")?,
        include_v: params.strict_bool("include_v")?,
        description: params.get("description").map(str::to_owned),
    })
}

/// Creates a table; master key only, but a write-only key creating a table that exists gets
/// the 409 a master key gets, not 403: embulk-output-td's `createTableIfNotExists` (run by
/// default, `auto_create_table`) ignores only a 404 or a 409 from `createTable`, and a run with a
/// write-only key succeeds against TD (PR #65,
/// https://github.com/treasure-data/embulk-output-td/pull/65).
///
/// It takes `schema`, `expire_days`, `include_v`, `description` and `idempotent_key` (TD's API
/// description, createTable).
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path((db, table, kind)): Path<(String, String, String)>,
    params: Params,
) -> ApiResult<Json<Value>> {
    if caller.write_only {
        let account = caller.account_id();
        let names = (db.clone(), table.clone());
        let exists = state
            .store
            .read_async(move |conn| catalog::table_exists(conn, account, &names.0, &names.1))
            .await?;
        if exists {
            return Err(catalog::table_exists_error(&db, &table).into());
        }
    }
    caller.require_master("creating a table")?;
    let new = NewTable {
        schema: match params.get("schema") {
            Some(text) => Some(catalog::parse_schema_param(text, false)?),
            None => None,
        },
        settings: settings_param(&params)?,
        idempotent_key: params.get("idempotent_key").map(str::to_owned),
    };
    table_write(&state, &caller, (db, table), move |tx, account, db, table| {
        catalog::create_table(tx, account, db, table, &kind, &new)
    })
    .await
}

async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(names): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require_master("deleting a table")?;
    table_write(&state, &caller, names, catalog::delete_table).await
}

/// Exchanges two tables' names. Not idempotent: a retried swap swaps back (docs/td-api.md §3).
async fn swap(
    State(state): State<AppState>,
    caller: Caller,
    Path((db, table1, table2)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require_master("swapping tables")?;
    let account = caller.account_id();
    let reply = json!({ "database": db, "table1": table1, "table2": table2 });
    let lag = state.count_lag;
    state
        .store
        .write_async(move |tx| catalog::swap_tables(tx, account, &db, &table1, &table2, lag))
        .await?;
    Ok(Json(reply))
}

/// Renames a table; `overwrite=true` replaces an existing target in the same step.
async fn rename(
    State(state): State<AppState>,
    caller: Caller,
    Path((db, table, new_name)): Path<(String, String, String)>,
    params: Params,
) -> ApiResult<Json<Value>> {
    caller.require_master("renaming a table")?;
    let overwrite = params.strict_bool("overwrite")?.unwrap_or(false);
    let from = table;
    let lag = state.count_lag;
    table_write(&state, &caller, (db, new_name), move |tx, account, db, to| {
        catalog::rename_table(tx, account, db, &from, to, overwrite, lag)
    })
    .await
}

async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(names): Path<(String, String)>,
    params: Params,
) -> ApiResult<Json<Value>> {
    caller.require_master("updating a table")?;
    let settings = settings_param(&params)?;
    let detect_schema = params.strict_bool("detect_schema")?.unwrap_or(false);
    table_write(&state, &caller, names, move |tx, account, db, table| {
        catalog::update_table(tx, account, db, table, &settings, detect_schema)
    })
    .await
}

/// The `schema` parameter, parsed; `ignore_duplicate_schema` drops a column named again.
fn schema_param(params: &Params) -> ApiResult<Vec<td_model::schema::TableColumn>> {
    let ignore_duplicates = params.strict_bool("ignore_duplicate_schema")?.unwrap_or(false);
    Ok(catalog::parse_schema_param(
        params.required("schema", Error::BadRequest)?,
        ignore_duplicates,
    )?)
}

/// Replaces the schema (master key only).
async fn update_schema(
    State(state): State<AppState>,
    caller: Caller,
    Path(names): Path<(String, String)>,
    params: Params,
) -> ApiResult<Json<Value>> {
    caller.require_master("updating a table schema")?;
    let columns = schema_param(&params)?;
    table_write(&state, &caller, names, move |tx, account, db, table| {
        catalog::replace_schema(tx, account, db, table, &columns)
    })
    .await
}

/// Adds the columns the table lacks; existing ones keep their type. Allowed for write-only keys.
async fn append_schema(
    State(state): State<AppState>,
    caller: Caller,
    Path(names): Path<(String, String)>,
    params: Params,
) -> ApiResult<Json<Value>> {
    let added = schema_param(&params)?;
    table_write(&state, &caller, names, move |tx, account, db, table| {
        catalog::append_schema(tx, account, db, table, added)
    })
    .await
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
    fn count(&self) -> Result<i64, Error> {
        let Some(text) = self.count.as_deref().filter(|c| !c.is_empty()) else {
            return Ok(DEFAULT_TAIL_COUNT);
        };
        match text.trim().parse::<i64>() {
            Ok(n) if (1..=MAX_TAIL_COUNT).contains(&n) => Ok(n),
            _ => Err(Error::bad_request(format!(
                "count must be an integer from 1 to {MAX_TAIL_COUNT}, got '{text}'"
            ))),
        }
    }

    fn format(&self) -> Result<TailFormat, Error> {
        match self.format.as_deref().unwrap_or("json") {
            "msgpack" => Ok(TailFormat::Msgpack),
            "json" => Ok(TailFormat::Json),
            other => Err(Error::bad_request(format!(
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
        .read_async(move |conn| catalog::tail(conn, account, &db, &table, count))
        .await?;
    match format {
        TailFormat::Msgpack => {
            let mut body = Vec::new();
            for text in &records {
                let value: Value = serde_json::from_str(text)
                    .map_err(|e| Error::internal(format!("stored record is not JSON: {e}")))?;
                rmpv::encode::write_value(&mut body, &json_to_msgpack(&value))
                    .map_err(|e| Error::internal(format!("msgpack encoding failed: {e}")))?;
            }
            Ok(([(CONTENT_TYPE, "application/x-msgpack")], body).into_response())
        }
        TailFormat::Json => {
            let body: String = records.iter().map(|r| format!("{r}\n")).collect();
            Ok(([(CONTENT_TYPE, "application/x-ndjson")], body).into_response())
        }
    }
}
