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

/// The path a route is matched on: repeated slashes merged, then the `.json` suffix stripped.
/// td-client-python joins an endpoint given without a trailing slash into `//v3/...`; TD's front
/// proxy merges the slashes, so the client works against TD either way and must here too.
pub fn normalize_uri(uri: &Uri) -> Option<Uri> {
    let merged = merge_slashes(uri);
    match strip_json_suffix(merged.as_ref().unwrap_or(uri)) {
        Some(stripped) => Some(stripped),
        None => merged,
    }
}

fn merge_slashes(uri: &Uri) -> Option<Uri> {
    let path = uri.path();
    if !path.contains("//") {
        return None;
    }
    let mut merged = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && merged.ends_with('/')) {
            merged.push(c);
        }
    }
    if let Some(q) = uri.query() {
        merged.push('?');
        merged.push_str(q);
    }
    merged.parse().ok()
}

/// Strips the optional `.json` suffix the clients may add to a route (td-api.md §1). Paths that
/// end in a user-chosen name with a dot (import formats, part names) keep theirs.
pub fn strip_json_suffix(uri: &Uri) -> Option<Uri> {
    let path = uri.path();
    let stripped = path.strip_suffix(".json")?;
    if path.starts_with("/v3/bulk_import/upload_part/") || path.starts_with("/v3/table/import") {
        return None;
    }
    let rebuilt = match uri.query() {
        Some(q) => format!("{stripped}?{q}"),
        None => stripped.to_string(),
    };
    rebuilt.parse().ok()
}
