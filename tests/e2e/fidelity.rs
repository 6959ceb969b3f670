//! Tasks written the way TD's and Digdag's docs and Treasure Boxes write them run unchanged
//! (issue "TD connector fidelity"): `transfer: auto`, settings as written, `time_column`, saved
//! results the toolbelt way, td:// URL parameters, query options, and the `td:` block.

use serde_json::json;

use crate::export::{events, with_events_job};
use crate::support::{sorted, Spec, TdLocalRun};

// ---- 1. transfer: auto ----

#[test]
fn auto_streams_when_the_target_key_is_known_here() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    let out = td.export(
        &Spec::on(&td).job(&job).into_table(&td, "dstdb/auto_known").yaml(),
        &[],
    );
    out.expect_code(0);
    assert_eq!(out.status["export"]["transfer"], "stream");
    let reason = out.status["export"]["transfer_reason"].as_str().unwrap();
    assert!(
        reason.contains("the target account's key is known here (result_url's key: secret target_key, found in env TARGET_KEY)"),
        "{reason}"
    );
    assert_eq!(td.rows(2, "dstdb", "auto_known"), Some(sorted(events())));
}

#[test]
fn auto_lets_td_export_to_a_connection_whose_key_only_td_holds() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    // The saved URL's key is account 2's; TD (and td-local) mask it in listings.
    td.save_result(
        1,
        "other_account",
        &format!("td://{}@{}/dstdb", td.master(2), td.host()),
    );
    let out = td.export(
        &Spec::on(&td)
            .job(&job)
            .connection("other_account")
            .settings(
                json!({"user_database_name": "dstdb", "user_table_name": "auto_console", "mode": "append"}),
            )
            .yaml(),
        &[],
    );
    out.expect_code(0);
    assert_eq!(out.status["export"]["transfer"], "server");
    let reason = out.status["export"]["transfer_reason"].as_str().unwrap();
    assert!(
        reason.contains("only TD holds the key of `other_account`"),
        "{reason}"
    );
    assert!(
        td.requests_to("PUT", "/v3/bulk_import/").is_empty(),
        "no row flows through here"
    );
    assert_eq!(td.rows(2, "dstdb", "auto_console").map(|r| r.len()), Some(4));
}

#[test]
fn auto_streams_to_a_saved_result_whose_key_is_the_source_accounts() {
    let (td, job) = with_events_job();
    td.create_database(1, "dstdb");
    td.save_result(1, "same_account", "td://@/dstdb");
    let out = td.export(
        &Spec::on(&td)
            .job(&job)
            .connection("same_account")
            .settings(json!({"user_database_name": "dstdb", "user_table_name": "auto_same"}))
            .yaml(),
        &[],
    );
    out.expect_code(0);
    assert_eq!(out.status["export"]["transfer"], "stream", "{:#}", out.status);
    assert_eq!(td.rows(1, "dstdb", "auto_same"), Some(sorted(events())));
}

// ---- 2. result_settings reach TD as written ----

#[test]
fn settings_the_stream_engine_does_not_honour_are_refused_naming_them() {
    let (td, job) = with_events_job();
    td.clear_requests();
    let out = td.export(
        &Spec::on(&td)
            .job(&job)
            .into_table(&td, "dstdb/unknown_stream")
            .settings(json!({"mode": "append", "tabel_name": "x"}))
            .yaml(),
        &[],
    );
    out.expect_code(2);
    assert!(
        out.stderr
            .contains("result_settings.tabel_name: unknown key `tabel_name`"),
        "{}",
        out.stderr
    );
    assert!(td.requests().is_empty(), "refused before any request");
}

#[test]
fn settings_the_server_engine_does_not_know_are_forwarded_with_a_warning() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    td.save_result(
        1,
        "other_account",
        &format!("td://{}@{}/dstdb", td.master(2), td.host()),
    );
    let out = td.export(
        &Spec::on(&td)
            .job(&job)
            .connection("other_account")
            .with("transfer", "server")
            .settings(json!({
                "user_database_name": "dstdb", "user_table_name": "forwarded", "time": 1_600_000_000,
                "column_options": {"id": {"type": "long"}},
            }))
            .yaml(),
        &[],
    );
    out.expect_code(0);
    assert!(
        out.stderr.contains("result_settings.column_options: `column_options` is not a setting this program reads; TD's export gets it as written"),
        "{}",
        out.stderr
    );
    // The settings reached TD: its export applied `time` to rows that have their own time column.
    assert_eq!(td.rows(2, "dstdb", "forwarded").map(|r| r.len()), Some(4));
}

// ---- 3. time_column ----

#[test]
fn time_column_gives_each_row_its_time_from_seconds_or_a_timestamp() {
    let td = TdLocalRun::start();
    td.insert(
        1,
        "srcdb",
        "orders",
        &[
            json!({"id": 1, "created_at": "2024-01-31 00:00:00", "time": 1}),
            json!({"id": 2, "created_at": "2024-01-31T09:00:00+09:00", "time": 2}),
            json!({"id": 3, "created_at": "2024-01-31 01:00:00.500 UTC", "time": 3}),
        ],
    );
    td.create_database(2, "dstdb");
    let job = td.successful_job(1, "srcdb", "SELECT id, created_at FROM orders");
    let out = td.export(
        &Spec::on(&td)
            .job(&job)
            .into_table(&td, "dstdb/orders_copy")
            .settings(json!({"time_column": "created_at"}))
            .yaml(),
        &[],
    );
    out.expect_code(0);
    assert_eq!(out.status["export"]["time_source"], "time_column");
    let times: Vec<i64> = sorted(td.rows(2, "dstdb", "orders_copy").unwrap())
        .iter()
        .map(|r| r["time"].as_i64().unwrap())
        .collect();
    let mut times = times;
    times.sort();
    assert_eq!(times, [1_706_659_200, 1_706_659_200, 1_706_662_800]);
}

#[test]
fn a_time_column_value_that_is_not_a_time_fails_before_anything_is_visible() {
    let td = TdLocalRun::start();
    td.insert(
        1,
        "srcdb",
        "orders",
        &[
            json!({"id": 1, "created_at": "2024-01-31 00:00:00", "time": 1}),
            json!({"id": 2, "created_at": "next tuesday", "time": 2}),
        ],
    );
    td.create_database(2, "dstdb");
    let job = td.successful_job(1, "srcdb", "SELECT id, created_at FROM orders ORDER BY id");
    let out = td.export(
        &Spec::on(&td)
            .job(&job)
            .into_table(&td, "dstdb/orders_bad")
            .settings(json!({"time_column": "created_at"}))
            .yaml(),
        &[],
    );
    out.expect_code(1);
    let message = out.error_message();
    assert!(
        message.contains("result row 2") && message.contains("time_column `created_at` holds `next tuesday`"),
        "{message}"
    );
    assert!(
        td.rows(2, "dstdb", "orders_bad").unwrap_or_default().is_empty(),
        "nothing is visible"
    );
}

// ---- 4. saved results the toolbelt way ----

#[test]
fn a_saved_result_and_a_table_name_the_target_as_td_query_result_does() {
    let (td, job) = with_events_job();
    td.create_database(1, "testdb");
    // td result:create mydb td://@/testdb ; td query --result mydb:output_table
    td.save_result(1, "mydb", "td://@/testdb");
    let out = td.export(&Spec::on(&td).job(&job).url("mydb:output_table").yaml(), &[]);
    out.expect_code(0);
    assert_eq!(td.rows(1, "testdb", "output_table"), Some(sorted(events())));
    assert_eq!(out.status["export"]["target"]["database"], "testdb");
    // The saved result's mode applies when the settings give none.
    td.save_result(1, "mydb_replace", "td://@/testdb/ignored?mode=replace");
    let again = td.export(
        &Spec::on(&td).job(&job).url("mydb_replace:output_table").yaml(),
        &[],
    );
    again.expect_code(0);
    assert_eq!(again.status["export"]["target"]["mode"], "replace");
    assert_eq!(
        td.rows(1, "testdb", "output_table"),
        Some(sorted(events())),
        "replaced, not appended"
    );
}

// ---- 5. td:// URL parameters ----

#[test]
fn td_url_time_and_apikey_parameters_are_read_as_settings_and_the_key() {
    let td = TdLocalRun::start();
    td.insert(
        1,
        "srcdb",
        "plain",
        &[json!({"id": 1, "time": 5}), json!({"id": 2, "time": 6})],
    );
    td.create_database(2, "dstdb");
    let job = td.successful_job(1, "srcdb", "SELECT id FROM plain");
    let out = td.export(
        &Spec::on(&td)
            .job(&job)
            .url(format!(
                "td://@{}/dstdb/params?mode=append&time=2024-01-31&apikey=${{secret:target_key}}",
                td.host()
            ))
            .yaml(),
        &[],
    );
    out.expect_code(0);
    assert_eq!(out.status["export"]["time_source"], "setting");
    let rows = td
        .rows(2, "dstdb", "params")
        .expect("written with apikey='s account");
    assert!(rows.iter().all(|r| r["time"] == 1_706_659_200), "{rows:?}");
}

#[test]
fn td_url_legacy_parameter_chooses_tds_legacy_connector() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    let out = td.export(
        &Spec::on(&td)
            .job(&job)
            .into_table(&td, "dstdb/legacy_param?legacy=true")
            .yaml(),
        &[],
    );
    out.expect_code(0);
    assert_eq!(out.status["export"]["transfer"], "server");
    assert!(out.status["export"]["transfer_reason"]
        .as_str()
        .unwrap()
        .contains("legacy_mode"));
    assert_eq!(td.rows(2, "dstdb", "legacy_param").map(|r| r.len()), Some(4));
}

// ---- 6. query options ----

#[test]
fn query_options_are_sent_as_td_query_sends_them() {
    let td = TdLocalRun::start();
    td.create_database(2, "dstdb");
    let out = td.export(
        &Spec::on(&td)
            .with(
                "query",
                "SELECT code, COUNT(1) AS cnt FROM www_access GROUP BY code",
            )
            .with("database", "sample_datasets")
            .with("engine", "hive")
            .with("priority", "HIGH")
            .with("retry_limit", 1)
            .with("pool_name", "batch")
            .with("engine_version", "stable")
            .with("scheduled_time", "2024-01-31 00:00:00")
            .into_table(&td, "dstdb/codes")
            .yaml(),
        &[],
    );
    out.expect_code(0);
    let shown = td.job_json(1, out.status["export"]["source_job_id"].as_str().unwrap());
    assert_eq!(shown["priority"], 1, "{shown:#}");
    assert_eq!(shown["retry_limit"], 1, "{shown:#}");
    assert_eq!(shown["pool_name"], "batch", "{shown:#}");

    // A Presto pool TD does not have is refused when the query is issued (td-local has none),
    // and the run says TD's words.
    let out = td.export(
        &Spec::on(&td)
            .with("query", "SELECT 1 AS one")
            .with("database", "sample_datasets")
            .with("pool_name", "no_such_pool")
            .into_table(&td, "dstdb/codes_pool")
            .yaml(),
        &[],
    );
    out.expect_code(1);
    assert!(
        out.stderr
            .contains("Presto resource pool with name 'no_such_pool' does not exist"),
        "{}",
        out.stderr
    );
}

// ---- 7. the td: block as Digdag reads it ----

#[test]
fn td_database_is_the_default_database_of_a_query() {
    let td = TdLocalRun::start();
    td.create_database(2, "dstdb");
    let out = td.export(
        &format!(
            "query: SELECT code, COUNT(1) AS cnt FROM www_access GROUP BY code\n\
             td: {{endpoint: 'http://{}', apikey: '${{secret:source_key}}', database: sample_datasets}}\n\
             result_url: {}\n",
            td.host(),
            td.target_url("dstdb/codes_td_db")
        ),
        &[],
    );
    out.expect_code(0);
    assert!(!td
        .requests_to("POST", "/v3/job/issue/presto/sample_datasets")
        .is_empty());
    assert!(td.rows(2, "dstdb", "codes_td_db").is_some_and(|r| !r.is_empty()));
}

#[test]
fn td_endpoint_use_ssl_and_apikey_fall_back_to_the_td_secrets() {
    let td = TdLocalRun::start();
    td.sandbox.write(
        "spec.yml",
        "job_id: '1'\ntd: {endpoint: api.example.com}\nresult_url: td://@/dstdb/t_1\n",
    );
    let out = td.run(&["run", "--dry-run", "spec.yml"]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("no API key for the source account"),
        "{}",
        out.stderr
    );
    let mut cmd = td.command(&["run", "--dry-run", "spec.yml"]);
    cmd.env("TD_APIKEY", td.master(1)).env("TD_USE_SSL", "false");
    let out = td.run_command(cmd);
    out.expect_code(0);
    let plan: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        plan["source_account"]["endpoint"], "http://api.example.com",
        "td.use_ssl: false from the secret"
    );
}
