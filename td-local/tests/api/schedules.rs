//! `/v3/schedule/*`: the seed's "For Scheduled Jobs" flow (`td sched:create … --result`) against
//! td-local: a schedule's runs are jobs whose results go where `result` says, at the times its
//! cron gives in its time zone, after its delay.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{assert_error, Server};

const QUERY: &str = "SELECT TD_SCHEDULED_TIME() AS scheduled, COUNT(1) AS cnt FROM www_access";

async fn create_database(s: &Server, db: &str) {
    let (status, body) = s
        .post(&s.master(0), &format!("/v3/database/create/{db}"), &[])
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Waits for job `id` to end; returns `job/show`.
async fn finished(s: &Server, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, show) = s.get(&s.master(0), &format!("/v3/job/show/{id}")).await;
        if show["status"] == "success" || show["status"] == "error" {
            return show;
        }
        assert!(Instant::now() < deadline, "job {id} did not finish: {show}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `scheduled` column of the rows of `db.table`, sorted.
fn scheduled_times(s: &Server, db: &str, table: &str) -> Vec<i64> {
    let account = s.td.accounts()[0].id;
    let mut times: Vec<i64> =
        s.td.inspect()
            .rows(account, db, table)
            .unwrap()
            .unwrap_or_default()
            .into_iter()
            .map(|row| row.record["scheduled"].as_i64().unwrap())
            .collect();
    times.sort();
    times
}

fn epoch(iso: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(iso.as_str().expect("an ISO 8601 time"))
        .unwrap()
        .timestamp()
}

#[tokio::test]
async fn a_schedule_runs_its_query_at_its_cron_times_into_its_result() {
    let s = Server::start().await;
    let key = s.master(0);
    create_database(&s, "sched_db").await;
    let (status, made) = s
        .post(
            &key,
            "/v3/schedule/create/codes_hourly",
            &[
                ("cron", "10 * * * *"),
                ("timezone", "Asia/Tokyo"),
                ("delay", "30"),
                ("query", QUERY),
                ("database", "sample_datasets"),
                ("type", "presto"),
                ("result", "td://@/sched_db/sched_out?mode=append"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{made}");
    // `start` (what the clients read back) is the first scheduled time: ten past an hour.
    let start = epoch(&made["start"]);
    assert_eq!(start % 3_600, 600, "{made}");
    assert!(start > chrono::Utc::now().timestamp(), "{made}");

    let (_, listed) = s.get(&key, "/v3/schedule/list").await;
    let one = &listed["schedules"][0];
    assert_eq!(
        (
            &one["name"],
            &one["cron"],
            &one["timezone"],
            &one["delay"],
            &one["database"]
        ),
        (
            &json!("codes_hourly"),
            &json!("10 * * * *"),
            &json!("Asia/Tokyo"),
            &json!(30),
            &json!("sample_datasets")
        )
    );
    assert_eq!(epoch(&one["next_time"]), start);

    // Not before the delay has passed; then one run, for that scheduled time.
    assert!(s.td.fire_schedules_at(start + 29).await.unwrap().is_empty());
    let fired = s.td.fire_schedules_at(start + 30).await.unwrap();
    assert_eq!(fired.len(), 1);
    let show = finished(&s, &fired[0].to_string()).await;
    assert_eq!(show["status"], "success", "{show}");
    assert_eq!(scheduled_times(&s, "sched_db", "sched_out"), vec![start]);
    let (_, listed) = s.get(&key, "/v3/schedule/list").await;
    assert_eq!(epoch(&listed["schedules"][0]["next_time"]), start + 3_600);

    // Run by hand for a chosen time, twice along the cron.
    let (status, ran) = s
        .post(
            &key,
            &format!("/v3/schedule/run/codes_hourly/{}", start - 3_600),
            &[("num", "2")],
        )
        .await;
    assert_eq!(status, 200, "{ran}");
    let jobs = ran["jobs"].as_array().unwrap().clone();
    assert_eq!(jobs.len(), 2, "{ran}");
    for job in &jobs {
        assert!(job["job_id"].is_i64(), "{ran}");
        finished(&s, &job["job_id"].to_string()).await;
    }
    assert_eq!(
        scheduled_times(&s, "sched_db", "sched_out"),
        vec![start - 3_600, start, start]
    );

    // History: every run, newest first, with its scheduled time.
    let (_, history) = s.get(&key, "/v3/schedule/history/codes_hourly").await;
    assert_eq!(history["count"], 3, "{history}");
    let ids: Vec<String> = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap().to_string())
        .collect();
    let mut newest_first = ids.clone();
    newest_first.sort_by_key(|id| std::cmp::Reverse(id.parse::<i64>().unwrap()));
    assert_eq!(ids, newest_first);
    assert!(history["history"][0]["scheduled_at"].is_string(), "{history}");

    // A new cron sets the next time afresh; delete answers what it removed.
    let (status, updated) = s
        .post(
            &key,
            "/v3/schedule/update/codes_hourly",
            &[("cron", "@daily"), ("timezone", "UTC")],
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(epoch(&updated["next_time"]) % 86_400, 0, "{updated}");
    let (status, gone) = s.post(&key, "/v3/schedule/delete/codes_hourly", &[]).await;
    assert_eq!(status, 200, "{gone}");
    assert_eq!((&gone["cron"], &gone["query"]), (&json!("@daily"), &json!(QUERY)));
    let (status, body) = s.post(&key, "/v3/schedule/delete/codes_hourly", &[]).await;
    assert_error(status, &body, 404, "codes_hourly");
}

#[tokio::test]
async fn bad_schedules_are_refused_and_leave_nothing() {
    let s = Server::start().await;
    let key = s.master(0);
    let base = [
        ("query", "SELECT 1"),
        ("database", "sample_datasets"),
        ("type", "presto"),
    ];
    let with = |extra: (&'static str, &'static str)| {
        let mut form = base.to_vec();
        form.push(extra);
        form
    };
    for (form, code, needle) in [
        (with(("cron", "0 * * * * *")), 422, "five fields"),
        (with(("cron", "61 * * * *")), 422, "not a schedule"),
        (with(("timezone", "Mars/Olympus")), 422, "not a time zone"),
        (with(("delay", "-5")), 422, "delay"),
        (with(("retry_limit", "33")), 422, "between 0 and 32"),
        (with(("result", "td://@/no_such_db")), 422, "names no table"),
        (
            vec![("query", "SELECT 1"), ("database", "no_such_db")],
            404,
            "no_such_db",
        ),
        (vec![("database", "sample_datasets")], 422, "'query'"),
    ] {
        let (status, body) = s.post(&key, "/v3/schedule/create/bad", &form).await;
        assert_error(status, &body, code, needle);
    }
    let (_, listed) = s.get(&key, "/v3/schedule/list").await;
    assert_eq!(listed["schedules"], json!([]));

    let (status, body) = s.post(&key, "/v3/schedule/create/twice", &base).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["start"], Value::Null, "no cron: runs only when asked");
    let (status, body) = s.post(&key, "/v3/schedule/create/twice", &base).await;
    assert_error(status, &body, 409, "already exists");
    let (status, body) = s
        .post(&key, "/v3/schedule/update/twice", &[("cron", "every day")])
        .await;
    assert_error(status, &body, 422, "five fields");
    let (status, body) = s.post(&key, "/v3/schedule/run/twice/0", &[("num", "2")]).await;
    assert_error(status, &body, 422, "no cron");
    let (status, body) = s.post(&key, "/v3/schedule/run/twice/0", &[("num", "11")]).await;
    assert_error(status, &body, 422, "num must be from 1 to 10");
    let (status, body) = s.get(&s.write_only(0), "/v3/schedule/list").await;
    assert_error(status, &body, 403, "schedules");
}

/// The server's own tick issues a run when its time comes (a minute's cron: this test waits up
/// to a minute and a bit, beside the others).
#[tokio::test]
async fn the_server_issues_a_run_when_its_time_comes() {
    let s = Server::start().await;
    let key = s.master(0);
    let (status, made) = s
        .post(
            &key,
            "/v3/schedule/create/every_minute",
            &[
                ("cron", "* * * * *"),
                ("query", "SELECT 1 AS one"),
                ("database", "sample_datasets"),
                ("type", "presto"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{made}");
    let start = epoch(&made["start"]);
    let deadline = Instant::now() + Duration::from_secs(75);
    loop {
        let (_, history) = s.get(&key, "/v3/schedule/history/every_minute").await;
        if history["count"] == 1 {
            let run = &history["history"][0];
            let show = finished(&s, run["job_id"].as_str().unwrap()).await;
            assert_eq!(show["status"], "success", "{show}");
            assert_eq!(
                show["scheduled_at"],
                td_model::time::td_timestamp(start),
                "{show}"
            );
            return;
        }
        assert!(Instant::now() < deadline, "no run by {start}: {history}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
