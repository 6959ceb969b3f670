//! The `py>` entry point (`td_result_export.digdag.export`) driven the way Digdag's py> runner
//! drives it — through the stand-in runner `tests/workflow/digdag_runner.py` — against td-local:
//! both engines, an invalid spec, a transient failure.
//!
//! By default the package comes from `python/` and the executable from this build. With
//! `TDRE_PY_VENV=DIR` (what `.ci/run` sets after installing the wheel into DIR) the venv's Python
//! and the wheel's own executable run instead: the installed package is what is tested.

use std::path::PathBuf;

use serde_json::{json, Value};
use td_local::{FaultAction, FaultRule};

use crate::export::{events, with_events_job};
use crate::support::{operator_bin, repo_root, sorted, TdLocalRun, FAST};

/// What one py> task did.
struct PyTask {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    /// The runner's output file (`store_params`, …); `Null` when the task raised.
    out: Value,
}

/// Runs `py>: td_result_export.digdag.export` with `params`, as Digdag would: the source key
/// in `TD_API_KEY` (TD Workflow's `_env: {TD_API_KEY: ${secret:td.apikey}}`).
fn py_task(td: &TdLocalRun, params: &Value) -> PyTask {
    let sandbox = td.sandbox.path();
    std::fs::write(
        sandbox.join("params.json"),
        serde_json::to_vec(&json!({ "params": params })).unwrap(),
    )
    .unwrap();
    let _ = std::fs::remove_file(sandbox.join("out.json"));
    let venv = std::env::var_os("TDRE_PY_VENV").map(PathBuf::from);
    let python = venv
        .as_ref()
        .map_or(PathBuf::from("python3"), |v| v.join("bin/python"));
    let mut cmd = std::process::Command::new(python);
    cmd.arg(repo_root().join("tests/workflow/digdag_runner.py"))
        .args(["td_result_export.digdag.export", "params.json", "out.json"])
        .current_dir(sandbox)
        .env_clear()
        .env("HOME", sandbox)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TD_API_KEY", td.master(1))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env(FAST.0, FAST.1);
    if venv.is_none() {
        cmd.env("PYTHONPATH", repo_root().join("operator/python"))
            .env("TD_RESULT_EXPORT_BIN", operator_bin());
    }
    let output = cmd.output().expect("python runs");
    let task = PyTask {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        out: std::fs::read(sandbox.join("out.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null),
    };
    for key in td.keys() {
        assert!(
            !task.stdout.contains(&key) && !task.stderr.contains(&key),
            "a key was printed:\n{}\n{}",
            task.stdout,
            task.stderr
        );
    }
    task
}

/// The params of a task exporting `job` into account 2's `dstdb.<table>`: the task spec keys as
/// Digdag has interpolated them (the target key in clear), plus Digdag's own params.
fn params(td: &TdLocalRun, job: &str, table: &str, extra: Value) -> Value {
    let mut params = json!({
        "job_id": job,
        "td": {"endpoint": format!("http://{}", td.host())},
        "result_url": format!("td://{}@{}/dstdb/{table}?mode=append", td.master(2), td.host()),
        "session_time": "2026-12-01T00:00:00+00:00",
        "session_id": 42,
        "task_name": "+wf+export",
        "timezone": "UTC",
    });
    for (k, v) in extra.as_object().unwrap() {
        params[k] = v.clone();
    }
    params
}

#[test]
fn the_py_entry_exports_with_the_stream_engine_and_stores_digdags_params() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    let task = py_task(&td, &params(&td, &job, "py_stream", json!({})));
    assert_eq!(task.code, Some(0), "{}\n{}", task.stdout, task.stderr);
    assert_eq!(td.rows(2, "dstdb", "py_stream"), Some(sorted(events())));
    let stored = &task.out["store_params"];
    let writer = stored["td"]["last_job_id"]
        .as_str()
        .expect("the writer job is stored");
    assert_ne!(writer, job, "td.last_job_id names the job that wrote the rows");
    assert_eq!(stored["td"]["last_job"]["num_records"], 4);
    assert_eq!(stored["td_result_export"]["source_job_id"], job.as_str());
    assert!(task.stdout.contains("exported 4 rows"), "{}", task.stdout);
    assert!(
        !task.stderr.contains("API key is written in the spec"),
        "{}",
        task.stderr
    );
}

#[test]
fn the_py_entry_exports_with_the_server_engine() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    let task = py_task(
        &td,
        &params(&td, &job, "py_server", json!({"transfer": "server"})),
    );
    assert_eq!(task.code, Some(0), "{}\n{}", task.stdout, task.stderr);
    assert_eq!(td.rows(2, "dstdb", "py_server").map(|r| r.len()), Some(4));
    let writer = task.out["store_params"]["td"]["last_job_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        td.job(1, &writer).status.as_str(),
        "success",
        "the result-export job of account 1"
    );
}

#[test]
fn the_py_entry_raises_naming_the_field_of_an_invalid_spec() {
    let (td, job) = with_events_job();
    let bad = params(
        &td,
        &job,
        "py_bad",
        json!({"result_settings": {"mode": "upsert"}}),
    );
    let task = py_task(&td, &bad);
    assert_ne!(task.code, Some(0));
    assert!(task.out.is_null(), "nothing is stored");
    let raised = task.stderr.lines().last().unwrap_or_default();
    assert!(
        raised.starts_with("td_result_export._runner.ExportError: InvalidSpec:")
            && raised.contains("result_settings.mode: `upsert` is not one of append, replace"),
        "{}",
        task.stderr
    );
}

#[test]
fn the_py_entry_raises_a_retryable_error_on_a_transient_failure() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    td.fault(FaultRule::new(
        Some("GET"),
        "^/v3/job/show/",
        FaultAction::Status {
            status: 503,
            retry_after: None,
        },
    ));
    let task = py_task(&td, &params(&td, &job, "py_transient", json!({})));
    assert_ne!(task.code, Some(0));
    let raised = task.stderr.lines().last().unwrap_or_default();
    assert!(
        raised.starts_with("td_result_export._runner.TransientExportError: ApiError:")
            && raised.ends_with("(transient: running the task again is safe)"),
        "{}",
        task.stderr
    );
    assert_eq!(td.rows(2, "dstdb", "py_transient"), None);
}

#[test]
fn the_py_entry_takes_the_params_digdag_passes_after_a_td_task() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    // Digdag runs py> in the project directory; `query_file` is relative to it.
    td.sandbox
        .write("queries/ids.sql", "SELECT id, name FROM events WHERE id >= 3");
    let task = py_task(
        &td,
        &json!({
            "query_file": "queries/ids.sql",
            // What `_export: td: {database: srcdb}` and a `td>` task before leave under `td`.
            "td": {
                "endpoint": format!("http://{}", td.host()),
                "database": "srcdb",
                "last_job_id": job,
                "last_job": {"id": job, "num_records": 4},
                "last_results": {},
            },
            "result_url": format!("td://{}@{}/dstdb/py_after_td?mode=append", td.master(2), td.host()),
            "session_time": "2026-12-01T00:00:00+00:00",
            "_retry": 1,
            "_env": {"TD_API_KEY": "(as Digdag passes it)"},
            "docker": {"image": "digdag/digdag-python:3.9"},
        }),
    );
    assert_eq!(task.code, Some(0), "{}\n{}", task.stdout, task.stderr);
    assert_eq!(td.rows(2, "dstdb", "py_after_td").map(|r| r.len()), Some(2));
}

#[test]
fn a_query_file_reads_digdags_variables_from_the_task_params() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    // As with td>: `${…}` in the query file are the session's variables and what tasks stored.
    td.sandbox.write(
        "queries/since.sql",
        "SELECT id, name FROM events WHERE id >= ${min_id} AND '${session_date}' = '2026-12-01' \
         AND '${td.last_job_id}' = '${expected_job}'",
    );
    let task = py_task(
        &td,
        &json!({
            "query_file": "queries/since.sql",
            "td": {"endpoint": format!("http://{}", td.host()), "database": "srcdb", "last_job_id": job},
            "result_url": format!("td://{}@{}/dstdb/py_vars?mode=append", td.master(2), td.host()),
            "session_time": "2026-12-01T00:00:00+00:00",
            "session_date": "2026-12-01",
            "min_id": 3,
            "expected_job": job,
        }),
    );
    assert_eq!(task.code, Some(0), "{}\n{}", task.stdout, task.stderr);
    assert_eq!(td.rows(2, "dstdb", "py_vars").map(|r| r.len()), Some(2));
}
