//! The status document for every exit code: valid against `schema/status.schema.json` (checked by
//! every run of the suite), with the state, exit code, error and Digdag keys a runner reads.

use td_local::{FaultAction, FaultRule};

use crate::export::with_events_job;
use crate::support::{read_status, TdLocalRun};

fn spec(td: &TdLocalRun, job: &str) -> String {
    td.job_spec(job, "dstdb/events_copy?mode=append")
}

#[test]
fn a_success_stores_the_job_that_wrote_the_rows_as_td_last_job_id() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    let out = td.export(&spec(&td, &job), &[]);
    out.expect_code(0);
    let doc = &out.status;
    assert_eq!(doc["state"], "success");
    assert!(doc["error"].is_null());
    // As after Digdag's td_result_export>: the job that wrote the rows, here the target
    // account's bulk-import perform job; the source job has a name of its own.
    let writer = doc["store_params"]["td"]["last_job_id"]
        .as_str()
        .expect("a writer job")
        .to_string();
    assert_ne!(writer, job);
    assert_eq!(td.job(2, &writer).status.as_str(), "success");
    assert_eq!(doc["store_params"]["td"]["last_job"]["id"], writer.as_str());
    assert_eq!(doc["store_params"]["td"]["last_job"]["num_records"], 4);
    assert_eq!(
        doc["store_params"]["td_result_export"]["source_job_id"],
        job.as_str()
    );
    assert_eq!(doc["store_params"]["td_result_export"]["rows"], 4);
    assert_eq!(doc["store_params"]["td_result_export"]["already_done"], false);
    assert_eq!(doc["export"]["writer_job_id"], writer.as_str());
    // A rerun that finds the export done stores the ids of the run that did it.
    let again = td.export(&spec(&td, &job), &[]);
    again.expect_code(0);
    assert_eq!(again.status["store_params"]["td"], doc["store_params"]["td"]);
    assert_eq!(
        again.status["store_params"]["td_result_export"]["already_done"],
        true
    );
    assert_eq!(doc["export"]["rows"], 4);
    assert_eq!(
        doc["export"]["idempotency_key"],
        format!("{job}|http://{}|dstdb|events_copy|append", td.host())
    );
    assert!(doc["export"]["session"].as_str().unwrap().starts_with("tdre_"));
    assert!(doc["finished_at"].is_string());
    assert_eq!(doc["attempts"].as_array().unwrap().len(), 1);
}

#[test]
fn a_permanent_failure_exits_1_with_a_valid_document() {
    let td = TdLocalRun::start();
    let job = td.finished_job(1, "sample_datasets", "SELECT nope FROM www_access");
    let out = td.export(&spec(&td, &job), &[]);
    out.expect_code(1);
    assert_eq!(out.status["state"], "failed");
    assert_eq!(out.status["error"]["retryable"], false);
    assert_eq!(out.status["store_params"], serde_json::json!({}));
}

#[test]
fn an_invalid_spec_exits_2_with_a_valid_document_and_sends_nothing() {
    let td = TdLocalRun::start();
    let out = td.export(
        &format!(
            "job_id: '1'\n{}result_url: {}\nresult_settings: {{mode: upsert}}\n",
            td.source_yaml(),
            td.target_url("dstdb/events_copy")
        ),
        &[],
    );
    out.expect_code(2);
    assert_eq!(out.status["state"], "failed");
    assert_eq!(out.status["error"]["class"], "InvalidSpec");
    assert!(
        out.error_message()
            .contains("result_settings.mode: `upsert` is not one of append, replace"),
        "{}",
        out.error_message()
    );
    assert!(td.requests().is_empty(), "nothing was sent: {:#?}", td.requests());
}

#[test]
fn a_configuration_error_exits_2_with_a_valid_document() {
    let (td, job) = with_events_job();
    let out = td.export(
        &format!(
            "job_id: '{job}'\n{}result_url: td://${{secret:target_wo_key}}@{}/dstdb/t_1?mode=replace\n",
            td.source_yaml(),
            td.host()
        ),
        &[],
    );
    out.expect_code(2);
    assert_eq!(out.status["state"], "failed");
    assert_eq!(out.status["export"]["target"]["mode"], "replace");
}

#[test]
fn td_answering_503_to_everything_exits_3_retryable_after_retries() {
    let (td, job) = with_events_job();
    td.fault(FaultRule::new(
        None,
        "^/v3/",
        FaultAction::Status {
            status: 503,
            retry_after: None,
        },
    ));
    td.clear_requests();
    let out = td.export(&format!("{}_retry: 1\n", spec(&td, &job)), &[]);
    out.expect_code(3);
    assert_eq!(out.status["state"], "failed");
    assert_eq!(out.status["error"]["retryable"], true);
    assert_eq!(
        out.status["attempts"].as_array().unwrap().len(),
        2,
        "_retry: 1 → two attempts"
    );
    let shows = td.requests_to("GET", &format!("/v3/job/show/{job}")).len();
    assert_eq!(shows, 2 * 9, "each attempt: the call and its 8 retries");
    assert!(out.stderr.contains("503"), "{}", out.stderr);
}

/// Once the rows are sent, TD still performs, commits and renames: the running document and
/// the progress lines say which step the run waits for, and the finished document no longer does.
#[test]
fn a_running_export_names_the_step_td_is_at_in_its_status_and_progress() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    // Hold the commit and the rename long enough to be seen.
    for path in ["^/v3/bulk_import/commit/", "^/v3/table/rename/"] {
        td.fault(FaultRule::new(
            Some("POST"),
            path,
            FaultAction::Delay { millis: 1_500 },
        ));
    }
    td.sandbox
        .write("spec.yml", &td.job_spec(&job, "dstdb/events_copy?mode=replace"));
    let child = td.spawn(&["run", "spec.yml", "--status", "status.json"]);
    let status_path = td.sandbox.path().join("status.json");
    // Each step seen, with the start every write of it gave (the same each time).
    let mut steps: Vec<(String, serde_json::Value)> = Vec::new();
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(30) {
        let doc = read_status(&status_path);
        if !doc.is_null() && doc["state"] != "running" {
            break;
        }
        if let Some(step) = doc["export"]["phase"]["step"].as_str() {
            let began = &doc["export"]["phase"]["started_at"];
            assert!(began.is_string(), "{doc:#}");
            match steps.last() {
                Some((last, at)) if last == step => assert_eq!(at, began, "{step} moved its start"),
                _ => steps.push((step.to_string(), began.clone())),
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let steps: Vec<&str> = steps.iter().map(|(s, _)| s.as_str()).collect();
    assert!(steps.contains(&"commit"), "{steps:?}");
    assert!(steps.contains(&"rename"), "{steps:?}");
    let commit = steps.iter().position(|s| *s == "commit").unwrap();
    assert!(
        steps.iter().position(|s| *s == "rename").unwrap() > commit,
        "{steps:?}"
    );

    let out = crate::support::RunOutcome::from_output(child.wait_with_output().unwrap(), &status_path);
    out.expect_code(0);
    assert!(out.status["export"].get("phase").is_none(), "{:#}", out.status);
    assert!(out.stderr.contains("4 rows sent; commit"), "{}", out.stderr);
    assert!(out.stderr.contains("4 rows sent; rename"), "{}", out.stderr);
    assert_eq!(td.rows(2, "dstdb", "events_copy").map(|r| r.len()), Some(4));
}
