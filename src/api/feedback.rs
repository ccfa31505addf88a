//! The feedback loop ("Rückmeldungen"): a recipient acknowledges a batch with findings about its
//! records (`POST /batches/{id}/ack`); each finding is translated from the recipient's
//! `record_ref` back to the vendor's record and listed in that vendor's `GET /feedback`.

use super::{ApiError, authenticate, batches::info_json};
use crate::catalogue::Code;
use crate::config::Role;
use crate::gateway::Gateway;
use crate::store::{AckOutcome, Finding};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

/// At most this many findings in one acknowledgement.
pub const MAX_FINDINGS: usize = 10_000;
/// Longest finding code, in characters.
pub const MAX_CODE_CHARS: usize = 64;
/// Longest finding message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 2_000;
/// Longest record reference, in characters.
pub const MAX_REF_CHARS: usize = 256;

/// Body of an acknowledgement.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ack {
    #[serde(default)]
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
        .await
        .map_err(ApiError::unavailable)?
    {
        AckOutcome::NotFound => Err(ApiError::not_found()),
        AckOutcome::UnknownRef(i) => Err(ApiError::new(
            Code::R400,
            format!("findings[{i}].record_ref names no item of this batch; nothing was changed"),
        )),
        AckOutcome::Acknowledged(batch) => Ok(HttpResponse::Ok().json(info_json(&batch))),
    }
}

/// Query of `GET /feedback`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackQuery {
    cursor: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/v1/feedback?cursor=…&limit=…`: the vendor's feedback, oldest first. The cursor is
/// opaque (the position after the page's last entry); `next_cursor` is `null` on the last page.
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
    let rows = gw
        .store
        .feedback(&vendor.id, after, limit + 1)
        .await
        .map_err(ApiError::unavailable)?;
    let more = rows.len() as i64 > limit;
    let page = &rows[..rows.len().min(limit as usize)];
    let next = if more {
        page.last().map(|f| encode_cursor(f.seq))
    } else {
        None
    };
    let feedback: Vec<_> = page
        .iter()
        .map(|f| {
            serde_json::json!({
                "record_id": f.record_id,
                "reporting_period": f.reporting_period,
                "recipient": f.recipient,
                "code": f.code,
                "message": f.message,
                "received_at": super::rfc3339_ms(f.received_at),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({"feedback": feedback, "next_cursor": next})))
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
