//! The few TD API calls the benchmark setup makes, over plain reqwest: the setup measures td-local,
//! so it must not go through the operator's client (with its retries and backoff).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// Polling interval while waiting on td-local: short, so waits measure td-local, not the poll.
const POLL: Duration = Duration::from_millis(20);

pub struct Api {
    http: reqwest::Client,
    endpoint: String,
    auth: String,
}

impl Api {
    pub fn new(endpoint: &str, apikey: &str) -> Api {
        Api {
            // No gzip: the result download must carry the bytes as stored.
            http: reqwest::Client::builder()
                .no_gzip()
                .build()
                .expect("a reqwest client"),
            endpoint: endpoint.trim_end_matches('/').to_string(),
            auth: format!("TD1 {apikey}"),
        }
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.endpoint))
            .header(reqwest::header::AUTHORIZATION, &self.auth)
    }

    async fn send(&self, what: &str, req: reqwest::RequestBuilder) -> anyhow::Result<(StatusCode, Value)> {
        let res = req.send().await.with_context(|| what.to_string())?;
        let status = res.status();
        let body = res.bytes().await.with_context(|| what.to_string())?;
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok((status, json))
    }

    async fn expect_ok(&self, what: &str, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let (status, body) = self.send(what, req).await?;
        if !status.is_success() {
            bail!("{what}: HTTP {status}: {body}");
        }
        Ok(body)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.expect_ok(&format!("GET {path}"), self.request(Method::GET, path))
            .await
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> anyhow::Result<Value> {
        let req = self.request(Method::POST, path).form(form);
        self.expect_ok(&format!("POST {path}"), req).await
    }

    pub async fn put(&self, path: &str, body: Bytes) -> anyhow::Result<Value> {
        let req = self.request(Method::PUT, path).body(body);
        self.expect_ok(&format!("PUT {path}"), req).await
    }

    /// A POST that may find its object already there (409): database and table creation.
    pub async fn post_allow_conflict(&self, path: &str, form: &[(&str, &str)]) -> anyhow::Result<()> {
        let what = format!("POST {path}");
        let (status, body) = self
            .send(&what, self.request(Method::POST, path).form(form))
            .await?;
        if !status.is_success() && status != StatusCode::CONFLICT {
            bail!("{what}: HTTP {status}: {body}");
        }
        Ok(())
    }

    /// Polls `path` until `done` says yes; `done` fails the wait by returning an error.
    pub async fn poll(
        &self,
        path: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> anyhow::Result<bool>,
    ) -> anyhow::Result<Value> {
        let start = Instant::now();
        loop {
            let body = self.get(path).await?;
            if done(&body)? {
                return Ok(body);
            }
            if start.elapsed() > timeout {
                bail!("GET {path}: still not done after {timeout:?}: {body}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits for a job to succeed; its `status` document.
    pub async fn wait_job(&self, job_id: &str) -> anyhow::Result<Value> {
        self.poll(
            &format!("/v3/job/status/{job_id}"),
            Duration::from_secs(3600),
            |b| match b["status"].as_str() {
                Some("success") => Ok(true),
                Some("error" | "killed") => bail!("job {job_id} failed: {b}"),
                _ => Ok(false),
            },
        )
        .await
    }

    /// Streams a GET body into `out`; the number of bytes written.
    pub async fn download(&self, path: &str, out: &mut tokio::fs::File) -> anyhow::Result<u64> {
        let res = self.request(Method::GET, path).send().await?;
        if !res.status().is_success() {
            bail!("GET {path}: HTTP {}", res.status());
        }
        let mut body = res.bytes_stream();
        let mut written = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            out.write_all(&chunk).await?;
            written += chunk.len() as u64;
        }
        out.flush().await?;
        Ok(written)
    }
}
