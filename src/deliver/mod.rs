//! Getting items out of Weiche. Pull recipients: open items are sealed into batches by size and
//! age ([`seal_all`], run on every batch listing and by a background ticker), and batches are
//! fetched from the store page by page ([`fetch`]) and rendered ([`formats`]: XML and CSV). Push recipients: their
//! items are sealed into groups and POSTed by the lanes of [`push`].

pub mod alerts;
pub mod fetch;
pub mod formats;
pub mod push;

use crate::consent::policy::DeliveryKind;
use crate::gateway::Gateway;
use crate::store::{SealRule, StoreError};
use std::time::{Duration, Instant, SystemTime};

/// The sealing rule of a recipient's policy.
pub fn seal_rule(gw: &Gateway, recipient: &str) -> Option<SealRule> {
    let r = gw.router.recipient(recipient)?;
    let d = &r.policy.file.delivery;
    match d.kind {
        DeliveryKind::Pull => Some(SealRule {
            max_items: i64::from(d.batch_max_items),
            max_age_ms: i64::try_from(d.batch_max_age_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            push: false,
            call_items: crate::store::SEAL_ITEMS_PER_CALL,
        }),
        // Push recipients' items are sealed by their lane (see [`push`]).
        DeliveryKind::Push => None,
    }
}

/// Seals what is due for one recipient; returns the number of batches sealed.
pub async fn seal(gw: &Gateway, recipient: &str) -> Result<u64, StoreError> {
    match seal_rule(gw, recipient) {
        // Items are stamped by the store with the system time, so sealing compares with it too
        // (the injectable clock fixes the processing day of consent checks).
        Some(rule) => {
            // A backlog is sealed in many short transactions, so that deliveries can write
            // between them.
            let cap = u64::try_from(rule.batches_per_call()).unwrap_or(1);
            let mut sealed = 0;
            loop {
                let now = chrono::Utc::now().timestamp_millis();
                let n = gw.store.seal(recipient, rule, now).await?;
                sealed += n;
                if n < cap {
                    return Ok(sealed);
                }
                tokio::task::yield_now().await;
            }
        }
        None => Ok(0),
    }
}

/// Seals what is due for every pull recipient.
pub async fn seal_all(gw: &Gateway) -> Result<u64, StoreError> {
    let mut sealed = 0;
    for r in gw.router.recipients() {
        sealed += seal(gw, r.id()).await?;
    }
    Ok(sealed)
}

/// Sets the outbox-depth gauge (`weiche_outbox_depth`) of every recipient from its open items
/// (pull) or its items not yet delivered (push); returns the total. A recipient whose count cannot be read keeps its last value.
pub async fn observe_outbox(gw: &Gateway) -> i64 {
    let mut total = 0;
    for r in gw.router.recipients() {
        let depth = match r.policy.file.delivery.kind {
            DeliveryKind::Pull => gw.store.open_items(r.id()).await,
            DeliveryKind::Push => gw.store.push_backlog(r.id()).await,
        };
        match depth {
            Ok(n) => {
                crate::telemetry::metrics::outbox_depth(r.id(), n);
                total += n;
            }
            Err(e) => tracing::debug!("cannot count open items of {}: {e}", r.id()),
        }
    }
    total
}

/// One round of the sealer: [`seal_all`], with the outbox depth observed before and after. A
/// round that sealed batches is recorded as a `deliver` span and in the `deliver` stage time
/// (rounds that sealed nothing are not, or a waiting item would make one every second).
async fn seal_round(gw: &Gateway) -> Result<u64, StoreError> {
    let open = observe_outbox(gw).await;
    let (at, started) = (SystemTime::now(), Instant::now());
    let sealed = seal_all(gw).await;
    if let Ok(n) = sealed
        && n > 0
    {
        crate::telemetry::metrics::stage("deliver", started.elapsed());
        crate::telemetry::finished_span(
            "deliver",
            at,
            &[
                ("weiche.batches", i64::try_from(n).unwrap_or(i64::MAX)),
                ("weiche.open_items", open),
            ],
        );
        observe_outbox(gw).await;
    }
    sealed
}

/// Seals every second until `stop` resolves.
pub async fn run_sealer(gw: std::sync::Arc<Gateway>, stop: impl std::future::Future<Output = ()>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {
                if let Err(e) = seal_round(&gw).await {
                    tracing::warn!("sealing batches failed: {e}");
                }
            }
        }
    }
}
