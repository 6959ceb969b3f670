//! The operator killed (SIGKILL) at random and at chosen points, then run again: the target
//! always ends with exactly the expected rows (append: once; replace: exactly the new rows, no
//! temp table left), and between the runs a replace's target holds the old rows or the new
//! ones, never a mix. SIGTERM ends a run with exit 3, error class `Interrupted`.

use std::process::Child;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use td_local::{FaultAction, FaultRule};

use crate::support::{assert_valid_status, sorted, source_records, ExportFixture, TARGET_DB};

/// Rows of the source job: about ten parts at the fixture's part size.
const ROWS: usize = 16_000;

/// Rows unlike any of the source job's, to fill a target before a replace.
fn fill_with_old_rows(fx: &ExportFixture, table: &str) -> Vec<serde_json::Value> {
    let old: Vec<serde_json::Value> = source_records(40, 77)
        .into_iter()
        .map(|mut r| {
            r["id"] = (r["id"].as_i64().unwrap() + 5_000_000).into();
            r
        })
        .collect();
    fx.td.insert(2, TARGET_DB, table, &old);
    sorted(old)
}

fn spawn(fx: &ExportFixture, mode: &str, table: &str) -> Child {
    fx.command_for(&fx.spec(mode, table))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the operator starts")
}

/// SIGKILL, and reap the process.
fn kill(mut child: Child) {
    let _ = child.kill();
    child.wait().expect("the killed operator is reaped");
}

/// What a target may hold while no run is in progress: for append nothing or the rows once;
/// for replace the old rows or the new ones, never a mix (the swap is atomic).
fn assert_between_runs(
    fx: &ExportFixture,
    mode: &str,
    table: &str,
    before: &[serde_json::Value],
    context: &str,
) {
    let rows = fx.rows_of(table);
    let ok = rows == before || rows == fx.expected;
    assert!(
        ok,
        "{context}: between runs the {mode} target holds {} row(s): neither what it held before ({}) \
         nor exactly the new rows ({})",
        rows.len(),
        before.len(),
        fx.expected.len()
    );
}

/// After the final run: exactly the new rows, once; no temp table; an append that is run once
/// more writes nothing.
fn assert_done(fx: &ExportFixture, mode: &str, table: &str, context: &str) {
    fx.assert_rows(table, &fx.expected, context);
    assert!(
        fx.temp_tables().is_empty(),
        "{context}: temp tables left: {:?}",
        fx.temp_tables()
    );
    if mode == "append" {
        fx.run_spec(&fx.spec(mode, table))
            .expect_exit(0, &format!("{context}: one more run"));
        assert_eq!(
            fx.status()["export"]["already_done"],
            true,
            "{context}: one more run"
        );
        fx.assert_rows(table, &fx.expected, &format!("{context}: after one more run"));
    }
}

/// How long a clean run of `mode` takes here (and that it writes the rows), to spread kill
/// points over: the quicker of two runs, as one may be slowed by whatever else the machine runs.
fn clean_run_time(fx: &ExportFixture, mode: &str) -> Duration {
    crate::support::operator_bin(); // built (if it must be) before the clock starts
    (0..2)
        .map(|run| {
            let table = format!("calibration_{run}");
            let started = Instant::now();
            fx.run_spec(&fx.spec(mode, &table)).expect_exit(0, "clean run");
            let took = started.elapsed();
            fx.assert_rows(&table, &fx.expected, "clean run");
            took
        })
        .min()
        .expect("two runs")
}

/// Where a killed run left the export: the state of the bulk-import session loading `table`
/// (or its temp table), with the count of parts, or `no session`.
fn progress_of(fx: &ExportFixture, table: &str) -> String {
    let temp_prefix = format!("{table}_tdre_");
    let states: Vec<String> = fx
        .td
        .server
        .inspect()
        .bulk_imports(2)
        .expect("sessions read")
        .into_iter()
        .filter(|s| s.session.table == table || s.session.table.starts_with(&temp_prefix))
        .map(|s| match (s.session.status.as_str(), s.session.upload_frozen) {
            ("uploading", false) => format!("uploading ({} parts)", s.parts),
            ("uploading", true) => "frozen".to_string(),
            (status, _) => status.to_string(),
        })
        .collect();
    if states.is_empty() {
        "no session".to_string()
    } else {
        states.join(", ")
    }
}

fn killed_at_random_points(mode: &str, seed: u64) {
    let fx = ExportFixture::new(ROWS, seed);
    let mut span = clean_run_time(&fx, mode);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut left = std::collections::BTreeSet::new();
    const ROUNDS: u32 = 8;
    for round in 0..ROUNDS {
        let table = format!("killed_{round}");
        let before = match mode {
            "replace" => fill_with_old_rows(&fx, &table),
            _ => Vec::new(),
        };
        // Every other round kills twice, so a run also resumes what a killed rerun left.
        for kill_no in 0..1 + round % 2 {
            // A round's first kill falls in its own eighth of the span (at random within it), so
            // the kills cover the whole run however its phases are shared out; a second kill
            // falls anywhere.
            let (from, width) = match kill_no {
                0 => (
                    0.05 + 0.9 * f64::from(round) / f64::from(ROUNDS),
                    0.9 / f64::from(ROUNDS),
                ),
                _ => (0.05, 0.9),
            };
            let at = span.mul_f64(rng.random_range(from..from + width));
            let context = format!("{mode}, round {round}, kill {kill_no} after {at:?}");
            let mut child = spawn(&fx, mode, &table);
            std::thread::sleep(at);
            let finished = child.try_wait().expect("the operator's state is read").is_some();
            kill(child);
            let state = progress_of(&fx, &table);
            if finished {
                eprintln!("{context}: the run had finished");
                if kill_no == 0 {
                    // A fresh run over before the kill: runs are quicker now than the calibration
                    // was, so later kills are spread over this shorter span. (A rerun resumes,
                    // so it may well be quicker.)
                    span = at;
                }
            } else {
                left.insert(state.split(" (").next().unwrap_or_default().to_string());
                eprintln!("{context}: {state}");
            }
            assert_between_runs(&fx, mode, &table, &before, &context);
        }
        let context = format!("{mode}, round {round}, rerun after the kills");
        fx.run_spec(&fx.spec(mode, &table)).expect_exit(0, &context);
        assert_done(&fx, mode, &table, &context);
    }
    // The kills must have landed in different phases, or they proved little. Where a kill lands
    // depends on this machine's speed, so only two phases are required here; every phase is hit
    // for certain by `killed_while_a_chosen_call_is_in_flight…`, which holds the call first.
    assert!(
        left.len() >= 2,
        "{mode}: every kill left the session in one of only {left:?}"
    );
}

#[test]
fn append_killed_at_random_points_and_rerun_writes_the_rows_exactly_once() {
    killed_at_random_points("append", 11);
}

#[test]
fn replace_killed_at_random_points_is_old_or_new_and_ends_with_exactly_the_new_rows() {
    killed_at_random_points("replace", 12);
}

/// A call held by the server (a `Delay` fault) while the operator is killed: the kill lands
/// exactly there. The held call may still be served after the client died, as a real server may.
struct KillPoint {
    mode: &'static str,
    method: &'static str,
    path: &'static str,
    call: u64,
}

const fn at(mode: &'static str, method: &'static str, path: &'static str, call: u64) -> KillPoint {
    KillPoint {
        mode,
        method,
        path,
        call,
    }
}

const KILL_POINTS: &[KillPoint] = &[
    at("append", "GET", "^/v3/job/result/", 1),
    at("append", "PUT", "^/v3/bulk_import/upload_part/", 3),
    at("append", "GET", "^/v3/bulk_import/list_parts/", 1),
    at("append", "POST", "^/v3/bulk_import/freeze/", 1),
    at("append", "POST", "^/v3/table/append-schema/", 1),
    at("append", "POST", "^/v3/bulk_import/perform/", 1),
    at("append", "POST", "^/v3/bulk_import/commit/", 1),
    at("replace", "POST", "^/v3/table/update-schema/", 1),
    at("replace", "PUT", "^/v3/bulk_import/upload_part/", 3),
    at("replace", "POST", "^/v3/bulk_import/perform/", 1),
    at("replace", "POST", "^/v3/bulk_import/commit/", 1),
    at("replace", "POST", "^/v3/table/rename/", 1),
];

/// How long the server holds the call the kill lands on.
const HOLD: Duration = Duration::from_millis(600);

/// Waits until rule `id` has fired (the held call has reached the server).
fn wait_until_fired(fx: &ExportFixture, id: u64, context: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if fx
            .td
            .server
            .faults()
            .rules()
            .iter()
            .any(|r| r.id == id && r.fired > 0)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("{context}: the operator never made the call to hold");
}

#[test]
fn killed_while_a_chosen_call_is_in_flight_then_rerun_ends_with_exactly_the_expected_rows() {
    let fx = ExportFixture::new(ROWS, 13);
    for (i, point) in KILL_POINTS.iter().enumerate() {
        let table = format!("held_{i:02}");
        let context = format!(
            "{}, killed during call {} of {}",
            point.mode, point.call, point.path
        );
        let before = match point.mode {
            "replace" => fill_with_old_rows(&fx, &table),
            _ => Vec::new(),
        };
        let hold = FaultAction::Delay {
            millis: HOLD.as_millis() as u64,
        };
        let rule = FaultRule::new(Some(point.method), point.path, hold).on_calls(&[point.call]);
        let id = fx.td.server.faults().add(rule).expect("fault rule accepted");
        let child = spawn(&fx, point.mode, &table);
        wait_until_fired(&fx, id, &context);
        kill(child);
        fx.td.server.faults().clear();
        // Let the held call land (or be dropped) before anyone looks or reruns.
        std::thread::sleep(HOLD + Duration::from_millis(300));
        assert_between_runs(&fx, point.mode, &table, &before, &context);

        fx.run_spec(&fx.spec(point.mode, &table))
            .expect_exit(0, &format!("{context}: rerun"));
        assert_done(&fx, point.mode, &table, &format!("{context}: rerun"));
    }
}

/// SIGTERM while parts upload: the run stops with exit 3, its status document says `failed`
/// with error class `Interrupted` (and is valid), and a rerun writes the rows exactly once.
#[test]
fn sigterm_fails_the_run_as_interrupted_and_a_rerun_completes_exactly_once() {
    let fx = ExportFixture::new(ROWS, 14);
    for mode in ["append", "replace"] {
        let table = format!("terminated_{mode}");
        let context = format!("{mode}, SIGTERM during the upload");
        let before = match mode {
            "replace" => fill_with_old_rows(&fx, &table),
            _ => Vec::new(),
        };
        let hold = FaultAction::Delay { millis: 400 };
        let rule = FaultRule::new(Some("PUT"), "^/v3/bulk_import/upload_part/", hold).on_calls(&[2]);
        let id = fx.td.server.faults().add(rule).expect("fault rule accepted");
        let mut child = spawn(&fx, mode, &table);
        wait_until_fired(&fx, id, &context);
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "{context}: SIGTERM not sent");
        let status = wait_with_timeout(&mut child, Duration::from_secs(20), &context);
        fx.td.server.faults().clear();
        assert_eq!(status.code(), Some(3), "{context}: exit code");

        let doc = fx.status();
        assert_valid_status(&doc);
        assert_eq!(doc["state"], "failed", "{context}: {doc:#}");
        assert_eq!(doc["exit_code"], 3, "{context}");
        assert_eq!(doc["error"]["class"], "Interrupted", "{context}: {doc:#}");
        assert_eq!(doc["error"]["retryable"], true, "{context}");
        assert!(
            doc["error"]["message"].as_str().unwrap_or("").contains("SIGTERM"),
            "{context}: {doc:#}"
        );
        std::thread::sleep(Duration::from_millis(500));
        assert_between_runs(&fx, mode, &table, &before, &context);
        // The run cleaned up before it exited: a replace's temp table is gone; an append's
        // session is left for the rerun to resume, and the document says so.
        assert!(
            fx.temp_tables().is_empty(),
            "{context}: temp tables left: {:?}",
            fx.temp_tables()
        );
        let left = &doc["export"]["left"];
        match mode {
            "replace" => assert!(
                left["temp_table"].is_null() && left["session"].is_null(),
                "{context}: {left:#}"
            ),
            _ => assert!(
                left["resumable"] == true && left["session"].is_string(),
                "{context}: {left:#}"
            ),
        }

        fx.run_spec(&fx.spec(mode, &table))
            .expect_exit(0, &format!("{context}: rerun"));
        assert_eq!(fx.status()["state"], "success", "{context}: rerun");
        assert_done(&fx, mode, &table, &format!("{context}: rerun"));
    }
}

fn wait_with_timeout(child: &mut Child, limit: Duration, context: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("waiting on the operator") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{context}: the operator did not stop within {limit:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Where a signal lands: a call of `mode`'s run held by the server.
const SIGNAL_POINTS: &[(&str, &str, &str, &str, u64)] = &[
    ("query", "append", "GET", "^/v3/job/show/", 1),
    ("download", "append", "GET", "^/v3/job/result/", 1),
    ("upload", "append", "PUT", "^/v3/bulk_import/upload_part/", 2),
    ("perform", "append", "POST", "^/v3/bulk_import/perform/", 1),
    ("commit", "append", "POST", "^/v3/bulk_import/commit/", 1),
    ("rename", "replace", "POST", "^/v3/table/rename/", 1),
];

/// SIGINT or SIGTERM at any point of a run (the query, the download, an upload, the perform,
/// the commit, the rename) ends it with exit 3 and a valid status document, and never prints a
/// panic: a Digdag log must not show a crash where a user pressed Ctrl-C.
#[test]
fn sigint_and_sigterm_at_every_point_of_a_run_exit_3_without_a_panic() {
    let fx = ExportFixture::new(ROWS, 15);
    for (point, mode, method, path, call) in SIGNAL_POINTS {
        for signal in ["INT", "TERM"] {
            let table = format!("signal_{point}_{signal}").to_lowercase();
            let context = format!("SIG{signal} during the {point}");
            let hold = FaultAction::Delay { millis: 800 };
            let rule = FaultRule::new(Some(method), path, hold).on_calls(&[*call]);
            let id = fx.td.server.faults().add(rule).expect("fault rule accepted");
            let spec = if *point == "query" {
                let name = format!("query-{table}.yml");
                fx.td.sandbox.write(
                    &name,
                    &format!(
                        "query: SELECT id, name, score, time FROM events\ndatabase: srcdb\n{}result_url: '{}'\n",
                        fx.td.source_yaml(),
                        fx.td
                            .target_url(&format!("{TARGET_DB}/{table}?mode={mode}")),
                    ),
                );
                name
            } else {
                fx.spec(mode, &table)
            };
            let mut child = fx
                .command_for(&spec)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("the operator starts");
            wait_until_fired(&fx, id, &context);
            let sent = std::process::Command::new("kill")
                .args([&format!("-{signal}"), &child.id().to_string()])
                .status()
                .expect("kill runs");
            assert!(sent.success(), "{context}: signal not sent");
            let status = wait_with_timeout(&mut child, Duration::from_secs(20), &context);
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            fx.td.server.faults().clear();
            assert!(
                !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
                "{context}: a panic was printed:\n{stderr}"
            );
            // The run may have finished the held call's step before it saw the signal.
            let doc = fx.status();
            assert_valid_status(&doc);
            match status.code() {
                Some(3) => assert_eq!(doc["error"]["class"], "Interrupted", "{context}: {doc:#}"),
                Some(0) => assert_eq!(doc["state"], "success", "{context}"),
                other => panic!("{context}: exit {other:?}\n{stderr}"),
            }
        }
    }
}

/// SIGINT or SIGTERM while the result is still arriving (a slow network: td-local sends it in
/// small pieces), at spread moments: never a panic. The stage that reads the result then waits on
/// the network inside the async runtime; stopping the runtime under it made tokio panic ("A Tokio
/// 1.x context was found, but it is being shutdown") on every such signal.
#[test]
fn signals_while_the_result_arrives_print_no_panic() {
    let fx = ExportFixture::new(40_000, 16);
    for (i, signal) in ["INT", "TERM", "INT", "TERM"].into_iter().enumerate() {
        let table = format!("arriving_{i}");
        let context = format!("SIG{signal} {i}/4 while the result arrives");
        let slow = FaultAction::Throttle {
            bytes: 16 * 1024,
            millis: 40,
        };
        fx.td
            .server
            .faults()
            .add(FaultRule::new(Some("GET"), "^/v3/job/result/", slow))
            .expect("fault rule accepted");
        let mut child = fx
            .command_for(&fx.spec("append", &table))
            .env_remove("TDRE_PART_BYTES")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the operator starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while fx.td.requests_to("GET", "/v3/job/result/").len() <= i {
            assert!(
                Instant::now() < deadline,
                "{context}: the result was never asked for"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(150 + 100 * i as u64));
        let _ = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status();
        let status = wait_with_timeout(&mut child, Duration::from_secs(20), &context);
        fx.td.server.faults().clear();
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(
            !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
            "{context}: a panic was printed:\n{stderr}"
        );
        assert_eq!(status.code(), Some(3), "{context}: {status:?}\n{stderr}");
    }
}

/// A run killed outright (SIGKILL) leaves its status document `running`, with its process; a
/// rerun on this machine with the same document finds that process gone and resumes the
/// session at once instead of waiting for it to stand still.
#[test]
fn a_rerun_after_a_crash_on_this_machine_resumes_at_once() {
    let fx = ExportFixture::new(ROWS, 17);
    let table = "crashed_here";
    let hold = FaultAction::Delay { millis: 2_000 };
    let rule = FaultRule::new(Some("PUT"), "^/v3/bulk_import/upload_part/", hold).on_calls(&[2]);
    let id = fx.td.server.faults().add(rule).expect("fault rule accepted");
    let child = spawn(&fx, "append", table);
    let pid = child.id();
    wait_until_fired(&fx, id, "the first run");
    kill(child);
    fx.td.server.faults().clear();
    let doc = fx.status();
    assert_eq!(doc["state"], "running", "{doc:#}");
    assert_eq!(doc["process"]["pid"], pid, "{doc:#}");

    // Waits at a tenth of their length: a wait for the crashed run would last 12 s.
    let started = Instant::now();
    let mut rerun = fx.command_for(&fx.spec("append", table));
    rerun.env("TDRE_TIME_SCALE", "0.1");
    let out = fx.td.run_command(rerun);
    out.expect_exit(0, "the rerun");
    assert!(
        !out.stderr.contains("another run of this export holds"),
        "the rerun waited for a run that had crashed:\n{}",
        out.stderr
    );
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
    assert_done(&fx, "append", table, "after the rerun");
}

/// A session left by a run this machine cannot see (another machine's: no claim here, no status
/// document) is waited on: the wait says which session, how long it has stood still and how
/// long the wait lasts at most, then takes the load over where it stands; the rows land once.
#[test]
fn a_session_left_by_a_run_elsewhere_is_waited_on_with_reports_then_taken_over() {
    let fx = ExportFixture::new(ROWS, 18);
    let table = "left_elsewhere";
    let (tmp_a, tmp_b) = (
        fx.td.sandbox.path().join("tmp-a"),
        fx.td.sandbox.path().join("tmp-b"),
    );
    std::fs::create_dir_all(&tmp_a).unwrap();
    std::fs::create_dir_all(&tmp_b).unwrap();
    let hold = FaultAction::Delay { millis: 2_000 };
    let rule = FaultRule::new(Some("PUT"), "^/v3/bulk_import/upload_part/", hold).on_calls(&[2]);
    let id = fx.td.server.faults().add(rule).expect("fault rule accepted");
    let child = fx
        .command_for(&fx.spec("append", table))
        .env("TMPDIR", &tmp_a)
        .env_remove("XDG_RUNTIME_DIR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the operator starts");
    wait_until_fired(&fx, id, "the first run");
    kill(child);
    fx.td.server.faults().clear();
    std::fs::remove_file(fx.td.sandbox.path().join("status.json")).unwrap();

    // Waits at a hundredth of their length: standing still 1.2 s, a report every 0.3 s.
    let mut rerun = fx.command_for(&fx.spec("append", table));
    rerun
        .env("TDRE_TIME_SCALE", "0.01")
        .env("TMPDIR", &tmp_b)
        .env_remove("XDG_RUNTIME_DIR");
    let out = fx.td.run_command(rerun);
    out.expect_exit(0, "the rerun");
    for said in [
        "another run of this export holds bulk import session",
        "still waiting for bulk import session",
        "taking its load over",
    ] {
        assert!(out.stderr.contains(said), "`{said}` not said:\n{}", out.stderr);
    }
    assert_done(&fx, "append", table, "after the rerun");
}
