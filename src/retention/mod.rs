//! Retention (quality.md "Reliability → Retention"; docs/operations.md "Retention"): stored
//! records, delivered outputs, receipts and — kept longer — audit events are purged after the
//! periods of the `[retention]` configuration section.
//!
//! This module turns the configuration into [`Cutoffs`] and runs the store's work: at start-up
//! [`prepare`] creates the PostgreSQL partitions the next deliveries need (before the server
//! listens), and [`run`] maintains the partitions and purges at start-up and then every hour.
//! `weiche purge [--dry-run]` runs one round by hand ([`run_once`]). What is purged is logged and
//! counted (`weiche_purged_total{kind}`) with counts and partition names only — no personal data.

use crate::config::Retention;
use crate::gateway::Gateway;
use crate::store::{Cutoffs, Month, PartitionReport, PurgeReport, Store, StoreError};
use chrono::{Months, TimeZone, Utc};
use std::sync::Arc;
use std::time::Duration;

/// Time between two rounds of [`run`].
pub const INTERVAL: Duration = Duration::from_secs(3600);

/// One day in milliseconds.
const DAY_MS: i64 = 86_400_000;

/// The cut-offs of the configured periods at `now_ms` (0 = keep forever):
///
/// * records: periods before the month (Europe/Berlin) of `now` minus `records_months` — a
///   period is kept for `records_months` after its end;
/// * outputs: created before `now − outputs_days` days;
/// * audit events: written before `now − audit_months` calendar months (UTC);
/// * receipts: received before `now − receipts_days` days.
pub fn cutoffs(cfg: &Retention, now_ms: i64, dry_run: bool) -> Cutoffs {
    let days_before = |days: u32| {
        (days > 0).then(|| now_ms.saturating_sub(i64::from(days).saturating_mul(DAY_MS)))
    };
    let this_month = Month::of_date(crate::clock::berlin_date(now_ms));
    Cutoffs {
        records_before: (cfg.records_months > 0)
            .then(|| this_month.plus(-i64::from(cfg.records_months))),
        outputs_before_ms: days_before(cfg.outputs_days),
        audit_before_ms: (cfg.audit_months > 0).then(|| {
            Utc.timestamp_millis_opt(now_ms)
                .single()
                .and_then(|t| t.checked_sub_months(Months::new(cfg.audit_months)))
                .map_or(i64::MIN, |t| t.timestamp_millis())
        }),
        receipts_before_ms: days_before(cfg.receipts_days),
        dry_run,
    }
}

/// The system clock in unix milliseconds: stored times (items, receipts) come from it too.
fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Creates the partitions the next deliveries need (PostgreSQL), before the server takes
/// requests. Failures are logged, not fatal: rows then land in a DEFAULT partition until a later
/// round creates the partition.
pub async fn prepare(store: &dyn Store, cfg: &Retention) {
    let now = now_ms();
    match store
        .maintain_partitions(now, &cutoffs(cfg, now, false))
        .await
    {
        Ok(report) => log_partitions(&report),
        Err(e) => tracing::warn!("retention: cannot prepare partitions: {e}"),
    }
}

/// One round: partition maintenance (not in a dry run), then the purge, logged and counted.
pub async fn run_once(
    store: &dyn Store,
    cfg: &Retention,
    dry_run: bool,
) -> Result<(PartitionReport, PurgeReport), StoreError> {
    let now = now_ms();
    let cut = cutoffs(cfg, now, dry_run);
    let partitions = if dry_run {
        PartitionReport::default()
    } else {
        let report = store.maintain_partitions(now, &cut).await?;
        log_partitions(&report);
        report
    };
    let purged = store.purge(&cut).await?;
    log_purge(&purged);
    if !purged.dry_run && !purged.skipped {
        let metrics = crate::telemetry::metrics::purged;
        metrics("records", purged.records);
        metrics("holdings", purged.holdings);
        metrics("items", purged.items);
        metrics("batches", purged.batches);
        metrics("audit_events", purged.audit_events);
        metrics("receipts", purged.receipts);
        let overdue = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        crate::telemetry::metrics::retention_overdue("items", overdue(purged.overdue_items));
        crate::telemetry::metrics::retention_overdue("records", overdue(purged.overdue_records));
    }
    Ok((partitions, purged))
}

fn log_partitions(r: &PartitionReport) {
    if !r.created.is_empty() {
        tracing::info!(
            partitions = %r.created.join(","),
            moved_rows = r.moved_rows,
            "retention: partitions created"
        );
    }
    for note in &r.notes {
        tracing::warn!("retention: {note}");
    }
}

fn log_purge(r: &PurgeReport) {
    if r.skipped {
        tracing::debug!("retention: another instance is purging; skipped");
        return;
    }
    let what = if r.dry_run {
        "retention: would purge (dry run)"
    } else {
        "retention: purged"
    };
    let total = r.records + r.holdings + r.items + r.batches + r.audit_events + r.receipts;
    if total > 0 || !r.partitions_dropped.is_empty() || r.dry_run {
        tracing::info!(
            records = r.records,
            holdings = r.holdings,
            items = r.items,
            batches = r.batches,
            audit_events = r.audit_events,
            receipts = r.receipts,
            partitions = %r.partitions_dropped.join(","),
            overdue_items = r.overdue_items,
            overdue_records = r.overdue_records,
            "{what}"
        );
    }
    if let Some(a) = &r.audit_anchor
        && !r.dry_run
    {
        tracing::info!(
            seq = a.seq,
            hash = %a.hash,
            "retention: audit chain now starts after this anchor"
        );
    }
    for note in &r.notes {
        tracing::warn!("retention: {note}");
    }
}

/// Runs [`run_once`] now and then every [`INTERVAL`] until `stop` resolves. Errors are logged
/// and the next round tries again.
pub async fn run(gw: Arc<Gateway>, stop: impl std::future::Future<Output = ()>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {
                // A round may take long (a first purge of a large database); stopping drops it,
                // which rolls its open transaction back.
                tokio::select! {
                    _ = &mut stop => return,
                    result = run_once(gw.store.as_ref(), &gw.retention, false) => {
                        if let Err(e) = result {
                            tracing::warn!("retention: round failed: {e}");
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn cutoffs_of_the_defaults() {
        let now = ms("2026-11-25T18:00:00Z");
        let c = cutoffs(&Retention::default(), now, false);
        // A record of 2024-10 ended on 31 October 2024; 24 months later it goes.
        assert_eq!(
            c.records_before.map(|m| m.period()).as_deref(),
            Some("2024-11")
        );
        assert_eq!(c.outputs_before_ms, Some(ms("2026-08-27T18:00:00Z")));
        assert_eq!(c.audit_before_ms, Some(ms("2016-11-25T18:00:00Z")));
        assert_eq!(c.receipts_before_ms, Some(ms("2025-11-25T18:00:00Z")));
        assert!(!c.dry_run);
        assert!(cutoffs(&Retention::default(), now, true).dry_run);
    }

    #[test]
    fn zero_keeps_forever() {
        let c = cutoffs(&Retention::forever(), ms("2026-11-25T18:00:00Z"), false);
        assert_eq!(c, Cutoffs::default());
    }

    #[test]
    fn record_months_follow_the_berlin_calendar() {
        let cfg = Retention {
            records_months: 1,
            ..Retention::forever()
        };
        // 31 December 23:30 UTC is already 1 January in Berlin.
        let c = cutoffs(&cfg, ms("2026-12-31T23:30:00Z"), false);
        assert_eq!(
            c.records_before.map(|m| m.period()).as_deref(),
            Some("2026-12")
        );
        let c = cutoffs(&cfg, ms("2026-12-31T22:30:00Z"), false);
        assert_eq!(
            c.records_before.map(|m| m.period()).as_deref(),
            Some("2026-11")
        );
        // Audit months at the end of a month: 31 March minus one month is the end of February.
        let cfg = Retention {
            audit_months: 1,
            ..Retention::forever()
        };
        let c = cutoffs(&cfg, ms("2026-03-31T12:00:00Z"), false);
        assert_eq!(c.audit_before_ms, Some(ms("2026-02-28T12:00:00Z")));
    }
}
