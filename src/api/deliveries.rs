//! Vendor endpoints: post a delivery, read own receipts.

use super::{ApiError, authenticate};
use crate::catalogue::Code;
use crate::config::Role;
use crate::gateway::Gateway;
use crate::ingest::{self, Answer, DeliveryRequest, Receipt};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

/// Query of `POST /deliveries`.
#[derive(Debug, Deserialize)]
pub struct PostQuery {
    format: Option<String>,
    mode: Option<String>,
}

pub(super) async fn post(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let vendor = authenticate(&req, &gw, Role::Vendor)?;
    let idempotency_key = req
        .headers()
        .get("Idempotency-Key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_string);
    if idempotency_key.as_ref().is_some_and(|k| k.len() > 200) {
        return Err(ApiError::new(
            Code::R400,
            "Idempotency-Key longer than 200 characters",
        ));
    }
    let q: PostQuery = super::query(&req)?;
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > gw.limits.max_body_bytes) {
        let receipt = Receipt::rejected(
            &uuid::Uuid::now_v7().to_string(),
            q.format.as_deref().unwrap_or(""),
            q.mode.as_deref().unwrap_or("partial"),
            Code::L001,
            &format!(
                "body larger than the limit of {} bytes",
                gw.limits.max_body_bytes
            ),
        );
        return Ok(HttpResponse::PayloadTooLarge().json(receipt));
    }
    let charset = charset_of(&req);
    let request = DeliveryRequest {
        vendor: vendor.id,
        format: q.format,
        mode: q.mode,
        idempotency_key,
        charset,
    };
    match ingest::receive(gw.into_inner(), request, payload).await {
        Answer::Receipt { http, receipt } => Ok(HttpResponse::build(
            StatusCode::from_u16(http).unwrap_or(StatusCode::OK),
        )
        .json(receipt)),
        Answer::Error { code, message } => Err(ApiError::new(code, message)),
    }
}

/// Query of `GET /deliveries`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    since: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

fn encode_cursor(received_at: i64, id: &str) -> String {
    hex::encode(format!("{received_at}.{id}"))
}

fn decode_cursor(c: &str) -> Option<(i64, String)> {
    let text = String::from_utf8(hex::decode(c).ok()?).ok()?;
    let (at, id) = text.split_once('.')?;
    Some((at.parse().ok()?, id.to_string()))
}

pub(super) async fn list(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ApiError> {
    let vendor = authenticate(&req, &gw, Role::Vendor)?;
    let query: ListQuery = super::query(&req)?;
    let since = match &query.since {
        None => None,
        Some(s) => Some(
            chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|_| ApiError::new(Code::R400, "since must be an RFC 3339 time"))?
                .timestamp_millis(),
        ),
    };
    let after = match &query.cursor {
        None => None,
        Some(c) => {
            Some(decode_cursor(c).ok_or_else(|| ApiError::new(Code::R400, "invalid cursor"))?)
        }
    };
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    let rows = gw
        .store
        .deliveries(&vendor.id, since, after, limit + 1)
        .await
        .map_err(ApiError::unavailable)?;
    let more = rows.len() as i64 > limit;
    let page = &rows[..rows.len().min(limit as usize)];
    let next = if more {
        page.last().map(|d| encode_cursor(d.received_at, &d.id))
    } else {
        None
    };
    let receipts: Vec<serde_json::Value> = page
        .iter()
        .filter_map(|d| serde_json::from_str(&d.receipt).ok())
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({"deliveries": receipts, "next_cursor": next})))
}

pub(super) async fn one(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let vendor = authenticate(&req, &gw, Role::Vendor)?;
    let found = gw
        .store
        .delivery(&vendor.id, &path.into_inner())
        .await
        .map_err(ApiError::unavailable)?
        .ok_or_else(ApiError::not_found)?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(found.receipt))
}

/// The `charset` parameter of the request's `Content-Type`.
pub(super) fn charset_of(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| {
            ct.split(';').skip(1).find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("charset")
                    .then(|| v.trim().trim_matches('"').to_string())
            })
        })
}
