//! Admin endpoints over the audit trail: the hash-chain check and the disclosure report of one
//! client (GDPR Art. 15).

use super::{ApiError, authenticate};
use crate::catalogue::Code;
use crate::config::Role;
use crate::gateway::Gateway;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

/// `GET /api/v1/admin/audit/verify`: checks the audit hash chain. `200` with the
/// [`crate::audit::Verification`], also when the chain is broken (`"intact": false`).
#[utoipa::path(
    get,
    path = "/api/v1/admin/audit/verify",
    operation_id = "verify_audit_chain",
    tag = "admin",
    summary = "Check the audit hash chain",
    description = "Role: **admin**.\n\n\
        Always `200` when the trail could be read, also for a broken chain (then \
        `\"intact\": false` and `first_broken`). Removing the newest events leaves the chain \
        intact: compare `last_hash` with a value noted earlier.",
    responses(
        (status = 200, description = "The result of the check.", body = crate::audit::Verification),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 429, response = super::openapi::TooManyRequests),
        (status = 500, description = "`I500`: the audit trail holds an unreadable event.", body = crate::catalogue::ErrorBody),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn verify(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ApiError> {
    let admin = authenticate(&req, &gw, Role::Admin)?;
    let v = crate::audit::verify(gw.store.as_ref()).await?;
    match &v.first_broken {
        None => tracing::info!(admin = %admin.id, events = v.events, "audit chain intact"),
        Some(b) => tracing::warn!(
            admin = %admin.id,
            events = v.events,
            seq = b.seq,
            reason = %b.reason,
            "audit chain broken"
        ),
    }
    Ok(HttpResponse::Ok().json(v))
}

/// Query of the disclosure report.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DisclosureQuery {
    /// The vendor id.
    #[param(required = true, min_length = 1)]
    vendor: Option<String>,
    /// The vendor's client id.
    #[param(required = true, min_length = 1)]
    client_id: Option<String>,
}

/// `GET /api/v1/admin/disclosures?vendor=…&client_id=…`: the disclosure report of one client,
/// `{"vendor", "client_id", "events": [...]}` (see [`crate::audit::disclosure`]). `400 R400`
/// when a parameter is missing or empty.
#[utoipa::path(
    get,
    path = "/api/v1/admin/disclosures",
    operation_id = "disclosure_report",
    tag = "admin",
    summary = "Disclosure report of one client (GDPR Art. 15)",
    description = "Role: **admin**.\n\n\
        The client's audit events in chain order: routings, non-routings, withdrawals, \
        revocations and erasures, with recipient, legal basis, consent, policy version and the \
        fields let through. Cancellations are not in the report. An unknown client gives \
        `\"events\": []`.",
    params(DisclosureQuery),
    responses(
        (status = 200, description = "The report.", body = super::openapi::DisclosureReport),
        (status = 400, description = "`R400`: `vendor` or `client_id` is missing or empty.", body = crate::catalogue::ErrorBody),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 429, response = super::openapi::TooManyRequests),
        (status = 500, description = "`I500`: the audit trail holds an unreadable event.", body = crate::catalogue::ErrorBody),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn disclosures(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ApiError> {
    let admin = authenticate(&req, &gw, Role::Admin)?;
    let q: DisclosureQuery = super::query(&req)?;
    let required = |v: Option<String>, name: &str| {
        v.filter(|s| !s.is_empty()).ok_or_else(|| {
            ApiError::new(Code::R400, format!("query parameter '{name}' is required"))
        })
    };
    let vendor = required(q.vendor, "vendor")?;
    let client_id = required(q.client_id, "client_id")?;
    let events =
        crate::audit::disclosure(gw.store.as_ref(), &gw.audit_key, &vendor, &client_id).await?;
    // The client id is personal data: it is not logged.
    tracing::info!(admin = %admin.id, vendor = %vendor, events = events.len(), "disclosure report");
    Ok(HttpResponse::Ok().json(json!({
        "vendor": vendor,
        "client_id": client_id,
        "events": events,
    })))
}
