//! The HTTP surface (http-api.md): routes, authentication, error bodies, and the HTTP server on
//! any listener with a shutdown future, so tests run the real server on port 0. Handlers
//! authenticate, parse and answer; what a request does is done by the stages below, and the
//! HTTP status of an answer is decided here alone.

mod admin;
mod aggregates;
mod audit;
mod batches;
mod browse;
mod consents;
mod console;
mod console_schemas;
mod dead_letters;
mod deliveries;
mod feedback;
mod mapping_editor;
mod openapi;
mod ratelimit;

use crate::catalogue::{Code, ErrorBody};
use crate::config::{Principal, Role};
use crate::gateway::Gateway;
use crate::store::StoreError;
use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, ResponseError, web};
use std::future::Future;
use std::sync::Arc;

/// `GET /health/live`: `{"status": "ok"}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct Live {
    /// Always `ok`.
    status: LiveStatus,
}

/// `ok`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum LiveStatus {
    /// The process is up.
    Ok,
}

/// `GET /health/ready`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct Readiness {
    /// `ok` when the database answers and at least one mapping is loaded, else `unavailable`.
    status: ReadyStatus,
    /// `ok` or `unreachable` (no answer within 900 ms).
    database: DatabaseStatus,
    /// `sqlite` or `postgres`.
    backend: StoreBackend,
    /// Mappings loaded right now (hot reload changes it).
    mappings: u64,
    /// The answering process's id (random at each start).
    instance: String,
}

/// Readiness.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum ReadyStatus {
    /// Ready.
    Ok,
    /// Not ready.
    Unavailable,
}

/// Whether the database answered.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum DatabaseStatus {
    /// Answered.
    Ok,
    /// Did not answer in time.
    Unreachable,
}

/// The storage backend.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum StoreBackend {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// An API error: a catalogue code and a message, answered as `{"code","message","details"}`.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// Catalogue code.
    pub code: Code,
    /// Text for a person.
    pub message: String,
    /// Seconds for a `Retry-After` header (rate limits).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a code.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// `429 R429` with `Retry-After: <seconds>` (a rate limit is exceeded).
    pub fn too_many_requests(seconds: u64) -> Self {
        ApiError {
            retry_after: Some(seconds),
            ..Self::new(
                Code::R429,
                format!("too many requests: retry after {seconds} s"),
            )
        }
    }

    /// `404` for absent and foreign resources alike.
    pub fn not_found() -> Self {
        Self::new(Code::N404, "not found")
    }

    /// `503 U001`.
    pub fn unavailable(e: impl std::fmt::Display) -> Self {
        tracing::warn!("storage unavailable: {e}");
        Self::new(Code::U001, "storage unavailable, retry later")
    }
}

/// A store error as an API error: stored data that cannot be read back is `500 I500` (a fault
/// here, logged with what was found), anything else `503 U001` (retry later).
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Corrupt(_) => {
                tracing::error!(error = %e, "stored data cannot be read");
                Self::new(Code::I500, "stored data cannot be read")
            }
            other => Self::unavailable(other),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        let mut resp = HttpResponse::build(self.status_code());
        if self.code == Code::U001 {
            resp.insert_header(("Retry-After", "5"));
        }
        if self.code == Code::T070 {
            resp.insert_header(("WWW-Authenticate", "Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            resp.insert_header(("Retry-After", seconds.to_string()));
        }
        resp.json(ErrorBody {
            code: self.code,
            message: self.message.clone(),
            details: Vec::new(),
        })
    }
}

/// Parses the query string (after authentication, so a stranger learns nothing from a 400).
pub fn query<T: serde::de::DeserializeOwned>(req: &HttpRequest) -> Result<T, ApiError> {
    web::Query::<T>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| ApiError::new(Code::R400, format!("query is not valid: {e}")))
}

/// The caller, authenticated by bearer token and/or TLS client certificate (as the principal's
/// `auth` setting asks), with the role the endpoint needs.
pub fn authenticate(req: &HttpRequest, gw: &Gateway, role: Role) -> Result<Principal, ApiError> {
    let token = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let cert = req
        .conn_data::<crate::tls::ClientCertificate>()
        .map(|c| &c.sha256);
    // Rate limits (src/api/ratelimit.rs): absent when the app is built without `serve_with`.
    let limits = req.app_data::<web::Data<ratelimit::RateLimits>>();
    let Some(principal) = gw.principals.resolve(token, cert) else {
        if let (Some(limits), Some(peer)) = (limits, req.peer_addr()) {
            limits
                .check_failure(peer.ip())
                .map_err(ApiError::too_many_requests)?;
        }
        let message = if cert.is_some() {
            "missing or invalid credentials (bearer token or client certificate)"
        } else {
            "missing or invalid bearer token"
        };
        return Err(ApiError::new(Code::T070, message));
    };
    if let Some(limits) = limits {
        limits
            .check_principal(&principal.id)
            .map_err(ApiError::too_many_requests)?;
    }
    if principal.role != role {
        return Err(ApiError::new(
            Code::T071,
            format!("this endpoint is for the role {}", role.as_str()),
        ));
    }
    Ok(principal)
}

#[utoipa::path(
    get,
    path = "/health/live",
    operation_id = "health_live",
    tag = "operations",
    summary = "The process is up",
    description = "Role: none (no authentication).",
    responses((status = 200, description = "Always `{\"status\": \"ok\"}`.", body = Live)),
)]
async fn live() -> HttpResponse {
    HttpResponse::Ok().json(Live {
        status: LiveStatus::Ok,
    })
}

#[utoipa::path(
    get,
    path = "/health/ready",
    operation_id = "health_ready",
    tag = "operations",
    summary = "Database reachable and mappings loaded",
    description = "Role: none (no authentication). Answers within about a second, also while \
        the database is down.",
    responses(
        (status = 200, description = "Ready: the database answers and at least one mapping is loaded.", body = Readiness),
        (status = 503, description = "Not ready (`\"status\": \"unavailable\"`): the database does not answer, or no mapping is loaded.", body = Readiness,
            headers(("Retry-After" = String, description = "`5`"))),
    ),
)]
async fn ready(gw: web::Data<Gateway>) -> HttpResponse {
    // Answer within a probe's usual timeout even while the database is down.
    let db = matches!(
        tokio::time::timeout(std::time::Duration::from_millis(900), gw.store.ping()).await,
        Ok(Ok(()))
    );
    let loaded = gw.mappings.load();
    let mappings = !loaded.mappings.is_empty();
    let body = Readiness {
        status: if db && mappings {
            ReadyStatus::Ok
        } else {
            ReadyStatus::Unavailable
        },
        database: if db {
            DatabaseStatus::Ok
        } else {
            DatabaseStatus::Unreachable
        },
        backend: if gw.store.backend() == "postgres" {
            StoreBackend::Postgres
        } else {
            StoreBackend::Sqlite
        },
        mappings: loaded.mappings.len() as u64,
        instance: gw.instance.clone(),
    };
    if db && mappings {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "5"))
            .json(body)
    }
}

/// Prometheus text exposition (ids, codes and counts only; no authentication, like `/health`).
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    description = "Role: none (no authentication). The Prometheus text exposition format 0.0.4 \
        (`text/plain; version=0.0.4; charset=utf-8`): ids, codes and counts only, no personal data.",
    responses((status = 200, description = "The metrics.", body = String, content_type = "text/plain")),
)]
async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(crate::telemetry::metrics::CONTENT_TYPE)
        .body(crate::telemetry::metrics::render())
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(Code::N404, "no such endpoint"))
}

/// `405 M405` with the `Allow` header RFC 9110 asks for: the methods the OpenAPI document gives
/// the matched path (the document lists exactly the routes served, `tests/suite/openapi.rs`).
async fn method_not_allowed(req: HttpRequest) -> HttpResponse {
    let mut resp =
        ApiError::new(Code::M405, "method not allowed on this endpoint").error_response();
    if let Some(allow) = req.match_pattern().and_then(|p| openapi::allow(&p))
        && let Ok(value) = actix_web::http::header::HeaderValue::from_str(allow)
    {
        resp.headers_mut()
            .insert(actix_web::http::header::ALLOW, value);
    }
    resp
}

/// Turns error answers that actix-web produced itself (e.g. `413` for a body over an extractor's
/// limit) into the API's JSON error body; answers that already are JSON pass unchanged.
fn json_error_body<B>(
    res: actix_web::dev::ServiceResponse<B>,
) -> actix_web::Result<actix_web::middleware::ErrorHandlerResponse<B>> {
    use actix_web::middleware::ErrorHandlerResponse;
    let is_json = res
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let code = match status.as_u16() {
        413 => Code::L001,
        415 => Code::R415,
        429 => Code::R429,
        404 => Code::N404,
        405 => Code::M405,
        401 => Code::T070,
        403 => Code::T071,
        503 => Code::U001,
        s if s >= 500 => Code::I500,
        _ => Code::R400,
    };
    let body = ErrorBody {
        code,
        message: status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string(),
        details: Vec::new(),
    };
    let (req, _) = res.into_parts();
    let answer = HttpResponse::build(status).json(body);
    Ok(ErrorHandlerResponse::Response(
        actix_web::dev::ServiceResponse::new(req, answer).map_into_right_body(),
    ))
}

/// A resource whose unsupported methods answer a JSON `405`.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

/// Small JSON bodies (acknowledgements, withdrawals) are read up to this size.
pub const SMALL_BODY_LIMIT: usize = 1 << 20;

/// Reads a request body of at most `limit` bytes — called after authentication, so nobody
/// unauthenticated makes the server buffer anything. Larger: `413 L001`.
pub(crate) async fn read_body(
    payload: web::Payload,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    match payload.to_bytes_limited(limit).await {
        Ok(Ok(body)) => Ok(body),
        Err(_) => Err(ApiError::new(
            Code::L001,
            format!("body larger than the limit of {limit} bytes for this endpoint"),
        )),
        Ok(Err(e)) => Err(ApiError::new(
            Code::R400,
            format!("request body could not be read: {e}"),
        )),
    }
}

/// Registers every route on an actix `App`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/admin").route(web::get().to(console::to_index)))
        .service(resource("/admin/").route(web::get().to(console::index)))
        .service(resource("/admin/app.js").route(web::get().to(console::script)))
        .service(resource("/admin/app.css").route(web::get().to(console::style)))
        .service(resource("/admin/i18n.js").route(web::get().to(console::texts)))
        .service(resource("/admin/docs.js").route(web::get().to(console::docs_script)))
        .service(resource("/admin/favicon.svg").route(web::get().to(console::icon)))
        .service(resource("/health/live").route(web::get().to(live)))
        .service(resource("/health/ready").route(web::get().to(ready)))
        .service(resource("/metrics").route(web::get().to(metrics)))
        .service(
            web::scope("/api/v1")
                // Open to everyone: it describes the API and holds no data.
                .service(resource("/openapi.json").route(web::get().to(openapi::document)))
                .service(resource("/docs").route(web::get().to(console::docs)))
                .service(resource("/admin/me").route(web::get().to(browse::me)))
                .service(
                    resource("/deliveries")
                        .route(web::post().to(deliveries::post))
                        .route(web::get().to(deliveries::list)),
                )
                .service(resource("/deliveries/{id}").route(web::get().to(deliveries::one)))
                .service(resource("/batches").route(web::get().to(batches::list)))
                .service(resource("/batches/{id}").route(web::get().to(batches::one)))
                .service(resource("/batches/{id}/ack").route(web::post().to(feedback::ack)))
                .service(resource("/feedback").route(web::get().to(feedback::list)))
                .service(resource("/aggregates").route(web::get().to(aggregates::get)))
                .service(resource("/admin/mappings").route(web::get().to(admin::mappings)))
                .service(resource("/admin/dead-letters").route(web::get().to(dead_letters::list)))
                .service(
                    resource("/admin/dead-letters/{id}/replay")
                        .route(web::post().to(dead_letters::replay)),
                )
                .service(
                    resource("/admin/dead-letters/{id}/discard")
                        .route(web::post().to(dead_letters::discard)),
                )
                .service(resource("/admin/audit/verify").route(web::get().to(audit::verify)))
                .service(resource("/admin/disclosures").route(web::get().to(audit::disclosures)))
                .service(
                    resource("/admin/clients/{vendor}/{client_id}")
                        .route(web::delete().to(admin::erase)),
                )
                .service(
                    resource("/consents/withdrawals").route(web::post().to(consents::withdraw)),
                )
                .service(
                    resource("/admin/mappings/{format}/preview")
                        .route(web::post().to(admin::preview)),
                )
                // The administrator's console (admin-console.md).
                .service(resource("/admin/deliveries").route(web::get().to(browse::deliveries)))
                .service(resource("/admin/deliveries/{id}").route(web::get().to(browse::delivery)))
                .service(
                    resource("/admin/records/{vendor}/{record_id}")
                        .route(web::get().to(browse::record)),
                )
                .service(resource("/admin/recipients").route(web::get().to(browse::recipients)))
                .service(resource("/admin/recipients/{id}").route(web::get().to(browse::recipient)))
                .service(
                    resource("/admin/recipients/{id}/pause").route(web::post().to(browse::pause)),
                )
                .service(
                    resource("/admin/recipients/{id}/resume").route(web::post().to(browse::resume)),
                )
                .service(resource("/admin/stats").route(web::get().to(browse::stats)))
                .service(resource("/admin/audit/events").route(web::get().to(browse::audit_events)))
                .service(
                    resource("/admin/mappings/{format}")
                        .route(web::put().to(mapping_editor::deploy)),
                )
                .service(
                    resource("/admin/mappings/{format}/source")
                        .route(web::get().to(mapping_editor::source)),
                )
                .service(
                    resource("/admin/mappings/{format}/check")
                        .route(web::post().to(mapping_editor::check)),
                )
                .service(
                    resource("/admin/mappings/{format}/versions")
                        .route(web::get().to(mapping_editor::versions)),
                )
                .service(
                    resource("/admin/mappings/{format}/versions/{version}/deploy")
                        .route(web::post().to(mapping_editor::rollback)),
                ),
        )
        .default_service(web::to(not_found));
}

/// Runs the HTTP server on a bound listener until `shutdown` resolves: plain HTTP, or HTTPS
/// with `tls` (see [`crate::tls::server_config`]; a client certificate's fingerprint is kept per
/// connection for [`authenticate`]). Only the HTTP surface: the background workers are started
/// by the composition root ([`crate::app::serve`]).
pub async fn run(
    listener: std::net::TcpListener,
    gw: Arc<Gateway>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let data = web::Data::from(gw.clone());
    let json_config = web::JsonConfig::default()
        .limit(1 << 20)
        .error_handler(|err, _| {
            ApiError::new(Code::R400, format!("request body is not valid: {err}")).into()
        });
    let query_config = web::QueryConfig::default().error_handler(|err, _| {
        ApiError::new(Code::R400, format!("query is not valid: {err}")).into()
    });
    // One set of rate limiters for all workers.
    let rate_limits = web::Data::new(ratelimit::RateLimits::new(&gw.limits));
    let server = HttpServer::new(move || {
        App::new()
            // Encoded bodies are refused before any extractor reads them (only deliveries
            // accept gzip, decompressed as a stream).
            .wrap(actix_web::middleware::from_fn(
                deliveries::refuse_encoded_bodies,
            ))
            .wrap(actix_web::middleware::ErrorHandlers::new().default_handler(json_error_body))
            .app_data(rate_limits.clone())
            .app_data(data.clone())
            .app_data(json_config.clone())
            .app_data(query_config.clone())
            .configure(routes)
    })
    .on_connect(crate::tls::on_connect)
    .keep_alive(match gw.limits.keep_alive_secs {
        0 => actix_web::http::KeepAlive::Disabled,
        secs => actix_web::http::KeepAlive::Timeout(std::time::Duration::from_secs(secs)),
    })
    .disable_signals()
    .shutdown_timeout(10);
    let server = match tls {
        Some(config) => server.listen_rustls_0_23(listener, (*config).clone())?,
        None => server.listen(listener)?,
    }
    .run();
    let handle = server.handle();
    tokio::spawn(async move {
        shutdown.await;
        handle.stop(true).await;
    });
    server.await
}
