//! The administrator's web page (`GET /admin/`): served with a strict Content-Security-Policy,
//! its files load, it only calls documented admin endpoints, and it never turns data into markup.

#[path = "../conformance-tests/support/mod.rs"]
mod support;
#[path = "../conformance-tests/testkit.rs"]
mod testkit;

use reqwest::{Client, StatusCode, redirect::Policy};
use serde_json::Value;
use testkit::*;

/// The operations the page calls: method, OpenAPI path, and the literal text of the call in
/// app.js.
const CALLS: [(&str, &str, &str); 7] = [
    ("get", "/api/v1/admin/mappings", "'/api/v1/admin/mappings'"),
    (
        "post",
        "/api/v1/admin/mappings/{format}/preview",
        "`/api/v1/admin/mappings/${encodeURIComponent(format)}/preview${query}`",
    ),
    (
        "get",
        "/api/v1/admin/dead-letters",
        "'/api/v1/admin/dead-letters' + query",
    ),
    (
        "post",
        "/api/v1/admin/dead-letters/{id}/replay",
        "`/api/v1/admin/dead-letters/${encodeURIComponent(id)}/${action}`",
    ),
    (
        "get",
        "/api/v1/admin/audit/verify",
        "'/api/v1/admin/audit/verify'",
    ),
    (
        "get",
        "/api/v1/admin/disclosures",
        "'/api/v1/admin/disclosures?' + query",
    ),
    (
        "delete",
        "/api/v1/admin/clients/{vendor}/{client_id}",
        "`/api/v1/admin/clients/${encodeURIComponent(vendor)}/${encodeURIComponent(client)}`",
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
    for (method, path, call) in CALLS {
        assert!(script.contains(call), "app.js calls {call}");
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is documented"
        );
    }
    assert!(script.contains("/${action}`") && script.contains("'discard'"));
    assert!(doc["paths"]["/api/v1/admin/dead-letters/{id}/discard"]["post"].is_object());
    let rest = CALLS
        .iter()
        .fold(script.clone(), |rest, (_, _, call)| rest.replace(call, ""));
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
