//! `/v3/table/*` (docs/td-api.md §3), including the atomicity of rename-with-overwrite and swap as a
//! concurrent reader sees it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::import::{create_table, import_rows, records, row_count, tail};
use crate::{assert_error, Server};

/// The table named `table` in `table/list/db`, if listed.
async fn listed(s: &Server, db: &str, table: &str) -> Option<Value> {
    let (status, body) = s.get(&s.master(0), &format!("/v3/table/list/{db}")).await;
    assert_eq!(status, 200, "{body}");
    body["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == table)
        .cloned()
}

fn schema_of(table: &Value) -> Value {
    let text = table["schema"].as_str().expect("schema is a JSON-encoded string");
    serde_json::from_str(text).unwrap()
}

fn assert_td_time(value: &Value) {
    let text = value.as_str().unwrap_or_default();
    assert!(
        chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S UTC").is_ok(),
        "{value} is not 'YYYY-MM-DD HH:MM:SS UTC'"
    );
}

#[tokio::test]
async fn a_new_table_is_shown_and_listed_with_every_field() {
    let s = Server::start().await;
    create_table(&s, "tbl_db", "events").await;
    let (status, shown) = s.get(&s.master(0), "/v3/table/show/tbl_db/events").await;
    assert_eq!(status, 200, "{shown}");
    for field in [
        "id",
        "name",
        "type",
        "count",
        "estimated_storage_size",
        "counter_updated_at",
        "last_log_timestamp",
        "created_at",
        "updated_at",
        "expire_days",
        "include_v",
        "delete_protected",
        "description",
        "schema",
    ] {
        assert!(shown.get(field).is_some(), "table lacks '{field}': {shown}");
    }
    assert_eq!(shown["name"], "events");
    assert_eq!(shown["type"], "log");
    assert_eq!(shown["count"], 0);
    assert_eq!(shown["estimated_storage_size"], 0);
    assert_eq!(shown["last_log_timestamp"], Value::Null);
    assert_eq!(shown["expire_days"], Value::Null);
    assert_eq!(shown["include_v"], true);
    assert_eq!(shown["delete_protected"], false);
    assert_eq!(shown["schema"], "[]");
    assert_td_time(&shown["created_at"]);
    assert_td_time(&shown["updated_at"]);
    assert_eq!(listed(&s, "tbl_db", "events").await, Some(shown));
}

#[tokio::test]
async fn the_table_object_reflects_imported_rows() {
    let s = Server::start().await;
    create_table(&s, "tbl_db", "events").await;
    let rows = [
        json!({"time": 1_600_000_000, "host": "a", "size": 10}),
        json!({"time": 1_600_000_300, "host": "b", "size": 2.5}),
        json!({"time": 1_600_000_100, "host": "c", "size": 7}),
    ];
    import_rows(&s, &s.master(0), "tbl_db", "events", &rows).await;
    let (_, shown) = s.get(&s.master(0), "/v3/table/show/tbl_db/events").await;
    assert_eq!(shown["count"], 3);
    // 1_600_000_300 is 2020-09-13 12:31:40 UTC: the newest row's time, not the last imported.
    assert_eq!(shown["last_log_timestamp"], "2020-09-13T12:31:40Z");
    assert!(shown["estimated_storage_size"].as_i64().unwrap() > 0, "{shown}");
    assert_eq!(schema_of(&shown), json!([["host", "string"], ["size", "long"]]));
}

#[tokio::test]
async fn table_listing_is_per_database_and_sorted() {
    let s = Server::start().await;
    for t in ["zeta", "alpha", "mid_table"] {
        create_table(&s, "tbl_db", t).await;
    }
    create_table(&s, "other_db", "elsewhere").await;
    let (status, body) = s.get(&s.master(0), "/v3/table/list/tbl_db").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["database"], "tbl_db");
    let names: Vec<&str> = body["tables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["alpha", "mid_table", "zeta"]);
    let (status, body) = s.get(&s.master(0), "/v3/table/list/missing_db").await;
    assert_error(status, &body, 404, "database 'missing_db'");
}

#[tokio::test]
async fn create_refuses_existing_tables_missing_databases_bad_names_and_other_types() {
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, "tbl_db", "events").await;
    let (status, body) = s.post(&key, "/v3/table/create/tbl_db/events/log", &[]).await;
    assert_error(status, &body, 409, "tbl_db.events");
    let (status, body) = s.post(&key, "/v3/table/create/missing_db/events/log", &[]).await;
    assert_error(status, &body, 404, "database 'missing_db'");
    for bad in ["ab", "Upper", "with-dash", &"t".repeat(129)] {
        let (status, body) = s
            .post(&key, &format!("/v3/table/create/tbl_db/{bad}/log"), &[])
            .await;
        assert_error(status, &body, 422, "is not a valid TD name for a table");
    }
    let (status, body) = s.post(&key, "/v3/table/create/tbl_db/items/item", &[]).await;
    assert_error(status, &body, 422, "'item'");
    // Without the type segment a log table is made.
    let (status, body) = s.post(&key, "/v3/table/create/tbl_db/plain", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"database": "tbl_db", "table": "plain", "type": "log"})
    );
    let names: Vec<String> = s.get(&key, "/v3/table/list/tbl_db").await.1["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["events", "plain"]);
}

#[tokio::test]
async fn delete_removes_the_table_its_rows_and_its_import_ids() {
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, "tbl_db", "events").await;
    let path = "/v3/table/import_with_id/tbl_db/events/id_1/msgpack.gz";
    let (status, _) = s.put(&key, path, crate::gzip_msgpack(&records(5, "old"))).await;
    assert_eq!(status, 200);
    let (status, body) = s.post(&key, "/v3/table/delete/tbl_db/events", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"database": "tbl_db", "table": "events", "type": "log"})
    );
    let (status, body) = s.get(&key, "/v3/table/show/tbl_db/events").await;
    assert_error(status, &body, 404, "tbl_db.events");
    let (status, body) = s.post(&key, "/v3/table/delete/tbl_db/events", &[]).await;
    assert_error(status, &body, 404, "tbl_db.events");

    // A table made again under the name starts empty and has forgotten the old import ids.
    create_table(&s, "tbl_db", "events").await;
    assert_eq!(row_count(&s, "tbl_db", "events").await, 0);
    let (status, _) = s.put(&key, path, crate::gzip_msgpack(&records(2, "new"))).await;
    assert_eq!(status, 200);
    let stored = tail(&s, "tbl_db", "events", 10).await;
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|r| r["tag"] == "new"), "{stored:?}");
}

#[tokio::test]
async fn swap_exchanges_the_contents_of_two_tables() {
    let s = Server::start_with_count_lag(Duration::ZERO).await;
    let key = s.master(0);
    create_table(&s, "tbl_db", "left_t").await;
    create_table(&s, "tbl_db", "right_t").await;
    import_rows(&s, &key, "tbl_db", "left_t", &records(3, "left")).await;
    import_rows(&s, &key, "tbl_db", "right_t", &[json!({"time": 1, "other": "x"})]).await;
    let (status, body) = s.post(&key, "/v3/table/swap/tbl_db/left_t/right_t", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"database": "tbl_db", "table1": "left_t", "table2": "right_t"})
    );
    let left = tail(&s, "tbl_db", "left_t", 10).await;
    let right = tail(&s, "tbl_db", "right_t", 10).await;
    assert_eq!(left, [json!({"time": 1, "other": "x"})]);
    assert_eq!(right.len(), 3);
    assert!(right.iter().all(|r| r["tag"] == "left"));
    // The schema travels with the rows.
    let (_, shown) = s.get(&key, "/v3/table/show/tbl_db/left_t").await;
    assert_eq!(schema_of(&shown), json!([["other", "string"]]));

    let (status, body) = s.post(&key, "/v3/table/swap/tbl_db/left_t/missing_t", &[]).await;
    assert_error(status, &body, 404, "tbl_db.missing_t");
    let (status, body) = s.post(&key, "/v3/table/swap/tbl_db/left_t/left_t", &[]).await;
    assert_error(status, &body, 422, "itself");
    assert_eq!(
        row_count(&s, "tbl_db", "left_t").await,
        1,
        "failed swaps change nothing"
    );
}

#[tokio::test]
async fn rename_moves_a_table_to_a_free_name() {
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, "tbl_db", "old_name").await;
    import_rows(&s, &key, "tbl_db", "old_name", &records(4, "moved")).await;
    let (status, body) = s
        .post(&key, "/v3/table/rename/tbl_db/old_name/new_name", &[])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"database": "tbl_db", "table": "new_name", "type": "log"})
    );
    assert_eq!(row_count(&s, "tbl_db", "new_name").await, 4);
    let (status, body) = s.get(&key, "/v3/table/show/tbl_db/old_name").await;
    assert_error(status, &body, 404, "tbl_db.old_name");
}

#[tokio::test]
async fn rename_without_overwrite_refuses_an_existing_target() {
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, "tbl_db", "source_t").await;
    create_table(&s, "tbl_db", "target_t").await;
    import_rows(&s, &key, "tbl_db", "source_t", &records(2, "src")).await;
    import_rows(&s, &key, "tbl_db", "target_t", &records(5, "tgt")).await;
    for form in [&[][..], &[("overwrite", "false")][..]] {
        let (status, body) = s
            .post(&key, "/v3/table/rename/tbl_db/source_t/target_t", form)
            .await;
        assert_error(status, &body, 409, "tbl_db.target_t");
    }
    assert_eq!(row_count(&s, "tbl_db", "source_t").await, 2);
    assert_eq!(row_count(&s, "tbl_db", "target_t").await, 5);
}

#[tokio::test]
async fn rename_with_overwrite_replaces_the_target_in_one_step() {
    let s = Server::start_with_count_lag(Duration::ZERO).await;
    let key = s.master(0);
    create_table(&s, "tbl_db", "staging").await;
    create_table(&s, "tbl_db", "target_t").await;
    import_rows(&s, &key, "tbl_db", "staging", &records(2, "new")).await;
    import_rows(&s, &key, "tbl_db", "target_t", &records(5, "old")).await;
    let (status, body) = s
        .post(
            &key,
            "/v3/table/rename/tbl_db/staging/target_t",
            &[("overwrite", "True")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let stored = tail(&s, "tbl_db", "target_t", 100).await;
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|r| r["tag"] == "new"), "{stored:?}");
    assert_eq!(listed(&s, "tbl_db", "staging").await, None);
    // A retry after success finds no source: the target is left alone.
    let (status, body) = s
        .post(
            &key,
            "/v3/table/rename/tbl_db/staging/target_t",
            &[("overwrite", "true")],
        )
        .await;
    assert_error(status, &body, 404, "tbl_db.staging");
    assert_eq!(row_count(&s, "tbl_db", "target_t").await, 2);
}

#[tokio::test]
async fn rename_refuses_bad_names_missing_sources_and_bad_flags() {
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, "tbl_db", "source_t").await;
    let (status, body) = s
        .post(&key, "/v3/table/rename/tbl_db/source_t/Bad-Name", &[])
        .await;
    assert_error(status, &body, 422, "is not a valid TD name for a table");
    let (status, body) = s
        .post(&key, "/v3/table/rename/tbl_db/source_t/source_t", &[])
        .await;
    assert_error(status, &body, 422, "own name");
    let (status, body) = s.post(&key, "/v3/table/rename/tbl_db/missing_t/new_t", &[]).await;
    assert_error(status, &body, 404, "tbl_db.missing_t");
    let (status, body) = s
        .post(
            &key,
            "/v3/table/rename/tbl_db/source_t/new_t",
            &[("overwrite", "perhaps")],
        )
        .await;
    assert_error(status, &body, 400, "overwrite");
    assert!(listed(&s, "tbl_db", "source_t").await.is_some());
}

/// Runs `change` while a reader lists `db` as fast as it can; returns every observation the
/// reader made (one `table/list` snapshot each) until `change` finished, plus one after.
async fn observe_while<F: std::future::Future<Output = ()>>(s: &Server, db: &str, change: F) -> Vec<Value> {
    let done = AtomicBool::new(false);
    let mut observations = Vec::new();
    let reader = async {
        loop {
            let finished = done.load(Ordering::SeqCst);
            let (status, body) = s.get(&s.master(0), &format!("/v3/table/list/{db}")).await;
            assert_eq!(status, 200, "{body}");
            observations.push(body["tables"].clone());
            if finished {
                break;
            }
        }
    };
    let writer = async {
        change.await;
        done.store(true, Ordering::SeqCst);
    };
    tokio::join!(reader, writer);
    observations
}

fn count_in(tables: &Value, name: &str) -> Option<i64> {
    tables
        .as_array()?
        .iter()
        .find(|t| t["name"] == name)
        .and_then(|t| t["count"].as_i64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_reader_never_sees_a_partial_rename() {
    const N: i64 = 300;
    const M: i64 = 700;
    const ROUNDS: usize = 12;
    let s = Server::start_with_count_lag(Duration::ZERO).await;
    let key = s.master(0);
    create_table(&s, "race_db", "target_t").await;
    import_rows(&s, &key, "race_db", "target_t", &records(N as usize, "n")).await;

    let observations = observe_while(&s, "race_db", async {
        for round in 0..ROUNDS {
            // The target alternates N → M → N …, each time replaced by a freshly loaded table.
            let rows = if round % 2 == 0 { M } else { N };
            create_table(&s, "race_db", "staging").await;
            import_rows(&s, &key, "race_db", "staging", &records(rows as usize, "staged")).await;
            let (status, body) = s
                .post(
                    &key,
                    "/v3/table/rename/race_db/staging/target_t",
                    &[("overwrite", "true")],
                )
                .await;
            assert_eq!(status, 200, "{body}");
        }
    })
    .await;

    let seen: BTreeSet<Option<i64>> = observations.iter().map(|t| count_in(t, "target_t")).collect();
    assert_eq!(
        seen,
        BTreeSet::from([Some(N), Some(M)]),
        "the target is always there with all old or all new rows ({} reads)",
        observations.len()
    );
    assert!(observations.len() > ROUNDS, "the reader ran throughout");
    assert_eq!(
        row_count(&s, "race_db", "target_t").await,
        N,
        "an even number of rounds ends on N"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_reader_never_sees_a_partial_swap() {
    const N: i64 = 300;
    const M: i64 = 700;
    const SWAPS: usize = 30;
    let s = Server::start_with_count_lag(Duration::ZERO).await;
    let key = s.master(0);
    create_table(&s, "race_db", "left_t").await;
    create_table(&s, "race_db", "right_t").await;
    import_rows(&s, &key, "race_db", "left_t", &records(N as usize, "n")).await;
    import_rows(&s, &key, "race_db", "right_t", &records(M as usize, "m")).await;

    let observations = observe_while(&s, "race_db", async {
        for _ in 0..SWAPS {
            let (status, body) = s.post(&key, "/v3/table/swap/race_db/left_t/right_t", &[]).await;
            assert_eq!(status, 200, "{body}");
        }
    })
    .await;

    let seen: BTreeSet<(Option<i64>, Option<i64>)> = observations
        .iter()
        .map(|t| (count_in(t, "left_t"), count_in(t, "right_t")))
        .collect();
    for pair in &seen {
        assert!(
            *pair == (Some(N), Some(M)) || *pair == (Some(M), Some(N)),
            "a reader saw {pair:?}: both tables, one of the two orders"
        );
    }
    assert!(
        observations.iter().all(|t| t.as_array().unwrap().len() == 2),
        "no stray tables"
    );
    // An even number of swaps puts everything back.
    let left = tail(&s, "race_db", "left_t", 1).await;
    assert_eq!(left[0]["tag"], "n");
    assert_eq!(row_count(&s, "race_db", "right_t").await, M);
}

#[tokio::test]
async fn update_changes_expiry_include_v_and_description() {
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, "tbl_db", "events").await;
    let (status, body) = s
        .post(
            &key,
            "/v3/table/update/tbl_db/events",
            &[
                ("expire_days", "30"),
                ("include_v", "False"),
                ("description", "web events"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, shown) = s.get(&key, "/v3/table/show/tbl_db/events").await;
    assert_eq!(
        (&shown["expire_days"], &shown["include_v"], &shown["description"]),
        (&json!(30), &json!(false), &json!("web events"))
    );
    // Only what is given changes.
    let (status, _) = s
        .post(&key, "/v3/table/update/tbl_db/events", &[("expire_days", "7")])
        .await;
    assert_eq!(status, 200);
    let (_, shown) = s.get(&key, "/v3/table/show/tbl_db/events").await;
    assert_eq!(
        (&shown["expire_days"], &shown["description"]),
        (&json!(7), &json!("web events"))
    );

    let path = "/v3/table/update/tbl_db/events";
    let (status, body) = s.post(&key, path, &[("expire_days", "soon")]).await;
    assert_error(status, &body, 400, "expire_days");
    let (status, body) = s.post(&key, path, &[("expire_days", "-1")]).await;
    assert_error(status, &body, 422, "expire_days");
    let (status, body) = s.post(&key, path, &[("include_v", "maybe")]).await;
    assert_error(status, &body, 400, "include_v");
    let (status, body) = s.post(&key, path, &[]).await;
    assert_error(status, &body, 400, "nothing to update");
    // 0 is "expiration disabled" (the toolbelt's `td table:expire DB TABLE 0`).
    let (status, body) = s.post(&key, path, &[("expire_days", "0")]).await;
    assert_eq!(status, 200, "{body}");
    let (_, shown) = s.get(&key, "/v3/table/show/tbl_db/events").await;
    assert_eq!(shown["expire_days"], Value::Null);
    let (status, body) = s
        .post(&key, "/v3/table/update/tbl_db/missing_t", &[("expire_days", "1")])
        .await;
    assert_error(status, &body, 404, "tbl_db.missing_t");
}

#[tokio::test]
async fn update_schema_replaces_the_schema() {
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, "tbl_db", "events").await;
    import_rows(&s, &key, "tbl_db", "events", &[json!({"time": 1, "old_col": 1})]).await;
    let schema = r#"[["host","string"],["size","long","bytes"]]"#;
    let (status, body) = s
        .post(
            &key,
            "/v3/table/update-schema/tbl_db/events",
            &[("schema", schema)],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, shown) = s.get(&key, "/v3/table/show/tbl_db/events").await;
    assert_eq!(
        schema_of(&shown),
        json!([["host", "string"], ["size", "long", "bytes"]])
    );
    assert_eq!(shown["count"], 1, "rows are kept");
}

#[tokio::test]
async fn update_schema_accepts_the_java_clients_json_body() {
    let s = Server::start().await;
    create_table(&s, "tbl_db", "events").await;
    let resp = s
        .http
        .post(s.url("/v3/table/update-schema/tbl_db/events"))
        .header("Authorization", format!("TD1 {}", s.master(0)))
        .json(&json!({"schema": [["code", "int"], ["agent", "string"]]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (_, shown) = s.get(&s.master(0), "/v3/table/show/tbl_db/events").await;
    assert_eq!(schema_of(&shown), json!([["code", "int"], ["agent", "string"]]));
}

#[tokio::test]
async fn schema_updates_refuse_reserved_columns_bad_types_and_missing_schemas() {
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, "tbl_db", "events").await;
    let cases = [
        (r#"[["v","string"]]"#, 422, "`v` is reserved"),
        (r#"[["time","long"]]"#, 422, "`time` is reserved"),
        (r#"[["x","string","v"]]"#, 422, "`v` is reserved"),
        (r#"[["x","varchar"]]"#, 422, "`varchar`"),
        (r#"[["x","long"],["x","string"]]"#, 422, "'x' appears twice"),
        ("not json", 400, "schema"),
    ];
    for route in ["update-schema", "append-schema"] {
        let path = format!("/v3/table/{route}/tbl_db/events");
        for (schema, code, needle) in cases {
            let (status, body) = s.post(&key, &path, &[("schema", schema)]).await;
            assert_error(status, &body, code, needle);
        }
        let (status, body) = s.post(&key, &path, &[]).await;
        assert_error(status, &body, 400, "'schema' is required");
    }
    let (_, shown) = s.get(&key, "/v3/table/show/tbl_db/events").await;
    assert_eq!(shown["schema"], "[]", "nothing changed");
}

#[tokio::test]
async fn append_schema_adds_columns_and_keeps_existing_types() {
    let s = Server::start().await;
    create_table(&s, "tbl_db", "events").await;
    import_rows(
        &s,
        &s.master(0),
        "tbl_db",
        "events",
        &[json!({"time": 1, "code": 200})],
    )
    .await;
    // Allowed with the write-only key (docs/td-api.md §3).
    let (status, body) = s
        .post(
            &s.write_only(0),
            "/v3/table/append-schema/tbl_db/events",
            &[("schema", r#"[["code","string"],["agent","string"]]"#)],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, shown) = s.get(&s.master(0), "/v3/table/show/tbl_db/events").await;
    assert_eq!(schema_of(&shown), json!([["code", "long"], ["agent", "string"]]));
}

#[tokio::test]
async fn tail_returns_the_newest_rows_first() {
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, "tbl_db", "events").await;
    import_rows(&s, &key, "tbl_db", "events", &records(25, "t")).await;
    let newest = tail(&s, "tbl_db", "events", 3).await;
    let seqs: Vec<i64> = newest.iter().map(|r| r["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [24, 23, 22]);
    assert_eq!(newest[0], json!({"time": 1_700_000_024, "seq": 24, "tag": "t"}));

    // JSON: one object per line; without count, ten rows.
    let resp = s
        .http
        .get(s.url("/v3/table/tail/tbl_db/events?format=json"))
        .header("Authorization", format!("TD1 {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 10);
    assert_eq!(lines[0]["seq"], 24);
    assert_eq!(lines[9]["seq"], 15);

    // Newest is by `time`, then the last written: across imports and out of order.
    create_table(&s, "tbl_db", "ties").await;
    let rows = |seqs: &[(i64, i64)]| -> Vec<Value> {
        seqs.iter()
            .map(|(time, seq)| json!({"time": time, "seq": seq}))
            .collect()
    };
    import_rows(
        &s,
        &key,
        "tbl_db",
        "ties",
        &rows(&[(5, 0), (1, 1), (5, 2), (3, 3)]),
    )
    .await;
    import_rows(&s, &key, "tbl_db", "ties", &rows(&[(5, 4), (2, 5)])).await;
    let newest = tail(&s, "tbl_db", "ties", 4).await;
    let seqs: Vec<i64> = newest.iter().map(|r| r["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [4, 2, 0, 3]);

    let (status, body) = s.get(&key, "/v3/table/tail/tbl_db/events?count=0").await;
    assert_error(status, &body, 400, "count");
    let (status, body) = s.get(&key, "/v3/table/tail/tbl_db/events?count=lots").await;
    assert_error(status, &body, 400, "'lots'");
    let (status, body) = s.get(&key, "/v3/table/tail/tbl_db/events?format=csv").await;
    assert_error(status, &body, 400, "'csv'");
    let (status, body) = s
        .get(&key, "/v3/table/tail/tbl_db/missing_t?format=msgpack")
        .await;
    assert_error(status, &body, 404, "tbl_db.missing_t");
}

#[tokio::test]
async fn write_only_keys_are_refused_for_master_only_table_calls() {
    let s = Server::start().await;
    create_table(&s, "tbl_db", "events").await;
    create_table(&s, "tbl_db", "second").await;
    import_rows(&s, &s.master(0), "tbl_db", "events", &records(3, "kept")).await;
    let wo = s.write_only(0);
    let schema = [("schema", r#"[["a","string"]]"#)];
    let posts: [(&str, &[(&str, &str)]); 7] = [
        ("/v3/table/create/tbl_db/new_t/log", &[]),
        ("/v3/table/delete/tbl_db/events", &[]),
        ("/v3/table/swap/tbl_db/events/second", &[]),
        ("/v3/table/rename/tbl_db/events/renamed", &[("overwrite", "true")]),
        ("/v3/table/update/tbl_db/events", &[("expire_days", "1")]),
        ("/v3/table/update-schema/tbl_db/events", &schema),
        ("/v3/table/create/tbl_db/other_t", &[]),
    ];
    for (path, form) in posts {
        let (status, body) = s.post(&wo, path, form).await;
        assert_error(status, &body, 403, "write-only");
    }
    // table/list stays master-only (an import-only key is refused it, treasure-data/td PR #38);
    // table/show is not refused (see `a_write_only_key_reads_table_show`).
    for path in [
        "/v3/table/list/tbl_db",
        "/v3/table/tail/tbl_db/events?format=msgpack",
    ] {
        let (status, body) = s.get(&wo, path).await;
        assert_error(status, &body, 403, "write-only");
    }
    let (_, listing) = s.get(&s.master(0), "/v3/table/list/tbl_db").await;
    let tables = &listing["tables"];
    assert_eq!(tables.as_array().unwrap().len(), 2, "nothing created or removed");
    assert_eq!(count_in(tables, "events"), Some(3));
    let (_, shown) = s.get(&s.master(0), "/v3/table/show/tbl_db/events").await;
    assert_eq!(
        (&shown["expire_days"], &shown["schema"]),
        (&Value::Null, &json!(r#"[["seq","long"],["tag","string"]]"#))
    );
}

/// embulk-output-td reads its target with `showTable` and never handles a 403 from it, and runs
/// with a write-only key (PRs #64 and #65).
#[tokio::test]
async fn a_write_only_key_reads_table_show() {
    let s = Server::start_with_count_lag(Duration::ZERO).await;
    create_table(&s, "tbl_db", "events").await;
    import_rows(&s, &s.master(0), "tbl_db", "events", &records(3, "kept")).await;
    let path = "/v3/table/show/tbl_db/events";
    let (status, shown) = s.get(&s.write_only(0), path).await;
    assert_eq!(status, 200, "{shown}");
    let (_, by_master) = s.get(&s.master(0), path).await;
    assert_eq!(shown, by_master, "the same table object as the master key reads");
    assert_eq!(
        (&shown["name"], &shown["count"], &shown["schema"]),
        (
            &json!("events"),
            &json!(3),
            &json!(r#"[["seq","long"],["tag","string"]]"#)
        )
    );
    let (status, body) = s.get(&s.write_only(0), "/v3/table/show/tbl_db/missing_t").await;
    assert_error(status, &body, 404, "tbl_db.missing_t");
    // Only the key's own account.
    let (status, body) = s.get(&s.write_only(1), path).await;
    assert_error(status, &body, 404, "tbl_db");
}

/// embulk-output-td's `createTableIfNotExists` ignores only 404 and 409 from `createTable`, and
/// a run with a write-only key works against TD (PR #65): creating a table that exists answers
/// 409 to a write-only key too. A new table is still refused (403).
#[tokio::test]
async fn a_write_only_key_creating_a_table_that_exists_gets_409() {
    let s = Server::start().await;
    create_table(&s, "tbl_db", "events").await;
    let wo = s.write_only(0);
    for path in [
        "/v3/table/create/tbl_db/events",
        "/v3/table/create/tbl_db/events/log",
    ] {
        let (status, body) = s.post(&wo, path, &[]).await;
        assert_error(status, &body, 409, "already exists");
    }
    let (status, body) = s.post(&wo, "/v3/table/create/tbl_db/fresh_t/log", &[]).await;
    assert_error(status, &body, 403, "write-only");
    let (status, body) = s.post(&wo, "/v3/table/create/missing_db/events/log", &[]).await;
    assert_error(status, &body, 403, "write-only");
    let (_, listing) = s.get(&s.master(0), "/v3/table/list/tbl_db").await;
    assert_eq!(listing["tables"].as_array().unwrap().len(), 1, "nothing created");
}

#[tokio::test]
async fn tables_are_private_to_their_account_and_need_a_valid_key() {
    let s = Server::start().await;
    create_table(&s, "tbl_db", "events").await;
    let other = s.master(1);
    let (status, body) = s.get(&other, "/v3/table/show/tbl_db/events").await;
    assert_error(status, &body, 404, "tbl_db");
    let (status, body) = s.post(&other, "/v3/table/delete/tbl_db/events", &[]).await;
    assert_error(status, &body, 404, "tbl_db");
    let (status, body) = s
        .get(
            "1/0123456789abcdef0123456789abcdef01234567",
            "/v3/table/list/tbl_db",
        )
        .await;
    assert_error(status, &body, 401, "invalid API key");
    assert!(listed(&s, "tbl_db", "events").await.is_some());
}

/// A rename (and a swap) leaves each name showing the count it had, for the lag; the rows under
/// the name are the new ones at once.
#[tokio::test]
async fn a_renamed_tables_count_lags_under_its_new_name_then_catches_up() {
    let s = Server::start_with_count_lag(Duration::from_secs(2)).await;
    let key = s.master(0);
    create_table(&s, "lag_db", "target_t").await;
    create_table(&s, "lag_db", "staging").await;
    import_rows(&s, &key, "lag_db", "target_t", &records(3, "old")).await;
    import_rows(&s, &key, "lag_db", "staging", &records(7, "new")).await;
    let renamed_at = Instant::now();
    let (status, body) = s
        .post(
            &key,
            "/v3/table/rename/lag_db/staging/target_t",
            &[("overwrite", "true")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        row_count(&s, "lag_db", "target_t").await,
        3,
        "the name's old count, for now"
    );
    let rows = tail(&s, "lag_db", "target_t", 100).await;
    assert_eq!(rows.len(), 7, "the new rows are read at once");
    assert!(rows.iter().all(|r| r["tag"] == "new"));
    while row_count(&s, "lag_db", "target_t").await != 7 {
        assert!(
            renamed_at.elapsed() < Duration::from_secs(10),
            "the count never caught up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(renamed_at.elapsed() >= Duration::from_secs(2));
}

/// A schema tuple is `[key, type, alias]` (td-client-java `TDColumn.parseTuple`, whose live test
/// `tableOperation` round-trips key "int_col_key_name" under the name "int_col"): SQL names the
/// column by its alias and reads the values stored under its key; the schema is shown as given.
#[tokio::test]
async fn a_schema_column_reads_the_values_of_its_key_under_its_alias() {
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, "tbl_db", "aliased").await;
    let schema = r#"[["int_col_key_name","long","int_col"],["s","string"]]"#;
    let (status, body) = s
        .post(
            &key,
            "/v3/table/update-schema/tbl_db/aliased",
            &[("schema", schema)],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let given = json!([["int_col_key_name", "long", "int_col"], ["s", "string"]]);
    let (_, shown) = s.get(&key, "/v3/table/show/tbl_db/aliased").await;
    assert_eq!(schema_of(&shown), given, "table/show");
    assert_eq!(
        schema_of(&listed(&s, "tbl_db", "aliased").await.unwrap()),
        given,
        "table/list"
    );

    // A row's value under the key is the column's; one under the alias is no column's, and
    // neither adds a column (a new column named `int_col` would repeat the alias).
    let rows = [json!({"time": 1, "int_col_key_name": 5, "int_col": 99, "s": "a"})];
    import_rows(&s, &key, "tbl_db", "aliased", &rows).await;
    let (_, shown) = s.get(&key, "/v3/table/show/tbl_db/aliased").await;
    assert_eq!(schema_of(&shown), given, "the import added no column");
    // A bulk import's commit likewise.
    use crate::bulk_import::{perform, post_ok, upload};
    post_ok(&s, &key, "/v3/bulk_import/create/sess_alias/tbl_db/aliased").await;
    let bulk = [json!({"time": 2, "int_col_key_name": 6, "int_col": 98, "s": "b"})];
    upload(&s, &key, "sess_alias", "p1", &bulk).await;
    perform(&s, &key, "sess_alias").await;
    post_ok(&s, &key, "/v3/bulk_import/commit/sess_alias").await;
    let (_, shown) = s.get(&key, "/v3/table/show/tbl_db/aliased").await;
    assert_eq!(schema_of(&shown), given, "the commit added no column");
    let (id, show) = crate::jobs::run(&s, "tbl_db", "SELECT int_col, s FROM aliased ORDER BY time").await;
    assert_eq!(show["status"], "success", "{show}");
    assert_eq!(
        crate::jobs::schema(&show),
        json!([["int_col", "bigint"], ["s", "varchar"]])
    );
    assert_eq!(
        crate::jobs::result_rows(&s, &id).await,
        [json!([5, "a"]), json!([6, "b"])]
    );
    let (_, show) = crate::jobs::run(&s, "tbl_db", "SELECT int_col_key_name FROM aliased").await;
    assert_eq!(show["status"], "error", "the key is no SQL name: {show}");

    // append-schema keeps a new tuple as given; an alias repeated in one schema is refused.
    let (status, body) = s
        .post(
            &key,
            "/v3/table/append-schema/tbl_db/aliased",
            &[("schema", r#"[["raw_k","string","nice_k"]]"#)],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, shown) = s.get(&key, "/v3/table/show/tbl_db/aliased").await;
    assert_eq!(
        schema_of(&shown),
        json!([
            ["int_col_key_name", "long", "int_col"],
            ["s", "string"],
            ["raw_k", "string", "nice_k"]
        ])
    );
    let (status, body) = s
        .post(
            &key,
            "/v3/table/update-schema/tbl_db/aliased",
            &[("schema", r#"[["a","long","x"],["b","string","x"]]"#)],
        )
        .await;
    assert_error(status, &body, 422, "'x' appears twice");
}

/// `table/create` takes what TD's API description lists (schema, expire_days, include_v,
/// description) and shows it back.
#[tokio::test]
async fn create_takes_a_schema_expiry_include_v_and_description() {
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, "tbl_db", "first").await;
    let (status, body) = s
        .post(
            &key,
            "/v3/table/create/tbl_db/made/log",
            &[
                ("schema", r#"[["code","long"],["name","string","label"]]"#),
                ("expire_days", "30"),
                ("include_v", "false"),
                ("description", "made with settings"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, shown) = s.get(&key, "/v3/table/show/tbl_db/made").await;
    assert_eq!(
        schema_of(&shown),
        json!([["code", "long"], ["name", "string", "label"]])
    );
    assert_eq!(
        (&shown["expire_days"], &shown["include_v"], &shown["description"]),
        (&json!(30), &json!(false), &json!("made with settings"))
    );
    let (status, body) = s
        .post(
            &key,
            "/v3/table/create/tbl_db/bad_expiry",
            &[("expire_days", "-3")],
        )
        .await;
    assert_error(status, &body, 422, "expire_days");
}

/// A create repeated with its `idempotent_key` answers as the first did; without it, or with
/// another key, it is the usual 409 (td-client-java's live tests `createTableWithIdempotentKey`
/// and `createTableWithoutIdempotentKey`).
#[tokio::test]
async fn a_create_repeated_with_its_idempotent_key_succeeds() {
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, "tbl_db", "first").await;
    let path = "/v3/table/create/tbl_db/idem?idempotent_key=k1";
    for _ in 0..2 {
        let (status, body) = s.post(&key, path, &[]).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = s.post(&key, "/v3/table/create/tbl_db/idem", &[]).await;
    assert_error(status, &body, 409, "already exists");
    let (status, body) = s
        .post(&key, "/v3/table/create/tbl_db/idem", &[("idempotent_key", "k2")])
        .await;
    assert_error(status, &body, 409, "already exists");
}

/// `table/update` with `detect_schema` alone adds the columns of the table's rows; and
/// `update-schema` with `ignore_duplicate_schema` keeps the first of a column named twice.
#[tokio::test]
async fn detect_schema_and_ignore_duplicate_schema_are_taken() {
    let s = Server::start().await;
    let key = s.master(0);
    create_table(&s, "tbl_db", "rows").await;
    import_rows(&s, &key, "tbl_db", "rows", &records(3, "x")).await;
    let (_, shown) = s.get(&key, "/v3/table/show/tbl_db/rows").await;
    let before = schema_of(&shown);
    assert_eq!(before.as_array().map(Vec::len), Some(2), "seq and tag: {before}");
    let (status, _) = s
        .post(&key, "/v3/table/update-schema/tbl_db/rows", &[("schema", "[]")])
        .await;
    assert_eq!(status, 200);
    let (status, body) = s
        .post(&key, "/v3/table/update/tbl_db/rows", &[("detect_schema", "true")])
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, shown) = s.get(&key, "/v3/table/show/tbl_db/rows").await;
    assert_eq!(schema_of(&shown), before, "the rows' columns are detected again");

    let twice = r#"[["a","long"],["a","string"],["b","double"]]"#;
    let path = "/v3/table/update-schema/tbl_db/rows";
    let (status, body) = s.post(&key, path, &[("schema", twice)]).await;
    assert_error(status, &body, 422, "appears twice");
    let (status, body) = s
        .post(
            &key,
            path,
            &[("schema", twice), ("ignore_duplicate_schema", "true")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, shown) = s.get(&key, "/v3/table/show/tbl_db/rows").await;
    assert_eq!(schema_of(&shown), json!([["a", "long"], ["b", "double"]]));
}
