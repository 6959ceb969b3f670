//! No secret the run knows appears in anything it writes — stdout, stderr, the status document —
//! whatever field it was put in, and whatever TD echoes back (a failed query's stderr).

use crate::support::TdLocalRun;

/// A secret that is not shaped like a key: only knowing it lets the run mask it.
const SECRET: &str = "hunter2-very-secret-9f8e7d";

/// Specs with `${secret:leaky}` in every kind of field (`{SRC}` is the source account's lines,
/// `{URL}` a td:// URL into account 2).
const PLACES: &[(&str, &str)] = &[
    ("result_connection", "job_id: '1'\n{SRC}result_connection: '${secret:leaky}'\nresult_settings: {database: dstdb, table: t_1}\n"),
    ("result_settings.mode", "job_id: '1'\n{SRC}result_url: {URL}\nresult_settings: {mode: '${secret:leaky}'}\n"),
    ("result_settings.time", "job_id: '1'\n{SRC}result_url: {URL}\nresult_settings: {time: '${secret:leaky}'}\n"),
    ("result_settings.time_column", "job_id: '1'\n{SRC}result_url: {URL}\nresult_settings: {time_column: '${secret:leaky}'}\n"),
    ("?mode= in the URL", "job_id: '1'\n{SRC}result_url: '{URL}?mode=${secret:leaky}'\n"),
    ("a URL missing its @", "job_id: '1'\n{SRC}result_url: 'td://${secret:leaky}/dstdb/t_1'\n"),
    ("td.endpoint", "job_id: '1'\ntd: {endpoint: '${secret:leaky}', apikey: '${secret:source_key}'}\nresult_url: {URL}\n"),
    ("td.proxy.host", "job_id: '1'\ntd: {endpoint: 'http://{HOST}', apikey: '${secret:source_key}', proxy: {host: '${secret:leaky} x'}}\nresult_url: {URL}\n"),
    ("database", "query: SELECT 1\ndatabase: '${secret:leaky}'\n{SRC}result_url: {URL}\n"),
    ("pool_name", "query: SELECT 1\ndatabase: sample_datasets\npool_name: '${secret:leaky}'\n{SRC}result_url: {URL}\n"),
    ("engine_version", "query: SELECT 1\ndatabase: sample_datasets\nengine_version: '${secret:leaky}'\n{SRC}result_url: {URL}\n"),
    ("idempotency_key", "job_id: '1'\n{SRC}result_url: {URL}\nidempotency_key: '${secret:leaky}'\n"),
    ("scheduled_time", "query: SELECT 1\ndatabase: sample_datasets\nscheduled_time: '${secret:leaky}'\n{SRC}result_url: {URL}\n"),
    ("priority", "query: SELECT 1\ndatabase: sample_datasets\npriority: '${secret:leaky}'\n{SRC}result_url: {URL}\n"),
    ("job_id", "job_id: '${secret:leaky}'\n{SRC}result_url: {URL}\n"),
    ("query echoed in a failed job's stderr", "query: 'SELECT ${secret:leaky} FROM www_access'\ndatabase: sample_datasets\n{SRC}result_url: {URL}\n"),
    ("connection api_hostname", "job_id: '1'\n{SRC}result_connection: c\nresult_settings: {database: dstdb, table: t_1}\nconnections: {c: {type: treasure_data, api_key: '${secret:target_key}', api_hostname: '${secret:leaky}'}}\n"),
];

#[test]
fn a_secret_never_appears_in_any_output_whatever_field_it_was_put_in() {
    let td = TdLocalRun::start();
    td.create_database(2, "dstdb");
    let mut leaks = Vec::new();
    for (place, spec) in PLACES {
        let spec = spec
            .replace("{SRC}", &td.source_yaml())
            .replace("{URL}", &td.target_url("dstdb/t_1"))
            .replace("{HOST}", &td.host());
        td.sandbox.write("spec.yml", &spec);
        for args in [
            &["validate", "spec.yml"][..],
            &["run", "spec.yml", "--status", "status.json"],
        ] {
            let _ = std::fs::remove_file(td.sandbox.path().join("status.json"));
            let mut cmd = td.command(args);
            cmd.env("LEAKY", SECRET);
            let out = td.run_command(cmd);
            for (what, text) in [
                ("stdout", &out.stdout),
                ("stderr", &out.stderr),
                ("status", &out.status.to_string()),
            ] {
                if text.contains(SECRET) {
                    leaks.push(format!("{place} ({}): the secret is in {what}:\n{text}", args[0]));
                }
            }
            // The cases fail, each in its own way; none may be a crash.
            assert_ne!(out.code, 101, "{place}: panicked\n{}", out.stderr);
        }
    }
    assert!(leaks.is_empty(), "{}", leaks.join("\n\n"));
}

/// A key in a committed file is a key given away (a test run once left td-local's keys in a
/// `secrets.yml` at the root, and it was committed). Only the tests' own fixtures, made-up keys
/// such as `1/0123…`, may have the shape.
#[test]
fn no_file_the_repository_tracks_outside_the_tests_holds_a_key_shaped_string() {
    let root = crate::support::repo_root();
    let listed = std::process::Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(&root)
        .output()
        .expect("git lists the tracked files");
    assert!(
        listed.status.success(),
        "git ls-files: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    let key = regex::Regex::new(r"\b\d+/[0-9a-fA-F]{40}\b").unwrap();
    let mut holding = Vec::new();
    for path in String::from_utf8(listed.stdout)
        .unwrap()
        .split('\0')
        .filter(|p| !p.is_empty())
    {
        if path.starts_with("tests/") || path.contains("/tests/") {
            continue;
        }
        // Binary and vanished files read as empty.
        let text = std::fs::read_to_string(root.join(path)).unwrap_or_default();
        if key.is_match(&text) {
            holding.push(path.to_string());
        }
    }
    assert!(
        holding.is_empty(),
        "tracked files holding a key-shaped string: {holding:?}"
    );
}
