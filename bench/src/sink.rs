//! `tdre-bench sink`: a server that takes bulk-import part uploads and throws them away, answering
//! each at once, so that a transfer against it measures the transfer alone. It prints
//! `listening on http://127.0.0.1:PORT` as its first line (as td-local does) and serves until it
//! is killed.
//!
//! - `PUT /v3/bulk_import/upload_part/{session}/{part}`: reads the whole body, counts it, answers
//!   `{}` (200).
//! - `GET /_sink/stats`: `{"parts": N, "bytes": N}` received so far.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{json, Value};

#[derive(Default)]
struct Stats {
    parts: AtomicU64,
    bytes: AtomicU64,
}

pub async fn serve() -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route(
            "/v3/bulk_import/upload_part/{session}/{part}",
            put(upload_part).layer(DefaultBodyLimit::disable()),
        )
        .route("/_sink/stats", get(stats))
        .with_state(Arc::new(Stats::default()));
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on http://{addr}")?;
    stdout.flush()?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn upload_part(
    State(stats): State<Arc<Stats>>,
    Path((_session, _part)): Path<(String, String)>,
    body: Body,
) -> Result<Json<Value>, (StatusCode, String)> {
    let mut stream = body.into_data_stream();
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| (StatusCode::BAD_REQUEST, format!("reading the part: {e}")))?;
        bytes += chunk.len() as u64;
    }
    stats.bytes.fetch_add(bytes, Ordering::Relaxed);
    stats.parts.fetch_add(1, Ordering::Relaxed);
    Ok(Json(json!({})))
}

async fn stats(State(stats): State<Arc<Stats>>) -> Json<Value> {
    Json(json!({
        "parts": stats.parts.load(Ordering::Relaxed),
        "bytes": stats.bytes.load(Ordering::Relaxed),
    }))
}
