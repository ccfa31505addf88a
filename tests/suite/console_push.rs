//! Pausing a push lane from the console (admin-console.md, "Recipients"): while paused nothing
//! is sent to the recipient, the items wait, the console shows the lane paused; after resuming
//! they arrive. Both are audit events naming the administrator.

use crate::{pushkit, support, testkit};

use pushkit::*;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;
use testkit::*;

async fn admin(s: &TestServer, method: reqwest::Method, path: &str) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .request(method, s.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn post(s: &TestServer, prefix: &str, n: usize) {
    let message_id = uuid::Uuid::new_v4().to_string();
    let r = reqwest::Client::new()
        .post(s.url("/api/v1/deliveries?format=klidas-json"))
        .bearer_auth(VENDOR_TOKEN)
        .header("Content-Type", "application/json")
        .body(klidas_delivery(&message_id, prefix, n, "ergaenzung"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

async fn pause_and_resume(backend: Backend) {
    let (ca_pem, tls) = pki();
    let port = free_port();
    let mut receiver = Receiver::new(port, tls);
    receiver.start();
    let dir = tempfile::tempdir().unwrap();
    let url = match backend {
        Backend::Sqlite => support::fresh_sqlite_url(dir.path()),
        Backend::Postgres => match support::fresh_postgres_url().await {
            Some(u) => u,
            None => return,
        },
    };
    let config = push_config(dir.path(), &url, port, &ca_pem, 30, 7);
    let s = TestServer::from_config(dir, &config, url, None).await;

    // Running: items arrive.
    post(&s, "A", 3).await;
    receiver.wait_for(3, Duration::from_secs(20)).await;

    // Paused (while the lane is held with a 30 s lease): nothing more is sent.
    let lane = format!("/api/v1/admin/recipients/{JOBCENTER}");
    let (st, body) = admin(&s, reqwest::Method::POST, &format!("{lane}/pause")).await;
    assert_eq!(
        (st, body["paused"].clone()),
        (StatusCode::OK, Value::Bool(true))
    );
    let before = receiver.accepted().len();
    post(&s, "B", 4).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.accepted().len(), before, "sent while paused");
    let (_, r) = admin(&s, reqwest::Method::GET, &lane).await;
    assert_eq!(r["push"]["paused"], true, "{r}");
    assert!(r["push"]["waiting_items"].as_i64().unwrap() >= 4, "{r}");

    // Resumed: the waiting items arrive.
    let (st, _) = admin(&s, reqwest::Method::POST, &format!("{lane}/resume")).await;
    assert_eq!(st, StatusCode::OK);
    receiver.wait_for(before + 4, Duration::from_secs(20)).await;
    let (_, r) = admin(&s, reqwest::Method::GET, &lane).await;
    assert_eq!(r["push"]["paused"], false, "{r}");

    let (_, events) = admin(
        &s,
        reqwest::Method::GET,
        "/api/v1/admin/audit/events?recipient=jobcenter-test",
    )
    .await;
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .filter(|k| k.starts_with("lane_"))
        .collect();
    assert_eq!(kinds, ["lane_paused", "lane_resumed"]);
    s.stop().await;
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_push_lane_sends_nothing_until_resumed_sqlite() {
    pause_and_resume(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_push_lane_sends_nothing_until_resumed_postgres() {
    pause_and_resume(Backend::Postgres).await;
}
