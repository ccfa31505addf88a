//! PostgreSQL implementation of [`Store`], for one or several `weiche serve` processes on one
//! database. Owns the pool set-up, the PostgreSQL migrations under `src/store/migrations/postgres`,
//! and every PostgreSQL query of the store.
//!
//! Several processes: idempotency rests on the `UNIQUE (vendor, idempotency_key)` constraint
//! (a second `INSERT … ON CONFLICT DO NOTHING` waits for the first transaction and then does
//! nothing), and sealing on a transaction-scoped advisory lock per recipient
//! (`pg_advisory_xact_lock`), so one recipient's items are sealed by one transaction at a time:
//! an item lands in exactly one batch and no batch is ever empty.
//!
//! Audit appends take a transaction-scoped advisory lock on one fixed key, read the chain's last
//! hash and insert the new events with `seq` = last + 1, …: the chain stays gap-free and linked
//! across processes. The lock is held until the transaction ends, so every other transaction that
//! appends waits meanwhile; callers append once, as late as possible before committing.
//!
//! Collections of any size (holder keys, cancellation scopes, kept ids) are bound as arrays and
//! read with `unnest`, one parameter each, never near the parameter limit.
//!
//! Retention: `records` and `holdings` are partitioned by month of the reporting period,
//! `items` by month (UTC) of `created_at` (migration 0004), each with a DEFAULT partition as a
//! safety net. [`Store::maintain_partitions`] creates the monthly partitions ahead of time and
//! moves rows that landed in DEFAULT into a new one (create a plain table, move the rows, `ATTACH
//! PARTITION`: never `CREATE TABLE … PARTITION OF`, which would lock the parent against every
//! reader). [`Store::purge`] drops whole partitions: records and holdings of months before the
//! cut-off; a month of items once it ended before the cut-off and every item in it is delivered
//! (first copying what each recipient holds into `holdings` and deleting the month's batches).
//! All this DDL runs outside delivery transactions, on one connection holding a session-level
//! advisory lock (one process at a time), with a short `lock_timeout`: a partition that cannot
//! be locked now is retried later rather than stalling deliveries.
//!
//! Item and record times (`created_at`, `updated_at`) are taken from this process's clock
//! ([`std::time::SystemTime::now`]) when [`DeliveryTx::put`] runs, the same clock the callers of
//! [`Store::seal`] use for `now_ms`.

use super::chain::{AUDIT_SELECT, AuditTuple, audit_row};
use super::codec::{
    self, BodyPacker, BodyWriter, Codec, StoredBody, TRAIN_AFTER_BODIES, TRAINING_BACK_OFF,
    TRAINING_EVERY, UnpackError, Unpacker, unpack_with,
};
use super::shared::{
    BATCH_COLUMNS, HolderRow, LAST_LINK, NO_NEWER_HOLDING, NO_NEWER_ITEM, batch_info, holder,
    holder_columns, insert_blocks, map_migrate_err, now_ms,
};
use super::{
    AckOutcome, AuditAnchor, AuditRow, BatchInfo, BatchItem, BatchState, CommitOutcome, Cutoffs,
    DeliveryTx, Erased, FEEDBACK_COLUMNS, FeedbackRow, FeedbackTuple, FieldSet, Finding, Holder,
    JoinedItems, Month, NewAuditEvent, NewDelivery, NewItem, NewRecord, PartitionReport,
    PurgeReport, PushGroup, PushGroupTuple, PushResult, PushState, SEAL_CHUNK, SealRule, Store,
    StoreError, StoreResult, StoredDelivery, Withdrawal, batches_to_seal, by_delivery, count_items,
    feedback_row, feedback_rows, field_sets_of, findings_json, head_batches, outcome_columns,
    periods_json, push_group_row, scrub_receipt, should_seal,
};
use super::{DeliveryFilter, DeliverySummary, PAUSED_LANE_OWNER, RecordItem, StoredRecord};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Postgres, QueryBuilder, Transaction};
use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// PostgreSQL's limit on bound parameters in one statement.
const MAX_PARAMS: usize = 65_535;
/// Rows per multi-row `INSERT`. Full chunks all have the same SQL text, so their prepared
/// statement is cached and reused; only a delivery's last, shorter chunk is prepared afresh.
const MAX_ROWS_PER_INSERT: usize = 1_000;
/// Columns bound per record row.
const RECORD_COLUMNS: usize = 8;
/// Columns bound per item row.
const ITEM_COLUMNS: usize = 9;
/// Columns bound per audit row.
const AUDIT_COLUMNS: usize = 7;
/// Connections in the pool (each delivery being written holds one).
const MAX_CONNECTIONS: u32 = 16;
/// How long a caller waits for a connection before the store reports itself unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Namespace of the advisory-lock keys of sealing (hashed together with the recipient id).
const SEAL_LOCK_PREFIX: &str = "weiche.seal:";

/// Advisory-lock key text of audit appends (one chain, one lock, across all processes).
const AUDIT_LOCK: &str = "weiche.audit";
/// Advisory-lock key text of partition maintenance and purging (one process at a time).
const RETENTION_LOCK: &str = "weiche.retention";
/// Months before the current one whose `records` and `holdings` partitions are kept ready
/// (migration 0004 creates the same).
const PERIOD_MONTHS_BEHIND: i64 = 12;
/// Months after the current one whose partitions are kept ready.
const MONTHS_AHEAD: i64 = 2;
/// How long partition DDL waits for a table lock before it gives up (and is retried later).
const DDL_LOCK_TIMEOUT: &str = "2s";
/// Attempts to drop one partition in one purge, and the pause between them.
const DROP_ATTEMPTS: u32 = 3;
/// See [`DROP_ATTEMPTS`].
const DROP_RETRY_PAUSE: Duration = Duration::from_secs(2);
/// Rows deleted per statement when purging receipts and audit events.
const PURGE_CHUNK: i64 = 5_000;

const _: () = assert!(MAX_ROWS_PER_INSERT * RECORD_COLUMNS <= MAX_PARAMS);
const _: () = assert!(MAX_ROWS_PER_INSERT * ITEM_COLUMNS <= MAX_PARAMS);
const _: () = assert!(MAX_ROWS_PER_INSERT * AUDIT_COLUMNS <= MAX_PARAMS);

/// The PostgreSQL store: one connection pool.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// The dictionaries of packed bodies (`store/codec.rs`).
    codec: Arc<Codec>,
    /// Trains the body dictionary in the background until bodies are packed.
    _trainer: Arc<Trainer>,
}

/// The task that calls [`codec::pack_bodies`] every [`TRAINING_EVERY`] until it succeeds;
/// stopped when the last clone of the store is dropped.
#[derive(Debug)]
struct Trainer(tokio::task::JoinHandle<()>);

impl Drop for Trainer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl codec::DictionaryTable for PgPool {
    async fn stored(&self) -> StoreResult<Vec<(i64, Vec<u8>)>> {
        sqlx::query_as("SELECT id, dict FROM body_dictionaries ORDER BY created_at, id")
            .fetch_all(self)
            .await
            .map_err(map_err)
    }

    async fn plain_items(&self, limit: i64) -> StoreResult<i64> {
        sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM items WHERE {PLAIN} LIMIT $1) AS p"
        ))
        .bind(limit)
        .fetch_one(self)
        .await
        .map_err(map_err)
    }

    async fn samples(&self, items: i64, records: i64, events: i64) -> StoreResult<Vec<String>> {
        let mut bodies: Vec<String> = Vec::new();
        for (sql, limit) in [
            (
                format!("SELECT body FROM items WHERE {PLAIN} ORDER BY seq DESC LIMIT $1"),
                items,
            ),
            (
                format!("SELECT body FROM records WHERE {PLAIN} LIMIT $1"),
                records,
            ),
            (
                format!("SELECT body FROM audit WHERE {PLAIN} ORDER BY seq DESC LIMIT $1"),
                events,
            ),
        ] {
            let rows: Vec<Vec<u8>> = sqlx::query_scalar(&sql)
                .bind(limit)
                .fetch_all(self)
                .await
                .map_err(map_err)?;
            bodies.extend(rows.into_iter().filter_map(|b| String::from_utf8(b).ok()));
        }
        Ok(bodies)
    }

    async fn insert_first(&self, id: i64, dict: &[u8]) -> StoreResult<()> {
        // Serialised with other processes' training by the table lock: one dictionary wins.
        let mut tx = self.begin().await.map_err(map_err)?;
        sqlx::query("LOCK TABLE body_dictionaries IN EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        sqlx::query(
            "INSERT INTO body_dictionaries (id, dict, created_at) SELECT $1, $2, $3 \
             WHERE NOT EXISTS (SELECT 1 FROM body_dictionaries)",
        )
        .bind(id)
        .bind(dict)
        .bind(now_ms())
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }
}

/// A body column's value is JSON text, not a zstd frame (JSON starts with `{`).
const PLAIN: &str = "substring(body FROM 1 FOR 1) = '\\x7b'::bytea";

impl PostgresStore {
    /// A delivery transaction on `tx`, packing bodies with the current dictionary.
    fn delivery_tx(&self, tx: Transaction<'static, Postgres>) -> PgDeliveryTx {
        PgDeliveryTx {
            tx,
            bodies: BodyWriter::of(&self.codec),
        }
    }

    /// Runs `read` over bodies read from this store; a dictionary another process trained is
    /// loaded from the database when a body names it.
    async fn unpacked<T>(
        &self,
        read: impl FnMut(&mut Unpacker<'_>) -> Result<T, UnpackError>,
    ) -> StoreResult<T> {
        unpack_with(&self.codec, read, || async {
            let stored = codec::DictionaryTable::stored(&self.pool).await?;
            self.codec.load(&stored, false)
        })
        .await
    }

    /// Connects to the database a `postgres://…` URL names and runs the PostgreSQL migrations
    /// (sqlx serialises concurrent migration runs of several processes with an advisory lock).
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|_| StoreError::UnsupportedUrl(redact_url(url)))?
            .application_name("weiche");
        // One direct connection first, so that an unreachable database is reported at once
        // rather than after the pool's acquire timeout.
        options
            .connect()
            .await
            .map_err(map_err)?
            .close()
            .await
            .map_err(map_err)?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(map_err)?;
        sqlx::migrate!("src/store/migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| map_migrate_err(e, map_err))?;
        let codec = Arc::new(Codec::default());
        codec.load(&codec::DictionaryTable::stored(&pool).await?, true)?;
        let trainer = {
            let (pool, codec) = (pool.clone(), codec.clone());
            tokio::spawn(async move {
                while codec.packer().is_none() {
                    let pause = match codec::pack_bodies(&pool, &codec, TRAIN_AFTER_BODIES).await {
                        Ok(_) => TRAINING_EVERY,
                        Err(e) => {
                            tracing::warn!("no body dictionary yet: {e}");
                            TRAINING_BACK_OFF
                        }
                    };
                    tokio::time::sleep(pause).await;
                }
            })
        };
        Ok(PostgresStore {
            pool,
            codec,
            _trainer: Arc::new(Trainer(trainer)),
        })
    }

    /// The pool reads use (the same as writes on PostgreSQL).
    fn reader(&self) -> &PgPool {
        &self.pool
    }

    /// The pool writes use.
    fn writer(&self) -> &PgPool {
        &self.pool
    }

    /// Starts a writing transaction (READ COMMITTED; statements that need a lock take it).
    async fn begin_write(&self) -> StoreResult<Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(map_err)
    }
}

/// The URL without its password, for error messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

// --- Where PostgreSQL's SQL differs: the names the shared SQL (sql.rs) asks for -------------

super::sql::shared_fns!(Postgres);
use shared_sql::{insert_records, open_head, seal_round};

/// The items with their bodies, as `i`: PostgreSQL keeps the body in the row.
const ITEMS_WITH_BODY: &str = "items AS i";

/// An item's body in [`ITEMS_WITH_BODY`].
const ITEM_BODY: &str = "i.body";

/// Inserts items with multi-row `INSERT`s; their `seq` follows the order of `items`.
async fn insert_items(
    tx: &mut Transaction<'static, Postgres>,
    items: &[NewItem],
    bodies: &BodyWriter,
    now: i64,
) -> StoreResult<()> {
    for (range, kept) in insert_blocks(items.len(), MAX_ROWS_PER_INSERT) {
        let chunk = &items[range];
        let mut qb = QueryBuilder::<Postgres>::new(
            "INSERT INTO items (recipient, kind, vendor, record_id, reporting_period, \
             record_ref, body, created_at, consent_id) ",
        );
        let mut params = bodies
            .params(chunk.iter().map(|i| (i.body.as_str(), i.packed.as_ref())))?
            .into_iter();
        qb.push_values(chunk, |mut row, i| {
            row.push_bind(i.recipient.as_str())
                .push_bind(i.kind.as_str())
                .push_bind(i.vendor.as_str())
                .push_bind(i.record_id.as_str())
                .push_bind(i.reporting_period.as_str())
                .push_bind(i.record_ref.as_str())
                .push_bind(params.next().expect("a body an item"))
                .push_bind(now)
                .push_bind(i.consent_id.as_deref());
        });
        qb.build()
            .persistent(kept)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
    }
    Ok(())
}

/// Replaces the bodies of the client's items already in batches by a bare erasure envelope;
/// returns their kinds. Built as text (`json_text` escapes like serde_json, compact), so both
/// backends store the same bytes.
async fn blank_sent_items(
    tx: &mut Transaction<'static, Postgres>,
    vendor: &str,
    client_id: &str,
) -> StoreResult<Vec<String>> {
    sqlx::query_scalar(&format!(
        "UPDATE items SET body = convert_to('{{\"type\":' || {kind} || ',\"record_ref\":' \
         || {record_ref} || ',\"erased\":true}}', 'UTF8') \
         WHERE batch_id IS NOT NULL AND vendor = $1 \
         AND (record_id, reporting_period) IN (SELECT record_id, reporting_period \
         FROM records WHERE vendor = $1 AND client_id = $2) RETURNING kind",
        kind = json_text("kind"),
        record_ref = json_text("record_ref"),
    ))
    .bind(vendor)
    .bind(client_id)
    .fetch_all(&mut **tx)
    .await
    .map_err(map_err)
}

/// Joins so that the left table is the outer loop: PostgreSQL's planner picks the order itself.
const LOOP_JOIN: &str = "JOIN";

/// Row locks of rows read in a writing transaction (READ COMMITTED): what is read stays as read
/// until the transaction ends.
const FOR_UPDATE: &str = " FOR UPDATE";

/// Shared row locks: the lane row stays share-locked until commit, so a claim (`FOR UPDATE SKIP
/// LOCKED`) skips it meanwhile and results are recorded only by the lane's holder.
const FOR_SHARE: &str = " FOR SHARE";

/// A text column as a JSON string (`to_json` escapes like serde_json and SQLite's `json_quote`;
/// `json_build_object` would add spaces).
fn json_text(column: &str) -> String {
    format!("to_json({column})::text")
}

/// One appender of the audit chain at a time across all processes, until this transaction
/// ends: the last link read next stays the last until these rows are committed (or rolled
/// back). The next statement (READ COMMITTED) sees what the previous holder committed.
async fn lock_audit(tx: &mut Transaction<'static, Postgres>) -> StoreResult<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(AUDIT_LOCK)
        .execute(&mut **tx)
        .await
        .map_err(map_err)?;
    Ok(())
}

/// Maps a sqlx error: connection-level failures are [`StoreError::Unavailable`], everything
/// else [`StoreError::Database`].
fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            // 08…: connection exception; 57P01–57P03: shutdown / cannot connect now;
            // 53300: too many connections.
            if code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300") {
                StoreError::Unavailable(e.to_string())
            } else {
                StoreError::Database(e)
            }
        }
        _ => StoreError::Database(e),
    }
}

/// The records to write, keeping only the last of several with the same key: PostgreSQL refuses
/// an `INSERT … ON CONFLICT DO UPDATE` that touches one row twice, and the last version wins
/// anyway.
fn last_versions(records: &[NewRecord]) -> Vec<&NewRecord> {
    let mut last: HashMap<(&str, &str, &str), usize> = HashMap::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        last.insert(
            (
                r.vendor.as_str(),
                r.record_id.as_str(),
                r.reporting_period.as_str(),
            ),
            i,
        );
    }
    if last.len() == records.len() {
        return records.iter().collect();
    }
    records
        .iter()
        .enumerate()
        .filter(|(i, r)| {
            last.get(&(
                r.vendor.as_str(),
                r.record_id.as_str(),
                r.reporting_period.as_str(),
            )) == Some(i)
        })
        .map(|(_, r)| r)
        .collect()
}

/// The receipt's subjects of a delivery whose row was just inserted, as two parallel arrays (two
/// parameters, however many).
async fn insert_receipt_subjects(
    tx: &mut Transaction<'static, Postgres>,
    d: &NewDelivery,
) -> StoreResult<()> {
    if d.subjects.is_empty() {
        return Ok(());
    }
    let records: Vec<i64> = d.subjects.iter().map(|s| s.record).collect();
    let subjects: Vec<&str> = d.subjects.iter().map(|s| s.subject.as_str()).collect();
    sqlx::query(
        "INSERT INTO receipt_subjects (delivery_id, record, subject)          SELECT $1, r, s FROM UNNEST($2::bigint[], $3::text[]) AS u (r, s)          ON CONFLICT (delivery_id, record) DO NOTHING",
    )
    .bind(&d.id)
    .bind(records)
    .bind(subjects)
    .execute(&mut **tx)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// A delivery being written on one pooled connection.
struct PgDeliveryTx {
    tx: Transaction<'static, Postgres>,
    /// Bodies are stored as text.
    bodies: BodyWriter,
}

super::sql::impl_delivery_tx!(PgDeliveryTx, Postgres, {
    async fn holders(
        &mut self,
        vendor: &str,
        keys: &[(String, String)],
    ) -> StoreResult<Vec<Holder>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // The keys travel as two parallel arrays (two parameters, however many keys); each key
        // probes the index items_latest (and the primary key of holdings). The latest of items
        // and holdings by seq decides.
        let (ids, periods): (Vec<&str>, Vec<&str>) = keys
            .iter()
            .map(|(id, period)| (id.as_str(), period.as_str()))
            .unzip();
        let rows: Vec<HolderRow> = sqlx::query_as(&format!(
            "WITH k AS (SELECT DISTINCT * FROM unnest($2::text[], $3::text[]) \
             AS k(record_id, period)) \
             SELECT {items} FROM items AS i WHERE i.seq IN (\
             SELECT MAX(j.seq) FROM k JOIN items AS j ON j.vendor = $1 \
             AND j.record_id = k.record_id AND j.reporting_period = k.period \
             GROUP BY j.record_id, j.reporting_period, j.recipient) \
             AND i.kind = 'record' AND {no_newer_holding} \
             UNION ALL \
             SELECT {held} FROM k JOIN holdings AS h ON h.vendor = $1 \
             AND h.record_id = k.record_id AND h.reporting_period = k.period \
             WHERE h.kind = 'record' AND {no_newer_item} \
             ORDER BY 3, 4, 1",
            items = holder_columns("i"),
            held = holder_columns("h"),
            no_newer_holding = NO_NEWER_HOLDING,
            no_newer_item = NO_NEWER_ITEM,
        ))
        .bind(vendor)
        .bind(ids)
        .bind(periods)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(map_err)?;
        Ok(rows.into_iter().map(holder).collect())
    }

    async fn cancel_missing(
        &mut self,
        delivery_id: &str,
        vendor: &str,
        scopes: &[(String, String)],
        keep: &[String],
    ) -> StoreResult<Vec<(String, String)>> {
        if scopes.is_empty() {
            return Ok(Vec::new());
        }
        // Scopes and kept ids travel as arrays (one parameter each, however many); NOT IN over
        // a subquery is hashed, unlike `<> ALL(array)`.
        let (programs, periods): (Vec<&str>, Vec<&str>) = scopes
            .iter()
            .map(|(program, period)| (program.as_str(), period.as_str()))
            .unzip();
        let mut cancelled: Vec<(String, String)> = sqlx::query_as(
            "UPDATE records SET state = 'cancelled', updated_at = $1 \
             WHERE vendor = $2 AND state = 'active' AND delivery_id <> $3 \
             AND (program, reporting_period) IN \
             (SELECT p, q FROM unnest($4::text[], $5::text[]) AS s(p, q)) \
             AND record_id NOT IN (SELECT unnest($6::text[])) \
             RETURNING record_id, reporting_period",
        )
        .bind(now_ms())
        .bind(vendor)
        .bind(delivery_id)
        .bind(programs)
        .bind(periods)
        .bind(keep)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(map_err)?;
        cancelled.sort_unstable();
        Ok(cancelled)
    }
});

super::sql::impl_store!(PostgresStore, Postgres, PgDeliveryTx, {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn begin_delivery(&self) -> StoreResult<Box<dyn DeliveryTx>> {
        Ok(Box::new(
            self.delivery_tx(self.pool.begin().await.map_err(map_err)?),
        ))
    }

    async fn try_begin_delivery(&self) -> StoreResult<Option<Box<dyn DeliveryTx>>> {
        let tx = self.pool.try_begin().await.map_err(map_err)?;
        Ok(tx.map(|tx| Box::new(self.delivery_tx(tx)) as Box<dyn DeliveryTx>))
    }

    fn appends_audit_early(&self) -> bool {
        false
    }

    async fn seal(&self, recipient: &str, rule: SealRule, now_ms: i64) -> StoreResult<u64> {
        if rule.max_items < 1 {
            return Ok(0);
        }
        // Cheap check without the lock first: most calls find nothing to seal.
        let (open, oldest) = open_head(&self.pool, recipient, rule.max_items).await?;
        if !should_seal(open, oldest, rule, now_ms) {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        // One sealer per recipient at a time, across all processes; released at commit or
        // rollback. Every later statement (READ COMMITTED) sees what earlier sealers committed.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("{SEAL_LOCK_PREFIX}{recipient}"))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        let mut sealed: i64 = 0;
        loop {
            // Up to SEAL_CHUNK batches are claimed by one statement: one UPDATE of many rows
            // costs far less than one statement per batch on the partitioned `items`.
            let n = seal_round(&mut *tx, recipient, rule, now_ms, sealed).await?;
            if n == 0 {
                break;
            }
            let ids: Vec<String> = (0..n).map(|_| uuid::Uuid::now_v7().to_string()).collect();
            // The set is chosen and claimed in one statement, so items committed meanwhile
            // (possibly with lower seq) can't slip in between choosing and counting. Joined on
            // the whole key (seq, created_at): each chosen item is found by the primary key of
            // its partition (`seq IN (…)` alone let the planner scan every partition).
            // The claimed rows come back summed up per batch and period, not one per item.
            let claimed: Vec<(i64, String, i64, i64)> = sqlx::query_as(
                "WITH chosen AS (SELECT seq, created_at, \
                 (row_number() OVER (ORDER BY seq) - 1) / $3 AS g FROM (\
                 SELECT seq, created_at FROM items WHERE recipient = $2 AND batch_id IS NULL \
                 ORDER BY seq LIMIT $4) AS o), \
                 claimed AS (UPDATE items AS i SET batch_id = ($1::text[])[chosen.g + 1] \
                 FROM chosen WHERE i.seq = chosen.seq AND i.created_at = chosen.created_at \
                 AND i.batch_id IS NULL RETURNING chosen.g, i.reporting_period, i.seq) \
                 SELECT g, reporting_period, COUNT(*), MAX(seq) FROM claimed \
                 GROUP BY g, reporting_period",
            )
            .bind(&ids)
            .bind(recipient)
            .bind(rule.max_items)
            .bind(n.saturating_mul(rule.max_items))
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
            let batches = head_batches(claimed);
            if batches.is_empty() {
                break;
            }
            // Per batch, in seal order: id, item count, periods.
            let (mut batch_ids, mut counts, mut periods) = (Vec::new(), Vec::new(), Vec::new());
            for b in batches {
                let id = usize::try_from(b.group)
                    .ok()
                    .and_then(|g| ids.get(g))
                    .ok_or_else(|| StoreError::Corrupt(format!("sealing: group {}", b.group)))?;
                batch_ids.push(id.as_str());
                counts.push(b.count);
                periods.push(periods_json(b.periods));
            }
            sqlx::query(
                "INSERT INTO batches (batch_id, recipient, seal_no, created_at, item_count, \
                 periods, state) SELECT b.id, $2, \
                 (SELECT COALESCE(MAX(seal_no), 0) FROM batches WHERE recipient = $2) + b.n, \
                 $3, b.count, b.periods, 'ready' \
                 FROM UNNEST($1::text[], $4::bigint[], $5::text[]) WITH ORDINALITY \
                 AS b(id, count, periods, n)",
            )
            .bind(&batch_ids)
            .bind(recipient)
            .bind(now_ms)
            .bind(&counts)
            .bind(&periods)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
            if rule.push {
                sqlx::query(
                    "INSERT INTO push_groups (batch_id, recipient, seal_no, item_count, state, \
                     next_at, updated_at) SELECT batch_id, recipient, seal_no, item_count, \
                     'pending', $2, $2 FROM batches WHERE batch_id = ANY($1::text[])",
                )
                .bind(&batch_ids)
                .bind(now_ms)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
            }
            sealed += i64::try_from(batch_ids.len()).unwrap_or(i64::MAX);
        }
        tx.commit().await.map_err(map_err)?;
        Ok(u64::try_from(sealed).unwrap_or(0))
    }

    async fn batch_items_joined(
        &self,
        batch_id: &str,
        after_seq: i64,
        limit: i64,
        separator: &str,
    ) -> StoreResult<Option<JoinedItems>> {
        // Joined here, not by string_agg: PostgreSQL sends rows faster than it builds one
        // large text of them.
        let items = self.batch_items(batch_id, after_seq, limit).await?;
        let Some(last) = items.last() else {
            return Ok(None);
        };
        let last_seq = last.seq;
        let size = items.iter().map(|i| i.body.len() + separator.len()).sum();
        let mut text = String::with_capacity(size);
        for (n, item) in items.iter().enumerate() {
            if n > 0 {
                text.push_str(separator);
            }
            text.push_str(&item.body);
        }
        Ok(Some(JoinedItems {
            count: i64::try_from(items.len()).unwrap_or(i64::MAX),
            last_seq,
            text,
        }))
    }

    async fn ack_batch(
        &self,
        recipient: &str,
        batch_id: &str,
        findings: &[Finding],
        now_ms: i64,
    ) -> StoreResult<AckOutcome> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        // The row lock serialises concurrent acks; the second finds the batch acknowledged and
        // changes nothing.
        let state: Option<String> = sqlx::query_scalar(
            "SELECT state FROM batches WHERE batch_id = $1 AND recipient = $2 FOR UPDATE",
        )
        .bind(batch_id)
        .bind(recipient)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
        let Some(state) = state else {
            return Ok(AckOutcome::NotFound);
        };
        if state == BatchState::Ready.as_str() {
            let refs: Vec<String> = findings.iter().map(|f| f.record_ref.clone()).collect();
            let mut known: Vec<(String, String, String, String)> = sqlx::query_as(
                "SELECT DISTINCT record_ref, vendor, record_id, reporting_period FROM items \
                 WHERE batch_id = $1 AND record_ref = ANY($2)",
            )
            .bind(batch_id)
            .bind(&refs)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
            known.sort_unstable();
            let rows = match feedback_rows(findings, &known) {
                Ok(rows) => rows,
                Err(i) => return Ok(AckOutcome::UnknownRef(i)),
            };
            if !rows.is_empty() {
                let column = |k: usize| -> Vec<&str> { rows.iter().map(|r| r[k]).collect() };
                sqlx::query(
                    "INSERT INTO feedback (vendor, record_id, reporting_period, recipient, \
                     batch_id, code, message, received_at) \
                     SELECT v, r, p, $6, $7, c, m, $8 \
                     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) \
                     AS f(v, r, p, c, m)",
                )
                .bind(column(0))
                .bind(column(1))
                .bind(column(2))
                .bind(column(3))
                .bind(column(4))
                .bind(recipient)
                .bind(batch_id)
                .bind(now_ms)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
            }
            sqlx::query(
                "UPDATE batches SET state = 'acknowledged', acked_at = $1, findings = $2 \
                 WHERE batch_id = $3",
            )
            .bind(now_ms)
            .bind(findings_json(findings))
            .bind(batch_id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        match self.batch(recipient, batch_id).await? {
            Some(info) => Ok(AckOutcome::Acknowledged(info)),
            None => Ok(AckOutcome::NotFound),
        }
    }

    async fn open_items(&self, recipient: &str) -> StoreResult<i64> {
        open_count(&self.pool, recipient).await
    }

    async fn field_sets(&self, sha256s: &[String]) -> StoreResult<Vec<FieldSet>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT sha256, fields FROM audit_field_sets WHERE sha256 = ANY($1::text[])",
        )
        .bind(sha256s)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(rows
            .into_iter()
            .map(|(sha256, fields)| FieldSet { sha256, fields })
            .collect())
    }

    /// A no-op: deleted and updated rows become dead tuples that (auto)VACUUM reclaims for
    /// reuse; until then their bytes may remain in the table files and the WAL, which the
    /// server's storage must protect (e.g. encryption at rest). `VACUUM FULL` would rewrite the
    /// tables but takes exclusive locks, so it is left to the operator.
    async fn compact(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn pack_bodies(&self, min_bodies: i64) -> StoreResult<bool> {
        codec::pack_bodies(&self.pool, &self.codec, min_bodies).await
    }

    fn body_packer(&self) -> Option<Arc<BodyPacker>> {
        self.codec.packer()
    }

    async fn claim_lane(
        &self,
        recipient: &str,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        sqlx::query("INSERT INTO push_lanes (recipient) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(recipient)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        // A lane another process is claiming right now is skipped, not waited for.
        let free: Option<String> = sqlx::query_scalar(
            "SELECT recipient FROM push_lanes WHERE recipient = $1 \
             AND (owner IS NULL OR owner = $2 OR lease_until < $3) FOR UPDATE SKIP LOCKED",
        )
        .bind(recipient)
        .bind(owner)
        .bind(now_ms)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
        if free.is_some() {
            sqlx::query("UPDATE push_lanes SET owner = $2, lease_until = $3 WHERE recipient = $1")
                .bind(recipient)
                .bind(owner)
                .bind(now_ms.saturating_add(lease_ms))
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(free.is_some())
    }

    async fn push_backlog(&self, recipient: &str) -> StoreResult<i64> {
        let pending: i64 = sqlx::query_scalar(
            "SELECT COALESCE((SELECT SUM(item_count) FROM push_groups \
             WHERE recipient = $1 AND state = 'pending'), 0)::BIGINT",
        )
        .bind(recipient)
        .fetch_one(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(open_count(&self.pool, recipient).await? + pending)
    }

    async fn maintain_partitions(
        &self,
        now_ms: i64,
        cutoffs: &Cutoffs,
    ) -> StoreResult<PartitionReport> {
        let Some(mut conn) = retention_connection(&self.pool).await? else {
            return Ok(PartitionReport {
                skipped: true,
                ..PartitionReport::default()
            });
        };
        let result = maintain(&mut conn, now_ms, cutoffs).await;
        release_retention(conn).await;
        result
    }

    async fn purge(&self, cutoffs: &Cutoffs) -> StoreResult<PurgeReport> {
        let Some(mut conn) = retention_connection(&self.pool).await? else {
            return Ok(PurgeReport {
                dry_run: cutoffs.dry_run,
                skipped: true,
                ..PurgeReport::default()
            });
        };
        let result = purge(self, &mut conn, cutoffs).await;
        release_retention(conn).await;
        result
    }
});

// ---------------------------------------------------------------------------------------------
// Retention: monthly partitions and purging.

/// A table partitioned by month (migration 0004).
#[derive(Debug, Clone, Copy)]
struct Partitioned {
    /// The partitioned table.
    table: &'static str,
    /// The partition key column.
    column: &'static str,
    /// Keyed by a unix-millisecond time (else by a `YYYY-MM` reporting period).
    by_time: bool,
    /// Months before the current one kept ready.
    behind: i64,
}

/// `records`, by reporting period.
const RECORDS: Partitioned = Partitioned {
    table: "records",
    column: "reporting_period",
    by_time: false,
    behind: PERIOD_MONTHS_BEHIND,
};
/// `holdings`, by reporting period.
const HOLDINGS: Partitioned = Partitioned {
    table: "holdings",
    column: "reporting_period",
    by_time: false,
    behind: PERIOD_MONTHS_BEHIND,
};
/// `items`, by month (UTC) of `created_at`.
const ITEMS: Partitioned = Partitioned {
    table: "items",
    column: "created_at",
    by_time: true,
    behind: 0,
};

impl Partitioned {
    /// The partition of a month: `<table>_pYYYY_MM`.
    fn name(self, m: Month) -> String {
        format!("{}_p{:04}_{:02}", self.table, m.year(), m.month())
    }

    /// The DEFAULT partition.
    fn default_name(self) -> String {
        format!("{}_default", self.table)
    }

    /// The month of a partition named by [`Partitioned::name`].
    fn month_of(self, name: &str) -> Option<Month> {
        let rest = name.strip_prefix(self.table)?.strip_prefix("_p")?;
        let (year, month) = rest.split_once('_')?;
        if year.len() != 4 || month.len() != 2 {
            return None;
        }
        Month::new(year.parse().ok()?, month.parse().ok()?)
    }

    /// The SQL literal of a month's first key value.
    fn bound(self, m: Month) -> String {
        if self.by_time {
            m.start_ms().to_string()
        } else {
            format!("'{}'", m.period())
        }
    }

    /// Whether a month gets a partition (years 1000–9998, so that the bounds stay
    /// four-digit periods and times in range).
    fn partitionable(m: Month) -> bool {
        (1000..=9998).contains(&m.year())
    }

    /// The monthly partitions that exist, by month, oldest first.
    async fn partitions(self, conn: &mut PgConnection) -> StoreResult<Vec<(Month, String)>> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits AS i JOIN pg_class AS c \
             ON c.oid = i.inhrelid WHERE i.inhparent = $1::text::regclass",
        )
        .bind(self.table)
        .fetch_all(&mut *conn)
        .await
        .map_err(map_err)?;
        let mut months: Vec<(Month, String)> = names
            .into_iter()
            .filter_map(|n| self.month_of(&n).map(|m| (m, n)))
            .collect();
        months.sort();
        Ok(months)
    }

    /// The months of the rows in the DEFAULT partition, and how many rows fit no month.
    async fn default_months(self, conn: &mut PgConnection) -> StoreResult<(BTreeSet<Month>, i64)> {
        let month = if self.by_time {
            "to_char(to_timestamp(created_at / 1000.0) AT TIME ZONE 'UTC', 'YYYY-MM')"
        } else {
            "substr(reporting_period, 1, 7)"
        };
        let rows: Vec<(Option<String>, i64)> = sqlx::query_as(&format!(
            "SELECT {month}, COUNT(*) FROM {} GROUP BY 1",
            self.default_name()
        ))
        .fetch_all(&mut *conn)
        .await
        .map_err(map_err)?;
        let mut months = BTreeSet::new();
        let mut stray = 0;
        for (m, n) in rows {
            match m.as_deref().and_then(Month::parse_period) {
                Some(m) if Self::partitionable(m) => {
                    months.insert(m);
                }
                _ => stray += n,
            }
        }
        Ok((months, stray))
    }
}

/// A connection from the pool holding the retention lock (session-level advisory lock), or
/// `None` when another process holds it.
async fn retention_connection(pool: &PgPool) -> StoreResult<Option<PoolConnection<Postgres>>> {
    let mut conn = pool.acquire().await.map_err(map_err)?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(RETENTION_LOCK)
        .fetch_one(&mut *conn)
        .await
        .map_err(map_err)?;
    Ok(locked.then_some(conn))
}

/// Releases the retention lock; a connection where that fails is closed (which releases it).
async fn release_retention(mut conn: PoolConnection<Postgres>) {
    let released = sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
        .bind(RETENTION_LOCK)
        .execute(&mut *conn)
        .await;
    if released.is_err() {
        conn.close_on_drop();
    }
}

/// Whether a database error means "try again later": a lock not granted within
/// `lock_timeout` (55P03) or a deadlock this statement lost (40P01).
fn is_lock_conflict(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("55P03" | "40P01")),
        _ => false,
    }
}

/// Runs one statement.
async fn execute(conn: &mut PgConnection, sql: &str) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(sql).execute(conn).await?.rows_affected())
}

/// A `SELECT COUNT(*) …` (or other single bigint) without parameters.
async fn count(conn: &mut PgConnection, sql: &str) -> StoreResult<u64> {
    let n: i64 = sqlx::query_scalar(sql)
        .fetch_one(conn)
        .await
        .map_err(map_err)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// [`Store::maintain_partitions`] under the retention lock.
async fn maintain(
    conn: &mut PgConnection,
    now_ms: i64,
    cutoffs: &Cutoffs,
) -> StoreResult<PartitionReport> {
    let mut report = PartitionReport::default();
    let now = Month::of_ms(now_ms);
    for t in [RECORDS, HOLDINGS, ITEMS] {
        let existing: BTreeSet<Month> = t
            .partitions(conn)
            .await?
            .into_iter()
            .map(|(m, _)| m)
            .collect();
        // Records (and holdings) before the cut-off get no partition: they are purged anyway,
        // from DEFAULT if some arrive there.
        let records_before = if t.by_time {
            None
        } else {
            cutoffs.records_before
        };
        let mut wanted: BTreeSet<Month> = (-t.behind..=MONTHS_AHEAD)
            .map(|k| now.plus(k))
            .filter(|m| records_before.is_none_or(|before| *m >= before))
            .collect();
        let (in_default, stray) = t.default_months(conn).await?;
        wanted.extend(
            in_default
                .into_iter()
                .filter(|m| records_before.is_none_or(|before| *m >= before)),
        );
        if stray > 0 {
            report.notes.push(format!(
                "{}: {stray} row(s) fit no monthly partition and stay there",
                t.default_name()
            ));
        }
        for m in wanted {
            if existing.contains(&m) || !Partitioned::partitionable(m) {
                continue;
            }
            let name = t.name(m);
            match create_partition(conn, t, m).await? {
                Some(moved) => {
                    report.moved_rows += moved;
                    report.created.push(name);
                }
                None => report.notes.push(format!(
                    "{name}: not created yet (a lock was not granted in time); retried later"
                )),
            }
        }
    }
    Ok(report)
}

/// Creates the partition of month `m` of `t`, moving the rows of that month out of DEFAULT, in
/// one transaction: lock DEFAULT, create a plain table like the parent, move the rows, attach
/// it. `Ok(None)` when a lock was not granted in time (nothing changed).
async fn create_partition(
    conn: &mut PgConnection,
    t: Partitioned,
    m: Month,
) -> StoreResult<Option<u64>> {
    let name = t.name(m);
    let default = t.default_name();
    let (lo, hi) = (t.bound(m), t.bound(m.next()));
    let (table, column) = (t.table, t.column);
    let mut tx = conn.begin().await.map_err(map_err)?;
    let result = async {
        execute(
            &mut tx,
            &format!("SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}'"),
        )
        .await?;
        // ATTACH takes this lock anyway; taking it first means no row can arrive in DEFAULT
        // for the new month between the move and the attach.
        execute(
            &mut tx,
            &format!("LOCK TABLE {default} IN ACCESS EXCLUSIVE MODE"),
        )
        .await?;
        execute(
            &mut tx,
            &format!("CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"),
        )
        .await?;
        let moved = execute(
            &mut tx,
            &format!(
                "WITH moved AS (DELETE FROM {default} WHERE {column} >= {lo} AND {column} < {hi} \
                 RETURNING *) INSERT INTO {name} SELECT * FROM moved"
            ),
        )
        .await?;
        // Builds the parent's indexes on the new table and checks its rows against the bounds.
        execute(
            &mut tx,
            &format!(
                "ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi})"
            ),
        )
        .await?;
        Ok::<_, sqlx::Error>(moved)
    }
    .await;
    match result {
        Ok(moved) => {
            tx.commit().await.map_err(map_err)?;
            Ok(Some(moved))
        }
        Err(e) => {
            tx.rollback().await.map_err(map_err)?;
            if is_lock_conflict(&e) {
                Ok(None)
            } else {
                Err(map_err(e))
            }
        }
    }
}

/// What became of a partition to drop.
enum Dropped {
    /// It is gone.
    Yes,
    /// The parent could not be locked in time, in any attempt.
    Locked,
    /// (Items) it holds this many items not delivered (found when re-checking under the lock).
    Undelivered(u64),
}

/// Drops one partition of `t`: locks the parent (waiting at most [`DDL_LOCK_TIMEOUT`], up to
/// [`DROP_ATTEMPTS`] times), re-checks that an items partition holds only delivered items, drops.
async fn drop_partition(
    conn: &mut PgConnection,
    t: Partitioned,
    name: &str,
) -> StoreResult<Dropped> {
    for attempt in 1..=DROP_ATTEMPTS {
        let mut tx = conn.begin().await.map_err(map_err)?;
        let result = async {
            execute(
                &mut tx,
                &format!("SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}'"),
            )
            .await?;
            execute(
                &mut tx,
                &format!("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", t.table),
            )
            .await?;
            if t.by_time {
                let undelivered: i64 = sqlx::query_scalar(&undelivered_sql(name))
                    .fetch_one(&mut *tx)
                    .await?;
                if undelivered > 0 {
                    return Ok(Dropped::Undelivered(
                        u64::try_from(undelivered).unwrap_or(0),
                    ));
                }
            }
            execute(&mut tx, &format!("DROP TABLE {name}")).await?;
            Ok::<_, sqlx::Error>(Dropped::Yes)
        }
        .await;
        match result {
            Ok(Dropped::Yes) => {
                tx.commit().await.map_err(map_err)?;
                return Ok(Dropped::Yes);
            }
            Ok(other) => {
                tx.rollback().await.map_err(map_err)?;
                return Ok(other);
            }
            Err(e) if is_lock_conflict(&e) => {
                tx.rollback().await.map_err(map_err)?;
                if attempt < DROP_ATTEMPTS {
                    tokio::time::sleep(DROP_RETRY_PAUSE).await;
                }
            }
            Err(e) => {
                tx.rollback().await.map_err(map_err)?;
                return Err(map_err(e));
            }
        }
    }
    Ok(Dropped::Locked)
}

/// Counts the open items of a recipient from the counter of migration 0007, folding the deltas
/// the triggers on `items` wrote since the last count into it; reads no items (issue 15). One
/// statement: the deltas it deletes are exactly the ones it adds, so concurrent counts (several
/// instances) and deliveries writing deltas meanwhile are both safe.
pub const OPEN_COUNT_SQL: &str = "WITH folded AS (DELETE FROM open_item_deltas \
     WHERE recipient = $1 RETURNING delta) \
     INSERT INTO open_item_counts AS c (recipient, n) \
     SELECT $1, COALESCE(SUM(delta), 0) FROM folded \
     ON CONFLICT (recipient) DO UPDATE SET n = c.n + excluded.n \
     RETURNING n";

async fn open_count<'c, E>(executor: E, recipient: &str) -> StoreResult<i64>
where
    E: sqlx::Executor<'c, Database = Postgres>,
{
    sqlx::query_scalar(OPEN_COUNT_SQL)
        .bind(recipient)
        .fetch_one(executor)
        .await
        .map_err(map_err)
}

/// The number of items of an items partition that are not delivered: open, or in a batch
/// waiting for its acknowledgement.
fn undelivered_sql(partition: &str) -> String {
    format!(
        "SELECT (SELECT COUNT(*) FROM {partition} WHERE batch_id IS NULL) \
         + (SELECT COUNT(*) FROM {partition} WHERE batch_id IN \
         (SELECT batch_id FROM batches WHERE state = 'ready'))"
    )
}

/// [`Store::purge`] under the retention lock.
async fn purge(
    store: &PostgresStore,
    conn: &mut PgConnection,
    cutoffs: &Cutoffs,
) -> StoreResult<PurgeReport> {
    let mut r = PurgeReport {
        dry_run: cutoffs.dry_run,
        ..PurgeReport::default()
    };
    if let Some(before) = cutoffs.records_before {
        r.records = purge_periods(conn, RECORDS, before, &mut r).await?;
        r.holdings = purge_periods(conn, HOLDINGS, before, &mut r).await?;
    }
    if let Some(before) = cutoffs.outputs_before_ms {
        purge_items(conn, before, cutoffs.records_before, &mut r).await?;
    }
    if let Some(before) = cutoffs.audit_before_ms {
        purge_audit(store, conn, before, &mut r).await?;
    }
    if let Some(before) = cutoffs.receipts_before_ms {
        r.receipts = if r.dry_run {
            let n: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM deliveries WHERE received_at < $1")
                    .bind(before)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(map_err)?;
            u64::try_from(n).unwrap_or(0)
        } else {
            let mut total = 0;
            loop {
                let n = sqlx::query(
                    "DELETE FROM deliveries WHERE id IN (SELECT id FROM deliveries \
                     WHERE received_at < $1 LIMIT $2)",
                )
                .bind(before)
                .bind(PURGE_CHUNK)
                .execute(&mut *conn)
                .await
                .map_err(map_err)?
                .rows_affected();
                total += n;
                if n < PURGE_CHUNK as u64 {
                    break total;
                }
            }
        };
    }
    Ok(r)
}

/// Drops the partitions of `t` (records or holdings) of months before `before`, and deletes the
/// rows of such periods from its DEFAULT partition (which should hold few). Returns the rows.
async fn purge_periods(
    conn: &mut PgConnection,
    t: Partitioned,
    before: Month,
    r: &mut PurgeReport,
) -> StoreResult<u64> {
    let mut purged = 0;
    for (m, name) in t.partitions(conn).await? {
        if m >= before {
            break;
        }
        let rows = count(conn, &format!("SELECT COUNT(*) FROM {name}")).await?;
        if r.dry_run {
            purged += rows;
            r.partitions_dropped.push(name);
            continue;
        }
        match drop_partition(conn, t, &name).await? {
            Dropped::Yes => {
                purged += rows;
                r.partitions_dropped.push(name);
            }
            Dropped::Locked | Dropped::Undelivered(_) => {
                if t.table == RECORDS.table {
                    r.overdue_records += rows;
                }
                r.notes.push(format!(
                    "{name}: not dropped yet (a lock was not granted in time); retried at the \
                     next purge"
                ));
            }
        }
    }
    let default = t.default_name();
    let filter = format!("{} < '{}'", t.column, before.period());
    purged += if r.dry_run {
        count(
            conn,
            &format!("SELECT COUNT(*) FROM {default} WHERE {filter}"),
        )
        .await?
    } else {
        execute(conn, &format!("DELETE FROM {default} WHERE {filter}"))
            .await
            .map_err(map_err)?
    };
    Ok(purged)
}

/// Drops the items partitions of months that ended before `before_ms` and whose items are all
/// delivered: first what each recipient holds of them goes to holdings and their batches are
/// deleted.
async fn purge_items(
    conn: &mut PgConnection,
    before_ms: i64,
    records_before: Option<Month>,
    r: &mut PurgeReport,
) -> StoreResult<()> {
    for (m, name) in ITEMS.partitions(conn).await? {
        if m.next().start_ms() > before_ms {
            break;
        }
        let rows = count(conn, &format!("SELECT COUNT(*) FROM {name}")).await?;
        let undelivered = count(conn, &undelivered_sql(&name)).await?;
        if undelivered > 0 {
            r.overdue_items += rows;
            r.notes.push(format!(
                "{name} kept: {undelivered} of its {rows} item(s) not delivered yet (open, or in \
                 a batch not acknowledged)"
            ));
            continue;
        }
        let batches_of = format!(
            "batches WHERE batch_id IN (SELECT batch_id FROM {name} WHERE batch_id IS NOT NULL)"
        );
        if r.dry_run {
            r.items += rows;
            r.batches += count(conn, &format!("SELECT COUNT(*) FROM {batches_of}")).await?;
            r.partitions_dropped.push(name);
            continue;
        }
        // What each recipient holds — the latest item per record and recipient, unless a newer
        // item stays — and the month's batches (a batch goes as a whole with its first purged
        // item; its items in later months stay until their own month goes).
        let mut tx = conn.begin().await.map_err(map_err)?;
        sqlx::query(&format!(
            "INSERT INTO holdings (vendor, record_id, reporting_period, recipient, kind, \
             record_ref, consent_id, seq) \
             SELECT i.vendor, i.record_id, i.reporting_period, i.recipient, i.kind, \
             i.record_ref, i.consent_id, i.seq FROM {name} AS i \
             WHERE ($1::text IS NULL OR i.reporting_period >= $1) \
             AND NOT EXISTS (SELECT 1 FROM items AS n WHERE n.vendor = i.vendor \
             AND n.record_id = i.record_id AND n.reporting_period = i.reporting_period \
             AND n.recipient = i.recipient AND n.seq > i.seq) \
             ON CONFLICT (vendor, record_id, reporting_period, recipient) DO UPDATE SET \
             kind = excluded.kind, record_ref = excluded.record_ref, \
             consent_id = excluded.consent_id, seq = excluded.seq \
             WHERE excluded.seq > holdings.seq"
        ))
        .bind(records_before.map(Month::period))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        let batches = execute(&mut tx, &format!("DELETE FROM {batches_of}"))
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        r.batches += batches;
        match drop_partition(conn, ITEMS, &name).await? {
            Dropped::Yes => {
                r.items += rows;
                r.partitions_dropped.push(name);
            }
            Dropped::Locked => {
                r.overdue_items += rows;
                r.notes.push(format!(
                    "{name}: not dropped yet (a lock was not granted in time); retried at the \
                     next purge"
                ));
            }
            Dropped::Undelivered(n) => {
                r.overdue_items += rows;
                r.notes.push(format!(
                    "{name} kept: {n} item(s) arrived undelivered while it was being purged"
                ));
            }
        }
    }
    let stray = count(
        conn,
        &format!(
            "SELECT COUNT(*) FROM {} WHERE created_at < {before_ms}",
            ITEMS.default_name()
        ),
    )
    .await?;
    if stray > 0 {
        r.overdue_items += stray;
        r.notes.push(format!(
            "{}: {stray} item(s) past their retention outside any monthly partition; purged once \
             partition maintenance has moved them",
            ITEMS.default_name()
        ));
    }
    Ok(())
}

/// Audit events written before `before_ms`, from the start of the chain, as far as it verifies;
/// the last one purged becomes the anchor.
async fn purge_audit(
    store: &PostgresStore,
    conn: &mut PgConnection,
    before_ms: i64,
    r: &mut PurgeReport,
) -> StoreResult<()> {
    let mut anchor: Option<AuditAnchor> =
        sqlx::query_as::<_, (i64, String)>("SELECT seq, hash FROM audit_anchor WHERE id = 1")
            .fetch_optional(&mut *conn)
            .await
            .map_err(map_err)?
            .map(|(seq, hash)| AuditAnchor { seq, hash });
    let oldest: Option<i64> = sqlx::query_scalar("SELECT at_ms FROM audit ORDER BY seq LIMIT 1")
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_err)?;
    if oldest.is_none_or(|at| at >= before_ms) {
        return Ok(());
    }
    loop {
        let after = anchor.as_ref().map_or(0, |a| a.seq);
        let rows: Vec<AuditTuple> = sqlx::query_as(&format!(
            "SELECT {AUDIT_SELECT} FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2"
        ))
        .bind(after)
        .bind(PURGE_CHUNK)
        .fetch_all(&mut *conn)
        .await
        .map_err(map_err)?;
        let rows: Vec<AuditRow> = store
            .unpacked(|u| rows.iter().map(|row| audit_row(u, row)).collect())
            .await?;
        let prefix = super::chain::purge_prefix(anchor.as_ref(), &rows, before_ms);
        if let Some(b) = &prefix.broken {
            r.notes.push(format!(
                "audit chain broken at event {}: not purged past it ({})",
                b.seq, b.reason
            ));
        }
        if let Some(through) = &prefix.through
            && !r.dry_run
        {
            // Appenders only add after the newest event, which stays or is the anchor (see
            // LAST_LINK); this process is the only purger (retention lock).
            let mut tx = conn.begin().await.map_err(map_err)?;
            sqlx::query("DELETE FROM audit WHERE seq <= $1")
                .bind(through.seq)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
            sqlx::query("DELETE FROM audit_subject_runs WHERE last_seq <= $1")
                .bind(through.seq)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
            sqlx::query(
                "INSERT INTO audit_anchor (id, seq, hash, purged_at) VALUES (1, $1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, \
                 purged_at = excluded.purged_at",
            )
            .bind(through.seq)
            .bind(&through.hash)
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
            tx.commit().await.map_err(map_err)?;
        }
        r.audit_events += prefix.events;
        if prefix.through.is_some() {
            anchor = prefix.through;
            r.audit_anchor.clone_from(&anchor);
        }
        if prefix.stop || (rows.len() as i64) < PURGE_CHUNK {
            return Ok(());
        }
    }
}

/// Columns of a push group row, in [`PushGroupTuple`]'s order.
const PUSH_COLUMNS: &str = "batch_id, recipient, seal_no, item_count, state, attempts::BIGINT, \
                            next_at, last_error, updated_at";

/// The kind of the latest item or holding (by seq) of record `r` for the recipient `$2`; NULL
/// when there is neither.
const LATEST_KIND: &str = "COALESCE((SELECT i.kind FROM items AS i \
     WHERE i.vendor = r.vendor AND i.record_id = r.record_id \
     AND i.reporting_period = r.reporting_period AND i.recipient = $2 \
     AND i.seq > COALESCE((SELECT h.seq FROM holdings AS h WHERE h.vendor = r.vendor \
     AND h.record_id = r.record_id AND h.reporting_period = r.reporting_period \
     AND h.recipient = $2), -1) ORDER BY i.seq DESC LIMIT 1), \
     (SELECT h.kind FROM holdings AS h WHERE h.vendor = r.vendor AND h.record_id = r.record_id \
     AND h.reporting_period = r.reporting_period AND h.recipient = $2))";
