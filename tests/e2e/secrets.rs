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
