//! The hard parts of the real TD, as td-local plays them (docs/td-semantics.md): table counts
//! that lag a commit, 409s that are questions, lost answers, performs that die and leave their
//! session `performing`, replace runs that overlap. Each test is one scenario of issue 24 (R1 …
//! R17) through the real binary; each checks the target's rows, not just the exit code.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use td_local::{CountLag, FaultAction, FaultRule};

use td_result_export::internals::{Payload, SessionAction};

use crate::support::{read_status, sorted, source_records, ExportFixture, TdLocalRun, TARGET_DB};

/// Rows of the source job: six parts at the fixture's part size.
const ROWS: usize = 12_000;

fn status(code: u16) -> FaultAction {
    FaultAction::Status {
        status: code,
        retry_after: None,
    }
}

/// The bulk-import session `name` of the target account, as TD shows it.
fn session(fx: &ExportFixture, name: &str) -> Option<td_result_export::internals::Session> {
    let client = fx.td.client(2);
    fx.td.rt.block_on(client.session(name)).expect("bulk_import/show")
}

/// The session name the last run recorded in its status document.
fn session_of(doc: &Value) -> String {
    doc["export"]["session"]
        .as_str()
        .unwrap_or_else(|| panic!("no session in {doc:#}"))
        .to_string()
}

/// Rows unlike any of the source job's: `n` of them, to fill a target before a replace.
fn fill_with_old_rows(fx: &ExportFixture, table: &str, n: usize) -> Vec<Value> {
    let old: Vec<Value> = source_records(n, 77)
        .into_iter()
        .map(|mut r| {
            r["id"] = (r["id"].as_i64().unwrap() + 5_000_000).into();
            r
        })
        .collect();
    fx.td.insert(2, TARGET_DB, table, &old);
    sorted(old)
}

/// Requests of the last runs to `path_part` with `method`.
fn calls(fx: &ExportFixture, method: &str, path_part: &str) -> usize {
    fx.td.requests_to(method, path_part).len()
}

/// R1, with TD's lagging count: the count disagrees right after the commit. The run neither
/// fails nor deletes its committed session, and the rerun (Digdag's `_retry`) writes nothing.
#[test]
fn r1_an_append_whose_count_lags_exits_0_count_pending_and_its_rerun_writes_nothing() {
    let fx = ExportFixture::new(ROWS, 31);
    let spec = fx.spec("append", "lagging");
    fx.run_spec(&spec).expect_exit(0, "first run");
    let doc = fx.status();
    let export = &doc["export"];
    assert_eq!(export["verified"], "count_pending", "{doc:#}");
    let v = &export["verification"];
    assert_eq!(v["rows_committed"], ROWS, "{v:#}");
    assert_eq!(v["rows_read"], ROWS, "{v:#}");
    assert_eq!(v["num_records"], ROWS, "{v:#}");
    assert_eq!(v["count"]["expected"], ROWS, "{v:#}");
    assert_eq!(v["count"]["matched"], false, "{v:#}");
    let name = session_of(&doc);
    let kept = session(&fx, &name).expect("the committed session is kept as the commit's record");
    assert_eq!(kept.status.as_str(), "committed");
    fx.assert_rows("lagging", &fx.expected, "after the first run");

    fx.run_spec(&spec).expect_exit(0, "rerun");
    assert_eq!(fx.status()["export"]["already_done"], true, "{:#}", fx.status());
    fx.assert_rows("lagging", &fx.expected, "after the rerun: the rows once");
}

/// R1, with a refusal after the commit: `table/show` answers 403 once the rows are committed.
/// The count is a confirmation only; the commit stands and the rerun writes nothing.
#[test]
fn r1_a_refused_table_show_after_the_commit_keeps_the_commit_and_its_rerun_writes_nothing() {
    let fx = ExportFixture::new(ROWS, 32);
    // How many table/show calls an append makes before its commit, from a clean run.
    fx.td.clear_requests();
    fx.run_spec(&fx.spec("append", "measured"))
        .expect_exit(0, "measuring run");
    let log = fx.td.requests();
    let commit_at = log
        .iter()
        .position(|r| r.method == "POST" && r.path.contains("/bulk_import/commit/"))
        .expect("the measuring run commits");
    let before_commit = log[..commit_at]
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/table/show/"))
        .count() as u64;

    let after: Vec<u64> = (before_commit + 1..before_commit + 50).collect();
    fx.td
        .server
        .faults()
        .add(FaultRule::new(Some("GET"), "^/v3/table/show/", status(403)).on_calls(&after))
        .expect("fault rule accepted");
    let spec = fx.spec("append", "refused_after_commit");
    let first = fx.run_spec(&spec);
    fx.td.server.faults().clear();
    first.expect_exit(0, "a refused count after the commit");
    assert_eq!(
        fx.status()["export"]["verified"],
        "rows_committed",
        "{:#}",
        fx.status()
    );
    fx.run_spec(&spec).expect_exit(0, "rerun");
    assert_eq!(fx.status()["export"]["already_done"], true);
    fx.assert_rows("refused_after_commit", &fx.expected, "the rows once");
}

/// A replace's count lags too: the renamed table shows the old count for a while. Exit 0,
/// `count_pending`, exactly the new rows.
#[test]
fn a_replace_whose_count_lags_exits_0_count_pending_with_exactly_the_new_rows() {
    let fx = ExportFixture::new(ROWS, 33);
    fill_with_old_rows(&fx, "replaced", 40);
    fx.run_spec(&fx.spec("replace", "replaced"))
        .expect_exit(0, "replace");
    let doc = fx.status();
    assert_eq!(doc["export"]["verified"], "count_pending", "{doc:#}");
    assert_eq!(doc["export"]["verification"]["rows_committed"], ROWS);
    fx.assert_rows("replaced", &fx.expected, "replace");
    assert!(fx.temp_tables().is_empty());
}

/// With exact counts (`td-local serve --count-lag 0`), the count check matches at once.
#[test]
fn a_count_that_agrees_is_recorded_as_count_matched_with_its_numbers() {
    let td = TdLocalRun::start_with_count_lag(CountLag::none());
    let fx = ExportFixture::on(td, 2_000, 34);
    fx.td.insert(
        2,
        TARGET_DB,
        "matched",
        &[serde_json::json!({"id": -1, "time": 1})],
    );
    fx.run_spec(&fx.spec("append", "matched"))
        .expect_exit(0, "append");
    let v = &fx.status()["export"]["verification"];
    assert_eq!(fx.status()["export"]["verified"], "count_matched");
    assert_eq!(v["count"]["before"], 1, "{v:#}");
    assert_eq!(v["count"]["expected"], 2_001, "{v:#}");
    assert_eq!(v["count"]["found"], 2_001, "{v:#}");
}

/// R2: TD's front end may answer 409 to a retried request. A 409 on a part upload is read as a
/// question: the run reads the session, sees it still uploading, and uploads again.
#[test]
fn r2_a_409_on_a_part_upload_reads_the_session_and_uploads_every_part() {
    let fx = ExportFixture::new(ROWS, 35);
    for mode in ["append", "replace"] {
        let table = format!("conflicted_{mode}");
        fx.td
            .server
            .faults()
            .add(FaultRule::new(Some("PUT"), "^/v3/bulk_import/upload_part/", status(409)).on_calls(&[2, 4]))
            .expect("fault rule accepted");
        let out = fx.run_spec(&fx.spec(mode, &table));
        fx.td.server.faults().clear();
        out.expect_exit(0, mode);
        assert_eq!(fx.status()["export"]["already_done"], false);
        fx.assert_rows(
            &table,
            &fx.expected,
            &format!("{mode}: every row, after two 409s"),
        );
    }
}

/// R3: a 409 on the source's `job/result` is no event of the target's session: nothing is
/// committed from it; the run retries or fails retryably, and the target never holds a partial
/// (or, for replace, an emptied) table.
#[test]
fn r3_a_409_on_the_sources_job_result_is_no_session_event() {
    let fx = ExportFixture::new(ROWS, 36);
    for mode in ["append", "replace"] {
        let table = format!("source_conflict_{mode}");
        let before = match mode {
            "replace" => fill_with_old_rows(&fx, &table, 40),
            _ => Vec::new(),
        };
        fx.td
            .server
            .faults()
            .add(
                FaultRule::new(Some("GET"), "^/v3/job/result/", status(409))
                    .on_calls(&[1, 2, 3, 4, 5, 6, 7, 8]),
            )
            .expect("fault rule accepted");
        let out = fx.run_spec(&fx.spec(mode, &table));
        fx.td.server.faults().clear();
        let rows = fx.rows_of(&table);
        match out.code {
            0 => assert_eq!(rows, fx.expected, "{mode}: exit 0 means every row"),
            3 => assert_eq!(
                rows, before,
                "{mode}: a retryable failure leaves the target as it was"
            ),
            other => panic!("{mode}: exit {other}: {}", out.stderr),
        }
        assert_eq!(fx.status()["export"]["already_done"], false);
        fx.run_spec(&fx.spec(mode, &table)).expect_exit(0, "rerun");
        fx.assert_rows(&table, &fx.expected, &format!("{mode}: after the rerun"));
    }
}

/// R15: the commit is done but its answer is lost (cut body). The run recognises the commit as
/// its own: "exported", not "already done … nothing written".
#[test]
fn r15_a_lost_commit_answer_is_recognised_as_this_runs_commit() {
    let fx = ExportFixture::new(ROWS, 37);
    fx.td
        .server
        .faults()
        .add(
            FaultRule::new(
                Some("POST"),
                "^/v3/bulk_import/commit/",
                FaultAction::Truncate { after_bytes: 3 },
            )
            .on_calls(&[1]),
        )
        .expect("fault rule accepted");
    let out = fx.run_spec(&fx.spec("append", "lost_commit"));
    fx.td.server.faults().clear();
    out.expect_exit(0, "lost commit answer");
    assert_eq!(fx.status()["export"]["already_done"], false, "{:#}", fx.status());
    assert!(
        out.stdout.contains(&format!("exported {ROWS} rows")),
        "{}",
        out.stdout
    );
    fx.assert_rows("lost_commit", &fx.expected, "the rows once");
}

/// R16: `bulk_import/create` is done but its answer is lost; the retry answers 409. That 409
/// is this run's own session: no wait for "another run".
#[test]
fn r16_a_lost_create_answer_is_recognised_as_this_runs_session() {
    let fx = ExportFixture::new(ROWS, 38);
    for mode in ["append", "replace"] {
        let table = format!("lost_create_{mode}");
        for path in ["^/v3/bulk_import/create/", "^/v3/table/create/"] {
            fx.td
                .server
                .faults()
                .add(
                    FaultRule::new(Some("POST"), path, FaultAction::Truncate { after_bytes: 3 })
                        .on_calls(&[1]),
                )
                .expect("fault rule accepted");
        }
        let started = Instant::now();
        let out = fx.run_spec(&fx.spec(mode, &table));
        fx.td.server.faults().clear();
        out.expect_exit(0, mode);
        assert!(
            !out.stderr.contains("waiting for the other run"),
            "{mode}: waited on its own session:\n{}",
            out.stderr
        );
        assert!(started.elapsed() < Duration::from_secs(60));
        fx.assert_rows(&table, &fx.expected, mode);
    }
}

/// A perform whose answer is lost: the run reads the session before anything else and never
/// starts a second trial while one runs.
#[test]
fn a_lost_perform_answer_reads_the_session_and_sends_perform_once() {
    let fx = ExportFixture::new(ROWS, 39);
    fx.td.clear_requests();
    fx.td
        .server
        .faults()
        .add(
            FaultRule::new(
                Some("POST"),
                "^/v3/bulk_import/perform/",
                FaultAction::Truncate { after_bytes: 3 },
            )
            .on_calls(&[1]),
        )
        .expect("fault rule accepted");
    let out = fx.run_spec(&fx.spec("append", "lost_perform"));
    fx.td.server.faults().clear();
    out.expect_exit(0, "lost perform answer");
    assert_eq!(calls(&fx, "POST", "/v3/bulk_import/perform/"), 1, "one trial");
    fx.assert_rows("lost_perform", &fx.expected, "the rows once");
}

/// A perform job killed on TD leaves its session `performing` for good (embulk-output-td #133).
/// A rerun finds it so, starts a new trial and writes the rows once.
#[test]
fn a_rerun_after_a_killed_perform_starts_a_new_trial_and_writes_once() {
    let fx = ExportFixture::new(ROWS, 40);
    // A first run that gets no further than the perform (every perform refused with 503).
    fx.td
        .server
        .faults()
        .add(FaultRule::new(
            Some("POST"),
            "^/v3/bulk_import/perform/",
            status(503),
        ))
        .expect("fault rule accepted");
    let spec = fx.spec("append", "killed_perform");
    let first = fx.run_spec(&spec);
    fx.td.server.faults().clear();
    first.expect_exit(3, "perform refused");
    let name = session_of(&fx.status());
    // Then a perform job that TD killed: the session stays performing under the dead job.
    let inspect = fx.td.server.inspect();
    let job = inspect.interrupt_perform(2, &name).expect("session is there");
    let (code, body) = fx.td.post_form(2, &format!("/v3/job/kill/{job}"), &[]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(session(&fx, &name).unwrap().status.as_str(), "performing");

    fx.run_spec(&spec).expect_exit(0, "rerun");
    fx.assert_rows(
        "killed_perform",
        &fx.expected,
        "the rows once, not the dead trial's",
    );
}

/// R7: the result body ends early at a gzip member boundary (every byte the server sent is a
/// valid stream): rows read must equal the job's `num_records` before any commit. Exit 3
/// with nothing committed; a rerun that reads the whole result writes every row.
#[test]
fn r7_a_result_cut_at_a_gzip_member_boundary_is_never_committed() {
    let td = TdLocalRun::start();
    let records = source_records(2_000, 41);
    let rows: Vec<Value> = records
        .iter()
        .map(|r| serde_json::json!([r["id"], r["name"], r["score"], r["time"]]))
        .collect();
    let inspect = td.server.inspect();
    let columns = [
        ("id", "bigint"),
        ("name", "varchar"),
        ("score", "double"),
        ("time", "bigint"),
    ];
    let job = inspect
        .finished_job(1, "srcdb", &columns, &rows, 1_700_000_000)
        .expect("job recorded");
    let path = td_local::internals::result_path(td.server.data_dir(), job);
    let whole = std::fs::read(&path).unwrap();
    let half = td_local::internals::gzip_msgpack(&rows[..1_000]).unwrap();
    std::fs::write(&path, &half).unwrap();
    td.create_database(2, TARGET_DB);
    let fx = ExportFixture::with_job(td, job.to_string(), sorted(records));

    let spec = fx.spec("append", "cut");
    let out = fx.run_spec(&spec);
    out.expect_exit(3, "a result cut short");
    assert!(
        fx.status()["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("1000"),
        "the error gives the numbers: {:#}",
        fx.status()
    );
    assert!(
        fx.rows_of("cut").is_empty(),
        "nothing committed from a cut result"
    );

    std::fs::write(&path, &whole).unwrap();
    fx.run_spec(&spec).expect_exit(0, "rerun on the whole result");
    fx.assert_rows("cut", &fx.expected, "every row once");
}

/// R14: a session an earlier run left `ready` with rejected records does not poison the key: a
/// rerun drops it, starts over, and its status document says so.
#[test]
fn r14_a_session_left_with_rejected_records_is_dropped_and_the_export_starts_over() {
    let fx = ExportFixture::new(ROWS, 42);
    let spec = fx.spec("append", "rejected");
    // The session name of this export: from a run that stops before the upload (the target's
    // database refused).
    fx.td
        .server
        .faults()
        .add(FaultRule::new(
            Some("POST"),
            "^/v3/bulk_import/create/",
            status(400),
        ))
        .expect("fault rule accepted");
    fx.run_spec(&spec);
    fx.td.server.faults().clear();
    let name = session_of(&fx.status());
    // An earlier run's session under that name, performed with a rejected record.
    fx.td.server.inspect().create_table(2, TARGET_DB, "rejected").ok();
    let client = fx.td.client(2);
    let bad = td_local::internals::gzip_msgpack(&[serde_json::json!("not a record")]).unwrap();
    fx.td.rt.block_on(async {
        client.create_session(&name, TARGET_DB, "rejected").await.unwrap();
        client
            .upload_part(&name, "bad", Payload::Bytes(bad.into()))
            .await
            .unwrap();
        client
            .session_action(&name, SessionAction::Perform)
            .await
            .unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while session(&fx, &name).unwrap().status.as_str() != "ready" {
        assert!(Instant::now() < deadline, "perform never ended");
        std::thread::sleep(Duration::from_millis(50));
    }

    fx.run_spec(&spec).expect_exit(0, "the rerun");
    let doc = fx.status();
    assert!(doc["export"]["dropped_session"].is_string(), "{doc:#}");
    fx.assert_rows("rejected", &fx.expected, "every row once");
}

/// R6: a replace's committed session stays (the commit's record) and the target then changes
/// (another writer adds a row). A rerun ends at once — done — without looping on the API.
#[test]
fn r6_a_rerun_beside_a_committed_replace_session_ends_at_once_without_spinning() {
    let fx = ExportFixture::new(2_000, 43);
    let spec = fx.spec("replace", "settled");
    fx.run_spec(&spec).expect_exit(0, "first run");
    fx.td.insert(
        2,
        TARGET_DB,
        "settled",
        &[serde_json::json!({"id": -7, "time": 5})],
    );
    fx.td.clear_requests();
    let started = Instant::now();
    fx.run_spec(&spec).expect_exit(0, "rerun");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(fx.status()["export"]["already_done"], true, "{:#}", fx.status());
    let made = fx.td.requests().len();
    assert!(made < 40, "the rerun made {made} requests");
    assert_eq!(
        fx.rows_of("settled").len(),
        2_001,
        "the other writer's row is not undone"
    );
}

/// Starts one run of `spec` with its own status document, with waits scaled by 0.01 (a
/// session makes no progress for `stale_after` = 1.2 s before it looks abandoned).
fn start(fx: &ExportFixture, spec: &str, status_doc: &str) -> Child {
    let mut cmd = fx.td.command(&["run", spec, "--status", status_doc]);
    cmd.env("TDRE_PART_BYTES", fx.part_bytes.to_string())
        .env("TDRE_TIME_SCALE", "0.01")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd.spawn().expect("the operator starts")
}

/// A run whose stderr nobody reads as it goes: it is read away, so that a run saying a lot
/// (retries, a long wait's reports) never blocks on a full pipe.
fn drained(mut child: Child) -> Child {
    if let Some(mut stderr) = child.stderr.take() {
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    }
    child
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// R4: a waiting replace sees the owner fail and clean up; the target's old count equals the
/// new result's. The waiter must not call that "already done": it writes the new rows (or exits
/// 3), never leaves yesterday's rows in place with exit 0.
#[test]
fn r4_a_replace_waiter_never_calls_the_owners_failure_its_success() {
    let fx = ExportFixture::new(ROWS, 44);
    // As many old rows as the result has: a count cannot tell them apart.
    let old = fill_with_old_rows(&fx, "top_n", ROWS);
    assert_eq!(old.len(), fx.expected.len());
    let spec = fx.spec("replace", "top_n");
    // The owner's uploads are slow, so the waiter comes while it works.
    fx.td
        .server
        .faults()
        .add(FaultRule::new(
            Some("PUT"),
            "^/v3/bulk_import/upload_part/",
            FaultAction::Delay { millis: 300 },
        ))
        .expect("fault rule accepted");
    let mut owner = start(&fx, &spec, "owner.json");
    wait_for("the owner's first part", Duration::from_secs(30), || {
        calls(&fx, "PUT", "/v3/bulk_import/upload_part/") > 0
    });
    let waiter = start(&fx, &spec, "waiter.json");
    std::thread::sleep(Duration::from_millis(300));
    // The owner fails (SIGTERM) and cleans up its session and temp table.
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &owner.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    assert_eq!(owner.wait().unwrap().code(), Some(3), "the owner was interrupted");
    fx.td.server.faults().clear();
    let out = waiter.wait_with_output().unwrap();
    let doc = read_status(&fx.td.sandbox.path().join("waiter.json"));
    let rows = fx.rows_of("top_n");
    match out.status.code() {
        Some(0) => {
            assert_eq!(rows, fx.expected, "exit 0 means the new rows: {doc:#}");
        }
        Some(3) => assert!(rows == old || rows == fx.expected, "old or new, never a mix"),
        other => panic!(
            "the waiter exited {other:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
    fx.run_spec(&spec).expect_exit(0, "a final run");
    fx.assert_rows("top_n", &fx.expected, "exactly the new rows");
}

/// R5 and R17: a replace owner that is slow (no new part for longer than `stale_after`) is
/// still alive: a waiter may take the session over where it stands but never deletes what the
/// owner made. Both end 0 or 3 (never 1), and the target holds exactly the new rows.
#[test]
fn r5_r17_a_replace_waiter_never_discards_a_slow_owners_session() {
    let fx = ExportFixture::new(ROWS, 45);
    fill_with_old_rows(&fx, "slow_owner", 40);
    let spec = fx.spec("replace", "slow_owner");
    // Each part takes 1.5 s: longer than stale_after at this time scale (1.2 s).
    fx.td
        .server
        .faults()
        .add(FaultRule::new(
            Some("PUT"),
            "^/v3/bulk_import/upload_part/",
            FaultAction::Delay { millis: 1_500 },
        ))
        .expect("fault rule accepted");
    let owner = start(&fx, &spec, "owner.json");
    wait_for("the owner's first part", Duration::from_secs(30), || {
        calls(&fx, "PUT", "/v3/bulk_import/upload_part/") > 0
    });
    let waiter = start(&fx, &spec, "waiter.json");
    let owner = owner.wait_with_output().unwrap();
    let waiter = waiter.wait_with_output().unwrap();
    fx.td.server.faults().clear();
    for (who, out) in [("owner", &owner), ("waiter", &waiter)] {
        let code = out.status.code();
        assert!(
            code == Some(0) || code == Some(3),
            "the {who} exited {code:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        owner.status.code() == Some(0) || waiter.status.code() == Some(0),
        "one of them finished the export"
    );
    fx.assert_rows("slow_owner", &fx.expected, "exactly the new rows");
    assert!(fx.temp_tables().is_empty(), "{:?}", fx.temp_tables());
}

/// An append into a table whose columns would read the result's values as NULL (TD stores them
/// and NULLs them silently) stops before a row moves: exit 2, no session, no part, every column
/// named with both types and the fix.
#[test]
fn a_schema_conflict_stops_an_append_with_exit_2_before_any_upload() {
    let fx = ExportFixture::new(2_000, 46);
    let inspect = fx.td.server.inspect();
    inspect.create_table(2, TARGET_DB, "typed").unwrap();
    inspect
        .set_schema(
            2,
            TARGET_DB,
            "typed",
            r#"[["name","long"],["score","long"],["id","double"]]"#,
        )
        .unwrap();
    fx.td.clear_requests();
    let out = fx.run_spec(&fx.spec("append", "typed"));
    out.expect_exit(2, "schema conflict");
    let message = out.error_message();
    for needle in [
        "`name` is long in the table but string (varchar)",
        "`score` is long in the table but double (double)",
        "CAST(",
        "on_schema_conflict: write",
    ] {
        assert!(message.contains(needle), "{needle:?} missing from: {message}");
    }
    assert!(
        !message.contains("`id`"),
        "long into double reads fine: {message}"
    );
    assert_eq!(fx.status()["error"]["class"], "SchemaConflict");
    let left = &fx.status()["export"]["left"];
    assert!(
        left.is_null() || left["note"] == "nothing of this run is left on the target",
        "no session was made, so none is another run's: {left:#}"
    );
    assert_eq!(
        calls(&fx, "PUT", "/v3/bulk_import/upload_part/"),
        0,
        "zero uploads"
    );
    assert_eq!(calls(&fx, "POST", "/v3/bulk_import/create/"), 0, "no session");
    assert!(fx.rows_of("typed").is_empty());

    // Told to write anyway, it writes every row (TD reads the mistyped values as NULL).
    let spec = fx.spec_with(
        "append",
        "typed",
        "result_settings: {on_schema_conflict: write}\n",
    );
    fx.run_spec(&spec).expect_exit(0, "on_schema_conflict: write");
    assert_eq!(fx.rows_of("typed").len(), 2_000);
}

/// A replace rewrites the schema, so a type change is no conflict there.
#[test]
fn a_replace_changes_column_types_without_a_conflict() {
    let fx = ExportFixture::new(500, 47);
    let inspect = fx.td.server.inspect();
    inspect.create_table(2, TARGET_DB, "retyped").unwrap();
    inspect
        .set_schema(2, TARGET_DB, "retyped", r#"[["name","long"]]"#)
        .unwrap();
    fx.run_spec(&fx.spec("replace", "retyped"))
        .expect_exit(0, "replace");
    fx.assert_rows("retyped", &fx.expected, "replace");
}

/// An empty result sends no session: append makes the table (with the result's columns) and
/// reports 0 rows; replace empties the target in one rename.
#[test]
fn an_empty_result_sends_no_session_and_makes_or_empties_the_target() {
    let td = TdLocalRun::start();
    td.insert(1, "srcdb", "events", &source_records(10, 48));
    let job = td.successful_job(
        1,
        "srcdb",
        "SELECT id, name, score, time FROM events WHERE id < 0",
    );
    td.create_database(2, TARGET_DB);
    let fx = ExportFixture::with_job(td, job, Vec::new());
    fill_with_old_rows(&fx, "emptied", 40);
    fx.td.clear_requests();
    for (mode, table) in [("append", "made_empty"), ("replace", "emptied")] {
        let out = fx.run_spec(&fx.spec(mode, table));
        out.expect_exit(0, mode);
        let doc = fx.status();
        assert_eq!(doc["export"]["rows"], 0, "{mode}: {doc:#}");
        assert_eq!(doc["export"]["already_done"], false, "{mode}");
        assert_eq!(doc["export"]["verification"]["num_records"], 0, "{mode}: {doc:#}");
        assert!(
            fx.td.tables(2, TARGET_DB).contains(&table.to_string()),
            "{mode}: the target exists"
        );
        assert!(fx.rows_of(table).is_empty(), "{mode}: the target is empty");
        let columns: Vec<String> = fx
            .td
            .schema(2, TARGET_DB, table)
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c[0].as_str().unwrap().to_string())
            .collect();
        assert_eq!(columns, ["id", "name", "score"], "{mode}: the result's columns");
    }
    assert_eq!(calls(&fx, "POST", "/v3/bulk_import/create/"), 0, "no session");
    assert!(fx.temp_tables().is_empty());
}

/// A write-only key appends into an existing table: TD's own numbers verify the commit; the
/// count confirms it where the key may read the table (TD lets a write-only key call
/// `table/show`, embulk-output-td #64/#65) and is skipped where it may not.
#[test]
fn a_write_only_append_into_an_existing_table_verifies_from_the_sessions_numbers() {
    let fx = ExportFixture::new(ROWS, 49);
    let write_only = |table: &str| {
        let name = format!("export-wo-{table}.yml");
        fx.td.sandbox.write(
            &name,
            &format!(
                "job_id: '{}'\n{}result_url: td://${{secret:target_wo_key}}@{}/{TARGET_DB}/{table}?mode=append\n",
                fx.job_id,
                fx.td.source_yaml(),
                fx.td.host()
            ),
        );
        name
    };
    for (table, refuse_show) in [("wo_readable", false), ("wo_refused", true)] {
        fx.td
            .insert(2, TARGET_DB, table, &[serde_json::json!({"id": -1, "time": 1})]);
        if refuse_show {
            fx.td
                .server
                .faults()
                .add(FaultRule::new(Some("GET"), "^/v3/table/show/", status(403)))
                .expect("fault rule accepted");
        }
        let spec = write_only(table);
        let out = fx.run_spec(&spec);
        fx.td.server.faults().clear();
        out.expect_exit(0, table);
        let doc = fx.status();
        let v = &doc["export"]["verification"];
        assert_eq!(v["rows_committed"], ROWS, "{table}: {doc:#}");
        assert_eq!(v["num_records"], ROWS, "{table}");
        let verified = doc["export"]["verified"].as_str().unwrap().to_string();
        if refuse_show {
            assert_eq!(verified, "rows_committed", "{table}");
        } else {
            assert!(
                verified == "count_pending" || verified == "count_matched",
                "{table}: {verified}"
            );
        }
        assert_eq!(
            fx.rows_of(table).len(),
            ROWS + 1,
            "{table}: the rows once beside the old one"
        );
        fx.run_spec(&spec).expect_exit(0, "rerun");
        assert_eq!(
            fx.rows_of(table).len(),
            ROWS + 1,
            "{table}: a rerun writes nothing"
        );
    }
}

/// One trial of the property below: the mode, the faults, and the two runs' timing.
#[derive(Debug, Clone)]
struct Trial {
    replace: bool,
    /// (kind of failure, chance per call, seed) for every call to the API.
    faults: Vec<(u8, u8, u64)>,
    /// When the second run starts after the first (ms).
    second_after: u64,
    /// When the first run is killed (SIGKILL) after its start (ms), if it is.
    kill_first_after: Option<u64>,
}

fn fault_action(kind: u8) -> FaultAction {
    match kind % 6 {
        0 => status(500),
        1 => status(503),
        2 => status(409),
        3 => status(429),
        4 => FaultAction::Reset,
        _ => FaultAction::Truncate { after_bytes: 7 },
    }
}

/// Two runs of one export overlap under random faults (409s included), the first maybe killed
/// with SIGKILL at a random moment; then a clean run. Between the runs the target holds nothing
/// or the rows once (append), the old or the new rows (replace); at the end exactly the rows once.
#[test]
fn two_runs_of_one_export_under_random_faults_and_kills_write_exactly_once() {
    use proptest::prelude::*;
    let strategy = (
        any::<bool>(),
        proptest::collection::vec((0u8..6, 1u8..6, any::<u64>()), 1..4),
        0u64..400,
        proptest::option::of(50u64..1_500),
    )
        .prop_map(|(replace, faults, second_after, kill_first_after)| Trial {
            replace,
            faults,
            second_after,
            kill_first_after,
        });
    let fx = ExportFixture::new(8_000, 50);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 16,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&strategy, |trial| {
        two_runs(&fx, &trial);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

static CASE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn two_runs(fx: &ExportFixture, trial: &Trial) {
    let n = CASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mode = if trial.replace { "replace" } else { "append" };
    let table = format!("prop_{n}_{mode}");
    let context = format!("case {n}: {trial:?}");
    let before = if trial.replace {
        fill_with_old_rows(fx, &table, 30)
    } else {
        Vec::new()
    };
    for (kind, percent, seed) in &trial.faults {
        let rule = FaultRule::new(None, "^/v3/", fault_action(*kind))
            .with_probability(f64::from(*percent) / 100.0, *seed);
        fx.td.server.faults().add(rule).expect("fault rule accepted");
    }
    let spec = fx.spec(mode, &table);
    let mut first = drained(start(fx, &spec, &format!("first_{n}.json")));
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(trial.second_after));
    let second = drained(start(fx, &spec, &format!("second_{n}.json")));
    if let Some(after) = trial.kill_first_after {
        let elapsed = started.elapsed().as_millis() as u64;
        std::thread::sleep(Duration::from_millis(after.saturating_sub(elapsed)));
        let _ = first.kill();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for mut child in [first, second] {
        loop {
            if child.try_wait().expect("waiting on a run").is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "{context}: a run did not end in 120 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    fx.td.server.faults().clear();
    // Anything still in flight (a killed run's held call) settles.
    std::thread::sleep(Duration::from_millis(200));
    let rows = fx.rows_of(&table);
    if trial.replace {
        assert!(
            rows == before || rows == fx.expected,
            "{context}: {} rows, neither old nor new",
            rows.len()
        );
    } else {
        assert!(
            rows.is_empty() || rows == fx.expected,
            "{context}: {} rows, neither none nor once",
            rows.len()
        );
    }
    let last = fx.run_spec(&spec);
    last.expect_exit(0, &format!("{context}: the clean run"));
    fx.assert_rows(&table, &fx.expected, &format!("{context}: the end"));
    assert!(fx.temp_tables().is_empty(), "{context}: {:?}", fx.temp_tables());
}
