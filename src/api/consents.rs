//! `POST /api/v1/consents/withdrawals`: a vendor records a client's withdrawal of a consent
//! without a full re-delivery. From the withdrawal day on, routing no longer uses that consent;
//! if the day has come, every recipient that holds a record sent under it gets a `revocation`.

use super::{ApiError, authenticate};
use crate::catalogue::Code;
use crate::config::Role;
use crate::gateway::Gateway;
use crate::store::Withdrawal;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

/// `POST /api/v1/consents/withdrawals`: the recorded withdrawal.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct WithdrawalAnswer {
    /// Id of the withdrawal: `source.delivery_id` of the revocation items and the audit events.
    withdrawal_id: String,
    /// The consent withdrawn.
    consent_id: String,
    /// The withdrawal day, `YYYY-MM-DD`.
    #[schema(format = Date)]
    withdrawn_on: String,
    /// Revocation items sent now (`0` for a day in the future, an unknown client or consent,
    /// or when all holders were already told).
    revocations: u64,
}

/// Body of a withdrawal.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalBody {
    /// The vendor's client id (not empty).
    #[schema(min_length = 1, example = "KL-0000")]
    client_id: String,
    /// The consent withdrawn (not empty).
    #[schema(min_length = 1, example = "EW-0000")]
    consent_id: String,
    /// The first day (Europe/Berlin) on which the consent no longer holds, `YYYY-MM-DD`.
    #[schema(format = Date, example = "2026-11-20")]
    withdrawn_on: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/consents/withdrawals",
    operation_id = "withdraw_consent",
    tag = "vendor",
    summary = "Record a consent withdrawal; revokes what was sent under it",
    description = "Role: **vendor**.\n\n\
        Stores the withdrawal for the calling vendor's client: from `withdrawn_on` on, the consent \
        no longer holds for routing (a repeated withdrawal keeps the earliest date). If that day \
        has come, every recipient whose latest item for one of the client's records was sent \
        under this consent gets a `revocation` item at once. Recipients under a statute are not \
        affected. The body is JSON (its `Content-Type` is not checked), at most 1 MiB.",
    request_body(content = WithdrawalBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Recorded.", body = WithdrawalAnswer),
        (status = 400, description = "`R400`: the body is not valid JSON, a member is missing or unknown, `client_id` or `consent_id` is empty, `withdrawn_on` is not a date.", body = crate::catalogue::ErrorBody),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 413, description = "`L001`: the body is larger than 1 MiB.", body = crate::catalogue::ErrorBody),
        (status = 415, response = super::openapi::UnsupportedEncoding),
        (status = 429, response = super::openapi::TooManyRequests),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("bearer" = []), ("mutualTLS" = []), ("bearer" = [], "mutualTLS" = [])),
)]
pub(super) async fn withdraw(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let vendor = authenticate(&req, &gw, Role::Vendor)?;
    let body = super::read_body(payload, super::SMALL_BODY_LIMIT).await?;
    let w: WithdrawalBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(Code::R400, format!("withdrawal body is not valid: {e}")))?;
    // Strictly YYYY-MM-DD: dates are compared as text in the store.
    let day = chrono::NaiveDate::parse_from_str(&w.withdrawn_on, "%Y-%m-%d")
        .ok()
        .filter(|d| d.format("%Y-%m-%d").to_string() == w.withdrawn_on)
        .ok_or_else(|| ApiError::new(Code::R400, "withdrawn_on must be a date YYYY-MM-DD"))?;
    if w.client_id.trim().is_empty() || w.consent_id.trim().is_empty() {
        return Err(ApiError::new(
            Code::R400,
            "client_id and consent_id are required",
        ));
    }
    let done = crate::lifecycle::withdraw(
        &gw,
        &vendor.id,
        &Withdrawal {
            client_id: w.client_id.clone(),
            consent_id: w.consent_id.clone(),
            withdrawn_on: w.withdrawn_on.clone(),
        },
        day,
    )
    .await?;
    let (cause, revoked) = (done.withdrawal_id, done.revocations);
    tracing::info!(vendor = %vendor.id, revocations = revoked, "consent withdrawal recorded");
    Ok(HttpResponse::Ok().json(WithdrawalAnswer {
        withdrawal_id: cause,
        consent_id: w.consent_id,
        withdrawn_on: w.withdrawn_on,
        revocations: revoked as u64,
    }))
}
