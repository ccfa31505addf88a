//! The feedback loop (http-api.md, `POST /batches/{id}/ack` and `GET /feedback`): a statistics
//! office acknowledges a batch with findings about records it knows only by `record_ref`; the
//! vendor that delivered them reads each finding under its own record id. Another vendor sees
//! nothing; a finding about a record that is not in the batch is refused and changes nothing.

use crate::testkit;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use testkit::*;

async fn get(c: &Client, s: &TestServer, token: &str, path: &str) -> (StatusCode, Value) {
    let r = c.get(s.url(path)).bearer_auth(token).send().await.unwrap();
    let st = r.status();
    (st, r.json().await.unwrap_or(Value::Null))
}

async fn ack(c: &Client, s: &TestServer, batch: &str, body: Value) -> (StatusCode, Value) {
    let r = c
        .post(s.url(&format!("/api/v1/batches/{batch}/ack")))
        .bearer_auth(STATS_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let st = r.status();
    (st, r.json().await.unwrap_or(Value::Null))
}

/// Delivers `n` records `<prefix>-<i>` and returns the one ready batch they were sealed into,
/// with its items' record refs in order.
async fn deliver_and_batch(
    c: &Client,
    s: &TestServer,
    prefix: &str,
    n: usize,
) -> (String, Vec<String>) {
    let r = c
        .post(s.url("/api/v1/deliveries?format=klidas-json"))
        .bearer_auth(VENDOR_TOKEN)
        .header("Content-Type", "application/json")
        .body(klidas_delivery(
            &uuid::Uuid::new_v4().to_string(),
            prefix,
            n,
            "ergaenzung",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (st, list) = get(c, s, STATS_TOKEN, "/api/v1/batches?state=ready").await;
    assert_eq!(st, StatusCode::OK);
    let batches = list["batches"].as_array().unwrap();
    assert_eq!(batches.len(), 1, "{list}");
    let id = batches[0]["batch_id"].as_str().unwrap().to_string();
    let (_, items) = get(c, s, STATS_TOKEN, &format!("/api/v1/batches/{id}")).await;
    let refs = items["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["record_ref"].as_str().unwrap().to_string())
        .collect();
    (id, refs)
}

async fn feedback_run(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let c = Client::new();
    let (batch, refs) = deliver_and_batch(&c, &s, "fb", 3).await;
    assert_eq!(refs.len(), 3);

    // A finding about a record not in this batch: refused, the batch stays ready.
    let (st, e) = ack(
        &c,
        &s,
        &batch,
        json!({"findings": [{"record_ref": "p1.not-in-this-batch", "code": "S17", "message": "?"}]}),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["code"], "R400");
    let (_, ready) = get(&c, &s, STATS_TOKEN, "/api/v1/batches?state=ready").await;
    assert_eq!(ready["batches"].as_array().unwrap().len(), 1);

    let (st, a) = ack(
        &c,
        &s,
        &batch,
        json!({"findings": [
            {"record_ref": refs[2], "code": "S17", "message": "Alter unplausibel"},
            {"record_ref": refs[0], "code": "S03", "message": "Leistungsbeginn vor Fallbeginn"}
        ]}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{a}");
    assert_eq!(a["state"], "acknowledged");
    // A second ack changes nothing (and adds no feedback).
    let (st, _) = ack(
        &c,
        &s,
        &batch,
        json!({"findings": [{"record_ref": refs[1], "code": "X", "message": ""}]}),
    )
    .await;
    assert_eq!(st, StatusCode::OK);

    let (st, fb) = get(&c, &s, VENDOR_TOKEN, "/api/v1/feedback").await;
    assert_eq!(st, StatusCode::OK);
    let list = fb["feedback"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{fb}");
    assert_eq!(list[0]["record_id"], "fb-2");
    assert_eq!(list[0]["code"], "S17");
    assert_eq!(list[0]["message"], "Alter unplausibel");
    assert_eq!(list[0]["recipient"], "statistik-nrw");
    assert_eq!(list[0]["reporting_period"], "2026-10");
    assert!(list[0]["received_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(list[1]["record_id"], "fb-0");
    assert_eq!(list[1]["code"], "S03");
    assert_eq!(fb["next_cursor"], Value::Null);
    // No record_ref, no personal data: only the vendor's own id and the finding.
    assert!(!fb.to_string().contains("p1."), "{fb}");

    // Pages.
    let (_, page) = get(&c, &s, VENDOR_TOKEN, "/api/v1/feedback?limit=1").await;
    assert_eq!(page["feedback"].as_array().unwrap().len(), 1);
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let (_, rest) = get(
        &c,
        &s,
        VENDOR_TOKEN,
        &format!("/api/v1/feedback?limit=1&cursor={cursor}"),
    )
    .await;
    assert_eq!(rest["feedback"][0]["record_id"], "fb-0");
    assert_eq!(rest["next_cursor"], Value::Null);
    let (st, _) = get(&c, &s, VENDOR_TOKEN, "/api/v1/feedback?cursor=zz").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // Another vendor sees none of it.
    let (st, other) = get(&c, &s, OTHER_VENDOR_TOKEN, "/api/v1/feedback").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(other["feedback"].as_array().unwrap().len(), 0);

    // Findings are bounded.
    let (batch2, refs2) = deliver_and_batch(&c, &s, "fc", 1).await;
    let (st, _) = ack(
        &c,
        &s,
        &batch2,
        json!({"findings": [{"record_ref": refs2[0], "code": "", "message": ""}]}),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    s.stop().await;
}

#[tokio::test]
async fn findings_reach_the_vendor_sqlite() {
    feedback_run(Backend::Sqlite).await;
}

#[tokio::test]
async fn findings_reach_the_vendor_postgres() {
    feedback_run(Backend::Postgres).await;
}
