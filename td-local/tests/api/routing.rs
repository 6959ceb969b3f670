//! How request paths are matched to routes.

use crate::Server;

#[tokio::test]
async fn repeated_slashes_in_the_path_are_merged() {
    // td-client-python given `endpoint="http://host:port"` (no trailing slash) requests `//v3/...`.
    let s = Server::start().await;
    let (status, body) = s
        .post(&s.master(0), "//v3/database/create//slashed_db", &[])
        .await;
    assert_eq!(
        (status.as_u16(), &body["database"]),
        (200, &serde_json::json!("slashed_db"))
    );
    let (status, body) = s
        .get(&s.master(0), "//v3//database/show/slashed_db.json?x=a//b")
        .await;
    assert_eq!(
        (status.as_u16(), &body["name"]),
        (200, &serde_json::json!("slashed_db"))
    );
    let log = s.td.faults().requests();
    assert_eq!(
        log[1].path, "/v3/database/show/slashed_db",
        "the log shows the matched path"
    );
}
