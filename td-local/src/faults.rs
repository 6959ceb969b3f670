//! Fault injection and the request log: rules matched on method + path that answer with an error
//! status, reset the connection, delay, or truncate the body; every request is logged.
//!
//! Each rule counts the calls it matches on its own (from 1, starting when the rule is added) and
//! draws from its own seeded generator, so a test that adds the same rules and makes the same calls
//! sees the same faults every run. When several rules fire on one call, the oldest one acts.
//!
//! The HTTP side (the middleware that applies them, the `/_td_local/` admin routes) is
//! `routes::admin`.

use std::sync::{Arc, Mutex, MutexGuard};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use regex::Regex;
use serde::{Deserialize, Serialize};

/// Marks a response whose connection must be closed without answering.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResetConnection;

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
    /// Handle the call, then send the body `bytes` at a time, `millis` apart: a slow network,
    /// so that a client is waiting on the body when something else happens.
    Throttle { bytes: usize, millis: u64 },
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
            FaultAction::Throttle { bytes, millis } => write!(f, "throttle to {bytes} bytes per {millis} ms"),
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
pub struct Fired {
    pub rule: u64,
    pub action: FaultAction,
}

impl Fired {
    pub fn describe(&self) -> String {
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
    pub fn decide(&self, method: &str, path: &str) -> Option<Fired> {
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

    /// Adds a line to the request log.
    pub fn record(&self, entry: LoggedRequest) {
        self.lock().log.push(entry);
    }
}
