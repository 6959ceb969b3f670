//! Cancellation like Digdag's `td>`: a run interrupted (SIGTERM, as runners cancel a task) while
//! the query it issued still runs kills that TD job, says so in its status document and exits 3;
//! a rerun with the same `idempotency_key` issues the query anew and writes exactly once.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{read_status, sorted, TdLocalRun};

/// A query that runs as long as `gate` is big: a three-way cross join of it is counted per row.
const QUERY: &str = "SELECT id, name, (SELECT COUNT(1) FROM gate a, gate b, gate c) AS n FROM events";

fn fill_gate(td: &TdLocalRun, rows: usize) {
    let client = td.client(1);
    td.rt
        .block_on(client.delete_table("srcdb", "gate"))
        .expect("gate dropped");
    let gate: Vec<_> = (0..rows)
        .map(|i| json!({"g": i as i64, "time": 1_700_000_000}))
        .collect();
    td.insert(1, "srcdb", "gate", &gate);
}

#[test]
fn an_interrupted_run_kills_the_query_it_issued_and_a_rerun_writes_once() {
    let td = TdLocalRun::start();
    let events: Vec<_> = (1..=3)
        .map(|i| json!({"id": i, "name": format!("e{i}"), "time": 1_700_000_000 + i}))
        .collect();
    td.insert(1, "srcdb", "events", &events);
    fill_gate(&td, 3000);
    td.create_database(2, "dstdb");
    td.sandbox.write(
        "spec.yml",
        &format!(
            "query: '{QUERY}'\ndatabase: srcdb\nidempotency_key: nightly-1\n{}result_url: {}\n",
            td.source_yaml(),
            td.target_url("dstdb/counted?mode=append")
        ),
    );
    let mut child = td
        .command(&["run", "spec.yml", "--status", "status.json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the operator starts");
    let status_path = td.sandbox.path().join("status.json");
    let deadline = Instant::now() + Duration::from_secs(30);
    let job = loop {
        if let Some(id) = read_status(&status_path)["export"]["source_job_id"].as_str() {
            break id.to_string();
        }
        assert!(Instant::now() < deadline, "the query was never issued");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(td.job(1, &job).status.as_str(), "running");
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let exit = child.wait().expect("the operator ends");
    assert_eq!(exit.code(), Some(3), "an interrupted run exits 3");

    let doc = read_status(&status_path);
    assert_eq!(doc["error"]["class"], "Interrupted", "{doc:#}");
    assert_eq!(doc["export"]["killed_job_id"], job.as_str(), "{doc:#}");
    let message = doc["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("the query job {job} this export issued was killed")),
        "{message}"
    );
    assert_eq!(td.job(1, &job).status.as_str(), "killed");
    assert_eq!(td.rows(2, "dstdb", "counted"), None, "nothing was written");

    // The rerun: the killed job of the domain key is not reused; the query runs again.
    fill_gate(&td, 1);
    let rerun = td.run(&["run", "spec.yml", "--status", "status.json"]);
    rerun.expect_code(0);
    let source = rerun.status["export"]["source_job_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(source, job);
    let expected: Vec<_> = events
        .iter()
        .map(|e| json!({"id": e["id"], "name": e["name"], "n": 1, "time": e["time"]}))
        .collect();
    let found = td.rows(2, "dstdb", "counted").expect("the target exists");
    assert_eq!(found.len(), 3, "written exactly once: {found:?}");
    let strip_time: Vec<_> = found
        .iter()
        .map(|r| json!({"id": r["id"], "name": r["name"], "n": r["n"]}))
        .collect();
    let want: Vec<_> = expected
        .iter()
        .map(|r| json!({"id": r["id"], "name": r["name"], "n": r["n"]}))
        .collect();
    assert_eq!(sorted(strip_time), sorted(want));
}
