//! td-local over real HTTP on loopback: one test binary, one module per group of docs/td-api.md.

mod abuse;
mod bulk_import;
mod cli;
mod databases;
mod faults;
mod import;
mod jobs;
mod keys;
mod output;
mod query_command;
mod routing;
mod schedules;
mod setup_commands;
mod snapshot;
mod state_machine;
mod tables;

use reqwest::StatusCode;
use serde_json::Value;
use td_local::{Config, Limits, TdLocal};

/// A td-local on port 0 with its own data directory, and a client for it.
pub struct Server {
    pub td: TdLocal,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
}

impl Server {
    /// A td-local as served by default: table counts lag changes by about 2 s, as TD's do.
    pub async fn start() -> Server {
        Server::start_in(tempfile::tempdir().expect("tempdir"), Limits::default()).await
    }

    /// A td-local whose table counts lag changes by `lag` (zero: exact counts).
    pub async fn start_with_count_lag(lag: std::time::Duration) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        Server::start_config(dir, Limits::default(), td_local::CountLag::new(lag)).await
    }

    /// A td-local under `limits` (lowered, so a test reaches them with small bodies).
    pub async fn start_limited(limits: Limits) -> Server {
        Server::start_in(tempfile::tempdir().expect("tempdir"), limits).await
    }

    /// Stops this server and starts another on the same data directory under `limits`.
    pub async fn restart_limited(self, limits: Limits) -> Server {
        self.td.shutdown().await;
        Server::start_in(self.dir, limits).await
    }

    async fn start_in(dir: tempfile::TempDir, limits: Limits) -> Server {
        Server::start_config(dir, limits, td_local::CountLag::default()).await
    }

    async fn start_config(dir: tempfile::TempDir, limits: Limits, count_lag: td_local::CountLag) -> Server {
        let td = TdLocal::start(Config {
            admin: true,
            limits,
            count_lag,
            ..Config::new(dir.path())
        })
        .await
        .expect("start td-local");
        Server {
            td,
            http: reqwest::Client::new(),
            dir,
        }
    }

    /// The master key of account `n` (0 or 1).
    pub fn master(&self, n: usize) -> String {
        self.td.accounts()[n].master_key.clone()
    }

    /// The write-only key of account `n` (0 or 1).
    pub fn write_only(&self, n: usize) -> String {
        self.td.accounts()[n].write_only_key.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.td.base_url())
    }

    pub async fn get(&self, key: &str, path: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .get(self.url(path))
            .header("Authorization", format!("TD1 {key}"))
            .send()
            .await
            .unwrap();
        decode(resp).await
    }

    pub async fn post(&self, key: &str, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .header("Authorization", format!("TD1 {key}"))
            .form(form)
            .send()
            .await
            .unwrap();
        decode(resp).await
    }

    pub async fn put(&self, key: &str, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let resp = self
            .http
            .put(self.url(path))
            .header("Authorization", format!("TD1 {key}"))
            .header("Content-Type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .unwrap();
        decode(resp).await
    }
}

async fn decode(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

/// Asserts a TD error body: all five fields, the status, and a message containing `needle`.
pub fn assert_error(status: StatusCode, body: &Value, expected: u16, needle: &str) {
    assert_eq!(status.as_u16(), expected, "status of {body}");
    for field in ["error", "message", "text", "severity", "status_code"] {
        assert!(body.get(field).is_some(), "error body lacks '{field}': {body}");
    }
    assert_eq!(body["status_code"], expected);
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(needle),
        "message {message:?} should contain {needle:?}"
    );
}

/// gzip of msgpack maps written back to back: an import body.
pub fn gzip_msgpack(records: &[Value]) -> Vec<u8> {
    td_local::internals::gzip_msgpack(records).unwrap()
}
