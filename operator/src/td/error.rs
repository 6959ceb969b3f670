//! A failed call to TD, and how it is classified: the one route by which TD's answers reach the
//! status document and the exit code.

use crate::error::{Class, Classify, Exit};
use crate::retry::{Failure, RetryPolicy, Safety};

/// A failed call to TD. Messages name the call (method and path: never a key).
#[derive(Debug, thiserror::Error)]
pub enum TdError {
    #[error("{call} answered {status}: {message}")]
    Api {
        call: String,
        status: u16,
        message: String,
        conflicts_with: Option<String>,
        /// An earlier attempt of this call was sent and its answer lost: a 409 now may be that
        /// attempt's own doing (the session it created, the commit it made).
        after_lost_answer: bool,
    },
    #[error("{call} failed after {attempts} attempt(s): {reason}")]
    Transport {
        call: String,
        attempts: u32,
        reason: String,
        connect: bool,
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
            TdError::Transport { .. } => true,
            TdError::Protocol { .. } => false,
        }
    }
}

pub type TdResult<T> = Result<T, TdError>;

impl Classify for TdError {
    fn class(&self) -> Class {
        let exit = if self.is_transient() {
            Exit::Transient
        } else {
            Exit::Failed
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
