//! The administrator's web page, `GET /admin/` (http-api.md, "Admin endpoints";
//! admin-console.md), and the rendered API documentation, `GET /api/v1/docs`: static files
//! compiled into the binary (`src/api/console/`), a thin client of the
//! `/api/v1/admin/…` endpoints. The page holds no data and needs no authentication; the
//! administrator's token, typed into the page, stays in the browser tab (session storage) and
//! authorises each API call. Every value the page shows is set as text, never as markup, and
//! the answers carry a strict Content-Security-Policy (same-origin scripts, styles and requests
//! only; no framing).

use actix_web::{HttpResponse, http::header};

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/app.js");
const STYLE: &str = include_str!("console/app.css");
const TEXTS: &str = include_str!("console/i18n.js");
const DOCS: &str = include_str!("console/docs.html");
const DOCS_SCRIPT: &str = include_str!("console/docs.js");
const ICON: &str = include_str!("console/favicon.svg");

/// The Content-Security-Policy of the page and its files.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; form-action 'none'; frame-ancestors 'none'; \
    base-uri 'none'";

fn file(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

/// `GET /admin/`: the page.
#[utoipa::path(
    get,
    path = "/admin/",
    operation_id = "console",
    tag = "console",
    summary = "The administrator's web page",
    description = "Role: none (a static page without data; it calls the admin endpoints with \
        the token the administrator types in). Served with a strict Content-Security-Policy.",
    responses((status = 200, description = "The page.", body = String, content_type = "text/html")),
)]
pub(super) async fn index() -> HttpResponse {
    file("text/html; charset=utf-8", INDEX)
}

/// `GET /admin`: to the page.
#[utoipa::path(
    get,
    path = "/admin",
    operation_id = "console_redirect",
    tag = "console",
    summary = "Redirect to the administrator's web page",
    description = "Role: none.",
    responses((status = 308, description = "To `/admin/`.",
        headers(("Location" = String, description = "`/admin/`")))),
)]
pub(super) async fn to_index() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/admin/"))
        .finish()
}

/// `GET /admin/app.js`.
#[utoipa::path(
    get,
    path = "/admin/app.js",
    operation_id = "console_script",
    tag = "console",
    summary = "The web page's script",
    description = "Role: none.",
    responses((status = 200, description = "JavaScript.", body = String, content_type = "text/javascript")),
)]
pub(super) async fn script() -> HttpResponse {
    file("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /admin/app.css`.
#[utoipa::path(
    get,
    path = "/admin/app.css",
    operation_id = "console_style",
    tag = "console",
    summary = "The web page's style sheet",
    description = "Role: none.",
    responses((status = 200, description = "CSS.", body = String, content_type = "text/css")),
)]
pub(super) async fn style() -> HttpResponse {
    file("text/css; charset=utf-8", STYLE)
}

/// `GET /admin/i18n.js`.
#[utoipa::path(
    get,
    path = "/admin/i18n.js",
    operation_id = "console_texts",
    tag = "console",
    summary = "The web page's texts, German and English",
    description = "Role: none.",
    responses((status = 200, description = "JavaScript.", body = String, content_type = "text/javascript")),
)]
pub(super) async fn texts() -> HttpResponse {
    file("text/javascript; charset=utf-8", TEXTS)
}

/// `GET /api/v1/docs`: the API documentation, rendered in the browser from the OpenAPI document.
#[utoipa::path(
    get,
    path = "/api/v1/docs",
    operation_id = "api_docs",
    tag = "console",
    summary = "The API documentation, rendered",
    description = "Role: none. A page that renders `/api/v1/openapi.json` (operations, \
        parameters, answers and schemas); served by the binary, no external resources.",
    responses((status = 200, description = "The page.", body = String, content_type = "text/html")),
)]
pub(super) async fn docs() -> HttpResponse {
    file("text/html; charset=utf-8", DOCS)
}

/// `GET /admin/docs.js`.
#[utoipa::path(
    get,
    path = "/admin/docs.js",
    operation_id = "api_docs_script",
    tag = "console",
    summary = "The API documentation's script",
    description = "Role: none.",
    responses((status = 200, description = "JavaScript.", body = String, content_type = "text/javascript")),
)]
pub(super) async fn docs_script() -> HttpResponse {
    file("text/javascript; charset=utf-8", DOCS_SCRIPT)
}

/// `GET /admin/favicon.svg`.
#[utoipa::path(
    get,
    path = "/admin/favicon.svg",
    operation_id = "console_icon",
    tag = "console",
    summary = "The web page's icon",
    description = "Role: none.",
    responses((status = 200, description = "SVG.", body = String, content_type = "image/svg+xml")),
)]
pub(super) async fn icon() -> HttpResponse {
    file("image/svg+xml", ICON)
}
