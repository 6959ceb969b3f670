//! What users read, pinned as snapshots (`snapshots/`): `--help`, the `validate` line, the plan
//! a dry run prints, run summaries, and a failed run's message. Filters replace only what
//! changes from run to run (sandbox paths, loopback ports, durations, session hashes).

use crate::export::with_events_job;
use crate::support::{cli_snapshots, repo_root, Sandbox, TdLocalRun};

#[test]
fn help_shows_the_commands_an_example_spec_and_the_exit_codes() {
    let sandbox = Sandbox::new();
    for args in [
        &["--help"][..],
        &["run", "--help"],
        &["validate", "--help"],
        &["schema", "--help"],
    ] {
        let out = sandbox.cmd().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let name = format!("help__{}", args[..args.len() - 1].join("_"));
        let name = if args.len() == 1 { "help".to_string() } else { name };
        cli_snapshots(&[]).bind(|| insta::assert_snapshot!(name, String::from_utf8_lossy(&out.stdout)));
    }
}

#[test]
fn validate_prints_one_line_naming_source_and_target() {
    let sandbox = Sandbox::new();
    let quickstart = repo_root().join("examples/quickstart.yml");
    let out = sandbox.cmd().arg("validate").arg(&quickstart).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let root = repo_root().display().to_string();
    cli_snapshots(&[(&root, "[REPO]")])
        .bind(|| insta::assert_snapshot!("validate_quickstart", String::from_utf8_lossy(&out.stdout)));
}

#[test]
fn a_dry_run_prints_the_resolved_plan_with_keys_hidden() {
    let sandbox = Sandbox::new();
    let quickstart = repo_root().join("examples/quickstart.yml");
    let out = sandbox
        .cmd()
        .args(["run", "--dry-run"])
        .arg(&quickstart)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    cli_snapshots(&[])
        .bind(|| insta::assert_snapshot!("dry_run_quickstart", String::from_utf8_lossy(&out.stdout)));
}

#[test]
fn show_prints_the_targets_count_and_first_rows_after_the_export() {
    // Exact counts, so the pinned output does not depend on how fast the run was (the line for a
    // lagging count is pinned in preview.rs's tests).
    let td = TdLocalRun::start_with_count_lag(td_local::CountLag::none());
    td.insert(1, "srcdb", "events", &crate::export::events());
    let job = td.successful_job(1, "srcdb", "SELECT id, name, score, time FROM events");
    td.create_database(2, "dstdb");
    let out = td.export(&td.job_spec(&job, "dstdb/events_copy?mode=append"), &["--show"]);
    out.expect_code(0);
    let settings = cli_snapshots(&[(&format!("job {job} "), "job [JOB] ")]);
    settings.bind(|| insta::assert_snapshot!("run_show", out.stdout));
}

/// `--show` reads the target through the run's own connection: a target known by name (a saved
/// result) is looked up once, not again for the preview.
#[test]
fn show_reads_the_target_through_the_runs_connection() {
    let td = TdLocalRun::start_with_count_lag(td_local::CountLag::none());
    td.insert(1, "srcdb", "events", &crate::export::events());
    let job = td.successful_job(1, "srcdb", "SELECT id, name, score, time FROM events");
    td.create_database(2, "dstdb");
    td.save_result(
        1,
        "partner",
        &format!("td://{}@{}/dstdb", td.master(2), td.host()),
    );
    td.clear_requests();
    let spec = format!(
        "job_id: '{job}'\n{}result_url: partner:events_copy\n",
        td.source_yaml()
    );
    let out = td.export(&spec, &["--show"]);
    out.expect_code(0);
    assert!(out.stdout.contains("dstdb.events_copy"), "{}", out.stdout);
    assert_eq!(
        td.requests_to("GET", "/v3/result/list").len(),
        1,
        "the saved result is looked up once"
    );
}

#[test]
fn run_summaries_say_what_was_written_where_and_when_it_was_already_done() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    let spec = format!(
        "job_id: '{job}'\n{}result_url: {}\n",
        td.source_yaml(),
        td.target_url("dstdb/events_copy?mode=append")
    );
    let first = td.export(&spec, &[]);
    first.expect_code(0);
    let again = td.export(&spec, &[]);
    again.expect_code(0);
    let sandbox = td.sandbox.path().display().to_string();
    let settings = cli_snapshots(&[(&sandbox, "[SANDBOX]"), (&format!("job {job} "), "job [JOB] ")]);
    settings.bind(|| {
        insta::assert_snapshot!("run_append", first.stdout);
        insta::assert_snapshot!("run_append_again", again.stdout);
    });
}

#[test]
fn a_failed_run_says_what_to_fix_on_stderr() {
    let (td, job) = with_events_job();
    let spec = format!(
        "job_id: '{job}'\n{}result_url: td://${{secret:target_wo_key}}@{}/dstdb/events_copy?mode=replace\n",
        td.source_yaml(),
        td.host()
    );
    let out = td.export(&spec, &[]);
    out.expect_code(2);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    cli_snapshots(&[]).bind(|| insta::assert_snapshot!("run_replace_with_write_only_key", out.stderr));
}

/// What a run prints when an account's boundary refuses it: which side (source or target), the
/// host, where the key came from, and the fix — pinned per case.
#[test]
fn errors_at_the_boundary_name_the_side_the_host_where_the_key_came_from_and_the_fix() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let wrong = crate::support::fake_key(1, 9);
    let cases = [
        (
            "boundary_source_key_refused",
            format!(
                "job_id: '{job}'\ntd: {{endpoint: 'http://{}'}}\nresult_url: '{}'\n",
                td.host(),
                td.target_url("dstdb/t_401?mode=append")
            ),
            vec![("TD_API_KEY", wrong.clone())],
        ),
        (
            "boundary_target_key_refused",
            format!(
                "job_id: '{job}'\n{}result_url: 'td://${{secret:wrong_key}}@{}/dstdb/t_401?mode=append'\n",
                td.source_yaml(),
                td.host()
            ),
            vec![("WRONG_KEY", wrong.clone())],
        ),
        (
            "boundary_nothing_listens",
            format!(
                "job_id: '{job}'\ntd: {{endpoint: 'http://127.0.0.1:{closed_port}', apikey: '${{secret:source_key}}'}}\nresult_url: '{}'\n",
                td.target_url("dstdb/t_refused?mode=append")
            ),
            vec![],
        ),
        (
            "boundary_host_does_not_resolve",
            format!(
                "job_id: '{job}'\ntd: {{endpoint: 'http://no-such-host.invalid', apikey: '${{secret:source_key}}'}}\nresult_url: '{}'\n",
                td.target_url("dstdb/t_dns?mode=append")
            ),
            vec![],
        ),
    ];
    for (name, spec, env) in cases {
        td.sandbox.write("boundary.yml", &spec);
        let mut cmd = td.command(&["run", "boundary.yml"]);
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(matches!(out.status.code(), Some(1..=3)), "{name}: {stderr}");
        assert!(!stderr.contains(&wrong), "{name}: a key was printed");
        cli_snapshots(&[(&format!("127.0.0.1:{closed_port}"), "127.0.0.1:[CLOSED]")])
            .bind(|| insta::assert_snapshot!(name, format!("exit {:?}\n{stderr}", out.status.code())));
    }
}

/// While the source job runs (on TD, often minutes) the run says so at once: the job's id, its
/// engine, its state and the time so far (a line every few seconds when stderr is not a
/// terminal); for TD's own hosts, the job's page in the console too.
#[test]
fn a_run_shows_the_source_job_while_it_runs() {
    use std::io::BufRead;
    let (td, _job) = with_events_job();
    td.create_database(2, "dstdb");
    let queued = td.server.inspect().queued_job(1, "srcdb").unwrap().to_string();
    td.sandbox.write(
        "waiting.yml",
        &td.job_spec(&queued, "dstdb/t_waiting?mode=append"),
    );
    let mut child = td
        .command(&["run", "waiting.yml"])
        .env("TDRE_TIME_SCALE", "0.01")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Should the line never come, the run is ended after a while (the job never finishes).
    let pid = child.id().to_string();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(30));
        let _ = std::process::Command::new("kill").args(["-KILL", &pid]).status();
    });
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let line = stderr
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("source job"))
        .expect("a line about the source job");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        line,
        format!("progress: source job {queued} (presto) queued, 0 s so far"),
        "shown as soon as the job is seen running"
    );
}

/// `-v` shows every call to TD: method, path, status and time (never a key).
#[test]
fn verbose_shows_each_api_call_with_its_status_and_time() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    let out = td.export(&td.job_spec(&job, "dstdb/t_verbose?mode=append"), &["-v"]);
    out.expect_code(0);
    let calls: Vec<&str> = out.stderr.lines().filter(|l| l.contains(" → ")).collect();
    let shape = regex::Regex::new(r"(GET|POST|PUT) /v3/\S+ → \d{3} in \d+ ms$").unwrap();
    assert!(calls.len() > 5, "{}", out.stderr);
    assert!(calls.iter().all(|l| shape.is_match(l)), "{calls:#?}");
    assert!(
        calls
            .iter()
            .any(|l| l.contains(&format!("GET /v3/job/show/{job} → 200"))),
        "{calls:#?}"
    );
    assert!(
        calls.iter().any(|l| l.contains("POST /v3/bulk_import/commit/")),
        "{calls:#?}"
    );
}

/// A server-engine append with no status document rests on TD honouring the export's domain
/// key (unconfirmed): the run says so while it runs.
#[test]
fn a_server_append_without_a_status_file_warns_that_a_rerun_on_td_may_not_know_it_was_done() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    let spec = format!(
        "{}transfer: server\n",
        td.job_spec(&job, "dstdb/t_server?mode=append")
    );
    td.sandbox.write("server.yml", &spec);
    let out = td.run(&["run", "server.yml"]);
    out.expect_code(0);
    assert!(
        out.stderr
            .contains("no --status file records it: it is submitted under a domain key, which td-local honours but TD may not"),
        "{}",
        out.stderr
    );
}

/// "Already done" names what shows it: the session for the stream engine, TD's export job for
/// the server engine (never a `?`).
#[test]
fn already_done_names_the_record_that_shows_it() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    let spec = format!(
        "{}transfer: server\n",
        td.job_spec(&job, "dstdb/t_done?mode=append")
    );
    td.export(&spec, &[]).expect_code(0);
    let again = td.export(&spec, &[]);
    again.expect_code(0);
    let line = again.stdout.lines().next().unwrap_or_default();
    assert!(line.starts_with("already done: "), "{}", again.stdout);
    assert!(!line.contains('?'), "{line}");
    let export_job = again.status["export"]["export_job_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(line.contains(&format!("(export job {export_job})")), "{line}");
}
