//! Bulk-import sessions (docs/td-api.md §5) over HTTP; stored rows are read back through the library
//! (`TdLocal::inspect`).

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::{assert_error, gzip_msgpack, Server};

const AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/535.11 (KHTML, like Gecko) Chrome/17.0.963.56 Safari/535.11",
    "Mozilla/5.0 (compatible; MSIE 9.0; Windows NT 6.1; Trident/5.0)",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_7_3) AppleWebKit/534.53.11 (KHTML, like Gecko) Version/5.1.3",
    "Mozilla/5.0 (Windows NT 6.0; rv:10.0.1) Gecko/20100101 Firefox/10.0.1",
];
const PATHS: &[&str] = &[
    "/category/books",
    "/item/games/4515",
    "/search/?c=Games",
    "/category/music",
];

/// A cheap deterministic scramble of `i` (splitmix64), so rows vary like real logs do.
fn scramble(i: usize) -> u64 {
    let mut z = (i as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Row `i` of a table shaped like `sample_datasets.www_access`.
fn www_access(i: usize) -> Value {
    let r = scramble(i);
    let octet = |shift: u32| (r >> shift) & 0xff;
    json!({
        "time": 1_412_320_845 + i as i64,
        "host": format!("{}.{}.{}.{}", 1 + octet(0) % 223, octet(8), octet(16), 1 + octet(24) % 254),
        "path": format!("{}/{}", PATHS[i % PATHS.len()], (r >> 32) % 10_000),
        "method": if r % 10 == 0 { "POST" } else { "GET" },
        "referer": if r % 5 < 2 { "-".to_string() } else { format!("http://www.example.com{}", PATHS[(r >> 40) as usize % PATHS.len()]) },
        "code": if r % 17 == 0 { 404 } else { 200 },
        "size": 30 + ((r >> 48) % 120) as i64,
        "agent": AGENTS[(r >> 56) as usize % AGENTS.len()],
        "user": "-",
    })
}

fn www_access_rows(range: std::ops::Range<usize>) -> Vec<Value> {
    range.map(www_access).collect()
}

fn account_id(s: &Server, n: usize) -> i64 {
    s.td.accounts()[n].id
}

/// Creates `db.table` for account `n` through the library (the table routes are another module's).
pub(crate) fn create_table(s: &Server, n: usize, db: &str, table: &str) {
    s.td.inspect().create_table(account_id(s, n), db, table).unwrap();
}

/// The rows of a table as stored, in insertion order.
pub(crate) fn stored_rows(s: &Server, n: usize, db: &str, table: &str) -> Vec<Value> {
    s.td.inspect()
        .rows(account_id(s, n), db, table)
        .unwrap()
        .expect("the table exists")
        .into_iter()
        .map(|row| Value::Object(row.record))
        .collect()
}

fn table_schema(s: &Server, n: usize, db: &str, table: &str) -> Value {
    s.td.inspect()
        .schema(account_id(s, n), db, table)
        .unwrap()
        .expect("the table exists")
}

/// The session of account 0 named `name`.
fn session(s: &Server, name: &str) -> td_local::SessionInfo {
    s.td.inspect()
        .bulk_imports(account_id(s, 0))
        .unwrap()
        .into_iter()
        .find(|info| info.session.name == name)
        .unwrap_or_else(|| panic!("no session {name}"))
}

/// Rows left in the session side tables (parts, staged rows, rejected records) for account 0's
/// session `name`.
fn leftovers(s: &Server, name: &str) -> i64 {
    s.td.inspect()
        .session_leftovers(session(s, name).session.id)
        .unwrap()
}

fn job_status(s: &Server, job_id: &str) -> (String, String, String) {
    let job = s.td.inspect().job(job_id.parse().unwrap()).unwrap();
    (job.job_type, job.status.as_str().to_string(), job.database)
}

pub(crate) async fn ok(call: (StatusCode, Value)) -> Value {
    let (status, body) = call;
    assert_eq!(status, 200, "{body}");
    body
}

pub(crate) async fn upload(s: &Server, key: &str, name: &str, part: &str, records: &[Value]) {
    let path = format!("/v3/bulk_import/upload_part/{name}/{part}");
    ok(s.put(key, &path, gzip_msgpack(records)).await).await;
}

/// Polls `show` until the session leaves `performing`.
async fn wait_performed(s: &Server, key: &str, name: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let shown = ok(s.get(key, &format!("/v3/bulk_import/show/{name}")).await).await;
        if shown["status"] != "performing" {
            return shown;
        }
        assert!(Instant::now() < deadline, "perform did not finish: {shown}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Performs and waits: the session as shown once `ready`, and the job id.
pub(crate) async fn perform(s: &Server, key: &str, name: &str) -> (Value, String) {
    let started = ok(s.post(key, &format!("/v3/bulk_import/perform/{name}"), &[]).await).await;
    assert_eq!(started["name"], name);
    assert_eq!(started["bulk_import"], name);
    // An integer in perform's answer (TD's API description), a string in show's.
    let job_id = started["job_id"]
        .as_i64()
        .expect("perform's job_id is an integer")
        .to_string();
    let shown = wait_performed(s, key, name).await;
    assert_eq!(shown["status"], "ready", "{shown}");
    assert_eq!(shown["job_id"], job_id.as_str());
    (shown, job_id)
}

pub(crate) async fn post_ok(s: &Server, key: &str, path: &str) -> Value {
    ok(s.post(key, path, &[]).await).await
}

pub(crate) async fn get_bytes(s: &Server, key: &str, path: &str) -> (StatusCode, Vec<u8>) {
    let resp = s
        .http
        .get(s.url(path))
        .header("Authorization", format!("TD1 {key}"))
        .send()
        .await
        .unwrap();
    (resp.status(), resp.bytes().await.unwrap().to_vec())
}

fn gunzip_msgpack(body: &[u8]) -> Vec<Value> {
    let mut raw = Vec::new();
    flate2::read::MultiGzDecoder::new(body)
        .read_to_end(&mut raw)
        .unwrap();
    let mut cursor = std::io::Cursor::new(raw);
    let mut values = Vec::new();
    while (cursor.position() as usize) < cursor.get_ref().len() {
        let value = rmpv::decode::read_value(&mut cursor).unwrap();
        values.push(td_local::internals::msgpack_to_json(value));
    }
    values
}

/// The column names of a schema, in its order.
fn column_names(schema: &Value) -> Vec<&str> {
    schema
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[0].as_str().unwrap())
        .collect()
}

/// Waits until session `name` keeps only `parts` rows beside the table: the staged copies are
/// discarded just after a commit answers.
async fn wait_for_leftovers(s: &Server, name: &str, parts: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while leftovers(s, name) != parts {
        assert!(
            Instant::now() < deadline,
            "staged rows were not discarded after commit"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn lifecycle_commits_every_uploaded_row_and_extends_the_schema() {
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, 0, "bulk_db", "access");

    let created = post_ok(&s, &key, "/v3/bulk_import/create/sess_one/bulk_db/access").await;
    assert_eq!(created, json!({"name": "sess_one", "bulk_import": "sess_one"}));
    let shown = ok(s.get(&key, "/v3/bulk_import/show/sess_one").await).await;
    assert_eq!(
        shown,
        json!({"name": "sess_one", "database": "bulk_db", "table": "access", "status": "uploading",
               "upload_frozen": false, "job_id": null, "valid_records": null, "error_records": null,
               "valid_parts": null, "error_parts": null})
    );

    let first = www_access_rows(0..300);
    let second = www_access_rows(300..500);
    upload(&s, &key, "sess_one", "part_2", &second).await;
    upload(&s, &key, "sess_one", "part_1", &first).await;
    let parts = ok(s.get(&key, "/v3/bulk_import/list_parts/sess_one").await).await;
    assert_eq!(
        parts,
        json!({"name": "sess_one", "bulk_import": "sess_one", "parts": ["part_1", "part_2"]})
    );

    post_ok(&s, &key, "/v3/bulk_import/freeze/sess_one").await;
    let shown = ok(s.get(&key, "/v3/bulk_import/show/sess_one").await).await;
    assert_eq!(
        (shown["status"].as_str(), shown["upload_frozen"].as_bool()),
        (Some("uploading"), Some(true))
    );

    let (shown, job_id) = perform(&s, &key, "sess_one").await;
    assert_eq!(
        (
            &shown["valid_records"],
            &shown["error_records"],
            &shown["valid_parts"],
            &shown["error_parts"]
        ),
        (&json!(500), &json!(0), &json!(2), &json!(0))
    );
    assert_eq!(
        job_status(&s, &job_id),
        ("bulk_import".into(), "success".into(), "bulk_db".into())
    );
    assert!(
        stored_rows(&s, 0, "bulk_db", "access").is_empty(),
        "nothing visible before commit"
    );

    post_ok(&s, &key, "/v3/bulk_import/commit/sess_one").await;
    let shown = ok(s.get(&key, "/v3/bulk_import/show/sess_one").await).await;
    assert_eq!(shown["status"], "committed");
    let expected: Vec<Value> = first.into_iter().chain(second).collect();
    assert_eq!(
        stored_rows(&s, 0, "bulk_db", "access"),
        expected,
        "parts are read in name order"
    );
    let schema = table_schema(&s, 0, "bulk_db", "access");
    let columns = column_names(&schema);
    let mut sorted = columns.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        ["agent", "code", "host", "method", "path", "referer", "size", "user"],
        "schema gains every column but time: {columns:?}"
    );
    wait_for_leftovers(&s, "sess_one", 2).await;

    let listed = ok(s.get(&key, "/v3/bulk_import/list").await).await;
    assert_eq!(listed["bulk_imports"], json!([shown]));
}

#[tokio::test]
async fn commit_keeps_existing_column_types_and_adds_only_new_ones() {
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, 0, "bulk_db", "typed");
    s.td.inspect()
        .set_schema(account_id(&s, 0), "bulk_db", "typed", r#"[["code","string"]]"#)
        .unwrap();
    post_ok(&s, &key, "/v3/bulk_import/create/typed_sess/bulk_db/typed").await;
    let records = [
        json!({"time": 1, "code": 200, "note": null}),
        json!({"time": 2, "code": 404, "note": "late", "ratio": 0.5}),
    ];
    upload(&s, &key, "typed_sess", "only", &records).await;
    perform(&s, &key, "typed_sess").await;
    assert_eq!(
        table_schema(&s, 0, "bulk_db", "typed"),
        json!([["code", "string"]]),
        "not before commit"
    );
    post_ok(&s, &key, "/v3/bulk_import/commit/typed_sess").await;
    assert_eq!(
        table_schema(&s, 0, "bulk_db", "typed"),
        json!([["code", "string"], ["note", "string"], ["ratio", "double"]])
    );
    assert_eq!(stored_rows(&s, 0, "bulk_db", "typed"), records);
}

#[tokio::test]
async fn reuploading_a_part_replaces_it() {
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, 0, "bulk_db", "access");
    post_ok(&s, &key, "/v3/bulk_import/create/sess_re/bulk_db/access").await;
    upload(&s, &key, "sess_re", "part.1", &www_access_rows(0..30)).await;
    let replacement = www_access_rows(100..110);
    upload(&s, &key, "sess_re", "part.1", &replacement).await;
    let parts = ok(s.get(&key, "/v3/bulk_import/list_parts/sess_re").await).await;
    assert_eq!(parts["parts"], json!(["part.1"]));
    let (shown, _) = perform(&s, &key, "sess_re").await;
    assert_eq!(shown["valid_records"], 10);
    post_ok(&s, &key, "/v3/bulk_import/commit/sess_re").await;
    assert_eq!(stored_rows(&s, 0, "bulk_db", "access"), replacement);
}

#[tokio::test]
async fn rejected_records_and_bad_parts_are_reported_and_not_committed() {
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, 0, "bulk_db", "access");
    post_ok(&s, &key, "/v3/bulk_import/create/sess_err/bulk_db/access").await;
    let good = [www_access(1), www_access(2)];
    let rejected = [
        json!(5),
        json!({"host": "no time"}),
        json!({"time": "2014-10-03", "host": "time is text"}),
        json!(["an", "array"]),
    ];
    let mixed = [
        good[0].clone(),
        rejected[0].clone(),
        rejected[1].clone(),
        good[1].clone(),
        rejected[2].clone(),
        rejected[3].clone(),
    ];
    upload(&s, &key, "sess_err", "a_mixed", &mixed).await;
    let garbage = s
        .put(
            &key,
            "/v3/bulk_import/upload_part/sess_err/b_garbage",
            b"not gzip at all".to_vec(),
        )
        .await;
    assert_eq!(garbage.0, 200, "parts are checked by perform, not upload");
    let mut truncated = gzip_msgpack(&www_access_rows(0..50));
    truncated.truncate(truncated.len() / 2);
    ok(s.put(
        &key,
        "/v3/bulk_import/upload_part/sess_err/c_truncated",
        truncated,
    )
    .await)
    .await;
    ok(
        s.put(&key, "/v3/bulk_import/upload_part/sess_err/d_empty", Vec::new())
            .await,
    )
    .await;

    let (shown, _) = perform(&s, &key, "sess_err").await;
    assert_eq!(
        (
            &shown["valid_records"],
            &shown["error_records"],
            &shown["valid_parts"],
            &shown["error_parts"]
        ),
        (&json!(2), &json!(4), &json!(2), &json!(2)),
        "{shown}"
    );
    let (status, body) = get_bytes(&s, &key, "/v3/bulk_import/error_records/sess_err").await;
    assert_eq!(status, 200);
    assert_eq!(
        gunzip_msgpack(&body),
        rejected,
        "rejected records come back as they were sent"
    );

    post_ok(&s, &key, "/v3/bulk_import/commit/sess_err").await;
    assert_eq!(stored_rows(&s, 0, "bulk_db", "access"), good);
}

#[tokio::test]
async fn error_records_is_an_empty_body_when_nothing_was_rejected() {
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, 0, "bulk_db", "access");
    post_ok(&s, &key, "/v3/bulk_import/create/sess_clean/bulk_db/access").await;
    let (status, body) = get_bytes(&s, &key, "/v3/bulk_import/error_records/sess_clean").await;
    assert_eq!((status.as_u16(), body.len()), (200, 0), "before perform");
    upload(&s, &key, "sess_clean", "p", &www_access_rows(0..5)).await;
    perform(&s, &key, "sess_clean").await;
    let (status, body) = get_bytes(&s, &key, "/v3/bulk_import/error_records/sess_clean").await;
    assert_eq!((status.as_u16(), body.len()), (200, 0), "after a clean perform");
}

#[tokio::test]
async fn calls_in_the_wrong_state_are_409_naming_the_state() {
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, 0, "bulk_db", "access");
    post_ok(&s, &key, "/v3/bulk_import/create/sess_st/bulk_db/access").await;
    upload(&s, &key, "sess_st", "p1", &www_access_rows(0..20)).await;

    // uploading: nothing to commit yet
    let (status, body) = s.post(&key, "/v3/bulk_import/commit/sess_st", &[]).await;
    assert_error(status, &body, 409, "it is uploading");

    // frozen: parts are fixed
    post_ok(&s, &key, "/v3/bulk_import/freeze/sess_st").await;
    post_ok(&s, &key, "/v3/bulk_import/freeze/sess_st").await; // freezing twice is harmless
    let frozen = s
        .put(
            &key,
            "/v3/bulk_import/upload_part/sess_st/p2",
            gzip_msgpack(&[www_access(1)]),
        )
        .await;
    assert_error(frozen.0, &frozen.1, 409, "frozen");
    let (status, body) = s.post(&key, "/v3/bulk_import/delete_part/sess_st/p1", &[]).await;
    assert_error(status, &body, 409, "frozen");
    post_ok(&s, &key, "/v3/bulk_import/unfreeze/sess_st").await;
    post_ok(&s, &key, "/v3/bulk_import/freeze/sess_st").await;

    // ready: parts and freezing are settled, only perform (again) and commit
    perform(&s, &key, "sess_st").await;
    let late = s
        .put(
            &key,
            "/v3/bulk_import/upload_part/sess_st/p2",
            gzip_msgpack(&[www_access(1)]),
        )
        .await;
    assert_error(late.0, &late.1, 409, "it is ready");
    let (status, body) = s.post(&key, "/v3/bulk_import/delete_part/sess_st/p1", &[]).await;
    assert_error(status, &body, 409, "it is ready");
    let (status, body) = s.post(&key, "/v3/bulk_import/unfreeze/sess_st", &[]).await;
    assert_error(status, &body, 409, "it is ready");

    // committed: final
    post_ok(&s, &key, "/v3/bulk_import/commit/sess_st").await;
    for call in ["commit", "perform", "freeze", "unfreeze"] {
        let (status, body) = s
            .post(&key, &format!("/v3/bulk_import/{call}/sess_st"), &[])
            .await;
        assert_error(status, &body, 409, "it is committed");
    }
    let after = s
        .put(
            &key,
            "/v3/bulk_import/upload_part/sess_st/p3",
            gzip_msgpack(&[www_access(1)]),
        )
        .await;
    assert_error(after.0, &after.1, 409, "it is committed");
    assert_eq!(
        stored_rows(&s, 0, "bulk_db", "access").len(),
        20,
        "a second commit adds nothing"
    );
}

#[tokio::test]
async fn calls_during_perform_other_than_perform_are_409_naming_performing() {
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, 0, "bulk_db", "access");
    post_ok(&s, &key, "/v3/bulk_import/create/sess_busy/bulk_db/access").await;
    // As if a perform job were running (a real one may finish before the next request).
    s.td.inspect()
        .force_performing(account_id(&s, 0), "sess_busy")
        .unwrap();
    for call in ["commit", "freeze", "unfreeze"] {
        let (status, body) = s
            .post(&key, &format!("/v3/bulk_import/{call}/sess_busy"), &[])
            .await;
        assert_error(status, &body, 409, "it is performing");
    }
    let busy = s
        .put(
            &key,
            "/v3/bulk_import/upload_part/sess_busy/p",
            gzip_msgpack(&[www_access(1)]),
        )
        .await;
    assert_error(busy.0, &busy.1, 409, "it is performing");
}

/// TD takes a perform on a `performing` session as a new trial: the `td` toolbelt's
/// `import:perform -f` ("force start performing") sends the same call for a session that is
/// `performing` or `ready` (treasure-data/td, lib/td/command/bulk_import.rb).
#[tokio::test]
async fn performing_a_performing_session_starts_a_new_trial() {
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, 0, "bulk_db", "access");
    post_ok(&s, &key, "/v3/bulk_import/create/sess_force/bulk_db/access").await;
    let rows = www_access_rows(0..25);
    upload(&s, &key, "sess_force", "p", &rows).await;
    let stuck_job =
        s.td.inspect()
            .interrupt_perform(account_id(&s, 0), "sess_force")
            .unwrap();
    let (shown, new_job) = perform(&s, &key, "sess_force").await;
    assert_ne!(new_job, stuck_job.to_string(), "the new trial is its own job");
    assert_eq!(shown["status"], "ready");
    assert_eq!(
        shown["valid_records"], 25,
        "the new trial counts the parts, not the last trial's staged row"
    );
    post_ok(&s, &key, "/v3/bulk_import/commit/sess_force").await;
    assert_eq!(stored_rows(&s, 0, "bulk_db", "access"), rows);
}

/// A killed perform job leaves a TD session `performing` for good (embulk-output-td PR #133,
/// "Avoid stuck execution due to killed bulk import perform job"); only a new perform moves it.
#[tokio::test]
async fn a_killed_perform_job_leaves_the_session_performing_until_performed_again() {
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, 0, "bulk_db", "access");
    post_ok(&s, &key, "/v3/bulk_import/create/sess_killed/bulk_db/access").await;
    upload(&s, &key, "sess_killed", "p", &www_access_rows(0..10)).await;
    let job =
        s.td.inspect()
            .interrupt_perform(account_id(&s, 0), "sess_killed")
            .unwrap();
    let (status, body) = s.post(&key, &format!("/v3/job/kill/{job}"), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(job_status(&s, &job.to_string()).1, "killed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shown = ok(s.get(&key, "/v3/bulk_import/show/sess_killed").await).await;
    assert_eq!(shown["status"], "performing", "{shown}");
    let (status, body) = s.post(&key, "/v3/bulk_import/commit/sess_killed", &[]).await;
    assert_error(status, &body, 409, "it is performing");

    perform(&s, &key, "sess_killed").await;
    post_ok(&s, &key, "/v3/bulk_import/commit/sess_killed").await;
    assert_eq!(stored_rows(&s, 0, "bulk_db", "access").len(), 10);
}

#[tokio::test]
async fn performing_a_ready_session_again_restages_instead_of_doubling() {
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, 0, "bulk_db", "access");
    post_ok(&s, &key, "/v3/bulk_import/create/sess_twice/bulk_db/access").await;
    let rows = www_access_rows(0..40);
    upload(&s, &key, "sess_twice", "p", &rows).await;
    let (_, first_job) = perform(&s, &key, "sess_twice").await;
    let (shown, second_job) = perform(&s, &key, "sess_twice").await;
    assert_ne!(first_job, second_job, "each perform is its own job");
    assert_eq!(shown["valid_records"], 40);
    post_ok(&s, &key, "/v3/bulk_import/commit/sess_twice").await;
    assert_eq!(stored_rows(&s, 0, "bulk_db", "access"), rows);
}

#[tokio::test]
async fn a_perform_cut_short_by_a_restart_stays_performing_until_performed_again() {
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, 0, "bulk_db", "access");
    post_ok(&s, &key, "/v3/bulk_import/create/sess_cut/bulk_db/access").await;
    upload(&s, &key, "sess_cut", "p", &www_access_rows(0..10)).await;
    // The state a crash in the middle of a perform leaves: session performing under its job,
    // some rows staged.
    s.td.inspect()
        .interrupt_perform(account_id(&s, 0), "sess_cut")
        .unwrap();

    let Server { td, http, dir } = s;
    td.shutdown().await;
    let td = td_local::TdLocal::start(td_local::Config::new(dir.path()))
        .await
        .unwrap();
    let s = Server { td, http, dir };

    let shown = ok(s.get(&key, "/v3/bulk_import/show/sess_cut").await).await;
    assert_eq!(
        shown["status"], "performing",
        "a dead perform leaves the session as it was"
    );
    let job_id = shown["job_id"].as_str().unwrap().to_string();
    assert_eq!(job_status(&s, &job_id).1, "error");
    assert_eq!(
        leftovers(&s, "sess_cut"),
        1,
        "only the part is left, no staged rows"
    );
    let (status, body) = s.post(&key, "/v3/bulk_import/commit/sess_cut", &[]).await;
    assert_error(status, &body, 409, "it is performing");
    perform(&s, &key, "sess_cut").await;
    post_ok(&s, &key, "/v3/bulk_import/commit/sess_cut").await;
    assert_eq!(stored_rows(&s, 0, "bulk_db", "access").len(), 10);
}

async fn shown_count(s: &Server) -> i64 {
    let shown = ok(s.get(&s.master(0), "/v3/table/show/bulk_db/access").await).await;
    shown["count"].as_i64().unwrap()
}

/// TD's table counts lag a commit (td-client-java's TestTDClient.testBulkImport waits up to 5
/// minutes for them); rows are queryable at once.
#[tokio::test]
async fn a_tables_count_lags_a_commit_while_its_rows_are_queryable_at_once() {
    let s = Server::start_with_count_lag(Duration::from_secs(2)).await;
    let key = s.master(0);
    create_table(&s, 0, "bulk_db", "access");
    post_ok(&s, &key, "/v3/bulk_import/create/sess_lag/bulk_db/access").await;
    upload(&s, &key, "sess_lag", "p", &www_access_rows(0..30)).await;
    perform(&s, &key, "sess_lag").await;
    let committed_at = Instant::now();
    post_ok(&s, &key, "/v3/bulk_import/commit/sess_lag").await;
    assert_eq!(
        shown_count(&s).await,
        0,
        "the count still shows the table before the commit"
    );
    assert_eq!(
        stored_rows(&s, 0, "bulk_db", "access").len(),
        30,
        "rows are there at once"
    );
    while shown_count(&s).await != 30 {
        assert!(
            committed_at.elapsed() < Duration::from_secs(10),
            "the count never caught up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        committed_at.elapsed() >= Duration::from_secs(2),
        "the count lagged at least the setting"
    );
}

#[tokio::test]
async fn a_concurrent_reader_never_sees_a_partial_commit() {
    const ROWS: usize = 60_000;
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, 0, "bulk_db", "access");
    post_ok(&s, &key, "/v3/bulk_import/create/sess_atomic/bulk_db/access").await;
    for (n, chunk) in www_access_rows(0..ROWS).chunks(20_000).enumerate() {
        upload(&s, &key, "sess_atomic", &format!("p{n}"), chunk).await;
    }
    perform(&s, &key, "sess_atomic").await;

    let account = account_id(&s, 0);
    let inspect = s.td.inspect();
    let committing = Arc::new(AtomicBool::new(true));
    let reader = {
        let committing = committing.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            loop {
                let still_committing = committing.load(Ordering::SeqCst);
                let count = inspect.row_count(account, "bulk_db", "access").unwrap();
                seen.push(count);
                if !still_committing {
                    return seen;
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    post_ok(&s, &key, "/v3/bulk_import/commit/sess_atomic").await;
    committing.store(false, Ordering::SeqCst);
    let seen = reader.join().unwrap();

    assert!(
        seen.iter().all(|&n| n == 0 || n == ROWS as i64),
        "partial counts seen: {:?}",
        {
            let mut odd: Vec<_> = seen.iter().filter(|&&n| n != 0 && n != ROWS as i64).collect();
            odd.dedup();
            odd
        }
    );
    assert!(
        seen.len() > 2 && seen[0] == 0,
        "the reader ran before and during the commit: {} reads",
        seen.len()
    );
    assert_eq!(
        *seen.last().unwrap(),
        ROWS as i64,
        "the reader saw the commit land"
    );
}

#[tokio::test]
async fn write_only_key_can_run_a_whole_bulk_import() {
    let s = Server::start().await;
    let key = s.write_only(0);
    create_table(&s, 0, "bulk_db", "access");
    post_ok(&s, &key, "/v3/bulk_import/create/sess_wo/bulk_db/access").await;
    let rows = www_access_rows(0..25);
    upload(&s, &key, "sess_wo", "p1", &rows).await;
    upload(&s, &key, "sess_wo", "p2", &rows[..1]).await;
    post_ok(&s, &key, "/v3/bulk_import/delete_part/sess_wo/p2").await;
    ok(s.get(&key, "/v3/bulk_import/list_parts/sess_wo").await).await;
    ok(s.get(&key, "/v3/bulk_import/list").await).await;
    post_ok(&s, &key, "/v3/bulk_import/freeze/sess_wo").await;
    perform(&s, &key, "sess_wo").await;
    let (status, _) = get_bytes(&s, &key, "/v3/bulk_import/error_records/sess_wo").await;
    assert_eq!(status, 200);
    post_ok(&s, &key, "/v3/bulk_import/commit/sess_wo").await;
    assert_eq!(stored_rows(&s, 0, "bulk_db", "access"), rows);
    post_ok(&s, &key, "/v3/bulk_import/delete/sess_wo").await;
}

#[tokio::test]
async fn sessions_belong_to_their_account() {
    let s = Server::start().await;
    create_table(&s, 0, "bulk_db", "access");
    create_table(&s, 1, "bulk_db", "access");
    post_ok(
        &s,
        &s.master(0),
        "/v3/bulk_import/create/shared_name/bulk_db/access",
    )
    .await;
    let (status, body) = s.get(&s.master(1), "/v3/bulk_import/show/shared_name").await;
    assert_error(status, &body, 404, "shared_name");
    let listed = ok(s.get(&s.master(1), "/v3/bulk_import/list").await).await;
    assert_eq!(listed, json!({"bulk_imports": []}));
    post_ok(
        &s,
        &s.master(1),
        "/v3/bulk_import/create/shared_name/bulk_db/access",
    )
    .await;
    upload(&s, &s.master(1), "shared_name", "p", &www_access_rows(0..3)).await;
    let parts = ok(s
        .get(&s.master(0), "/v3/bulk_import/list_parts/shared_name")
        .await)
    .await;
    assert_eq!(parts["parts"], json!([]), "account 1's part is not account 0's");
}

#[tokio::test]
async fn session_names_may_hold_hyphens_as_pytd_names_them() {
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, 0, "bulk_db", "access");
    // pytd's BulkImportWriter: `session-{uuid.uuid1()}`.
    let name = "session-389b8d56-ed80-11f1-bb1d-02fc00000001";
    let created = post_ok(&s, &key, &format!("/v3/bulk_import/create/{name}/bulk_db/access")).await;
    assert_eq!(created["bulk_import"], name);
    let rows = www_access_rows(0..3);
    upload(&s, &key, name, "part-0", &rows).await;
    post_ok(&s, &key, &format!("/v3/bulk_import/freeze/{name}")).await;
    perform(&s, &key, name).await;
    post_ok(&s, &key, &format!("/v3/bulk_import/commit/{name}")).await;
    assert_eq!(stored_rows(&s, 0, "bulk_db", "access"), rows);
    // Uppercase and other punctuation stay refused.
    let (status, body) = s
        .post(&key, "/v3/bulk_import/create/Session-1/bulk_db/access", &[])
        .await;
    assert_error(status, &body, 422, "Session-1");
}

#[tokio::test]
async fn create_refuses_duplicates_missing_targets_and_bad_names() {
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, 0, "bulk_db", "access");
    post_ok(&s, &key, "/v3/bulk_import/create/sess_c/bulk_db/access").await;
    let (status, body) = s
        .post(&key, "/v3/bulk_import/create/sess_c/bulk_db/access", &[])
        .await;
    assert_error(status, &body, 409, "already exists");
    let (status, body) = s
        .post(&key, "/v3/bulk_import/create/sess_d/no_db/access", &[])
        .await;
    assert_error(status, &body, 404, "database 'no_db'");
    let (status, body) = s
        .post(&key, "/v3/bulk_import/create/sess_d/bulk_db/no_table", &[])
        .await;
    assert_error(status, &body, 404, "bulk_db.no_table");
    let (status, body) = s
        .post(&key, "/v3/bulk_import/create/Bad-Name/bulk_db/access", &[])
        .await;
    assert_error(status, &body, 422, "Bad-Name");
    let listed = ok(s.get(&key, "/v3/bulk_import/list").await).await;
    assert_eq!(
        listed["bulk_imports"].as_array().unwrap().len(),
        1,
        "nothing else stored: {listed}"
    );
    for call in ["show", "list_parts", "error_records"] {
        let (status, body) = s.get(&key, &format!("/v3/bulk_import/{call}/nope")).await;
        assert_error(status, &body, 404, "bulk import session 'nope' does not exist");
    }
}

#[tokio::test]
async fn a_part_name_with_a_slash_is_422_with_two_dots_404_and_a_json_suffix_is_kept() {
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, 0, "bulk_db", "access");
    post_ok(&s, &key, "/v3/bulk_import/create/sess_p/bulk_db/access").await;
    let body = gzip_msgpack(&[www_access(1)]);
    let (status, err) = s
        .put(&key, "/v3/bulk_import/upload_part/sess_p/a.b.c", body.clone())
        .await;
    // TD's router does not know such a path (TD's API description).
    assert_error(status, &err, 404, "more than one '.'");
    let (status, err) = s
        .put(&key, "/v3/bulk_import/upload_part/sess_p/a%2Fb", body.clone())
        .await;
    assert_error(status, &err, 422, "'/'");
    upload(&s, &key, "sess_p", "p1.json", &[www_access(1)]).await;
    let parts = ok(s.get(&key, "/v3/bulk_import/list_parts/sess_p.json").await).await;
    assert_eq!(parts["parts"], json!(["p1.json"]));
    post_ok(&s, &key, "/v3/bulk_import/delete_part/sess_p/p1.json").await;
    let parts = ok(s.get(&key, "/v3/bulk_import/list_parts/sess_p").await).await;
    assert_eq!(parts["parts"], json!([]));
    let (status, err) = s
        .post(&key, "/v3/bulk_import/delete_part/sess_p/p1.json", &[])
        .await;
    assert_error(status, &err, 404, "part 'p1.json'");
}

#[tokio::test]
async fn chunked_parts_are_accepted_and_oversized_parts_are_413() {
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, 0, "bulk_db", "access");
    post_ok(&s, &key, "/v3/bulk_import/create/sess_big/bulk_db/access").await;
    let rows = www_access_rows(0..100);
    let body = gzip_msgpack(&rows);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body.chunks(1000).map(|c| Ok(c.to_vec())).collect();
    let resp = s
        .http
        .put(s.url("/v3/bulk_import/upload_part/sess_big/chunked"))
        .header("Authorization", format!("TD1 {key}"))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());

    // One byte over the limit, streamed in 1 MiB chunks without a Content-Length.
    let limit = td_local::limits::PART_BYTES;
    let mib = bytes::Bytes::from(vec![0u8; 1 << 20]);
    let mut sizes = vec![1usize << 20; limit >> 20];
    sizes.push(1);
    let stream = futures::stream::iter(
        sizes
            .into_iter()
            .map(move |n| Ok::<_, std::io::Error>(mib.slice(..n))),
    );
    let resp = s
        .http
        .put(s.url("/v3/bulk_import/upload_part/sess_big/too_big"))
        .header("Authorization", format!("TD1 {key}"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    if let Ok(resp) = resp {
        // The server may answer before the client has sent everything.
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_error(status, &body, 413, "larger than");
    }
    let parts = ok(s.get(&key, "/v3/bulk_import/list_parts/sess_big").await).await;
    assert_eq!(
        parts["parts"],
        json!(["chunked"]),
        "the oversized part is not stored"
    );
    perform(&s, &key, "sess_big").await;
    post_ok(&s, &key, "/v3/bulk_import/commit/sess_big").await;
    assert_eq!(stored_rows(&s, 0, "bulk_db", "access"), rows);
}

#[tokio::test]
async fn deleting_a_session_removes_its_parts_staged_rows_and_errors() {
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, 0, "bulk_db", "access");
    post_ok(&s, &key, "/v3/bulk_import/create/sess_del/bulk_db/access").await;
    upload(&s, &key, "sess_del", "p", &[www_access(1), json!({"no": "time"})]).await;
    perform(&s, &key, "sess_del").await;
    assert_eq!(
        leftovers(&s, "sess_del"),
        3,
        "a part, a staged row and an error record"
    );
    let session_id = session(&s, "sess_del").session.id;
    post_ok(&s, &key, "/v3/bulk_import/delete/sess_del").await;
    let (status, body) = s.get(&key, "/v3/bulk_import/show/sess_del").await;
    assert_error(status, &body, 404, "sess_del");
    let left = s.td.inspect().session_leftovers(session_id).unwrap();
    assert_eq!(left, 0);
    assert!(stored_rows(&s, 0, "bulk_db", "access").is_empty());
    // the name is free again
    post_ok(&s, &key, "/v3/bulk_import/create/sess_del/bulk_db/access").await;
}

/// Speed: 1,000,000 `www_access` rows in ~16 MB (gzip) parts, upload + perform + commit.
/// Run: `cargo test --release -p td-local --test api -- --ignored --nocapture bulk_import_speed`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "speed measurement; run in --release"]
async fn bulk_import_speed_one_million_www_access_rows() {
    const ROWS: usize = 1_000_000;
    const PART_BYTES: usize = 16 << 20;
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, 0, "bulk_db", "access");
    post_ok(&s, &key, "/v3/bulk_import/create/sess_speed/bulk_db/access").await;

    let prepared = Instant::now();
    let parts = gzip_parts(ROWS, PART_BYTES);
    let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
    eprintln!(
        "prepared {} parts ({:?} bytes) in {:?}",
        parts.len(),
        sizes,
        prepared.elapsed()
    );

    let start = Instant::now();
    for (n, part) in parts.into_iter().enumerate() {
        let path = format!("/v3/bulk_import/upload_part/sess_speed/part_{n:04}");
        ok(s.put(&key, &path, part).await).await;
    }
    let uploaded = start.elapsed();
    post_ok(&s, &key, "/v3/bulk_import/freeze/sess_speed").await;
    let (shown, _) = perform(&s, &key, "sess_speed").await;
    let performed = start.elapsed();
    post_ok(&s, &key, "/v3/bulk_import/commit/sess_speed").await;
    let committed = start.elapsed();
    eprintln!(
        "upload {:?}, perform {:?}, commit {:?}, total {:?}",
        uploaded,
        performed - uploaded,
        committed - performed,
        committed
    );
    assert_eq!(shown["valid_records"], ROWS as i64);
    let count =
        s.td.inspect()
            .row_count(account_id(&s, 0), "bulk_db", "access")
            .unwrap();
    assert_eq!(count, ROWS as i64);
}

/// `rows` www_access rows as gzip'd msgpack parts of about `part_bytes` compressed bytes each.
fn gzip_parts(rows: usize, part_bytes: usize) -> Vec<Vec<u8>> {
    use std::io::Write;
    let new_part = || flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut parts = Vec::new();
    let mut gz = new_part();
    // msgpack is gathered in 1 MiB batches: many tiny writes make the gzip encoder crawl.
    let mut batch = Vec::with_capacity(1 << 20);
    for i in 0..rows {
        rmpv::encode::write_value(&mut batch, &td_local::internals::json_to_msgpack(&www_access(i))).unwrap();
        if batch.len() >= 1 << 20 {
            gz.write_all(&batch).unwrap();
            batch.clear();
            if gz.get_ref().len() >= part_bytes {
                parts.push(std::mem::replace(&mut gz, new_part()).finish().unwrap());
            }
        }
    }
    gz.write_all(&batch).unwrap();
    parts.push(gz.finish().unwrap());
    parts
}

/// TD is schema-on-read: a perform takes a value whatever its column's type (no error record),
/// the value is stored as it came, and the column's type is applied when it is read: a value of
/// another type reads NULL (assumed, the harsher reading), an integer in a `double` column as a
/// double, a number in a `string` column as its text, an array or map as the array or map it is.
#[tokio::test]
async fn a_value_whose_type_differs_from_its_column_is_a_valid_record_stored_and_read_as_null() {
    let s = Server::start().await;
    let key = s.master(0);
    let account = account_id(&s, 0);
    create_table(&s, 0, "bulk_db", "typed");
    s.td.inspect()
        .set_schema(
            account,
            "bulk_db",
            "typed",
            r#"[["n","long"],["d","double"],["s","string"],["a","array<string>"],["m","map<string,long>"]]"#,
        )
        .unwrap();
    post_ok(&s, &key, "/v3/bulk_import/create/sess_typed/bulk_db/typed").await;
    let records = [
        json!({"time": 1, "n": 5, "d": 1.5, "s": "x", "a": ["y"], "m": {"z": 1}}),
        json!({"time": 2, "n": null, "d": 2, "s": 3, "other": "new column"}),
        json!({"time": 3, "n": "abc", "s": 1.5}),
        json!({"time": 4, "n": 1.5, "d": "1.5", "s": true}),
        json!({"time": 5, "n": true, "a": "not an array", "m": [1]}),
        json!({"time": 6, "n": u64::MAX, "d": [2], "a": {"k": 1}, "m": "no map"}),
    ];
    // The not-flat records (arrays, maps) go the general path, the others the fast one.
    upload(&s, &key, "sess_typed", "p1", &records).await;
    let (shown, _) = perform(&s, &key, "sess_typed").await;
    assert_eq!(
        (&shown["valid_records"], &shown["error_records"]),
        (&json!(6), &json!(0)),
        "{shown}"
    );
    let (status, body) = get_bytes(&s, &key, "/v3/bulk_import/error_records/sess_typed").await;
    assert_eq!((status.as_u16(), body.len()), (200, 0), "no error record");
    post_ok(&s, &key, "/v3/bulk_import/commit/sess_typed").await;
    assert_eq!(
        stored_rows(&s, 0, "bulk_db", "typed"),
        records,
        "every value is stored as it came"
    );

    let (id, show) = crate::jobs::run(
        &s,
        "bulk_db",
        "SELECT time, n, d, s, a, m, other FROM typed ORDER BY time",
    )
    .await;
    assert_eq!(show["status"], "success", "{show}");
    assert_eq!(
        crate::jobs::result_rows(&s, &id).await,
        [
            json!([1, 5, 1.5, "x", ["y"], {"z": 1}, null]),
            json!([2, null, 2.0, "3", null, null, "new column"]),
            json!([3, null, null, "1.5", null, null, null]),
            json!([4, null, null, "true", null, null, null]),
            json!([5, null, null, null, null, null, null]),
            json!([6, null, null, null, null, null, null]),
        ]
    );
    // Array and map columns come back as arrays and maps, typed as Presto types them.
    assert_eq!(
        crate::jobs::schema(&show),
        json!([
            ["time", "bigint"],
            ["n", "bigint"],
            ["d", "double"],
            ["s", "varchar"],
            ["a", "array(varchar)"],
            ["m", "map(varchar,bigint)"],
            ["other", "varchar"]
        ])
    );
    // The table's tail reads each value as its column does too.
    let tail = crate::import::tail(&s, "bulk_db", "typed", 10).await;
    let by_time = |t: i64| tail.iter().find(|r| r["time"] == t).unwrap().clone();
    assert_eq!(
        by_time(2),
        json!({"time": 2, "n": null, "d": 2.0, "s": "3", "other": "new column"})
    );
    assert_eq!(by_time(3), json!({"time": 3, "n": null, "s": "1.5"}));
    assert_eq!(
        by_time(6),
        json!({"time": 6, "n": null, "d": null, "a": null, "m": null})
    );
}

/// TD's `double` keeps NaN and ±Infinity, and Presto returns them
/// (https://prestodb.io/docs/current/language/types.html): td-local stores them as they came
/// (a `records::double_value` object in its JSON), a query returns an infinity as one and a NaN
/// as NULL (SQLite has no NaN), a `string` column reads them as their text.
#[tokio::test]
async fn nan_and_infinities_are_stored_as_they_came_and_an_infinity_is_queried_as_one() {
    use td_local::internals::double_value;
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, 0, "bulk_db", "floats");
    let records = [
        json!({"time": 1, "d": double_value(f64::INFINITY), "s": "x"}),
        json!({"time": 2, "d": double_value(f64::NEG_INFINITY)}),
        json!({"time": 3, "d": double_value(f64::NAN)}),
        json!({"time": 4, "d": 1.5, "s": double_value(f64::INFINITY)}),
    ];
    post_ok(&s, &key, "/v3/bulk_import/create/sess_floats/bulk_db/floats").await;
    upload(&s, &key, "sess_floats", "p1", &records).await;
    let (shown, _) = perform(&s, &key, "sess_floats").await;
    assert_eq!(shown["valid_records"], json!(4), "{shown}");
    post_ok(&s, &key, "/v3/bulk_import/commit/sess_floats").await;
    assert_eq!(stored_rows(&s, 0, "bulk_db", "floats"), records);
    assert_eq!(
        table_schema(&s, 0, "bulk_db", "floats"),
        json!([["d", "double"], ["s", "string"]])
    );

    let (id, show) = crate::jobs::run(&s, "bulk_db", "SELECT time, d, s FROM floats ORDER BY time").await;
    assert_eq!(show["status"], "success", "{show}");
    assert_eq!(
        crate::jobs::result_rows(&s, &id).await,
        [
            json!([1, double_value(f64::INFINITY), "x"]),
            json!([2, double_value(f64::NEG_INFINITY), null]),
            json!([3, null, null]),
            json!([4, 1.5, "Infinity"]),
        ]
    );
    assert_eq!(crate::jobs::schema(&show)[1], json!(["d", "double"]));
}
