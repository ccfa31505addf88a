//! Rate limits through the real server: a principal over its limit gets `429 R429` with
//! `Retry-After` while other principals go on unaffected, and failed authentications from one
//! address are limited without slowing callers that authenticate.

use crate::testkit;

use reqwest::{Client, StatusCode};
use serde_json::Value;
use std::time::Duration;
use testkit::*;

async fn get(c: &Client, s: &TestServer, token: &str, path: &str) -> reqwest::Response {
    c.get(s.url(path)).bearer_auth(token).send().await.unwrap()
}

/// The `Retry-After` seconds of a `429`, after checking its error body.
async fn assert_429(r: reqwest::Response) -> u64 {
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r
        .headers()
        .get("Retry-After")
        .expect("a 429 has Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After is whole seconds");
    assert!(retry >= 1, "Retry-After {retry}");
    let e: Value = r.json().await.expect("a JSON error body");
    assert_eq!(e["code"], "R429", "{e}");
    assert!(e["details"].is_array(), "{e}");
    retry
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_over_its_limit_gets_429_and_others_do_not() {
    let s = TestServer::start_with(
        Backend::Sqlite,
        "[limits]\nrequests_per_second = 1\nburst = 3\n",
    )
    .await
    .unwrap();
    let c = Client::new();
    for i in 0..3 {
        let r = get(&c, &s, VENDOR_TOKEN, "/api/v1/deliveries").await;
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "request {i} is within the burst"
        );
    }
    let retry = assert_429(get(&c, &s, VENDOR_TOKEN, "/api/v1/deliveries").await).await;
    assert_eq!(
        retry, 1,
        "one request per second frees a slot within a second"
    );
    // Every endpoint counts against the same principal: a POST is refused before its body is
    // read, and nothing is stored.
    let r = c
        .post(s.url("/api/v1/deliveries"))
        .bearer_auth(VENDOR_TOKEN)
        .body(klidas_delivery(
            "7f1c2d3e-0000-4000-8000-000000000001",
            "RL",
            1,
            "teil",
        ))
        .send()
        .await
        .unwrap();
    assert_429(r).await;
    // Other principals are unaffected: another vendor, a recipient, an admin.
    for (token, path) in [
        (OTHER_VENDOR_TOKEN, "/api/v1/deliveries"),
        (STATS_TOKEN, "/api/v1/batches"),
        (ADMIN_TOKEN, "/api/v1/admin/mappings"),
    ] {
        let r = get(&c, &s, token, path).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    // Health and metrics are not limited.
    for _ in 0..10 {
        let r = c.get(s.url("/health/live")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    // After Retry-After, the principal may call again.
    tokio::time::sleep(Duration::from_millis(retry * 1000 + 100)).await;
    let r = get(&c, &s, VENDOR_TOKEN, "/api/v1/deliveries").await;
    assert_eq!(r.status(), StatusCode::OK);
    let list: Value = r.json().await.unwrap();
    assert!(
        list["deliveries"].as_array().unwrap().is_empty(),
        "the refused POST stored nothing: {list}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_are_limited_per_address() {
    let s = TestServer::start_with(
        Backend::Sqlite,
        "[limits]\nfailed_auth_per_second = 1\nfailed_auth_burst = 2\n",
    )
    .await
    .unwrap();
    let c = Client::new();
    let wrong = "wrong-token-0123456789abcdef0123456789abcdef";
    for _ in 0..2 {
        let r = get(&c, &s, wrong, "/api/v1/deliveries").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    assert_429(get(&c, &s, wrong, "/api/v1/deliveries").await).await;
    // No credentials at all count as a failure too.
    assert_429(c.get(s.url("/api/v1/batches")).send().await.unwrap()).await;
    // A caller with a valid token from the same address is not slowed down.
    for _ in 0..5 {
        let r = get(&c, &s, VENDOR_TOKEN, "/api/v1/deliveries").await;
        assert_eq!(r.status(), StatusCode::OK);
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_defaults_do_not_limit_ordinary_use() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let c = Client::new();
    for _ in 0..150 {
        let r = get(&c, &s, VENDOR_TOKEN, "/api/v1/deliveries").await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = get(&c, &s, "not-a-token", "/api/v1/deliveries").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    s.stop().await;
}
