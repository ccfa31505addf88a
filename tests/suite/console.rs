//! The administrator's web page (`GET /admin/`): served with a strict Content-Security-Policy,
//! its files load, it only calls documented admin endpoints, and it never turns data into markup.

use crate::testkit;

use reqwest::{Client, StatusCode, redirect::Policy};
use serde_json::Value;
use testkit::*;

/// The calls the page makes: the literal text of the call in app.js, and the documented
/// operations (method, OpenAPI path) it stands for.
const CALLS: [(&str, &[(&str, &str)]); 16] = [
    ("'/api/v1/admin/me'", &[("get", "/api/v1/admin/me")]),
    (
        "`/api/v1/admin/stats?window=${windowName}&by=code`",
        &[("get", "/api/v1/admin/stats")],
    ),
    (
        "`/api/v1/admin/stats?window=${windowName}&by=vendor`",
        &[("get", "/api/v1/admin/stats")],
    ),
    (
        "'/api/v1/admin/deliveries?' + p",
        &[("get", "/api/v1/admin/deliveries")],
    ),
    (
        "`/api/v1/admin/deliveries/${encodeURIComponent(id)}`",
        &[("get", "/api/v1/admin/deliveries/{id}")],
    ),
    (
        "`/api/v1/admin/records/${encodeURIComponent(vendor)}/${encodeURIComponent(recordId)}`",
        &[("get", "/api/v1/admin/records/{vendor}/{record_id}")],
    ),
    (
        "'/api/v1/admin/recipients'",
        &[("get", "/api/v1/admin/recipients")],
    ),
    (
        "`/api/v1/admin/recipients/${encodeURIComponent(id)}`",
        &[("get", "/api/v1/admin/recipients/{id}")],
    ),
    (
        "`/api/v1/admin/recipients/${encodeURIComponent(id)}/${action}`",
        &[
            ("post", "/api/v1/admin/recipients/{id}/pause"),
            ("post", "/api/v1/admin/recipients/{id}/resume"),
        ],
    ),
    (
        "`/api/v1/admin/dead-letters/${encodeURIComponent(id)}/${action}`",
        &[
            ("post", "/api/v1/admin/dead-letters/{id}/replay"),
            ("post", "/api/v1/admin/dead-letters/{id}/discard"),
        ],
    ),
    (
        "'/api/v1/admin/mappings'",
        &[("get", "/api/v1/admin/mappings")],
    ),
    (
        "`/api/v1/admin/mappings/${encodeURIComponent(format)}${rest}`",
        &[
            ("get", "/api/v1/admin/mappings/{format}/source"),
            ("post", "/api/v1/admin/mappings/{format}/check"),
            ("post", "/api/v1/admin/mappings/{format}/preview"),
            ("put", "/api/v1/admin/mappings/{format}"),
            ("get", "/api/v1/admin/mappings/{format}/versions"),
            (
                "post",
                "/api/v1/admin/mappings/{format}/versions/{version}/deploy",
            ),
        ],
    ),
    (
        "'/api/v1/admin/audit/verify'",
        &[("get", "/api/v1/admin/audit/verify")],
    ),
    (
        "'/api/v1/admin/audit/events?' + p",
        &[("get", "/api/v1/admin/audit/events")],
    ),
    (
        "'/api/v1/admin/disclosures?' + query",
        &[("get", "/api/v1/admin/disclosures")],
    ),
    (
        "`/api/v1/admin/clients/${encodeURIComponent(vendor)}/${encodeURIComponent(client)}`",
        &[("delete", "/api/v1/admin/clients/{vendor}/{client_id}")],
    ),
];

/// Inline event handler attributes (` onclick=` and the like) in a page.
fn inline_handlers(page: &str) -> Vec<String> {
    page.match_indices(" on")
        .filter_map(|(at, _)| {
            let name: String = page[at + 1..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase())
                .collect();
            page[at + 1 + name.len()..].starts_with('=').then_some(name)
        })
        .collect()
}

async fn text(c: &Client, s: &TestServer, path: &str) -> (reqwest::header::HeaderMap, String) {
    let r = c.get(s.url(path)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    let headers = r.headers().clone();
    (headers, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_is_served_with_a_strict_policy() {
    let Some(s) = TestServer::start(Backend::Sqlite).await else {
        return;
    };
    let c = Client::builder().redirect(Policy::none()).build().unwrap();
    let r = c.get(s.url("/admin")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.headers()["location"], "/admin/");

    let (headers, page) = text(&c, &s, "/admin/").await;
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = headers["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    // No inline script or style (the policy would block them), every asset same-origin.
    assert!(!page.contains("<script>") && !page.contains("<style"));
    assert!(
        inline_handlers(&page).is_empty(),
        "{:?}",
        inline_handlers(&page)
    );
    for (asset, kind) in [
        ("/admin/app.js", "text/javascript"),
        ("/admin/app.css", "text/css"),
        ("/admin/i18n.js", "text/javascript"),
    ] {
        assert!(
            page.contains(&format!("\"{asset}\"")),
            "{asset} in the page"
        );
        let (headers, _) = text(&c, &s, asset).await;
        assert!(
            headers["content-type"].to_str().unwrap().starts_with(kind),
            "{asset}"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_page_calls_only_documented_admin_endpoints() {
    let Some(s) = TestServer::start(Backend::Sqlite).await else {
        return;
    };
    let c = Client::new();
    let (_, script) = text(&c, &s, "/admin/app.js").await;
    // Data is never turned into markup or code.
    for banned in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!script.contains(banned), "app.js uses {banned}");
    }
    // Each call the page makes is a documented admin operation; no other API path is in it.
    let (_, doc) = text(&c, &s, "/api/v1/openapi.json").await;
    let doc: Value = serde_json::from_str(&doc).unwrap();
    for (call, operations) in CALLS {
        assert!(script.contains(call), "app.js calls {call}");
        for (method, path) in operations {
            assert!(
                doc["paths"][path][method].is_object(),
                "{method} {path} is documented"
            );
        }
    }
    let rest = CALLS
        .iter()
        .map(|(call, _)| *call)
        .fold(script.clone(), |rest, call| rest.replace(call, ""));
    let other: Vec<&str> = rest
        .match_indices("/api/v1/")
        .map(|(at, _)| &rest[at..(at + 60).min(rest.len())])
        .collect();
    assert!(other.is_empty(), "app.js calls other endpoints: {other:?}");

    // The calls as the page makes them answer with an admin token (preview: pasted JSON).
    let admin = |m: reqwest::Method, p: &str| c.request(m, s.url(p)).bearer_auth(ADMIN_TOKEN);
    for path in [
        "/api/v1/admin/mappings",
        "/api/v1/admin/dead-letters",
        "/api/v1/admin/audit/verify",
        "/api/v1/admin/disclosures?vendor=demo-vendor&client_id=KL-1",
    ] {
        let r = admin(reqwest::Method::GET, path).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    let sample =
        std::fs::read(repo().join("conformance-tests/cases/klidas-json/basic/input.json")).unwrap();
    let r = admin(
        reqwest::Method::POST,
        "/api/v1/admin/mappings/klidas-json/preview?vendor=demo-vendor",
    )
    .header("Content-Type", "application/json")
    .body(sample)
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let preview: Value = r.json().await.unwrap();
    assert_eq!(preview["receipt"]["status"], "E1", "{preview}");
    s.stop().await;
}
