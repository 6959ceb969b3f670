//! The source side through the real binary: a job still running is waited for, a failed job is
//! a clear failure, and a query (inline or from a file) is issued — once, with an idempotency key.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::export::{events, with_events_job};
use crate::support::{sorted, TdLocalRun};

/// A query SQLite needs a few seconds for: the job is still running when the operator starts.
const SLOW_QUERY: &str = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 3000000) \
                          SELECT COUNT(1) AS total, 1700000000 AS time FROM n";

fn spec_for_job(td: &TdLocalRun, job: &str) -> String {
    format!(
        "job_id: '{job}'\n{}result_url: {}\n",
        td.source_yaml(),
        td.target_url("dstdb/out?mode=append")
    )
}

/// `SELECT code, COUNT(1) AS cnt FROM www_access GROUP BY code`, computed from the stored sample
/// rows of account 1, with `time` = `time`.
fn code_counts(td: &TdLocalRun, time: i64) -> Vec<Value> {
    let mut counts: BTreeMap<i64, i64> = BTreeMap::new();
    for row in td
        .rows(1, "sample_datasets", "www_access")
        .expect("the sample table")
    {
        *counts
            .entry(row["code"].as_i64().expect("integer codes"))
            .or_default() += 1;
    }
    assert!(counts.len() > 1, "the sample has several codes");
    sorted(
        counts
            .into_iter()
            .map(|(code, cnt)| json!({"code": code, "cnt": cnt, "time": time}))
            .collect(),
    )
}

#[test]
fn a_source_job_still_running_is_waited_for() {
    let td = TdLocalRun::start();
    td.create_database(2, "dstdb");
    let job = td.issue(1, "sample_datasets", SLOW_QUERY);
    assert!(
        !td.job(1, &job).is_finished(),
        "the source job should still be running when the export starts"
    );
    let out = td.export(&spec_for_job(&td, &job), &[]);
    out.expect_code(0);
    assert_eq!(
        td.rows(2, "dstdb", "out"),
        Some(vec![json!({"total": 3_000_000, "time": 1_700_000_000})])
    );
    let polls = td.requests_to("GET", &format!("/v3/job/show/{job}")).len();
    assert!(
        polls >= 2,
        "the operator polled the running job ({polls} time(s))"
    );
}

#[test]
fn a_failed_source_job_exits_1_with_its_stderr() {
    let td = TdLocalRun::start();
    td.create_database(2, "dstdb");
    let job = td.finished_job(1, "sample_datasets", "SELECT * FROM no_such_table");
    let stderr = td.job(1, &job).debug.and_then(|d| d.stderr).unwrap_or_default();
    assert!(stderr.contains("no_such_table"), "td-local's stderr: {stderr}");

    let out = td.export(&spec_for_job(&td, &job), &[]);
    out.expect_code(1);
    let headline = format!("source job {job} ended with status 'error'");
    for text in [out.stderr.as_str(), out.error_message()] {
        assert!(text.contains(&headline), "{text}");
        assert!(text.contains(stderr.trim()), "the job's stderr is shown: {text}");
    }
    assert_eq!(out.status["error"]["class"], "SourceJobFailed");
    assert_eq!(out.status["error"]["retryable"], false);
    assert!(td.rows(2, "dstdb", "out").is_none(), "nothing was written");
}

#[test]
fn a_query_source_is_issued_and_its_result_exported() {
    let td = TdLocalRun::start();
    td.create_database(2, "dstdb");
    let spec = format!(
        "query: SELECT code, COUNT(1) AS cnt, 1700000000 AS time FROM www_access GROUP BY code\n\
         database: sample_datasets\n{}result_url: {}\n",
        td.source_yaml(),
        td.target_url("dstdb/codes?mode=replace")
    );
    let out = td.export(&spec, &[]);
    out.expect_code(0);
    assert_eq!(
        td.rows(2, "dstdb", "codes"),
        Some(code_counts(&td, 1_700_000_000))
    );
    let issued = td.requests_to("POST", "/v3/job/issue/presto/sample_datasets");
    assert_eq!(issued.len(), 1);
    assert_eq!(issued[0].account, Some(1));
    assert_eq!(
        out.status["store_params"]["td_result_export"]["source_job_id"],
        out.status["export"]["source_job_id"]
    );
}

#[test]
fn a_query_file_is_read_relative_to_the_spec() {
    let td = TdLocalRun::start();
    td.create_database(2, "dstdb");
    td.sandbox.write(
        "queries/codes.sql",
        "-- counts per status code\nSELECT code, COUNT(1) AS cnt, ${t} AS time\nFROM www_access\nGROUP BY code\n",
    );
    td.sandbox.write(
        "specs/spec.yml",
        &format!(
            "query_file: ../queries/codes.sql\ndatabase: sample_datasets\nengine: trino\n{}result_url: {}\n",
            td.source_yaml(),
            td.target_url("dstdb/codes?mode=append")
        ),
    );
    td.run(&[
        "run",
        "specs/spec.yml",
        "--status",
        "status.json",
        "--param",
        "t=1600000000",
    ])
    .expect_code(0);
    assert_eq!(
        td.rows(2, "dstdb", "codes"),
        Some(code_counts(&td, 1_600_000_000))
    );
    assert_eq!(
        td.requests_to("POST", "/v3/job/issue/trino/sample_datasets")
            .len(),
        1
    );
}

#[test]
fn an_idempotency_key_makes_a_rerun_reuse_the_query_job_and_find_the_export_done() {
    let td = TdLocalRun::start();
    td.insert(1, "srcdb", "events", &events());
    td.create_database(2, "dstdb");
    let spec = format!(
        "query: SELECT id, name, score, time FROM events\ndatabase: srcdb\nidempotency_key: events-2024-01-31\n\
         {}result_url: {}\n",
        td.source_yaml(),
        td.target_url("dstdb/events_copy?mode=append")
    );
    let first = td.export(&spec, &[]);
    first.expect_code(0);
    let key = first.status["export"]["idempotency_key"]
        .as_str()
        .unwrap_or_default();
    assert!(
        key.starts_with("events-2024-01-31|"),
        "the given key, scoped to the target: {key}"
    );

    // A fresh status file: the rerun finds the job through the domain key, not the document.
    std::fs::remove_file(td.sandbox.path().join("status.json")).unwrap();
    td.clear_requests();
    let second = td.export(&spec, &[]);
    second.expect_code(0);
    assert_eq!(second.status["export"]["already_done"], true);
    assert_eq!(
        second.status["export"]["source_job_id"], first.status["export"]["source_job_id"],
        "the rerun reused the first job"
    );
    let issued = td.requests_to("POST", "/v3/job/issue/");
    assert!(
        issued.iter().all(|r| r.status == 409),
        "a second issue is answered 409 (domain key taken): {issued:#?}"
    );
    assert_eq!(td.rows(2, "dstdb", "events_copy"), Some(sorted(events())));
    let jobs: i64 = td
        .server
        .store()
        .read(|c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM jobs WHERE account_id = 1 AND query LIKE '%FROM events%'",
                [],
                |r| r.get(0),
            )?)
        })
        .unwrap();
    assert_eq!(jobs, 1, "one query job in all");
}

#[test]
fn a_source_job_of_another_account_is_not_found() {
    let (td, _) = with_events_job();
    let job = td.successful_job(2, "sample_datasets", "SELECT 1 AS x");
    let out = td.export(&spec_for_job(&td, &job), &[]);
    out.expect_code(1);
    assert_eq!(out.status["error"]["class"], "NotFoundError");
    assert!(
        out.stderr.contains(&job),
        "the message names the job: {}",
        out.stderr
    );
}

#[test]
fn a_rerun_after_a_failed_export_reuses_the_query_job_its_status_document_names() {
    let td = TdLocalRun::start();
    td.insert(1, "srcdb", "events", &events());
    let spec = format!(
        "query: SELECT id, name, score, time FROM events\ndatabase: srcdb\n{}result_url: {}\n",
        td.source_yaml(),
        td.target_url("dstdb/events_copy?mode=append")
    );
    let first = td.export(&spec, &[]);
    first.expect_code(1);
    assert_eq!(first.status["error"]["class"], "DatabaseNotFound");
    let job = first.status["export"]["source_job_id"].clone();
    assert!(job.is_string(), "the issued job is recorded: {:#}", first.status);

    td.create_database(2, "dstdb");
    let second = td.export(&spec, &[]);
    second.expect_code(0);
    assert_eq!(second.status["export"]["source_job_id"], job, "the same job");
    assert_eq!(
        td.requests_to("POST", "/v3/job/issue/").len(),
        1,
        "issued once in all"
    );
    assert_eq!(td.rows(2, "dstdb", "events_copy"), Some(sorted(events())));
}

#[test]
fn a_rerun_after_a_failed_query_issues_the_fixed_query_instead_of_reusing_the_failed_job() {
    let td = TdLocalRun::start();
    td.insert(1, "srcdb", "events", &events());
    td.create_database(2, "dstdb");
    let spec = |sql: &str| {
        format!(
            "query: {sql}\ndatabase: srcdb\n{}result_url: {}\n",
            td.source_yaml(),
            td.target_url("dstdb/events_copy?mode=append")
        )
    };
    let first = td.export(&spec("SELECT id, no_such_column FROM events"), &[]);
    first.expect_code(1);
    assert_eq!(first.status["error"]["class"], "SourceJobFailed");

    // Same status file, fixed query: a new job runs it.
    let second = td.export(&spec("SELECT id, name, score, time FROM events"), &[]);
    second.expect_code(0);
    assert_ne!(
        second.status["export"]["source_job_id"],
        first.status["export"]["source_job_id"]
    );
    assert_eq!(td.requests_to("POST", "/v3/job/issue/").len(), 2);
    assert_eq!(td.rows(2, "dstdb", "events_copy"), Some(sorted(events())));
}
