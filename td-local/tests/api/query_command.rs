//! `td-local query --data DIR "SQL"`: the real binary on a data directory populated through the
//! library, with a server serving it or none, printing a small aligned table (or json, csv,
//! tsv), and exiting non-zero with a message naming what failed.

use std::path::Path;
use std::process::Output;

use serde_json::json;
use td_local::{Config, TdLocal};
use tokio::process::Command;

/// Starts a server on `dir` and stores `shop.orders` of account 1 through the library.
async fn server_with_orders(dir: &Path) -> TdLocal {
    let td = TdLocal::start(Config::new(dir)).await.expect("start td-local");
    let account = td.accounts()[0].id;
    let orders = [
        json!({"time": 1_700_000_000, "item": "apple", "qty": 3, "price": 1.25, "tags": ["fruit"], "note": null}),
        json!({"time": 1_700_000_060, "item": "bread", "qty": 1, "price": 3.5, "tags": [], "note": "day old"}),
        json!({"time": 1_700_000_120, "item": "coffee beans", "qty": 12, "price": 14.0, "tags": ["bulk", "dark"], "note": "line\nbreak"}),
        json!({"time": 1_700_000_180, "item": "döner", "qty": 2, "price": 6.75, "tags": null, "note": null}),
    ];
    td.inspect().insert(account, "shop", "orders", &orders).unwrap();
    td
}

async fn query(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_td-local"))
        .arg("query")
        .arg("--data")
        .arg(dir)
        .args(args)
        .output()
        .await
        .expect("run td-local query")
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "td-local query failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// The exit code and stderr of a failed run (nothing on stdout).
fn failure(output: &Output) -> (Option<i32>, String) {
    assert!(
        output.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn query_prints_an_aligned_table_while_a_server_serves_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let td = server_with_orders(dir.path()).await;
    let output = query(
        dir.path(),
        &["SELECT item, qty, price, qty * price AS total, tags, note FROM shop.orders ORDER BY time"],
    )
    .await;
    insta::assert_snapshot!(stdout(&output));
    td.shutdown().await;
}

#[tokio::test]
async fn query_with_a_database_cuts_the_table_at_max_rows_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    server_with_orders(dir.path()).await.shutdown().await;
    let output = query(
        dir.path(),
        &[
            "--database",
            "shop",
            "--max-rows",
            "2",
            "SELECT time, item FROM orders ORDER BY time",
        ],
    )
    .await;
    insta::assert_snapshot!(stdout(&output));
    let output = query(
        dir.path(),
        &["SELECT COUNT(1) AS n FROM shop.orders WHERE qty > 99"],
    )
    .await;
    assert_eq!(stdout(&output), "n\n-\n0\n(1 row)\n");
}

#[tokio::test]
async fn query_prints_json_csv_and_tsv_with_a_line_of_column_names() {
    let dir = tempfile::tempdir().unwrap();
    server_with_orders(dir.path()).await.shutdown().await;
    let sql = "SELECT item, qty, note FROM shop.orders WHERE qty < 4 ORDER BY time";
    let mut printed = String::new();
    for format in ["json", "csv", "tsv"] {
        let output = query(dir.path(), &["--format", format, sql]).await;
        printed.push_str(&format!("--- {format}\n{}", stdout(&output)));
    }
    insta::assert_snapshot!(printed);
}

#[tokio::test]
async fn query_errors_exit_non_zero_naming_the_table_database_sql_or_directory() {
    let dir = tempfile::tempdir().unwrap();
    server_with_orders(dir.path()).await.shutdown().await;

    let (code, stderr) = failure(&query(dir.path(), &["SELECT * FROM shop.nope"]).await);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no such table: shop.nope"), "{stderr}");
    assert!(stderr.contains("SQL: SELECT * FROM shop.nope"), "{stderr}");

    let (code, stderr) = failure(&query(dir.path(), &["SELECT * FROM orders"]).await);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no such table: orders"), "{stderr}");
    assert!(
        stderr.contains("name tables as db.table, or pass --database"),
        "{stderr}"
    );

    let (code, stderr) = failure(&query(dir.path(), &["--database", "nodb", "SELECT 1"]).await);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("database 'nodb' does not exist"), "{stderr}");

    let (code, stderr) = failure(&query(dir.path(), &["SELEC item FROM shop.orders"]).await);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("syntax error"), "{stderr}");
    assert!(stderr.contains("SQL: SELEC item FROM shop.orders"), "{stderr}");

    let (code, stderr) = failure(&query(dir.path(), &["--account", "9", "SELECT 1"]).await);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no account 9"), "{stderr}");

    let empty = tempfile::tempdir().unwrap();
    let (code, stderr) = failure(&query(empty.path(), &["SELECT 1"]).await);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("holds no td-local data"), "{stderr}");
    assert_eq!(
        std::fs::read_dir(empty.path()).unwrap().count(),
        0,
        "no data directory is made"
    );
}
