//! What the two backends share: decoding of rows, the seal rule, JSON columns, receipt
//! scrubbing and the other pure helpers both call.

use super::{
    BatchInfo, BatchState, ERASED_MESSAGE, Erased, FeedbackRow, FieldSet, Finding, Holder,
    ItemKind, NewAuditEvent, PushGroup, PushOutcome, PushState, SealRule, StoreError, StoreResult,
};

/// Replaces the message of every entry (`errors`, `warnings`, `notes`) about one of `records`
/// in a stored receipt by [`ERASED_MESSAGE`]. Returns the new receipt text (keys in their order)
/// and how many entries changed; `None` when none did.
pub(super) fn scrub_receipt(receipt: &str, records: &[i64]) -> StoreResult<Option<(String, u64)>> {
    let mut doc: serde_json::Value = serde_json::from_str(receipt)
        .map_err(|e| StoreError::Corrupt(format!("stored receipt is not JSON: {e}")))?;
    let mut changed = 0u64;
    for list in ["errors", "warnings", "notes"] {
        let Some(entries) = doc.get_mut(list).and_then(serde_json::Value::as_array_mut) else {
            continue;
        };
        for entry in entries {
            let about = entry
                .get("record")
                .and_then(serde_json::Value::as_i64)
                .is_some_and(|r| records.contains(&r));
            if about
                && let Some(m) = entry.get_mut("message")
                && m.as_str() != Some(ERASED_MESSAGE)
            {
                *m = ERASED_MESSAGE.into();
                changed += 1;
            }
        }
    }
    if changed == 0 {
        return Ok(None);
    }
    let text = serde_json::to_string(&doc)
        .map_err(|e| StoreError::Corrupt(format!("receipt could not be serialised: {e}")))?;
    Ok(Some((text, changed)))
}

/// A push group row: batch id, recipient, seal no, items, state, attempts, next at, last error,
/// updated at.
pub(super) type PushGroupTuple = (
    String,
    String,
    i64,
    i64,
    String,
    i64,
    i64,
    Option<String>,
    i64,
);

/// Decodes a push group row.
pub(super) fn push_group_row(
    (batch_id, recipient, seal_no, items, state, attempts, next_at, last_error, updated_at): PushGroupTuple,
) -> StoreResult<PushGroup> {
    let state = PushState::parse(&state)
        .ok_or_else(|| StoreError::Corrupt(format!("push group {batch_id}: state '{state}'")))?;
    Ok(PushGroup {
        batch_id,
        recipient,
        seal_no,
        items,
        state,
        attempts,
        next_at,
        last_error,
        updated_at,
    })
}

/// The seal rule: a full batch whenever `max_items` are open; the rest once its oldest item has
/// reached `max_age_ms`. `open` counts (up to `max_items`) the oldest open items, `oldest` is
/// the earliest `created_at` among them.
pub(super) fn should_seal(open: i64, oldest: Option<i64>, rule: SealRule, now_ms: i64) -> bool {
    match oldest {
        Some(oldest) if open > 0 => {
            open >= rule.max_items || now_ms.saturating_sub(oldest) >= rule.max_age_ms
        }
        _ => false,
    }
}

/// How many batches to seal now of `open` open items (counted up to some multiple of
/// `max_items`) with `oldest` as earliest `created_at`: every full batch, or else one batch of
/// the rest when [`should_seal`] says so (the age matters only then, when all open items are
/// counted).
pub(super) fn batches_to_seal(open: i64, oldest: Option<i64>, rule: SealRule, now_ms: i64) -> i64 {
    let full = open / rule.max_items.max(1);
    if full > 0 {
        full
    } else {
        i64::from(should_seal(open, oldest, rule, now_ms))
    }
}

/// Most batches one round of sealing claims (two parameters each in SQLite's `UPDATE`).
pub(super) const SEAL_CHUNK: i64 = 64;

/// One batch of a sealing round, as the round's head query counts it.
pub(super) struct HeadBatch {
    /// Its number within the round (0-based, in `seq` order).
    pub(super) group: i64,
    /// Its items.
    pub(super) count: i64,
    /// Its last item's `seq`: the batch is the open items after the previous batch up to it.
    pub(super) last_seq: i64,
    /// The reporting periods of its items.
    pub(super) periods: Vec<String>,
}

/// The batches of a round from its head's rows `(group, period, items, last seq)`, one row per
/// batch and period in any order; the batches in `group` order.
pub(super) fn head_batches(mut rows: Vec<(i64, String, i64, i64)>) -> Vec<HeadBatch> {
    rows.sort_unstable_by_key(|r| r.0);
    let mut batches: Vec<HeadBatch> = Vec::new();
    for (group, period, count, last) in rows {
        match batches.last_mut() {
            Some(b) if b.group == group => {
                b.count += count;
                b.last_seq = b.last_seq.max(last);
                b.periods.push(period);
            }
            _ => batches.push(HeadBatch {
                group,
                count,
                last_seq: last,
                periods: vec![period],
            }),
        }
    }
    batches
}

/// The batches of a round from its head: the open items `(seq, period)` in `seq` order,
/// `max_items` a batch (the last one may be shorter).
pub(super) fn batches_of_head(items: &[(i64, String)], max_items: i64) -> Vec<HeadBatch> {
    let size = usize::try_from(max_items).unwrap_or(usize::MAX).max(1);
    items
        .chunks(size)
        .zip(0..)
        .filter_map(|(chunk, group)| {
            let mut periods: Vec<String> = Vec::new();
            for (_, period) in chunk {
                if !periods.contains(period) {
                    periods.push(period.clone());
                }
            }
            Some(HeadBatch {
                group,
                count: i64::try_from(chunk.len()).unwrap_or(i64::MAX),
                last_seq: chunk.last()?.0,
                periods,
            })
        })
        .collect()
}

/// Counts erased items by kind: `record` items, and lifecycle items (everything else).
pub(super) fn count_items<'a>(erased: &mut Erased, kinds: impl Iterator<Item = &'a String>) {
    for kind in kinds {
        if kind == ItemKind::Record.as_str() {
            erased.items += 1;
        } else {
            erased.lifecycle_items += 1;
        }
    }
}

/// `(delivery id, record)` pairs grouped by delivery, in delivery-id order.
pub(super) fn by_delivery(mut pairs: Vec<(String, i64)>) -> Vec<(String, Vec<i64>)> {
    pairs.sort_unstable();
    let mut out: Vec<(String, Vec<i64>)> = Vec::new();
    for (delivery, record) in pairs {
        match out.last_mut() {
            Some((d, records)) if *d == delivery => records.push(record),
            _ => out.push((delivery, vec![record])),
        }
    }
    out
}

/// Sorted distinct periods as a JSON array.
pub(super) fn periods_json(mut periods: Vec<String>) -> String {
    periods.sort_unstable();
    periods.dedup();
    serde_json::to_string(&periods).unwrap_or_else(|_| "[]".to_string())
}

/// The distinct field sets the events refer to, in first-seen order.
pub(super) fn field_sets_of(events: &[NewAuditEvent]) -> Vec<&FieldSet> {
    let mut out: Vec<&FieldSet> = Vec::new();
    for set in events.iter().filter_map(|e| e.field_set.as_deref()) {
        if !out.iter().any(|s| s.sha256 == set.sha256) {
            out.push(set);
        }
    }
    out
}

/// The state, next due time and error an outcome writes.
pub(super) fn outcome_columns(
    outcome: &PushOutcome,
    now_ms: i64,
) -> (PushState, i64, Option<&str>) {
    match outcome {
        PushOutcome::Delivered => (PushState::Delivered, now_ms, None),
        PushOutcome::Retry { next_at, error } => (PushState::Pending, *next_at, Some(error)),
        PushOutcome::Dead { error } => (PushState::Dead, now_ms, Some(error)),
    }
}

/// A feedback row: seq, record id, period, recipient, code, message, received at.
pub(super) type FeedbackTuple = (i64, String, String, String, String, String, i64);

/// Columns of a feedback row, in [`FeedbackTuple`]'s order.
pub(super) const FEEDBACK_COLUMNS: &str =
    "seq, record_id, reporting_period, recipient, code, message, received_at";

/// Decodes a feedback row.
pub(super) fn feedback_row(
    (seq, record_id, reporting_period, recipient, code, message, received_at): FeedbackTuple,
) -> FeedbackRow {
    FeedbackRow {
        seq,
        record_id,
        reporting_period,
        recipient,
        code,
        message,
        received_at,
    }
}

/// The feedback rows `[vendor, record id, period, code, message]` of findings, given the
/// batch's items `(record_ref, vendor, record_id, period)` with the findings' refs (sorted by
/// ref). A finding becomes one row per record version the batch holds under its ref. `Err(i)`:
/// finding `i` names no item of the batch.
pub(super) fn feedback_rows<'a>(
    findings: &'a [Finding],
    known: &'a [(String, String, String, String)],
) -> Result<Vec<[&'a str; 5]>, usize> {
    let mut rows = Vec::new();
    for (i, f) in findings.iter().enumerate() {
        let start = known.partition_point(|k| k.0 < f.record_ref);
        let matching = known[start..]
            .iter()
            .take_while(|k| k.0 == f.record_ref)
            .map(|(_, vendor, record_id, period)| {
                [
                    vendor.as_str(),
                    record_id.as_str(),
                    period.as_str(),
                    f.code.as_str(),
                    f.message.as_str(),
                ]
            });
        let before = rows.len();
        rows.extend(matching);
        if rows.len() == before {
            return Err(i);
        }
    }
    Ok(rows)
}

/// Findings as stored with the batch (JSON array).
pub(super) fn findings_json(findings: &[Finding]) -> String {
    serde_json::to_string(findings).unwrap_or_else(|_| "[]".to_string())
}

/// Maps a migration error, reporting a lost connection as [`StoreError::Unavailable`].
pub(super) fn map_migrate_err(
    e: sqlx::migrate::MigrateError,
    map_err: fn(sqlx::Error) -> StoreError,
) -> StoreError {
    match e {
        sqlx::migrate::MigrateError::Execute(inner) => match map_err(inner) {
            StoreError::Database(inner) => {
                StoreError::Migrate(sqlx::migrate::MigrateError::Execute(inner))
            }
            other => other,
        },
        other => StoreError::Migrate(other),
    }
}

/// This process's clock in unix milliseconds.
pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Decodes a batch row.
pub(super) fn batch_info(
    (batch_id, recipient, created_at, items, periods, state): (
        String,
        String,
        i64,
        i64,
        String,
        String,
    ),
) -> StoreResult<BatchInfo> {
    let periods: Vec<String> = serde_json::from_str(&periods)
        .map_err(|e| StoreError::Corrupt(format!("batch {batch_id}: periods: {e}")))?;
    let state = BatchState::parse(&state)
        .ok_or_else(|| StoreError::Corrupt(format!("batch {batch_id}: state '{state}'")))?;
    Ok(BatchInfo {
        batch_id,
        recipient,
        created_at,
        items,
        periods,
        state,
    })
}

/// Columns of a batch row, in [`batch_info`]'s order.
pub(super) const BATCH_COLUMNS: &str =
    "batch_id, recipient, created_at, item_count, periods, state";

/// A holder row: recipient, vendor, record id, period, record ref, consent id.
pub(super) type HolderRow = (String, String, String, String, String, Option<String>);

/// Columns of an item or a holding (by table alias) read as a [`HolderRow`].
pub(super) fn holder_columns(alias: &str) -> String {
    format!(
        "{alias}.recipient, {alias}.vendor, {alias}.record_id, {alias}.reporting_period, \
         {alias}.record_ref, {alias}.consent_id"
    )
}

/// No holding (purged item) of item `i`'s record and recipient is newer than `i`.
pub(super) const NO_NEWER_HOLDING: &str = "NOT EXISTS (SELECT 1 FROM holdings AS n \
     WHERE n.vendor = i.vendor AND n.record_id = i.record_id \
     AND n.reporting_period = i.reporting_period AND n.recipient = i.recipient AND n.seq > i.seq)";

/// No item of holding `h`'s record and recipient is newer than `h`.
pub(super) const NO_NEWER_ITEM: &str = "NOT EXISTS (SELECT 1 FROM items AS n \
     WHERE n.vendor = h.vendor AND n.record_id = h.record_id \
     AND n.reporting_period = h.reporting_period AND n.recipient = h.recipient AND n.seq > h.seq)";

/// The last link of the audit chain: its newest event, or the anchor when every event was
/// purged.
pub(super) const LAST_LINK: &str = "SELECT seq, hash FROM (\
     SELECT seq, hash FROM audit WHERE seq = (SELECT MAX(seq) FROM audit) \
     UNION ALL SELECT seq, hash FROM audit_anchor) AS l ORDER BY seq DESC LIMIT 1";

/// Decodes a holder row.
pub(super) fn holder(
    (recipient, vendor, record_id, reporting_period, record_ref, consent_id): HolderRow,
) -> Holder {
    Holder {
        recipient,
        vendor,
        record_id,
        reporting_period,
        record_ref,
        consent_id,
    }
}

/// How a multi-row `INSERT` of `rows` rows is split into statements: as many of `max` rows as
/// fit, then of `max / 10`, then one of the rest, each with whether to keep it prepared. A
/// statement's text names its row count, and preparing one of hundreds of rows is a large part
/// of running it (SQLite compiles every row's expressions): only the two fixed sizes are kept
/// (`persistent`), so each call prepares at most one short statement anew, whatever its row
/// count.
pub(super) fn insert_blocks(rows: usize, max: usize) -> Vec<(std::ops::Range<usize>, bool)> {
    let mut blocks = Vec::new();
    let mut start = 0;
    for size in [max, (max / 10).max(1)] {
        while rows - start >= size {
            blocks.push((start..start + size, true));
            start += size;
        }
    }
    if start < rows {
        blocks.push((start..rows, false));
    }
    blocks
}

#[cfg(test)]
mod insert_block_tests {
    use super::insert_blocks;

    #[test]
    fn rows_are_split_into_two_kept_sizes_and_one_tail() {
        assert_eq!(insert_blocks(0, 1000), vec![]);
        assert_eq!(insert_blocks(37, 1000), vec![(0..37, false)]);
        assert_eq!(
            insert_blocks(2537, 1000),
            vec![
                (0..1000, true),
                (1000..2000, true),
                (2000..2100, true),
                (2100..2200, true),
                (2200..2300, true),
                (2300..2400, true),
                (2400..2500, true),
                (2500..2537, false)
            ]
        );
        assert_eq!(insert_blocks(500, 1000).len(), 5);
        for n in 0..3000 {
            let blocks = insert_blocks(n, 1000);
            let mut next = 0;
            for (range, _) in &blocks {
                assert_eq!(range.start, next);
                assert!(range.end > range.start && range.len() <= 1000);
                next = range.end;
            }
            assert_eq!(next, n);
            assert!(blocks.iter().filter(|(_, kept)| !kept).count() <= 1);
        }
    }
}

#[cfg(test)]
mod head_tests {
    use super::{HeadBatch, batches_of_head, head_batches};

    /// What the SQL grouping (`(row_number() - 1) / max` and the period) gave, for comparison.
    fn grouped_in_sql(items: &[(i64, String)], max: i64) -> Vec<HeadBatch> {
        let mut rows: Vec<(i64, String, i64, i64)> = Vec::new();
        for (i, (seq, period)) in items.iter().enumerate() {
            let g = i64::try_from(i).unwrap() / max;
            match rows.iter_mut().find(|r| r.0 == g && r.1 == *period) {
                Some(r) => {
                    r.2 += 1;
                    r.3 = r.3.max(*seq);
                }
                None => rows.push((g, period.clone(), 1, *seq)),
            }
        }
        rows.reverse();
        head_batches(rows)
    }

    fn comparable(batches: Vec<HeadBatch>) -> Vec<(i64, i64, i64, Vec<String>)> {
        batches
            .into_iter()
            .map(|mut b| {
                b.periods.sort_unstable();
                (b.group, b.count, b.last_seq, b.periods)
            })
            .collect()
    }

    #[test]
    fn batches_cut_from_the_items_are_those_the_sql_grouping_gave() {
        let periods = ["2026-10", "2026-11", "2026-09"];
        for len in 0..40usize {
            // Gaps in seq, as erasures leave them; periods mixed within a batch.
            let items: Vec<(i64, String)> = (0..len)
                .map(|i| {
                    let i64_i = i64::try_from(i).unwrap();
                    (
                        3 * i64_i + i64_i % 2 + 7,
                        periods[(i * 7 / 5) % 3].to_string(),
                    )
                })
                .collect();
            for max in [1, 2, 3, 5, 10, 100] {
                let cut = batches_of_head(&items, max);
                assert_eq!(
                    comparable(cut),
                    comparable(grouped_in_sql(&items, max)),
                    "{len} items, {max} a batch"
                );
            }
        }
        let cut = batches_of_head(&[(4, "2026-11".into()), (9, "2026-11".into())], 5);
        assert_eq!(
            comparable(cut),
            vec![(0, 2, 9, vec!["2026-11".to_string()])]
        );
    }
}
