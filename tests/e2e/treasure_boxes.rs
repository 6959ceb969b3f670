//! Every treasure box's task specs run end to end, unchanged, against td-local (`--local DIR`
//! points their real TD hosts at it): the `td>` step is played by issuing the box's query.

use std::path::Path;

use serde_json::Value;
use td_local::{Config, TdLocal};

use crate::support::{repo_root, Sandbox};

const BOX: &str = "treasure_boxes/account_to_account";

/// Issues `sql` in `db` with `key` and waits for the job; returns its id.
async fn run_query(td: &TdLocal, key: &str, db: &str, sql: &str) -> String {
    let http = reqwest::Client::new();
    let issued: Value = http
        .post(format!("{}/v3/job/issue/presto/{db}", td.base_url()))
        .header("Authorization", format!("TD1 {key}"))
        .form(&[("query", sql)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = issued["job_id"].as_str().expect("job id").to_string();
    for _ in 0..200 {
        let job: Value = http
            .get(format!("{}/v3/job/show/{id}", td.base_url()))
            .header("Authorization", format!("TD1 {key}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match job["status"].as_str() {
            Some("success") => return id,
            Some("error" | "killed") => panic!("query failed: {job}"),
            _ => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
    panic!("query {id} did not finish");
}

/// The rows of `db.table` in `account` as (code, requests), sorted, read back through a query.
async fn codes(data: &Path, account: usize, db: &str, table: &str) -> Vec<(i64, i64)> {
    let td = TdLocal::start(Config::new(data)).await.unwrap();
    let key = td.accounts()[account].master_key.clone();
    let id = run_query(
        &td,
        &key,
        db,
        &format!("SELECT code, requests FROM {table} ORDER BY code, requests"),
    )
    .await;
    let text = reqwest::Client::new()
        .get(format!("{}/v3/job/result/{id}?format=json", td.base_url()))
        .header("Authorization", format!("TD1 {key}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    td.shutdown().await;
    text.lines()
        .map(|l| serde_json::from_str::<(i64, i64)>(l).expect("[code, requests]"))
        .collect()
}

/// Expected (code, requests) of the box's query, from the sample's generator.
fn expected_codes() -> Vec<(i64, i64)> {
    let mut counts = std::collections::BTreeMap::new();
    for row in td_local::sample::www_access_rows() {
        *counts.entry(row.record["code"].as_i64().unwrap()).or_insert(0i64) += 1;
    }
    counts.into_iter().collect()
}

/// Runs one task spec of the box with `--local data`, as the workflow's `sh>` would.
fn export(sandbox: &Sandbox, data: &Path, task: &str, job_id: &str) -> std::process::Output {
    let spec = repo_root().join(BOX).join(task);
    sandbox
        .cmd()
        .arg("run")
        .arg(&spec)
        .arg("--local")
        .arg(data)
        .args([
            "--param",
            &format!("td.last_job_id={job_id}"),
            "--param",
            "session_date=2014-10-03",
        ])
        .arg("--secrets")
        .arg(sandbox.path().join("secrets.yml"))
        .env("TDRE_TIME_SCALE", "0.001")
        .output()
        .expect("runs")
}

#[tokio::test]
async fn account_to_account_box_appends_once_and_replaces_the_summary() {
    let sandbox = Sandbox::new();
    let data = sandbox.path().join("td-local");
    // The workflow's `td>` step: the box's query in account A.
    let td = TdLocal::start(Config::new(&data)).await.unwrap();
    let (a, b) = (td.accounts()[0].clone(), td.accounts()[1].clone());
    let sql = std::fs::read_to_string(repo_root().join(BOX).join("queries/daily_codes.sql")).unwrap();
    let job_id = run_query(&td, &a.master_key, "sample_datasets", &sql).await;
    td.shutdown().await;
    sandbox.write(
        "secrets.yml",
        &format!(
            "td:\n  apikey: \"{}\"\naccount_b:\n  apikey: \"{}\"\n",
            a.master_key, b.master_key
        ),
    );

    for task in [
        "tasks/export_history.yml",
        "tasks/export_summary.yml",
        "tasks/export_history.yml",
    ] {
        // No server runs in this process meanwhile: the binary starts its own on the data directory.
        let out = export(&sandbox, &data, task, &job_id);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{task}: {stderr}");
        for key in [&a.master_key, &b.master_key] {
            assert!(
                !stderr.contains(key.as_str())
                    && !String::from_utf8_lossy(&out.stdout).contains(key.as_str())
            );
        }
    }
    let expected = expected_codes();
    // Appended once although the history task ran twice; the summary holds exactly the result.
    assert_eq!(codes(&data, 1, "analytics", "daily_codes").await, expected);
    assert_eq!(codes(&data, 1, "analytics", "latest_codes").await, expected);
}
