//! The real server on port 0 with a fresh database, driven over HTTP: deliveries, receipts,
//! idempotency, batches, acknowledgements, authorisation. Every test runs on SQLite and, when
//! `WEICHE_TEST_POSTGRES_URL` is set (always in CI), on PostgreSQL.

use crate::testkit;

use reqwest::{Client, StatusCode};
use serde_json::Value;
use testkit::*;

fn examples(case: &str) -> Vec<u8> {
    let local = repo()
        .join("conformance-tests/cases/klidas-json")
        .join(case)
        .join("input.json");
    std::fs::read(local).expect("golden case input")
}

async fn post(
    c: &Client,
    s: &TestServer,
    token: &str,
    query: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let r = c
        .post(s.url(&format!("/api/v1/deliveries{query}")))
        .bearer_auth(token)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

async fn get(c: &Client, s: &TestServer, token: &str, path: &str) -> (StatusCode, Value) {
    let r = c.get(s.url(path)).bearer_auth(token).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn ready_batches(c: &Client, s: &TestServer, token: &str) -> Vec<Value> {
    let (st, v) = get(c, s, token, "/api/v1/batches?state=ready").await;
    assert_eq!(st, 200, "{v}");
    v["batches"].as_array().unwrap().clone()
}

async fn batch_items(c: &Client, s: &TestServer, token: &str, id: &str) -> Vec<Value> {
    let (st, v) = get(c, s, token, &format!("/api/v1/batches/{id}")).await;
    assert_eq!(st, 200, "{v}");
    v["items"].as_array().unwrap().clone()
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(s) = super::TestServer::start(super::Backend::Sqlite).await {
                        super::$name(&s).await;
                        s.stop().await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(s) = super::TestServer::start(super::Backend::Postgres).await {
                        super::$name(&s).await;
                        s.stop().await;
                    }
                }
            )*
        }
    };
}

both_backends!(
    basic_delivery_is_pulled_and_acknowledged,
    mixed_errors_routes_only_accepted_records,
    repeated_delivery_is_a_duplicate,
    same_key_other_content_is_a_conflict,
    idempotency_key_header_for_payloads_without_id,
    whole_rejections_store_nothing,
    full_snapshot_mode_is_recorded,
    authorisation_and_foreign_resources,
    deliveries_are_listed_newest_first_with_cursor,
    health_endpoints,
    batch_as_ndjson,
);

async fn basic_delivery_is_pulled_and_acknowledged(s: &TestServer) {
    let c = Client::new();
    let (st, r) = post(
        &c,
        s,
        VENDOR_TOKEN,
        "?format=klidas-json",
        examples("basic"),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["status"], "E1");
    assert_eq!(r["accepted"], 4);
    assert_eq!(r["duplicate"], false);
    assert_eq!(r["routed"]["statistik-nrw"], 4);
    assert_eq!(r["routed"]["statistik-zwei"], 4);
    assert_eq!(r["reporting_periods"], serde_json::json!(["2026-10"]));
    let id = r["delivery_id"].as_str().unwrap();

    let (st, again) = get(&c, s, VENDOR_TOKEN, &format!("/api/v1/deliveries/{id}")).await;
    assert_eq!(st, 200);
    assert_eq!(again, r);

    let batches = ready_batches(&c, s, STATS_TOKEN).await;
    assert_eq!(batches.len(), 1, "{batches:?}");
    assert_eq!(batches[0]["items"], 4);
    let batch_id = batches[0]["batch_id"].as_str().unwrap().to_string();
    let items = batch_items(&c, s, STATS_TOKEN, &batch_id).await;
    assert_eq!(items.len(), 4);
    let text = serde_json::to_string(&items).unwrap();
    for personal in [
        "Doğan",
        "Köhler",
        "Kalker Hauptstraße",
        "KL-55012",
        "0221 5550193",
        "1994-08-03",
    ] {
        assert!(
            !text.contains(personal),
            "{personal} leaked into the statistics batch"
        );
    }
    for item in &items {
        assert_eq!(item["type"], "record");
        assert!(item["record_ref"].as_str().unwrap().starts_with("p1.t1."));
        assert_eq!(item["source"]["delivery_id"], id);
        assert_eq!(item["policy_version"].as_str().unwrap().len(), 64);
    }
    // The same record gets a different pseudonym at the other statistics office.
    let other = ready_batches(&c, s, OTHER_STATS_TOKEN).await;
    let other_items = batch_items(
        &c,
        s,
        OTHER_STATS_TOKEN,
        other[0]["batch_id"].as_str().unwrap(),
    )
    .await;
    assert_ne!(other_items[0]["record_ref"], items[0]["record_ref"]);
    assert!(
        other_items[0]["record_ref"]
            .as_str()
            .unwrap()
            .starts_with("p1.t2.")
    );

    // Fetching again gives the same batch; acknowledging is idempotent.
    assert_eq!(batch_items(&c, s, STATS_TOKEN, &batch_id).await, items);
    let ack = |body: Value| {
        c.post(s.url(&format!("/api/v1/batches/{batch_id}/ack")))
            .bearer_auth(STATS_TOKEN)
            .json(&body)
            .send()
    };
    let first = ack(serde_json::json!({"findings": [{"record_ref": items[0]["record_ref"], "code": "P100", "message": "plausibility"}]}))
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(
        first.json::<Value>().await.unwrap()["state"],
        "acknowledged"
    );
    let second = ack(serde_json::json!({"findings": []})).await.unwrap();
    assert_eq!(second.status(), 200);
    assert!(ready_batches(&c, s, STATS_TOKEN).await.is_empty());
    let (_, acked) = get(&c, s, STATS_TOKEN, "/api/v1/batches?state=acknowledged").await;
    assert_eq!(acked["batches"].as_array().unwrap().len(), 1);
    // The other office has not acknowledged: its batch stays ready.
    assert_eq!(ready_batches(&c, s, OTHER_STATS_TOKEN).await.len(), 1);
}

async fn mixed_errors_routes_only_accepted_records(s: &TestServer) {
    let c = Client::new();
    let (st, r) = post(&c, s, VENDOR_TOKEN, "", examples("mixed-errors")).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["status"], "E3");
    assert_eq!(
        (
            r["received"].as_u64(),
            r["accepted"].as_u64(),
            r["rejected"].as_u64()
        ),
        (Some(8), Some(2), Some(6))
    );
    let codes: Vec<&str> = r["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["F001", "F002", "F003", "F004", "F005", "F006"]);
    assert!(
        r["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["code"] == "W002")
    );
    assert_eq!(r["routed"]["statistik-nrw"], 2);
    let batches = ready_batches(&c, s, STATS_TOKEN).await;
    assert_eq!(batches[0]["items"], 2);
}

async fn repeated_delivery_is_a_duplicate(s: &TestServer) {
    let c = Client::new();
    let (_, first) = post(&c, s, VENDOR_TOKEN, "", examples("basic")).await;
    let (st, second) = post(&c, s, VENDOR_TOKEN, "", examples("basic")).await;
    assert_eq!(st, 200);
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["delivery_id"], first["delivery_id"]);
    // Another vendor may use the same message id: idempotency is per vendor.
    let (st, other) = post(
        &c,
        s,
        OTHER_VENDOR_TOKEN,
        "?format=klidas-json",
        examples("basic"),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(other["duplicate"], false);
    // Nothing was stored twice: 4 items per vendor.
    let batches = ready_batches(&c, s, STATS_TOKEN).await;
    let total: i64 = batches.iter().map(|b| b["items"].as_i64().unwrap()).sum();
    assert_eq!(total, 8);
    let (_, list) = get(&c, s, VENDOR_TOKEN, "/api/v1/deliveries").await;
    assert_eq!(list["deliveries"].as_array().unwrap().len(), 1);
}

async fn same_key_other_content_is_a_conflict(s: &TestServer) {
    let c = Client::new();
    let body = String::from_utf8(examples("basic")).unwrap();
    let (st, _) = post(&c, s, VENDOR_TOKEN, "", body.clone().into_bytes()).await;
    assert_eq!(st, 200);
    let changed = body.replace("ASD Kalk", "ASD Deutz");
    let (st, e) = post(&c, s, VENDOR_TOKEN, "", changed.into_bytes()).await;
    assert_eq!(st, 409, "{e}");
    assert_eq!(e["code"], "S101");
    assert!(e["message"].is_string());
}

async fn idempotency_key_header_for_payloads_without_id(s: &TestServer) {
    // klidas-json always carries its own id; the header is used only when the payload has none,
    // so two deliveries with different ids but one header are both stored.
    let c = Client::new();
    let send = |id: &str| {
        c.post(s.url("/api/v1/deliveries"))
            .bearer_auth(VENDOR_TOKEN)
            .header("Idempotency-Key", "same-header-key")
            .body(klidas_delivery(id, id, 3, "ergaenzung"))
            .send()
    };
    let a: Value = send("11111111-0000-4000-8000-000000000001")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let b: Value = send("11111111-0000-4000-8000-000000000002")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(a["duplicate"], false);
    assert_eq!(b["duplicate"], false);
    assert_ne!(a["delivery_id"], b["delivery_id"]);
}

async fn whole_rejections_store_nothing(s: &TestServer) {
    let c = Client::new();
    let body = String::from_utf8(examples("basic")).unwrap();
    // Truncated body: X000.
    let (st, r) = post(
        &c,
        s,
        VENDOR_TOKEN,
        "",
        body.as_bytes()[..body.len() / 2].to_vec(),
    )
    .await;
    assert_eq!(st, 422, "{r}");
    assert_eq!(r["status"], "E4");
    assert_eq!(r["errors"][0]["code"], "X000");
    assert_eq!(r["errors"][0]["record"], Value::Null);
    // Unsupported version: V000.
    let (st, r) = post(
        &c,
        s,
        VENDOR_TOKEN,
        "",
        body.replace("\"klidas\": \"1.0\"", "\"klidas\": \"2.0\"")
            .into_bytes(),
    )
    .await;
    assert_eq!(st, 400, "{r}");
    assert_eq!(r["errors"][0]["code"], "V000");
    // Invalid UTF-8: S001.
    let mut bad = body.clone().into_bytes();
    let pos = body.find("Doğan").unwrap();
    bad[pos + 1] = 0xff;
    let (st, r) = post(&c, s, VENDOR_TOKEN, "", bad).await;
    assert_eq!(st, 422, "{r}");
    assert_eq!(r["errors"][0]["code"], "S001");
    // Every record rejected: S020.
    let all_bad = klidas_delivery("22222222-0000-4000-8000-000000000001", "B", 3, "ergaenzung")
        .replace("SGB II", "SGB XII")
        .replace("Suchthilfe", "SGB XII");
    let (st, r) = post(&c, s, VENDOR_TOKEN, "", all_bad.into_bytes()).await;
    assert_eq!(st, 422, "{r}");
    assert_eq!(r["status"], "E4");
    assert_eq!(r["rejected"], 3);
    assert!(
        r["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["code"] == "S020")
    );
    // Unknown format: V000 as an error body.
    let (st, e) = post(
        &c,
        s,
        VENDOR_TOKEN,
        "?format=nonesuch",
        body.clone().into_bytes(),
    )
    .await;
    assert_eq!(st, 400);
    assert_eq!(e["code"], "V000");
    // Nothing of it reached a recipient; the rejected receipts can be read.
    assert!(ready_batches(&c, s, STATS_TOKEN).await.is_empty());
    let (_, list) = get(&c, s, VENDOR_TOKEN, "/api/v1/deliveries").await;
    assert_eq!(list["deliveries"].as_array().unwrap().len(), 4);
    // The rejected whole deliveries did not claim the message id: a corrected one goes through.
    let (st, r) = post(&c, s, VENDOR_TOKEN, "", body.into_bytes()).await;
    assert_eq!(st, 200);
    assert_eq!(r["duplicate"], false);
}

async fn full_snapshot_mode_is_recorded(s: &TestServer) {
    let c = Client::new();
    let (st, r) = post(
        &c,
        s,
        VENDOR_TOKEN,
        "?mode=partial",
        examples("full-snapshot"),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["mode"], "full", "the payload's lieferart wins over ?mode");
    let (_, stored) = get(
        &c,
        s,
        VENDOR_TOKEN,
        &format!("/api/v1/deliveries/{}", r["delivery_id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(stored["mode"], "full");
}

async fn authorisation_and_foreign_resources(s: &TestServer) {
    let c = Client::new();
    let (_, r) = post(&c, s, VENDOR_TOKEN, "", examples("basic")).await;
    let id = r["delivery_id"].as_str().unwrap();
    // No or bad token: 401 T070.
    let resp = c.get(s.url("/api/v1/deliveries")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "T070");
    let (st, e) = get(
        &c,
        s,
        "wrong-token-wrong-token-wrong-token-wrong",
        "/api/v1/batches",
    )
    .await;
    assert_eq!((st.as_u16(), e["code"].as_str()), (401, Some("T070")));
    // Wrong role: 403 T071.
    let (st, e) = post(&c, s, STATS_TOKEN, "", examples("basic")).await;
    assert_eq!((st.as_u16(), e["code"].as_str()), (403, Some("T071")));
    let (st, e) = get(&c, s, VENDOR_TOKEN, "/api/v1/batches").await;
    assert_eq!((st.as_u16(), e["code"].as_str()), (403, Some("T071")));
    let (st, _) = get(&c, s, ADMIN_TOKEN, "/api/v1/deliveries").await;
    assert_eq!(st, 403);
    // Another vendor's delivery and another recipient's batch: 404, as if absent.
    let (st, _) = get(
        &c,
        s,
        OTHER_VENDOR_TOKEN,
        &format!("/api/v1/deliveries/{id}"),
    )
    .await;
    assert_eq!(st, 404);
    let (st, _) = get(
        &c,
        s,
        VENDOR_TOKEN,
        "/api/v1/deliveries/00000000-0000-0000-0000-000000000000",
    )
    .await;
    assert_eq!(st, 404);
    let batch = ready_batches(&c, s, STATS_TOKEN).await[0]["batch_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, e) = get(
        &c,
        s,
        OTHER_STATS_TOKEN,
        &format!("/api/v1/batches/{batch}"),
    )
    .await;
    assert_eq!(st, 404);
    assert_eq!(e["code"], "N404");
    let resp = c
        .post(s.url(&format!("/api/v1/batches/{batch}/ack")))
        .bearer_auth(OTHER_STATS_TOKEN)
        .json(&serde_json::json!({"findings": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    // The foreign ack changed nothing.
    assert_eq!(ready_batches(&c, s, STATS_TOKEN).await.len(), 1);
    // Unknown endpoints answer a JSON error too.
    let (st, e) = get(&c, s, VENDOR_TOKEN, "/api/v1/nonesuch").await;
    assert_eq!((st.as_u16(), e["code"].as_str()), (404, Some("N404")));
}

async fn deliveries_are_listed_newest_first_with_cursor(s: &TestServer) {
    let c = Client::new();
    let mut ids = Vec::new();
    for i in 0..5 {
        let body = klidas_delivery(
            &format!("33333333-0000-4000-8000-00000000000{i}"),
            &format!("L{i}"),
            2,
            "ergaenzung",
        );
        let (st, r) = post(&c, s, VENDOR_TOKEN, "", body.into_bytes()).await;
        assert_eq!(st, 200, "{r}");
        ids.push(r["delivery_id"].as_str().unwrap().to_string());
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cur) => format!("/api/v1/deliveries?limit=2&cursor={cur}"),
            None => "/api/v1/deliveries?limit=2".to_string(),
        };
        let (st, page) = get(&c, s, VENDOR_TOKEN, &path).await;
        assert_eq!(st, 200);
        for d in page["deliveries"].as_array().unwrap() {
            seen.push(d["delivery_id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let (_, none) = get(
        &c,
        s,
        VENDOR_TOKEN,
        "/api/v1/deliveries?since=2999-01-01T00:00:00Z",
    )
    .await;
    assert!(none["deliveries"].as_array().unwrap().is_empty());
    let (_, others) = get(&c, s, OTHER_VENDOR_TOKEN, "/api/v1/deliveries").await;
    assert!(others["deliveries"].as_array().unwrap().is_empty());
}

async fn health_endpoints(s: &TestServer) {
    let c = Client::new();
    assert_eq!(
        c.get(s.url("/health/live")).send().await.unwrap().status(),
        200
    );
    let ready = c.get(s.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["database"], "ok");
}

async fn batch_as_ndjson(s: &TestServer) {
    let c = Client::new();
    let body = klidas_delivery(
        "44444444-0000-4000-8000-000000000001",
        "N",
        2500,
        "ergaenzung",
    );
    let (st, r) = post(&c, s, VENDOR_TOKEN, "", body.into_bytes()).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["accepted"], 2500);
    let batches = ready_batches(&c, s, STATS_TOKEN).await;
    let id = batches[0]["batch_id"].as_str().unwrap();
    let text = c
        .get(s.url(&format!("/api/v1/batches/{id}")))
        .bearer_auth(STATS_TOKEN)
        .header("Accept", "application/x-ndjson")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2500);
    // Items come in the order they arose, across store pages.
    let json = batch_items(&c, s, STATS_TOKEN, id).await;
    assert_eq!(json, lines);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_limit_is_l001() {
    let s = TestServer::start_with(Backend::Sqlite, "[limits]\nmax_body_bytes = 2000\n")
        .await
        .unwrap();
    let c = Client::new();
    let (st, r) = post(&c, &s, VENDOR_TOKEN, "", examples("basic")).await;
    assert_eq!(st, 413, "{r}");
    assert_eq!(r["status"], "E4");
    assert_eq!(r["errors"][0]["code"], "L001");
    // Also when the size is not declared up front (chunked transfer).
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = examples("basic")
        .chunks(500)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let resp = c
        .post(s.url("/api/v1/deliveries"))
        .bearer_auth(VENDOR_TOKEN)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["errors"][0]["code"],
        "L001"
    );
    s.stop().await;
}

/// Sends one `GET /health/live` on `conn` and reads the answer's status line and headers
/// (`None` when the server closed or reset the connection).
async fn live_on(conn: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(b"GET /health/live HTTP/1.1\r\nHost: weiche\r\n\r\n")
        .await
        .ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    // `{"status":"ok"}` follows the headers; read until it is in.
    while !got.ends_with(b"}") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), conn.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    }
    Some(String::from_utf8_lossy(&got).into_owned())
}

/// An idle keep-alive connection stays open for `limits.keep_alive_secs` (default 75 s), longer
/// than a load balancer's usual 60 s, so the balancer never sends on a connection Weiche is
/// closing (actix-web's own default of 5 s made that a connection reset).
#[tokio::test]
async fn idle_connections_are_kept_longer_than_a_load_balancer_keeps_them() {
    let Some(s) = TestServer::start(Backend::Sqlite).await else {
        return;
    };
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let first = live_on(&mut conn).await.expect("an answer");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let second = live_on(&mut conn)
        .await
        .expect("the idle connection is still open after 6 s");
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    drop(conn);
    s.stop().await;
}
