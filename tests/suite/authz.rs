//! The authorisation matrix: every endpoint × every role (none, a wrong token, two vendors, two
//! recipients, an admin), with own and foreign resources. Missing or bad credentials are `401
//! T070`, the wrong role `403 T071`, another principal's resource `404` (never `403`, so ids
//! cannot be probed), and the right role gets its answer.

use crate::testkit;

use reqwest::{Client, Method};
use serde_json::Value;
use testkit::*;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Nobody,
    WrongToken,
    Vendor,
    OtherVendor,
    Recipient,
    OtherRecipient,
    Admin,
}

const EVERYONE: [Who; 7] = [
    Who::Nobody,
    Who::WrongToken,
    Who::Vendor,
    Who::OtherVendor,
    Who::Recipient,
    Who::OtherRecipient,
    Who::Admin,
];

fn token(w: Who) -> Option<&'static str> {
    match w {
        Who::Nobody => None,
        Who::WrongToken => Some("not-a-token-not-a-token-not-a-token-not-a-token"),
        Who::Vendor => Some(VENDOR_TOKEN),
        Who::OtherVendor => Some(OTHER_VENDOR_TOKEN),
        Who::Recipient => Some(STATS_TOKEN),
        Who::OtherRecipient => Some(OTHER_STATS_TOKEN),
        Who::Admin => Some(ADMIN_TOKEN),
    }
}

/// What an endpoint answers a caller.
fn expected(role: &[Who], owner: Option<Who>, w: Who, ok: u16) -> u16 {
    match w {
        Who::Nobody | Who::WrongToken => 401,
        _ if !role.contains(&w) => 403,
        _ if owner.is_some_and(|o| o != w) => 404,
        _ => ok,
    }
}

async fn call(
    c: &Client,
    s: &TestServer,
    method: Method,
    path: &str,
    who: Who,
    body: Option<Vec<u8>>,
) -> (u16, Value) {
    let mut req = c.request(method, s.url(path));
    if let Some(t) = token(who) {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.header("Content-Type", "application/json").body(b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn matrix(s: &TestServer) {
    let c = Client::new();
    let basic =
        std::fs::read(repo().join("conformance-tests/cases/klidas-json/basic/input.json")).unwrap();
    // The vendor's delivery and the recipient's batch exist.
    let (st, receipt) = call(
        &c,
        s,
        Method::POST,
        "/api/v1/deliveries",
        Who::Vendor,
        Some(basic.clone()),
    )
    .await;
    assert_eq!(st, 200);
    let delivery = receipt["delivery_id"].as_str().unwrap().to_string();
    let (_, list) = call(&c, s, Method::GET, "/api/v1/batches", Who::Recipient, None).await;
    let batch = list["batches"][0]["batch_id"].as_str().unwrap().to_string();

    let vendors = [Who::Vendor, Who::OtherVendor];
    let recipients = [Who::Recipient, Who::OtherRecipient];
    let admins = [Who::Admin];
    let withdrawal =
        br#"{"client_id":"KL-0","consent_id":"EW-0","withdrawn_on":"2026-11-01"}"#.to_vec();
    let other = basic.clone();
    #[allow(clippy::type_complexity)]
    let table: Vec<(Method, String, &[Who], Option<Who>, u16, Option<Vec<u8>>)> = vec![
        (
            Method::GET,
            "/api/v1/deliveries".into(),
            &vendors,
            None,
            200,
            None,
        ),
        (
            Method::GET,
            format!("/api/v1/deliveries/{delivery}"),
            &vendors,
            Some(Who::Vendor),
            200,
            None,
        ),
        (
            Method::POST,
            "/api/v1/deliveries?format=klidas-json".into(),
            &vendors,
            None,
            200,
            Some(other),
        ),
        (
            Method::POST,
            "/api/v1/consents/withdrawals".into(),
            &vendors,
            None,
            200,
            Some(withdrawal),
        ),
        (
            Method::GET,
            "/api/v1/batches".into(),
            &recipients,
            None,
            200,
            None,
        ),
        (
            Method::GET,
            format!("/api/v1/batches/{batch}"),
            &recipients,
            Some(Who::Recipient),
            200,
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/batches/{batch}/ack"),
            &recipients,
            Some(Who::Recipient),
            200,
            None,
        ),
        (
            Method::GET,
            "/api/v1/feedback".into(),
            &vendors,
            None,
            200,
            None,
        ),
        (
            Method::GET,
            "/api/v1/admin/dead-letters".into(),
            &admins,
            None,
            200,
            None,
        ),
        (
            Method::POST,
            "/api/v1/admin/dead-letters/no-such-group/replay".into(),
            &admins,
            None,
            404,
            None,
        ),
        (
            Method::POST,
            "/api/v1/admin/dead-letters/no-such-group/discard".into(),
            &admins,
            None,
            404,
            None,
        ),
        (
            Method::GET,
            "/api/v1/aggregates?period=2026-10&by=program".into(),
            &recipients,
            None,
            200,
            None,
        ),
        (
            Method::GET,
            "/api/v1/admin/mappings".into(),
            &admins,
            None,
            200,
            None,
        ),
        (
            Method::POST,
            "/api/v1/admin/mappings/klidas-json/preview".into(),
            &admins,
            None,
            200,
            Some(basic.clone()),
        ),
        (
            Method::GET,
            "/api/v1/admin/audit/verify".into(),
            &admins,
            None,
            200,
            None,
        ),
        (
            Method::GET,
            "/api/v1/admin/disclosures?vendor=demo-vendor&client_id=KL-55012".into(),
            &admins,
            None,
            200,
            None,
        ),
        (
            Method::DELETE,
            "/api/v1/admin/clients/other-vendor/KL-nobody".into(),
            &admins,
            None,
            200,
            None,
        ),
        (
            Method::GET,
            "/api/v1/admin/deliveries?vendor=demo-vendor".into(),
            &admins,
            None,
            200,
            None,
        ),
        (
            Method::GET,
            format!("/api/v1/admin/deliveries/{delivery}"),
            &admins,
            None,
            200,
            None,
        ),
        (
            Method::GET,
            "/api/v1/admin/deliveries/no-such-delivery".into(),
            &admins,
            None,
            404,
            None,
        ),
        (
            Method::GET,
            "/api/v1/admin/records/demo-vendor/JH-2026-0417".into(),
            &admins,
            None,
            200,
            None,
        ),
        (
            Method::GET,
            "/api/v1/admin/records/demo-vendor/no-such-record".into(),
            &admins,
            None,
            404,
            None,
        ),
        (
            Method::GET,
            "/api/v1/admin/me".into(),
            &admins,
            None,
            200,
            None,
        ),
        (
            Method::GET,
            "/api/v1/admin/recipients".into(),
            &admins,
            None,
            200,
            None,
        ),
        (
            Method::GET,
            "/api/v1/admin/recipients/statistik-nrw".into(),
            &admins,
            None,
            200,
            None,
        ),
        (
            Method::GET,
            "/api/v1/admin/recipients/no-such-recipient".into(),
            &admins,
            None,
            404,
            None,
        ),
        (
            Method::POST,
            "/api/v1/admin/recipients/no-such-recipient/pause".into(),
            &admins,
            None,
            404,
            None,
        ),
        (
            Method::POST,
            "/api/v1/admin/recipients/no-such-recipient/resume".into(),
            &admins,
            None,
            404,
            None,
        ),
        (
            Method::GET,
            "/api/v1/admin/stats?window=30d&by=vendor".into(),
            &admins,
            None,
            200,
            None,
        ),
        (
            Method::GET,
            "/api/v1/admin/audit/events?kind=routing".into(),
            &admins,
            None,
            200,
            None,
        ),
        (
            Method::GET,
            "/api/v1/admin/mappings/klidas-json/source".into(),
            &admins,
            None,
            200,
            None,
        ),
        (
            Method::POST,
            "/api/v1/admin/mappings/klidas-json/check".into(),
            &admins,
            None,
            200,
            Some(b"id = \"klidas-json\"".to_vec()),
        ),
        (
            Method::PUT,
            "/api/v1/admin/mappings/klidas-json".into(),
            &admins,
            None,
            409,
            Some(b"id = \"klidas-json\"".to_vec()),
        ),
        (
            Method::GET,
            "/api/v1/admin/mappings/klidas-json/versions".into(),
            &admins,
            None,
            200,
            None,
        ),
        (
            Method::POST,
            "/api/v1/admin/mappings/klidas-json/versions/0000000000000000000000000000000000000000000000000000000000000000/deploy".into(),
            &admins,
            None,
            404,
            None,
        ),
    ];
    let mut failures = Vec::new();
    for (method, path, role, owner, ok, body) in &table {
        for who in EVERYONE {
            let want = expected(role, *owner, who, *ok);
            let (got, answer) = call(&c, s, method.clone(), path, who, body.clone()).await;
            if got != want {
                failures.push(format!(
                    "{method} {path} as {who:?}: expected {want}, got {got} {answer}"
                ));
                continue;
            }
            let code = answer["code"].as_str();
            let want_code = match want {
                401 => Some("T070"),
                403 => Some("T071"),
                404 => Some("N404"),
                409 => Some("R409"),
                _ => None,
            };
            if want_code.is_some() && code != want_code {
                failures.push(format!(
                    "{method} {path} as {who:?}: code {code:?}, expected {want_code:?}"
                ));
            }
        }
    }
    // Health, metrics, the OpenAPI document and the (data-free) admin page are open to
    // everyone; a token changes nothing.
    for path in [
        "/health/live",
        "/health/ready",
        "/metrics",
        "/api/v1/openapi.json",
        "/admin/",
        "/admin/app.js",
        "/admin/app.css",
        "/admin/i18n.js",
        "/admin/docs.js",
        "/admin/favicon.svg",
        "/api/v1/docs",
    ] {
        for who in EVERYONE {
            let (got, _) = call(&c, s, Method::GET, path, who, None).await;
            if got != 200 {
                failures.push(format!("GET {path} as {who:?}: expected 200, got {got}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} authorisation failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorisation_matrix_sqlite() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    matrix(&s).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorisation_matrix_postgres() {
    if let Some(s) = TestServer::start(Backend::Postgres).await {
        matrix(&s).await;
        s.stop().await;
    }
}
