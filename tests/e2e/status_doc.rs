//! The status document for every exit code: valid against `schema/status.schema.json` (checked by
//! every run of the suite), with the state, exit code, error and Digdag keys a runner reads.

use td_local::{FaultAction, FaultRule};

use crate::export::with_events_job;
use crate::support::TdLocalRun;

fn spec(td: &TdLocalRun, job: &str) -> String {
    format!(
        "job_id: '{job}'\n{}result_url: {}\n",
        td.source_yaml(),
        td.target_url("dstdb/events_copy?mode=append")
    )
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
