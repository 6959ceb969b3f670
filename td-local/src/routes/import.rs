//! Streaming import (docs/td-api.md §4): `PUT /v3/table/import[_with_id]/…/msgpack.gz`. The body is
//! received here under the server's limits (`crate::limits`, `routes::body`); decoding and
//! storing it is `crate::import`.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::HeaderMap;
use axum::routing::put;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::accounts::Caller;
use crate::import::{self, ImportTarget};
use crate::routes::body::{read_gzip_body, GzipLimits};
use crate::routes::error::ApiResult;
use crate::state::AppState;
use crate::store::blocking;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v3/table/import/{db}/{table}/{format}", put(import))
        .route(
            "/v3/table/import_with_id/{db}/{table}/{unique_id}/{format}",
            put(import_with_id),
        )
        // `read_gzip_body` applies the server's limits with a TD error itself.
        .layer(DefaultBodyLimit::disable())
}

async fn import(
    State(state): State<AppState>,
    caller: Caller,
    Path((db, table, format)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    let target = ImportTarget {
        db,
        table,
        unique_id: None,
    };
    run_import(state, caller, target, &format, headers, body).await
}

async fn import_with_id(
    State(state): State<AppState>,
    caller: Caller,
    Path((db, table, unique_id, format)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    let target = ImportTarget {
        db,
        table,
        unique_id: Some(unique_id),
    };
    run_import(state, caller, target, &format, headers, body).await
}

async fn run_import(
    state: AppState,
    caller: Caller,
    target: ImportTarget,
    format: &str,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Value>> {
    let started = Instant::now();
    import::check_format(format)?;
    let limits = GzipLimits {
        bytes: state.limits.import_body_bytes,
        inflated: state.limits.import_inflated_bytes,
    };
    let body = read_gzip_body(&headers, body, limits, "the import body").await?;
    let (store, limits, account) = (state.store.clone(), state.limits, caller.account_id());
    let (imported, target) = blocking(move || {
        let imported = import::import(&store, &limits, account, &target, &body)?;
        Ok((imported, target))
    })
    .await?;
    tracing::debug!(
        db = %target.db, table = %target.table, rows = imported.rows, stored = imported.stored,
        unique_id = target.unique_id.as_deref().unwrap_or(""), "import"
    );
    Ok(Json(json!({
        "database": target.db,
        "table": target.table,
        "elapsed_time": started.elapsed().as_secs_f64(),
        "unique_id": target.unique_id,
        "md5_hex": imported.md5_hex,
    })))
}
