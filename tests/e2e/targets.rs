//! Every way to name the target account, through the real binary: a td:// URL with another
//! account's key, `td://@/…` for the source account itself, a connection from a connections file,
//! and a connection saved only on the source account.

use serde_json::json;

use crate::export::{events, with_events_job};
use crate::support::sorted;

#[test]
fn a_result_url_with_another_accounts_key_writes_into_that_account() {
    let (td, job) = with_events_job();
    td.create_database(1, "dstdb");
    td.create_database(2, "dstdb");
    let spec = format!(
        "job_id: '{job}'\n{}result_url: {}\n",
        td.source_yaml(),
        td.target_url("dstdb/events_copy?mode=append")
    );
    let out = td.export(&spec, &[]);
    out.expect_code(0);
    assert_eq!(td.rows(2, "dstdb", "events_copy"), Some(sorted(events())));
    assert!(
        td.rows(1, "dstdb", "events_copy").is_none(),
        "nothing in the source account"
    );
    let uploads = td.requests_to("PUT", "/v3/bulk_import/upload_part/");
    assert!(!uploads.is_empty() && uploads.iter().all(|r| r.account == Some(2)));
    assert_eq!(
        out.status["export"]["target"],
        json!({"endpoint": format!("http://{}", td.host()), "database": "dstdb", "table": "events_copy", "mode": "append"})
    );
}

#[test]
fn an_empty_url_key_and_host_write_into_the_source_account() {
    let (td, job) = with_events_job();
    td.create_database(1, "dstdb");
    td.create_database(2, "dstdb");
    let spec = format!(
        "job_id: '{job}'\n{}result_url: td://@/dstdb/events_copy?mode=replace\n",
        td.source_yaml()
    );
    td.export(&spec, &[]).expect_code(0);
    assert_eq!(td.rows(1, "dstdb", "events_copy"), Some(sorted(events())));
    assert!(td.rows(2, "dstdb", "events_copy").is_none());
}

#[test]
fn a_connection_from_a_connections_file_with_result_settings() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    td.sandbox.write(
        "connections.yml",
        &format!(
            "target_account:\n  type: treasure_data\n  api_key: ${{secret:target_key}}\n  api_hostname: http://{}\n",
            td.host()
        ),
    );
    let spec = format!(
        "job_id: '{job}'\n{}result_connection: target_account\n\
         result_settings:\n  user_database_name: dstdb\n  user_table_name: events_copy\n  mode: replace\n",
        td.source_yaml()
    );
    let out = td.export(&spec, &["--connections", "connections.yml"]);
    out.expect_code(0);
    assert_eq!(td.rows(2, "dstdb", "events_copy"), Some(sorted(events())));
    assert_eq!(out.status["export"]["target"]["mode"], "replace");
    assert!(
        td.requests_to("GET", "/v3/result/list").is_empty(),
        "a connection defined locally is not looked up"
    );
}

#[test]
fn a_connection_saved_only_on_the_source_account_is_looked_up() {
    let (td, job) = with_events_job();
    td.create_database(2, "dstdb");
    // The saved URL carries account 2's key; TD (and td-local) mask it in listings, so the stream
    // engine takes the key from result_settings.api_key and the host from the saved URL.
    td.save_result(
        1,
        "saved_target",
        &format!("td://{}@{}/dstdb", td.master(2), td.host()),
    );
    let spec = format!(
        "job_id: '{job}'\n{}result_connection: saved_target\n\
         result_settings: {{database: dstdb, table: events_copy, mode: append, api_key: '${{secret:target_key}}'}}\n",
        td.source_yaml()
    );
    let out = td.export(&spec, &[]);
    out.expect_code(0);
    assert_eq!(td.rows(2, "dstdb", "events_copy"), Some(sorted(events())));
    assert_eq!(td.requests_to("GET", "/v3/result/list").len(), 1);
}

#[test]
fn transfer_stream_to_a_connection_whose_key_only_td_holds_exits_2_naming_the_fix() {
    let (td, job) = with_events_job();
    td.save_result(
        1,
        "saved_target",
        &format!("td://{}@{}/dstdb", td.master(2), td.host()),
    );
    let spec = format!(
        "job_id: '{job}'\n{}result_connection: saved_target\n\
         result_settings: {{database: dstdb, table: events_copy}}\ntransfer: stream\n",
        td.source_yaml()
    );
    td.clear_requests();
    let out = td.export(&spec, &[]);
    out.expect_code(2);
    assert_eq!(out.status["error"]["class"], "TargetNotWritable");
    assert!(
        out.stderr
            .contains("transfer: stream needs the target account's key")
            && out.stderr.contains("set result_settings.api_key")
            && out.stderr.contains("transfer: auto"),
        "{}",
        out.stderr
    );
    assert!(
        td.requests_to("GET", "/v3/job/result/").is_empty(),
        "no data moved"
    );
    assert_eq!(td.rows(2, "dstdb", "events_copy"), None);
}

#[test]
fn a_connection_defined_nowhere_exits_2_naming_it() {
    let (td, job) = with_events_job();
    let spec = format!(
        "job_id: '{job}'\n{}result_connection: nowhere\nresult_settings: {{database: dstdb, table: events_copy}}\n",
        td.source_yaml()
    );
    let out = td.export(&spec, &[]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("result_connection 'nowhere': not found"),
        "{}",
        out.stderr
    );
    assert_eq!(out.status["error"]["class"], "ConnectionNotFound");
}
