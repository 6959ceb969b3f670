//! Server-side td:// output: `result_export`, saved results and connection lookup. Source jobs are
//! made through the library (`Inspect::finished_job`: a finished job plus a real gzip msgpack
//! result file), since the query runner is not part of this group.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{assert_error, Server};

/// The start time given to every source job, so rows timed by it are predictable.
const JOB_START: i64 = 1_600_000_000;

/// A successful job of account `n` whose result has `columns` (`[name, presto_type]`) and `rows`
/// (arrays), stored as TD stores results, started at [`JOB_START`].
fn source_job(s: &Server, n: usize, columns: &[(&str, &str)], rows: &[Value]) -> i64 {
    let account_id = s.td.accounts()[n].id;
    s.td.inspect()
        .finished_job(account_id, "sample_datasets", columns, rows, JOB_START)
        .unwrap()
}

fn code_count_job(s: &Server, n: usize) -> i64 {
    source_job(
        s,
        n,
        &[("code", "bigint"), ("cnt", "bigint")],
        &[json!([200, 4981]), json!([404, 17]), json!([500, 2])],
    )
}

/// A job's row as the export leaves it.
#[derive(Debug)]
struct JobRow {
    status: String,
    stderr: String,
    num_records: Option<i64>,
    result_url: String,
    job_type: String,
    database: String,
    linked_result_export_job_id: Option<i64>,
    result_export_target_job_id: Option<i64>,
}

fn job_row(s: &Server, id: i64) -> JobRow {
    let job = s.td.inspect().job(id).unwrap();
    JobRow {
        status: job.status.as_str().to_string(),
        stderr: job.stderr,
        num_records: job.num_records,
        result_url: job.result_url,
        job_type: job.job_type,
        database: job.database,
        linked_result_export_job_id: job.linked_result_export_job_id,
        result_export_target_job_id: job.result_export_target_job_id,
    }
}

fn job_count(s: &Server) -> i64 {
    s.td.inspect().job_count().unwrap()
}

/// Waits until a job has finished (success or error) and returns its row.
async fn finished(s: &Server, id: i64) -> JobRow {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let row = job_row(s, id);
        if row.status == "success" || row.status == "error" {
            return row;
        }
        assert!(Instant::now() < deadline, "job {id} did not finish: {row:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The stored rows of account `n`'s table, `(time, record)` in insertion order.
fn table_rows(s: &Server, n: usize, db: &str, table: &str) -> Vec<(i64, Value)> {
    let account = s.td.accounts()[n].id;
    s.td.inspect()
        .rows(account, db, table)
        .unwrap()
        .unwrap_or_default()
        .into_iter()
        .map(|row| (row.time, Value::Object(row.record)))
        .collect()
}

/// The table's schema JSON, or None when the table does not exist.
fn table_schema(s: &Server, n: usize, db: &str, table: &str) -> Option<Value> {
    let account = s.td.accounts()[n].id;
    s.td.inspect().schema(account, db, table).unwrap()
}

/// No key of any account may appear in what the server says.
fn assert_no_keys(s: &Server, what: &str) {
    for n in 0..2 {
        for key in [s.master(n), s.write_only(n)] {
            assert!(!what.contains(&key), "an API key leaked into: {what}");
            let secret = key.split_once('/').unwrap().1;
            assert!(!what.contains(secret), "an API key leaked into: {what}");
        }
    }
}

async fn create_database(s: &Server, n: usize, db: &str) {
    let (status, body) = s
        .post(&s.master(n), &format!("/v3/database/create/{db}"), &[])
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Starts an export as account 0's master and returns the export job id.
async fn export(s: &Server, job: i64, form: &[(&str, &str)]) -> i64 {
    let (status, body) = s
        .post(&s.master(0), &format!("/v3/job/result_export/{job}"), form)
        .await;
    // 201 (td-client-ruby#120, citing TD's controller), with the new job (TD's API description).
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["type"], "result_export", "{body}");
    assert_no_keys(s, &body.to_string());
    body["job_id"]
        .as_str()
        .expect("job_id is a string")
        .parse()
        .unwrap()
}

async fn export_ok(s: &Server, job: i64, form: &[(&str, &str)]) -> JobRow {
    let id = export(s, job, form).await;
    let row = finished(s, id).await;
    assert_eq!(row.status, "success", "{row:?}");
    row
}

#[tokio::test]
async fn append_by_key_writes_into_the_other_account_and_types_the_columns() {
    let s = Server::start().await;
    create_database(&s, 1, "target_db").await;
    let job = source_job(
        &s,
        0,
        &[
            ("code", "bigint"),
            ("name", "varchar"),
            ("ok", "boolean"),
            ("ratio", "double"),
            ("n", "integer"),
        ],
        &[
            json!([200, "a", true, 0.5, 1]),
            json!([404, null, false, 1.25, 2]),
        ],
    );
    let url = format!("td://{}@api.treasuredata.com/target_db/out_t", s.master(1));
    let export_id = export(&s, job, &[("result", &url)]).await;
    let row = finished(&s, export_id).await;
    assert_eq!(row.status, "success", "{row:?}");
    assert_eq!(row.num_records, Some(2));
    assert_eq!(
        (row.job_type.as_str(), row.database.as_str()),
        ("result_export", "target_db")
    );
    assert_eq!(
        row.result_url,
        "td://***@api.treasuredata.com/target_db/out_t?mode=append"
    );
    assert_eq!(row.result_export_target_job_id, Some(job));
    assert_eq!(job_row(&s, job).linked_result_export_job_id, Some(export_id));

    let rows = table_rows(&s, 1, "target_db", "out_t");
    assert_eq!(
        rows,
        [
            (
                JOB_START,
                json!({"code": 200, "name": "a", "ok": 1, "ratio": 0.5, "n": 1, "time": JOB_START})
            ),
            (
                JOB_START,
                json!({"code": 404, "name": null, "ok": 0, "ratio": 1.25, "n": 2, "time": JOB_START})
            ),
        ]
    );
    assert_eq!(
        table_schema(&s, 1, "target_db", "out_t").unwrap(),
        json!([
            ["code", "long"],
            ["name", "string"],
            ["ok", "long"],
            ["ratio", "double"],
            ["n", "long"]
        ])
    );
    assert_eq!(
        table_schema(&s, 0, "target_db", "out_t"),
        None,
        "the caller's account is untouched"
    );

    // append adds: a second export doubles the rows
    export_ok(&s, job, &[("result", &url)]).await;
    assert_eq!(table_rows(&s, 1, "target_db", "out_t").len(), 4);
}

#[tokio::test]
async fn empty_key_and_host_write_into_the_callers_own_account() {
    let s = Server::start().await;
    create_database(&s, 0, "mydb").await;
    let job = code_count_job(&s, 0);
    let row = export_ok(&s, job, &[("result", "td://@/mydb/codes")]).await;
    assert_eq!(row.result_url, "td://@/mydb/codes?mode=append");
    let codes: Vec<Value> = table_rows(&s, 0, "mydb", "codes")
        .into_iter()
        .map(|(_, r)| r["code"].clone())
        .collect();
    assert_eq!(codes, [json!(200), json!(404), json!(500)]);
}

#[tokio::test]
async fn an_apikey_parameter_picks_the_target_account_as_a_key_before_the_at_does() {
    let s = Server::start().await;
    create_database(&s, 1, "target_db").await;
    let job = code_count_job(&s, 0);
    let param = |key: String| key.replace('/', "%2F");
    let url = format!("td://@/target_db/by_param?apikey={}", param(s.master(1)));
    let row = export_ok(&s, job, &[("result", &url)]).await;
    assert_eq!(row.result_url, "td://***@/target_db/by_param?mode=append");
    assert_eq!(table_rows(&s, 1, "target_db", "by_param").len(), 3);
    assert_eq!(
        table_schema(&s, 0, "target_db", "by_param"),
        None,
        "the caller's account is untouched"
    );

    // a write-only key given as apikey= can only append, as before the @
    let replace = format!(
        "td://@/target_db/by_param?mode=replace&apikey={}",
        param(s.write_only(1))
    );
    let row = finished(&s, export(&s, job, &[("result", &replace)]).await).await;
    assert_eq!(row.status, "error");
    assert!(
        row.stderr
            .contains("replace needs the target account's master API key"),
        "{row:?}"
    );
    assert_eq!(table_rows(&s, 1, "target_db", "by_param").len(), 3);

    // an unknown key is refused, and a key given both ways is ambiguous
    for (url, code, needle) in [
        (
            format!("td://@/target_db/other_t?apikey={}x", param(s.master(1))),
            401,
            "invalid API key in result URL",
        ),
        (
            format!(
                "td://{}@/target_db/other_t?apikey={}",
                s.master(1),
                param(s.master(1))
            ),
            422,
            "given twice",
        ),
    ] {
        let (status, body) = s
            .post(
                &s.master(0),
                &format!("/v3/job/result_export/{job}"),
                &[("result", &url)],
            )
            .await;
        assert_error(status, &body, code, needle);
        assert_no_keys(&s, &body.to_string());
    }
}

#[tokio::test]
async fn replace_twice_leaves_exactly_the_rows_and_columns_of_the_last_result() {
    let s = Server::start().await;
    create_database(&s, 1, "target_db").await;
    let url = format!("td://{}@host/target_db/snapshot?mode=replace", s.master(1));
    let first = code_count_job(&s, 0);
    export_ok(&s, first, &[("result", &url)]).await;
    export_ok(&s, first, &[("result", &url)]).await;
    assert_eq!(
        table_rows(&s, 1, "target_db", "snapshot").len(),
        3,
        "replace is not additive"
    );

    let second = source_job(
        &s,
        0,
        &[("host", "varchar"), ("hits", "bigint")],
        &[json!(["a.example", 7]), json!(["b.example", 9])],
    );
    let row = export_ok(&s, second, &[("result", &url)]).await;
    assert_eq!(row.num_records, Some(2));
    let records: Vec<Value> = table_rows(&s, 1, "target_db", "snapshot")
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    assert_eq!(
        records,
        [
            json!({"host": "a.example", "hits": 7, "time": JOB_START}),
            json!({"host": "b.example", "hits": 9, "time": JOB_START}),
        ]
    );
    assert_eq!(
        table_schema(&s, 1, "target_db", "snapshot").unwrap(),
        json!([["host", "string"], ["hits", "long"]]),
        "replace sets the schema to the result's columns"
    );
}

#[tokio::test]
async fn time_comes_from_the_time_column_else_the_setting_else_the_job_start() {
    let s = Server::start().await;
    create_database(&s, 0, "mydb").await;
    let timed = source_job(
        &s,
        0,
        &[("time", "bigint"), ("x", "bigint")],
        &[json!([1_700_000_001, 1]), json!([1_700_000_002, 2])],
    );
    export_ok(&s, timed, &[("result", "td://@/mydb/by_column?time=5")]).await;
    let times: Vec<i64> = table_rows(&s, 0, "mydb", "by_column")
        .iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(
        times,
        [1_700_000_001, 1_700_000_002],
        "an integer time column wins over the setting"
    );
    assert_eq!(
        table_schema(&s, 0, "mydb", "by_column").unwrap(),
        json!([["x", "long"]]),
        "time is never a schema column"
    );

    let untimed = code_count_job(&s, 0);
    export_ok(
        &s,
        untimed,
        &[("result", "td://@/mydb/by_setting?time=1700000000")],
    )
    .await;
    export_ok(
        &s,
        untimed,
        &[(
            "result",
            "td://@/mydb/by_setting?time=2023-11-14+22%3A13%3A20+UTC",
        )],
    )
    .await;
    export_ok(&s, untimed, &[("result", "td://@/mydb/by_start")]).await;
    for (table, expected) in [("by_setting", 1_700_000_000), ("by_start", JOB_START)] {
        let rows = table_rows(&s, 0, "mydb", table);
        assert!(!rows.is_empty());
        for (time, record) in rows {
            assert_eq!(
                (time, record["time"].as_i64()),
                (expected, Some(expected)),
                "{table}"
            );
        }
    }

    // A `time` column that is not an integer fails the export, as the operator's stream engine
    // refuses it (one rule: td-model `time::row_time`), and nothing is written.
    let text_time = source_job(
        &s,
        0,
        &[("time", "varchar"), ("x", "bigint")],
        &[json!(["noon", 1])],
    );
    let id = export(&s, text_time, &[("result", "td://@/mydb/text_time?time=42")]).await;
    let row = finished(&s, id).await;
    assert_eq!(row.status, "error", "{row:?}");
    assert!(
        row.stderr.contains("TD's `time` must be integer unix seconds"),
        "{}",
        row.stderr
    );
    assert_eq!(table_schema(&s, 0, "mydb", "text_time"), None, "nothing written");
}

#[tokio::test]
async fn a_write_only_key_can_append_but_replace_fails_in_the_export_job() {
    let s = Server::start().await;
    create_database(&s, 1, "target_db").await;
    let job = code_count_job(&s, 0);
    let append = format!("td://{}@host/target_db/out_t", s.write_only(1));
    export_ok(&s, job, &[("result", &append)]).await;
    assert_eq!(table_rows(&s, 1, "target_db", "out_t").len(), 3);

    let replace = format!("{append}?mode=replace");
    let id = export(&s, job, &[("result", &replace)]).await;
    let row = finished(&s, id).await;
    assert_eq!(row.status, "error");
    assert!(
        row.stderr
            .contains("replace needs the target account's master API key"),
        "{}",
        row.stderr
    );
    assert_no_keys(&s, &row.stderr);
    assert_eq!(
        table_rows(&s, 1, "target_db", "out_t").len(),
        3,
        "nothing was replaced"
    );
}

#[tokio::test]
async fn result_export_through_a_saved_connection_with_settings() {
    let s = Server::start().await;
    let key = s.master(0);
    create_database(&s, 1, "target_db").await;
    create_database(&s, 1, "other_db").await;
    let saved = format!("td://{}@api.treasuredata.com/target_db", s.master(1));
    let (status, body) = s.post(&key, "/v3/result/create/acct2", &[("url", &saved)]).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s.get(&key, "/v3/connections/lookup?name=acct2").await;
    assert_eq!(status, 200, "{body}");
    let connection = body["id"].as_i64().expect("id is a number").to_string();

    let job = code_count_job(&s, 0);
    let settings =
        r#"{"user_database_name":"target_db","user_table_name":"from_conn","mode":"replace","time":1234}"#;
    let row = export_ok(
        &s,
        job,
        &[
            ("result_connection_id", &connection),
            ("result_connection_settings", settings),
        ],
    )
    .await;
    assert_eq!(
        row.result_url,
        "td://***@api.treasuredata.com/target_db/from_conn?mode=replace&time=1234"
    );
    assert_eq!(row.result_export_target_job_id, Some(job));
    let rows = table_rows(&s, 1, "target_db", "from_conn");
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|(t, _)| *t == 1234));

    // the short aliases, and the saved database overridden
    let settings = r#"{"database":"other_db","table":"aliased"}"#;
    export_ok(
        &s,
        job,
        &[
            ("result_connection_id", &connection),
            ("result_connection_settings", settings),
        ],
    )
    .await;
    assert_eq!(table_rows(&s, 1, "other_db", "aliased").len(), 3);

    // `result=NAME:TABLE` uses the saved destination's database
    export_ok(&s, job, &[("result", "acct2:by_name")]).await;
    assert_eq!(table_rows(&s, 1, "target_db", "by_name").len(), 3);

    // settings that name no table, against a saved URL without one
    let (status, body) = s
        .post(
            &key,
            &format!("/v3/job/result_export/{job}"),
            &[
                ("result_connection_id", &connection),
                ("result_connection_settings", "{}"),
            ],
        )
        .await;
    assert_error(status, &body, 422, "names no table");
    assert_no_keys(&s, &body.to_string());
}

#[tokio::test]
async fn saved_results_crud_and_connection_lookup() {
    let s = Server::start().await;
    let key = s.master(0);
    let url = format!("td://{}@api.treasuredata.com/target_db/t_out", s.master(1));
    let (status, body) = s.post(&key, "/v3/result/create/my_dest", &[("url", &url)]).await;
    assert_eq!(
        (status.as_u16(), &body["result"]),
        (200, &json!("my_dest")),
        "{body}"
    );
    let (status, body) = s.post(&key, "/v3/result/create/my_dest", &[("url", &url)]).await;
    assert_error(status, &body, 409, "already exists");
    let (status, body) = s.post(&key, "/v3/result/create/no_url", &[]).await;
    assert_error(status, &body, 422, "'url'");
    let (status, body) = s
        .post(
            &key,
            "/v3/result/create/bad_url",
            &[("url", &format!("td://{}@h/Bad/t", s.master(1)))],
        )
        .await;
    assert_error(status, &body, 422, "`Bad` is not a valid TD name for a database");
    assert_no_keys(&s, &body.to_string());
    let (status, body) = s
        .post(&key, "/v3/result/create/bad%20name", &[("url", &url)])
        .await;
    assert_error(status, &body, 422, "invalid result name 'bad name'");

    let (status, body) = s.get(&key, "/v3/result/list").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["results"],
        // `{name, url, organization}`: no id (TD's API description, getConnections).
        json!([{"name": "my_dest",
                "url": "td://***@api.treasuredata.com/target_db/t_out", "organization": null}])
    );
    assert_no_keys(&s, &body.to_string());
    let (_, other) = s.get(&s.master(1), "/v3/result/list").await;
    assert_eq!(other["results"], json!([]), "saved results belong to one account");

    let (status, body) = s.get(&key, "/v3/connections/lookup?name=my_dest").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["id"].is_i64(), "the id is a number: {body}");
    // The listing shows no id (TD's); the id is the connection's, used by result_connection_id
    // (result_export_through_a_saved_connection_with_settings).
    let (status, body) = s.get(&key, "/v3/connections/lookup?name=nope").await;
    assert_error(status, &body, 404, "'nope'");
    let (status, body) = s.get(&key, "/v3/connections/lookup").await;
    assert_error(status, &body, 422, "'name'");

    let (status, body) = s
        .post(&s.write_only(0), "/v3/result/create/wo", &[("url", &url)])
        .await;
    assert_error(status, &body, 403, "write-only");
    let (status, body) = s.get(&s.write_only(0), "/v3/result/list").await;
    assert_error(status, &body, 403, "write-only");

    let (status, _) = s.post(&key, "/v3/result/delete/my_dest", &[]).await;
    assert_eq!(status, 200);
    let (status, body) = s.post(&key, "/v3/result/delete/my_dest", &[]).await;
    assert_error(status, &body, 404, "'my_dest'");
    let (status, body) = s.get(&key, "/v3/connections/lookup?name=my_dest").await;
    assert_error(status, &body, 404, "my_dest");
    let (_, body) = s.get(&key, "/v3/result/list").await;
    assert_eq!(body["results"], json!([]));
}

/// A refused export: source job id, form, expected status, a needle of the message.
type Refusal = (String, Vec<(&'static str, String)>, u16, &'static str);

/// A good target, for the refusals that are about something else.
const OK_URL: &str = "td://@/mydb/out_t";

/// Exports that must be refused: of a job that does not exist, of another account's job, of a
/// job without a result, and to destinations that are malformed or unknown.
fn refusals(s: &Server, job: i64, others: i64, running: i64) -> Vec<Refusal> {
    let ok_url = OK_URL;
    vec![
        (
            "999999".into(),
            vec![("result", ok_url.into())],
            404,
            "job 999999 does not exist",
        ),
        (
            others.to_string(),
            vec![("result", ok_url.into())],
            404,
            "does not exist",
        ),
        (
            running.to_string(),
            vec![("result", ok_url.into())],
            422,
            "has no result",
        ),
        (job.to_string(), vec![], 422, "'result'"),
        (
            job.to_string(),
            vec![("result", format!("td://{}@h/mydb/out_t/extra", s.master(1)))],
            422,
            "found 3 path part(s)",
        ),
        (
            job.to_string(),
            vec![("result", format!("td://{}@h/mydb/x", s.master(1)))],
            422,
            "`x` is not a valid TD name for a table",
        ),
        (
            job.to_string(),
            vec![("result", "td://@/mydb/out_t?mode=merge".into())],
            422,
            "mode `merge`",
        ),
        (
            job.to_string(),
            vec![("result", "mysql://u:p@h/db/t".into())],
            422,
            "scheme `mysql`",
        ),
        (
            job.to_string(),
            vec![("result", format!("td://{}x@h/mydb/out_t", s.master(1)))],
            401,
            "invalid API key in result URL",
        ),
        (
            job.to_string(),
            vec![("result", format!("td:/{}@h/mydb/out_t", s.master(1)))],
            422,
            "invalid result",
        ),
        (
            job.to_string(),
            vec![("result_connection_id", "4242".into())],
            404,
            "connection 4242",
        ),
        (
            job.to_string(),
            vec![("result", "nosuch:tbl".into())],
            404,
            "saved result 'nosuch'",
        ),
    ]
}

#[tokio::test]
async fn bad_result_exports_are_refused_and_start_no_job() {
    let s = Server::start().await;
    let key = s.master(0);
    create_database(&s, 0, "mydb").await;
    let job = code_count_job(&s, 0);
    let others = code_count_job(&s, 1);
    let running = s.td.inspect().queued_job(s.td.accounts()[0].id, "mydb").unwrap();
    let jobs_before = job_count(&s);
    let ok_url = OK_URL;
    let cases = refusals(&s, job, others, running);
    for (id, form, expected, needle) in cases {
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, body) = s.post(&key, &format!("/v3/job/result_export/{id}"), &form).await;
        assert_error(status, &body, expected, needle);
        assert_no_keys(&s, &body.to_string());
    }
    let (status, body) = s
        .post(
            &s.write_only(0),
            &format!("/v3/job/result_export/{job}"),
            &[("result", ok_url)],
        )
        .await;
    assert_error(status, &body, 403, "write-only");
    assert_eq!(job_count(&s), jobs_before, "no export job was recorded");

    // a missing target database fails the export job, with a clear reason
    let id = export(
        &s,
        job,
        &[("result", &format!("td://{}@h/nodb/out_t", s.master(1)))],
    )
    .await;
    let row = finished(&s, id).await;
    assert_eq!(row.status, "error");
    assert!(
        row.stderr.contains("database 'nodb' does not exist"),
        "{}",
        row.stderr
    );
    assert_no_keys(&s, &row.stderr);
    assert_eq!(table_schema(&s, 1, "nodb", "out_t"), None);
}

#[tokio::test]
async fn readers_see_the_old_rows_or_the_new_rows_during_a_replace() {
    let s = Server::start().await;
    create_database(&s, 0, "mydb").await;
    let old = code_count_job(&s, 0);
    export_ok(&s, old, &[("result", "td://@/mydb/snap")]).await;
    let big: Vec<Value> = (0..30_000).map(|i| json!([i, format!("row {i}")])).collect();
    let new = source_job(&s, 0, &[("id", "bigint"), ("label", "varchar")], &big);

    let id = export(&s, new, &[("result", "td://@/mydb/snap?mode=replace")]).await;
    let mut seen = std::collections::BTreeSet::new();
    loop {
        let done = job_row(&s, id).status != "running" && job_row(&s, id).status != "queued";
        seen.insert(table_rows(&s, 0, "mydb", "snap").len());
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(finished(&s, id).await.status, "success");
    assert!(
        seen.iter().all(|n| *n == 3 || *n == 30_000),
        "a reader saw a mix: {seen:?}"
    );
    assert_eq!(table_rows(&s, 0, "mydb", "snap").len(), 30_000);
}

/// A connection made in TD's console: `lookup` finds it, `result/list` does not show it, and its
/// key (not a key in the settings) picks the account the rows go to.
#[tokio::test]
async fn a_console_connection_is_looked_up_not_listed_and_writes_into_its_own_account() {
    let s = Server::start().await;
    let key = s.master(0);
    let account = s.td.accounts()[0].id;
    create_database(&s, 1, "target_db").await;
    create_database(&s, 0, "target_db").await;
    let url = format!("td://{}@api.treasuredata.com", s.master(1));
    let id =
        s.td.inspect()
            .create_connection(account, "console_td", &url)
            .unwrap();

    let (status, body) = s.get(&key, "/v3/connections/lookup?name=console_td").await;
    assert_eq!((status.as_u16(), &body), (200, &json!({ "id": id })));
    let (status, body) = s.get(&key, "/v3/result/list").await;
    assert_eq!((status.as_u16(), &body), (200, &json!({ "results": [] })));
    let (status, body) = s.post(&key, "/v3/result/delete/console_td", &[]).await;
    assert_error(status, &body, 404, "console_td");
    let (status, body) = s
        .post(
            &key,
            "/v3/result/create/console_td",
            &[("url", "td://@/target_db")],
        )
        .await;
    assert_error(status, &body, 409, "already exists");

    let job = code_count_job(&s, 0);
    let settings = json!({
        "user_database_name": "target_db",
        "user_table_name": "from_console",
        "mode": "append",
        "api_key": s.master(0),
        "api_hostname": "api.treasuredata.com",
        "unknown_setting": 1,
    })
    .to_string();
    let row = export_ok(
        &s,
        job,
        &[
            ("result_connection_id", &id.to_string()),
            ("result_connection_settings", &settings),
        ],
    )
    .await;
    assert_no_keys(&s, &row.result_url);
    assert_eq!(table_rows(&s, 1, "target_db", "from_console").len(), 3);
    assert_eq!(
        table_schema(&s, 0, "target_db", "from_console"),
        None,
        "a key in the settings does not redirect the rows"
    );
}

/// Database `tc_db` of account 0 and a saved result `tc` onto it; returns the connection id.
async fn time_column_connection(s: &Server) -> String {
    create_database(s, 0, "tc_db").await;
    let (status, body) = s
        .post(&s.master(0), "/v3/result/create/tc", &[("url", "td://@/tc_db")])
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = s.get(&s.master(0), "/v3/connections/lookup?name=tc").await;
    body["id"].to_string()
}

#[tokio::test]
async fn time_column_times_each_row_from_seconds_or_a_timestamp() {
    let s = Server::start().await;
    create_database(&s, 0, "tc_db").await;
    let saved = "td://@/tc_db";
    let (status, body) = s
        .post(&s.master(0), "/v3/result/create/tc", &[("url", saved)])
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = s.get(&s.master(0), "/v3/connections/lookup?name=tc").await;
    let connection = body["id"].to_string();
    let job = source_job(
        &s,
        0,
        &[("id", "bigint"), ("ts", "varchar"), ("epoch", "bigint")],
        &[
            json!([1, "2024-01-31 00:00:00", 1_700_000_000]),
            json!([2, "2024-01-31T09:00:01+09:00", 1_700_000_001]),
            json!([3, "1706659202", 1_700_000_002]),
        ],
    );
    let export_with = |table: &'static str, column: &'static str| {
        let settings = json!({"user_table_name": table, "time_column": column}).to_string();
        let connection = connection.clone();
        let s = &s;
        async move {
            export_ok(
                s,
                job,
                &[
                    ("result_connection_id", &connection),
                    ("result_connection_settings", &settings),
                ],
            )
            .await
        }
    };
    export_with("by_ts", "ts").await;
    let times: Vec<i64> = table_rows(&s, 0, "tc_db", "by_ts").iter().map(|r| r.0).collect();
    assert_eq!(times, [1_706_659_200, 1_706_659_201, 1_706_659_202]);
    let rows = table_rows(&s, 0, "tc_db", "by_ts");
    assert_eq!(
        rows[0].1["ts"], "2024-01-31 00:00:00",
        "the column itself is kept"
    );
    assert_eq!(rows[0].1["time"], 1_706_659_200);
    export_with("by_epoch", "epoch").await;
    let times: Vec<i64> = table_rows(&s, 0, "tc_db", "by_epoch")
        .iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(times, [1_700_000_000, 1_700_000_001, 1_700_000_002]);
}

#[tokio::test]
async fn a_time_column_value_that_is_no_time_fails_the_export_and_writes_nothing() {
    let s = Server::start().await;
    let connection = time_column_connection(&s).await;
    let job = source_job(
        &s,
        0,
        &[("id", "bigint"), ("ts", "varchar")],
        &[
            json!([1, "2024-01-31"]),
            json!([2, "next tuesday"]),
            json!([3, "2024-02-01"]),
        ],
    );
    for (table, column, needle) in [
        ("bad_t", "ts", "row 2 of job"),
        ("bad_t", "ts", "\"next tuesday\""),
        (
            "missing_t",
            "nope",
            "time_column `nope` is not a column of the result (id, ts)",
        ),
    ] {
        let settings = json!({"user_table_name": table, "time_column": column}).to_string();
        let id = export(
            &s,
            job,
            &[
                ("result_connection_id", &connection),
                ("result_connection_settings", &settings),
            ],
        )
        .await;
        let row = finished(&s, id).await;
        assert_eq!(row.status, "error", "{row:?}");
        assert!(row.stderr.contains(needle), "{needle:?} in {}", row.stderr);
        assert_eq!(
            table_schema(&s, 0, "tc_db", table),
            None,
            "nothing of it is visible"
        );
    }
}

/// `domain_key` on `result_export` (listed on the call in TD's API description) is honoured as on
/// `job/issue`: a repeat answers 409 naming the first export job and starts no second export.
#[tokio::test]
async fn a_result_export_repeated_with_its_domain_key_is_409_naming_the_first_export() {
    let s = Server::start().await;
    create_database(&s, 1, "target_db").await;
    let job = code_count_job(&s, 0);
    let url = format!("td://{}@api.treasuredata.com/target_db/once", s.master(1));
    let form = [("result", url.as_str()), ("domain_key", "export-once")];
    let first = export_ok(&s, job, &form).await;
    assert_eq!(first.status, "success");
    let (status, body) = s
        .post(&s.master(0), &format!("/v3/job/result_export/{job}"), &form)
        .await;
    assert_error(
        status,
        &body,
        409,
        "domain_key 'export-once' was already used by job",
    );
    let first_id = job_row(&s, job).linked_result_export_job_id.unwrap();
    assert_eq!(
        body["details"]["conflicts_with"],
        first_id.to_string().as_str(),
        "{body}"
    );
    assert_eq!(table_rows(&s, 1, "target_db", "once").len(), 3, "written once");
    // The source job shows its export link as an integer (TD's API description, Job).
    let (_, shown) = s.get(&s.master(0), &format!("/v3/job/show/{job}")).await;
    assert_eq!(shown["linked_result_export_job_id"], json!(first_id), "{shown}");
}

/// `result/create` answers `{name, result}` (TD's API description, createConnection), and a
/// query job writes into a saved result through `result_connection_id` with
/// `result_connection_settings`, as digdag's `td>` sends them for `result_connection:`.
#[tokio::test]
async fn a_query_job_writes_through_a_connection_id_with_settings() {
    let s = Server::start().await;
    let key = s.master(0);
    create_database(&s, 1, "target_db").await;
    let saved = format!("td://{}@api.treasuredata.com/target_db/unused", s.master(1));
    let (status, body) = s.post(&key, "/v3/result/create/conn", &[("url", &saved)]).await;
    assert_eq!(
        (status.as_u16(), body),
        (200, json!({"name": "conn", "result": "conn"}))
    );
    let (_, found) = s.get(&key, "/v3/connections/lookup?name=conn").await;
    let connection = found["id"].as_i64().unwrap().to_string();
    let settings = r#"{"user_database_name":"target_db","user_table_name":"by_conn","mode":"replace"}"#;
    let (status, body) = s
        .post(
            &key,
            "/v3/job/issue/presto/sample_datasets",
            &[
                (
                    "query",
                    "SELECT code, COUNT(1) AS cnt FROM www_access GROUP BY code",
                ),
                ("result_connection_id", &connection),
                ("result_connection_settings", settings),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let id: i64 = body["job_id"].as_str().unwrap().parse().unwrap();
    let row = finished(&s, id).await;
    assert_eq!(row.status, "success", "{row:?}");
    assert!(!table_rows(&s, 1, "target_db", "by_conn").is_empty());
    assert!(table_rows(&s, 1, "target_db", "unused").is_empty());

    // An unknown connection is refused when the job is issued.
    let (status, body) = s
        .post(
            &key,
            "/v3/job/issue/presto/sample_datasets",
            &[("query", "SELECT 1"), ("result_connection_id", "999999")],
        )
        .await;
    assert_eq!(status, 404, "{body}");
}
