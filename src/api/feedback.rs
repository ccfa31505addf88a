//! The feedback loop ("Rückmeldungen"): a recipient acknowledges a batch with findings about its
//! records (`POST /batches/{id}/ack`); each finding is translated from the recipient's
//! `record_ref` back to the vendor's record and listed in that vendor's `GET /feedback`.

use super::{ApiError, authenticate, batches::summary};
use crate::catalogue::Code;
use crate::config::Role;
use crate::gateway::Gateway;
use crate::store::{AckOutcome, Finding};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

/// `GET /api/v1/feedback`: one page of findings about the vendor's records, oldest first.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct FeedbackList {
    /// The findings.
    feedback: Vec<FeedbackEntry>,
    /// The `cursor` of the next page; `null` on the last page.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// A recipient's finding about one of the vendor's records.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct FeedbackEntry {
    /// The vendor's record id (translated back from the recipient's `record_ref`).
    record_id: String,
    /// Reporting month `YYYY-MM`.
    reporting_period: String,
    /// The recipient that sent it.
    recipient: String,
    /// The recipient's code.
    code: String,
    /// The recipient's message (may be empty).
    message: String,
    /// When Weiche received it (RFC 3339, UTC, milliseconds).
    #[schema(format = DateTime)]
    received_at: String,
}

/// At most this many findings in one acknowledgement.
pub const MAX_FINDINGS: usize = 10_000;
/// Longest finding code, in characters.
pub const MAX_CODE_CHARS: usize = 64;
/// Longest finding message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 2_000;
/// Longest record reference, in characters.
pub const MAX_REF_CHARS: usize = 256;

/// Body of an acknowledgement.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Ack {
    /// Findings about items of this batch (may be empty or left out); at most 10,000.
    #[serde(default)]
    #[schema(max_items = 10_000)]
    findings: Vec<Finding>,
}

/// Checks the findings' sizes; the first problem as a message.
fn check_findings(findings: &[Finding]) -> Result<(), String> {
    if findings.len() > MAX_FINDINGS {
        return Err(format!(
            "at most {MAX_FINDINGS} findings per acknowledgement"
        ));
    }
    for (i, f) in findings.iter().enumerate() {
        let too_long = |s: &str, max: usize| s.chars().count() > max;
        if f.record_ref.is_empty() || too_long(&f.record_ref, MAX_REF_CHARS) {
            return Err(format!(
                "findings[{i}].record_ref: 1 to {MAX_REF_CHARS} characters"
            ));
        }
        if f.code.is_empty() || too_long(&f.code, MAX_CODE_CHARS) {
            return Err(format!(
                "findings[{i}].code: 1 to {MAX_CODE_CHARS} characters"
            ));
        }
        if too_long(&f.message, MAX_MESSAGE_CHARS) {
            return Err(format!(
                "findings[{i}].message: at most {MAX_MESSAGE_CHARS} characters"
            ));
        }
    }
    Ok(())
}

/// `POST /api/v1/batches/{id}/ack`.
#[utoipa::path(
    post,
    path = "/api/v1/batches/{id}/ack",
    operation_id = "ack_batch",
    tag = "recipient",
    summary = "Acknowledge a batch, with findings",
    description = "Role: **recipient**.\n\n\
        Idempotent: the first acknowledgement stores its findings and sets the state to \
        `acknowledged`; a repeat changes nothing (its findings are ignored) and gets the same \
        answer. An empty body acknowledges without findings. The findings are relayed to the \
        originating vendors' `GET /api/v1/feedback`. The body is JSON (its `Content-Type` is not \
        checked), at most 1 MiB. Limits: `record_ref` 1–256 and `code` 1–64 characters, \
        `message` at most 2,000.",
    params(("id" = String, Path, description = "The `batch_id`.")),
    request_body(content = Ack, content_type = "application/json",
        description = "Optional (an empty body acknowledges without findings): \
            `{\"findings\": [{\"record_ref\", \"code\", \"message\"}]}`."),
    responses(
        (status = 200, description = "Acknowledged: the batch summary with `\"state\": \"acknowledged\"`.", body = super::batches::BatchSummary),
        (status = 400, description = "`R400`: the body is not valid JSON, has unknown members, a finding lacks `record_ref` or `code` or is over a limit, or a `record_ref` names no item of this batch; nothing was changed.", body = crate::catalogue::ErrorBody),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 413, description = "`L001`: the body is larger than 1 MiB.", body = crate::catalogue::ErrorBody),
        (status = 415, response = super::openapi::UnsupportedEncoding),
        (status = 429, response = super::openapi::TooManyRequests),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn ack(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let me = authenticate(&req, &gw, Role::Recipient)?;
    let body = super::read_body(payload, super::SMALL_BODY_LIMIT).await?;
    // An empty body acknowledges without findings; anything else must be a valid Ack.
    let findings = if body.iter().all(u8::is_ascii_whitespace) {
        Vec::new()
    } else {
        serde_json::from_slice::<Ack>(&body)
            .map_err(|e| {
                ApiError::new(
                    Code::R400,
                    format!("acknowledgement body is not valid: {e}"),
                )
            })?
            .findings
    };
    check_findings(&findings).map_err(|m| ApiError::new(Code::R400, m))?;
    match gw
        .store
        .ack_batch(&me.id, &path.into_inner(), &findings, gw.clock.now_ms())
        .await?
    {
        AckOutcome::NotFound => Err(ApiError::not_found()),
        AckOutcome::UnknownRef(i) => Err(ApiError::new(
            Code::R400,
            format!("findings[{i}].record_ref names no item of this batch; nothing was changed"),
        )),
        AckOutcome::Acknowledged(batch) => Ok(HttpResponse::Ok().json(summary(&batch))),
    }
}

/// Query of `GET /feedback`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct FeedbackQuery {
    /// `next_cursor` of the previous page (opaque; `400 R400` if malformed).
    cursor: Option<String>,
    /// Page size, 1–1,000 (values out of range are clamped), default 100.
    #[param(default = 100)]
    limit: Option<i64>,
}

/// `GET /api/v1/feedback?cursor=…&limit=…`: the vendor's feedback, oldest first. The cursor is
/// opaque (the position after the page's last entry); `next_cursor` is `null` on the last page.
#[utoipa::path(
    get,
    path = "/api/v1/feedback",
    operation_id = "list_feedback",
    tag = "vendor",
    summary = "Findings of recipients about own records (Rückmeldungen)",
    description = "Role: **vendor**.\n\n\
        Findings that recipients sent with their acknowledgements about this vendor's records, \
        oldest first, each translated from the recipient's `record_ref` back to the vendor's \
        `record_id`. `next_cursor` is `null` on the last page. Query parameters other than \
        `cursor` and `limit` are refused (`400 R400`).",
    params(FeedbackQuery),
    responses(
        (status = 200, description = "One page of findings.", body = FeedbackList),
        (status = 400, description = "`R400`: malformed `cursor` or `limit`, or an unknown query parameter.", body = crate::catalogue::ErrorBody),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 429, response = super::openapi::TooManyRequests),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("bearer" = []), ("mutualTLS" = []), ("bearer" = [], "mutualTLS" = [])),
)]
pub(super) async fn list(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ApiError> {
    let vendor = authenticate(&req, &gw, Role::Vendor)?;
    let query: FeedbackQuery = super::query(&req)?;
    let after = match &query.cursor {
        None => 0,
        Some(c) => decode_cursor(c).ok_or_else(|| ApiError::new(Code::R400, "invalid cursor"))?,
    };
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let rows = gw.store.feedback(&vendor.id, after, limit + 1).await?;
    let more = rows.len() as i64 > limit;
    let page = &rows[..rows.len().min(limit as usize)];
    let next = if more {
        page.last().map(|f| encode_cursor(f.seq))
    } else {
        None
    };
    let feedback: Vec<FeedbackEntry> = page
        .iter()
        .map(|f| FeedbackEntry {
            record_id: f.record_id.clone(),
            reporting_period: f.reporting_period.clone(),
            recipient: f.recipient.clone(),
            code: f.code.clone(),
            message: f.message.clone(),
            received_at: crate::clock::rfc3339_ms(f.received_at),
        })
        .collect();
    Ok(HttpResponse::Ok().json(FeedbackList {
        feedback,
        next_cursor: next,
    }))
}

fn encode_cursor(seq: i64) -> String {
    hex::encode(format!("f.{seq}"))
}

fn decode_cursor(c: &str) -> Option<i64> {
    let text = String::from_utf8(hex::decode(c).ok()?).ok()?;
    text.strip_prefix("f.")?
        .parse()
        .ok()
        .filter(|n: &i64| *n >= 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip_and_garbage() {
        assert_eq!(decode_cursor(&encode_cursor(42)), Some(42));
        assert_eq!(decode_cursor("zz"), None);
        assert_eq!(decode_cursor(&hex::encode("x.1")), None);
        assert_eq!(decode_cursor(&hex::encode("f.-1")), None);
    }

    #[test]
    fn findings_are_bounded() {
        let f = |r: &str, c: &str, m: &str| Finding {
            record_ref: r.into(),
            code: c.into(),
            message: m.into(),
        };
        assert!(check_findings(&[f("p1.x", "S1", "")]).is_ok());
        assert!(check_findings(&[f("", "S1", "")]).is_err());
        assert!(check_findings(&[f("p1.x", "", "")]).is_err());
        assert!(check_findings(&[f("p1.x", "S1", &"m".repeat(2001))]).is_err());
    }
}
