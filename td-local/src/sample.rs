//! `sample_datasets.www_access`: 5,000 deterministic rows shaped like TD's own sample.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use td_model::schema::parse_table_schema;

use crate::accounts::Account;
use crate::catalog::{ensure_database, ensure_table, find_database, set_table_schema};
use crate::error::Result;
use crate::records::{insert_rows, Row};
use crate::store::Store;

pub(crate) const SAMPLE_DATABASE: &str = "sample_datasets";
pub(crate) const SAMPLE_TABLE: &str = "www_access";
pub(crate) const SAMPLE_ROWS: usize = 5_000;
/// 2014-10-03 07:20:45 UTC, where TD's sample starts.
pub const FIRST_TIME: i64 = 1_412_320_845;

/// The `path` (and `referer`) values of the sample.
pub const PATHS: &[&str] = &[
    "/category/electronics",
    "/category/books",
    "/category/games",
    "/category/computers",
    "/category/software",
    "/category/music",
    "/category/office",
    "/item/games/4515",
    "/item/books/2934",
    "/item/software/2265",
    "/item/electronics/3883",
    "/search/?c=Games",
    "/search/?c=Books+Electronics",
];
/// The `agent` values of the sample.
pub const AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 6.1; WOW64) AppleWebKit/535.11 (KHTML, like Gecko) Chrome/17.0.963.56 Safari/535.11",
    "Mozilla/5.0 (compatible; MSIE 9.0; Windows NT 6.1; Trident/5.0)",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_7_3) AppleWebKit/534.53.11 (KHTML, like Gecko) Version/5.1.3 Safari/534.53.10",
    "Mozilla/5.0 (Windows NT 6.0; rv:10.0.1) Gecko/20100101 Firefox/10.0.1",
    "Mozilla/4.0 (compatible; MSIE 8.0; Windows NT 6.1; Trident/4.0)",
];

/// The sample rows, identical on every machine.
pub fn www_access_rows() -> Vec<Row> {
    let mut rng = StdRng::seed_from_u64(20141003);
    (0..SAMPLE_ROWS)
        .map(|i| {
            let code = match rng.random_range(0..100) {
                0..=89 => 200,
                90..=95 => 404,
                96..=98 => 500,
                _ => 301,
            };
            let path = PATHS[rng.random_range(0..PATHS.len())];
            let referer = if rng.random_bool(0.4) { "-".to_string() } else { format!("{}?from=home", PATHS[rng.random_range(0..PATHS.len())]) };
            let record = json!({
                "time": FIRST_TIME + (i as i64) * 12,
                "host": format!("{}.{}.{}.{}", rng.random_range(1..224), rng.random_range(0..256), rng.random_range(0..256), rng.random_range(1..255)),
                "path": path,
                "method": if rng.random_bool(0.9) { "GET" } else { "POST" },
                "referer": referer,
                "code": code,
                "size": rng.random_range(30..150),
                "agent": AGENTS[rng.random_range(0..AGENTS.len())],
                "user": "-",
            });
            let Value::Object(record): Value = record else { unreachable!("json! of an object") };
            Row { time: record["time"].as_i64().unwrap_or_default(), record }
        })
        .collect()
}

/// The schema TD's sample table has (time is implicit).
pub const WWW_ACCESS_SCHEMA: &str = r#"[["host","string"],["path","string"],["method","string"],["referer","string"],["code","long"],["agent","string"],["user","string"],["size","long"]]"#;

/// The empty database every account starts with besides the sample: the one TD's page on its
/// Treasure Data connector writes into in every example (`td://@/testdb/output_table`), so those
/// and the quickstart run as written. Any other target database must be made first, as on TD
/// ("Database name: the name of an existing database"), with `db:create`.
pub(crate) const STARTER_DATABASE: &str = "testdb";

/// Gives every account its sample database and [`STARTER_DATABASE`] on first start.
pub(crate) fn ensure_sample_datasets(store: &Store, accounts: &[std::sync::Arc<Account>]) -> Result<()> {
    for account in accounts {
        store.write(|tx| {
            if find_database(tx, account.id, SAMPLE_DATABASE)?.is_some() {
                return Ok(());
            }
            ensure_database(tx, account.id, STARTER_DATABASE)?;
            ensure_database(tx, account.id, SAMPLE_DATABASE)?;
            let table_id = ensure_table(tx, account.id, SAMPLE_DATABASE, SAMPLE_TABLE)?;
            set_table_schema(tx, table_id, &parse_table_schema(WWW_ACCESS_SCHEMA)?)?;
            insert_rows(tx, table_id, &www_access_rows())
        })?;
    }
    Ok(())
}
