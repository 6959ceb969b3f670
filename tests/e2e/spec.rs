//! The spec stage through the real binary: invalid specs exit 2 with a message naming the file,
//! line, spec path, value and fix (and never an API key); valid specs exit 0; nothing is sent.

use std::net::TcpListener;

use serde_json::Value;

use crate::support::{cli_snapshots, fake_key, repo_root, slug, Sandbox};

/// One invalid spec; its error message is pinned in `snapshots/` under the case's name.
struct Case {
    name: &'static str,
    spec: &'static str,
    /// Extra files written into the sandbox: (name, text).
    files: &'static [(&'static str, &'static str)],
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
}

const NO: &[(&str, &str)] = &[];
const SOURCE_KEY: &[(&str, &str)] = &[("TD_API_KEY", "{KEY}")];

/// `{KEY}` in specs, files and env values stands for a key-shaped secret that must never be printed.
fn key() -> String {
    fake_key(7, 0xab)
}

const CASES: &[Case] = &[
    Case {
        name: "misspelt top-level key",
        spec: "job_id: '12345'\nreslt_url: td://@/testdb/output_table\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "misspelt nested key",
        spec: "job_id: '12345'\nresult_url: td://@/testdb/output_table\ntd: {endpont: api.treasuredata.com}\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "misspelt mode",
        spec: "job_id: '12345'\nresult_connection: target\nresult_settings:\n  user_database_name: testdb\n  user_table_name: output_table\n  mode: appendd\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "bad mode inside result_settings given as JSON text",
        spec: "job_id: '12345'\nresult_connection: target\nresult_settings: '{\"database\": \"testdb\", \"table\": \"output_table\", \"mode\": \"upsert\"}'\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "result_settings JSON text that is not JSON",
        spec: "job_id: '12345'\nresult_connection: target\nresult_settings: '{\"database\": testdb}'\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "no source",
        spec: "td_result_export>:\nresult_url: td://@/testdb/output_table\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "two sources",
        spec: "job_id: '12345'\nquery: SELECT 1\ndatabase: sample_datasets\nresult_url: td://@/testdb/output_table\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "no target",
        spec: "job_id: '12345'\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "two targets",
        spec: "job_id: '12345'\nresult_url: td://@/testdb/t_1\nresult_connection: target\nresult_settings: {database: testdb, table: t_1}\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "query without database",
        spec: "query: SELECT 1\nresult_url: td://@/testdb/output_table\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "connection without settings",
        spec: "job_id: '12345'\nresult_connection: target\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "connection settings without a table",
        spec: "job_id: '12345'\nresult_connection: target\nresult_settings: {database: testdb}\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "table name with capitals and dashes",
        spec: "job_id: '12345'\nresult_connection: target\nresult_settings:\n  database: testdb\n  table: Output-Table\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "database name too short",
        spec: "query: SELECT 1\ndatabase: db\nresult_url: td://@/testdb/output_table\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "td URL without a table",
        spec: "job_id: '12345'\nresult_url: td://@/testdb\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "td URL with a key and a bad table (the key is masked)",
        spec: "job_id: '12345'\nresult_url: td://{KEY}@api.treasuredata.co.jp/testdb/Bad\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "td URL with an unknown query parameter",
        spec: "job_id: '12345'\nresult_url: td://@/testdb/output_table?mdoe=replace\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "not a td URL",
        spec: "job_id: '12345'\nresult_url: https://example.com/testdb/output_table\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "unknown variable",
        spec: "job_id: ${td.last_job_id}\nresult_url: td://@/testdb/output_table\n",
        files: NO,
        args: &["--param", "other=1"],
        env: NO,
    },
    Case {
        name: "expression instead of a variable",
        spec: "job_id: ${a + b}\nresult_url: td://@/testdb/output_table\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "unknown secret, no secrets file",
        spec: "job_id: '12345'\nresult_url: td://${secret:target.apikey}@/testdb/output_table\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "unknown secret, with a secrets file",
        spec: "job_id: '12345'\nresult_settings: {api_key: '${secret:target.apikey}', database: testdb, table: t_1}\nresult_connection: c\n",
        files: &[("secrets.yml", "target: {api-key: '{KEY}'}\n")],
        args: &["--secrets", "secrets.yml"],
        env: NO,
    },
    Case {
        name: "time that is not a time",
        spec: "job_id: '12345'\nresult_url: td://@/testdb/output_table\nresult_settings:\n  time: next tuesday\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "legacy_mode with the stream transfer",
        spec: "job_id: '12345'\nresult_url: td://@/testdb/output_table\nresult_settings: {legacy_mode: true}\ntransfer: stream\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "negative retry limit",
        spec: "job_id: '12345'\nresult_url: td://@/testdb/output_table\n_retry:\n  limit: -1\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "job id that is not digits",
        spec: "job_id: abc12\nresult_url: td://@/testdb/output_table\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "string where a boolean belongs",
        spec: "job_id: '12345'\nresult_url: td://@/testdb/output_table\ntransfer: server\nresult_settings: {legacy_mode: 'yes'}\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "broken YAML",
        spec: "job_id: '12345'\nresult_url: [td://@/testdb/output_table\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "a list instead of a map",
        spec: "- job_id: '12345'\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "job id on the operator key",
        spec: "td_result_export>: 12345\nresult_url: td://@/testdb/output_table\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "a setting and its alias together",
        spec: "job_id: '12345'\nresult_connection: c\nresult_settings:\n  user_database_name: testdb\n  database: testdb\n  table: t_1\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "result_url and a settings table",
        spec: "job_id: '12345'\nresult_url: td://@/testdb/output_table\nresult_settings:\n  table: other_table\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "settings key contradicting a literal URL key (the key is masked)",
        spec: "job_id: '12345'\nresult_url: td://{KEY}@/testdb/output_table\nresult_settings: {api_key: '{KEY}'}\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "no key for the source account",
        spec: "job_id: '12345'\nresult_url: td://@/testdb/output_table\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "endpoint with a path",
        spec: "job_id: '12345'\nresult_url: td://@/testdb/output_table\ntd:\n  endpoint: https://api.treasuredata.com/v3\n",
        files: NO,
        args: &[],
        env: SOURCE_KEY,
    },
    Case {
        name: "connection in the spec without an api_key",
        spec: "job_id: '12345'\nresult_connection: target\nresult_settings: {database: testdb, table: output_table}\nconnections:\n  target:\n    type: treasure_data\n",
        files: NO,
        args: &[],
        env: SOURCE_KEY,
    },
    Case {
        name: "misspelt key in the connections file",
        spec: "job_id: '12345'\nresult_connection: target\nresult_settings: {database: testdb, table: output_table}\n",
        files: &[("conns.yml", "target:\n  type: treasure_data\n  api_hostnme: api.treasuredata.co.jp\n  api_key: '{KEY}'\n")],
        args: &["--connections", "conns.yml"],
        env: SOURCE_KEY,
    },
    Case {
        name: "td-local account that does not exist",
        spec: "job_id: '12345'\ntd: {endpoint: local}\nresult_url: td://${local:account3.master_key}@/testdb/output_table\n",
        files: NO,
        args: &["--local", "data"],
        env: NO,
    },
    Case {
        name: "param without a value",
        spec: "job_id: '12345'\nresult_url: td://@/testdb/output_table\n",
        files: NO,
        args: &["--param", "td.last_job_id"],
        env: NO,
    },
    Case {
        name: "problems found while resolving are all named in file order",
        spec: "td:\n  endpoint: 'http://bad host'\n  apikey: '{KEY}'\nquery_file: queries/missing.sql\ndatabase: sample_datasets\nresult_url: td://@/testdb/output_table\n",
        files: NO,
        args: &[],
        env: NO,
    },
    Case {
        name: "missing spec file",
        spec: "",
        files: NO,
        args: &["--", "nowhere.yml"],
        env: NO,
    },
];

#[test]
fn every_invalid_spec_exits_2_naming_path_line_value_and_fix_without_showing_keys() {
    let key = key();
    let mut failures = Vec::new();
    for case in CASES {
        let sandbox = Sandbox::new();
        sandbox.write("spec.yml", &case.spec.replace("{KEY}", &key));
        for (name, text) in case.files {
            sandbox.write(name, &text.replace("{KEY}", &key));
        }
        let mut cmd = sandbox.cmd();
        cmd.arg("validate");
        let explicit_spec = case.args.contains(&"--");
        cmd.args(case.args.iter().filter(|a| **a != "--"));
        if !explicit_spec {
            cmd.arg("spec.yml");
        }
        for (name, value) in case.env {
            cmd.env(name, value.replace("{KEY}", &key));
        }
        let out = cmd.output().expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut problems = Vec::new();
        if out.status.code() != Some(2) {
            problems.push(format!("exit code {:?}, expected 2", out.status.code()));
        }
        if stderr.contains(&key) || stdout.contains(&key) {
            problems.push("an API key was printed".to_string());
        }
        if !stdout.is_empty() {
            problems.push(format!("stdout is not empty: {stdout}"));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}:\n  {}\n  stderr: {stderr}",
                case.name,
                problems.join("\n  ")
            ));
        }
        let sandbox_path = sandbox.path().display().to_string();
        cli_snapshots(&[(&sandbox_path, "[SANDBOX]")]).bind(|| {
            insta::assert_snapshot!(format!("invalid_spec__{}", slug(case.name)), stderr, case.spec);
        });
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Runs `validate` (and `run --dry-run`) on a valid spec; returns (validate stdout, plan, stderr).
fn accept(sandbox: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> (String, Value, String) {
    let validate = sandbox
        .cmd()
        .arg("validate")
        .arg("spec.yml")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&validate.stderr).into_owned();
    assert_eq!(validate.status.code(), Some(0), "validate failed: {stderr}");
    let dry = sandbox
        .cmd()
        .args(["run", "--dry-run", "spec.yml"])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert_eq!(
        dry.status.code(),
        Some(0),
        "run --dry-run failed: {}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let plan: Value = serde_json::from_slice(&dry.stdout).expect("the dry run prints the plan as JSON");
    for text in [
        String::from_utf8_lossy(&validate.stdout),
        String::from_utf8_lossy(&dry.stdout),
        stderr.as_str().into(),
    ] {
        assert!(!text.contains(&key()), "a key was printed: {text}");
    }
    (
        String::from_utf8_lossy(&validate.stdout).into_owned(),
        plan,
        stderr,
    )
}

#[test]
fn a_job_export_with_secrets_from_a_file_resolves_both_accounts() {
    let sandbox = Sandbox::new();
    let key = key();
    sandbox.write(
        "spec.yml",
        "td_result_export>:\njob_id: ${td.last_job_id}\ntd: {apikey: '${secret:td.apikey}'}\n\
         result_url: td://${secret:target.apikey}@api.treasuredata.co.jp/testdb/output_table?mode=replace\n\
         result_settings: {time: '2024-01-31 00:00:00 UTC'}\n_retry: {limit: 3, interval: 10, interval_type: exponential}\n",
    );
    sandbox.write(
        "secrets.yml",
        &format!("td:\n  apikey: '{key}'\ntarget.apikey: '{key}'\n"),
    );
    let (stdout, plan, stderr) = accept(
        &sandbox,
        &["--secrets", "secrets.yml", "--param", "td.last_job_id=12345"],
        &[],
    );
    assert_eq!(
        stdout.trim(),
        "valid: spec.yml: job 12345 on https://api.treasuredata.com → https://api.treasuredata.co.jp testdb.output_table (replace, stream)"
    );
    assert!(stderr.is_empty(), "no warnings expected: {stderr}");
    assert_eq!(plan["source"], serde_json::json!({"kind": "job", "id": "12345"}));
    assert_eq!(plan["source_account"]["api_key"], "***");
    assert_eq!(
        plan["target"]["account"]["account"]["endpoint"],
        "https://api.treasuredata.co.jp"
    );
    assert_eq!(
        plan["target"]["url"],
        "td://***@api.treasuredata.co.jp/testdb/output_table?mode=replace"
    );
    assert_eq!(plan["target"]["time"], 1706659200);
    assert_eq!(
        plan["retry"],
        serde_json::json!({"limit": 3, "interval_secs": 10, "interval_type": "exponential", "max_interval_secs": null})
    );
}

#[test]
fn the_source_key_falls_back_to_td_api_key_then_td_conf() {
    let sandbox = Sandbox::new();
    sandbox.write("spec.yml", "job_id: 1\nresult_url: td://@/testdb/output_table\n");
    accept(
        &sandbox,
        &[],
        &[
            ("TD_API_KEY", &key()),
            ("TD_API_SERVER", "api.eu01.treasuredata.com"),
        ],
    );
    sandbox.write(".td/td.conf", &format!("[account]\n  user = me@example.com\n  apikey = {}\n  endpoint = https://api.treasuredata.co.jp\n", key()));
    let (stdout, plan, _) = accept(&sandbox, &[], &[]);
    assert_eq!(
        plan["source_account"]["endpoint"],
        "https://api.treasuredata.co.jp"
    );
    assert!(
        stdout.contains("→ https://api.treasuredata.co.jp testdb.output_table (append, stream)"),
        "{stdout}"
    );
}

#[test]
fn a_query_file_with_a_connection_from_a_connections_file_and_json_settings() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "spec.yml",
        "query_file: queries/count.sql\ndatabase: sample_datasets\nengine: trino\n\
         result_connection: target\nresult_settings: '{\"database\": \"testdb\", \"table\": \"out_${day}\"}'\n\
         td: {endpoint: '127.0.0.1:8950'}\nidempotency_key: daily-${day}\ntransfer: server\n",
    );
    sandbox.write(
        "queries/count.sql",
        "SELECT code, COUNT(1) FROM www_access WHERE d = '${day}' GROUP BY code\n",
    );
    sandbox.write("conns.yml", "target:\n  type: treasure_data\n  api_key: ${secret:target.apikey}\n  api_hostname: https://api.treasuredata.co.jp\n");
    let env = [("TD_API_KEY", key()), ("TARGET_APIKEY", key())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (_, plan, _) = accept(
        &sandbox,
        &["--connections", "conns.yml", "--param", "day=20240131"],
        &env,
    );
    assert_eq!(
        plan["source"],
        serde_json::json!({"kind": "query", "database": "sample_datasets", "engine": "trino", "options": {},
            "sql": "SELECT code, COUNT(1) FROM www_access WHERE d = '20240131' GROUP BY code\n"})
    );
    assert_eq!(
        plan["source_account"]["endpoint"], "http://127.0.0.1:8950",
        "loopback is plain HTTP"
    );
    assert_eq!(plan["target"]["account"]["kind"], "known");
    assert_eq!(plan["target"]["account"]["connection"], "target");
    assert_eq!(
        plan["target"]["account"]["account"]["endpoint"],
        "https://api.treasuredata.co.jp"
    );
    assert_eq!(plan["target"]["table"], "out_20240131");
    assert_eq!(plan["idempotency_key"], "daily-20240131");
    assert_eq!(plan["transfer"], "server");
}

#[test]
fn a_connection_defined_nowhere_is_left_for_the_online_lookup() {
    let sandbox = Sandbox::new();
    sandbox.write("spec.yml", "job_id: 1\nresult_connection: saved_target\nresult_settings: {database: testdb, table: t_1, mode: replace}\n");
    let (stdout, plan, _) = accept(&sandbox, &[], &[("TD_API_KEY", &key())]);
    assert_eq!(
        plan["target"]["account"],
        serde_json::json!({"kind": "connection", "name": "saved_target", "api_key": null, "endpoint": null})
    );
    assert!(
        stdout.contains(
            "connection saved_target (looked up at run time) testdb.t_1 (replace, auto: stream or server, once looked up)"
        ),
        "{stdout}"
    );
}

#[test]
fn a_literal_api_key_works_but_warns_without_printing_it() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "spec.yml",
        &format!(
            "job_id: 1\ntd:\n  apikey: '{}'\nresult_url: td://@/testdb/output_table\n",
            key()
        ),
    );
    let (_, plan, stderr) = accept(&sandbox, &[], &[]);
    assert!(
        stderr.starts_with("warning: spec.yml:3: td.apikey: an API key is written in the spec"),
        "{stderr}"
    );
    assert!(stderr.contains("Use ${secret:NAME}"), "{stderr}");
    assert_eq!(plan["target"]["account"]["account"]["api_key"], "***");
    let quiet = sandbox
        .cmd()
        .args(["validate", "-q", "spec.yml"])
        .output()
        .unwrap();
    assert!(
        quiet.status.success() && quiet.stderr.is_empty(),
        "-q hides warnings"
    );
}

#[test]
fn local_flag_sends_every_endpoint_to_the_embedded_td_local() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "spec.yml",
        "job_id: 1\ntd: {endpoint: api.treasuredata.com, apikey: '${local:account1.master_key}'}\n\
         result_url: td://${local:account2.write_only_key}@api.treasuredata.co.jp/testdb/output_table\n",
    );
    let (_, plan, _) = accept(&sandbox, &["--local", "data"], &[]);
    assert_eq!(plan["source_account"]["endpoint"], "local");
    assert_eq!(plan["target"]["account"]["account"]["endpoint"], "local");
    assert_eq!(plan["local_dir"], "data");
    let accounts =
        std::fs::read_to_string(sandbox.path().join("data/accounts.yml")).expect("accounts created");
    assert!(accounts.contains("write_only_key"));
}

#[test]
fn validate_and_dry_run_send_nothing() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let sandbox = Sandbox::new();
    sandbox.write(
        "spec.yml",
        &format!("job_id: 1\ntd: {{endpoint: 'http://127.0.0.1:{port}'}}\nresult_url: td://${{secret:k}}@127.0.0.1:{port}/testdb/output_table\n"),
    );
    let env = [("TD_API_KEY", key()), ("K", key())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (_, plan, _) = accept(&sandbox, &[], &env);
    assert_eq!(
        plan["target"]["account"]["account"]["endpoint"],
        format!("http://127.0.0.1:{port}")
    );
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("something connected to the endpoint: {other:?}"),
    }
}

#[test]
fn the_quickstart_exports_account_1s_query_into_account_2_on_the_embedded_td_local() {
    let sandbox = Sandbox::new();
    let spec = repo_root().join("examples/quickstart.yml");
    let out = sandbox
        .cmd()
        .args(["run", "--dry-run"])
        .arg(&spec)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "the quickstart has no warnings: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["source"]["database"], "sample_datasets");
    assert_eq!(
        plan["source"]["sql"],
        "SELECT code, COUNT(1) AS cnt FROM www_access GROUP BY code"
    );
    assert_eq!(plan["source_account"]["endpoint"], "local");
    assert_eq!(plan["target"]["account"]["account"]["endpoint"], "local");
    assert_eq!(
        (
            &plan["target"]["database"],
            &plan["target"]["table"],
            &plan["target"]["mode"]
        ),
        (&"testdb".into(), &"output_table".into(), &"replace".into())
    );
    assert_eq!(
        plan["local_dir"], ".td-local",
        "the default data directory, relative to the working directory"
    );
    let accounts = std::fs::read_to_string(sandbox.path().join(".td-local/accounts.yml")).unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    for line in accounts.lines().filter(|l| l.contains("_key:")) {
        let key = line.split_once(':').unwrap().1.trim();
        assert!(!printed.contains(key), "a td-local key was printed");
    }
}

#[test]
fn schema_prints_the_schema_files_exactly() {
    let sandbox = Sandbox::new();
    for (args, file) in [
        (&["schema"][..], "td_result_export.schema.json"),
        (&["schema", "task"][..], "td_result_export.schema.json"),
        (&["schema", "status"][..], "status.schema.json"),
    ] {
        let out = sandbox.cmd().args(args).output().unwrap();
        assert!(out.status.success());
        let expected = std::fs::read_to_string(repo_root().join("schema").join(file)).unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), expected, "{args:?}");
    }
    let out = sandbox.cmd().args(["schema", "bogus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error exits 2");
}

/// `--params FILE` gives `${…}` values from a YAML or JSON map (nested maps give dotted names),
/// as a runner passes them without putting them on a command line; `--param` wins over it.
#[test]
fn params_come_from_a_file_as_well_as_the_command_line() {
    let sandbox = Sandbox::new();
    let key = key();
    sandbox.write(
        "spec.yml",
        "job_id: ${td.last_job_id}\ntd: {apikey: '${secret:td.apikey}'}\n\
         result_url: td://${secret:td.apikey}@api.treasuredata.co.jp/testdb/t_${suffix}\n",
    );
    sandbox.write("secrets.yml", &format!("td.apikey: '{key}'\n"));
    sandbox.write("params.json", r#"{"td": {"last_job_id": 777}, "suffix": "abc"}"#);
    let (_, plan, _) = accept(
        &sandbox,
        &["--secrets", "secrets.yml", "--params", "params.json"],
        &[],
    );
    assert_eq!(plan["source"]["id"], "777");
    assert_eq!(plan["target"]["table"], "t_abc");
    let (_, plan, _) = accept(
        &sandbox,
        &[
            "--secrets",
            "secrets.yml",
            "--params",
            "params.json",
            "--param",
            "td.last_job_id=888",
        ],
        &[],
    );
    assert_eq!(plan["source"]["id"], "888", "--param wins over the file");

    sandbox.write("params.json", "[1, 2]");
    let out = sandbox
        .cmd()
        .args([
            "validate",
            "spec.yml",
            "--secrets",
            "secrets.yml",
            "--params",
            "params.json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("it is not a map of names to values"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A host that looks meant for TD but is none of its API hosts (the console's host, a typo) gets
/// a warning naming TD's API hosts, with the one meant; any other host passes quietly.
#[test]
fn validate_warns_about_a_host_that_is_not_one_of_tds_api_hosts() {
    let sandbox = Sandbox::new();
    // `validate` on a spec with these two hosts: (exit code, stderr).
    let validate = |source_host: &str, target_host: &str| {
        sandbox.write(
            "spec.yml",
            &format!(
                "job_id: '1'\ntd: {{endpoint: {source_host}, apikey: '${{secret:k}}'}}\n\
                 result_url: 'td://${{secret:k}}@{target_host}/db_1/t_1'\n"
            ),
        );
        let out = sandbox
            .cmd()
            .args(["validate", "spec.yml"])
            .env("K", key())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = validate("console.treasuredata.co.jp", "api.treasuredata.jp");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("td.endpoint: `console.treasuredata.co.jp` is not one of TD's API hosts"),
        "{stderr}"
    );
    assert!(
        stderr.contains("result_url: `api.treasuredata.jp` is not one of TD's API hosts")
            && stderr.contains("Did you mean `api.treasuredata.co.jp`?"),
        "{stderr}"
    );
    let (_, stderr) = validate("api.eu01.treasuredata.com", "proxy.example.internal");
    assert_eq!(stderr, "", "no warning for TD's hosts or others");
}
