//! Result destinations (td-api.md §6 "Result export", §7): `POST /v3/job/result_export/:id`,
//! saved results (`/v3/result/*`) and `GET /v3/connections/lookup`. A saved result is also the
//! connection that `result_connection_id` names. Master key only for all of them.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde_json::{json, Value};

use crate::accounts::Caller;
use crate::error::{ApiError, ApiResult};
use crate::jobs::{self, NewJob, Outcome};
use td_model::key::mask_keys;
use td_model::TdUrl;

use crate::output::{self, OutputTarget};
use crate::params::Params;
use crate::AppState;

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
        .map_err(|_| ApiError::not_found(format!("job '{job_id}' does not exist")))?;
    let destination = state
        .store
        .read_async(move |conn| export_destination(conn, account, &params))
        .await?;
    let target = output::resolve(&destination, &state, account)?;
    let job_target = target.clone();
    let export_id = state
        .store
        .write_async(move |tx| insert_export_job(tx, account, source_id, &job_target))
        .await?;
    let database = target.database.clone();
    tokio::task::spawn_blocking(move || run_export(&state, export_id, source_id, &target));
    Ok(Json(json!({
        "job_id": export_id.to_string(),
        "job": export_id.to_string(),
        "database": database,
    })))
}

/// The destination of an export: `result` (a td:// URL or a saved result's `NAME[:TABLE]`), or
/// `result_connection_id` (a saved result) with `result_connection_settings` overriding its parts.
fn export_destination(conn: &Connection, account: i64, params: &Params) -> ApiResult<TdUrl> {
    if let Some(url) = params.get("result") {
        return output::destination(conn, account, url);
    }
    let Some(id) = params.get("result_connection_id") else {
        return Err(ApiError::unprocessable(
            "either 'result' (a td:// URL) or 'result_connection_id' with 'result_connection_settings' is required",
        ));
    };
    let id: i64 = id.trim().parse().map_err(|_| {
        ApiError::unprocessable(format!("result_connection_id must be an integer, got '{id}'"))
    })?;
    let url: String = conn
        .query_row(
            "SELECT url FROM saved_results WHERE id = ?1 AND account_id = ?2",
            params![id, account],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| ApiError::not_found(format!("result connection {id} does not exist")))?;
    let mut destination = output::parse_url(&url)?;
    if let Some(settings) = params.get("result_connection_settings") {
        output::apply_settings(&mut destination, settings)?;
    }
    Ok(destination)
}

/// Records the export job and links it with its source, which must have a result.
fn insert_export_job(
    tx: &Transaction,
    account: i64,
    source_id: i64,
    target: &OutputTarget,
) -> ApiResult<i64> {
    let source: Option<(String, Option<String>)> = tx
        .query_row(
            "SELECT status, hive_result_schema FROM jobs WHERE id = ?1 AND account_id = ?2",
            params![source_id, account],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match source {
        None => return Err(ApiError::not_found(format!("job {source_id} does not exist"))),
        Some((status, _)) if status != "success" => {
            return Err(ApiError::unprocessable(format!(
                "job {source_id} has no result to export: its status is '{status}', not 'success'"
            )))
        }
        Some((_, None)) => {
            return Err(ApiError::unprocessable(format!(
                "job {source_id} has no result to export"
            )))
        }
        Some(_) => {}
    }
    let export_id = jobs::insert(
        tx,
        &NewJob {
            account_id: account,
            job_type: "result_export".to_string(),
            database: target.database.clone(),
            result_url: target.masked_url(),
            ..NewJob::default()
        },
    )?;
    tx.execute(
        "UPDATE jobs SET result_export_target_job_id = ?1 WHERE id = ?2",
        params![source_id, export_id],
    )?;
    tx.execute(
        "UPDATE jobs SET linked_result_export_job_id = ?1 WHERE id = ?2",
        params![export_id, source_id],
    )?;
    Ok(export_id)
}

/// The export job's life: running → success with the rows written, or error with the reason.
fn run_export(state: &AppState, export_id: i64, source_id: i64, target: &OutputTarget) {
    let finished = jobs::mark_running(&state.store, export_id)
        .and_then(|()| output::write_job_result(state, source_id, target))
        .and_then(|rows| {
            let outcome = Outcome {
                num_records: rows as i64,
                cmdout: format!(
                    "wrote {rows} rows of job {source_id} to {}\n",
                    target.masked_url()
                ),
                ..Outcome::default()
            };
            state
                .store
                .write(|tx| jobs::mark_success(tx, export_id, &outcome))
        });
    if let Err(e) = finished {
        tracing::warn!(job = export_id, source = source_id, error = %e.message, "result export failed");
        if let Err(e) = jobs::mark_error(&state.store, export_id, &e.message) {
            tracing::error!(job = export_id, error = %e, "cannot record the export job's failure");
        }
    }
}

/// Saved result names: 1–128 letters, digits, `_` and `-` (TD's exact rule is unconfirmed).
fn check_result_name(name: &str) -> ApiResult<()> {
    let ok = (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::unprocessable(format!(
            "invalid result name '{name}': use 1 to 128 letters, digits, '_' and '-'"
        )))
    }
}

/// Lists the account's saved results. The URLs are shown with their credentials masked
/// (`td://***@host/db`): TD's UI and clients display them, but a listing is easy to leak and
/// nothing needs the key back — `result_connection_id` and `NAME:TABLE` use the stored URL.
async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require_master("listing saved results")?;
    let account = caller.account_id();
    let results = state
        .store
        .read_async(move |conn| {
            let mut stmt =
                conn.prepare("SELECT id, name, url FROM saved_results WHERE account_id = ?1 ORDER BY name")?;
            let rows = stmt.query_map(params![account], |r| {
                let id: i64 = r.get(0)?;
                let name: String = r.get(1)?;
                let url: String = r.get(2)?;
                Ok(json!({ "id": id, "name": name, "url": mask_keys(&url), "organization": null }))
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await?;
    Ok(Json(json!({ "results": results })))
}

async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    params: Params,
) -> ApiResult<Json<Value>> {
    caller.require_master("creating a saved result")?;
    check_result_name(&name)?;
    let url = params
        .get("url")
        .ok_or_else(|| ApiError::unprocessable("parameter 'url' is required"))?
        .to_string();
    check_saved_url(&url)?;
    let account = caller.account_id();
    let saved = name.clone();
    state
        .store
        .write_async(move |tx| {
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO saved_results (account_id, name, url) VALUES (?1, ?2, ?3)",
                params![account, saved, url],
            )?;
            if inserted == 0 {
                return Err(ApiError::conflict(format!("result '{saved}' already exists")));
            }
            Ok(())
        })
        .await?;
    Ok(Json(json!({ "result": name })))
}

/// td:// URLs are checked now (syntax and names; the key when used). TD saves many other kinds of
/// destination, so other schemes are kept as given: td-local refuses them only when an export uses them.
fn check_saved_url(url: &str) -> ApiResult<()> {
    match url.split_once("://") {
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("td") => output::parse_url(url).map(drop),
        Some((scheme, _)) if !scheme.is_empty() => Ok(()),
        _ => Err(ApiError::unprocessable(
            "invalid url: expected td://[APIKEY]@[HOST]/DATABASE[/TABLE] or another scheme://…",
        )),
    }
}

async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_master("deleting a saved result")?;
    let account = caller.account_id();
    let saved = name.clone();
    state
        .store
        .write_async(move |tx| {
            let deleted = tx.execute(
                "DELETE FROM saved_results WHERE account_id = ?1 AND name = ?2",
                params![account, saved],
            )?;
            if deleted == 0 {
                return Err(ApiError::not_found(format!("result '{saved}' does not exist")));
            }
            Ok(())
        })
        .await?;
    Ok(Json(json!({ "result": name })))
}

/// `GET /v3/connections/lookup?name=N` → `{"id": N}`, the saved result's id.
async fn lookup(State(state): State<AppState>, caller: Caller, params: Params) -> ApiResult<Json<Value>> {
    caller.require_master("looking up a connection")?;
    let name = params
        .get("name")
        .ok_or_else(|| ApiError::unprocessable("parameter 'name' is required"))?
        .to_string();
    let account = caller.account_id();
    let id = state
        .store
        .read_async(move |conn| {
            conn.query_row(
                "SELECT id FROM saved_results WHERE account_id = ?1 AND name = ?2",
                params![account, name],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
            .ok_or_else(|| ApiError::not_found(format!("connection '{name}' does not exist")))
        })
        .await?;
    Ok(Json(json!({ "id": id })))
}
