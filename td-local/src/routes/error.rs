//! The TD error body: every client reads a different field, so all five are sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::error::Error;

/// An API error answered as `{"error","message","text","severity","status_code"}` (docs/td-api.md §2).
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub details: Option<Value>,
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            details: None,
        }
    }
}

/// The one place a domain error becomes an HTTP status.
impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict { .. } => StatusCode::CONFLICT,
            Error::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Database(_) | Error::Io(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let details = match &e {
            Error::Conflict {
                conflicts_with: Some(job),
                ..
            } => Some(json!({ "conflicts_with": job.to_string() })),
            _ => None,
        };
        ApiError {
            status,
            message: e.to_string(),
            details,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let reason = self.status.canonical_reason().unwrap_or("Error");
        let mut body = json!({
            "error": reason,
            "message": self.message,
            "text": self.message,
            "severity": "error",
            "status_code": self.status.as_u16(),
        });
        if let Some(details) = self.details {
            body["details"] = details;
        }
        (self.status, axum::Json(body)).into_response()
    }
}
