//! Request parameters as the official clients send them: query string, form-urlencoded,
//! multipart/form-data (the Python client), a JSON object body (the Java client) or nothing.

use std::collections::HashMap;

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header::CONTENT_TYPE;

use crate::error::Error;
use crate::routes::error::ApiError;

/// All scalar parameters of a request, the body's winning over the query string's.
#[derive(Debug, Default, Clone)]
pub(crate) struct Params(pub HashMap<String, String>);

impl Params {
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// Where a job's or an export's rows go: `result`, or `result_connection_id` with
    /// `result_connection_settings`.
    pub(crate) fn result_request(&self) -> crate::results::ResultRequest {
        crate::results::ResultRequest {
            result: self.get("result").map(str::to_owned),
            connection_id: self.get("result_connection_id").map(str::to_owned),
            settings: self.get("result_connection_settings").map(str::to_owned),
        }
    }

    /// A boolean as the clients spell it: `true`, `True`, `1` (docs/td-api.md §1).
    pub(crate) fn flag(&self, key: &str) -> bool {
        self.get(key)
            .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
    }

    pub(crate) fn int(&self, key: &str) -> Result<Option<i64>, Error> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => {
                v.trim().parse().map(Some).map_err(|_| {
                    Error::bad_request(format!("parameter '{key}' must be an integer, got '{v}'"))
                })
            }
        }
    }

    /// A boolean that must be spelled as one (`true`/`false`/`1`/`0`, any case).
    pub(crate) fn strict_bool(&self, key: &str) -> Result<Option<bool>, Error> {
        match self.get(key) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(Some(false)),
            Some(v) => Err(Error::bad_request(format!(
                "parameter '{key}' must be true or false, got '{v}'"
            ))),
        }
    }

    /// A parameter the call cannot do without; `missing` is the kind of error its absence is
    /// (TD answers 400 for some calls, 422 for others).
    pub(crate) fn required(&self, key: &str, missing: fn(String) -> Error) -> Result<&str, Error> {
        self.get(key)
            .ok_or_else(|| missing(format!("parameter '{key}' is required")))
    }
}

fn bad_request(message: String) -> ApiError {
    Error::BadRequest(message).into()
}

fn too_large(message: String) -> ApiError {
    Error::TooLarge(message).into()
}

fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (String, String)> + '_ {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes()).into_owned()
}

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let mut params: HashMap<String, String> = query_pairs(req.uri().query()).collect();
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if content_type.starts_with("multipart/form-data") {
            let mut multipart = Multipart::from_request(req, state)
                .await
                .map_err(|e| bad_request(format!("invalid multipart body: {e}")))?;
            while let Some(field) = multipart
                .next_field()
                .await
                .map_err(|e| bad_request(format!("invalid multipart body: {e}")))?
            {
                let Some(name) = field.name().map(str::to_owned) else {
                    continue;
                };
                let value = field
                    .text()
                    .await
                    .map_err(|e| bad_request(format!("invalid multipart field '{name}': {e}")))?;
                params.insert(name, value);
            }
            return Ok(Params(params));
        }
        let body = axum::body::to_bytes(req.into_body(), crate::limits::FORM_BODY_BYTES)
            .await
            .map_err(|e| too_large(format!("request body: {e}")))?;
        if body.is_empty() {
            return Ok(Params(params));
        }
        if content_type.starts_with("application/json") {
            let value: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| bad_request(format!("invalid JSON body: {e}")))?;
            if let serde_json::Value::Object(map) = value {
                for (k, v) in map {
                    let text = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    params.insert(k, text);
                }
            }
        } else {
            params.extend(url::form_urlencoded::parse(&body).into_owned());
        }
        Ok(Params(params))
    }
}
