//! td-local under hostile bodies (issue 10 point 14): gzip bombs, huge plain bodies and giant
//! records are refused with a TD-style 413 naming the limit (`td_local::limits`), and the
//! server's memory stays bounded while it refuses them. The memory checks run the real binary
//! and read its peak resident size from `/proc/PID/status`.

use std::io::Write;

use bytes::Bytes;
use reqwest::StatusCode;
use serde_json::{json, Value};
use td_local::limits::{self, Limits, RecordLimits};

use crate::bulk_import::{create_table, get_bytes, ok, perform, post_ok, stored_rows, upload};
use crate::cli::{keys_from_file, Binary};
use crate::import::{create_table as create_table_over_http, records, row_count};
use crate::{assert_error, gzip_msgpack, Server};

/// A gzip of back-to-back small msgpack records inflating to at least `inflated` bytes, cheap
/// to build: one member of about 1 MiB of records, repeated (gzip members may be concatenated,
/// and TD's clients' decoders read them all).
fn gzip_bomb(inflated: usize) -> Vec<u8> {
    let mut records = Vec::new();
    while records.len() < 1 << 20 {
        let row = json!({"time": 1_700_000_000, "v": "bomb"});
        rmpv::encode::write_value(&mut records, &td_local::internals::json_to_msgpack(&row)).unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&records).unwrap();
    let member = gz.finish().unwrap();
    member.repeat(inflated.div_ceil(records.len()))
}

/// One record `{"time": …, "giant": "xxx…"}` whose string is `len` bytes, gzip'd.
fn giant_record(len: usize) -> Vec<u8> {
    gzip_msgpack(&[json!({"time": 1_700_000_000, "giant": "x".repeat(len)})])
}

/// The peak resident set of process `pid` in bytes (`VmHWM`).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/PID/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

/// What the binary may hold at its peak while refusing a bomb: well under 1 GiB. Without the
/// caps a 136 KB import of 5M records took 3.6 GB (issue 10 point 14).
const PEAK_RSS_BOUND: u64 = 256 << 20;

/// A `td-local serve` child with a table `abuse_db.events` and the master key of account 0.
async fn binary_with_table(dir: &std::path::Path) -> (Binary, String, reqwest::Client) {
    let binary = Binary::start(dir, false).await;
    let (key, _) = keys_from_file(dir, 0);
    let http = reqwest::Client::new();
    for path in [
        "/v3/database/create/abuse_db",
        "/v3/table/create/abuse_db/events/log",
    ] {
        let resp = http
            .post(format!("{}{path}", binary.base_url))
            .header("Authorization", format!("TD1 {key}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    (binary, key, http)
}

/// PUTs `body` to the child; `None` when the server answered and closed before the client
/// had sent it all (a refused body is not read to its end).
async fn put(
    http: &reqwest::Client,
    url: String,
    key: &str,
    body: reqwest::Body,
) -> Option<(StatusCode, Value)> {
    let resp = http
        .put(url)
        .header("Authorization", format!("TD1 {key}"))
        .body(body)
        .send()
        .await
        .ok()?;
    let status = resp.status();
    Some((status, resp.json().await.unwrap()))
}

#[tokio::test]
async fn a_small_gzip_inflating_past_the_import_limit_is_413_and_the_server_stays_small() {
    let dir = tempfile::tempdir().unwrap();
    let (binary, key, http) = binary_with_table(dir.path()).await;
    // ~5M records: twice what an import may inflate to, in a body of a few hundred KB.
    let bomb = gzip_bomb(2 * limits::IMPORT_INFLATED_BYTES);
    assert!(bomb.len() < 1 << 20, "the bomb is {} bytes", bomb.len());
    let url = format!("{}/v3/table/import/abuse_db/events/msgpack.gz", binary.base_url);
    let (status, body) = put(&http, url.clone(), &key, bomb.into())
        .await
        .expect("an answer");
    assert_error(
        status,
        &body,
        413,
        &format!("inflates to more than {} bytes", limits::IMPORT_INFLATED_BYTES),
    );
    let peak = peak_rss(binary.child.id().unwrap());
    assert!(peak < PEAK_RSS_BOUND, "td-local peaked at {peak} bytes");

    // Nothing of the bomb was stored, and an ordinary import still works.
    let (status, body) = put(&http, url, &key, gzip_msgpack(&records(10, "after")).into())
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let resp = http
        .get(format!("{}/v3/table/show/abuse_db/events", binary.base_url))
        .header("Authorization", format!("TD1 {key}"))
        .send()
        .await
        .unwrap();
    let shown: Value = resp.json().await.unwrap();
    assert_eq!(shown["count"], 10, "{shown}");
    drop(binary);
}

#[tokio::test]
async fn a_huge_plain_body_is_413_without_being_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let (binary, key, http) = binary_with_table(dir.path()).await;
    // 512 MiB of plain bytes, chunked (no Content-Length to refuse it by), never held by the
    // client: one 1 MiB buffer sent again and again.
    let mib = Bytes::from(vec![b'x'; 1 << 20]);
    let stream = futures::stream::iter((0..512).map(move |_| Ok::<_, std::io::Error>(mib.clone())));
    let url = format!("{}/v3/table/import/abuse_db/events/msgpack.gz", binary.base_url);
    if let Some((status, body)) = put(&http, url, &key, reqwest::Body::wrap_stream(stream)).await {
        assert_error(
            status,
            &body,
            413,
            &format!("larger than {} bytes", limits::IMPORT_BODY_BYTES),
        );
    }
    let peak = peak_rss(binary.child.id().unwrap());
    assert!(
        peak < PEAK_RSS_BOUND,
        "td-local peaked at {peak} bytes: it buffered the body"
    );
    drop(binary);
}

#[tokio::test]
async fn a_record_holding_a_giant_string_is_413_naming_the_record_limit() {
    let s = Server::start().await;
    create_table_over_http(&s, "abuse_db", "events").await;
    // Under the import limits as a body (it inflates to 40 MiB), over the record limit.
    let body = giant_record(40 << 20);
    let (status, reply) = s
        .put(&s.master(0), "/v3/table/import/abuse_db/events/msgpack.gz", body)
        .await;
    assert_error(
        status,
        &reply,
        413,
        &format!("records of at most {} bytes", limits::RECORD_BYTES),
    );
    assert_eq!(row_count(&s, "abuse_db", "events").await, 0);
}

#[tokio::test]
async fn a_record_of_too_many_values_is_413_before_they_are_decoded() {
    let s = Server::start_limited(Limits {
        record: RecordLimits {
            values: 1000,
            ..RecordLimits::default()
        },
        ..Limits::default()
    })
    .await;
    create_table_over_http(&s, "abuse_db", "events").await;
    let body = gzip_msgpack(&[json!({"time": 1, "list": vec![0; 1000]})]);
    let (status, reply) = s
        .put(&s.master(0), "/v3/table/import/abuse_db/events/msgpack.gz", body)
        .await;
    assert_error(status, &reply, 413, "record 0 is larger than 1000 values");
    let fits = gzip_msgpack(&[json!({"time": 1, "list": vec![0; 990]})]);
    let (status, reply) = s
        .put(&s.master(0), "/v3/table/import/abuse_db/events/msgpack.gz", fits)
        .await;
    assert_eq!(status, 200, "{reply}");
}

#[tokio::test]
async fn imports_within_the_limits_store_every_row_in_batches() {
    let s = Server::start().await;
    create_table_over_http(&s, "abuse_db", "events").await;
    // More rows than one batch, and a record just under the record limit.
    let mut rows = records(limits::BATCH_ROWS * 2 + 7, "batched");
    rows.push(json!({"time": 1_800_000_000, "big": "y".repeat(limits::RECORD_BYTES - 64)}));
    let (status, reply) = s
        .put(
            &s.master(0),
            "/v3/table/import/abuse_db/events/msgpack.gz",
            gzip_msgpack(&rows),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(row_count(&s, "abuse_db", "events").await, rows.len() as i64);
}

/// Limits small enough for a test to pass them with a few KB.
fn small_part_limits() -> Limits {
    Limits {
        part_inflated_bytes: 1 << 20,
        record: RecordLimits {
            bytes: 64 << 10,
            ..RecordLimits::default()
        },
        ..Limits::default()
    }
}

#[tokio::test]
async fn a_bulk_import_part_inflating_past_the_part_limit_is_413_and_not_stored() {
    let s = Server::start_limited(small_part_limits()).await;
    let key = s.master(0);
    create_table(&s, 0, "abuse_db", "events");
    post_ok(&s, &key, "/v3/bulk_import/create/bomb/abuse_db/events").await;
    let (status, reply) = s
        .put(&key, "/v3/bulk_import/upload_part/bomb/p1", gzip_bomb(2 << 20))
        .await;
    assert_error(status, &reply, 413, "inflates to more than 1048576 bytes");
    let parts = ok(s.get(&key, "/v3/bulk_import/list_parts/bomb").await).await;
    assert_eq!(parts["parts"], json!([]));
}

#[tokio::test]
async fn perform_over_parts_past_the_limits_makes_error_parts_and_keeps_the_good_ones() {
    // Parts uploaded under the default limits, performed by a server with small ones: one
    // part inflating past the part limit, one holding a record past the record limit.
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, 0, "abuse_db", "events");
    post_ok(&s, &key, "/v3/bulk_import/create/mixed/abuse_db/events").await;
    let path = |part: &str| format!("/v3/bulk_import/upload_part/mixed/{part}");
    ok(s.put(&key, &path("bomb"), gzip_bomb(2 << 20)).await).await;
    ok(s.put(&key, &path("giant"), giant_record(100 << 10)).await).await;
    let good = records(20, "good");
    upload(&s, &key, "mixed", "good", &good).await;

    let s = s.restart_limited(small_part_limits()).await;
    let (shown, _) = perform(&s, &key, "mixed").await;
    assert_eq!(shown["valid_parts"], 1, "{shown}");
    assert_eq!(shown["error_parts"], 2, "{shown}");
    assert_eq!(shown["valid_records"], 20, "{shown}");
    post_ok(&s, &key, "/v3/bulk_import/commit/mixed").await;
    assert_eq!(stored_rows(&s, 0, "abuse_db", "events"), good);
}

#[tokio::test]
async fn perform_keeps_at_most_the_kept_error_records_and_counts_them_all() {
    let s = Server::start_limited(Limits {
        kept_error_records: 5,
        ..Limits::default()
    })
    .await;
    let key = s.master(0);
    create_table(&s, 0, "abuse_db", "events");
    post_ok(&s, &key, "/v3/bulk_import/create/errs/abuse_db/events").await;
    let rejected: Vec<Value> = (0..12).map(|i| json!({"no_time": i})).collect();
    upload(&s, &key, "errs", "p1", &rejected).await;
    upload(&s, &key, "errs", "p2", &rejected).await;
    let (shown, _) = perform(&s, &key, "errs").await;
    assert_eq!(shown["error_records"], 24, "{shown}");
    let (status, bytes) = get_bytes(&s, &key, "/v3/bulk_import/error_records/errs").await;
    assert_eq!(status, 200);
    let mut kept = 0;
    td_local::internals::read_msgpack_values(flate2::read::MultiGzDecoder::new(&bytes[..]), |_| {
        kept += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(kept, 5);
}
