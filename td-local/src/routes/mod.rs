//! The HTTP routes of `/v3/`, one module per group of docs/td-api.md. A handler reads the request
//! (path, parameters, key), calls the domain, and renders its answer as TD's JSON; domain errors
//! become HTTP statuses here and nowhere else ([`error`]).

pub(crate) mod admin;
mod body;
mod bulk_import;
mod databases;
pub(crate) mod error;
mod import;
mod jobs;
pub(crate) mod params;
mod results;
mod schedules;
mod tables;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Method, Uri};
use axum::Router;

use crate::accounts::Caller;
use crate::error::Error;
use crate::state::AppState;
use error::ApiError;

pub(crate) fn api() -> Router<AppState> {
    Router::new()
        .merge(databases::routes())
        .merge(tables::routes())
        .merge(import::routes())
        .merge(bulk_import::routes())
        .merge(jobs::routes())
        .merge(results::routes())
        .merge(schedules::routes())
}

pub(crate) async fn not_found(method: Method, uri: Uri) -> ApiError {
    Error::not_found(format!("no such API call: {method} {}", uri.path())).into()
}

/// The caller is whoever holds the key of `Authorization: TD1 <key>`.
impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let unauthorized = |message: &str| ApiError::from(Error::Unauthorized(message.into()));
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| unauthorized("missing Authorization header (expected 'TD1 <apikey>')"))?;
        let key = header
            .strip_prefix("TD1 ")
            .map(str::trim)
            .ok_or_else(|| unauthorized("Authorization header must be 'TD1 <apikey>'"))?;
        state
            .accounts
            .lookup(key)
            .ok_or_else(|| unauthorized("invalid API key"))
    }
}

/// The path a route is matched on: repeated slashes merged, then the optional `.json` suffix
/// stripped (docs/td-api.md §1). td-client-python joins an endpoint given without a trailing slash
/// into `//v3/...`; TD's front proxy merges the slashes, so the client works either way and must
/// here too. Paths that end in a user-chosen name with a dot (import formats, part names) keep it.
pub(crate) fn normalize_uri(uri: &Uri) -> Option<Uri> {
    let original = uri.path();
    let mut path = String::with_capacity(original.len());
    for c in original.chars() {
        if !(c == '/' && path.ends_with('/')) {
            path.push(c);
        }
    }
    let named_by_user = [
        "/v3/bulk_import/upload_part/",
        "/v3/bulk_import/delete_part/",
        "/v3/table/import",
    ];
    let keeps_dot = named_by_user.iter().any(|prefix| path.starts_with(prefix));
    if !keeps_dot && path.ends_with(".json") {
        path.truncate(path.len() - ".json".len());
    }
    if path == original {
        return None;
    }
    if let Some(q) = uri.query() {
        path.push('?');
        path.push_str(q);
    }
    path.parse().ok()
}
