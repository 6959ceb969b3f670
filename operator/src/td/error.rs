//! A failed call to TD, and how it is classified: the one route by which TD's answers reach the
//! status document and the exit code.

use crate::error::{Class, Classify, Exit};
use crate::retry::{Failure, RetryPolicy, Safety};

/// Which account a client calls, where, and where its key came from: what an error at the
/// boundary names, so that a user knows which side to fix and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `source` or `target`.
    pub side: &'static str,
    /// `host[:port]` of the API.
    pub host: String,
    /// Where the key came from (a spec field, a secret, an environment variable …).
    pub key_from: String,
    /// Whether the host is this machine (where td-local may be expected to run).
    pub loopback: bool,
}

/// A failed call to TD. Messages name the call (method and path: never a key) and, once the
/// client knows it, the account, its host and where its key came from, with the fix.
#[derive(Debug, thiserror::Error)]
pub enum TdError {
    #[error("{}", describe_api(at.as_deref(), call, *status, message))]
    Api {
        call: String,
        status: u16,
        message: String,
        conflicts_with: Option<String>,
        /// An earlier attempt of this call was sent and its answer lost: a 409 now may be that
        /// attempt's own doing (the session it created, the commit it made).
        after_lost_answer: bool,
        at: Option<std::sync::Arc<Origin>>,
    },
    #[error("{}", describe_transport(at.as_deref(), call, *attempts, reason, *connect))]
    Transport {
        call: String,
        attempts: u32,
        reason: String,
        connect: bool,
        at: Option<std::sync::Arc<Origin>>,
    },
    #[error("{call} returned an unexpected response: {detail}")]
    Protocol { call: String, detail: String },
}

impl TdError {
    /// Whether TD refused the key for this call (a write-only key, say).
    pub fn is_forbidden(&self) -> bool {
        self.is_status(403)
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            TdError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn is_status(&self, code: u16) -> bool {
        self.status() == Some(code)
    }

    /// A 409 answering the retry of a call whose first answer was lost: the conflict is most
    /// likely with what that first attempt did.
    pub fn is_own_conflict(&self) -> bool {
        matches!(
            self,
            TdError::Api {
                status: 409,
                after_lost_answer: true,
                ..
            }
        )
    }

    /// Whether the call may have taken effect although it failed: it was sent, and its answer
    /// was lost (reset, timeout, cut body) or was a 5xx that may follow the action.
    pub fn is_ambiguous(&self) -> bool {
        match self {
            TdError::Transport { connect, .. } => !connect,
            TdError::Api { status, .. } => RetryPolicy::is_ambiguous_status(*status),
            TdError::Protocol { .. } => false,
        }
    }

    /// Whether running the task again later may succeed (the retries were used up on a
    /// transient failure), as opposed to a failure that needs a fix.
    pub fn is_transient(&self) -> bool {
        match self {
            TdError::Api { status, .. } => RetryPolicy::is_retryable(
                Failure::Status {
                    code: *status,
                    retry_after: None,
                },
                Safety::Repeatable,
            ),
            TdError::Transport { reason, .. } => !is_unresolved(reason),
            TdError::Protocol { .. } => false,
        }
    }

    /// What went wrong, without the call: `answered 503: …`, or the transport's reason.
    pub(crate) fn cause(&self) -> String {
        match self {
            TdError::Api { status, message, .. } => format!("answered {status}: {message}"),
            TdError::Transport { reason, .. } => reason.clone(),
            TdError::Protocol { detail, .. } => detail.clone(),
        }
    }

    /// This error as a client for `at` reports it.
    pub(crate) fn placed(mut self, origin: &Option<std::sync::Arc<Origin>>) -> TdError {
        if let TdError::Api { at, .. } | TdError::Transport { at, .. } = &mut self {
            at.clone_from(origin);
        }
        self
    }
}

pub(crate) type TdResult<T> = Result<T, TdError>;

fn describe_api(at: Option<&Origin>, call: &str, status: u16, message: &str) -> String {
    let answer = format!("{call} answered {status}: {message}");
    let Some(at) = at else { return answer };
    let (side, host, from) = (at.side, &at.host, &at.key_from);
    match status {
        401 => format!(
            "the {side} account at {host} refused its API key (from {from}): {answer}. Give a key of \
             that account, for that host: a key of another account or region, or one cut short, is refused"
        ),
        403 => format!(
            "the {side} account's key (from {from}) may not do this at {host}: {answer}. A write-only \
             key may only import; use the account's master key"
        ),
        _ => format!("the {side} account at {host}: {answer}"),
    }
}

fn describe_transport(at: Option<&Origin>, call: &str, attempts: u32, reason: &str, connect: bool) -> String {
    let failed = format!("{call} failed after {attempts} attempt(s): {reason}");
    let Some(at) = at else { return failed };
    let (side, host) = (at.side, &at.host);
    if connect && at.loopback && reason.contains("refused") {
        return format!(
            "nothing answers at {host}, the {side} account's API host: {failed}. Is td-local running \
             there? Start it with `td-local serve --listen {host}`, or use endpoint: local for the \
             embedded one"
        );
    }
    if is_unresolved(reason) {
        return format!(
            "the {side} account's API host {host} does not resolve: {failed}. Check the host name in \
             the spec (td.endpoint, the td:// URL or the connection's api_hostname)"
        );
    }
    format!("could not reach the {side} account's API host {host}: {failed}. Check the host, the network and any proxy")
}

/// Whether a transport failure is a host name that does not resolve (a configuration error,
/// not a passing one).
pub(crate) fn is_unresolved(reason: &str) -> bool {
    reason.contains("dns error") || reason.contains("failed to lookup address")
}

impl Classify for TdError {
    fn class(&self) -> Class {
        let exit = match self {
            // A host name that does not resolve is the spec's to fix (checked a few times first).
            TdError::Transport { reason, .. } if is_unresolved(reason) => Exit::Invalid,
            _ if self.is_transient() => Exit::Transient,
            _ => Exit::Failed,
        };
        let name = match self {
            TdError::Api { status: 401, .. } => "AuthError",
            TdError::Api { status: 403, .. } => "ForbiddenError",
            TdError::Api { status: 404, .. } => "NotFoundError",
            TdError::Api { status: 409, .. } => "AlreadyExistsError",
            TdError::Api {
                status: 400 | 422, ..
            } => "BadRequestError",
            TdError::Api { .. } => "ApiError",
            TdError::Transport { reason, .. } if is_unresolved(reason) => "HostNotFound",
            TdError::Transport { .. } => "NetworkError",
            TdError::Protocol { .. } => "ProtocolError",
        };
        Class::new(name, exit)
    }
}

/// An error and its causes on one line: `a: b: c`.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> TdError {
        TdError::Api {
            call: "POST /v3/job/issue/presto/db".into(),
            status,
            message: "no".into(),
            conflicts_with: None,
            after_lost_answer: false,
            at: None,
        }
    }

    #[test]
    fn a_query_too_large_is_permanent_and_an_overloaded_server_transient() {
        assert_eq!(api(413).class(), Class::new("ApiError", Exit::Failed));
        assert_eq!(api(422).class(), Class::new("BadRequestError", Exit::Failed));
        assert_eq!(api(503).class(), Class::new("ApiError", Exit::Transient));
        assert_eq!(api(429).class(), Class::new("ApiError", Exit::Transient));
        assert_eq!(api(401).class(), Class::new("AuthError", Exit::Failed));
    }
}
