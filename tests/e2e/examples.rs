//! Every example in `examples/` runs end to end on the embedded td-local (`--local DIR`), twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::support::{check_outcome, repo_root, sorted, RunOutcome, Sandbox, FAST};

fn examples() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(repo_root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no examples");
    found
}

/// The keys td-local generated in `dir` (none may be printed).
fn local_keys(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("accounts.yml"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split_once("_key:")
                .map(|(_, k)| k.trim().trim_matches('\'').to_string())
        })
        .collect()
}

fn run_example(sandbox: &Sandbox, example: &Path) -> RunOutcome {
    let out = sandbox
        .cmd()
        .env(FAST.0, FAST.1)
        .arg("run")
        .arg(example)
        .args(["--local", "data", "--status", "status.json"])
        .output()
        .unwrap();
    let outcome = RunOutcome::from_output(out, &sandbox.path().join("status.json"));
    let keys = local_keys(&sandbox.path().join("data"));
    assert!(!keys.is_empty(), "td-local wrote its accounts");
    check_outcome(&outcome, &keys);
    outcome
}

#[test]
fn every_example_runs_end_to_end_twice() {
    for example in examples() {
        let sandbox = Sandbox::new();
        for run in 1..=2 {
            let out = run_example(&sandbox, &example);
            assert_eq!(
                out.code,
                0,
                "{} (run {run}):\n{}\n{}",
                example.display(),
                out.stdout,
                out.stderr
            );
            assert_eq!(out.status["state"], "success");
        }
    }
}

/// Rows of `db.table` in `account` of the td-local data in `dir` (opened after the runs ended).
fn rows_in(dir: &Path, account: i64, db: &str, table: &str) -> Vec<Value> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let td = rt
        .block_on(td_local::TdLocal::start(td_local::Config::new(dir)))
        .unwrap();
    let rows = td
        .inspect()
        .rows(account, db, table)
        .unwrap()
        .expect("the table exists");
    rt.block_on(td.shutdown());
    sorted(rows.into_iter().map(|r| Value::Object(r.record)).collect())
}

#[test]
fn the_quickstart_replaces_account_2s_table_with_account_1s_code_counts() {
    let sandbox = Sandbox::new();
    let quickstart = repo_root().join("examples/quickstart.yml");
    let first = run_example(&sandbox, &quickstart);
    first.expect_code(0);
    let second = run_example(&sandbox, &quickstart);
    second.expect_code(0);

    let data = sandbox.path().join("data");
    let mut counts: BTreeMap<i64, i64> = BTreeMap::new();
    for row in rows_in(&data, 1, "sample_datasets", "www_access") {
        *counts.entry(row["code"].as_i64().unwrap()).or_default() += 1;
    }
    let output = rows_in(&data, 2, "testdb", "output_table");
    let time = output[0]["time"].clone();
    assert!(time.is_i64(), "{output:?}");
    let expected: Vec<Value> = counts
        .into_iter()
        .map(|(code, cnt)| json!({"code": code, "cnt": cnt, "time": time}))
        .collect();
    assert_eq!(
        output,
        sorted(expected),
        "exactly the counts, once, after two runs"
    );
    assert_eq!(second.status["export"]["time_source"], "job_start");
    for out in [&first, &second] {
        assert!(
            out.stdout.contains(&format!("exported {} rows", output.len()))
                && out.stdout.contains("local testdb.output_table (replace, stream)")
                && out.stdout.contains("status document: status.json"),
            "the summary names rows, target and the status document: {}",
            out.stdout
        );
    }
}
