//! docs/td-api.md §6: query jobs on SQLite, their lifecycle, and results in every format.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};
use td_local::internals::www_access_rows;

use crate::{assert_error, Server};

/// A query that runs for minutes unless killed.
const SLOW_QUERY: &str =
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000000) SELECT COUNT(*) FROM c";

async fn issue(s: &Server, key: &str, db: &str, extra: &[(&str, &str)]) -> (StatusCode, Value) {
    s.post(key, &format!("/v3/job/issue/presto/{db}"), extra).await
}

/// Issues `query` on `db` with the master key of account 0 and returns the job id.
async fn issue_ok(s: &Server, db: &str, query: &str) -> String {
    let (status, body) = issue(s, &s.master(0), db, &[("query", query)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["job"], body["job_id"]);
    assert_eq!(body["database"], db);
    body["job_id"].as_str().expect("job_id is a string").to_string()
}

/// Polls the status until the job finishes; returns `show`.
async fn wait(s: &Server, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = s.get(&s.master(0), &format!("/v3/job/status/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if ["success", "error", "killed"].contains(&body["status"].as_str().unwrap()) {
            return s.get(&s.master(0), &format!("/v3/job/show/{id}")).await.1;
        }
        assert!(Instant::now() < deadline, "job {id} did not finish: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `query` on `db` with the master key of account 0: the job id and `show` once finished.
pub(crate) async fn run(s: &Server, db: &str, query: &str) -> (String, Value) {
    let id = issue_ok(s, db, query).await;
    let show = wait(s, &id).await;
    (id, show)
}

async fn get_raw(s: &Server, path: &str, range: Option<&str>) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut req = s
        .http
        .get(s.url(path))
        .header("Authorization", format!("TD1 {}", s.master(0)));
    if let Some(r) = range {
        req = req.header("Range", r);
    }
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, headers, resp.bytes().await.unwrap().to_vec())
}

fn msgpack_rows(bytes: &[u8]) -> Vec<Value> {
    let mut reader = bytes;
    let mut rows = Vec::new();
    while !reader.is_empty() {
        let value = rmpv::decode::read_value(&mut reader).expect("msgpack value");
        assert!(value.is_array(), "result rows are msgpack arrays: {value}");
        rows.push(td_local::internals::msgpack_to_json(value));
    }
    rows
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("gzip");
    out
}

/// A finished job's result rows (msgpack.gz), as JSON arrays.
pub(crate) async fn result_rows(s: &Server, id: &str) -> Vec<Value> {
    let (status, _, bytes) = get_raw(s, &format!("/v3/job/result/{id}?format=msgpack.gz"), None).await;
    assert_eq!(status, StatusCode::OK);
    msgpack_rows(&gunzip(&bytes))
}

/// A job's `hive_result_schema`, parsed.
pub(crate) fn schema(show: &Value) -> Value {
    serde_json::from_str(show["hive_result_schema"].as_str().expect("schema is JSON text")).unwrap()
}

#[tokio::test]
async fn group_by_count_on_the_sample_matches_the_generated_rows() {
    let s = Server::start().await;
    let (id, show) = run(
        &s,
        "sample_datasets",
        "SELECT code, COUNT(1) FROM www_access GROUP BY code ORDER BY code",
    )
    .await;
    assert_eq!(show["status"], "success", "{show}");
    assert_eq!(schema(&show), json!([["code", "bigint"], ["_col1", "bigint"]]));

    let mut expected: BTreeMap<i64, i64> = BTreeMap::new();
    for row in www_access_rows() {
        *expected.entry(row.record["code"].as_i64().unwrap()).or_default() += 1;
    }
    let expected: Vec<Value> = expected.into_iter().map(|(code, n)| json!([code, n])).collect();
    assert!(expected.len() >= 3, "the sample has several codes");
    assert_eq!(result_rows(&s, &id).await, expected);
    assert_eq!(show["num_records"], expected.len());
}

#[tokio::test]
async fn tables_of_another_database_are_read_by_qualified_name() {
    let s = Server::start().await;
    let (status, body) = s.post(&s.master(0), "/v3/database/create/analytics", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (id, show) = run(
        &s,
        "analytics",
        "SELECT COUNT(1) AS n, SUM(a.size) FROM sample_datasets.www_access a WHERE a.code = 404",
    )
    .await;
    assert_eq!(show["status"], "success", "{show}");
    assert_eq!(schema(&show), json!([["n", "bigint"], ["_col1", "bigint"]]));
    let rows: Vec<_> = www_access_rows()
        .into_iter()
        .filter(|r| r.record["code"] == 404)
        .collect();
    let size: i64 = rows.iter().map(|r| r.record["size"].as_i64().unwrap()).sum();
    assert_eq!(result_rows(&s, &id).await, vec![json!([rows.len(), size])]);

    // Unqualified names resolve in the job's own database only.
    let (_, show) = run(&s, "analytics", "SELECT COUNT(1) FROM www_access").await;
    assert_eq!(show["status"], "error");
    assert!(
        show["debug"]["stderr"]
            .as_str()
            .unwrap()
            .contains("no such table: www_access"),
        "{show}"
    );
}

#[tokio::test]
async fn select_star_returns_time_and_every_schema_column() {
    let s = Server::start().await;
    let (id, show) = run(
        &s,
        "sample_datasets",
        "SELECT * FROM www_access ORDER BY time LIMIT 3",
    )
    .await;
    assert_eq!(show["status"], "success", "{show}");
    let columns = [
        "time", "host", "path", "method", "referer", "code", "agent", "user", "size",
    ];
    let types = [
        "bigint", "varchar", "varchar", "varchar", "varchar", "bigint", "varchar", "varchar", "bigint",
    ];
    let expected_schema: Vec<Value> = columns.iter().zip(types).map(|(c, t)| json!([c, t])).collect();
    assert_eq!(schema(&show), Value::Array(expected_schema));
    let expected: Vec<Value> = www_access_rows()[..3]
        .iter()
        .map(|r| Value::Array(columns.iter().map(|c| r.record[*c].clone()).collect()))
        .collect();
    assert_eq!(result_rows(&s, &id).await, expected);
}

#[tokio::test]
async fn booleans_read_as_the_strings_true_and_false_as_td_stores_them() {
    let s = Server::start().await;
    crate::import::create_table(&s, "bool_db", "flags").await;
    let rows = [
        json!({"time": 1, "flag": true, "n": 1}),
        json!({"time": 2, "flag": false, "n": 2}),
        json!({"time": 3, "flag": null, "n": 3}),
    ];
    crate::import::import_rows(&s, &s.master(0), "bool_db", "flags", &rows).await;
    let (id, show) = run(
        &s,
        "bool_db",
        "SELECT flag, flag = 'true' AS is_true FROM flags ORDER BY n",
    )
    .await;
    assert_eq!(show["status"], "success", "{show}");
    assert_eq!(
        result_rows(&s, &id).await,
        vec![json!(["true", 1]), json!(["false", 0]), json!([null, null])]
    );
    assert_eq!(schema(&show)[0], json!(["flag", "varchar"]));
}

#[tokio::test]
async fn a_query_reads_every_segment_of_a_table_in_the_order_its_rows_were_written() {
    // Three imports are three segments; a query reads them as one table, a self-join reads it
    // through two cursors at once, and values of every kind come back as stored.
    let s = Server::start().await;
    crate::import::create_table(&s, "seg_db", "tbl").await;
    let key = s.master(0);
    let batches = [
        vec![
            json!({"time": 1, "s": "a", "f": 1.5}),
            json!({"time": 2, "s": "b\"q\\", "n": [1, 2]}),
        ],
        vec![json!({"time": 3, "s": "c", "m": {"k": "v"}})],
        vec![json!({"time": 4, "big": u64::MAX}), json!({"time": 5, "s": null})],
    ];
    for rows in &batches {
        crate::import::import_rows(&s, &key, "seg_db", "tbl", rows).await;
    }
    let (id, show) = run(&s, "seg_db", "SELECT time, s, f, n, m FROM tbl").await;
    assert_eq!(show["status"], "success", "{show}");
    assert_eq!(
        result_rows(&s, &id).await,
        vec![
            json!([1, "a", 1.5, null, null]),
            json!([2, "b\"q\\", null, [1, 2], null]),
            json!([3, "c", null, null, {"k": "v"}]),
            json!([4, null, null, null, null]),
            json!([5, null, null, null, null]),
        ]
    );
    let (id, show) = run(
        &s,
        "seg_db",
        "SELECT COUNT(*) FROM tbl a JOIN tbl b ON a.time <= b.time",
    )
    .await;
    assert_eq!(show["status"], "success", "{show}");
    assert_eq!(result_rows(&s, &id).await, vec![json!([15])]);
}

#[tokio::test]
async fn a_table_of_many_blocks_reads_whole_and_in_order_through_every_kind_of_scan() {
    // ~1.2 MB of records: tens of stored blocks, so scans go past the first block (which the
    // query's thread reads) into those read ahead on a thread of their own.
    let s = Server::start().await;
    crate::import::create_table(&s, "blk_db", "tbl").await;
    let key = s.master(0);
    let text = |t: i64| format!("{t:06}-{}", "x".repeat(90));
    let mut expected = Vec::new();
    for batch in 0..3i64 {
        let rows: Vec<Value> = (batch * 4000..(batch + 1) * 4000)
            .map(|t| json!({"time": t, "s": text(t), "n": t * 3}))
            .collect();
        expected.extend((batch * 4000..(batch + 1) * 4000).map(|t| json!([t, text(t), t * 3])));
        crate::import::import_rows(&s, &key, "blk_db", "tbl", &rows).await;
    }
    let (id, show) = run(&s, "blk_db", "SELECT time, s, n FROM tbl").await;
    assert_eq!(show["status"], "success", "{show}");
    assert_eq!(result_rows(&s, &id).await, expected);
    // A scan reading no record column (only `time`, or nothing).
    let (id, _) = run(&s, "blk_db", "SELECT COUNT(*), SUM(time), MAX(time) FROM tbl").await;
    assert_eq!(
        result_rows(&s, &id).await,
        vec![json!([12000, 71_994_000, 11999])]
    );
    // A record column read only by the WHERE clause.
    let (id, _) = run(&s, "blk_db", "SELECT COUNT(*) FROM tbl WHERE n % 2 = 0").await;
    assert_eq!(result_rows(&s, &id).await, vec![json!([6000])]);
    // A scan stopped part way, with blocks read ahead of it.
    let (id, _) = run(&s, "blk_db", "SELECT s, n FROM tbl LIMIT 1 OFFSET 9000").await;
    assert_eq!(result_rows(&s, &id).await, vec![json!([text(9000), 27000])]);
    // Two cursors at once, the inner one started over for each outer row.
    let (id, show) = run(
        &s,
        "blk_db",
        "SELECT COUNT(*), SUM(b.n) FROM (SELECT time FROM tbl WHERE time % 3000 = 0) a \
         JOIN tbl b ON b.time >= a.time AND b.time < a.time + 2",
    )
    .await;
    assert_eq!(show["status"], "success", "{show}");
    // a.time in {0, 3000, 6000, 9000}: b.time = a.time and a.time + 1, n = 3 * b.time.
    assert_eq!(result_rows(&s, &id).await, vec![json!([8, 3 * (2 * 18000 + 4)])]);
    // Text that is not UTF-8 (SQLite's text need not be) is written as msgpack's UTF-8 text.
    let (id, _) = run(&s, "blk_db", "SELECT CAST(x'ff41' AS VARCHAR), 'é'").await;
    assert_eq!(result_rows(&s, &id).await, vec![json!(["\u{fffd}A", "é"])]);
}

#[tokio::test]
async fn a_wide_table_reads_the_columns_a_query_names_past_the_63rd() {
    // SQLite's colUsed has a bit per column up to the 63rd, then one bit for all the rest.
    let s = Server::start().await;
    crate::import::create_table(&s, "wide_db", "wide").await;
    let rows: Vec<Value> = (0..50i64)
        .map(|t| {
            let mut record = serde_json::Map::new();
            record.insert("time".into(), json!(t));
            for c in 0..70 {
                record.insert(format!("c{c:02}"), json!(t * 100 + c));
            }
            Value::Object(record)
        })
        .collect();
    crate::import::import_rows(&s, &s.master(0), "wide_db", "wide", &rows).await;
    let (id, show) = run(&s, "wide_db", "SELECT c69, c03, c62 FROM wide WHERE c65 % 3 = 0").await;
    assert_eq!(show["status"], "success", "{show}");
    let expected: Vec<Value> = (0..50i64)
        .filter(|t| (t * 100 + 65) % 3 == 0)
        .map(|t| json!([t * 100 + 69, t * 100 + 3, t * 100 + 62]))
        .collect();
    assert_eq!(result_rows(&s, &id).await, expected);
}

#[tokio::test]
async fn td_time_range_filters_and_td_time_format_formats_in_a_zone() {
    let s = Server::start().await;
    let (start, end) = ("2014-10-03 09:00:00", "2014-10-03 10:00:00");
    let (id, show) = run(
        &s,
        "sample_datasets",
        &format!(
            "SELECT TD_TIME_FORMAT(time, 'yyyy-MM-dd HH:mm:ss zzz') AS utc, \
             TD_TIME_FORMAT(time, 'yyyy-MM-dd HH:mm:ss', 'JST') AS jst, time \
             FROM www_access WHERE TD_TIME_RANGE(time, '{start}', '{end}') ORDER BY time"
        ),
    )
    .await;
    assert_eq!(show["status"], "success", "{show}");
    let parse = |t: &str| {
        chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S")
            .unwrap()
            .and_utc()
            .timestamp()
    };
    let expected: Vec<Value> = www_access_rows()
        .iter()
        .filter(|r| parse(start) <= r.time && r.time < parse(end))
        .map(|r| {
            let t = chrono::DateTime::from_timestamp(r.time, 0).unwrap();
            let jst = t + chrono::Duration::hours(9);
            json!([
                t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                jst.format("%Y-%m-%d %H:%M:%S").to_string(),
                r.time
            ])
        })
        .collect();
    assert_eq!(expected.len(), 300, "one hour of rows 12 s apart");
    assert_eq!(result_rows(&s, &id).await, expected);

    // Open bounds and integer seconds.
    let last = www_access_rows().last().unwrap().time;
    let (id, _) = run(
        &s,
        "sample_datasets",
        &format!("SELECT COUNT(1) FROM www_access WHERE TD_TIME_RANGE(time, {last}, NULL)"),
    )
    .await;
    assert_eq!(result_rows(&s, &id).await, vec![json!([1])]);
}

#[tokio::test]
async fn a_failing_query_ends_in_error_with_sqlite_message_and_no_result() {
    let s = Server::start().await;
    let (id, show) = run(&s, "sample_datasets", "SELECT nosuch FROM www_access").await;
    assert_eq!(show["status"], "error");
    assert!(
        show["debug"]["stderr"]
            .as_str()
            .unwrap()
            .contains("no such column: nosuch"),
        "{show}"
    );
    assert!(show["end_at"].is_string());
    let (status, body) = s
        .get(&s.master(0), &format!("/v3/job/result/{id}?format=json"))
        .await;
    assert_error(status, &body, 404, "status is 'error'");

    let (_, show) = run(
        &s,
        "sample_datasets",
        "SELECT TD_TIME_FORMAT(time, 'yyyy', 'Mars/Olympus') FROM www_access",
    )
    .await;
    assert_eq!(show["status"], "error");
    assert!(
        show["debug"]["stderr"]
            .as_str()
            .unwrap()
            .contains("unsupported time zone"),
        "{show}"
    );
}

#[tokio::test]
async fn queries_cannot_reach_td_local_internals_or_write() {
    let s = Server::start().await;
    let cases = [
        ("SELECT * FROM jobs", "no such table: jobs"),
        ("SELECT COUNT(*) FROM td_store.blocks", "no such table: blocks"),
        ("DELETE FROM www_access", "cannot modify www_access"),
        ("CREATE TABLE copy AS SELECT * FROM www_access", "not authorized"),
        ("ATTACH DATABASE '/tmp/x.db' AS x", "not authorized"),
    ];
    for (query, needle) in cases {
        let (_, show) = run(&s, "sample_datasets", query).await;
        assert_eq!(show["status"], "error", "{query}: {show}");
        let stderr = show["debug"]["stderr"].as_str().unwrap();
        assert!(
            stderr.contains(needle),
            "{query}: stderr {stderr:?} should contain {needle:?}"
        );
    }
    // Jobs belong to their account.
    let (status, body) = issue(&s, &s.master(1), "sample_datasets", &[("query", "SELECT 1")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = body["job_id"].as_str().unwrap();
    let (status, body) = s.get(&s.master(0), &format!("/v3/job/show/{id}")).await;
    assert_error(status, &body, 404, "does not exist");
    let (status, _) = s.get(&s.master(1), &format!("/v3/job/show/{id}")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_repeated_domain_key_conflicts_with_the_first_job() {
    let s = Server::start().await;
    let form = [("query", "SELECT 1"), ("domain_key", "daily-2024-01-01")];
    let (status, first) = issue(&s, &s.master(0), "sample_datasets", &form).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, body) = issue(&s, &s.master(0), "sample_datasets", &form).await;
    assert_error(status, &body, 409, "daily-2024-01-01");
    assert_eq!(body["details"]["conflicts_with"], first["job_id"]);

    let (status, by_key) = s
        .get(&s.master(0), "/v3/job/status_by_domain_key/daily-2024-01-01")
        .await;
    assert_eq!(status, StatusCode::OK, "{by_key}");
    assert_eq!(by_key["job_id"], first["job_id"]);
    let (status, body) = s
        .get(&s.master(0), "/v3/job/status_by_domain_key/never-used")
        .await;
    assert_error(status, &body, 404, "never-used");

    let (status, list) = s.get(&s.master(0), "/v3/job/list").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        list["jobs"].as_array().unwrap().len(),
        1,
        "the refused issue stored no job: {list}"
    );
}

#[tokio::test]
async fn kill_stops_a_running_query_and_leaves_finished_jobs_alone() {
    let s = Server::start().await;
    let id = issue_ok(&s, "sample_datasets", SLOW_QUERY).await;
    let (status, body) = s
        .get(&s.master(0), &format!("/v3/job/result/{id}?format=json"))
        .await;
    assert_error(status, &body, 404, "has no result");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = s.post(&s.master(0), &format!("/v3/job/kill/{id}"), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["job_id"], id.as_str());
    assert!(
        ["queued", "running"].contains(&body["former_status"].as_str().unwrap()),
        "{body}"
    );
    let show = wait(&s, &id).await;
    assert_eq!(show["status"], "killed");
    // The interrupted query does not turn the job into an error later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, show) = s.get(&s.master(0), &format!("/v3/job/show/{id}")).await;
    assert_eq!(show["status"], "killed", "{show}");
    assert!(!s.td.data_dir().join(format!("results/{id}.msgpack.gz")).exists());

    let (done, _) = run(&s, "sample_datasets", "SELECT 1").await;
    let (_, body) = s.post(&s.master(0), &format!("/v3/job/kill/{done}"), &[]).await;
    assert_eq!(body["former_status"], "success");
    let (_, show) = s.get(&s.master(0), &format!("/v3/job/show/{done}")).await;
    assert_eq!(show["status"], "success");
}

/// `(code, path, size, 1.5, NULL)` of the first rows, as the engine should return them.
const FORMAT_QUERY: &str =
    "SELECT code, path, size AS bytes, 1.5 AS ratio, NULL AS missing FROM www_access ORDER BY time LIMIT 25";

fn format_query_rows() -> Vec<Value> {
    www_access_rows()[..25]
        .iter()
        .map(|r| json!([r.record["code"], r.record["path"], r.record["size"], 1.5, null]))
        .collect()
}

fn text_cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[tokio::test]
async fn every_result_format_carries_the_same_rows() {
    let s = Server::start().await;
    let (id, show) = run(&s, "sample_datasets", FORMAT_QUERY).await;
    assert_eq!(show["status"], "success", "{show}");
    assert_eq!(
        schema(&show),
        json!([
            ["code", "bigint"],
            ["path", "varchar"],
            ["bytes", "bigint"],
            ["ratio", "double"],
            ["missing", "varchar"]
        ])
    );
    let expected = format_query_rows();
    let base = format!("/v3/job/result/{id}");

    let (status, headers, gz) = get_raw(&s, &format!("{base}?format=msgpack.gz"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers.get("content-encoding").is_none(),
        "msgpack.gz is the body itself"
    );
    assert_eq!(
        show["result_size"],
        gz.len(),
        "result_size is the exact stored length"
    );
    assert_eq!(msgpack_rows(&gunzip(&gz)), expected);

    let (_, _, plain) = get_raw(&s, &format!("{base}?format=msgpack"), None).await;
    assert_eq!(plain, gunzip(&gz));

    let (_, _, json_lines) = get_raw(&s, &format!("{base}?format=json"), None).await;
    let parsed: Vec<Value> = String::from_utf8(json_lines)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parsed, expected);

    for (format, sep) in [("csv", ","), ("tsv", "\t")] {
        let (status, _, text) = get_raw(&s, &format!("{base}?format={format}&header=True"), None).await;
        assert_eq!(status, StatusCode::OK);
        let mut want = vec![["code", "path", "bytes", "ratio", "missing"].join(sep)];
        want.extend(expected.iter().map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(text_cell)
                .collect::<Vec<_>>()
                .join(sep)
        }));
        assert_eq!(
            String::from_utf8(text).unwrap().lines().collect::<Vec<_>>(),
            want,
            "{format}"
        );
        let (_, _, no_header) = get_raw(&s, &format!("{base}?format={format}"), None).await;
        assert_eq!(
            String::from_utf8(no_header).unwrap().lines().count(),
            expected.len()
        );
    }

    let (status, body) = s.get(&s.master(0), &format!("{base}?format=xml")).await;
    assert_error(status, &body, 422, "xml");
}

#[tokio::test]
async fn ranges_of_the_stored_result_return_206_with_the_exact_bytes() {
    let s = Server::start().await;
    let (id, show) = run(&s, "sample_datasets", "SELECT * FROM www_access").await;
    assert_eq!(show["status"], "success", "{show}");
    let path = format!("/v3/job/result/{id}?format=msgpack.gz");
    let (_, headers, full) = get_raw(&s, &path, None).await;
    let len = full.len();
    assert_eq!(show["result_size"], len);
    assert!(
        len > 64 * 1024,
        "5,000 rows make a multi-chunk body ({len} bytes)"
    );
    assert_eq!(headers["accept-ranges"], "bytes");
    let etag = headers["etag"].clone();

    // The way td-client-python downloads: consecutive closed ranges, each must be 206.
    let mut joined = Vec::new();
    let step = len / 3 + 1;
    for start in (0..len).step_by(step) {
        let end = (start + step - 1).min(len - 1);
        let (status, h, part) = get_raw(&s, &path, Some(&format!("bytes={start}-{end}"))).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(h["content-range"], format!("bytes {start}-{end}/{len}").as_str());
        assert_eq!(h["etag"], etag);
        assert_eq!(h["accept-ranges"], "bytes");
        assert_eq!(part, full[start..=end]);
        joined.extend(part);
    }
    assert_eq!(joined, full);

    let (status, _, tail) = get_raw(&s, &path, Some("bytes=-10")).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(tail, full[len - 10..]);
    let (status, h, _) = get_raw(&s, &path, Some(&format!("bytes={len}-"))).await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(h["content-range"], format!("bytes */{len}").as_str());
}

#[tokio::test]
async fn show_status_and_list_give_what_the_clients_read() {
    let s = Server::start().await;
    let (id, show) = run(&s, "sample_datasets", "SELECT 1 AS one").await;
    for field in [
        "job_id",
        "type",
        "database",
        "status",
        "query",
        "url",
        "user_name",
        "priority",
        "retry_limit",
        "result",
        "result_size",
        "num_records",
        "hive_result_schema",
        "cpu_time",
        "duration",
        "created_at",
        "updated_at",
        "start_at",
        "end_at",
        "linked_result_export_job_id",
        "result_export_target_job_id",
        "debug",
    ] {
        assert!(show.get(field).is_some(), "show lacks {field}: {show}");
    }
    assert_eq!(show["job_id"], id.as_str());
    assert_eq!(show["type"], "presto");
    assert_eq!(show["query"], "SELECT 1 AS one");
    assert_eq!(show["result"], "");
    assert_eq!(show["num_records"], 1);
    assert!(show["debug"]["cmdout"].is_string() && show["debug"]["stderr"] == "");
    assert!(show["created_at"].as_str().unwrap().ends_with(" UTC"));

    let (_, status) = s.get(&s.master(0), &format!("/v3/job/status/{id}")).await;
    assert_eq!(status["status"], "success");
    assert_eq!(status["num_records"], 1);

    let (failed, _) = run(&s, "sample_datasets", "SELECT broken(").await;
    let (_, all) = s.get(&s.master(0), "/v3/job/list").await;
    let ids: Vec<&str> = all["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [failed.as_str(), id.as_str()], "newest first");
    let (_, errors) = s.get(&s.master(0), "/v3/job/list?status=error").await;
    assert_eq!(errors["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(errors["jobs"][0]["job_id"], failed.as_str());
    let (_, second) = s.get(&s.master(0), "/v3/job/list?from=1&to=1").await;
    assert_eq!(second["jobs"][0]["job_id"], id.as_str());
    assert_eq!(second["jobs"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn issue_checks_its_parameters_and_stores_nothing_on_error() {
    let s = Server::start().await;
    let key = s.master(0);
    let (status, body) = issue(&s, &key, "sample_datasets", &[]).await;
    assert_error(status, &body, 400, "query");
    let (status, body) = s
        .post(
            &key,
            "/v3/job/issue/pig/sample_datasets",
            &[("query", "SELECT 1")],
        )
        .await;
    assert_error(status, &body, 422, "pig");
    let (status, body) = issue(&s, &key, "no_such_db", &[("query", "SELECT 1")]).await;
    assert_error(status, &body, 404, "no_such_db");
    let (status, body) = issue(
        &s,
        &key,
        "sample_datasets",
        &[("query", "SELECT 1"), ("priority", "3")],
    )
    .await;
    assert_error(status, &body, 422, "priority");
    let (status, body) = issue(
        &s,
        &key,
        "sample_datasets",
        &[("query", "SELECT 1"), ("retry_limit", "x")],
    )
    .await;
    assert_error(status, &body, 400, "retry_limit");
    let (_, list) = s.get(&key, "/v3/job/list").await;
    assert_eq!(list["jobs"], json!([]));

    // Only td:// results are written; another scheme fails the job when it runs.
    let (status, body) = issue(
        &s,
        &key,
        "sample_datasets",
        &[
            ("query", "SELECT 1"),
            ("result", "mysql://u:p@host/db/t"),
            ("priority", "1"),
            ("retry_limit", "2"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let show = wait(&s, body["job_id"].as_str().unwrap()).await;
    assert_eq!(show["status"], "error");
    assert_eq!(
        show["result"], "mysql://***@host/db/t",
        "credentials are never shown"
    );
    assert_eq!(
        (show["priority"].clone(), show["retry_limit"].clone()),
        (json!(1), json!(2))
    );
    assert!(
        show["debug"]["stderr"]
            .as_str()
            .unwrap()
            .contains("unsupported result type 'mysql'"),
        "{show}"
    );
}

#[tokio::test]
async fn write_only_keys_are_refused_on_job_routes() {
    let s = Server::start().await;
    let (id, _) = run(&s, "sample_datasets", "SELECT 1").await;
    let wo = s.write_only(0);
    let (status, body) = issue(&s, &wo, "sample_datasets", &[("query", "SELECT 1")]).await;
    assert_error(status, &body, 403, "write-only");
    for path in [
        format!("/v3/job/show/{id}"),
        format!("/v3/job/status/{id}"),
        format!("/v3/job/result/{id}?format=json"),
        "/v3/job/list".to_string(),
        "/v3/job/status_by_domain_key/k".to_string(),
    ] {
        let (status, body) = s.get(&wo, &path).await;
        assert_error(status, &body, 403, "write-only");
    }
    let (status, body) = s.post(&wo, &format!("/v3/job/kill/{id}"), &[]).await;
    assert_error(status, &body, 403, "write-only");
    let (_, list) = s.get(&s.master(0), "/v3/job/list").await;
    assert_eq!(
        list["jobs"].as_array().unwrap().len(),
        1,
        "the refused issue stored no job"
    );
}

#[tokio::test]
async fn job_show_masks_the_key_of_a_result_url() {
    let s = Server::start().await;
    let (key, target_key) = (s.master(0), s.master(1));
    s.post(&target_key, "/v3/database/create/masked_db", &[]).await;
    let encoded_key = target_key.replace('/', "%2F");
    for (url, masked) in [
        (
            format!("td://{target_key}@/masked_db/out?mode=append"),
            "td://***@",
        ),
        (
            format!("td://@/masked_db/out?mode=append&apikey={encoded_key}"),
            "apikey=***",
        ),
    ] {
        let (status, issued) = s
            .post(
                &key,
                "/v3/job/issue/presto/sample_datasets",
                &[("query", "SELECT 1 AS x"), ("result", &url)],
            )
            .await;
        assert_eq!(status, 200, "{issued}");
        let id = issued["job_id"].as_str().unwrap().to_string();
        let (_, shown) = s.get(&key, &format!("/v3/job/show/{id}")).await;
        let result = shown["result"].as_str().unwrap_or_default();
        assert!(result.contains(masked), "{result}");
        let (_, listed) = s.get(&key, "/v3/job/list").await;
        for secret in [&target_key, &encoded_key] {
            assert!(
                !listed.to_string().contains(secret.as_str()),
                "the key leaks in job/list"
            );
            assert!(
                !shown.to_string().contains(secret.as_str()),
                "the key leaks in job/show"
            );
        }
    }
}

/// The options the operator (and td-client-java's TDJobRequest) sends with a query.
const SCHEDULED: i64 = 1_368_080_054; // 2013-05-09 06:14:14 UTC, 15:14:14 JST, a Thursday

#[tokio::test]
async fn query_options_are_stored_shown_and_td_scheduled_time_returns_the_scheduled_time() {
    let s = Server::start().await;
    let scheduled = SCHEDULED.to_string();
    let query = "SELECT TD_SCHEDULED_TIME() AS st, TD_TIME_ADD(TD_SCHEDULED_TIME(), '-1d') AS yesterday, \
                 td_time_add('2013-05-09 15:14:14', '1h30m', 'JST') AS later, \
                 TD_DATE_TRUNC('day', TD_SCHEDULED_TIME(), 'JST') AS jst_day, \
                 TD_DATE_TRUNC('week', TD_SCHEDULED_TIME(), 'JST') AS jst_week, \
                 TD_TIME_PARSE('2013-05-09 15:14:14', 'JST') AS parsed, TD_TIME_PARSE('garbage') AS garbage";
    let (status, body) = issue(
        &s,
        &s.master(0),
        "sample_datasets",
        &[
            ("query", query),
            ("priority", "1"),
            ("retry_limit", "2"),
            ("engine_version", "stable"),
            ("scheduled_time", &scheduled),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = body["job_id"].as_str().unwrap().to_string();
    let show = wait(&s, &id).await;
    assert_eq!(show["status"], "success", "{show}");
    for (field, expected) in [
        ("priority", json!(1)),
        ("retry_limit", json!(2)),
        ("engine_version", json!("stable")),
        ("scheduled_at", json!("2013-05-09 06:14:14 UTC")),
    ] {
        assert_eq!(show[field], expected, "{field} in {show}");
    }
    assert_eq!(
        result_rows(&s, &id).await,
        [json!([
            SCHEDULED,
            SCHEDULED - 86_400,
            SCHEDULED + 5_400,
            1_368_025_200,
            1_367_766_000,
            SCHEDULED,
            null
        ])]
    );
    assert_eq!(
        schema(&show),
        json!([
            ["st", "bigint"],
            ["yesterday", "bigint"],
            ["later", "bigint"],
            ["jst_day", "bigint"],
            ["jst_week", "bigint"],
            ["parsed", "bigint"],
            ["garbage", "bigint"]
        ])
    );
    let (_, listed) = s.get(&s.master(0), "/v3/job/list").await;
    let listed = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job_id"] == id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(
        (
            &listed["pool_name"],
            &listed["engine_version"],
            &listed["scheduled_at"]
        ),
        (&Value::Null, &json!("stable"), &json!("2013-05-09 06:14:14 UTC"))
    );

    // Without a scheduled time, TD_SCHEDULED_TIME() is the time the job was issued.
    let (id, show) = run(&s, "sample_datasets", "SELECT TD_SCHEDULED_TIME() AS st").await;
    let created = td_model::time::parse_td_timestamp(show["created_at"].as_str().unwrap()).unwrap();
    assert_eq!(result_rows(&s, &id).await, [json!([created])]);
    assert_eq!(
        (
            &show["pool_name"],
            &show["engine_version"],
            &show["scheduled_at"],
            &show["priority"]
        ),
        (&Value::Null, &Value::Null, &Value::Null, &json!(0))
    );
}

#[tokio::test]
async fn bad_query_options_are_refused_before_a_job_is_recorded() {
    let s = Server::start().await;
    let before = s.td.inspect().job_count().unwrap();
    for (field, value, code, needle) in [
        ("engine_version", "AAAAAA", 422, "Job engine version is invalid"),
        (
            "scheduled_time",
            "tomorrow",
            400,
            "'scheduled_time' must be an integer",
        ),
        ("scheduled_time", "999999999999999", 422, "out of range"),
        ("priority", "3", 422, "between -2 and 2"),
        ("retry_limit", "-1", 422, "between 0 and 32"),
        ("retry_limit", "33", 422, "between 0 and 32"),
        // td-client-java's tests against the real API (TestTDClient).
        (
            "pool_name",
            "no_such_pool",
            400,
            "Presto resource pool with name 'no_such_pool' does not exist",
        ),
    ] {
        let (status, body) = issue(
            &s,
            &s.master(0),
            "sample_datasets",
            &[("query", "SELECT 1"), (field, value)],
        )
        .await;
        assert_error(status, &body, code, needle);
    }
    assert_eq!(s.td.inspect().job_count().unwrap(), before);
    for version in ["experimental", "Hive TD 2018.01"] {
        let (status, body) = issue(
            &s,
            &s.master(0),
            "sample_datasets",
            &[("query", "SELECT 1"), ("engine_version", version)],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{version}: {body}");
    }
}

/// `{"time": 1, "b": <bin 00 ff 10>, "s": "x"}` as an import body.
fn binary_import_body() -> Vec<u8> {
    use std::io::Write;
    let record = rmpv::Value::Map(vec![
        ("time".into(), 1.into()),
        ("b".into(), rmpv::Value::Binary(vec![0x00, 0xff, 0x10])),
        ("s".into(), "x".into()),
    ]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    rmpv::encode::write_value(&mut gz, &record).unwrap();
    gz.flush().unwrap();
    gz.finish().unwrap()
}

/// The first value of the only row of a msgpack.gz result, as msgpack.
async fn first_result_value(s: &Server, id: &str) -> rmpv::Value {
    let (_, _, bytes) = get_raw(s, &format!("/v3/job/result/{id}?format=msgpack.gz"), None).await;
    let raw = gunzip(&bytes);
    let row = rmpv::decode::read_value(&mut &raw[..]).unwrap();
    row.as_array().unwrap()[0].clone()
}

#[tokio::test]
async fn binary_survives_import_queries_result_output_and_tail_as_msgpack_bin() {
    let s = Server::start().await;
    let key = s.master(0);
    crate::import::create_table(&s, "bin_db", "bin_t").await;
    let (status, body) = s
        .put(
            &key,
            "/v3/table/import/bin_db/bin_t/msgpack.gz",
            binary_import_body(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let bytes = rmpv::Value::Binary(vec![0x00, 0xff, 0x10]);
    let stored = td_local::internals::binary_value(&[0x00, 0xff, 0x10]);
    assert_eq!(
        crate::import::tail(&s, "bin_db", "bin_t", 1).await[0]["b"],
        stored
    );

    // A query reads the stored bytes back as a blob: msgpack bin, typed varbinary.
    let (id, show) = run(&s, "bin_db", "SELECT b, s FROM bin_t").await;
    assert_eq!(show["status"], "success", "{show}");
    assert_eq!(schema(&show), json!([["b", "varbinary"], ["s", "varchar"]]));
    assert_eq!(first_result_value(&s, &id).await, bytes);
    // json and csv show bytes as base64.
    let (_, _, body) = get_raw(&s, &format!("/v3/job/result/{id}?format=json"), None).await;
    assert_eq!(String::from_utf8(body).unwrap(), "[\"AP8Q\",\"x\"]\n");
    let (_, _, body) = get_raw(&s, &format!("/v3/job/result/{id}?format=csv"), None).await;
    assert_eq!(String::from_utf8(body).unwrap(), "AP8Q,x\n");

    // A blob literal written to a table by result output stays bytes there too.
    let (status, body) = issue(
        &s,
        &key,
        "bin_db",
        &[
            ("query", "SELECT X'00ff10' AS b"),
            ("result", "td://@/bin_db/out_t"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let show = wait(&s, body["job_id"].as_str().unwrap()).await;
    assert_eq!(show["status"], "success", "{show}");
    assert_eq!(
        crate::import::tail(&s, "bin_db", "out_t", 1).await[0]["b"],
        stored
    );
    let account = s.td.accounts()[0].id;
    assert_eq!(
        s.td.inspect().schema(account, "bin_db", "out_t").unwrap(),
        Some(json!([["b", "string"]]))
    );
    let (id, _) = run(&s, "bin_db", "SELECT b FROM out_t").await;
    assert_eq!(first_result_value(&s, &id).await, bytes);
}

#[tokio::test]
async fn result_columns_with_no_values_are_typed_from_the_query() {
    let s = Server::start().await;
    let cases = [
        (
            "SELECT time, code, host, CAST(NULL AS BIGINT) AS n, 1 AS one, 'a' AS s, x'00' AS b \
             FROM www_access WHERE 1 = 0",
            json!([
                ["time", "bigint"],
                ["code", "bigint"],
                ["host", "varchar"],
                ["n", "bigint"],
                ["one", "bigint"],
                ["s", "varchar"],
                ["b", "varbinary"]
            ]),
        ),
        (
            "SELECT CAST(NULL AS DOUBLE) AS d, NULL AS x, TD_TIME_PARSE('garbage') AS p, \
             CAST(NULL AS VARCHAR) AS v",
            json!([
                ["d", "double"],
                ["x", "varchar"],
                ["p", "bigint"],
                ["v", "varchar"]
            ]),
        ),
        (
            "SELECT t, u FROM (SELECT CAST(NULL AS BIGINT) AS t, time AS u FROM www_access LIMIT 0)",
            json!([["t", "bigint"], ["u", "bigint"]]),
        ),
        (
            "SELECT * FROM www_access WHERE code = -1",
            json!([
                ["time", "bigint"],
                ["host", "varchar"],
                ["path", "varchar"],
                ["method", "varchar"],
                ["referer", "varchar"],
                ["code", "bigint"],
                ["agent", "varchar"],
                ["user", "varchar"],
                ["size", "bigint"]
            ]),
        ),
    ];
    for (query, expected) in cases {
        let (id, show) = run(&s, "sample_datasets", query).await;
        assert_eq!(show["status"], "success", "{show}");
        assert_eq!(schema(&show), expected, "{query}");
        let rows = result_rows(&s, &id).await;
        assert!(
            rows.iter()
                .flat_map(|r| r.as_array().unwrap())
                .all(Value::is_null),
            "no value tells the type: {rows:?}"
        );
    }
}

/// A Hive job takes any pool name and shows it; a Presto one is refused a pool TD does not have
/// (td-local has none): td-client-java's `submitJobWithPoolName` and
/// `submitPrestoJobWithInvalidPoolName` against the real API.
#[tokio::test]
async fn a_hive_job_keeps_its_pool_name_and_a_presto_job_is_refused_an_unknown_pool() {
    let s = Server::start().await;
    let (status, body) = s
        .post(
            &s.master(0),
            "/v3/job/issue/hive/sample_datasets",
            &[("query", "SELECT 1"), ("pool_name", "hadoop2")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let show = wait(&s, body["job_id"].as_str().unwrap()).await;
    assert_eq!(show["pool_name"], "hadoop2", "{show}");
    let (status, body) = issue(
        &s,
        &s.master(0),
        "sample_datasets",
        &[("query", "SELECT 1"), ("pool_name", "hadoop2")],
    )
    .await;
    assert_error(
        status,
        &body,
        400,
        "Presto resource pool with name 'hadoop2' does not exist",
    );
}
