//! Who may call what: the write-only key's few calls (imports, every bulk-import call, append-schema,
//! table/show), 403 for all the others, and the admin routes behind a master key.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::{assert_error, gzip_msgpack, Server};

async fn call(s: &Server, method: Method, path: &str, key: Option<&str>) -> (StatusCode, Value) {
    let mut req = s.http.request(method.clone(), s.url(path));
    if let Some(key) = key {
        req = req.header("Authorization", format!("TD1 {key}"));
    }
    if method == Method::PUT {
        req = req.body(gzip_msgpack(&[serde_json::json!({"time": 1})]));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let bytes = resp.bytes().await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_write_only_key_gets_403_on_every_call_but_imports_bulk_imports_append_schema_and_table_show() {
    let s = Server::start().await;
    let account = s.td.accounts()[0].id;
    s.td.inspect().create_table(account, "keys_db", "keys_t").unwrap();
    let job = s.td.inspect().queued_job(account, "keys_db").unwrap();
    let wo = s.write_only(0);
    let refused = [
        (Method::GET, "/v3/database/list".to_string()),
        (Method::GET, "/v3/database/show/keys_db".into()),
        (Method::POST, "/v3/database/create/other_db".into()),
        (Method::POST, "/v3/database/delete/keys_db".into()),
        (Method::GET, "/v3/table/list/keys_db".into()),
        (Method::POST, "/v3/table/create/keys_db/new_t".into()),
        (Method::POST, "/v3/table/create/keys_db/new_t/log".into()),
        (Method::POST, "/v3/table/delete/keys_db/keys_t".into()),
        (Method::POST, "/v3/table/swap/keys_db/keys_t/other_t".into()),
        (Method::POST, "/v3/table/rename/keys_db/keys_t/other_t".into()),
        (
            Method::POST,
            "/v3/table/update/keys_db/keys_t?expire_days=3".into(),
        ),
        (
            Method::POST,
            "/v3/table/update-schema/keys_db/keys_t?schema=[]".into(),
        ),
        (Method::GET, "/v3/table/tail/keys_db/keys_t".into()),
        (
            Method::POST,
            "/v3/job/issue/presto/keys_db?query=SELECT%201".into(),
        ),
        (Method::GET, format!("/v3/job/show/{job}")),
        (Method::GET, format!("/v3/job/status/{job}")),
        (Method::GET, "/v3/job/status_by_domain_key/k".into()),
        (Method::POST, format!("/v3/job/kill/{job}")),
        (Method::GET, "/v3/job/list".into()),
        (Method::GET, format!("/v3/job/result/{job}")),
        (
            Method::POST,
            format!("/v3/job/result_export/{job}?result=td://@/keys_db/x"),
        ),
        (Method::GET, "/v3/result/list".into()),
        (Method::POST, "/v3/result/create/r1?url=td://@/keys_db/x".into()),
        (Method::POST, "/v3/result/delete/r1".into()),
        (Method::GET, "/v3/connections/lookup?name=r1".into()),
    ];
    for (method, path) in &refused {
        let (status, body) = call(&s, method.clone(), path, Some(&wo)).await;
        assert_error(status, &body, 403, "write-only");
    }
    let allowed = [
        (Method::PUT, "/v3/table/import/keys_db/keys_t/msgpack.gz"),
        (
            Method::PUT,
            "/v3/table/import_with_id/keys_db/keys_t/id1/msgpack.gz",
        ),
        (
            Method::POST,
            r#"/v3/table/append-schema/keys_db/keys_t?schema=[["a","long"]]"#,
        ),
        (Method::GET, "/v3/table/show/keys_db/keys_t"),
        (Method::POST, "/v3/bulk_import/create/keys_s/keys_db/keys_t"),
        (Method::GET, "/v3/bulk_import/show/keys_s"),
        (Method::GET, "/v3/bulk_import/list"),
        (Method::PUT, "/v3/bulk_import/upload_part/keys_s/p1"),
        (Method::GET, "/v3/bulk_import/list_parts/keys_s"),
        (Method::POST, "/v3/bulk_import/delete_part/keys_s/p1"),
        (Method::POST, "/v3/bulk_import/freeze/keys_s"),
        (Method::POST, "/v3/bulk_import/unfreeze/keys_s"),
        (Method::POST, "/v3/bulk_import/perform/keys_s"),
        (Method::GET, "/v3/bulk_import/error_records/keys_s"),
        (Method::POST, "/v3/bulk_import/commit/keys_s"),
        (Method::POST, "/v3/bulk_import/delete/keys_s"),
    ];
    for (method, path) in allowed {
        let (status, body) = call(&s, method, path, Some(&wo)).await;
        assert!(
            status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
            "{path}: {status} {body}"
        );
    }
    let tables = s.td.inspect().tables(account, "keys_db").unwrap();
    assert_eq!(tables, ["keys_t"], "no refused call changed the catalog");
}

#[tokio::test]
async fn admin_routes_need_a_master_key_of_an_account() {
    let s = Server::start().await;
    let routes = [
        (Method::GET, "/_td_local/accounts"),
        (Method::GET, "/_td_local/faults"),
        (Method::POST, "/_td_local/faults"),
        (Method::DELETE, "/_td_local/faults"),
        (Method::DELETE, "/_td_local/faults/1"),
        (Method::GET, "/_td_local/requests"),
        (Method::DELETE, "/_td_local/requests"),
    ];
    let unknown = format!("1/{}", "0".repeat(40));
    for (method, path) in &routes {
        let (status, body) = call(&s, method.clone(), path, None).await;
        assert_error(status, &body, 401, "Authorization");
        assert!(
            !body.to_string().contains(&s.master(0)),
            "{path} shows no key without one"
        );
        let (status, body) = call(&s, method.clone(), path, Some(&unknown)).await;
        assert_error(status, &body, 401, "invalid API key");
        let (status, body) = call(&s, method.clone(), path, Some(&s.write_only(0))).await;
        assert_error(status, &body, 403, "write-only");
    }
    // Any account's master key will do.
    let (status, body) = call(&s, Method::GET, "/_td_local/accounts", Some(&s.master(1))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accounts"][0]["master_key"], s.master(0));
    let (status, _) = call(&s, Method::GET, "/_td_local/requests", Some(&s.master(0))).await;
    assert_eq!(status, 200);
}
