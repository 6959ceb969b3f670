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

/// Strips the optional `.json` suffix the clients may add to a route (td-api.md §1). Paths that
/// end in a user-chosen name with a dot (import formats, part names) keep theirs.
pub fn strip_json_suffix(uri: &Uri) -> Option<Uri> {
    let path = uri.path();
    let stripped = path.strip_suffix(".json")?;
    let named_by_user = [
        "/v3/bulk_import/upload_part/",
        "/v3/bulk_import/delete_part/",
        "/v3/table/import",
    ];
    if named_by_user.iter().any(|prefix| path.starts_with(prefix)) {
        return None;
    }
    let rebuilt = match uri.query() {
        Some(q) => format!("{stripped}?{q}"),
        None => stripped.to_string(),
    };
    rebuilt.parse().ok()
}
