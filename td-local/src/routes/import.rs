//! Streaming import (td-api.md §4): `PUT /v3/table/import[_with_id]/…/msgpack.gz`. The body is
//! read here, under a limit; decoding and storing it is `crate::import`.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::put;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::accounts::Caller;
use crate::error::Error;
use crate::import::{self, ImportTarget};
use crate::routes::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::blocking;

/// The largest import body accepted. Bodies are held in memory while decoded, so this bounds
/// what one request can cost; the official clients send far smaller chunks.
pub const MAX_IMPORT_BODY_BYTES: usize = 512 << 20;

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
    import::check_format(format)?;
    check_declared_length(request.headers())?;
    let body = read_body(request).await?;
    let (store, account) = (state.store.clone(), caller.account_id());
    let (imported, target) = blocking(move || {
        let imported = import::import(&store, account, &target, &body)?;
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
    Error::TooLarge(format!(
        "import body is larger than {MAX_IMPORT_BODY_BYTES} bytes; split it into smaller imports"
    ))
    .into()
}

/// Reads the whole body (with or without Content-Length, chunked included) under the route's
/// `DefaultBodyLimit`, turning the limit's rejection into a TD error.
async fn read_body(request: Request) -> ApiResult<Bytes> {
    Bytes::from_request(request, &()).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            Error::bad_request(format!("could not read the import body: {rejection}")).into()
        }
    })
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
