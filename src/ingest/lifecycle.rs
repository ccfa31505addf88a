//! The record lifecycle after the first delivery: cancellations (a full delivery omits a record),
//! revocations (the consent an item went out under is withdrawn) and erasures (an administrator
//! erases a client). Each becomes one envelope-only item for every recipient holding the record,
//! in order after what that recipient already has, and one audit event.

use crate::audit::Event;
use crate::gateway::Gateway;
use crate::model::SCHEMA_VERSION;
use crate::store::{DeliveryTx, Holder, ItemKind, NewAuditEvent, NewItem, StoreResult};

/// The envelope-only item of a lifecycle event for one holder.
pub fn envelope_item(gw: &Gateway, kind: ItemKind, holder: &Holder, cause_id: &str) -> NewItem {
    let policy_version = gw
        .router
        .recipient(&holder.recipient)
        .map(|r| r.policy.version.clone());
    let mut body = serde_json::Map::new();
    body.insert("type".into(), kind.as_str().into());
    body.insert("record_ref".into(), holder.record_ref.clone().into());
    if let Some(v) = &policy_version {
        body.insert("policy_version".into(), v.clone().into());
    }
    body.insert("schema_version".into(), SCHEMA_VERSION.into());
    body.insert(
        "reporting_period".into(),
        holder.reporting_period.clone().into(),
    );
    body.insert(
        "source".into(),
        serde_json::json!({"vendor": holder.vendor, "delivery_id": cause_id}),
    );
    if let Some(c) = &holder.consent_id {
        body.insert("consent_id".into(), c.clone().into());
    }
    NewItem {
        recipient: holder.recipient.clone(),
        kind,
        vendor: holder.vendor.clone(),
        record_id: holder.record_id.clone(),
        reporting_period: holder.reporting_period.clone(),
        record_ref: holder.record_ref.clone(),
        body: serde_json::Value::Object(body).to_string(),
        consent_id: holder.consent_id.clone(),
    }
}

/// The audit event of a lifecycle item.
pub fn event(
    gw: &Gateway,
    kind: ItemKind,
    holder: &Holder,
    cause_id: &str,
    at_ms: i64,
    subject: Option<String>,
) -> NewAuditEvent {
    let policy = gw.router.recipient(&holder.recipient).map(|r| &r.policy);
    let body = Event {
        at: crate::clock::rfc3339_ms(at_ms),
        kind: kind.as_str().to_string(),
        delivery_id: Some(cause_id.to_string()),
        vendor: holder.vendor.clone(),
        record_ref: Some(holder.record_ref.clone()),
        reporting_period: Some(holder.reporting_period.clone()),
        recipient: Some(holder.recipient.clone()),
        legal_basis: None,
        citation: None,
        consent_id: holder.consent_id.clone(),
        policy_version: policy.map(|p| p.version.clone()),
        fields: Vec::new(),
        fields_sha256: None,
        note: None,
    };
    NewAuditEvent {
        at_ms,
        kind: kind.as_str().to_string(),
        subject,
        body: body.to_json(),
        field_set: None,
    }
}

/// Writes one lifecycle item and audit event per holder.
pub async fn notify(
    gw: &Gateway,
    tx: &mut Box<dyn DeliveryTx>,
    kind: ItemKind,
    holders: &[Holder],
    cause_id: &str,
    at_ms: i64,
    subject: Option<&str>,
) -> StoreResult<()> {
    if holders.is_empty() {
        return Ok(());
    }
    let items: Vec<NewItem> = holders
        .iter()
        .map(|h| envelope_item(gw, kind, h, cause_id))
        .collect();
    let events: Vec<NewAuditEvent> = holders
        .iter()
        .map(|h| event(gw, kind, h, cause_id, at_ms, subject.map(str::to_string)))
        .collect();
    tx.put(&[], &items).await?;
    tx.audit(&events).await
}
