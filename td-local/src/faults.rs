//! Fault injection and the request log: rules matched on method + path that answer with an error
//! status, reset the connection, delay, or truncate the body; every request is logged.
//!
//! Each rule counts the calls it matches on its own (from 1, starting when the rule is added) and
//! draws from its own seeded generator, so a test that adds the same rules and makes the same calls
//! sees the same faults every run. When several rules fire on one call, the oldest one acts.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::AppState;

/// Paths under this prefix are the admin routes: never logged, never faulted.
pub const ADMIN_PREFIX: &str = "/_td_local/";

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
    Status {
        status: u16,
        #[serde(default)]
        retry_after: Option<u64>,
    },
    /// Close the connection without a response.
    Reset,
    /// Wait, then handle the call normally.
    Delay { millis: u64 },
    /// Handle the call, then send only the first `after_bytes` bytes of the body (the
    /// `Content-Length` still announces the whole body). No effect on a body that is not longer.
    Truncate { after_bytes: usize },
}

impl std::fmt::Display for FaultAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FaultAction::Status {
                status,
                retry_after: Some(secs),
            } => write!(f, "status {status} (retry after {secs} s)"),
            FaultAction::Status { status, .. } => write!(f, "status {status}"),
            FaultAction::Reset => f.write_str("reset"),
            FaultAction::Delay { millis } => write!(f, "delay {millis} ms"),
            FaultAction::Truncate { after_bytes } => write!(f, "truncate after {after_bytes} bytes"),
        }
    }
}

/// When a matching rule fires.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    /// On every matching call.
    #[default]
    Always,
    /// On these matching calls, counted from 1.
    Nth { calls: Vec<u64> },
    /// With this probability, from a seeded generator (repeatable).
    Probability { p: f64, seed: u64 },
}

/// A fault rule: `method` (None = any) and `path` (a regex searched in the request path, after the
/// optional `.json` suffix is stripped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    #[serde(default)]
    pub method: Option<String>,
    pub path: String,
    pub action: FaultAction,
    #[serde(default)]
    pub trigger: Trigger,
}

impl FaultRule {
    /// A rule that fires on every call of `method` (None = any) whose path matches `path`.
    pub fn new(method: Option<&str>, path: &str, action: FaultAction) -> FaultRule {
        FaultRule {
            method: method.map(str::to_string),
            path: path.to_string(),
            action,
            trigger: Trigger::Always,
        }
    }

    /// Fires only on these matching calls, counted from 1.
    pub fn on_calls(mut self, calls: &[u64]) -> FaultRule {
        self.trigger = Trigger::Nth {
            calls: calls.to_vec(),
        };
        self
    }

    /// Fires with probability `p`, drawn from a generator seeded with `seed`.
    pub fn with_probability(mut self, p: f64, seed: u64) -> FaultRule {
        self.trigger = Trigger::Probability { p, seed };
        self
    }
}

/// Why a rule was refused.
#[derive(Debug, thiserror::Error)]
pub enum FaultRuleError {
    #[error("invalid path regex {pattern:?}: {source}")]
    Path {
        pattern: String,
        source: Box<regex::Error>,
    },
    #[error("invalid method {0:?}")]
    Method(String),
    #[error("invalid fault status {0}: must be 400-599")]
    Status(u16),
    #[error("invalid probability {0}: must be within 0..=1")]
    Probability(f64),
    #[error("invalid nth trigger: calls are counted from 1, got 0")]
    ZeroCall,
}

/// A rule as listed: its id, the rule, and how often it matched and fired so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleStatus {
    pub id: u64,
    #[serde(flatten)]
    pub rule: FaultRule,
    pub matched: u64,
    pub fired: u64,
}

/// One line of the request log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    /// The status answered; 0 when a fault reset the connection without an answer.
    pub status: u16,
    /// The account of the request's API key, if the key is known.
    pub account: Option<i64>,
    /// The fault that acted on this call, if any, e.g. `rule 2: status 503`.
    pub fault: Option<String>,
}

/// The fault rules and request log of one server.
#[derive(Clone, Default)]
pub struct Faults {
    inner: Arc<Mutex<FaultsInner>>,
}

#[derive(Default)]
struct FaultsInner {
    next_id: u64,
    rules: Vec<ActiveRule>,
    log: Vec<LoggedRequest>,
}

/// A rule with its compiled pattern and its own counters.
struct ActiveRule {
    id: u64,
    rule: FaultRule,
    path: Regex,
    matched: u64,
    fired: u64,
    fires_on: FiresOn,
}

/// A trigger ready to decide: the probability trigger owns its seeded generator.
enum FiresOn {
    Every,
    Calls(Vec<u64>),
    Chance(f64, Box<StdRng>),
}

impl ActiveRule {
    fn compile(id: u64, rule: FaultRule) -> Result<ActiveRule, FaultRuleError> {
        let path = Regex::new(&rule.path).map_err(|e| FaultRuleError::Path {
            pattern: rule.path.clone(),
            source: Box::new(e),
        })?;
        if let Some(m) = &rule.method {
            axum::http::Method::from_bytes(m.as_bytes()).map_err(|_| FaultRuleError::Method(m.clone()))?;
        }
        if let FaultAction::Status { status, .. } = rule.action {
            if !(400..=599).contains(&status) {
                return Err(FaultRuleError::Status(status));
            }
        }
        let fires_on = match &rule.trigger {
            Trigger::Always => FiresOn::Every,
            Trigger::Nth { calls } if calls.contains(&0) => return Err(FaultRuleError::ZeroCall),
            Trigger::Nth { calls } => FiresOn::Calls(calls.clone()),
            Trigger::Probability { p, .. } if !(0.0..=1.0).contains(p) => {
                return Err(FaultRuleError::Probability(*p))
            }
            Trigger::Probability { p, seed } => FiresOn::Chance(*p, Box::new(StdRng::seed_from_u64(*seed))),
        };
        Ok(ActiveRule {
            id,
            rule,
            path,
            matched: 0,
            fired: 0,
            fires_on,
        })
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        let method_ok = self
            .rule
            .method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method));
        method_ok && self.path.is_match(path)
    }

    /// Counts a matching call and tells whether the rule fires on it.
    fn count_call(&mut self) -> bool {
        self.matched += 1;
        let fires = match &mut self.fires_on {
            FiresOn::Every => true,
            FiresOn::Calls(calls) => calls.contains(&self.matched),
            FiresOn::Chance(p, rng) => rng.random::<f64>() < *p,
        };
        if fires {
            self.fired += 1;
        }
        fires
    }

    fn status(&self) -> RuleStatus {
        RuleStatus {
            id: self.id,
            rule: self.rule.clone(),
            matched: self.matched,
            fired: self.fired,
        }
    }
}

/// The fault chosen for one call.
#[derive(Debug, Clone)]
struct Fired {
    rule: u64,
    action: FaultAction,
}

impl Fired {
    fn describe(&self) -> String {
        format!("rule {}: {}", self.rule, self.action)
    }
}

impl Faults {
    fn lock(&self) -> MutexGuard<'_, FaultsInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a rule and returns its id (ids start at 1 and are never reused).
    pub fn add(&self, rule: FaultRule) -> Result<u64, FaultRuleError> {
        let mut inner = self.lock();
        let id = inner.next_id + 1;
        let active = ActiveRule::compile(id, rule)?;
        inner.next_id = id;
        inner.rules.push(active);
        Ok(id)
    }

    /// Removes a rule; false if there was none with this id.
    pub fn remove(&self, id: u64) -> bool {
        let mut inner = self.lock();
        let before = inner.rules.len();
        inner.rules.retain(|r| r.id != id);
        inner.rules.len() != before
    }

    /// Removes every rule; returns how many there were.
    pub fn clear(&self) -> usize {
        std::mem::take(&mut self.lock().rules).len()
    }

    /// The rules in force, oldest first, with their counters.
    pub fn rules(&self) -> Vec<RuleStatus> {
        self.lock().rules.iter().map(ActiveRule::status).collect()
    }

    /// Every request served so far, oldest first.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.lock().log.clone()
    }

    /// Empties the request log; returns how many entries it held.
    pub fn clear_requests(&self) -> usize {
        std::mem::take(&mut self.lock().log).len()
    }

    /// Counts the call on every matching rule; the oldest rule that fires acts.
    fn decide(&self, method: &str, path: &str) -> Option<Fired> {
        let mut inner = self.lock();
        let mut chosen = None;
        for rule in inner.rules.iter_mut().filter(|r| r.matches(method, path)) {
            if rule.count_call() && chosen.is_none() {
                chosen = Some(Fired {
                    rule: rule.id,
                    action: rule.rule.action.clone(),
                });
            }
        }
        chosen
    }

    fn record(&self, entry: LoggedRequest) {
        self.lock().log.push(entry);
    }
}

/// Logs each request; applies the fault rules. Admin routes pass straight through.
pub async fn middleware(State(state): State<AppState>, req: Request, next: Next) -> Response {
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
    crate::accounts::lookup(&state.accounts, key.trim()).map(|c| c.account.id)
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
    }
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
        Err(e) => return ApiError::internal(format!("reading the body to truncate: {e}")).into_response(),
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

/// The `/_td_local/` admin routes.
pub fn admin_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/_td_local/faults",
            get(list_rules).post(add_rule).delete(clear_rules),
        )
        .route("/_td_local/faults/{id}", delete(remove_rule))
        .route("/_td_local/requests", get(list_requests).delete(clear_requests))
        .route("/_td_local/accounts", get(list_accounts))
}

async fn list_rules(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "faults": state.faults.rules() }))
}

/// The body is a JSON [`FaultRule`]; read as bytes so a bad one gets a TD error body.
async fn add_rule(State(state): State<AppState>, body: Bytes) -> ApiResult<Json<Value>> {
    let rule: FaultRule = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid fault rule JSON: {e}")))?;
    let id = state
        .faults
        .add(rule)
        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    Ok(Json(json!({ "id": id })))
}

async fn clear_rules(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "removed": state.faults.clear() }))
}

async fn remove_rule(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let parsed = id.parse::<u64>().ok().filter(|id| state.faults.remove(*id));
    match parsed {
        Some(id) => Ok(Json(json!({ "removed": id }))),
        None => Err(ApiError::not_found(format!("no fault rule with id {id:?}"))),
    }
}

async fn list_requests(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "requests": state.faults.requests() }))
}

async fn clear_requests(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "removed": state.faults.clear_requests() }))
}

async fn list_accounts(State(state): State<AppState>) -> Json<Value> {
    let accounts: Vec<&crate::Account> = state.accounts.iter().map(|a| a.as_ref()).collect();
    Json(json!({ "accounts": accounts }))
}
