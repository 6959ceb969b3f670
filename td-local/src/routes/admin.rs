//! The HTTP side of fault injection: the middleware that logs every request and applies the
//! fault rules (`crate::faults`), and the `/_td_local/` admin routes that manage them.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::accounts::{Account, Caller};
use crate::error::Error;
use crate::faults::{FaultAction, FaultRule, Fired, LoggedRequest, ResetConnection};
use crate::routes::error::{ApiError, ApiResult};
use crate::routes::params::Params;
use crate::state::AppState;

/// Paths under this prefix are the admin routes: never logged, never faulted.
pub(crate) const ADMIN_PREFIX: &str = "/_td_local/";

/// Logs each request; applies the fault rules. Admin routes pass straight through.
pub(crate) async fn middleware(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if path.starts_with(ADMIN_PREFIX) {
        return next.run(req).await;
    }
    let method = req.method().to_string();
    let account = account_of(&state, req.headers());
    let fired = state.faults.decide(&method, &path);
    let response = match &fired {
        None => next.run(req).await,
        Some(fired) => apply(fired, req, next).await,
    };
    let reset = response.extensions().get::<ResetConnection>().is_some();
    state.faults.record(LoggedRequest {
        method,
        path,
        status: if reset { 0 } else { response.status().as_u16() },
        account,
        fault: fired.as_ref().map(Fired::describe),
    });
    response
}

fn account_of(state: &AppState, headers: &HeaderMap) -> Option<i64> {
    let key = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("TD1 ")?;
    state.accounts.lookup(key.trim()).map(|c| c.account.id)
}

async fn apply(fired: &Fired, req: Request, next: Next) -> Response {
    match fired.action {
        FaultAction::Status { status, retry_after } => injected_status(fired.rule, status, retry_after),
        FaultAction::Reset => {
            let mut response = Response::new(Body::empty());
            response.extensions_mut().insert(ResetConnection);
            response
        }
        FaultAction::Delay { millis } => {
            tokio::time::sleep(Duration::from_millis(millis)).await;
            next.run(req).await
        }
        FaultAction::Truncate { after_bytes } => truncate(next.run(req).await, after_bytes).await,
        FaultAction::Throttle { bytes, millis } => throttle(next.run(req).await, bytes, millis),
    }
}

/// Sends the body `bytes` at a time, `millis` apart (headers at once).
fn throttle(response: Response, bytes: usize, millis: u64) -> Response {
    let (parts, body) = response.into_parts();
    let bytes = bytes.max(1);
    let pieces = body.into_data_stream().flat_map(move |chunk| {
        let pieces: Vec<Result<Bytes, axum::Error>> = match chunk {
            Ok(chunk) => (0..chunk.len())
                .step_by(bytes)
                .map(|at| Ok(chunk.slice(at..(at + bytes).min(chunk.len()))))
                .collect(),
            Err(e) => vec![Err(e)],
        };
        futures::stream::iter(pieces)
    });
    let paced = pieces.then(move |piece| async move {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        piece
    });
    Response::from_parts(parts, Body::from_stream(paced))
}

fn injected_status(rule: u64, status: u16, retry_after: Option<u64>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reason = code.canonical_reason().unwrap_or("Error");
    let mut response =
        ApiError::new(code, format!("{reason} (injected by td-local fault rule {rule})")).into_response();
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// The body stream failed on purpose after its first bytes.
#[derive(Debug, thiserror::Error)]
#[error("body truncated by fault injection")]
struct Truncated;

/// Keeps the status, the headers and the full `Content-Length`, sends the first `after_bytes`
/// bytes, then fails the body so the server drops the connection mid-body.
async fn truncate(response: Response, after_bytes: usize) -> Response {
    let (mut parts, body) = response.into_parts();
    let full = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(e) => {
            return ApiError::from(Error::internal(format!("reading the body to truncate: {e}")))
                .into_response()
        }
    };
    if full.len() <= after_bytes {
        return Response::from_parts(parts, Body::from(full));
    }
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(full.len()));
    let head = futures::stream::iter([Ok::<Bytes, Truncated>(full.slice(..after_bytes))]);
    // Yield once before failing: hyper flushes what it has written while the body is pending,
    // so the client receives the head and the first bytes before the connection drops.
    let fail = futures::stream::once(async {
        tokio::task::yield_now().await;
        Err(Truncated)
    });
    Response::from_parts(parts, Body::from_stream(head.chain(fail)))
}

/// The `/_td_local/` admin routes. Each needs `Authorization: TD1 <master key>` of any account
/// of this server: they read every account's keys and change what every caller sees. A
/// write-only key is refused (403), a missing or unknown key is 401.
pub(crate) fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route(
            "/_td_local/faults",
            get(list_rules).post(add_rule).delete(clear_rules),
        )
        .route("/_td_local/faults/{id}", delete(remove_rule))
        .route("/_td_local/requests", get(list_requests).delete(clear_requests))
        .route("/_td_local/accounts", get(list_accounts))
        .route("/_td_local/connections/{name}", post(create_connection))
        .route_layer(axum::middleware::from_fn_with_state(state, require_master_key))
}

/// Lets a request through only with a master key of one of the server's accounts.
async fn require_master_key(caller: Caller, req: Request, next: Next) -> Response {
    match caller.require_master("an admin route (/_td_local/)") {
        Ok(()) => next.run(req).await,
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn list_rules(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "faults": state.faults.rules() }))
}

/// The body is a JSON [`FaultRule`]; read as bytes so a bad one gets a TD error body.
async fn add_rule(State(state): State<AppState>, body: Bytes) -> ApiResult<Json<Value>> {
    let rule: FaultRule = serde_json::from_slice(&body)
        .map_err(|e| Error::bad_request(format!("invalid fault rule JSON: {e}")))?;
    let id = state
        .faults
        .add(rule)
        .map_err(|e| Error::invalid(e.to_string()))?;
    Ok(Json(json!({ "id": id })))
}

async fn clear_rules(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "removed": state.faults.clear() }))
}

async fn remove_rule(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let parsed = id.parse::<u64>().ok().filter(|id| state.faults.remove(*id));
    match parsed {
        Some(id) => Ok(Json(json!({ "removed": id }))),
        None => Err(Error::not_found(format!("no fault rule with id {id:?}")).into()),
    }
}

async fn list_requests(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "requests": state.faults.requests() }))
}

async fn clear_requests(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "removed": state.faults.clear_requests() }))
}

async fn list_accounts(State(state): State<AppState>) -> Json<Value> {
    let accounts: Vec<&Account> = state.accounts.all().iter().map(|a| a.as_ref()).collect();
    Json(json!({ "accounts": accounts }))
}

/// Makes a connection as TD's console makes one (its key held by the server, not shown by
/// `result/list`) in the caller's account: form `url` is its td:// URL. Answers its id.
async fn create_connection(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    params: Params,
) -> ApiResult<Json<Value>> {
    let url = params.required("url", Error::Invalid)?.to_string();
    let account = caller.account_id();
    let id = state
        .store
        .write_async(move |tx| crate::results::create_console_connection(tx, account, &name, &url))
        .await?;
    Ok(Json(json!({ "id": id })))
}
