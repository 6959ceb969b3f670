use serde_json::Value;

use crate::{assert_error, Server};

#[tokio::test]
async fn every_account_starts_with_sample_datasets_and_an_empty_testdb() {
    let s = Server::start().await;
    for n in 0..2 {
        let (status, body) = s.get(&s.master(n), "/v3/database/list").await;
        assert_eq!(status, 200, "{body}");
        let names: Vec<&str> = body["databases"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|d| d["name"].as_str())
            .collect();
        // The sample, and the empty database TD's connector page writes into in its examples.
        assert_eq!(names, ["sample_datasets", "testdb"]);
        assert_eq!(body["databases"][0]["count"], 5000);
        assert_eq!(body["databases"][0]["organization"], Value::Null);
        assert_eq!(body["databases"][1]["count"], 0);
    }
}

#[tokio::test]
async fn database_create_show_delete() {
    let s = Server::start().await;
    let key = s.master(0);
    let (status, body) = s.post(&key, "/v3/database/create/mydb", &[]).await;
    assert_eq!((status.as_u16(), body["database"].as_str()), (200, Some("mydb")));
    let (status, body) = s.post(&key, "/v3/database/create/mydb", &[]).await;
    assert_error(status, &body, 409, "already exists");
    let (status, body) = s.get(&key, "/v3/database/show/mydb.json").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["id"].is_string(), "id is a string: {body}");
    // the other account does not see it
    let (status, body) = s.get(&s.master(1), "/v3/database/show/mydb").await;
    assert_error(status, &body, 404, "mydb");
    let (status, _) = s.post(&key, "/v3/database/delete/mydb", &[]).await;
    assert_eq!(status, 200);
    let (status, body) = s.get(&key, "/v3/database/show/mydb").await;
    assert_error(status, &body, 404, "mydb");
}

#[tokio::test]
async fn invalid_database_names_are_422() {
    let s = Server::start().await;
    for bad in ["ab", "Upper", "with-dash", &"x".repeat(129)] {
        let (status, body) = s
            .post(&s.master(0), &format!("/v3/database/create/{bad}"), &[])
            .await;
        assert_error(status, &body, 422, "is not a valid TD name for a database");
    }
}

#[tokio::test]
async fn wrong_key_is_401_and_write_only_key_is_403() {
    let s = Server::start().await;
    let (status, body) = s
        .get("1/0000000000000000000000000000000000000000", "/v3/database/list")
        .await;
    assert_error(status, &body, 401, "invalid API key");
    let (status, body) = s.get(&s.write_only(0), "/v3/database/list").await;
    assert_error(status, &body, 403, "write-only");
}

#[tokio::test]
async fn unknown_routes_are_404_json() {
    let s = Server::start().await;
    let (status, body) = s.get(&s.master(0), "/v3/nothing/here").await;
    assert_error(status, &body, 404, "no such API call");
}

#[tokio::test]
async fn accounts_and_data_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = td_local::Config::new(dir.path());
    let first = td_local::TdLocal::start(config.clone()).await.unwrap();
    let keys: Vec<String> = first.accounts().iter().map(|a| a.master_key.clone()).collect();
    let http = reqwest::Client::new();
    let created = http
        .post(format!("{}/v3/database/create/kept_db", first.base_url()))
        .header("Authorization", format!("TD1 {}", keys[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    first.shutdown().await;

    let second = td_local::TdLocal::start(config).await.unwrap();
    let again: Vec<String> = second.accounts().iter().map(|a| a.master_key.clone()).collect();
    assert_eq!(keys, again, "keys are stable across restarts");
    let shown = http
        .get(format!("{}/v3/database/show/kept_db", second.base_url()))
        .header("Authorization", format!("TD1 {}", keys[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(shown.status(), 200);
    let dbs: Value = http
        .get(format!("{}/v3/database/list", second.base_url()))
        .header("Authorization", format!("TD1 {}", keys[0]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        dbs["databases"].as_array().unwrap().len(),
        3,
        "sample and testdb not seeded twice: {dbs}"
    );
}

#[tokio::test]
async fn a_doubled_leading_slash_and_a_json_suffix_reach_the_route() {
    let s = Server::start().await;
    let (status, body) = s.get(&s.master(0), "//v3/database/list.json").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["databases"].is_array());
}
