//! `POST /api/v1/consents/withdrawals`: a vendor records a client's withdrawal of a consent
//! without a full re-delivery. From the withdrawal day on, routing no longer uses that consent;
//! if the day has come, every recipient that holds a record sent under it gets a `revocation`.

use super::{ApiError, authenticate};
use crate::catalogue::Code;
use crate::config::Role;
use crate::gateway::Gateway;
use crate::ingest::lifecycle;
use crate::store::{ItemKind, Withdrawal};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

/// Body of a withdrawal.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WithdrawalBody {
    client_id: String,
    consent_id: String,
    withdrawn_on: String,
}

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
    let now = gw.clock.now_ms();
    let cause = uuid::Uuid::now_v7().to_string();
    let subject = gw.audit_key.subject(&vendor.id, &w.client_id);
    let mut tx = gw
        .store
        .begin_delivery()
        .await
        .map_err(ApiError::unavailable)?;
    let result = async {
        tx.put_withdrawal(
            &vendor.id,
            &Withdrawal {
                client_id: w.client_id.clone(),
                consent_id: w.consent_id.clone(),
                withdrawn_on: w.withdrawn_on.clone(),
            },
        )
        .await?;
        let holders = if day <= crate::gateway::berlin_date(now) {
            tx.client_holders(&vendor.id, &w.client_id, Some(&w.consent_id))
                .await?
        } else {
            Vec::new()
        };
        let event = crate::audit::Event {
            at: lifecycle::rfc3339(now),
            kind: "withdrawal".into(),
            delivery_id: Some(cause.clone()),
            vendor: vendor.id.clone(),
            record_ref: None,
            reporting_period: None,
            recipient: None,
            legal_basis: None,
            citation: None,
            consent_id: Some(w.consent_id.clone()),
            policy_version: None,
            fields: Vec::new(),
            note: Some(format!("withdrawn on {}", w.withdrawn_on)),
        };
        tx.audit(&[crate::store::NewAuditEvent {
            at_ms: now,
            kind: "withdrawal".into(),
            subject: Some(subject.clone()),
            body: event.to_json(),
        }])
        .await?;
        lifecycle::notify(
            &gw,
            &mut tx,
            ItemKind::Revocation,
            &holders,
            &cause,
            now,
            Some(&subject),
        )
        .await?;
        Ok::<_, crate::store::StoreError>(holders.len())
    }
    .await;
    let revoked = match result {
        Ok(n) => n,
        Err(e) => {
            let _ = tx.rollback().await;
            return Err(ApiError::unavailable(e));
        }
    };
    tx.commit_plain().await.map_err(ApiError::unavailable)?;
    tracing::info!(vendor = %vendor.id, revocations = revoked, "consent withdrawal recorded");
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "withdrawal_id": cause,
        "consent_id": w.consent_id,
        "withdrawn_on": w.withdrawn_on,
        "revocations": revoked,
    })))
}
