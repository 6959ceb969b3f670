//! Streaming import: `PUT /v3/table/import[_with_id]/…/msgpack.gz` (docs/td-api.md §4).

use md5::{Digest, Md5};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{assert_error, gzip_msgpack, Server};

/// `n` records with distinct times, tagged so tests can tell batches apart.
pub fn records(n: usize, tag: &str) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"time": 1_700_000_000 + i as i64, "seq": i, "tag": tag}))
        .collect()
}

/// Creates `db` (if needed) and `table` with the master key of account 0.
pub async fn create_table(s: &Server, db: &str, table: &str) {
    let key = s.master(0);
    let (status, body) = s.post(&key, &format!("/v3/database/create/{db}"), &[]).await;
    assert!(status == 200 || status == 409, "create {db}: {body}");
    let (status, body) = s
        .post(&key, &format!("/v3/table/create/{db}/{table}/log"), &[])
        .await;
    assert_eq!(status, 200, "create {db}.{table}: {body}");
}

/// Imports `rows` with `key`, asserting success.
pub async fn import_rows(s: &Server, key: &str, db: &str, table: &str, rows: &[Value]) {
    let (status, body) = s
        .put(
            key,
            &format!("/v3/table/import/{db}/{table}/msgpack.gz"),
            gzip_msgpack(rows),
        )
        .await;
    assert_eq!(status, 200, "import into {db}.{table}: {body}");
}

/// The row count `table/show` reports.
pub async fn row_count(s: &Server, db: &str, table: &str) -> i64 {
    let (status, body) = s.get(&s.master(0), &format!("/v3/table/show/{db}/{table}")).await;
    assert_eq!(status, 200, "show {db}.{table}: {body}");
    body["count"].as_i64().unwrap()
}

/// The newest `count` rows through `tail?format=msgpack`, decoded.
pub async fn tail(s: &Server, db: &str, table: &str, count: usize) -> Vec<Value> {
    let resp = s
        .http
        .get(s.url(&format!(
            "/v3/table/tail/{db}/{table}?count={count}&format=msgpack"
        )))
        .header("Authorization", format!("TD1 {}", s.master(0)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let bytes = resp.bytes().await.unwrap();
    let mut rows = Vec::new();
    td_local::internals::read_msgpack_values(&bytes[..], |v| {
        rows.push(td_local::internals::msgpack_to_json(v));
        Ok(())
    })
    .unwrap();
    rows
}

fn import_path(db: &str, table: &str) -> String {
    format!("/v3/table/import/{db}/{table}/msgpack.gz")
}

fn import_with_id_path(db: &str, table: &str, id: &str) -> String {
    format!("/v3/table/import_with_id/{db}/{table}/{id}/msgpack.gz")
}

#[tokio::test]
async fn import_stores_every_row_and_answers_the_md5_of_the_body() {
    let s = Server::start().await;
    create_table(&s, "imp_db", "events").await;
    let sent = records(25, "a");
    let body = gzip_msgpack(&sent);
    let expected_md5 = hex::encode(Md5::digest(&body));
    let (status, reply) = s.put(&s.master(0), &import_path("imp_db", "events"), body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["database"], "imp_db");
    assert_eq!(reply["table"], "events");
    assert_eq!(reply["md5_hex"], expected_md5.as_str());
    assert_eq!(reply["unique_id"], Value::Null);
    assert!(reply["elapsed_time"].as_f64().unwrap() >= 0.0, "{reply}");

    let mut stored = tail(&s, "imp_db", "events", 100).await;
    stored.reverse(); // tail is newest first
    assert_eq!(stored, sent);
}

#[tokio::test]
async fn multi_member_gzip_bodies_are_decoded_whole() {
    let s = Server::start().await;
    create_table(&s, "imp_db", "events").await;
    let (first, second) = (records(3, "first"), records(4, "second"));
    let mut body = gzip_msgpack(&first);
    body.extend(gzip_msgpack(&second));
    let (status, reply) = s.put(&s.master(0), &import_path("imp_db", "events"), body).await;
    assert_eq!(status, 200, "{reply}");
    let stored = tail(&s, "imp_db", "events", 100).await;
    let tags: Vec<&str> = stored.iter().filter_map(|r| r["tag"].as_str()).collect();
    assert_eq!(tags.iter().filter(|t| **t == "first").count(), 3);
    assert_eq!(tags.iter().filter(|t| **t == "second").count(), 4);
}

#[tokio::test]
async fn empty_bodies_probe_the_table_and_store_nothing() {
    let s = Server::start().await;
    create_table(&s, "imp_db", "events").await;
    for body in [Vec::new(), gzip_msgpack(&[])] {
        let (status, reply) = s.put(&s.master(0), &import_path("imp_db", "events"), body).await;
        assert_eq!(status, 200, "{reply}");
    }
    assert_eq!(row_count(&s, "imp_db", "events").await, 0);
    let (status, reply) = s
        .put(&s.master(0), &import_path("imp_db", "nowhere"), Vec::new())
        .await;
    assert_error(status, &reply, 404, "imp_db.nowhere");
}

#[tokio::test]
async fn a_bad_record_rejects_the_whole_body() {
    let s = Server::start().await;
    create_table(&s, "imp_db", "events").await;
    let mut no_time = records(5, "ok");
    no_time.push(json!({"seq": 5, "tag": "no time"}));
    let mut not_a_map = records(5, "ok");
    not_a_map.push(json!([1, 2, 3]));
    let mut text_time = records(5, "ok");
    text_time.push(json!({"time": "yesterday"}));
    let mut truncated = gzip_msgpack(&records(50, "ok"));
    truncated.truncate(truncated.len() / 2);
    let cases = [
        (gzip_msgpack(&no_time), "time"),
        (gzip_msgpack(&not_a_map), "not a map"),
        (gzip_msgpack(&text_time), "time"),
        (b"this is not gzip".to_vec(), "invalid"),
        (truncated, "invalid"),
    ];
    for (body, needle) in cases {
        let (status, reply) = s.put(&s.master(0), &import_path("imp_db", "events"), body).await;
        assert_error(status, &reply, 400, needle);
    }
    assert_eq!(row_count(&s, "imp_db", "events").await, 0, "nothing stored");
}

#[tokio::test]
async fn import_with_id_stores_a_repeated_id_once() {
    let s = Server::start().await;
    create_table(&s, "imp_db", "events").await;
    create_table(&s, "imp_db", "other").await;
    let body = gzip_msgpack(&records(10, "batch"));
    let expected_md5 = hex::encode(Md5::digest(&body));
    for _ in 0..3 {
        let (status, reply) = s
            .put(
                &s.master(0),
                &import_with_id_path("imp_db", "events", "chunk_0001"),
                body.clone(),
            )
            .await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["unique_id"], "chunk_0001");
        assert_eq!(reply["md5_hex"], expected_md5.as_str());
    }
    assert_eq!(
        row_count(&s, "imp_db", "events").await,
        10,
        "a repeated id is stored once"
    );

    // A new id, and the same id on another table, are new imports.
    let (status, _) = s
        .put(
            &s.master(0),
            &import_with_id_path("imp_db", "events", "chunk_0002"),
            body.clone(),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = s
        .put(
            &s.master(0),
            &import_with_id_path("imp_db", "other", "chunk_0001"),
            body.clone(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(row_count(&s, "imp_db", "events").await, 20);
    assert_eq!(row_count(&s, "imp_db", "other").await, 10);
}

#[tokio::test]
async fn a_rejected_import_with_id_does_not_use_up_its_id() {
    let s = Server::start().await;
    create_table(&s, "imp_db", "events").await;
    let path = import_with_id_path("imp_db", "events", "retry_me");
    let (status, reply) = s.put(&s.master(0), &path, b"garbage".to_vec()).await;
    assert_error(status, &reply, 400, "invalid");
    let (status, reply) = s.put(&s.master(0), &path, gzip_msgpack(&records(4, "x"))).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(row_count(&s, "imp_db", "events").await, 4);
}

#[tokio::test]
async fn concurrent_imports_with_one_id_store_it_once() {
    let s = Server::start().await;
    create_table(&s, "imp_db", "events").await;
    let body = gzip_msgpack(&records(7, "race"));
    let path = import_with_id_path("imp_db", "events", "same_id");
    let key = s.master(0);
    let puts = (0..8).map(|_| s.put(&key, &path, body.clone()));
    for (status, reply) in futures::future::join_all(puts).await {
        assert_eq!(status, 200, "{reply}");
    }
    assert_eq!(row_count(&s, "imp_db", "events").await, 7);
}

#[tokio::test]
async fn unsupported_formats_are_400_naming_the_format() {
    let s = Server::start().await;
    create_table(&s, "imp_db", "events").await;
    let (status, reply) = s
        .put(
            &s.master(0),
            "/v3/table/import/imp_db/events/json.gz",
            b"{}".to_vec(),
        )
        .await;
    assert_error(status, &reply, 400, "'json.gz'");
    let (status, reply) = s
        .put(
            &s.master(0),
            "/v3/table/import_with_id/imp_db/events/x1/csv",
            b"a".to_vec(),
        )
        .await;
    assert_error(status, &reply, 400, "'csv'");
}

#[tokio::test]
async fn imports_into_missing_databases_or_tables_are_404() {
    let s = Server::start().await;
    create_table(&s, "imp_db", "events").await;
    let body = gzip_msgpack(&records(1, "x"));
    let (status, reply) = s
        .put(&s.master(0), &import_path("no_db", "events"), body.clone())
        .await;
    assert_error(status, &reply, 404, "database 'no_db'");
    let (status, reply) = s
        .put(
            &s.master(0),
            &import_with_id_path("imp_db", "no_table", "a1"),
            body.clone(),
        )
        .await;
    assert_error(status, &reply, 404, "imp_db.no_table");
    // Account 1 cannot import into account 0's table.
    let (status, reply) = s.put(&s.master(1), &import_path("imp_db", "events"), body).await;
    assert_error(status, &reply, 404, "imp_db");
    assert_eq!(row_count(&s, "imp_db", "events").await, 0);
}

#[tokio::test]
async fn write_only_keys_can_import_and_unknown_keys_cannot() {
    let s = Server::start().await;
    create_table(&s, "imp_db", "events").await;
    import_rows(&s, &s.write_only(0), "imp_db", "events", &records(3, "w")).await;
    let (status, reply) = s
        .put(
            &s.write_only(0),
            &import_with_id_path("imp_db", "events", "w1"),
            gzip_msgpack(&records(2, "w")),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let (status, reply) = s
        .put(
            "1/0123456789abcdef0123456789abcdef01234567",
            &import_path("imp_db", "events"),
            Vec::new(),
        )
        .await;
    assert_error(status, &reply, 401, "invalid API key");
    assert_eq!(row_count(&s, "imp_db", "events").await, 5);
}

#[tokio::test]
async fn bodies_over_axums_2_mb_default_are_accepted() {
    let s = Server::start().await;
    create_table(&s, "imp_db", "big").await;
    // Stored (level 0) gzip, so the body really is over 2 MB on the wire.
    let filler = "x".repeat(1024);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    for i in 0..3000i64 {
        let row = json!({"time": 1_700_000_000 + i, "filler": filler});
        rmpv::encode::write_value(&mut gz, &td_local::internals::json_to_msgpack(&row)).unwrap();
    }
    let body = gz.finish().unwrap();
    assert!(body.len() > 2 << 20, "body is {} bytes", body.len());
    let (status, reply) = s.put(&s.master(0), &import_path("imp_db", "big"), body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(row_count(&s, "imp_db", "big").await, 3000);
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_a_td_413_before_the_body_is_sent() {
    let s = Server::start().await;
    create_table(&s, "imp_db", "events").await;
    let mut socket = tokio::net::TcpStream::connect(s.td.addr()).await.unwrap();
    let request = format!(
        "PUT /v3/table/import/imp_db/events/msgpack.gz HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: TD1 {}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\n\r\n",
        s.master(0),
        td_local::limits::IMPORT_BODY_BYTES + 1
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        socket.read_to_end(&mut response),
    );
    read.await
        .expect("answered without waiting for the body")
        .unwrap();
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    let reply: Value = serde_json::from_str(body).unwrap();
    assert_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &reply,
        413,
        &format!("larger than {} bytes", td_local::limits::IMPORT_BODY_BYTES),
    );
}

#[tokio::test]
async fn chunked_request_bodies_are_accepted() {
    let s = Server::start().await;
    create_table(&s, "imp_db", "events").await;
    let body = gzip_msgpack(&records(30, "chunked"));
    let expected_md5 = hex::encode(Md5::digest(&body));
    // Several chunks and no Content-Length: reqwest sends it with Transfer-Encoding: chunked.
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> = body.chunks(17).map(|c| Ok(c.to_vec())).collect();
    let resp = s
        .http
        .put(s.url(&import_path("imp_db", "events")))
        .header("Authorization", format!("TD1 {}", s.master(0)))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(pieces)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let reply: Value = resp.json().await.unwrap();
    assert_eq!(reply["md5_hex"], expected_md5.as_str());
    assert_eq!(row_count(&s, "imp_db", "events").await, 30);
}

/// TD is schema-on-read: an import stores a value whatever its column's type, and the type is
/// applied when the column is read (queries, job results, tail): a value of another type reads
/// NULL (assumed, the harsher reading), an integer in a `double` column as a double, a number in
/// a `string` column as its text.
#[tokio::test]
async fn an_imported_value_whose_type_differs_from_its_column_is_stored_and_reads_as_null() {
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, "imp_db", "typed").await;
    let schema = r#"[["n","long"],["d","double"],["s","string"]]"#;
    let (status, body) = s
        .post(
            &key,
            "/v3/table/update-schema/imp_db/typed",
            &[("schema", schema)],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let rows = [
        json!({"time": 1, "n": "abc", "d": 3, "s": 7}),
        json!({"time": 2, "n": 4, "d": 0.5, "s": "t"}),
    ];
    import_rows(&s, &key, "imp_db", "typed", &rows).await;
    let account = s.td.accounts()[0].id;
    let stored: Vec<Value> =
        s.td.inspect()
            .rows(account, "imp_db", "typed")
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|r| Value::Object(r.record))
            .collect();
    assert_eq!(stored, rows, "stored as imported");

    let (id, show) = crate::jobs::run(&s, "imp_db", "SELECT n, d, s FROM typed ORDER BY time").await;
    assert_eq!(show["status"], "success", "{show}");
    assert_eq!(
        crate::jobs::schema(&show),
        json!([["n", "bigint"], ["d", "double"], ["s", "varchar"]])
    );
    assert_eq!(
        crate::jobs::result_rows(&s, &id).await,
        [json!([null, 3.0, "7"]), json!([4, 0.5, "t"])]
    );
    assert_eq!(
        tail(&s, "imp_db", "typed", 2).await,
        [
            json!({"time": 2, "n": 4, "d": 0.5, "s": "t"}),
            json!({"time": 1, "n": null, "d": 3.0, "s": "7"}),
        ]
    );
}
