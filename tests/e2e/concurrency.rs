//! Runs that overlap (schedules that overlap, a rerun by hand beside Digdag's retry): two or
//! three processes of the same export at once, or a little apart. Exactly one writes; each other
//! one waits for it and exits 0 reporting `already_done`, or exits 3 without disturbing it; no
//! session or temp table is left behind; the target holds the rows once.

use std::process::{Child, Stdio};
use std::time::Duration;

use crate::support::{read_status, ExportFixture, TARGET_DB};

/// Rows of the source job: enough, in small parts, for the runs to overlap.
const ROWS: usize = 12_000;

/// Starts one run of `spec` writing its status document to `status`, `delay` after the call.
fn start(fx: &ExportFixture, spec: &str, status: &str, delay: Duration) -> Child {
    std::thread::sleep(delay);
    let mut cmd = fx.td.command(&["run", spec, "--status", status]);
    // Waits in tens of milliseconds: a run's session must not look abandoned while it works.
    cmd.env("TDRE_PART_BYTES", fx.part_bytes.to_string())
        .env("TDRE_TIME_SCALE", "0.01")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd.spawn().expect("the operator starts")
}

/// What each run ended with: (exit code, its status document, its stderr).
fn finish(children: Vec<(Child, String)>, fx: &ExportFixture) -> Vec<(i32, serde_json::Value, String)> {
    children
        .into_iter()
        .map(|(child, status)| {
            let out = child.wait_with_output().expect("the operator ends");
            let code = out.status.code().expect("exited, not killed");
            let doc = read_status(&fx.td.sandbox.path().join(&status));
            (code, doc, String::from_utf8_lossy(&out.stderr).into_owned())
        })
        .collect()
}

/// The checks every overlap must pass.
fn assert_one_writer(
    fx: &ExportFixture,
    table: &str,
    runs: &[(i32, serde_json::Value, String)],
    context: &str,
) {
    for (code, doc, stderr) in runs {
        assert!(
            *code == 0 || *code == 3,
            "{context}: a run exited {code} (only 0 or 3 may):\n{stderr}\n{doc:#}"
        );
    }
    assert!(
        runs.iter().any(|(code, ..)| *code == 0),
        "{context}: no run succeeded"
    );
    fx.assert_rows(table, &fx.expected, context);
    let sessions = fx.td.server.inspect().bulk_imports(2).expect("sessions listed");
    let leftover: Vec<_> = sessions
        .iter()
        // A committed session is the export's "done" record (append and replace alike);
        // nothing else may stay.
        .filter(|s| s.session.status.as_str() != "committed")
        .map(|s| (s.session.name.clone(), s.session.status.as_str().to_string()))
        .collect();
    assert!(
        leftover.is_empty(),
        "{context}: sessions left behind: {leftover:?}"
    );
    assert!(
        fx.temp_tables().is_empty(),
        "{context}: temp tables left: {:?}",
        fx.temp_tables()
    );
}

/// Among runs that shared one status document each, exactly one says it wrote the rows.
fn assert_one_claims_the_write(runs: &[(i32, serde_json::Value, String)], context: &str) {
    let writers = runs
        .iter()
        .filter(|(code, doc, _)| *code == 0 && doc["export"]["already_done"] == false)
        .count();
    assert_eq!(
        writers, 1,
        "{context}: runs that claim to have written: {runs:#?}"
    );
}

fn overlap(mode: &str, delays: &[u64], context: &str) {
    let fx = ExportFixture::new(ROWS, 31);
    // Each part takes a while to land, so that a run lasts well beyond the last start.
    fx.td.fault(td_local::FaultRule::new(
        Some("PUT"),
        "^/v3/bulk_import/upload_part/",
        td_local::FaultAction::Delay { millis: 150 },
    ));
    let table = format!(
        "overlap_{mode}_{}",
        delays.iter().map(u64::to_string).collect::<Vec<_>>().join("_")
    );
    let spec = fx.spec(mode, &table);
    let children: Vec<(Child, String)> = delays
        .iter()
        .enumerate()
        .map(|(i, delay)| {
            let status = format!("status-{table}-{i}.json");
            let previous = if i == 0 { 0 } else { delays[i - 1] };
            (
                start(&fx, &spec, &status, Duration::from_millis(delay - previous)),
                status,
            )
        })
        .collect();
    let runs = finish(children, &fx);
    assert_one_writer(&fx, &table, &runs, context);
    assert_one_claims_the_write(&runs, context);
}

#[test]
fn three_replaces_at_the_same_instant_write_once() {
    overlap("replace", &[0, 0, 0], "three replaces at once");
}

#[test]
fn replaces_started_a_little_apart_write_once() {
    overlap("replace", &[0, 400, 700], "replaces 0.4 s and 0.7 s apart");
}

#[test]
fn three_appends_at_the_same_instant_write_once() {
    overlap("append", &[0, 0, 0], "three appends at once");
}

#[test]
fn appends_started_a_little_apart_write_once() {
    overlap("append", &[0, 400, 700], "appends 0.4 s and 0.7 s apart");
}

#[test]
fn two_replaces_sharing_one_status_file_write_once() {
    let fx = ExportFixture::new(ROWS, 32);
    let table = "overlap_shared_status";
    let spec = fx.spec("replace", table);
    let a = start(&fx, &spec, "shared.json", Duration::ZERO);
    let b = start(&fx, &spec, "shared.json", Duration::ZERO);
    let runs = finish(vec![(a, "shared.json".into()), (b, "shared.json".into())], &fx);
    assert_one_writer(&fx, table, &runs, "two replaces, one status file");
}

#[test]
fn a_server_append_run_twice_with_one_status_file_writes_once() {
    let fx = ExportFixture::new(3_000, 33);
    let table = "server_twice";
    let spec = fx.spec_with("append", table, "transfer: server\n");
    fx.run_spec(&spec).expect_exit(0, "first run");
    let first = fx.status();
    let again = fx.run_spec(&spec);
    again.expect_exit(0, "second run");
    fx.assert_rows(table, &fx.expected, "a server append run twice");
    assert_eq!(again.status["export"]["already_done"], true);
    assert_eq!(
        again.status["export"]["export_job_id"],
        first["export"]["export_job_id"]
    );
    assert_eq!(again.status["store_params"]["td"], first["store_params"]["td"]);
    assert!(fx.td.rows(2, TARGET_DB, table).is_some());
}

/// Server-engine appends started together, each with a status document of its own: the export
/// goes under a domain key, so one export job writes and the others wait for it (td-local
/// honours the key on `result_export`; TD lists it there, unconfirmed whether it honours it).
#[test]
fn three_server_appends_at_the_same_instant_write_once() {
    let fx = ExportFixture::new(3_000, 34);
    let table = "overlap_server_appends";
    let spec = fx.spec_with("append", table, "transfer: server\n");
    let children: Vec<(Child, String)> = (0..3)
        .map(|i| {
            let status = format!("status-server-{i}.json");
            (start(&fx, &spec, &status, Duration::ZERO), status)
        })
        .collect();
    let runs = finish(children, &fx);
    for (code, doc, stderr) in &runs {
        assert_eq!(*code, 0, "{stderr}\n{doc:#}");
    }
    fx.assert_rows(table, &fx.expected, "three server appends at once");
    assert_one_claims_the_write(&runs, "three server appends at once");
    let exports: std::collections::BTreeSet<_> = runs
        .iter()
        .map(|(_, doc, _)| doc["export"]["export_job_id"].to_string())
        .collect();
    assert_eq!(exports.len(), 1, "one export job: {exports:?}");
}

/// A server-engine append rerun without its status document (a py> task, a lost file) finds
/// the export by its domain key instead of appending the rows again.
#[test]
fn a_server_append_rerun_without_its_status_file_writes_nothing_more() {
    let fx = ExportFixture::new(3_000, 35);
    let table = "server_rerun_no_status";
    let spec = fx.spec_with("append", table, "transfer: server\n");
    fx.run_spec(&spec).expect_exit(0, "first run");
    std::fs::remove_file(fx.td.sandbox.path().join("status.json")).unwrap();
    let again = fx.run_spec(&spec);
    again.expect_exit(0, "rerun");
    assert_eq!(again.status["export"]["already_done"], true);
    fx.assert_rows(
        table,
        &fx.expected,
        "a server append rerun without its status file",
    );
}
