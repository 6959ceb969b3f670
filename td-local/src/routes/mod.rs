//! The HTTP routes of `/v3/`, one module per group of td-api.md.

mod bulk_import;
mod databases;
mod import;
mod jobs;
mod results;
mod tables;

use axum::http::{Method, Uri};
use axum::Router;

use crate::error::ApiError;
use crate::AppState;

pub fn api() -> Router<AppState> {
    Router::new()
        .merge(databases::routes())
        .merge(tables::routes())
        .merge(import::routes())
        .merge(bulk_import::routes())
        .merge(jobs::routes())
        .merge(results::routes())
}

pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no such API call: {method} {}", uri.path()))
}

/// Rewrites a request path the way TD's front end tolerates it: a doubled leading slash (the
/// Python client joins `http://host:port` and `/v3/...` into `//v3/...`) is collapsed, and the
/// optional `.json` suffix of a route is stripped (td-api.md §1). Paths that end in a
/// user-chosen name with a dot (import formats, part names) keep theirs.
pub fn normalize_uri(uri: &Uri) -> Option<Uri> {
    let original = uri.path();
    let mut path = original.trim_start_matches('/');
    let mut owned = format!("/{path}");
    if let Some(stripped) = owned.strip_suffix(".json") {
        let keeps_dot =
            owned.starts_with("/v3/bulk_import/upload_part/") || owned.starts_with("/v3/table/import");
        if !keeps_dot {
            owned = stripped.to_string();
        }
    }
    path = &owned;
    if path == original {
        return None;
    }
    let rebuilt = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    rebuilt.parse().ok()
}
