//! The setup commands of the `td-local` binary (`env`, `db:create`, `table:create`,
//! `table:import`, `job:issue`, `result:create`) on a fresh data directory, with no server
//! running (each starts one for its step), and then while one serves the directory.

use std::path::Path;
use std::process::Output;

use serde_json::{json, Value};

use crate::cli::Binary;

fn td_local(dir: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_td-local"))
        .args(args)
        .current_dir(dir)
        .env_remove("TD_API_KEY")
        .output()
        .expect("td-local runs")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = td_local(dir, args);
    assert!(
        out.status.success(),
        "td-local {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn rows(dir: &Path, sql: &str) -> Vec<Value> {
    let text = ok(dir, &["query", "--format", "json", sql]);
    text.lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn a_data_directory_is_set_up_from_the_command_line() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();

    let env = ok(dir, &["env", "--target-var", "PARTNER_APIKEY"]);
    let lines: Vec<&str> = env.lines().collect();
    assert!(lines[0].starts_with("export TD_API_KEY='1/"), "{env}");
    assert!(lines[1].starts_with("export PARTNER_APIKEY='2/"), "{env}");

    // CSV: a header line; a column with a fraction anywhere is a column of doubles.
    std::fs::write(
        dir.join("orders.csv"),
        "order_id,amount,note\n1,1200,first\n2,350.5,\n",
    )
    .unwrap();
    let out = td_local(dir, &["table:import", "shop", "orders", "orders.csv"]);
    assert!(!out.status.success(), "no database yet: nothing is made unasked");
    ok(
        dir,
        &[
            "table:import",
            "shop",
            "orders",
            "orders.csv",
            "--auto-create",
            "--time",
            "1706745600",
        ],
    );
    assert_eq!(
        rows(
            dir,
            "SELECT order_id, amount, note, time FROM shop.orders ORDER BY order_id"
        ),
        vec![
            json!([1, 1200.0, "first", 1706745600]),
            json!([2, 350.5, null, 1706745600])
        ]
    );

    std::fs::write(
        dir.join("events.jsonl"),
        "{\"kind\": \"a\", \"time\": 10}\n\n{\"kind\": \"b\"}\n",
    )
    .unwrap();
    ok(
        dir,
        &[
            "table:create",
            "shop",
            "events",
            "--schema",
            r#"[["kind","string"]]"#,
        ],
    );
    ok(
        dir,
        &["table:import", "shop", "events", "events.jsonl", "--time", "20"],
    );
    assert_eq!(
        rows(dir, "SELECT kind, time FROM shop.events ORDER BY time"),
        vec![json!(["a", 10]), json!(["b", 20])]
    );

    // A query job, waited for; its id is what a spec's job_id names. A failing one exits 1.
    let id = ok(dir, &["job:issue", "shop", "SELECT COUNT(1) AS n FROM orders"]);
    assert_eq!(id.trim(), "1");
    let out = td_local(dir, &["job:issue", "shop", "SELECT nope FROM nowhere"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such table: nowhere"));

    // While a server serves the directory, the steps go through it.
    let server = Binary::start(&dir.join(".td-local"), false).await;
    ok(dir, &["result:create", "mydb", "td://@/testdb"]);
    ok(
        dir,
        &[
            "job:issue",
            "--result",
            "mydb:counted",
            "shop",
            "SELECT COUNT(1) AS n FROM orders",
        ],
    );
    assert_eq!(rows(dir, "SELECT n FROM testdb.counted"), vec![json!([2])]);
    let out = td_local(dir, &["db:create", "shop"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    let out = td_local(dir, &["connection:create", "partner", "td://@/testdb"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("td-local serve --admin"),
        "a server without admin routes cannot make one: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(server);
}
