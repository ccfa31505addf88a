//! Alert webhooks (admin-console.md, "Alerts"): a notice to the configured HTTPS endpoint of its
//! kind (`[alerts.<kind>]`), signed like a push delivery (`X-Weiche-Timestamp`,
//! `X-Weiche-Signature`), when a mapping file fails to load (`mapping_failed`) and when a push
//! group becomes a dead letter (`dead_letter`).
//!
//! The worker looks every [`POLL`] at the loaded mappings' failures and at the store's dead
//! letters, and sends each new occurrence once (retried [`ATTEMPTS`] times with a growing
//! pause); each notice sent or given up is an audit event `alert` (kind, id, outcome), so the
//! console's audit view shows them. What was seen is kept in memory: failures and dead letters
//! present when the process starts are not announced again. Notices hold ids, files, lines,
//! codes and counts, never a value of a field.

use super::push::Target;
use crate::gateway::Gateway;
use crate::store::{NewAuditEvent, PushState};
use bytes::Bytes;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How often the worker looks for new occurrences.
pub const POLL: Duration = Duration::from_millis(500);
/// Attempts per notice.
pub const ATTEMPTS: u32 = 4;

/// Errors of the alert worker (logged; the worker goes on).
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// The store could not be read or written.
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// The mapping failures now, as `(file, line, error)`.
fn mapping_failures(gw: &Gateway) -> BTreeSet<(String, usize, String)> {
    gw.mappings
        .load()
        .failures
        .iter()
        .map(|f| (f.file().to_string(), f.line(), f.message()))
        .collect()
}

async fn dead_letters(gw: &Gateway) -> Result<BTreeMap<String, Value>, AlertError> {
    Ok(gw
        .store
        .push_groups(PushState::Dead, None)
        .await?
        .iter()
        .map(|g| {
            (
                g.batch_id.clone(),
                json!({
                    "group": g.batch_id,
                    "recipient": g.recipient,
                    "items": g.items,
                    "attempts": g.attempts,
                    // The status only: the receiver's answer may quote anything.
                    "last_error": g.last_error.as_deref().map(super::push::loggable),
                }),
            )
        })
        .collect())
}

/// Sends one notice (retried) and records it in the audit trail.
async fn notify(gw: &Gateway, target: &Target, kind: &str, details: Value) {
    let id = uuid::Uuid::now_v7().to_string();
    let now = gw.clock.now_ms();
    let mut body = json!({
        "kind": kind,
        "id": id,
        "at": crate::clock::rfc3339_ms(now),
        "instance": gw.instance,
    });
    if let (Some(b), Some(d)) = (body.as_object_mut(), details.as_object()) {
        b.extend(d.clone());
    }
    let bytes = Bytes::from(body.to_string());
    let key = format!("{kind}:{id}");
    let mut outcome = Err(String::new());
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
        }
        outcome = target.send_once(&key, bytes.clone()).await;
        if outcome.is_ok() {
            break;
        }
    }
    match &outcome {
        Ok(()) => tracing::info!(alert = kind, id = %id, "alert sent"),
        Err(e) => tracing::warn!(alert = kind, id = %id, error = %e, "alert not delivered"),
    }
    let note =
        json!({"alert": kind, "id": id, "delivered": outcome.is_ok(), "error": outcome.err()});
    let event = crate::audit::Event {
        at: crate::clock::rfc3339_ms(now),
        kind: "alert".into(),
        delivery_id: None,
        vendor: String::new(),
        record_ref: None,
        reporting_period: None,
        recipient: details["recipient"].as_str().map(str::to_string),
        legal_basis: None,
        citation: None,
        consent_id: None,
        policy_version: None,
        fields: Vec::new(),
        fields_sha256: None,
        note: Some(note.to_string()),
    };
    let audit = NewAuditEvent {
        packed: None,
        at_ms: now,
        kind: "alert".into(),
        subject: None,
        body: event.to_json(),
        field_set: None,
    };
    let written = async {
        let mut tx = gw.store.begin_delivery().await?;
        tx.audit(&[audit]).await?;
        tx.commit_plain().await
    }
    .await;
    if let Err(e) = written {
        tracing::warn!(error = %e, "alert could not be recorded in the audit trail");
    }
}

/// Runs until `stop` resolves. Does nothing when no alert is configured.
pub async fn run(
    gw: Arc<Gateway>,
    targets: BTreeMap<String, Arc<Target>>,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    if targets.is_empty() {
        return;
    }
    tokio::pin!(stop);
    let mapping_target = targets.get("mapping_failed").cloned();
    let dead_target = targets.get("dead_letter").cloned();
    let mut seen_failures = mapping_failures(&gw);
    let mut seen_dead: BTreeSet<String> = match dead_letters(&gw).await {
        Ok(d) => d.into_keys().collect(),
        Err(_) => BTreeSet::new(),
    };
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(POLL) => {}
        }
        if let Some(target) = &mapping_target {
            let now = mapping_failures(&gw);
            for (file, line, error) in now.difference(&seen_failures) {
                let details = json!({"file": file, "line": line, "error": error});
                notify(&gw, target, "mapping_failed", details).await;
            }
            seen_failures = now;
        }
        if let Some(target) = &dead_target {
            match dead_letters(&gw).await {
                Ok(now) => {
                    for (id, details) in &now {
                        if !seen_dead.contains(id) {
                            notify(&gw, target, "dead_letter", details.clone()).await;
                        }
                    }
                    // A group replayed and dead again is a new occurrence.
                    seen_dead = now.into_keys().collect();
                }
                Err(e) => tracing::warn!(error = %e, "alerts: dead letters could not be read"),
            }
        }
    }
}
