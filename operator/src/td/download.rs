//! A result download that survives a cut connection: it asks for the rest (`Range: bytes=N-`,
//! which must answer 206 with the same ETag) under the retry policy, so the reader sees one body.

use std::time::Instant;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use reqwest::{Method, Response, StatusCode};

use super::client::{seg, Call, TdClient};
use super::error::{error_chain, TdError, TdResult};
use crate::retry::{Failure, Safety};

impl TdClient {
    /// Streams a finished job's result in the given format. When the connection drops in the
    /// middle, the stream asks for the rest (`Range: bytes=N-`, which must answer 206 with the
    /// same ETag) under the retry policy, so the reader sees one unbroken body.
    pub async fn job_result(
        &self,
        id: &str,
        format: &str,
    ) -> TdResult<BoxStream<'static, std::io::Result<Bytes>>> {
        let path = format!("/v3/job/result/{}?format={}", seg(id), seg(format));
        let first = self
            .send(&Call::new(Method::GET, path.clone(), Safety::Read))
            .await?;
        let download = Download {
            client: self.clone(),
            path,
            etag: etag(&first),
            body: Some(first.bytes_stream().boxed()),
            received: 0,
            failures: 0,
            since: Instant::now(),
            done: false,
        };
        Ok(futures::stream::unfold(download, Download::next).boxed())
    }
}

/// A result download that resumes where a cut connection left it.
struct Download {
    client: TdClient,
    path: String,
    etag: Option<String>,
    body: Option<BoxStream<'static, reqwest::Result<Bytes>>>,
    received: u64,
    /// Cuts in a row with no byte received in between, and since when.
    failures: u32,
    since: Instant,
    done: bool,
}

impl Download {
    async fn next(mut self) -> Option<(std::io::Result<Bytes>, Download)> {
        if self.done {
            return None;
        }
        loop {
            let body = match self.body.as_mut() {
                Some(body) => body,
                None => match resume(&self.client, &self.path, self.received, self.etag.as_deref()).await {
                    Ok(body) => self.body.insert(body),
                    Err(e) => return self.fail(e),
                },
            };
            match body.next().await {
                None => return None,
                Some(Ok(chunk)) => {
                    self.received += chunk.len() as u64;
                    self.failures = 0;
                    return Some((Ok(chunk), self));
                }
                Some(Err(e)) => {
                    self.body = None;
                    let error = TdError::Transport {
                        call: format!("GET {}", self.path),
                        attempts: self.failures + 1,
                        reason: error_chain(&e),
                        connect: false,
                        at: None,
                    };
                    if self.failures == 0 {
                        self.since = Instant::now();
                    }
                    let wait = self.client.policy().next_wait(
                        self.failures,
                        self.since.elapsed(),
                        Failure::Ambiguous,
                        Safety::Read,
                    );
                    let Some(wait) = wait else {
                        return self.fail(error);
                    };
                    tracing::warn!(error = %error, received = self.received, "the result download broke off; resuming");
                    tokio::time::sleep(wait).await;
                    self.failures += 1;
                }
            }
        }
    }

    fn fail(mut self, e: TdError) -> Option<(std::io::Result<Bytes>, Download)> {
        self.done = true;
        Some((Err(std::io::Error::other(e)), self))
    }
}

/// Asks for the bytes not received yet; the server must answer with exactly those.
async fn resume(
    client: &TdClient,
    path: &str,
    received: u64,
    expected_etag: Option<&str>,
) -> TdResult<BoxStream<'static, reqwest::Result<Bytes>>> {
    let call = Call {
        range_from: Some(received),
        ..Call::new(Method::GET, path.to_string(), Safety::Read)
    };
    let resp = client.send(&call).await?;
    let protocol = |detail: String| TdError::Protocol {
        call: call.label(),
        detail,
    };
    if resp.status() != StatusCode::PARTIAL_CONTENT {
        return Err(protocol(format!(
            "asked for the result from byte {}, got status {} instead of 206",
            received,
            resp.status().as_u16()
        )));
    }
    if etag(&resp).as_deref() != expected_etag {
        return Err(protocol(
            "the result changed while it was read (ETag differs)".into(),
        ));
    }
    Ok(resp.bytes_stream().boxed())
}

fn etag(resp: &Response) -> Option<String> {
    resp.headers()
        .get(reqwest::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}
