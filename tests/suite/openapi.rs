//! The OpenAPI document at `GET /api/v1/openapi.json` (http-api.md): served without
//! credentials as OpenAPI 3.1; its operations are exactly the routes the server serves (the list
//! [`ROUTES`], checked against the document, against the server, and against `routes()` in
//! src/api/mod.rs); every operation is complete (responses, role, security); every `$ref`
//! resolves; and the server's real answers fit the schemas the document gives for them.

use crate::testkit;

use reqwest::{Client, Method};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use testkit::*;

/// Every route the server serves, as (method, path template): written once, here.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/health/live"),
    ("get", "/health/ready"),
    ("get", "/metrics"),
    ("get", "/api/v1/openapi.json"),
    ("post", "/api/v1/deliveries"),
    ("get", "/api/v1/deliveries"),
    ("get", "/api/v1/deliveries/{id}"),
    ("post", "/api/v1/consents/withdrawals"),
    ("get", "/api/v1/feedback"),
    ("get", "/api/v1/batches"),
    ("get", "/api/v1/batches/{id}"),
    ("post", "/api/v1/batches/{id}/ack"),
    ("get", "/api/v1/aggregates"),
    ("get", "/api/v1/admin/mappings"),
    ("post", "/api/v1/admin/mappings/{format}/preview"),
    ("delete", "/api/v1/admin/clients/{vendor}/{client_id}"),
    ("get", "/api/v1/admin/audit/verify"),
    ("get", "/api/v1/admin/disclosures"),
    ("get", "/api/v1/admin/dead-letters"),
    ("post", "/api/v1/admin/dead-letters/{id}/replay"),
    ("post", "/api/v1/admin/dead-letters/{id}/discard"),
    ("get", "/api/v1/admin/deliveries"),
    ("get", "/api/v1/admin/deliveries/{id}"),
    ("get", "/api/v1/admin/records/{vendor}/{record_id}"),
    ("get", "/api/v1/admin/recipients"),
    ("get", "/api/v1/admin/recipients/{id}"),
    ("post", "/api/v1/admin/recipients/{id}/pause"),
    ("post", "/api/v1/admin/recipients/{id}/resume"),
    ("get", "/api/v1/admin/stats"),
    ("get", "/api/v1/admin/audit/events"),
    ("get", "/api/v1/admin/mappings/{format}/source"),
    ("post", "/api/v1/admin/mappings/{format}/check"),
    ("put", "/api/v1/admin/mappings/{format}"),
    ("get", "/api/v1/admin/mappings/{format}/versions"),
    (
        "post",
        "/api/v1/admin/mappings/{format}/versions/{version}/deploy",
    ),
    ("get", "/admin"),
    ("get", "/admin/"),
    ("get", "/admin/app.js"),
    ("get", "/admin/app.css"),
    ("get", "/admin/i18n.js"),
    ("get", "/admin/docs.js"),
    ("get", "/admin/favicon.svg"),
    ("get", "/api/v1/docs"),
    ("get", "/api/v1/admin/me"),
];

/// Routes that answer without credentials and so declare no security requirement.
const OPEN: &[&str] = &[
    "/health/live",
    "/health/ready",
    "/metrics",
    "/api/v1/openapi.json",
    "/admin",
    "/admin/",
    "/admin/app.js",
    "/admin/app.css",
    "/admin/i18n.js",
    "/admin/docs.js",
    "/admin/favicon.svg",
    "/api/v1/docs",
];

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn routes() -> BTreeSet<(String, String)> {
    ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect()
}

/// Fetches the document without credentials.
async fn document(c: &Client, s: &TestServer) -> Value {
    let r = c.get(s.url("/api/v1/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// The (method, path) pairs of the document's operations.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, _) in item.as_object().expect("path item") {
            if METHODS.contains(&method.as_str()) {
                out.insert((method.clone(), path.clone()));
            }
        }
    }
    out
}

/// A path template with every `{parameter}` replaced by `x`.
fn concrete(template: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for ch in template.chars() {
        match ch {
            '{' => {
                inside = true;
                out.push('x');
            }
            '}' => inside = false,
            _ if inside => {}
            _ => out.push(ch),
        }
    }
    out
}

/// Follows a `$ref` (`#/…`) within the document.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => doc
            .pointer(r.strip_prefix('#').expect("local $ref"))
            .unwrap_or_else(|| panic!("{r} does not resolve")),
        None => v,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_without_credentials_as_openapi_3_1() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let c = Client::new();
    let r = c.get(s.url("/api/v1/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/json"), "{ct}");
    let doc: Value = r.json().await.unwrap();
    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1"), "{version}");
    assert_eq!(doc["info"]["title"], "Weiche");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["mutualTLS"]["type"], "mutualTLS");
    // Built once: every answer is the same bytes, with a token or without.
    let again = c
        .get(s.url("/api/v1/openapi.json"))
        .bearer_auth(VENDOR_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap(), doc);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_exactly_the_served_routes() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let c = Client::new();
    let doc = document(&c, &s).await;
    let documented = operations(&doc);
    let expected = routes();
    assert_eq!(ROUTES.len(), expected.len(), "ROUTES lists a route twice");
    let missing: Vec<_> = expected.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "not documented: {missing:?}; documented but not in ROUTES: {extra:?}"
    );
    // Each route is really served: without credentials it answers, but not 404 or 405.
    let mut failures = Vec::new();
    for (method, template) in ROUTES {
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = c
            .request(method.clone(), s.url(&concrete(template)))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if status == 404 || status == 405 {
            failures.push(format!("{method} {template}: {status} {body}"));
        }
    }
    assert!(failures.is_empty(), "not served:\n{}", failures.join("\n"));
    // The check can fail: a path that is not served answers 404 N404.
    let r = c.get(s.url("/api/v1/not-a-route")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "N404");
    s.stop().await;
}

/// A method a path does not serve answers `405 M405` with an `Allow` header naming the methods
/// it does serve (RFC 9110), which are the ones the document gives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_methods_are_405_with_allow() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let c = Client::new();
    let mut allowed: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for (method, template) in ROUTES {
        allowed
            .entry(template)
            .or_default()
            .push(method.to_uppercase());
    }
    let mut failures = Vec::new();
    for (template, methods) in &allowed {
        for method in ["PATCH", "PUT", "TRACE"] {
            if methods.iter().any(|m| m == method) {
                continue;
            }
            let r = c
                .request(
                    Method::from_bytes(method.as_bytes()).unwrap(),
                    s.url(&concrete(template)),
                )
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let allow: BTreeSet<String> = r
                .headers()
                .get("allow")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .split(',')
                .map(|m| m.trim().to_string())
                .filter(|m| !m.is_empty())
                .collect();
            let code = r.json::<Value>().await.unwrap_or(Value::Null)["code"].clone();
            let want: BTreeSet<String> = methods.iter().cloned().collect();
            if status != 405 || code != "M405" || allow != want {
                failures.push(format!(
                    "{method} {template}: {status} {code} Allow {allow:?}, expected 405 M405 Allow {want:?}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    s.stop().await;
}

/// The routes that `routes()` in src/api/mod.rs registers, read from its source: each
/// `resource("…")` with its `web::<method>()` routes, under the `web::scope("…")` around it.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let text = std::fs::read_to_string(repo().join("src/api/mod.rs")).unwrap();
    let start = text
        .find("pub fn routes(")
        .expect("routes() in src/api/mod.rs");
    let body = &text[start..];
    let body = &body[..body.find("\n}\n").expect("end of routes()")];
    let bytes = body.as_bytes();
    // Scopes as (prefix, start, end): from `web::scope(` to the close of the call it is in.
    let mut scopes = Vec::new();
    for (at, _) in body.match_indices("web::scope(\"") {
        let prefix = body[at + 12..].split('"').next().unwrap().to_string();
        let open = body[..at].rfind('(').expect("scope inside a call");
        let mut depth = 0;
        let mut end = body.len();
        for (i, b) in bytes.iter().enumerate().skip(open) {
            match b {
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        scopes.push((prefix, at, end));
    }
    let prefix_at = |pos: usize| -> String {
        scopes
            .iter()
            .filter(|(_, a, e)| *a <= pos && pos < *e)
            .map(|(p, _, _)| p.as_str())
            .collect()
    };
    let mut resources: Vec<(usize, String)> = body
        .match_indices("resource(\"")
        .map(|(at, _)| {
            let path = body[at + 10..].split('"').next().unwrap();
            (at, format!("{}{path}", prefix_at(at)))
        })
        .collect();
    resources.sort();
    let mut out = BTreeSet::new();
    for method in METHODS {
        for (at, _) in body.match_indices(&format!("web::{method}()")) {
            let (_, path) = resources
                .iter()
                .rev()
                .find(|(r, _)| *r < at)
                .unwrap_or_else(|| panic!("web::{method}() outside a resource"));
            out.insert((method.to_string(), path.clone()));
        }
    }
    out
}

#[test]
fn every_route_in_routes_is_listed() {
    let in_source = routes_in_source();
    assert!(
        in_source.len() >= 20,
        "read only {} routes from src/api/mod.rs: has routes() changed shape? {in_source:?}",
        in_source.len()
    );
    let expected = routes();
    let missing: Vec<_> = in_source.difference(&expected).collect();
    let extra: Vec<_> = expected.difference(&in_source).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "registered in routes() but not in ROUTES (document it and list it): {missing:?}; \
         in ROUTES but not registered: {extra:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_is_complete() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let doc = document(&Client::new(), &s).await;
    s.stop().await;
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    let mut ids = BTreeSet::new();
    let mut failures = Vec::new();
    for (method, path) in operations(&doc) {
        let op = &doc["paths"][&path][&method];
        let at = format!("{method} {path}");
        let id = op["operationId"].as_str().unwrap_or_default();
        if id.is_empty() || !ids.insert(id.to_string()) {
            failures.push(format!("{at}: operationId {id:?} missing or not unique"));
        }
        if op["summary"].as_str().unwrap_or_default().is_empty() {
            failures.push(format!("{at}: no summary"));
        }
        let description = op["description"].as_str().unwrap_or_default();
        let role = [
            "Role: none",
            "Role: **vendor**",
            "Role: **recipient**",
            "Role: **admin**",
        ]
        .iter()
        .filter(|r| description.starts_with(*r))
        .count();
        if role != 1 {
            failures.push(format!(
                "{at}: the description does not start with the role"
            ));
        }
        let responses = op["responses"].as_object().cloned().unwrap_or_default();
        if responses.is_empty() {
            failures.push(format!("{at}: no responses"));
        }
        for (status, response) in &responses {
            let response = resolve(&doc, response);
            if response["description"]
                .as_str()
                .unwrap_or_default()
                .is_empty()
            {
                failures.push(format!("{at} {status}: no description"));
            }
            // Errors carry the error body (or, for deliveries, an `E4` receipt).
            if status.starts_with('4') || status.starts_with('5') {
                let schema = &response["content"]["application/json"]["schema"];
                let text = schema.to_string();
                let fits = ["ErrorBody", "ReceiptOrError", "Receipt", "Readiness"]
                    .iter()
                    .any(|name| text.contains(&format!("#/components/schemas/{name}\"")));
                if !fits {
                    failures.push(format!("{at} {status}: no error body ({text})"));
                }
            }
        }
        let security = op["security"].as_array().cloned().unwrap_or_default();
        if OPEN.contains(&path.as_str()) {
            // Public routes say so: `security: []`, not a missing key (which would mean "the
            // document's default").
            if op["security"] != serde_json::json!([]) {
                failures.push(format!(
                    "{at}: open, but not marked `security: []` ({})",
                    op["security"]
                ));
            }
        } else if security.is_empty() {
            failures.push(format!("{at}: declares no security requirement"));
        }
        for requirement in &security {
            for name in requirement.as_object().unwrap().keys() {
                if !schemes.contains_key(name) {
                    failures.push(format!("{at}: security scheme {name} is not defined"));
                }
            }
        }
        // Vendors may also authenticate by client certificate; nobody else.
        let tls = security.iter().any(|r| r.get("mutualTLS").is_some());
        if tls != description.starts_with("Role: **vendor**") {
            failures.push(format!("{at}: mutualTLS is for vendor operations"));
        }
        // Every `{parameter}` of the path is a required path parameter, and no other.
        let declared: BTreeSet<String> = op["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|p| resolve(&doc, p))
            .filter(|p| p["in"] == "path" && p["required"] == true)
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect();
        let in_template: BTreeSet<String> = path
            .split('{')
            .skip(1)
            .map(|p| p.split('}').next().unwrap().to_string())
            .collect();
        if declared != in_template {
            failures.push(format!(
                "{at}: path parameters {declared:?}, template {in_template:?}"
            ));
        }
    }
    // The batch fetch serves four formats; deliveries take three, and gzip.
    let fetch = &doc["paths"]["/api/v1/batches/{id}"]["get"]["responses"]["200"]["content"];
    for media in [
        "application/json",
        "application/x-ndjson",
        "application/xml",
        "text/csv",
    ] {
        if fetch.get(media).is_none() {
            failures.push(format!("GET /api/v1/batches/{{id}}: no {media}"));
        }
    }
    let post = &doc["paths"]["/api/v1/deliveries"]["post"];
    for media in ["application/json", "application/xml", "text/csv"] {
        if post["requestBody"]["content"].get(media).is_none() {
            failures.push(format!("POST /api/v1/deliveries: no {media}"));
        }
    }
    if !post["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "Content-Encoding" && p["in"] == "header")
    {
        failures.push("POST /api/v1/deliveries: no Content-Encoding".into());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every `$ref` in `v`, with where it stands.
fn refs(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    out.push((at.to_string(), x.as_str().unwrap_or_default().to_string()));
                } else {
                    refs(x, &format!("{at}/{k}"), out);
                }
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                refs(x, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ref_resolves_to_a_component() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let doc = document(&Client::new(), &s).await;
    s.stop().await;
    let mut all = Vec::new();
    refs(&doc, "", &mut all);
    assert!(all.len() > 20, "{} $refs", all.len());
    let broken: Vec<_> = all
        .iter()
        .filter(|(_, r)| {
            !r.starts_with("#/components/") || doc.pointer(r.strip_prefix('#').unwrap()).is_none()
        })
        .collect();
    assert!(broken.is_empty(), "$refs that do not resolve: {broken:?}");
    // A component nobody uses is probably a leftover.
    let used: BTreeSet<&str> = all.iter().map(|(_, r)| r.as_str()).collect();
    for kind in ["schemas", "responses"] {
        for name in doc["components"][kind].as_object().unwrap().keys() {
            let r = format!("#/components/{kind}/{name}");
            assert!(used.contains(r.as_str()), "{r} is never used");
        }
    }
}

// --- The real answers fit the document ------------------------------------------------------

/// Checks `body` against the schema the document gives for `method path` → `status` as
/// `media`; the failures go to `failures`.
fn check(
    doc: &Value,
    failures: &mut Vec<String>,
    (method, path): (&str, &str),
    status: u16,
    media: &str,
    body: &Value,
) {
    let at = format!("{method} {path} → {status} {media}");
    let response = &doc["paths"][path][method]["responses"][status.to_string()];
    if response.is_null() {
        failures.push(format!("{at}: status not documented"));
        return;
    }
    let response = resolve(doc, response);
    if response["content"].is_null() && body.as_str() == Some("") {
        // Documented without a body, and none came.
        return;
    }
    let mut schema = response["content"][media]["schema"].clone();
    if !schema.is_object() {
        failures.push(format!("{at}: no schema"));
        return;
    }
    // The components beside the schema, so its `#/components/…` references resolve.
    schema["components"] = doc["components"].clone();
    let validator = match jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
    {
        Ok(v) => v,
        Err(e) => {
            failures.push(format!("{at}: not a valid schema: {e}"));
            return;
        }
    };
    for e in validator.iter_errors(body) {
        failures.push(format!("{at}: {e} at '{}'", e.instance_path().as_str()));
    }
}

/// Sends a request; answers status, the media type (without parameters) and the body (JSON, or
/// the text as a JSON string).
async fn send(
    c: &Client,
    s: &TestServer,
    method: Method,
    path: &str,
    token: Option<&str>,
    accept: Option<&str>,
    body: Option<Vec<u8>>,
) -> (u16, String, Value) {
    let mut req = c.request(method, s.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(a) = accept {
        req = req.header("Accept", a);
    }
    if let Some(b) = body {
        req = req.header("Content-Type", "application/json").body(b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let media = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap()
        .trim()
        .to_string();
    let text = r.text().await.unwrap();
    let body = if media == "application/json" {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON: {e}"))
    } else {
        Value::String(text)
    };
    (status, media, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_fit_the_documented_schemas() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    // Redirects are answers too (`/admin`).
    let c = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let doc = document(&c, &s).await;
    let basic =
        std::fs::read(repo().join("conformance-tests/cases/klidas-json/basic/input.json")).unwrap();
    let mut failures = Vec::new();
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();

    macro_rules! call {
        ($method:ident, $template:expr, $path:expr, $token:expr, $accept:expr, $body:expr) => {{
            let path: &str = &$path;
            let (status, media, body) =
                send(&c, &s, Method::$method, path, $token, $accept, $body).await;
            let method = stringify!($method).to_lowercase();
            let template: &str = &$template;
            check(
                &doc,
                &mut failures,
                (&method, template),
                status,
                &media,
                &body,
            );
            seen.insert((method, template.to_string()));
            (status, body)
        }};
    }

    let (st, _) = call!(GET, "/health/live", "/health/live", None, None, None);
    assert_eq!(st, 200);
    let (st, _) = call!(GET, "/health/ready", "/health/ready", None, None, None);
    assert_eq!(st, 200);
    let (st, _) = call!(GET, "/metrics", "/metrics", None, None, None);
    assert_eq!(st, 200);
    let (st, _) = call!(
        GET,
        "/api/v1/openapi.json",
        "/api/v1/openapi.json",
        None,
        None,
        None
    );
    assert_eq!(st, 200);
    let (st, _) = call!(GET, "/admin", "/admin", None, None, None);
    assert_eq!(st, 308);
    for page in [
        "/admin/",
        "/admin/app.js",
        "/admin/app.css",
        "/admin/i18n.js",
        "/admin/docs.js",
        "/admin/favicon.svg",
        "/api/v1/docs",
    ] {
        let (st, _) = call!(GET, page, page, None, None, None);
        assert_eq!(st, 200);
    }

    // Vendor.
    let (st, receipt) = call!(
        POST,
        "/api/v1/deliveries",
        "/api/v1/deliveries?format=klidas-json",
        Some(VENDOR_TOKEN),
        None,
        Some(basic.clone())
    );
    assert_eq!(st, 200, "{receipt}");
    let delivery = receipt["delivery_id"].as_str().unwrap().to_string();
    let (st, dup) = call!(
        POST,
        "/api/v1/deliveries",
        "/api/v1/deliveries",
        Some(VENDOR_TOKEN),
        None,
        Some(basic.clone())
    );
    assert_eq!((st, &dup["duplicate"]), (200, &json!(true)));
    let (st, _) = call!(
        POST,
        "/api/v1/deliveries",
        "/api/v1/deliveries",
        Some(VENDOR_TOKEN),
        None,
        Some(b"{not json".to_vec())
    );
    assert_eq!(st, 422);
    let (st, e) = call!(
        POST,
        "/api/v1/deliveries",
        "/api/v1/deliveries?format=no-such-format",
        Some(VENDOR_TOKEN),
        None,
        Some(basic.clone())
    );
    assert_eq!((st, &e["code"]), (400, &json!("V000")));
    let (st, e) = call!(
        POST,
        "/api/v1/deliveries",
        "/api/v1/deliveries",
        None,
        None,
        Some(basic.clone())
    );
    assert_eq!((st, &e["code"]), (401, &json!("T070")));
    let (st, e) = call!(
        POST,
        "/api/v1/deliveries",
        "/api/v1/deliveries",
        Some(STATS_TOKEN),
        None,
        Some(basic.clone())
    );
    assert_eq!((st, &e["code"]), (403, &json!("T071")));
    let (st, _) = call!(
        GET,
        "/api/v1/deliveries",
        "/api/v1/deliveries?limit=1",
        Some(VENDOR_TOKEN),
        None,
        None
    );
    assert_eq!(st, 200);
    let (st, _) = call!(
        GET,
        "/api/v1/deliveries/{id}",
        format!("/api/v1/deliveries/{delivery}"),
        Some(VENDOR_TOKEN),
        None,
        None
    );
    assert_eq!(st, 200);
    let (st, _) = call!(
        GET,
        "/api/v1/deliveries/{id}",
        "/api/v1/deliveries/x",
        Some(VENDOR_TOKEN),
        None,
        None
    );
    assert_eq!(st, 404);

    // Recipient.
    let (st, list) = call!(
        GET,
        "/api/v1/batches",
        "/api/v1/batches",
        Some(STATS_TOKEN),
        None,
        None
    );
    assert_eq!(st, 200, "{list}");
    let batch = list["batches"][0]["batch_id"].as_str().unwrap().to_string();
    let fetch = format!("/api/v1/batches/{batch}");
    let (st, items) = call!(
        GET,
        "/api/v1/batches/{id}",
        fetch,
        Some(STATS_TOKEN),
        None,
        None
    );
    assert_eq!(st, 200);
    for accept in ["application/x-ndjson", "application/xml", "text/csv"] {
        let (st, _) = call!(
            GET,
            "/api/v1/batches/{id}",
            fetch,
            Some(STATS_TOKEN),
            Some(accept),
            None
        );
        assert_eq!(st, 200, "{accept}");
    }
    let (st, _) = call!(
        GET,
        "/api/v1/batches/{id}",
        fetch,
        Some(STATS_TOKEN),
        Some("image/png"),
        None
    );
    assert_eq!(st, 400);
    let record_ref = items["items"][0]["record_ref"].as_str().unwrap();
    let ack = json!({"findings": [{"record_ref": record_ref, "code": "Q1", "message": "check"}]});
    let (st, _) = call!(
        POST,
        "/api/v1/batches/{id}/ack",
        format!("{fetch}/ack"),
        Some(STATS_TOKEN),
        None,
        Some(ack.to_string().into_bytes())
    );
    assert_eq!(st, 200);
    let (st, feedback) = call!(
        GET,
        "/api/v1/feedback",
        "/api/v1/feedback",
        Some(VENDOR_TOKEN),
        None,
        None
    );
    assert_eq!(st, 200);
    assert_eq!(feedback["feedback"].as_array().unwrap().len(), 1);
    let (st, _) = call!(
        GET,
        "/api/v1/aggregates",
        "/api/v1/aggregates?period=2026-10&by=program,sex",
        Some(STATS_TOKEN),
        None,
        None
    );
    assert_eq!(st, 200);
    let withdrawal =
        br#"{"client_id":"KL-55012","consent_id":"EW-K-8841","withdrawn_on":"2026-11-01"}"#;
    let (st, _) = call!(
        POST,
        "/api/v1/consents/withdrawals",
        "/api/v1/consents/withdrawals",
        Some(VENDOR_TOKEN),
        None,
        Some(withdrawal.to_vec())
    );
    assert_eq!(st, 200);

    // Admin.
    let admin = Some(ADMIN_TOKEN);
    for (template, path) in [
        ("/api/v1/admin/mappings", "/api/v1/admin/mappings"),
        ("/api/v1/admin/me", "/api/v1/admin/me"),
        ("/api/v1/admin/audit/verify", "/api/v1/admin/audit/verify"),
        (
            "/api/v1/admin/disclosures",
            "/api/v1/admin/disclosures?vendor=demo-vendor&client_id=KL-55012",
        ),
        ("/api/v1/admin/dead-letters", "/api/v1/admin/dead-letters"),
    ] {
        let (st, body) = call!(GET, template, path, admin, None, None);
        assert_eq!(st, 200, "{path}: {body}");
    }
    let (st, _) = call!(
        POST,
        "/api/v1/admin/mappings/{format}/preview",
        "/api/v1/admin/mappings/klidas-json/preview",
        admin,
        None,
        Some(basic.clone())
    );
    assert_eq!(st, 200);
    for action in ["replay", "discard"] {
        let template = format!("/api/v1/admin/dead-letters/{{id}}/{action}");
        let (st, _) = call!(
            POST,
            &template,
            format!("/api/v1/admin/dead-letters/x/{action}"),
            admin,
            None,
            None
        );
        assert_eq!(st, 404);
    }
    // The console's endpoints.
    let (st, list) = call!(
        GET,
        "/api/v1/admin/deliveries",
        "/api/v1/admin/deliveries?vendor=demo-vendor&limit=2",
        admin,
        None,
        None
    );
    assert_eq!(st, 200, "{list}");
    let id = list["deliveries"][0]["delivery_id"].as_str().unwrap();
    for (template, path) in [
        (
            "/api/v1/admin/deliveries/{id}",
            format!("/api/v1/admin/deliveries/{id}"),
        ),
        (
            "/api/v1/admin/records/{vendor}/{record_id}",
            "/api/v1/admin/records/demo-vendor/JH-2026-0417".into(),
        ),
        (
            "/api/v1/admin/recipients",
            "/api/v1/admin/recipients".into(),
        ),
        (
            "/api/v1/admin/recipients/{id}",
            "/api/v1/admin/recipients/statistik-nrw".into(),
        ),
        (
            "/api/v1/admin/stats",
            "/api/v1/admin/stats?window=24h&by=code".into(),
        ),
        (
            "/api/v1/admin/audit/events",
            "/api/v1/admin/audit/events?limit=3".into(),
        ),
        (
            "/api/v1/admin/mappings/{format}/source",
            "/api/v1/admin/mappings/klidas-json/source".into(),
        ),
        (
            "/api/v1/admin/mappings/{format}/versions",
            "/api/v1/admin/mappings/klidas-json/versions".into(),
        ),
    ] {
        let (st, body) = call!(GET, template, path, admin, None, None);
        assert_eq!(st, 200, "{path}: {body}");
    }
    for action in ["pause", "resume"] {
        let (st, _) = call!(
            POST,
            &format!("/api/v1/admin/recipients/{{id}}/{action}"),
            format!("/api/v1/admin/recipients/statistik-nrw/{action}"),
            admin,
            None,
            None
        );
        assert_eq!(st, 400, "a pull recipient has no lane to {action}");
    }
    let (st, check) = call!(
        POST,
        "/api/v1/admin/mappings/{format}/check",
        "/api/v1/admin/mappings/klidas-json/check",
        admin,
        None,
        Some(b"id = = 1".to_vec())
    );
    assert_eq!((st, check["ok"].clone()), (200, json!(false)), "{check}");
    let (st, _) = call!(
        PUT,
        "/api/v1/admin/mappings/{format}",
        "/api/v1/admin/mappings/klidas-json",
        admin,
        None,
        Some(b"id = 1".to_vec())
    );
    assert_eq!(st, 409, "no If-Match");
    let (st, _) = call!(
        POST,
        "/api/v1/admin/mappings/{format}/versions/{version}/deploy",
        format!(
            "/api/v1/admin/mappings/klidas-json/versions/{}/deploy",
            "0".repeat(64)
        ),
        admin,
        None,
        None
    );
    assert_eq!(st, 404);
    let (st, _) = call!(
        DELETE,
        "/api/v1/admin/clients/{vendor}/{client_id}",
        "/api/v1/admin/clients/demo-vendor/KL-55012",
        admin,
        None,
        None
    );
    assert_eq!(st, 200);
    s.stop().await;
    assert!(
        failures.is_empty(),
        "answers that do not fit the document:\n{}",
        failures.join("\n")
    );
    // Every route was exercised at least once.
    assert_eq!(seen, routes());
}
