//! What the rows look like in the target: where `time` comes from (result column, `time`
//! setting, source job start) and how result column names become TD column names.

use serde_json::{json, Value};

use crate::support::{sorted, Spec, TdLocalRun};

fn spec(td: &TdLocalRun, job: &str, table: &str, settings: Option<Value>) -> String {
    let spec = Spec::on(td)
        .job(job)
        .into_table(td, &format!("dstdb/{table}?mode=append"));
    settings.map_or(spec.clone(), |s| spec.settings(s)).yaml()
}

fn target_with_job(sql: &str) -> (TdLocalRun, String) {
    let td = TdLocalRun::start();
    td.insert(
        1,
        "srcdb",
        "readings",
        &[
            json!({"sensor": "a", "value": 10, "time": 1_650_000_000}),
            json!({"sensor": "b", "value": 20, "time": 1_650_000_100}),
        ],
    );
    td.create_database(2, "dstdb");
    let job = td.successful_job(1, "srcdb", sql);
    (td, job)
}

#[test]
fn time_comes_from_the_results_time_column() {
    let (td, job) = target_with_job("SELECT sensor, value, time FROM readings");
    let out = td.export(&spec(&td, &job, "out", Some(json!({"time": 1}))), &[]);
    out.expect_code(0);
    assert_eq!(out.status["export"]["time_source"], "column");
    assert_eq!(
        td.rows(2, "dstdb", "out"),
        Some(sorted(vec![
            json!({"sensor": "a", "value": 10, "time": 1_650_000_000}),
            json!({"sensor": "b", "value": 20, "time": 1_650_000_100}),
        ])),
        "the column wins over the setting"
    );
}

#[test]
fn time_comes_from_the_time_setting_when_the_result_has_none() {
    let (td, job) = target_with_job("SELECT sensor, value FROM readings");
    let out = td.export(
        &spec(&td, &job, "out", Some(json!({"time": "2024-01-31 00:00:00 UTC"}))),
        &[],
    );
    out.expect_code(0);
    assert_eq!(out.status["export"]["time_source"], "setting");
    assert_eq!(
        td.rows(2, "dstdb", "out"),
        Some(sorted(vec![
            json!({"sensor": "a", "value": 10, "time": 1_706_659_200}),
            json!({"sensor": "b", "value": 20, "time": 1_706_659_200}),
        ]))
    );
}

#[test]
fn time_comes_from_the_source_jobs_start_when_nothing_else_gives_it() {
    let (td, job) = target_with_job("SELECT sensor, value FROM readings");
    let start_at = td.job(1, &job).start_at.expect("a started job has start_at");
    let start = td_model::time::parse_td_timestamp(&start_at).expect("TD time");
    let out = td.export(&spec(&td, &job, "out", None), &[]);
    out.expect_code(0);
    assert_eq!(out.status["export"]["time_source"], "job_start");
    assert_eq!(
        td.rows(2, "dstdb", "out"),
        Some(sorted(vec![
            json!({"sensor": "a", "value": 10, "time": start}),
            json!({"sensor": "b", "value": 20, "time": start}),
        ])),
        "every row has the job's start_at ({start_at}), so a rerun writes identical rows"
    );
}

#[test]
fn a_time_column_that_is_not_an_integer_exits_1_asking_for_a_cast() {
    let (td, job) =
        target_with_job("SELECT sensor, TD_TIME_FORMAT(time, 'yyyy-MM-dd') AS time FROM readings");
    let out = td.export(&spec(&td, &job, "out", None), &[]);
    out.expect_code(1);
    for text in [out.stderr.as_str(), out.error_message()] {
        assert!(
            text.contains("the result's `time` column is varchar")
                && text.contains("cast it (CAST(... AS BIGINT) or TD_TIME_PARSE(...))"),
            "{text}"
        );
    }
    assert_eq!(out.status["error"]["class"], "ResultNotExportable");
    assert!(td.tables(2, "dstdb").is_empty(), "nothing was written");
    assert!(td.requests_to("POST", "/v3/bulk_import/create/").is_empty());
}

/// The status document's columns as `(source, target, type)`.
fn columns(doc: &Value) -> Vec<(String, String, String)> {
    doc["export"]["columns"]
        .as_array()
        .expect("columns listed")
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap().to_string();
            (s("source"), s("target"), s("type"))
        })
        .collect()
}

fn triples(list: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    list.iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect()
}

#[test]
fn unnamed_reserved_and_repeated_result_columns_get_td_names() {
    let (td, job) = target_with_job(
        "SELECT sensor, COUNT(1), MAX(value) AS v, sensor, 1600000000 AS time FROM readings GROUP BY sensor",
    );
    let out = td.export(&spec(&td, &job, "out", None), &[]);
    out.expect_code(0);
    assert_eq!(
        columns(&out.status),
        triples(&[
            ("sensor", "sensor", "string"),
            ("_col1", "_col1", "long"),
            ("v", "v_", "long"),
            ("sensor", "sensor_1", "string"),
            ("time", "time", "long"),
        ])
    );
    assert_eq!(
        td.rows(2, "dstdb", "out"),
        Some(sorted(vec![
            json!({"sensor": "a", "_col1": 1, "v_": 10, "sensor_1": "a", "time": 1_600_000_000}),
            json!({"sensor": "b", "_col1": 1, "v_": 20, "sensor_1": "b", "time": 1_600_000_000}),
        ]))
    );
    assert_eq!(
        td.schema(2, "dstdb", "out"),
        json!([
            ["sensor", "string"],
            ["_col1", "long"],
            ["v_", "long"],
            ["sensor_1", "string"]
        ])
    );
}

#[test]
fn mixed_case_and_punctuated_column_names_are_normalized_and_reported() {
    // td-local, like Presto, lowercases the names it reports; an engine that keeps them as
    // written reports this schema for the same result.
    let (td, job) = target_with_job("SELECT sensor, value, value, value, time FROM readings");
    let schema = r#"[["Sensor","varchar"],["Code","bigint"],["code","bigint"],["Max Size","bigint"],["time","bigint"]]"#;
    td.server
        .inspect()
        .set_result_schema(job.parse().unwrap(), schema)
        .unwrap();
    let out = td.export(&spec(&td, &job, "out", None), &[]);
    out.expect_code(0);
    assert_eq!(
        columns(&out.status),
        triples(&[
            ("Sensor", "sensor", "string"),
            ("Code", "code", "long"),
            ("code", "code_1", "long"),
            ("Max Size", "max_size", "long"),
            ("time", "time", "long"),
        ])
    );
    assert_eq!(
        td.rows(2, "dstdb", "out"),
        Some(sorted(vec![
            json!({"sensor": "a", "code": 10, "code_1": 10, "max_size": 10, "time": 1_650_000_000}),
            json!({"sensor": "b", "code": 20, "code_1": 20, "max_size": 20, "time": 1_650_000_100}),
        ]))
    );
}

/// TD's Presto returns an `array<…>` or `map<…>` column as an array or map (Presto's types,
/// https://prestodb.io/docs/current/language/types.html), so the export must carry them as such
/// into columns typed `array<…>`/`map<…>`, not as their JSON text in a `string` column.
#[test]
fn array_and_map_columns_arrive_as_arrays_and_maps_in_columns_of_their_types() {
    let td = TdLocalRun::start();
    td.insert(
        1,
        "srcdb",
        "tagged",
        &[
            json!({"id": 1, "tags": ["a", "b"], "attrs": {"k": "v"}, "time": 1_650_000_000}),
            json!({"id": 2, "tags": [], "attrs": {}, "time": 1_650_000_100}),
        ],
    );
    td.create_database(2, "dstdb");
    let job = td.successful_job(1, "srcdb", "SELECT id, tags, attrs, time FROM tagged");
    let out = td.export(&spec(&td, &job, "out", None), &[]);
    out.expect_code(0);
    assert_eq!(
        columns(&out.status),
        triples(&[
            ("id", "id", "long"),
            ("tags", "tags", "array<string>"),
            ("attrs", "attrs", "map<string,string>"),
            ("time", "time", "long"),
        ])
    );
    assert_eq!(
        td.rows(2, "dstdb", "out"),
        Some(sorted(vec![
            json!({"id": 1, "tags": ["a", "b"], "attrs": {"k": "v"}, "time": 1_650_000_000}),
            json!({"id": 2, "tags": [], "attrs": {}, "time": 1_650_000_100}),
        ]))
    );
    assert_eq!(
        td.schema(2, "dstdb", "out"),
        json!([
            ["id", "long"],
            ["tags", "array<string>"],
            ["attrs", "map<string,string>"]
        ])
    );
}

/// TD's `double` keeps ±Infinity (and NaN, which td-local's SQLite cannot return from a query):
/// the export carries them into the target as they came, where td-local keeps them too.
#[test]
fn infinities_arrive_as_infinities() {
    let (td, _) = target_with_job("SELECT 1");
    let job = td.successful_job(
        1,
        "srcdb",
        "SELECT 1e999 AS up, -1e999 AS down, time FROM readings",
    );
    let out = td.export(&spec(&td, &job, "out", None), &[]);
    out.expect_code(0);
    let (up, down) = (
        td_local::internals::double_value(f64::INFINITY),
        td_local::internals::double_value(f64::NEG_INFINITY),
    );
    assert_eq!(
        td.rows(2, "dstdb", "out"),
        Some(sorted(vec![
            json!({"up": up, "down": down, "time": 1_650_000_000}),
            json!({"up": up, "down": down, "time": 1_650_000_100}),
        ]))
    );
    assert_eq!(
        td.schema(2, "dstdb", "out"),
        json!([["up", "double"], ["down", "double"]])
    );
}
