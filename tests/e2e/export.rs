//! The stream engine's two protocols through the real binary against td-local: append exactly
//! once, replace atomically (temp table, one rename), and what each does with a write-only key.

use serde_json::{json, Value};

use crate::support::{sorted, TdLocalRun};

/// The source table's rows (account 1, `srcdb.events`).
pub fn events() -> Vec<Value> {
    vec![
        json!({"id": 1, "name": "alpha", "score": 1.5, "time": 1_700_000_000}),
        json!({"id": 2, "name": "beta", "score": 2.25, "time": 1_700_000_060}),
        json!({"id": 3, "name": "gamma", "score": -0.5, "time": 1_700_000_120}),
        json!({"id": 4, "name": "delta, with \"quotes\" and ünïcode", "score": 1e-3, "time": 1_700_000_180}),
    ]
}

/// A td-local whose account 1 holds `srcdb.events` and a finished job selecting all of it.
pub fn with_events_job() -> (TdLocalRun, String) {
    let td = TdLocalRun::start();
    td.insert(1, "srcdb", "events", &events());
    let job = td.successful_job(1, "srcdb", "SELECT id, name, score, time FROM events");
    (td, job)
}

/// A spec exporting job `job` into account 2's `dstdb.<table>` in `mode`, with a master key.
fn job_spec(td: &TdLocalRun, job: &str, table: &str, mode: &str) -> String {
    format!(
        "job_id: '{job}'\n{}result_url: {}\n",
        td.source_yaml(),
        td.target_url(&format!("dstdb/{table}?mode={mode}"))
    )
}

/// The same spec with account 2's write-only key.
fn write_only_spec(td: &TdLocalRun, job: &str, table: &str, mode: &str) -> String {
    format!(
        "job_id: '{job}'\n{}result_url: td://${{secret:target_wo_key}}@{}/dstdb/{table}?mode={mode}\n",
        td.source_yaml(),
        td.host()
    )
}

#[test]
fn append_twice_with_the_same_job_writes_the_rows_once() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    let spec = job_spec(&td, &job, "events_copy", "append");

    let first = td.export(&spec, &[]);
    first.expect_code(0);
    assert_eq!(td.rows(2, "dstdb", "events_copy"), Some(sorted(events())));
    assert_eq!(first.status["export"]["already_done"], false);
    assert_eq!(first.status["export"]["rows"], 4);
    assert!(first.stdout.contains("exported 4 rows"), "{}", first.stdout);

    td.clear_requests();
    let second = td.export(&spec, &[]);
    second.expect_code(0);
    assert_eq!(
        td.rows(2, "dstdb", "events_copy"),
        Some(sorted(events())),
        "a rerun appends nothing"
    );
    assert_eq!(second.status["export"]["already_done"], true);
    assert_eq!(
        second.status["export"]["session"],
        first.status["export"]["session"]
    );
    assert!(second.stdout.contains("already done"), "{}", second.stdout);
    for (method, call) in [
        ("PUT", "/bulk_import/upload_part/"),
        ("POST", "/bulk_import/commit/"),
        ("POST", "/bulk_import/perform/"),
        ("GET", "/v3/job/result/"),
    ] {
        assert!(
            td.requests_to(method, call).is_empty(),
            "the rerun called {method} {call}: {:#?}",
            td.requests()
        );
    }
}

#[test]
fn append_adds_to_the_rows_already_in_the_target() {
    let (td, job) = with_events_job();
    let old = json!({"id": 0, "name": "kept", "score": 9.75, "time": 1_600_000_000});
    td.insert(2, "dstdb", "events_copy", std::slice::from_ref(&old));
    td.export(&job_spec(&td, &job, "events_copy", "append"), &[])
        .expect_code(0);
    let mut expected = events();
    expected.push(old);
    assert_eq!(td.rows(2, "dstdb", "events_copy"), Some(sorted(expected)));
}

#[test]
fn replace_writes_exactly_the_new_rows_and_leaves_no_temp_table() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    let out = td.export(&job_spec(&td, &job, "events_copy", "replace"), &[]);
    out.expect_code(0);
    assert_eq!(td.rows(2, "dstdb", "events_copy"), Some(sorted(events())));
    assert_eq!(td.tables(2, "dstdb"), ["events_copy"], "the temp table is gone");
    assert_eq!(out.status["export"]["verification"]["rows_committed"], 4);
    let renames = td.requests_to("POST", "/v3/table/rename/dstdb/events_copy_tdre_");
    assert_eq!(
        renames.len(),
        1,
        "loaded into <table>_tdre_<8 hex>, then renamed over the target"
    );
    assert!(renames[0].path.ends_with("/events_copy"), "{renames:?}");
    assert!(td.requests_to("POST", "/v3/bulk_import/commit/").len() == 1);

    // A second replace leaves the same rows (not twice as many).
    td.export(&job_spec(&td, &job, "events_copy", "replace"), &[])
        .expect_code(0);
    assert_eq!(td.rows(2, "dstdb", "events_copy"), Some(sorted(events())));
    assert_eq!(td.tables(2, "dstdb"), ["events_copy"]);
}

#[test]
fn replace_over_a_table_with_other_rows_and_columns_keeps_only_the_new_ones() {
    let (td, job) = with_events_job();
    td.insert(
        2,
        "dstdb",
        "events_copy",
        &[
            json!({"legacy": "old row", "weight": 3, "time": 1_500_000_000}),
            json!({"id": 99, "legacy": "another", "time": 1_500_000_001}),
        ],
    );
    td.insert(2, "dstdb", "neighbour", &[json!({"x": 1, "time": 1})]);
    td.export(&job_spec(&td, &job, "events_copy", "replace"), &[])
        .expect_code(0);
    assert_eq!(td.rows(2, "dstdb", "events_copy"), Some(sorted(events())));
    assert_eq!(
        td.schema(2, "dstdb", "events_copy"),
        json!([["id", "long"], ["name", "string"], ["score", "double"]]),
        "the old columns went with the old rows"
    );
    assert_eq!(td.tables(2, "dstdb"), ["events_copy", "neighbour"]);
    assert_eq!(td.rows(2, "dstdb", "neighbour").unwrap().len(), 1);
}

#[test]
fn a_replace_that_fails_at_the_rename_keeps_the_old_rows_and_its_commit_for_the_rerun_to_rename() {
    let (td, job) = with_events_job();
    let old = vec![json!({"id": 0, "name": "kept", "score": 0.5, "time": 1_600_000_000})];
    td.insert(2, "dstdb", "events_copy", &old);
    let rule = td.fault(td_local::FaultRule::new(
        Some("POST"),
        "^/v3/table/rename/",
        td_local::FaultAction::Status {
            status: 403,
            retry_after: None,
        },
    ));
    let spec = job_spec(&td, &job, "events_copy", "replace");
    let out = td.export(&spec, &[]);
    out.expect_code(1);
    assert_eq!(out.status["error"]["class"], "ForbiddenError");
    assert_eq!(
        td.rows(2, "dstdb", "events_copy"),
        Some(old),
        "readers still see the old rows"
    );
    // The loaded temp table and its committed session are the record of the load: kept.
    let left = &out.status["export"]["left"];
    assert!(
        left["temp_table"]
            .as_str()
            .unwrap()
            .starts_with("events_copy_tdre_"),
        "{left:#}"
    );
    assert!(
        left["note"].as_str().unwrap().contains("a rerun renames it"),
        "{left:#}"
    );
    td.server.faults().remove(rule);
    td.clear_requests();
    let rerun = td.export(&spec, &[]);
    rerun.expect_code(0);
    assert_eq!(td.rows(2, "dstdb", "events_copy"), Some(sorted(events())));
    assert_eq!(
        td.tables(2, "dstdb"),
        ["events_copy"],
        "renamed, not loaded again"
    );
    assert!(
        td.requests_to("PUT", "/v3/bulk_import/upload_part/").is_empty(),
        "nothing uploaded again"
    );
}

#[test]
fn replace_with_a_write_only_key_exits_2_before_writing_anything() {
    let (td, job) = with_events_job();
    let old = vec![json!({"id": 0, "name": "kept", "score": 0.5, "time": 1_600_000_000})];
    td.insert(2, "dstdb", "events_copy", &old);
    td.clear_requests();

    let out = td.export(&write_only_spec(&td, &job, "events_copy", "replace"), &[]);
    out.expect_code(2);
    assert!(
        out.stderr
            .contains("replace needs the target account's master API key"),
        "{}",
        out.stderr
    );
    assert!(out.error_message().contains("use a master key, or mode: append"));
    assert_eq!(out.status["error"]["class"], "ReplaceNeedsMasterKey");
    assert_eq!(
        td.rows(2, "dstdb", "events_copy"),
        Some(old),
        "the target is untouched"
    );
    assert_eq!(td.tables(2, "dstdb"), ["events_copy"]);
    let writes: Vec<_> = td
        .requests()
        .into_iter()
        .filter(|r| r.account == Some(2) && r.method != "GET")
        .collect();
    assert!(writes.is_empty(), "write calls on the target: {writes:#?}");
    assert!(
        td.requests_to("GET", "/v3/job/result/").is_empty(),
        "refused before reading the result"
    );
}

#[test]
fn append_with_a_write_only_key_into_an_existing_table_adds_rows_and_columns() {
    let (td, job) = with_events_job();
    let old = json!({"legacy": "from before", "time": 1_600_000_000});
    td.insert(2, "dstdb", "events_copy", std::slice::from_ref(&old));

    let out = td.export(&write_only_spec(&td, &job, "events_copy", "append"), &[]);
    out.expect_code(0);
    let mut expected = events();
    expected.push(old);
    assert_eq!(td.rows(2, "dstdb", "events_copy"), Some(sorted(expected)));
    assert_eq!(
        td.schema(2, "dstdb", "events_copy"),
        json!([
            ["legacy", "string"],
            ["id", "long"],
            ["name", "string"],
            ["score", "double"]
        ]),
        "append-schema added the result's columns"
    );
    assert_eq!(
        td.requests_to("POST", "/v3/table/append-schema/dstdb/events_copy")
            .len(),
        1
    );
    assert!(td.requests_to("POST", "/v3/table/update-schema/").is_empty());
}

#[test]
fn append_with_a_write_only_key_into_a_missing_table_fails_clearly() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    let out = td.export(&write_only_spec(&td, &job, "missing_table", "append"), &[]);
    out.expect_code(2);
    assert!(
        out.stderr.contains(
            "target table dstdb.missing_table does not exist and a write-only API key cannot create it"
        ),
        "{}",
        out.stderr
    );
    assert_eq!(out.status["error"]["class"], "WriteOnlyCannotCreate");
    assert!(td.tables(2, "dstdb").is_empty(), "nothing was created");
}

#[test]
fn append_into_a_missing_database_names_it() {
    let (td, job) = with_events_job();
    let out = td.export(&job_spec(&td, &job, "events_copy", "append"), &[]);
    out.expect_code(1);
    assert!(
        out.stderr.contains("target database 'dstdb' does not exist"),
        "{}",
        out.stderr
    );
    assert!(td.rows(2, "dstdb", "events_copy").is_none());
}

#[test]
fn one_idempotency_key_shared_by_two_targets_exports_to_each() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    for table in ["copy_a", "copy_b"] {
        let spec = format!(
            "{}idempotency_key: daily-2024-01-31\n",
            job_spec(&td, &job, table, "append")
        );
        let out = td.export(&spec, &[]);
        out.expect_code(0);
        assert_eq!(
            out.status["export"]["already_done"], false,
            "{table} is a different export"
        );
    }
    for table in ["copy_a", "copy_b"] {
        assert_eq!(td.rows(2, "dstdb", table), Some(sorted(events())), "{table}");
    }
}

#[test]
fn a_part_the_perform_could_not_read_fails_the_load_before_commit() {
    use td_result_export::internals::SessionAction;
    use td_result_export::internals::TransferError;
    use td_result_export::internals::{drive, Load, SessionRef};

    let td = TdLocalRun::start();
    td.create_database(2, "dstdb");
    let client = td.client(2);
    let outcome = td.rt.block_on(async {
        client.create_table("dstdb", "loaded").await.unwrap();
        client
            .create_session("tdre_unreadable", "dstdb", "loaded")
            .await
            .unwrap();
        client
            .upload_part(
                "tdre_unreadable",
                "part_000000",
                bytes::Bytes::from_static(b"not gzip").into(),
            )
            .await
            .unwrap();
        client
            .session_action("tdre_unreadable", SessionAction::Freeze)
            .await
            .unwrap();
        let s = SessionRef {
            load: Load {
                client: &client,
                database: "dstdb",
                table: "loaded",
                poll: &td_result_export::internals::PollPolicy::default().scaled(0.001),
                resume_now: true,
                rows_expected: None,
                made: &Default::default(),
                phase: &Default::default(),
            },
            name: "tdre_unreadable",
        };
        drive(
            &s,
            |_| async { unreachable!("a frozen session is not uploaded again") },
            &json!([]),
        )
        .await
    });
    match outcome {
        Err(TransferError::Rejected { rejected, .. }) => assert_eq!(rejected, 1),
        other => panic!("expected the load to be rejected, got {other:?}"),
    }
    assert_eq!(td.rows(2, "dstdb", "loaded"), Some(vec![]), "nothing committed");
}

#[test]
fn a_failed_append_removes_the_session_and_the_empty_table_it_made() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    td.fault(td_local::FaultRule::new(
        Some("POST"),
        "^/v3/bulk_import/perform/",
        td_local::FaultAction::Status {
            status: 403,
            retry_after: None,
        },
    ));
    let out = td.export(&job_spec(&td, &job, "made_here", "append"), &[]);
    out.expect_code(1);
    let left = &out.status["export"]["left"];
    assert_eq!(left["session"], serde_json::Value::Null, "{left:#}");
    assert_eq!(left["resumable"], false);
    assert!(
        td.server.inspect().bulk_imports(2).unwrap().is_empty(),
        "the session it made is gone"
    );
    assert!(
        td.rows(2, "dstdb", "made_here").is_none(),
        "the empty table it made is gone"
    );
}

#[test]
fn an_append_that_fails_for_now_leaves_its_session_for_the_rerun() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    let rule = td.fault(td_local::FaultRule::new(
        Some("POST"),
        "^/v3/bulk_import/perform/",
        td_local::FaultAction::Status {
            status: 503,
            retry_after: None,
        },
    ));
    let out = td.export(&job_spec(&td, &job, "resumed", "append"), &[]);
    out.expect_code(3);
    let left = &out.status["export"]["left"];
    assert_eq!(left["resumable"], true, "{left:#}");
    assert!(
        left["note"]
            .as_str()
            .unwrap()
            .contains("left for a rerun to resume"),
        "{left:#}"
    );
    assert_eq!(td.server.inspect().bulk_imports(2).unwrap().len(), 1);
    td.server.faults().remove(rule);
    let rerun = td.export(&job_spec(&td, &job, "resumed", "append"), &[]);
    rerun.expect_code(0);
    assert_eq!(td.rows(2, "dstdb", "resumed"), Some(sorted(events())));
}
