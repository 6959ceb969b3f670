//! Every treasure box's task specs run end to end, unchanged, against td-local: `--local DIR`
//! points their real TD hosts at it, and the workflow's `td>` step is played by issuing the box's
//! query.

use serde_json::{json, Value};

use crate::support::{repo_root, sorted, RunOutcome, TdLocalRun};

const BOX: &str = "treasure_boxes/account_to_account";

/// Runs one task spec of the box as the workflow's `sh>` would, with its secrets in the
/// environment (`${secret:td.apikey}` → `TD_APIKEY`).
fn export(td: &TdLocalRun, task: &str, job_id: &str) -> RunOutcome {
    let spec = repo_root().join(BOX).join(task);
    let data = td.server.data_dir().to_str().expect("utf-8 path").to_string();
    let mut cmd = td.command(&[
        "run",
        spec.to_str().expect("utf-8 path"),
        "--local",
        &data,
        "--status",
        "status.json",
    ]);
    cmd.args([
        "--param",
        &format!("td.last_job_id={job_id}"),
        "--param",
        "session_date=2014-10-03",
    ])
    .env("TD_APIKEY", td.master(1))
    .env("ACCOUNT_B_APIKEY", td.master(2));
    td.run_command(cmd)
}

/// The box's query result as rows keyed like the target table: code, requests, bytes, last_seen.
fn expected_rows(job_start: i64) -> Vec<Value> {
    let mut by_code: std::collections::BTreeMap<i64, (i64, i64, i64)> = Default::default();
    for row in td_local::sample::www_access_rows() {
        let entry = by_code.entry(row.record["code"].as_i64().unwrap()).or_default();
        entry.0 += 1;
        entry.1 += row.record["size"].as_i64().unwrap();
        entry.2 = entry.2.max(row.time);
    }
    sorted(
        by_code
            .into_iter()
            .map(|(code, (requests, bytes, last))| {
                let last_seen = chrono::DateTime::from_timestamp(last, 0).unwrap().format("%Y-%m-%d %H:%M:%S").to_string();
                json!({"code": code, "requests": requests, "bytes": bytes, "last_seen": last_seen, "time": job_start})
            })
            .collect(),
    )
}

#[test]
fn account_to_account_box_appends_once_and_replaces_the_summary() {
    let td = TdLocalRun::start();
    let sql = std::fs::read_to_string(repo_root().join(BOX).join("queries/daily_codes.sql")).unwrap();
    let job_id = td.successful_job(1, "sample_datasets", &sql);
    let job_start = td_result_export::source::job_start_time(&td.job(1, &job_id)).expect("start time");

    // History twice (a rerun of the day), the summary once.
    for task in [
        "tasks/export_history.yml",
        "tasks/export_summary.yml",
        "tasks/export_history.yml",
    ] {
        export(&td, task, &job_id).expect_code(0);
    }
    let expected = expected_rows(job_start);
    assert_eq!(
        td.rows(2, "analytics", "daily_codes"),
        Some(expected.clone()),
        "appended exactly once"
    );
    assert_eq!(
        td.rows(2, "analytics", "latest_codes"),
        Some(expected),
        "replaced with the result"
    );
}
