//! `GET /api/v1/aggregates?period=YYYY-MM&by=d1,d2,…`: disclosure-controlled counts of the
//! recipient's current records of one reporting month (consent-and-pseudonyms.md, "Aggregates
//! with disclosure control"). The counting and the suppression live in
//! [`crate::consent::aggregates`]; this handler authenticates, checks the query against the
//! recipient's policy (`A001`) and answers JSON.

use super::{ApiError, authenticate};
use crate::catalogue::Code;
use crate::config::Role;
use crate::consent::aggregates::{self, Dimension};
use crate::gateway::Gateway;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

/// Query of `GET /aggregates`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AggregatesQuery {
    /// Reporting month `YYYY-MM`.
    #[param(
        required = true,
        pattern = "^[0-9]{4}-(0[1-9]|1[0-2])$",
        example = "2026-10"
    )]
    period: Option<String>,
    /// Comma-separated dimensions (1–4, distinct): `program`, `sex`, `age_band`,
    /// `municipality_key`, `district`, `nationality_group`, `employment_status`,
    /// `school_qualification`, `service_kind`.
    #[param(
        required = true,
        example = "age_band,nationality_group",
        pattern = "^(program|sex|age_band|municipality_key|district|nationality_group|employment_status|school_qualification|service_kind)(,(program|sex|age_band|municipality_key|district|nationality_group|employment_status|school_qualification|service_kind)){0,3}$"
    )]
    by: Option<String>,
}

/// Answers `{"period", "by", "k", "cells", "rows", "grand_total"}`; cells in the dimensions'
/// order, rows in order of first appearance, suppressed values `null`.
#[utoipa::path(
    get,
    path = "/api/v1/aggregates",
    operation_id = "get_aggregates",
    tag = "recipient",
    summary = "Disclosure-controlled counts of own current records",
    description = "Role: **recipient**.\n\n\
        Counts the canonical records of one reporting month that the caller currently holds, by \
        1–4 distinct dimensions of `program`, `sex`, `age_band`, `municipality_key`, `district`, \
        `nationality_group`, `employment_status`, `school_qualification`, `service_kind`. A \
        dimension is allowed only if the caller's policy does not drop its field. Counts below \
        `k` (the policy's `min_cell`) are suppressed (`null`, `\"suppressed\": true`), with \
        secondary suppression per row.",
    params(AggregatesQuery),
    responses(
        (status = 200, description = "The counts.", body = super::openapi::Aggregates),
        (status = 400, description = "`R400`: `period` is not a month `YYYY-MM`, or `by` is missing, empty, repeats or names an unknown dimension; `A001`: a dimension is not allowed for this recipient.", body = crate::catalogue::ErrorBody),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 429, response = super::openapi::TooManyRequests),
        (status = 500, description = "`I500`: no policy is configured for the recipient, or a stored record could not be read.", body = crate::catalogue::ErrorBody),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn get(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ApiError> {
    let me = authenticate(&req, &gw, Role::Recipient)?;
    let q: AggregatesQuery = super::query(&req)?;
    let period = q
        .period
        .filter(|p| aggregates::valid_period(p))
        .ok_or_else(|| ApiError::new(Code::R400, "period must be a month YYYY-MM"))?;
    let by = aggregates::parse_by(q.by.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::new(Code::R400, e.to_string()))?;
    let Some(recipient) = gw.router.recipient(&me.id) else {
        tracing::error!(recipient = %me.id, "recipient principal without a policy");
        return Err(ApiError::new(
            Code::I500,
            "no policy is configured for this recipient",
        ));
    };
    let policy = &recipient.policy;
    aggregates::check_allowed(policy, &by).map_err(|d| {
        ApiError::new(
            Code::A001,
            format!(
                "dimension '{}' is not allowed for this recipient: its policy drops {}",
                d.name(),
                d.field().unwrap_or("it")
            ),
        )
    })?;
    let k = policy.file.min_cell;
    let texts = gw.store.current_records(&me.id, &period).await?;
    let mut records = Vec::with_capacity(texts.len());
    for text in &texts {
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) => records.push(v),
            Err(e) => {
                // The parser's message names a position, never the record's content.
                tracing::error!(recipient = %me.id, "stored record is not valid JSON: line {} column {}", e.line(), e.column());
                return Err(ApiError::new(
                    Code::I500,
                    "a stored record could not be read",
                ));
            }
        }
    }
    let cells = aggregates::count(&by, &period, policy, &records, &gw.validator);
    let disclosed = aggregates::disclose(&by, k, cells, &gw.validator);
    let names: Vec<&str> = by.iter().map(|d| Dimension::name(*d)).collect();
    tracing::info!(
        recipient = %me.id,
        period = %period,
        by = %names.join(","),
        records = records.len(),
        cells = disclosed.cells.len(),
        "aggregates answered"
    );
    let mut body = serde_json::json!({
        "period": period,
        "by": names,
        "k": k,
    });
    if let (Some(out), serde_json::Value::Object(parts)) =
        (body.as_object_mut(), disclosed.to_json())
    {
        out.extend(parts);
    }
    Ok(HttpResponse::Ok().json(body))
}
