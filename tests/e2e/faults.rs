//! Faults on every endpoint class the operator calls (td-local fault rules), through the real
//! binary with millisecond waits: retried failures end in exit 0 with exactly the expected rows;
//! exhausted retries end in exit 3 and a clean rerun writes the rows exactly once.

use td_local::{FaultAction, FaultRule};

use crate::support::{assert_valid_status, sorted, source_records, ExportFixture};

/// Rows of the source job: about 120 kB of gzip'd msgpack, six parts at the fixture's part size.
const ROWS: usize = 12_000;

/// One class of endpoint the operator calls, and the modes that call it.
struct Endpoint {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    append: bool,
    replace: bool,
}

const fn endpoint(name: &'static str, method: &'static str, path: &'static str) -> Endpoint {
    Endpoint {
        name,
        method,
        path,
        append: true,
        replace: true,
    }
}

const fn replace_only(name: &'static str, method: &'static str, path: &'static str) -> Endpoint {
    Endpoint {
        append: false,
        ..endpoint(name, method, path)
    }
}

const ENDPOINTS: &[Endpoint] = &[
    endpoint("job show", "GET", "^/v3/job/show/"),
    endpoint("job result", "GET", "^/v3/job/result/"),
    endpoint("database show", "GET", "^/v3/database/show/"),
    endpoint("table show", "GET", "^/v3/table/show/"),
    endpoint("table create", "POST", "^/v3/table/create/"),
    // `table delete` is no longer on a replace's way: only a failed or interrupted one cleans up
    // with it (the concurrency and interruption tests cover that).
    replace_only("table rename", "POST", "^/v3/table/rename/"),
    endpoint("table append-schema", "POST", "^/v3/table/append-schema/"),
    replace_only("table update-schema", "POST", "^/v3/table/update-schema/"),
    endpoint("bulk_import create", "POST", "^/v3/bulk_import/create/"),
    endpoint("bulk_import show", "GET", "^/v3/bulk_import/show/"),
    endpoint("bulk_import upload_part", "PUT", "^/v3/bulk_import/upload_part/"),
    endpoint("bulk_import list_parts", "GET", "^/v3/bulk_import/list_parts/"),
    endpoint("bulk_import freeze", "POST", "^/v3/bulk_import/freeze/"),
    endpoint("bulk_import perform", "POST", "^/v3/bulk_import/perform/"),
    endpoint("bulk_import commit", "POST", "^/v3/bulk_import/commit/"),
];

fn status(status: u16) -> FaultAction {
    FaultAction::Status {
        status,
        retry_after: None,
    }
}

/// The transient failures a call may meet, one per consecutive call: 500, 503, 429 with
/// `Retry-After`, a reset before the server acts, and a body cut after the server acted.
fn each_kind_of_failure() -> Vec<FaultAction> {
    vec![
        status(500),
        status(503),
        FaultAction::Status {
            status: 429,
            retry_after: Some(1),
        },
        FaultAction::Reset,
        FaultAction::Truncate { after_bytes: 20 },
    ]
}

/// Rows unlike any the source job has, to fill a target before a replace.
fn old_rows(fx: &ExportFixture, table: &str) -> Vec<serde_json::Value> {
    let old: Vec<serde_json::Value> = source_records(50, 99)
        .into_iter()
        .map(|mut r| {
            r["id"] = (r["id"].as_i64().unwrap() + 1_000_000).into();
            r
        })
        .collect();
    fx.td.insert(2, crate::support::TARGET_DB, table, &old);
    sorted(old)
}

/// Puts `actions` on consecutive calls (1, 2, …) of `ep`; returns the rule ids.
fn fault_consecutive_calls(fx: &ExportFixture, ep: &Endpoint, actions: Vec<FaultAction>) -> Vec<u64> {
    actions
        .into_iter()
        .enumerate()
        .map(|(i, action)| {
            let rule = FaultRule::new(Some(ep.method), ep.path, action).on_calls(&[i as u64 + 1]);
            fx.td.server.faults().add(rule).expect("fault rule accepted")
        })
        .collect()
}

/// Panics unless every rule in `ids` fired: a fault that never fired proves nothing.
fn assert_all_fired(fx: &ExportFixture, ids: &[u64], context: &str) {
    for rule in fx.td.server.faults().rules() {
        if ids.contains(&rule.id) {
            assert!(
                rule.fired > 0,
                "{context}: rule {} ({} {:?}) never fired: the operator did not make that call",
                rule.id,
                rule.rule.path,
                rule.rule.action
            );
        }
    }
}

fn survives_each_kind_of_failure_on_every_endpoint(mode: &str) {
    let fx = ExportFixture::new(ROWS, 1);
    for (i, ep) in ENDPOINTS.iter().enumerate() {
        let used = if mode == "append" { ep.append } else { ep.replace };
        if !used {
            continue;
        }
        let table = format!("faulted_{i:02}");
        let context = format!("{mode}, faults on {}", ep.name);
        let old = if mode == "replace" {
            old_rows(&fx, &table)
        } else {
            Vec::new()
        };
        let mut actions = each_kind_of_failure();
        if ep.name == "job result" {
            // A download cut deep inside the result, too.
            actions.push(FaultAction::Truncate { after_bytes: 150_000 });
        }
        let ids = fault_consecutive_calls(&fx, ep, actions);
        fx.run_spec(&fx.spec(mode, &table)).expect_exit(0, &context);
        assert_all_fired(&fx, &ids, &context);
        fx.td.server.faults().clear();
        fx.assert_rows(&table, &fx.expected, &context);
        assert!(!old.is_empty() || mode == "append");
        assert!(
            fx.temp_tables().is_empty(),
            "{context}: temp tables left: {:?}",
            fx.temp_tables()
        );
    }
}

#[test]
fn append_survives_500_503_429_reset_and_truncation_on_every_endpoint_class() {
    survives_each_kind_of_failure_on_every_endpoint("append");
}

#[test]
fn replace_survives_500_503_429_reset_and_truncation_on_every_endpoint_class() {
    survives_each_kind_of_failure_on_every_endpoint("replace");
}

/// Every call may fail, each kind with its own seeded chance (about one call in five fails).
#[test]
fn random_faults_on_every_call_leave_exactly_the_expected_rows() {
    let fx = ExportFixture::new(ROWS, 2);
    for seed in 1..=3u64 {
        for mode in ["append", "replace"] {
            let table = format!("random_{mode}_{seed}");
            let context = format!("{mode}, random faults, seed {seed}");
            if mode == "replace" {
                old_rows(&fx, &table);
            }
            let mut actions = each_kind_of_failure();
            actions.push(FaultAction::Truncate { after_bytes: 100_000 });
            for (k, action) in actions.into_iter().enumerate() {
                let rule =
                    FaultRule::new(None, "^/v3/", action).with_probability(0.04, seed * 100 + k as u64);
                fx.td.server.faults().add(rule).expect("fault rule accepted");
            }
            let outcome = fx.run_spec(&fx.spec(mode, &table));
            let fired: u64 = fx.td.server.faults().rules().iter().map(|r| r.fired).sum();
            fx.td.server.faults().clear();
            outcome.expect_exit(0, &context);
            assert!(fired > 0, "{context}: no fault fired");
            fx.assert_rows(&table, &fx.expected, &context);
            assert!(fx.temp_tables().is_empty(), "{context}: temp tables left");
        }
    }
}

/// A call that fails every time: the run gives up with exit 3 (transient, retryable) and leaves
/// the target as it was; a rerun without faults writes the rows exactly once. (A download cut
/// after N > 0 bytes every time still completes, N bytes per resumed request: only a download
/// that makes no progress at all exhausts its retries.)
#[test]
fn exhausted_retries_exit_3_and_a_clean_rerun_writes_exactly_once() {
    let fx = ExportFixture::new(ROWS, 3);
    let cases: &[(&str, &str, FaultAction)] = &[
        ("append", "^/v3/bulk_import/upload_part/", status(503)),
        ("append", "^/v3/bulk_import/perform/", status(500)),
        ("append", "^/v3/bulk_import/commit/", FaultAction::Reset),
        (
            "append",
            "^/v3/job/result/",
            FaultAction::Truncate { after_bytes: 0 },
        ),
        ("replace", "^/v3/table/rename/", status(503)),
        ("replace", "^/v3/bulk_import/commit/", status(502)),
        ("replace", "^/v3/table/update-schema/", FaultAction::Reset),
    ];
    for (i, (mode, path, action)) in cases.iter().enumerate() {
        let table = format!("exhausted_{i:02}");
        let context = format!("{mode}, {action} on every {path} call");
        let old = match *mode {
            "replace" => old_rows(&fx, &table),
            _ => Vec::new(),
        };
        let spec = fx.spec(mode, &table);
        fx.td
            .server
            .faults()
            .add(FaultRule::new(None, path, action.clone()))
            .expect("fault rule accepted");
        fx.run_spec(&spec).expect_exit(3, &context);
        fx.td.server.faults().clear();
        let status = fx.status();
        assert_valid_status(&status);
        assert_eq!(status["state"], "failed", "{context}");
        assert_eq!(status["exit_code"], 3, "{context}");
        assert_eq!(status["error"]["retryable"], true, "{context}");
        fx.assert_rows(&table, &old, &format!("{context}: after the failed run"));

        fx.run_spec(&spec).expect_exit(0, &format!("{context}: rerun"));
        fx.assert_rows(&table, &fx.expected, &format!("{context}: after the rerun"));
        assert!(fx.temp_tables().is_empty(), "{context}: temp tables left");
        if *mode == "append" {
            let again = fx.run_spec(&spec);
            again.expect_exit(0, &format!("{context}: third run"));
            assert_eq!(fx.status()["export"]["already_done"], true, "{context}");
            fx.assert_rows(&table, &fx.expected, &format!("{context}: after the third run"));
        }
    }
}

/// The server acts on `rename`, then the answer is lost (cut body) or the connection drops
/// before it acts: either way the target ends with exactly the new rows, once.
#[test]
fn a_lost_answer_to_rename_neither_loses_nor_doubles_rows() {
    let fx = ExportFixture::new(ROWS, 4);
    let actions = [FaultAction::Truncate { after_bytes: 5 }, FaultAction::Reset];
    for (i, action) in actions.into_iter().enumerate() {
        let table = format!("renamed_{i}");
        let context = format!("replace, {action} on rename");
        old_rows(&fx, &table);
        let rule = FaultRule::new(Some("POST"), "^/v3/table/rename/", action).on_calls(&[1]);
        fx.td.server.faults().add(rule).expect("fault rule accepted");
        let spec = fx.spec("replace", &table);
        let first = fx.run_spec(&spec);
        fx.td.server.faults().clear();
        first.expect_exit(0, &context);
        fx.assert_rows(&table, &fx.expected, &context);
        assert!(fx.temp_tables().is_empty(), "{context}: temp tables left");
    }
}

/// The server engine: the answer to `result_export` is lost, after TD started the export (cut
/// body) or before (reset). The run must find out which, and the rows land exactly once.
#[test]
fn a_lost_answer_to_result_export_does_not_export_twice() {
    let fx = ExportFixture::new(2_000, 5);
    let expected = sorted(source_records(2_000, 5));
    assert_eq!(expected, fx.expected);
    for (i, action) in [FaultAction::Truncate { after_bytes: 5 }, FaultAction::Reset]
        .into_iter()
        .enumerate()
    {
        let table = format!("server_{i}");
        let context = format!("server engine append, {action} on result_export");
        let spec = fx.spec_with("append", &table, "transfer: server\n");
        let rule = FaultRule::new(Some("POST"), "^/v3/job/result_export/", action).on_calls(&[1]);
        fx.td.server.faults().add(rule).expect("fault rule accepted");
        let first = fx.run_spec(&spec);
        fx.td.server.faults().clear();
        first.expect_exit(0, &context);
        // Let any second export job that was started by mistake finish writing.
        std::thread::sleep(std::time::Duration::from_millis(500));
        fx.assert_rows(&table, &expected, &context);
    }
}
