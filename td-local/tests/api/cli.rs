//! The `td-local` binary as a parent process sees it: the listening line on stdout, the keys in
//! `DIR/accounts.yml`, graceful exit on SIGTERM/SIGINT, and a data directory that survives restarts.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::timeout;

/// A running `td-local serve` child (killed if a test fails before stopping it).
pub(crate) struct Binary {
    pub(crate) child: Child,
    pub(crate) base_url: String,
}

impl Binary {
    pub(crate) async fn start(dir: &Path, admin: bool) -> Binary {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_td-local"));
        cmd.arg("serve")
            .arg("--data")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if admin {
            cmd.arg("--admin");
        }
        let mut child = cmd.spawn().expect("spawn td-local");
        let stdout = child.stdout.take().unwrap();
        // The child keeps running, so the line can only arrive here if it was flushed.
        let first = timeout(
            Duration::from_secs(20),
            BufReader::new(stdout).lines().next_line(),
        )
        .await
        .expect("the listening line arrives while the server runs")
        .unwrap()
        .expect("a first line on stdout");
        let base_url = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        let port: u16 = base_url
            .strip_prefix("http://127.0.0.1:")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {first:?}"));
        assert_ne!(port, 0, "a real port, not the requested 0");
        Binary { child, base_url }
    }

    /// Sends `signal` (e.g. "TERM") with kill(1) and waits for the exit, at most 10 s.
    async fn stop(mut self, signal: &str) -> ExitStatus {
        let pid = self.child.id().expect("still running").to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .await
            .unwrap();
        assert!(sent.success(), "kill -{signal} {pid}");
        timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("exits promptly after the signal")
            .unwrap()
    }
}

/// The keys of account `n` from `DIR/accounts.yml`: (master, write-only).
pub(crate) fn keys_from_file(dir: &Path, n: usize) -> (String, String) {
    let text = std::fs::read_to_string(dir.join("accounts.yml")).expect("accounts.yml written");
    let file: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let account = &file["accounts"][n];
    let key = |field: &str| {
        account[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} in {text}"))
            .to_string()
    };
    (key("master_key"), key("write_only_key"))
}

async fn call(http: &reqwest::Client, method: reqwest::Method, url: String, key: &str) -> (u16, Value) {
    let resp = http
        .request(method, url)
        .header("Authorization", format!("TD1 {key}"))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn serve_prints_its_port_first_and_answers_with_the_keys_of_accounts_yml() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::start(dir.path(), false).await;
    let (master, write_only) = keys_from_file(dir.path(), 0);
    let http = reqwest::Client::new();
    let list = format!("{}/v3/database/list", server.base_url);

    let (status, body) = call(&http, reqwest::Method::GET, list.clone(), &master).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["databases"][0]["name"], "sample_datasets");
    let (status, body) = call(&http, reqwest::Method::GET, list, &write_only).await;
    assert_eq!((status, &body["status_code"]), (403, &json!(403)), "{body}");
    // Without --admin the admin routes do not exist.
    let (status, _) = call(
        &http,
        reqwest::Method::GET,
        format!("{}/_td_local/accounts", server.base_url),
        &master,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(server.stop("TERM").await.code(), Some(0));
}

#[tokio::test]
async fn sigterm_and_sigint_exit_0_promptly_with_an_idle_keep_alive_connection() {
    for signal in ["TERM", "INT"] {
        let dir = tempfile::tempdir().unwrap();
        let server = Binary::start(dir.path(), false).await;
        let (master, _) = keys_from_file(dir.path(), 0);
        let http = reqwest::Client::new();
        let list = format!("{}/v3/database/list", server.base_url);
        // Leaves a kept-alive connection in the client's pool: it must not hold the shutdown.
        let (status, _) = call(&http, reqwest::Method::GET, list.clone(), &master).await;
        assert_eq!(status, 200);

        let status = server.stop(signal).await;
        assert_eq!(status.code(), Some(0), "SIG{signal}: {status:?}");
        let after = reqwest::Client::new().get(&list).send().await;
        assert!(after.is_err(), "SIG{signal}: nothing listens after the exit");
    }
}

#[tokio::test]
async fn sigterm_lets_a_request_in_flight_finish() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::start(dir.path(), true).await;
    let (master, _) = keys_from_file(dir.path(), 0);
    let http = reqwest::Client::new();
    let rule = json!({"path": "^/v3/database/list$", "action": {"kind": "delay", "millis": 1500}});
    let added = http
        .post(format!("{}/_td_local/faults", server.base_url))
        .header("Authorization", format!("TD1 {master}"))
        .json(&rule)
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 200);

    let url = format!("{}/v3/database/list", server.base_url);
    let slow = tokio::spawn(async move { call(&http, reqwest::Method::GET, url, &master).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = server.stop("TERM").await;
    assert_eq!(status.code(), Some(0));
    let (code, body) = slow.await.unwrap();
    assert_eq!(code, 200, "the delayed call was answered before the exit: {body}");
    assert_eq!(body["databases"][0]["name"], "sample_datasets");
}

#[tokio::test]
async fn a_restart_on_the_same_data_dir_keeps_the_keys_and_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let first = Binary::start(dir.path(), false).await;
    let (master, write_only) = keys_from_file(dir.path(), 0);
    let http = reqwest::Client::new();
    let (status, body) = call(
        &http,
        reqwest::Method::POST,
        format!("{}/v3/database/create/restart_db", first.base_url),
        &master,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(first.stop("TERM").await.code(), Some(0));

    let second = Binary::start(dir.path(), false).await;
    assert_eq!(keys_from_file(dir.path(), 0), (master.clone(), write_only));
    let (status, body) = call(
        &http,
        reqwest::Method::GET,
        format!("{}/v3/database/show/restart_db", second.base_url),
        &master,
    )
    .await;
    assert_eq!((status, &body["name"]), (200, &json!("restart_db")), "{body}");
    assert_eq!(second.stop("TERM").await.code(), Some(0));
}

#[tokio::test]
async fn count_lag_takes_seconds_from_0_to_a_day_and_refuses_anything_else_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["-1", "abc", "86401", "NaN"] {
        let out = Command::new(env!("CARGO_BIN_EXE_td-local"))
            .arg("serve")
            .arg("--data")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0", "--count-lag", bad])
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--count-lag {bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--count-lag") && stderr.contains("0 to 86400"),
            "--count-lag {bad}: {stderr}"
        );
    }
}

/// One data directory, one server: a second `serve` on it is refused at once, naming it.
#[tokio::test]
async fn a_second_server_on_one_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = Binary::start(dir.path(), false).await;
    let out = Command::new(env!("CARGO_BIN_EXE_td-local"))
        .arg("serve")
        .arg("--data")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .await
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("another td-local already serves"), "{stderr}");
    assert_eq!(first.stop("TERM").await.code(), Some(0));
}
