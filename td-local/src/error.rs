//! What can go wrong in td-local, by kind. The domain modules say what happened; only `routes`
//! turns a kind into an HTTP status and TD's error body (docs/td-api.md §2).

use td_model::name::NameError;
use td_model::schema::SchemaError;
use td_model::UrlError;

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A database, table, job, session or saved result that does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// It exists already, or is in a state that refuses the call (409). `conflicts_with` names
    /// the job that holds a repeated `domain_key`.
    #[error("{message}")]
    Conflict {
        message: String,
        conflicts_with: Option<i64>,
    },
    /// A value TD refuses: a bad name, URL, schema or setting (422).
    #[error("{0}")]
    Invalid(String),
    /// A request that cannot be read: a missing parameter, a body that is not msgpack (400).
    #[error("{0}")]
    BadRequest(String),
    /// A key that belongs to no account (401).
    #[error("{0}")]
    Unauthorized(String),
    /// A key that may not do this: a write-only key (403).
    #[error("{0}")]
    Forbidden(String),
    /// A body or part over td-local's limit (413).
    #[error("{0}")]
    TooLarge(String),
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Anything else that is td-local's fault, not the caller's (500).
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn not_found(message: impl Into<String>) -> Error {
        Error::NotFound(message.into())
    }

    pub fn conflict(message: impl Into<String>) -> Error {
        Error::Conflict {
            message: message.into(),
            conflicts_with: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Error {
        Error::Invalid(message.into())
    }

    pub fn bad_request(message: impl Into<String>) -> Error {
        Error::BadRequest(message.into())
    }

    pub fn internal(message: impl Into<String>) -> Error {
        Error::Internal(message.into())
    }
}

impl From<NameError> for Error {
    fn from(e: NameError) -> Error {
        Error::Invalid(e.to_string())
    }
}

/// A schema that is not JSON of `[name, type]` items is a bad request; a reserved name or an
/// unknown type is invalid input.
impl From<SchemaError> for Error {
    fn from(e: SchemaError) -> Error {
        match e {
            SchemaError::Malformed(_) => Error::BadRequest(e.to_string()),
            SchemaError::Reserved(_) | SchemaError::Type(_) => Error::Invalid(e.to_string()),
        }
    }
}

/// Every td:// URL td-local reads is a result destination.
impl From<UrlError> for Error {
    fn from(e: UrlError) -> Error {
        Error::Invalid(format!("invalid result URL: {e}"))
    }
}
