//! Streaming import (td-api.md §4): `PUT /v3/table/import[_with_id]/…/msgpack.gz`.
//!
//! A body is decoded completely before anything is stored (all or nothing), and its rows go in
//! with the import id in one transaction, so a repeated `import_with_id` is stored once.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::put;
use axum::{Json, Router};
use md5::{Digest, Md5};
use rusqlite::params;
use serde_json::{json, Value};

use crate::accounts::Caller;
use crate::error::{ApiError, ApiResult};
use crate::records::{decode_import, insert_rows, Row};
use crate::store::table_id;
use crate::AppState;

/// The largest import body accepted. Bodies are held in memory while decoded, so this bounds
/// what one request can cost; the official clients send far smaller chunks.
pub const MAX_IMPORT_BODY_BYTES: usize = 512 << 20;

/// The one import format TD's clients send.
const IMPORT_FORMAT: &str = "msgpack.gz";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v3/table/import/{db}/{table}/{format}", put(import))
        .route(
            "/v3/table/import_with_id/{db}/{table}/{unique_id}/{format}",
            put(import_with_id),
        )
        // Replaces axum's 2 MB default; `read_body` answers a larger body with a TD error.
        .layer(DefaultBodyLimit::max(MAX_IMPORT_BODY_BYTES))
}

/// Where an import goes, and its id if the caller gave one.
struct ImportTarget {
    db: String,
    table: String,
    unique_id: Option<String>,
}

async fn import(
    State(state): State<AppState>,
    caller: Caller,
    Path((db, table, format)): Path<(String, String, String)>,
    request: Request,
) -> ApiResult<Json<Value>> {
    let target = ImportTarget {
        db,
        table,
        unique_id: None,
    };
    run_import(state, caller, target, &format, request).await
}

async fn import_with_id(
    State(state): State<AppState>,
    caller: Caller,
    Path((db, table, unique_id, format)): Path<(String, String, String, String)>,
    request: Request,
) -> ApiResult<Json<Value>> {
    let target = ImportTarget {
        db,
        table,
        unique_id: Some(unique_id),
    };
    run_import(state, caller, target, &format, request).await
}

async fn run_import(
    state: AppState,
    caller: Caller,
    target: ImportTarget,
    format: &str,
    request: Request,
) -> ApiResult<Json<Value>> {
    let started = Instant::now();
    if format != IMPORT_FORMAT {
        return Err(ApiError::bad_request(format!(
            "unsupported import format '{format}': use {IMPORT_FORMAT}"
        )));
    }
    check_declared_length(request.headers())?;
    let body = read_body(request).await?;
    let (rows, md5_hex) = tokio::task::spawn_blocking(move || {
        let md5_hex = hex::encode(Md5::digest(&body));
        decode_import(&body).map(|rows| (rows, md5_hex))
    })
    .await
    .map_err(|e| ApiError::internal(format!("decoding task failed: {e}")))??;
    let row_count = rows.len();
    let stored = store_import(&state, caller.account_id(), &target, rows).await?;
    tracing::debug!(
        db = %target.db, table = %target.table, rows = row_count, stored,
        unique_id = target.unique_id.as_deref().unwrap_or(""), "import"
    );
    Ok(Json(json!({
        "database": target.db,
        "table": target.table,
        "elapsed_time": started.elapsed().as_secs_f64(),
        "unique_id": target.unique_id,
        "md5_hex": md5_hex,
    })))
}

/// Refuses a body whose declared length is over the limit before reading any of it.
fn check_declared_length(headers: &HeaderMap) -> ApiResult<()> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > MAX_IMPORT_BODY_BYTES as u64 => Err(too_large()),
        _ => Ok(()),
    }
}

fn too_large() -> ApiError {
    ApiError::too_large(format!(
        "import body is larger than {MAX_IMPORT_BODY_BYTES} bytes; split it into smaller imports"
    ))
}

/// Reads the whole body (with or without Content-Length, chunked included) under the route's
/// `DefaultBodyLimit`, turning the limit's rejection into a TD error.
async fn read_body(request: Request) -> ApiResult<Bytes> {
    Bytes::from_request(request, &()).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            ApiError::bad_request(format!("could not read the import body: {rejection}"))
        }
    })
}

/// Stores the rows; with an import id, only if that id is new for the table. Returns whether
/// the rows were stored.
async fn store_import(
    state: &AppState,
    account: i64,
    target: &ImportTarget,
    rows: Vec<Row>,
) -> ApiResult<bool> {
    let (db, table, unique_id) = (target.db.clone(), target.table.clone(), target.unique_id.clone());
    state
        .store
        .write_async(move |tx| {
            let id = table_id(tx, account, &db, &table)?;
            if let Some(unique_id) = &unique_id {
                let first_time = tx.execute(
                    "INSERT OR IGNORE INTO import_ids (table_id, unique_id) VALUES (?1, ?2)",
                    params![id, unique_id],
                )? == 1;
                if !first_time {
                    return Ok(false);
                }
            }
            insert_rows(tx, id, &rows)?;
            Ok(true)
        })
        .await
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::put;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;

    /// A route that reads its body like the import routes, under a limit of `limit` bytes.
    fn limited_echo(limit: usize) -> Router {
        async fn echo(request: Request) -> ApiResult<String> {
            Ok(read_body(request).await?.len().to_string())
        }
        Router::new()
            .route("/echo", put(echo))
            .layer(DefaultBodyLimit::max(limit))
    }

    fn chunked(chunks: usize, size: usize) -> Body {
        let stream = futures::stream::iter(
            (0..chunks).map(move |_| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; size]))),
        );
        Body::from_stream(stream)
    }

    async fn put_body(limit: usize, body: Body) -> (StatusCode, String) {
        let request = axum::http::Request::put("/echo").body(body).unwrap();
        let response = limited_echo(limit).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn a_chunked_body_within_the_limit_is_read_whole() {
        let (status, body) = put_body(1000, chunked(10, 100)).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "1000"));
    }

    #[tokio::test]
    async fn a_chunked_body_over_the_limit_is_a_td_413() {
        let (status, body) = put_body(1000, chunked(11, 100)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let error: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["status_code"], 413);
        assert!(
            error["message"].as_str().unwrap().contains("larger than"),
            "{error}"
        );
    }
}
