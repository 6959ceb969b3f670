//! A typed client for the TD REST API v3: auth, the retry policy, the calls the export needs.
//! Every path and shape follows docs/td-api.md.

use std::time::{Duration, Instant};

use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{Method, Response};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::error::{error_chain, TdError, TdResult};
use super::payload::Payload;
use super::wire::{id_string, id_to_string, Job, SavedResult, Session, SessionAction, Table};
use crate::retry::{Failure, RetryPolicy, Safety};

/// Everything but unreserved characters is encoded in a path segment (names never contain `/`,
/// keys and part names may contain `.`).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'~');

pub(crate) fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// A submitted export job: `earlier` when its domain key was used before and the job named is
/// the first submit's (another run's, or an earlier one of this export).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub job_id: String,
    pub earlier: bool,
}

/// One TD account on one endpoint.
#[derive(Clone)]
pub struct TdClient {
    http: reqwest::Client,
    base: String,
    authorization: String,
    policy: RetryPolicy,
    /// The account this client calls, named in its errors.
    origin: Option<std::sync::Arc<super::error::Origin>>,
}

impl std::fmt::Debug for TdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TdClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// The proxies calls go through: given here explicitly (the environment is read at the edge),
/// so the client never reads `HTTPS_PROXY` and the like by itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Proxies {
    /// For every call (`td.proxy`): `http://host:port`, with its credentials.
    pub all: Option<(String, Option<(String, String)>)>,
    /// `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY` as the environment gave them.
    pub http: Option<String>,
    pub https: Option<String>,
    pub no_proxy: Option<String>,
}

/// The HTTP client every TdClient shares: connect timeout 5 s, read timeout 30 s, no
/// whole-request timeout (result streams can take long).
pub fn http_client(proxies: &Proxies) -> Result<reqwest::Client, TdError> {
    let bad = |what: &str, e: reqwest::Error| TdError::Protocol {
        call: what.to_string(),
        detail: format!("the proxy is not usable: {e}"),
    };
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(Duration::from_secs(30))
        .user_agent(concat!("td-result-export/", env!("CARGO_PKG_VERSION")))
        .no_proxy();
    let no_proxy = proxies
        .no_proxy
        .as_deref()
        .and_then(reqwest::NoProxy::from_string);
    if let Some((url, auth)) = &proxies.all {
        let mut proxy = reqwest::Proxy::all(url).map_err(|e| bad("td.proxy", e))?;
        if let Some((user, password)) = auth {
            proxy = proxy.basic_auth(user, password);
        }
        builder = builder.proxy(proxy);
    } else {
        for (url, https) in [(&proxies.https, true), (&proxies.http, false)] {
            let Some(url) = url.as_deref().filter(|u| !u.trim().is_empty()) else {
                continue;
            };
            let name = if https { "HTTPS_PROXY" } else { "HTTP_PROXY" };
            let proxy = if https {
                reqwest::Proxy::https(url)
            } else {
                reqwest::Proxy::http(url)
            }
            .map_err(|e| bad(name, e))?;
            builder = builder.proxy(proxy.no_proxy(no_proxy.clone()));
        }
    }
    builder.build().map_err(|e| TdError::Protocol {
        call: "the HTTP client".to_string(),
        detail: e.to_string(),
    })
}

/// Why a successful response's body could not be used.
pub(crate) enum Unread {
    /// Reading it failed (cut, reset, timed out).
    Body(reqwest::Error),
    /// It is not what the API answers (JSON that does not parse as expected).
    Garbled(String),
    /// It is longer than any answer of the API: read no further, never retried.
    TooLarge(usize),
}

/// The most of an answer read into memory: TD's JSON answers (a job, a table list with schemas)
/// and a session's rejected records stay far below it; an endless body stops here.
pub(crate) const ANSWER_BYTES: usize = 64 << 20;
/// The most of an error answer read: its message is all that is kept.
const ERROR_BYTES: usize = 64 << 10;

/// The body of `resp`, up to `cap` bytes.
async fn read_capped(mut resp: Response, cap: usize) -> Result<Bytes, Unread> {
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Err(Unread::TooLarge(cap));
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(Unread::Body)? {
        if body.len() + chunk.len() > cap {
            return Err(Unread::TooLarge(cap));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A request to send, possibly several times.
pub(crate) struct Call {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) form: Vec<(&'static str, String)>,
    pub(crate) body: Option<Payload>,
    /// Ask for the body from this byte on (`Range: bytes=N-`).
    pub(crate) range_from: Option<u64>,
    pub(crate) safety: Safety,
}

impl Call {
    pub(crate) fn new(method: Method, path: String, safety: Safety) -> Call {
        Call {
            method,
            path,
            form: Vec::new(),
            body: None,
            range_from: None,
            safety,
        }
    }
    pub(crate) fn label(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

impl TdClient {
    /// `base_url` is `scheme://host[:port]`; `apikey` is sent as `Authorization: TD1 <key>`.
    pub fn new(http: reqwest::Client, base_url: &str, apikey: &str, policy: RetryPolicy) -> TdClient {
        TdClient {
            http,
            base: base_url.trim_end_matches('/').to_string(),
            authorization: format!("TD1 {apikey}"),
            policy,
            origin: None,
        }
    }

    /// This client, naming `side`'s account (its host, where its key came from) in its errors.
    pub fn for_account(self, side: &'static str, key_from: &str) -> TdClient {
        let host = self
            .base
            .split_once("://")
            .map_or(self.base.as_str(), |(_, rest)| rest)
            .to_string();
        let loopback = url::Url::parse(&self.base).is_ok_and(|u| crate::resolve::is_loopback(&u));
        TdClient {
            origin: Some(std::sync::Arc::new(super::error::Origin {
                side,
                host,
                key_from: key_from.to_string(),
                loopback,
            })),
            ..self
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub(crate) fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Sends `call` under the retry policy; returns the first successful response, whose body
    /// is still to be read (a stream: a failure while reading it is the caller's to handle).
    pub(crate) async fn send(&self, call: &Call) -> TdResult<Response> {
        self.retrying(call, |resp| async move { Ok::<_, Unread>(resp) })
            .await
    }

    /// Sends `call` under the retry policy and reads the whole body. A body cut short counts as
    /// an ambiguous failure of the call (the server acted; its answer was lost), retried as such.
    async fn send_bytes(&self, call: &Call) -> TdResult<Bytes> {
        self.retrying(call, |resp| read_capped(resp, ANSWER_BYTES)).await
    }

    /// The retry loop: one attempt is the request plus `finish` on a successful response.
    async fn retrying<T, F, Fut>(&self, call: &Call, finish: F) -> TdResult<T>
    where
        F: Fn(Response) -> Fut,
        Fut: std::future::Future<Output = Result<T, Unread>>,
    {
        let started = Instant::now();
        let mut retry = 0u32;
        // Whether an attempt was sent and its answer lost (what a later 409 may be about).
        let mut lost = false;
        loop {
            let mut req = self
                .http
                .request(call.method.clone(), format!("{}{}", self.base, call.path))
                .header(reqwest::header::AUTHORIZATION, &self.authorization);
            if !call.form.is_empty() {
                req = req.form(&call.form);
            }
            if let Some(body) = &call.body {
                // Set by hand: a file body is a stream, which would otherwise go chunked.
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                    .header(reqwest::header::CONTENT_LENGTH, body.len())
                    .body(body.body());
            }
            if let Some(from) = call.range_from {
                req = req.header(reqwest::header::RANGE, format!("bytes={from}-"));
            }
            let sent = Instant::now();
            let answer = req.send().await;
            // `-v`: every call, its answer and its time (the path holds no key; the key is a header).
            match &answer {
                Ok(resp) => tracing::info!(
                    "{} → {} in {} ms",
                    call.label(),
                    resp.status().as_u16(),
                    sent.elapsed().as_millis()
                ),
                Err(e) => tracing::info!(
                    "{} → no answer after {} ms: {e}",
                    call.label(),
                    sent.elapsed().as_millis()
                ),
            }
            let (failure, mut error) = match answer {
                Ok(resp) if resp.status().is_success() => match finish(resp).await {
                    Ok(done) => return Ok(done),
                    Err(Unread::Body(e)) => (Failure::Ambiguous, transport_error(call, retry, &e)),
                    // A body that does not parse was most likely cut (a proxy, a reset that
                    // still closed the message): as ambiguous as a lost answer.
                    Err(Unread::Garbled(detail)) => (
                        Failure::Ambiguous,
                        TdError::Protocol {
                            call: call.label(),
                            detail,
                        },
                    ),
                    Err(Unread::TooLarge(cap)) => {
                        return Err(TdError::Protocol {
                            call: call.label(),
                            detail: format!(
                                "the answer is longer than {} MiB, more than any answer of TD's API: \
                                 is the endpoint a TD API server?",
                                cap >> 20
                            ),
                        })
                    }
                },
                Ok(resp) => {
                    let retry_after = retry_after(&resp);
                    let error = api_error(call.label(), resp).await;
                    let code = error.status().unwrap_or(500);
                    (Failure::Status { code, retry_after }, error)
                }
                Err(e) if e.is_connect() => (Failure::Connect, transport_error(call, retry, &e)),
                Err(e) => (Failure::Ambiguous, transport_error(call, retry, &e)),
            };
            if let TdError::Api {
                after_lost_answer, ..
            } = &mut error
            {
                *after_lost_answer = lost;
            }
            lost |= match failure {
                Failure::Ambiguous => true,
                Failure::Status { code, .. } => RetryPolicy::is_ambiguous_status(code),
                Failure::Connect => false,
            };
            // A host name that does not resolve is tried a few times only: then it is the spec's.
            let unresolved =
                matches!(&error, TdError::Transport { reason, .. } if super::error::is_unresolved(reason));
            let wait = match unresolved && retry >= self.policy.max_unresolved_retries {
                true => None,
                false => self
                    .policy
                    .next_wait(retry, started.elapsed(), failure, call.safety),
            };
            match wait {
                Some(wait) => {
                    // One line says a call is being retried; each retry after it only with -v.
                    if retry == 0 {
                        tracing::warn!(
                            "{}: {}; retrying it, at most {} times (-v shows each retry)",
                            call.label(),
                            error.cause(),
                            self.policy.max_retries
                        );
                    } else {
                        tracing::info!(call = %call.label(), error = %error, retry, wait_ms = wait.as_millis() as u64, "retrying");
                    }
                    tokio::time::sleep(wait).await;
                    retry += 1;
                }
                None => return Err(with_attempts(error, retry + 1).placed(&self.origin)),
            }
        }
    }

    /// Sends `call` and reads its JSON answer; an answer that is not the JSON asked for is
    /// retried as a cut body (when the call may be repeated).
    async fn json<T: DeserializeOwned>(&self, call: Call) -> TdResult<T> {
        self.retrying(&call, |resp| async move {
            let bytes = read_capped(resp, ANSWER_BYTES).await?;
            serde_json::from_slice(&bytes).map_err(|e| Unread::Garbled(e.to_string()))
        })
        .await
    }

    async fn get<T: DeserializeOwned>(&self, path: String) -> TdResult<T> {
        self.json(Call::new(Method::GET, path, Safety::Read)).await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: String,
        form: Vec<(&'static str, String)>,
        safety: Safety,
    ) -> TdResult<T> {
        self.json(Call {
            form,
            ..Call::new(Method::POST, path, safety)
        })
        .await
    }

    // ---- databases and tables ----

    pub async fn database_exists(&self, db: &str) -> TdResult<bool> {
        none_if_missing(self.get::<Value>(format!("/v3/database/show/{}", seg(db))).await)
            .map(|db| db.is_some())
    }

    pub async fn table(&self, db: &str, table: &str) -> TdResult<Option<Table>> {
        none_if_missing(
            self.get::<Table>(format!("/v3/table/show/{}/{}", seg(db), seg(table)))
                .await,
        )
    }

    pub async fn tables(&self, db: &str) -> TdResult<Vec<Table>> {
        #[derive(Deserialize)]
        struct List {
            tables: Vec<Table>,
        }
        Ok(self
            .get::<List>(format!("/v3/table/list/{}", seg(db)))
            .await?
            .tables)
    }

    /// Creates a table; `Ok(false)` when it already existed.
    pub async fn create_table(&self, db: &str, table: &str) -> TdResult<bool> {
        let path = format!("/v3/table/create/{}/{}/log", seg(db), seg(table));
        created_unless_conflict(self.post::<Value>(path, vec![], Safety::Repeatable).await)
    }

    /// Deletes a table; one that does not exist counts as deleted.
    pub async fn delete_table(&self, db: &str, table: &str) -> TdResult<()> {
        let path = format!("/v3/table/delete/{}/{}", seg(db), seg(table));
        none_if_missing(self.post::<Value>(path, vec![], Safety::Repeatable).await).map(drop)
    }

    /// Renames `from` to `to`, replacing `to` in one step when `overwrite`.
    pub async fn rename_table(&self, db: &str, from: &str, to: &str, overwrite: bool) -> TdResult<()> {
        let path = format!("/v3/table/rename/{}/{}/{}", seg(db), seg(from), seg(to));
        self.post::<Value>(path, vec![("overwrite", overwrite.to_string())], Safety::Once)
            .await
            .map(drop)
    }

    /// Sets a table's schema (`[[name, type], …]`); master key only.
    pub async fn update_schema(&self, db: &str, table: &str, schema: &Value) -> TdResult<()> {
        let path = format!("/v3/table/update-schema/{}/{}", seg(db), seg(table));
        self.post::<Value>(path, vec![("schema", schema.to_string())], Safety::Repeatable)
            .await
            .map(drop)
    }

    /// Adds columns to a table's schema (existing ones keep their type); write-only keys may.
    pub async fn append_schema(&self, db: &str, table: &str, schema: &Value) -> TdResult<()> {
        let path = format!("/v3/table/append-schema/{}/{}", seg(db), seg(table));
        self.post::<Value>(path, vec![("schema", schema.to_string())], Safety::Repeatable)
            .await
            .map(drop)
    }

    // ---- jobs ----

    pub async fn job(&self, id: &str) -> TdResult<Job> {
        self.get(format!("/v3/job/show/{}", seg(id))).await
    }

    /// Issues a query, with `options` (`priority`, `retry_limit`, `pool_name`, `engine_version`,
    /// `scheduled_time`) as form fields. With a `domain_key` a repeat returns the first job's id.
    pub async fn issue_query(
        &self,
        engine: &str,
        db: &str,
        query: &str,
        domain_key: Option<&str>,
        options: &[(&'static str, String)],
    ) -> TdResult<String> {
        #[derive(Deserialize)]
        struct Issued {
            #[serde(deserialize_with = "id_string")]
            job_id: String,
        }
        let mut form = vec![("query", query.to_string())];
        form.extend(options.iter().cloned());
        if let Some(key) = domain_key {
            form.push(("domain_key", key.to_string()));
        }
        let path = format!("/v3/job/issue/{}/{}", seg(engine), seg(db));
        // A domain key makes the call repeatable: a duplicate answers 409 naming the first job.
        let safety = if domain_key.is_some() {
            Safety::Repeatable
        } else {
            Safety::Once
        };
        match self.post::<Issued>(path, form, safety).await {
            Ok(issued) => Ok(issued.job_id),
            Err(TdError::Api {
                status: 409,
                conflicts_with: Some(id),
                ..
            }) => Ok(id),
            Err(e) => Err(e),
        }
    }

    /// Kills a job that is still queued or running; returns the status it had (a finished job is
    /// left as it is). Repeating a kill is harmless.
    pub async fn kill_job(&self, id: &str) -> TdResult<String> {
        #[derive(Deserialize)]
        struct Killed {
            #[serde(default)]
            former_status: String,
        }
        let path = format!("/v3/job/kill/{}", seg(id));
        Ok(self
            .post::<Killed>(path, vec![], Safety::Repeatable)
            .await?
            .former_status)
    }

    /// Asks TD to write a job's result to a destination; returns the export job's id. A
    /// `domain_key` in `form` already used answers 409 naming the first export: its id is returned.
    /// Never repeated blindly: where the key is not honoured, a repeat exports twice.
    pub async fn result_export(
        &self,
        job_id: &str,
        form: Vec<(&'static str, String)>,
    ) -> TdResult<Submitted> {
        #[derive(Deserialize)]
        struct Exported {
            #[serde(deserialize_with = "id_string")]
            job_id: String,
        }
        let path = format!("/v3/job/result_export/{}", seg(job_id));
        match self.post::<Exported>(path, form, Safety::Once).await {
            Ok(exported) => Ok(Submitted {
                job_id: exported.job_id,
                earlier: false,
            }),
            Err(TdError::Api {
                status: 409,
                conflicts_with: Some(id),
                ..
            }) => Ok(Submitted {
                job_id: id,
                earlier: true,
            }),
            Err(e) => Err(e),
        }
    }

    /// The id of a saved connection (result destination) of this account.
    pub async fn connection_id(&self, name: &str) -> TdResult<Option<String>> {
        #[derive(Deserialize)]
        struct Found {
            #[serde(deserialize_with = "id_string")]
            id: String,
        }
        let path = format!("/v3/connections/lookup?name={}", seg(name));
        Ok(none_if_missing(self.get::<Found>(path).await)?.map(|found| found.id))
    }

    /// The saved result destinations of this account (name → URL).
    pub async fn saved_results(&self) -> TdResult<Vec<SavedResult>> {
        #[derive(Deserialize)]
        struct List {
            results: Vec<SavedResult>,
        }
        Ok(self.get::<List>("/v3/result/list".to_string()).await?.results)
    }

    // ---- bulk import ----

    pub async fn session(&self, name: &str) -> TdResult<Option<Session>> {
        none_if_missing(
            self.get::<Session>(format!("/v3/bulk_import/show/{}", seg(name)))
                .await,
        )
    }

    /// Creates a session; `Ok(false)` when it already existed (409). A retry of a create whose
    /// answer was lost that meets 409 reads as `true`: the session is the lost create's.
    pub async fn create_session(&self, name: &str, db: &str, table: &str) -> TdResult<bool> {
        let path = format!("/v3/bulk_import/create/{}/{}/{}", seg(name), seg(db), seg(table));
        created_unless_conflict(self.post::<Value>(path, vec![], Safety::Repeatable).await)
    }

    /// Uploads (or replaces) a named part: repeatable by construction.
    pub async fn upload_part(&self, session: &str, part: &str, body: Payload) -> TdResult<()> {
        let path = format!("/v3/bulk_import/upload_part/{}/{}", seg(session), seg(part));
        let call = Call {
            body: Some(body),
            ..Call::new(Method::PUT, path, Safety::Repeatable)
        };
        self.send(&call).await.map(drop)
    }

    pub async fn parts(&self, session: &str) -> TdResult<Vec<String>> {
        #[derive(Deserialize)]
        struct Parts {
            parts: Vec<String>,
        }
        Ok(self
            .get::<Parts>(format!("/v3/bulk_import/list_parts/{}", seg(session)))
            .await?
            .parts)
    }

    pub async fn delete_part(&self, session: &str, part: &str) -> TdResult<()> {
        let path = format!("/v3/bulk_import/delete_part/{}/{}", seg(session), seg(part));
        none_if_missing(self.post::<Value>(path, vec![], Safety::Repeatable).await).map(drop)
    }

    /// Session state transitions. Freeze, commit and delete may be repeated after a lost
    /// answer (a repeat is refused with 409 or does nothing); perform may not: TD takes a
    /// perform on a `performing` or `ready` session as a new trial (the toolbelt's
    /// `import:perform -f`), so its caller reads the session before sending it again.
    pub async fn session_action(&self, session: &str, action: SessionAction) -> TdResult<()> {
        let path = format!("/v3/bulk_import/{}/{}", action.verb(), seg(session));
        let safety = match action {
            SessionAction::Perform => Safety::Once,
            _ => Safety::Repeatable,
        };
        self.post::<Value>(path, vec![], safety).await.map(drop)
    }

    /// The records a perform rejected (gzip'd msgpack; empty when none).
    pub async fn error_records(&self, session: &str) -> TdResult<Bytes> {
        let path = format!("/v3/bulk_import/error_records/{}", seg(session));
        self.send_bytes(&Call::new(Method::GET, path, Safety::Read)).await
    }
}

/// A 404 as `None`: the thing asked for does not exist (or, for a delete, is already gone).
fn none_if_missing<T>(r: TdResult<T>) -> TdResult<Option<T>> {
    match r {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.is_status(404) => Ok(None),
        Err(e) => Err(e),
    }
}

/// `true` for a create that made the thing, `false` for a 409 (it existed). A 409 to the retry
/// of a create whose answer was lost is that create's own doing: `true`.
fn created_unless_conflict(r: TdResult<Value>) -> TdResult<bool> {
    match r {
        Err(e) if e.is_own_conflict() => Ok(true),
        Err(e) if e.is_status(409) => Ok(false),
        other => other.map(|_| true),
    }
}

fn retry_after(resp: &Response) -> Option<Duration> {
    let v = resp.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v.trim()).ok()?;
    let secs = (when.timestamp() - chrono::Utc::now().timestamp()).max(0);
    Some(Duration::from_secs(secs as u64))
}

/// Reads a TD error body (`message`, else `error`, else `text`) into a `TdError::Api`.
async fn api_error(call: String, resp: Response) -> TdError {
    let status = resp.status();
    // Only the message is kept: an error body is read up to a small cap, the rest left unread.
    let body = read_prefix(resp, ERROR_BYTES).await;
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let message = ["message", "error", "text"]
        .iter()
        .find_map(|k| parsed.get(*k).and_then(Value::as_str).filter(|s| !s.is_empty()))
        .map(str::to_string)
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&body);
            let text = text.trim();
            if text.is_empty() {
                status.canonical_reason().unwrap_or("error").to_string()
            } else {
                text.chars().take(300).collect()
            }
        });
    let conflicts_with = parsed
        .pointer("/details/conflicts_with")
        .cloned()
        .and_then(id_to_string);
    TdError::Api {
        call,
        status: status.as_u16(),
        message,
        conflicts_with,
        after_lost_answer: false,
        at: None,
    }
}

/// The first `cap` bytes of a body (what could be read of them).
async fn read_prefix(mut resp: Response, cap: usize) -> Bytes {
    let mut body = bytes::BytesMut::new();
    while body.len() < cap {
        match resp.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(cap - body.len())]),
            _ => break,
        }
    }
    body.freeze()
}

fn transport_error(call: &Call, retry: u32, e: &reqwest::Error) -> TdError {
    TdError::Transport {
        call: call.label(),
        attempts: retry + 1,
        reason: error_chain(e),
        connect: e.is_connect(),
        at: None,
    }
}

fn with_attempts(mut error: TdError, attempts: u32) -> TdError {
    if let TdError::Transport { attempts: made, .. } = &mut error {
        *made = attempts;
    }
    error
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    /// TD's part upload needs the size up front (td-client-python sends `Content-Length` for every
    /// part); a part read from a file is a stream, which would otherwise go out chunked.
    #[tokio::test]
    async fn a_part_read_from_a_file_is_sent_with_its_length_not_chunked() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&seen).contains("part body") {
                let n = conn.read(&mut buf).unwrap();
                assert!(n > 0, "the request ended early");
                seen.extend_from_slice(&buf[..n]);
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
                .unwrap();
            String::from_utf8_lossy(&seen).to_lowercase()
        });
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"part body").unwrap();
        let client = TdClient::new(
            http_client(&Proxies::default()).unwrap(),
            &format!("http://{addr}"),
            "1/key",
            RetryPolicy::default(),
        );
        let payload = Payload::File {
            file: std::sync::Arc::new(file),
            len: 9,
        };
        client.upload_part("s", "part_000000", payload).await.unwrap();
        let request = server.join().unwrap();
        assert!(request.contains("content-length: 9\r\n"), "{request}");
        assert!(!request.contains("transfer-encoding"), "{request}");
    }
}
