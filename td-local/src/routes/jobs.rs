//! Routes of the `jobs` group (to be implemented).

use axum::Router;

use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
