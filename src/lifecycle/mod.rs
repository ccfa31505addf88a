//! The record lifecycle after the first delivery, as whole operations: [`cancel_omitted`] (a
//! full delivery omits a record), [`revoke`] (a re-delivered record's consent is withdrawn),
//! [`withdraw`] (a vendor records a withdrawal) and [`erase`] (an administrator erases a client).
//! Each tells every recipient holding an affected record with one envelope-only item, in order
//! after what that recipient already has, and writes one audit event per item. `withdraw` and
//! `erase` run their own transaction; `cancel_omitted` and `revoke` run inside the delivery's.
//! The HTTP side (authentication, parsing, the answer) is the API's.

use crate::audit::Event;
use crate::gateway::Gateway;
use crate::model::SCHEMA_VERSION;
use crate::store::{
    DeliveryTx, Erased, Holder, ItemKind, NewAuditEvent, NewItem, StoreError, StoreResult,
    Withdrawal,
};

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
        packed: None,
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
        packed: None,
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

/// A full delivery cancels the vendor's records it omits in the (program, month) `scopes` it
/// covers, except `rejected_ids` (records it named but rejected); every recipient holding one is
/// told. Returns the number of cancelled records.
pub async fn cancel_omitted(
    gw: &Gateway,
    tx: &mut Box<dyn DeliveryTx>,
    delivery_id: &str,
    vendor: &str,
    scopes: &[(String, String)],
    rejected_ids: &[String],
    at_ms: i64,
) -> StoreResult<u64> {
    let keys = tx
        .cancel_missing(delivery_id, vendor, scopes, rejected_ids)
        .await?;
    let holders = tx.holders(vendor, &keys).await?;
    notify(
        gw,
        tx,
        ItemKind::Cancellation,
        &holders,
        delivery_id,
        at_ms,
        None,
    )
    .await?;
    Ok(keys.len() as u64)
}

/// A re-delivered record whose consents are withdrawn: `(record id, period, withdrawn consent
/// ids, subject pseudonym)`.
pub type Withdrawn = (String, String, Vec<String>, Option<String>);

/// Revokes, before a delivery writes its records, what the holders of each record got under one
/// of its withdrawn consents (one look-up for all `records`).
pub async fn revoke(
    gw: &Gateway,
    tx: &mut Box<dyn DeliveryTx>,
    vendor: &str,
    delivery_id: &str,
    records: &[Withdrawn],
    at_ms: i64,
) -> StoreResult<()> {
    if records.is_empty() {
        return Ok(());
    }
    // Holders of every record with a withdrawn consent, then per record those that hold it
    // under one of those consents.
    let keys: Vec<(String, String)> = records
        .iter()
        .map(|(id, period, _, _)| (id.clone(), period.clone()))
        .collect();
    let all = tx.holders(vendor, &keys).await?;
    for (record_id, period, consents, subject) in records {
        let holders: Vec<Holder> = all
            .iter()
            .filter(|h| {
                h.record_id == *record_id
                    && h.reporting_period == *period
                    && h.consent_id.as_ref().is_some_and(|c| consents.contains(c))
            })
            .cloned()
            .collect();
        notify(
            gw,
            tx,
            ItemKind::Revocation,
            &holders,
            delivery_id,
            at_ms,
            subject.as_deref(),
        )
        .await?;
    }
    Ok(())
}

/// What [`withdraw`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithdrawalDone {
    /// Id of the withdrawal (the `delivery_id` of its revocations and audit events).
    pub withdrawal_id: String,
    /// Revocation items written.
    pub revocations: usize,
}

/// Records `vendor`'s withdrawal (the earliest date wins) and, when its day (`withdrawn_on`,
/// Europe/Berlin) has come, revokes what every holder got under the consent; one audit event
/// `withdrawal` and one per revocation. One transaction: all of it or nothing.
pub async fn withdraw(
    gw: &Gateway,
    vendor: &str,
    w: &Withdrawal,
    withdrawn_on: chrono::NaiveDate,
) -> StoreResult<WithdrawalDone> {
    let now = gw.clock.now_ms();
    let cause = uuid::Uuid::now_v7().to_string();
    let subject = gw.audit_key.subject(vendor, &w.client_id);
    let mut tx = gw.store.begin_delivery().await?;
    let result = async {
        tx.put_withdrawal(vendor, w).await?;
        let holders = if withdrawn_on <= crate::clock::berlin_date(now) {
            tx.client_holders(vendor, &w.client_id, Some(&w.consent_id))
                .await?
        } else {
            Vec::new()
        };
        tx.audit(&[client_event(
            "withdrawal",
            vendor,
            &subject,
            &cause,
            now,
            Some(&w.consent_id),
            format!("withdrawn on {}", w.withdrawn_on),
        )])
        .await?;
        notify(
            gw,
            &mut tx,
            ItemKind::Revocation,
            &holders,
            &cause,
            now,
            Some(&subject),
        )
        .await?;
        Ok::<_, StoreError>(holders.len())
    }
    .await;
    let revocations = match result {
        Ok(n) => n,
        Err(e) => {
            let _ = tx.rollback().await;
            return Err(e);
        }
    };
    tx.commit_plain().await?;
    Ok(WithdrawalDone {
        withdrawal_id: cause,
        revocations,
    })
}

/// What [`erase`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureDone {
    /// Id of the erasure (the `delivery_id` of its erasure items and audit events).
    pub erasure_id: String,
    /// What was found and removed, made unreadable or scrubbed (counts).
    pub erased: Erased,
    /// Recipients' erasure items written.
    pub notified: usize,
}

/// Erases `vendor`'s client `client_id` (GDPR Art. 17, 19): every holder of one of its records
/// gets an `erasure` item, the store deletes, blanks and scrubs what it holds of the client, one
/// audit event `erasure` with the counts is written (also when nothing was found), all in one
/// transaction; then the database is compacted so the data is gone from its files.
pub async fn erase(gw: &Gateway, vendor: &str, client_id: &str) -> StoreResult<ErasureDone> {
    let now = gw.clock.now_ms();
    let cause = uuid::Uuid::now_v7().to_string();
    let subject = gw.audit_key.subject(vendor, client_id);
    let mut tx = gw.store.begin_delivery().await?;
    let result = async {
        let holders = tx.client_holders(vendor, client_id, None).await?;
        let erased = tx.erase_client(vendor, client_id, &subject).await?;
        notify(
            gw,
            &mut tx,
            ItemKind::Erasure,
            &holders,
            &cause,
            now,
            Some(&subject),
        )
        .await?;
        tx.audit(&[erasure_event(vendor, &subject, &cause, now, &erased)])
            .await?;
        Ok::<_, StoreError>((erased, holders.len()))
    }
    .await;
    let (erased, notified) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = tx.rollback().await;
            return Err(e);
        }
    };
    tx.commit_plain().await?;
    gw.store.compact().await?;
    Ok(ErasureDone {
        erasure_id: cause,
        erased,
        notified,
    })
}

/// The audit event of an erasure as a whole (beside the per-recipient `erasure` events): the
/// counts of what was found, as JSON in `note`; written also when nothing was found.
fn erasure_event(
    vendor: &str,
    subject: &str,
    cause: &str,
    now: i64,
    erased: &Erased,
) -> NewAuditEvent {
    let counts = serde_json::to_string(erased).unwrap_or_default();
    client_event("erasure", vendor, subject, cause, now, None, counts)
}

/// The audit event of an action about one client as a whole (`withdrawal`, `erasure`): no
/// record, no recipient; found by the client's `subject` pseudonym.
fn client_event(
    kind: &str,
    vendor: &str,
    subject: &str,
    cause: &str,
    now: i64,
    consent_id: Option<&str>,
    note: String,
) -> NewAuditEvent {
    let event = Event {
        at: crate::clock::rfc3339_ms(now),
        kind: kind.to_string(),
        delivery_id: Some(cause.to_string()),
        vendor: vendor.to_string(),
        record_ref: None,
        reporting_period: None,
        recipient: None,
        legal_basis: None,
        citation: None,
        consent_id: consent_id.map(str::to_string),
        policy_version: None,
        fields: Vec::new(),
        fields_sha256: None,
        note: Some(note),
    };
    NewAuditEvent {
        packed: None,
        at_ms: now,
        kind: kind.to_string(),
        subject: Some(subject.to_string()),
        body: event.to_json(),
        field_set: None,
    }
}
