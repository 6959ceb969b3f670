//! Fault injection and the request log, observed by a real client on real routes.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use td_local::{Config, FaultAction, FaultRule, TdLocal};

use crate::{assert_error, Server};

const LIST: &str = "/v3/database/list";

fn status(status: u16, retry_after: Option<u64>) -> FaultAction {
    FaultAction::Status { status, retry_after }
}

/// Sends `GET path` with the key and returns the raw response (or the transport error).
async fn raw_get(s: &Server, key: &str, path: &str) -> reqwest::Result<reqwest::Response> {
    s.http
        .get(s.url(path))
        .header("Authorization", format!("TD1 {key}"))
        .send()
        .await
}

/// The statuses of `n` calls of `GET /v3/database/list`.
async fn list_statuses(s: &Server, n: usize) -> Vec<u16> {
    let mut statuses = Vec::new();
    for _ in 0..n {
        statuses.push(s.get(&s.master(0), LIST).await.0.as_u16());
    }
    statuses
}

async fn database_exists(s: &Server, name: &str) -> bool {
    let (status, _) = s.get(&s.master(0), &format!("/v3/database/show/{name}")).await;
    status == StatusCode::OK
}

#[tokio::test]
async fn status_fault_answers_a_td_error_with_retry_after_and_skips_the_handler() {
    let s = Server::start().await;
    let rule = FaultRule::new(Some("POST"), "^/v3/database/create/", status(503, Some(7)));
    let id = s.td.faults().add(rule).unwrap();

    let resp = s
        .http
        .post(s.url("/v3/database/create/faulted_db"))
        .header("Authorization", format!("TD1 {}", s.master(0)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["retry-after"], "7");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_error(status, &body, 503, "injected by td-local fault rule");
    assert_eq!(body["error"], "Service Unavailable");

    assert!(s.td.faults().remove(id));
    assert!(
        !database_exists(&s, "faulted_db").await,
        "the handler must not have run"
    );
    let (status, _) = s.post(&s.master(0), "/v3/database/create/faulted_db", &[]).await;
    assert_eq!(status, 200, "without the rule the call goes through");
    assert!(database_exists(&s, "faulted_db").await);
}

#[tokio::test]
async fn status_fault_without_retry_after_sends_no_retry_after_header() {
    let s = Server::start().await;
    s.td.faults()
        .add(FaultRule::new(None, LIST, status(500, None)))
        .unwrap();
    let resp = raw_get(&s, &s.master(0), LIST).await.unwrap();
    assert_eq!(resp.status(), 500);
    assert!(resp.headers().get("retry-after").is_none());
}

#[tokio::test]
async fn reset_fault_closes_the_connection_without_a_response() {
    let s = Server::start().await;
    let id =
        s.td.faults()
            .add(FaultRule::new(
                Some("GET"),
                "^/v3/database/list$",
                FaultAction::Reset,
            ))
            .unwrap();
    let err = raw_get(&s, &s.master(0), LIST)
        .await
        .expect_err("the client must get no response");
    assert!(
        !err.is_timeout() && err.status().is_none(),
        "a connection error: {err:?}"
    );

    s.td.faults().remove(id);
    let (status, _) = s.get(&s.master(0), LIST).await;
    assert_eq!(status, 200, "the server keeps serving after a reset");
    let log = s.td.faults().requests();
    assert_eq!(log[0].status, 0, "no status was sent: {log:?}");
    assert_eq!(log[0].fault.as_deref(), Some("rule 1: reset"));
    assert_eq!((log[1].status, log[1].fault.as_deref()), (200, None));
}

#[tokio::test]
async fn delay_fault_waits_then_answers_normally() {
    let s = Server::start().await;
    s.td.faults()
        .add(FaultRule::new(None, LIST, FaultAction::Delay { millis: 400 }))
        .unwrap();
    let started = Instant::now();
    let (status, body) = s.get(&s.master(0), LIST).await;
    let elapsed = started.elapsed();
    assert_eq!(status, 200);
    assert_eq!(body["databases"][0]["name"], "sample_datasets");
    assert!(
        elapsed >= Duration::from_millis(400),
        "answered after {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "answered after {elapsed:?}");
}

#[tokio::test]
async fn truncate_fault_announces_the_full_length_and_sends_only_the_first_bytes() {
    let s = Server::start().await;
    let full = raw_get(&s, &s.master(0), LIST)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(full.len() > 40, "a body worth truncating: {} bytes", full.len());
    s.td.faults()
        .add(FaultRule::new(
            None,
            LIST,
            FaultAction::Truncate { after_bytes: 25 },
        ))
        .unwrap();

    let mut resp = raw_get(&s, &s.master(0), LIST).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.content_length(), Some(full.len() as u64));
    let mut received = Vec::new();
    let ended = loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => received.extend_from_slice(&chunk),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    assert!(ended.is_err(), "the body must fail, got {received:?}");
    assert_eq!(received, full[..25], "exactly the first 25 bytes arrive");
    let log = s.td.faults().requests();
    assert_eq!(log[1].status, 200);
    assert_eq!(log[1].fault.as_deref(), Some("rule 1: truncate after 25 bytes"));
}

#[tokio::test]
async fn nth_trigger_fires_exactly_on_the_given_matching_calls() {
    let s = Server::start().await;
    let rule = FaultRule::new(Some("GET"), "^/v3/database/list$", status(500, None)).on_calls(&[2, 4]);
    s.td.faults().add(rule).unwrap();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(s.get(&s.master(0), LIST).await.0.as_u16());
        // Calls the rule does not match are not counted.
        let (other, _) = s.get(&s.master(0), "/v3/database/show/sample_datasets").await;
        assert_eq!(other, 200);
        let (post, _) = s.post(&s.master(0), LIST, &[]).await;
        assert_ne!(post, 500, "another method does not match");
    }
    assert_eq!(statuses, [200, 500, 200, 500, 200]);
    let rules = s.td.faults().rules();
    assert_eq!((rules[0].matched, rules[0].fired), (5, 2));
}

#[tokio::test]
async fn seeded_probability_gives_the_same_pattern_for_the_same_seed() {
    let s = Server::start().await;
    let mut patterns = Vec::new();
    for seed in [42, 42, 7] {
        let rule = FaultRule::new(None, LIST, status(503, None)).with_probability(0.5, seed);
        let id = s.td.faults().add(rule).unwrap();
        patterns.push(list_statuses(&s, 32).await);
        s.td.faults().remove(id);
    }
    let failures = patterns[0].iter().filter(|&&st| st == 503).count();
    assert!(
        (4..=28).contains(&failures),
        "p=0.5 fails some calls: {:?}",
        patterns[0]
    );
    assert!(patterns[0].iter().all(|&st| st == 200 || st == 503));
    assert_eq!(patterns[0], patterns[1], "same seed, same pattern");
    assert_ne!(patterns[0], patterns[2], "another seed, another pattern");
}

#[tokio::test]
async fn the_oldest_firing_rule_acts_and_every_matching_rule_counts_the_call() {
    let s = Server::start().await;
    let faults = s.td.faults();
    faults
        .add(FaultRule::new(None, LIST, status(502, None)).on_calls(&[1]))
        .unwrap();
    faults
        .add(FaultRule::new(None, "database", status(429, Some(1))))
        .unwrap();
    assert_eq!(list_statuses(&s, 2).await, [502, 429]);
    let rules = faults.rules();
    assert_eq!((rules[0].matched, rules[0].fired), (2, 1));
    assert_eq!((rules[1].matched, rules[1].fired), (2, 2));
}

#[tokio::test]
async fn request_log_holds_method_path_status_account_and_fault() {
    let s = Server::start().await;
    s.td.faults()
        .add(FaultRule::new(
            Some("POST"),
            "^/v3/database/create/",
            status(500, None),
        ))
        .unwrap();
    s.get(&s.master(0), "/v3/database/list.json").await;
    s.get(&s.write_only(1), LIST).await;
    s.get("1/0000000000000000000000000000000000000000", LIST).await;
    s.post(&s.master(1), "/v3/database/create/logged_db", &[]).await;
    s.get(&s.master(0), "/_td_local/requests").await;

    let log: Vec<Value> =
        s.td.faults()
            .requests()
            .iter()
            .map(|r| serde_json::to_value(r).unwrap())
            .collect();
    let (a, b) = (s.td.accounts()[0].id, s.td.accounts()[1].id);
    let expected = [
        json!({"method": "GET", "path": LIST, "status": 200, "account": a, "fault": null}),
        json!({"method": "GET", "path": LIST, "status": 403, "account": b, "fault": null}),
        json!({"method": "GET", "path": LIST, "status": 401, "account": null, "fault": null}),
        json!({"method": "POST", "path": "/v3/database/create/logged_db", "status": 500, "account": b,
               "fault": "rule 1: status 500"}),
    ];
    assert_eq!(log, expected, "admin calls are not logged");
    assert_eq!(s.td.faults().clear_requests(), 4);
    assert!(s.td.faults().requests().is_empty());
}

async fn admin(s: &Server, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = s
        .http
        .request(method, s.url(path))
        .header("Authorization", format!("TD1 {}", s.master(0)));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn admin_routes_manage_rules_and_the_request_log_over_http() {
    use reqwest::Method;
    let s = Server::start().await;
    let rule = json!({
        "method": "GET",
        "path": "^/v3/database/list$",
        "action": {"kind": "status", "status": 429, "retry_after": 3},
        "trigger": {"kind": "nth", "calls": [1]}
    });
    let (st, body) = admin(&s, Method::POST, "/_td_local/faults", Some(rule.clone())).await;
    assert_eq!((st.as_u16(), &body), (200, &json!({"id": 1})));
    // The trigger defaults to always, the method to any.
    let second = json!({"path": "^/v3/database/show/", "action": {"kind": "reset"}});
    let (_, body) = admin(&s, Method::POST, "/_td_local/faults", Some(second)).await;
    assert_eq!(body, json!({"id": 2}));

    let resp = raw_get(&s, &s.master(0), LIST).await.unwrap();
    assert_eq!(
        (
            resp.status().as_u16(),
            resp.headers()["retry-after"].to_str().unwrap()
        ),
        (429, "3")
    );
    assert!(raw_get(&s, &s.master(0), "/v3/database/show/sample_datasets")
        .await
        .is_err());

    let (_, listed) = admin(&s, Method::GET, "/_td_local/faults", None).await;
    let mut first = rule;
    first["id"] = json!(1);
    first["matched"] = json!(1);
    first["fired"] = json!(1);
    assert_eq!(listed["faults"][0], first);
    assert_eq!(listed["faults"][1]["trigger"], json!({"kind": "always"}));
    assert_eq!(listed["faults"][1]["method"], Value::Null);

    let (st, body) = admin(&s, Method::DELETE, "/_td_local/faults/2", None).await;
    assert_eq!((st.as_u16(), body), (200, json!({"removed": 2})));
    let (st, body) = admin(&s, Method::DELETE, "/_td_local/faults/2", None).await;
    assert_error(st, &body, 404, "no fault rule with id \"2\"");
    let (_, body) = admin(&s, Method::DELETE, "/_td_local/faults", None).await;
    assert_eq!(body, json!({"removed": 1}));
    let (_, listed) = admin(&s, Method::GET, "/_td_local/faults", None).await;
    assert_eq!(listed, json!({"faults": []}));

    let (_, log) = admin(&s, Method::GET, "/_td_local/requests", None).await;
    let statuses: Vec<&Value> = log["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["status"])
        .collect();
    assert_eq!(statuses, [&json!(429), &json!(0)], "{log}");
    let (_, body) = admin(&s, Method::DELETE, "/_td_local/requests", None).await;
    assert_eq!(body, json!({"removed": 2}));
    let (_, log) = admin(&s, Method::GET, "/_td_local/requests", None).await;
    assert_eq!(log, json!({"requests": []}));

    let (_, accounts) = admin(&s, Method::GET, "/_td_local/accounts", None).await;
    let expected: Vec<Value> =
        s.td.accounts()
            .iter()
            .map(|a| serde_json::to_value(&**a).unwrap())
            .collect();
    assert_eq!(accounts["accounts"], json!(expected));
    assert_eq!(accounts["accounts"][0]["master_key"], json!(s.master(0)));
}

#[tokio::test]
async fn admin_refuses_bad_rules_with_td_errors() {
    use reqwest::Method;
    let s = Server::start().await;
    let cases = [
        (
            json!({"path": "(", "action": {"kind": "reset"}}),
            422,
            "invalid path regex",
        ),
        (
            json!({"path": "x", "action": {"kind": "status", "status": 200}}),
            422,
            "must be 400-599",
        ),
        (
            json!({"path": "x", "action": {"kind": "reset"}, "trigger": {"kind": "probability", "p": 1.5, "seed": 1}}),
            422,
            "invalid probability 1.5",
        ),
        (
            json!({"path": "x", "action": {"kind": "reset"}, "trigger": {"kind": "nth", "calls": [0]}}),
            422,
            "counted from 1",
        ),
        (
            json!({"path": "x", "action": {"kind": "explode"}}),
            400,
            "invalid fault rule JSON",
        ),
    ];
    for (rule, code, needle) in cases {
        let (st, body) = admin(&s, Method::POST, "/_td_local/faults", Some(rule)).await;
        assert_error(st, &body, code, needle);
    }
    assert!(s.td.faults().rules().is_empty(), "nothing was added");
}

#[tokio::test]
async fn admin_routes_are_404_without_admin() {
    let dir = tempfile::tempdir().unwrap();
    let td = TdLocal::start(Config::new(dir.path())).await.unwrap();
    let http = reqwest::Client::new();
    for (method, path) in [
        (reqwest::Method::GET, "/_td_local/faults"),
        (reqwest::Method::POST, "/_td_local/faults"),
        (reqwest::Method::GET, "/_td_local/requests"),
        (reqwest::Method::GET, "/_td_local/accounts"),
    ] {
        let resp = http
            .request(method, format!("{}{path}", td.base_url()))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_error(status, &body, 404, "no such API call");
    }
    td.shutdown().await;
}
