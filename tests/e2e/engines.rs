//! The `server` engine through the real binary: TD (here td-local) writes the result itself,
//! through a td:// URL (legacy mode) or a saved connection with settings; the export job is
//! recorded in the status document, and a rerun polls it instead of submitting a second export.

use std::time::{Duration, Instant};

use td_local::{FaultAction, FaultRule};

use crate::export::{events, with_events_job};
use crate::support::{check_outcome, read_status, sorted, RunOutcome};

#[test]
fn the_server_engine_in_legacy_mode_exports_through_a_td_url() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    let spec = format!(
        "job_id: '{job}'\n{}result_url: {}\nresult_settings: {{legacy_mode: true}}\ntransfer: server\n",
        td.source_yaml(),
        td.target_url("dstdb/events_copy?mode=append")
    );
    let out = td.export(&spec, &[]);
    out.expect_code(0);
    assert_eq!(td.rows(2, "dstdb", "events_copy"), Some(sorted(events())));

    let exports = td.requests_to("POST", &format!("/v3/job/result_export/{job}"));
    assert_eq!(exports.len(), 1);
    assert_eq!(
        exports[0].account,
        Some(1),
        "the source account asks TD to export"
    );
    assert!(
        td.requests_to("PUT", "/v3/bulk_import/").is_empty()
            && td.requests_to("GET", "/v3/job/result/").is_empty(),
        "no row flows through the operator"
    );
    let export_job = out.status["export"]["export_job_id"]
        .as_str()
        .expect("the export job id is recorded");
    assert_ne!(export_job, job);
    assert_eq!(td.job(1, export_job).status.as_str(), "success");
    assert_eq!(out.status["export"]["transfer"], "server");
    assert_eq!(out.status["export"]["rows"], 4);
    assert_eq!(
        out.status["export"]["target"]["endpoint"],
        format!("http://{}", td.host()),
        "a td:// target is named by its host, not as a connection"
    );
    assert!(
        out.stdout
            .contains(&format!("→ http://{} dstdb.events_copy", td.host())),
        "{}",
        out.stdout
    );
    // Digdag's meaning: ${td.last_job_id} is the result-export job, which wrote the rows.
    assert_eq!(out.status["store_params"]["td"]["last_job_id"], export_job);
    assert_eq!(out.status["store_params"]["td"]["last_job"]["num_records"], 4);
    assert_eq!(
        out.status["store_params"]["td_result_export"]["source_job_id"],
        job.as_str()
    );
}

#[test]
fn the_server_engine_uses_a_saved_connection_with_its_settings() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    td.insert(
        2,
        "dstdb",
        "events_copy",
        &[serde_json::json!({"stale": 1, "time": 1})],
    );
    td.save_result(
        1,
        "saved_target",
        &format!("td://{}@{}/dstdb", td.master(2), td.host()),
    );
    let spec = format!(
        "job_id: '{job}'\n{}result_connection: saved_target\n\
         result_settings:\n  user_database_name: dstdb\n  user_table_name: events_copy\n  mode: replace\n\
         transfer: server\n",
        td.source_yaml()
    );
    let out = td.export(&spec, &[]);
    out.expect_code(0);
    assert_eq!(td.rows(2, "dstdb", "events_copy"), Some(sorted(events())));
    assert_eq!(td.requests_to("GET", "/v3/connections/lookup").len(), 1);
    assert_eq!(
        td.requests_to("POST", &format!("/v3/job/result_export/{job}"))
            .len(),
        1
    );
    assert!(out.status["export"]["export_job_id"].is_string());
}

#[test]
fn a_rerun_after_an_interrupted_server_export_polls_the_recorded_job() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    let spec = format!(
        "job_id: '{job}'\n{}result_url: {}\ntransfer: server\n",
        td.source_yaml(),
        td.target_url("dstdb/events_copy?mode=append")
    );
    td.sandbox.write("spec.yml", &spec);
    // The first poll of the export job (the second job/show) hangs, so the run is interrupted
    // after it submitted the export and recorded its id.
    let hang = td.fault(
        FaultRule::new(
            Some("GET"),
            "^/v3/job/show/",
            FaultAction::Delay { millis: 20_000 },
        )
        .on_calls(&[2]),
    );
    let child = td.spawn(&["run", "spec.yml", "--status", "status.json"]);
    let status_path = td.sandbox.path().join("status.json");
    let started = Instant::now();
    let recorded = loop {
        let doc = read_status(&status_path);
        if let Some(id) = doc["export"]["export_job_id"].as_str() {
            break id.to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no export job recorded: {doc:#}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let first = RunOutcome::from_output(out, &status_path);
    check_outcome(&first, &td.keys());
    first.expect_code(3);
    assert_eq!(first.status["error"]["class"], "Interrupted");
    assert_eq!(first.status["export"]["export_job_id"], recorded.as_str());

    td.server.faults().remove(hang);
    let second = td.run(&["run", "spec.yml", "--status", "status.json"]);
    second.expect_code(0);
    assert_eq!(second.status["export"]["export_job_id"], recorded.as_str());
    assert_eq!(
        td.requests_to("POST", "/v3/job/result_export/").len(),
        1,
        "the rerun did not submit a second export"
    );
    assert_eq!(
        td.rows(2, "dstdb", "events_copy"),
        Some(sorted(events())),
        "the rows were appended once"
    );
}

#[test]
fn a_whole_task_retry_polls_the_export_job_the_failed_attempt_submitted() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    // The export job is the next job id: every poll of the first attempt (1 call + 8 retries)
    // answers 503, so that attempt fails as transient after submitting.
    let export_job = (job.parse::<u64>().expect("numeric job id") + 1).to_string();
    let polls: Vec<u64> = (1..=9).collect();
    td.fault(
        FaultRule::new(
            Some("GET"),
            &format!("^/v3/job/show/{export_job}$"),
            FaultAction::Status {
                status: 503,
                retry_after: None,
            },
        )
        .on_calls(&polls),
    );
    let spec = format!(
        "job_id: '{job}'\n{}result_url: {}\nresult_settings: {{legacy_mode: true}}\ntransfer: server\n_retry: 1\n",
        td.source_yaml(),
        td.target_url("dstdb/events_copy?mode=append")
    );
    let out = td.export(&spec, &[]);
    out.expect_code(0);
    assert_eq!(
        out.status["attempts"].as_array().map(Vec::len),
        Some(2),
        "{:#}",
        out.status
    );
    assert_eq!(
        td.requests_to("POST", &format!("/v3/job/result_export/{job}"))
            .len(),
        1,
        "the retry polls the recorded export instead of submitting another"
    );
    assert_eq!(out.status["export"]["export_job_id"], export_job.as_str());
    assert_eq!(td.rows(2, "dstdb", "events_copy"), Some(sorted(events())));
}

#[test]
fn a_rerun_after_a_crash_during_submission_adopts_the_export_td_started() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    let url = td.target_url("dstdb/events_copy?mode=append");
    let spec = format!(
        "job_id: '{job}'\n{}result_url: {url}\ntransfer: server\n",
        td.source_yaml()
    );
    td.sandbox.write("spec.yml", &spec);
    // The submission hangs; the run is SIGKILLed while it is in flight.
    td.fault(
        FaultRule::new(
            Some("POST"),
            "^/v3/job/result_export/",
            FaultAction::Delay { millis: 20_000 },
        )
        .on_calls(&[1]),
    );
    let mut child = td
        .command(&["run", "spec.yml", "--status", "status.json"])
        .spawn()
        .unwrap();
    let status_path = td.sandbox.path().join("status.json");
    let started = Instant::now();
    while read_status(&status_path)["export"]["submitting"].is_null() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the submission was never recorded"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The call follows the marker at once: let it reach the server, where it is held.
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    let left = read_status(&status_path);
    assert!(
        left["export"]["export_job_id"].is_null(),
        "killed before the answer: {left:#}"
    );

    // TD acted on the request the dead run sent (here: the same export submitted directly).
    let key_url = url.replace("${secret:target_key}", &td.master(2));
    let (code, body) = td.post_form(
        1,
        &format!("/v3/job/result_export/{job}"),
        &[("result", &key_url)],
    );
    assert_eq!(code, 201, "{body}");
    let started_export = body["job_id"].as_str().expect("export job id").to_string();
    td.clear_requests();

    let rerun = td.run(&["run", "spec.yml", "--status", "status.json"]);
    rerun.expect_code(0);
    assert_eq!(
        rerun.status["export"]["export_job_id"],
        started_export.as_str(),
        "adopted"
    );
    assert!(
        td.requests_to("POST", "/v3/job/result_export/").is_empty(),
        "no second export was submitted"
    );
    assert_eq!(
        td.rows(2, "dstdb", "events_copy"),
        Some(sorted(events())),
        "the rows were appended once"
    );
}
