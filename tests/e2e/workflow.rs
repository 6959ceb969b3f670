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

/// The command Digdag's py> runner would run for a task with `params`.
fn py_command(td: &TdLocalRun, params: &Value) -> std::process::Command {
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
    cmd
}

/// Runs `py>: td_result_export.digdag.export` with `params`, as Digdag would: the source key
/// in `TD_API_KEY` (TD Workflow's `_env: {TD_API_KEY: ${secret:td.apikey}}`).
fn py_task(td: &TdLocalRun, params: &Value) -> PyTask {
    let output = py_command(td, params).output().expect("python runs");
    let sandbox = td.sandbox.path();
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
        raised.starts_with(
            "td_result_export._runner.ExportError: InvalidSpec: py> task param: result_settings.mode: \
             `upsert` is not one of append, replace"
        ),
        "{}",
        task.stderr
    );
    assert!(
        !task.stderr.contains("spec.json"),
        "a temporary file is named:\n{}",
        task.stderr
    );
}

/// Digdag leaves `${secret:…}` inside an ordinary param as text: the binary then looks for it in
/// the environment. What it says names the task param, gives the `_env` line to add (the hint's
/// placeholder unmasked), and names no temporary file and no command-line flag.
#[test]
fn a_py_task_missing_a_secret_is_told_the_env_line_to_add() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    let task = py_task(
        &td,
        &params(
            &td,
            &job,
            "py_secret",
            json!({"result_url": format!("td://${{secret:target.apikey}}@{}/dstdb/py_secret", td.host())}),
        ),
    );
    assert_ne!(task.code, Some(0));
    let raised = task.stderr.lines().last().unwrap_or_default();
    for needle in [
        "InvalidSpec: py> task param: result_url: `${secret:target.apikey}` is not set for this task",
        "`_env: {TARGET_APIKEY: ${secret:target.apikey}}`",
    ] {
        assert!(
            raised.contains(needle),
            "{needle:?} missing from:\n{}",
            task.stderr
        );
    }
    for absent in ["spec.json", "--secrets", "status document:"] {
        assert!(
            !task.stderr.contains(absent) && !task.stdout.contains(absent),
            "{absent:?} in:\n{}\n{}",
            task.stdout,
            task.stderr
        );
    }

    // With the line added, as Digdag sets `_env` (the secret's value in it), the export runs.
    let task = py_task(
        &td,
        &params(
            &td,
            &job,
            "py_secret",
            json!({
                "result_url": format!("td://${{secret:target.apikey}}@{}/dstdb/py_secret", td.host()),
                "_env": {"TARGET_APIKEY": td.master(2)},
            }),
        ),
    );
    assert_eq!(task.code, Some(0), "{}\n{}", task.stdout, task.stderr);
    assert_eq!(
        td.rows(2, "dstdb", "py_secret").map(|r| r.len()),
        Some(events().len())
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
    // Digdag's `_retry` is Digdag's: the entry point keeps it out of the spec, so the binary
    // makes one attempt (its per-request retries only) and Digdag retries the task.
    let task = py_task(&td, &params(&td, &job, "py_transient", json!({"_retry": 3})));
    assert_ne!(task.code, Some(0));
    let polls = td.requests_to("GET", "/v3/job/show/").len();
    let per_request = td_result_export::internals::RetryPolicy::default().max_retries as usize + 1;
    // One attempt polls the job with its per-request retries (and reads it again cleaning up);
    // four attempts (`_retry: 3` taken by the binary) would make four times as many calls.
    assert!(
        polls < 2 * per_request,
        "{polls} job/show calls: the whole export was retried inside the task"
    );
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
            "_env": {"TD_API_KEY": td.master(1)},
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

/// Processes whose command line mentions `needle` (the runner's temporary directory).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(needle) {
                found.push(format!("{}: {text}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}

/// Starts a py> task with its temporary files under `tmp`, its stderr piped; returns the runner
/// once the server has held a call by `rule` (the task is then inside that call).
fn spawn_py_held_at(
    td: &TdLocalRun,
    params: &Value,
    tmp: &std::path::Path,
    rule: FaultRule,
) -> std::process::Child {
    std::fs::create_dir_all(tmp).unwrap();
    let id = td.fault(rule);
    let mut cmd = py_command(td, params);
    cmd.env("TMPDIR", tmp)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("python runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !td
        .server
        .faults()
        .rules()
        .iter()
        .any(|r| r.id == id && r.fired > 0)
    {
        assert!(std::time::Instant::now() < deadline, "the held call never came");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child
}

/// A py> task whose query is held by the server (its job/show delayed), started with its
/// temporary files under `tmp`; returns the runner, once the binary waits on the query.
fn py_task_waiting_on_its_query(td: &TdLocalRun, tmp: &std::path::Path) -> std::process::Child {
    td.create_database(2, "dstdb");
    let params = json!({
        "query": "SELECT id, name FROM events",
        "database": "srcdb",
        "td": {"endpoint": format!("http://{}", td.host())},
        "result_url": format!("td://{}@{}/dstdb/py_cancelled?mode=append", td.master(2), td.host()),
        // A Digdag variable: it reaches the binary in a private file, not on its command line.
        "session_uuid": "variable-never-on-a-command-line",
    });
    let held = FaultRule::new(
        Some("GET"),
        "^/v3/job/show/",
        FaultAction::Delay { millis: 3_000 },
    );
    spawn_py_held_at(td, &params, tmp, held.on_calls(&[1]))
}

/// Digdag cancels a task with SIGTERM to the runner: the entry point passes it on, the binary
/// kills the query it issued and cleans up, the runner then ends as the signal meant, and no
/// process or temporary directory is left.
#[test]
fn sigterm_to_the_py_runner_kills_the_query_and_leaves_no_process_or_temp_dir() {
    let (td, _job) = with_events_job();
    let tmp = td.sandbox.path().join("tmp");
    let mut runner = py_task_waiting_on_its_query(&td, &tmp);
    assert!(
        processes_mentioning("variable-never-on-a-command-line").is_empty(),
        "a task variable is on a command line: {:?}",
        processes_mentioning("variable-never-on-a-command-line")
    );
    assert!(
        !processes_mentioning(&tmp.to_string_lossy()).is_empty(),
        "the export runs"
    );
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &runner.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = runner.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut runner.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_ne!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        td.requests_to("POST", "/v3/job/kill/").len(),
        1,
        "the query was killed:\n{stderr}"
    );
    let tmp_text = tmp.to_string_lossy().into_owned();
    assert!(
        processes_mentioning(&tmp_text).is_empty(),
        "{:?}",
        processes_mentioning(&tmp_text)
    );
    assert_nothing_left_in(&tmp);
    assert_eq!(td.rows(2, "dstdb", "py_cancelled"), None);
}

fn assert_nothing_left_in(tmp: &std::path::Path) {
    let left: Vec<_> = std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

/// A runner killed outright (SIGKILL: no handler runs) takes the binary with it: Linux sends
/// the binary SIGTERM (`PR_SET_PDEATHSIG`), which stops it cleanly: no orphan runs on.
#[test]
fn a_py_runner_killed_outright_leaves_no_orphan_export() {
    let (td, _job) = with_events_job();
    let tmp = td.sandbox.path().join("tmp");
    let mut runner = py_task_waiting_on_its_query(&td, &tmp);
    runner.kill().unwrap();
    runner.wait().unwrap();
    let tmp_text = tmp.to_string_lossy().into_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !processes_mentioning(&tmp_text).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the export outlived its runner: {:?}",
            processes_mentioning(&tmp_text)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        td.requests_to("POST", "/v3/job/kill/").len(),
        1,
        "the orphaned query was killed"
    );
    // Nobody is left to read the status document: the export removes the entry's directory as
    // it ends (waited for: under load the process can leave the listing above a moment before
    // its last step is seen).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_dir(&tmp).unwrap().next().is_some() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_nothing_left_in(&tmp);
}

/// A py> task killed outright together with its export (a worker's whole process group, the
/// OOM killer) leaves its session half filled and no status document (py> keeps it in a
/// temporary directory). The rerun on this machine finds the crashed run's claim unheld and
/// resumes the session at once, without waiting for it to stand still, and writes every row once.
#[test]
fn a_py_rerun_after_the_runner_and_export_are_killed_resumes_without_the_stale_wait() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    let tmp = td.sandbox.path().join("tmp");
    let task = params(&td, &job, "py_crashed", json!({}));
    let held = FaultRule::new(
        Some("PUT"),
        "^/v3/bulk_import/upload_part/",
        FaultAction::Delay { millis: 5_000 },
    );
    let mut runner = spawn_py_held_at(&td, &task, &tmp, held.on_calls(&[1]));
    // The export first (no handler runs: its session stays `uploading`), then the runner.
    let tmp_text = tmp.to_string_lossy().into_owned();
    for line in processes_mentioning(&tmp_text) {
        let pid = line.split(':').next().unwrap();
        std::process::Command::new("kill")
            .args(["-KILL", pid])
            .status()
            .unwrap();
    }
    runner.kill().unwrap();
    runner.wait().unwrap();
    td.server.faults().clear();
    assert_eq!(
        td.rows(2, "dstdb", "py_crashed").unwrap_or_default(),
        Vec::<Value>::new(),
        "nothing committed yet"
    );

    let mut rerun = py_command(&td, &task);
    rerun.env("TMPDIR", &tmp);
    let output = rerun.output().expect("python runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        !stderr.contains("another run of this export holds"),
        "the rerun waited for a run that had crashed:\n{stderr}"
    );
    assert!(stderr.contains("resuming its session at once"), "{stderr}");
    assert_eq!(
        td.rows(2, "dstdb", "py_crashed"),
        Some(sorted(events())),
        "every row once"
    );
    // The rerun let go of its claim (the killed runner's own directory is all that is left).
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&tmp).unwrap());
    assert!(!tmp.join(format!("td-result-export-{uid}")).exists());
}
