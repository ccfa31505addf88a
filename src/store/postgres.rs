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
//! Item and record times (`created_at`, `updated_at`) are taken from this process's clock
//! ([`std::time::SystemTime::now`]) when [`DeliveryTx::put`] runs, the same clock the callers of
//! [`Store::seal`] use for `now_ms`.

use super::{
    BatchInfo, BatchItem, BatchState, CommitOutcome, DeliveryTx, NewDelivery, NewItem, NewRecord,
    SealRule, Store, StoreError, StoreResult, StoredDelivery,
};
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Postgres, QueryBuilder, Transaction};
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

/// PostgreSQL's limit on bound parameters in one statement.
const MAX_PARAMS: usize = 65_535;
/// Rows per multi-row `INSERT`. Full chunks all have the same SQL text, so their prepared
/// statement is cached and reused; only a delivery's last, shorter chunk is prepared afresh.
const MAX_ROWS_PER_INSERT: usize = 1_000;
/// Columns bound per record row.
const RECORD_COLUMNS: usize = 7;
/// Columns bound per item row.
const ITEM_COLUMNS: usize = 8;
/// Connections in the pool (each delivery being written holds one).
const MAX_CONNECTIONS: u32 = 16;
/// How long a caller waits for a connection before the store reports itself unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Namespace of the advisory-lock keys of sealing (hashed together with the recipient id).
const SEAL_LOCK_PREFIX: &str = "weiche.seal:";

const _: () = assert!(MAX_ROWS_PER_INSERT * RECORD_COLUMNS <= MAX_PARAMS);
const _: () = assert!(MAX_ROWS_PER_INSERT * ITEM_COLUMNS <= MAX_PARAMS);

/// The PostgreSQL store: one connection pool.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
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
            .map_err(map_migrate_err)?;
        Ok(PostgresStore { pool })
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

/// Maps a migration error, reporting a lost connection as [`StoreError::Unavailable`].
fn map_migrate_err(e: sqlx::migrate::MigrateError) -> StoreError {
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
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Decodes a batch row.
fn batch_info(
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
const BATCH_COLUMNS: &str = "batch_id, recipient, created_at, item_count, periods, state";

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

/// Inserts or replaces records with multi-row `INSERT … ON CONFLICT DO UPDATE` statements.
async fn insert_records(
    tx: &mut Transaction<'static, Postgres>,
    records: &[NewRecord],
    now: i64,
) -> StoreResult<()> {
    let records = last_versions(records);
    for chunk in records.chunks(MAX_ROWS_PER_INSERT) {
        let mut qb = QueryBuilder::<Postgres>::new(
            "INSERT INTO records \
             (vendor, record_id, reporting_period, program, client_id, body, updated_at) ",
        );
        qb.push_values(chunk, |mut row, r| {
            row.push_bind(r.vendor.as_str())
                .push_bind(r.record_id.as_str())
                .push_bind(r.reporting_period.as_str())
                .push_bind(r.program.as_str())
                .push_bind(r.client_id.as_str())
                .push_bind(r.body.as_str())
                .push_bind(now);
        });
        qb.push(
            " ON CONFLICT (vendor, record_id, reporting_period) DO UPDATE SET \
             program = excluded.program, client_id = excluded.client_id, \
             body = excluded.body, updated_at = excluded.updated_at",
        );
        qb.build()
            .persistent(chunk.len() == MAX_ROWS_PER_INSERT)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
    }
    Ok(())
}

/// Inserts items with multi-row `INSERT`s; their `seq` follows the order of `items`.
async fn insert_items(
    tx: &mut Transaction<'static, Postgres>,
    items: &[NewItem],
    now: i64,
) -> StoreResult<()> {
    for chunk in items.chunks(MAX_ROWS_PER_INSERT) {
        let mut qb = QueryBuilder::<Postgres>::new(
            "INSERT INTO items (recipient, kind, vendor, record_id, reporting_period, \
             record_ref, body, created_at) ",
        );
        qb.push_values(chunk, |mut row, i| {
            row.push_bind(i.recipient.as_str())
                .push_bind(i.kind.as_str())
                .push_bind(i.vendor.as_str())
                .push_bind(i.record_id.as_str())
                .push_bind(i.reporting_period.as_str())
                .push_bind(i.record_ref.as_str())
                .push_bind(i.body.as_str())
                .push_bind(now);
        });
        qb.build()
            .persistent(chunk.len() == MAX_ROWS_PER_INSERT)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
    }
    Ok(())
}

/// A delivery being written on one pooled connection.
struct PgDeliveryTx {
    tx: Transaction<'static, Postgres>,
}

#[async_trait]
impl DeliveryTx for PgDeliveryTx {
    async fn put(&mut self, records: &[NewRecord], items: &[NewItem]) -> StoreResult<()> {
        let now = now_ms();
        insert_records(&mut self.tx, records, now).await?;
        insert_items(&mut self.tx, items, now).await
    }

    async fn commit(mut self: Box<Self>, d: &NewDelivery) -> StoreResult<CommitOutcome> {
        // A concurrent transaction with the same key makes this statement wait for its outcome:
        // if it commits, nothing is inserted here; if it rolls back, this row goes in.
        let inserted = sqlx::query(
            "INSERT INTO deliveries (id, vendor, idempotency_key, content_hash, format, mode, \
             status, test, received_at, receipt) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (vendor, idempotency_key) DO NOTHING",
        )
        .bind(&d.id)
        .bind(&d.vendor)
        .bind(d.idempotency_key.as_deref())
        .bind(&d.content_hash)
        .bind(&d.format)
        .bind(&d.mode)
        .bind(&d.status)
        .bind(d.test)
        .bind(d.received_at)
        .bind(&d.receipt)
        .execute(&mut *self.tx)
        .await
        .map_err(map_err)?
        .rows_affected();
        if inserted == 1 {
            self.tx.commit().await.map_err(map_err)?;
            return Ok(CommitOutcome::Committed);
        }
        // Only the (vendor, idempotency_key) conflict is absorbed, so the key is set here; in
        // READ COMMITTED this statement sees the conflicting, committed row.
        let first: Option<(String, String)> = sqlx::query_as(
            "SELECT content_hash, receipt FROM deliveries \
             WHERE vendor = $1 AND idempotency_key = $2",
        )
        .bind(&d.vendor)
        .bind(d.idempotency_key.as_deref())
        .fetch_optional(&mut *self.tx)
        .await
        .map_err(map_err)?;
        self.tx.rollback().await.map_err(map_err)?;
        let (content_hash, receipt) = first.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "delivery {} conflicted on its idempotency key, but no earlier delivery was found",
                d.id
            ))
        })?;
        Ok(CommitOutcome::Duplicate {
            content_hash,
            receipt,
        })
    }

    async fn rollback(self: Box<Self>) -> StoreResult<()> {
        self.tx.rollback().await.map_err(map_err)
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn begin_delivery(&self) -> StoreResult<Box<dyn DeliveryTx>> {
        Ok(Box::new(PgDeliveryTx {
            tx: self.pool.begin().await.map_err(map_err)?,
        }))
    }

    async fn delivery_by_key(
        &self,
        vendor: &str,
        key: &str,
    ) -> StoreResult<Option<(String, String)>> {
        sqlx::query_as(
            "SELECT content_hash, receipt FROM deliveries \
             WHERE vendor = $1 AND idempotency_key = $2",
        )
        .bind(vendor)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)
    }

    async fn delivery(&self, vendor: &str, id: &str) -> StoreResult<Option<StoredDelivery>> {
        let row: Option<(String, i64, String)> = sqlx::query_as(
            "SELECT id, received_at, receipt FROM deliveries WHERE id = $1 AND vendor = $2",
        )
        .bind(id)
        .bind(vendor)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(row.map(|(id, received_at, receipt)| StoredDelivery {
            id,
            received_at,
            receipt,
        }))
    }

    async fn deliveries(
        &self,
        vendor: &str,
        since: Option<i64>,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> StoreResult<Vec<StoredDelivery>> {
        let mut qb = QueryBuilder::<Postgres>::new(
            "SELECT id, received_at, receipt FROM deliveries WHERE vendor = ",
        );
        qb.push_bind(vendor);
        if let Some(since) = since {
            qb.push(" AND received_at >= ").push_bind(since);
        }
        if let Some((at, id)) = after {
            qb.push(" AND (received_at, id) < (")
                .push_bind(at)
                .push(", ")
                .push_bind(id)
                .push(")");
        }
        qb.push(" ORDER BY received_at DESC, id DESC LIMIT ")
            .push_bind(limit.max(0));
        let rows: Vec<(String, i64, String)> = qb
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(rows
            .into_iter()
            .map(|(id, received_at, receipt)| StoredDelivery {
                id,
                received_at,
                receipt,
            })
            .collect())
    }

    async fn record(
        &self,
        vendor: &str,
        record_id: &str,
        period: &str,
    ) -> StoreResult<Option<String>> {
        sqlx::query_scalar(
            "SELECT body FROM records \
             WHERE vendor = $1 AND record_id = $2 AND reporting_period = $3",
        )
        .bind(vendor)
        .bind(record_id)
        .bind(period)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)
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
        let mut sealed = 0u64;
        loop {
            let (open, oldest) = open_head(&mut *tx, recipient, rule.max_items).await?;
            if !should_seal(open, oldest, rule, now_ms) {
                break;
            }
            let batch_id = uuid::Uuid::now_v7().to_string();
            // The set is chosen and claimed in one statement, so items committed meanwhile
            // (possibly with lower seq) can't slip in between choosing and counting.
            let periods: Vec<String> = sqlx::query_scalar(
                "UPDATE items SET batch_id = $1 WHERE seq IN (\
                 SELECT seq FROM items WHERE recipient = $2 AND batch_id IS NULL \
                 ORDER BY seq LIMIT $3) AND batch_id IS NULL RETURNING reporting_period",
            )
            .bind(&batch_id)
            .bind(recipient)
            .bind(rule.max_items)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
            if periods.is_empty() {
                break;
            }
            let count = i64::try_from(periods.len()).unwrap_or(i64::MAX);
            let periods = periods_json(periods);
            sqlx::query(
                "INSERT INTO batches (batch_id, recipient, seal_no, created_at, item_count, \
                 periods, state) VALUES ($1, $2, \
                 (SELECT COALESCE(MAX(seal_no), 0) + 1 FROM batches WHERE recipient = $2), \
                 $3, $4, $5, 'ready')",
            )
            .bind(&batch_id)
            .bind(recipient)
            .bind(now_ms)
            .bind(count)
            .bind(&periods)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
            sealed += 1;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(sealed)
    }

    async fn batches(
        &self,
        recipient: &str,
        state: Option<BatchState>,
    ) -> StoreResult<Vec<BatchInfo>> {
        let mut qb = QueryBuilder::<Postgres>::new("SELECT ");
        qb.push(BATCH_COLUMNS)
            .push(" FROM batches WHERE recipient = ")
            .push_bind(recipient);
        if let Some(state) = state {
            qb.push(" AND state = ").push_bind(state.as_str());
        }
        qb.push(" ORDER BY seal_no");
        let rows = qb
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.into_iter().map(batch_info).collect()
    }

    async fn batch(&self, recipient: &str, batch_id: &str) -> StoreResult<Option<BatchInfo>> {
        let row = sqlx::query_as(&format!(
            "SELECT {BATCH_COLUMNS} FROM batches WHERE batch_id = $1 AND recipient = $2"
        ))
        .bind(batch_id)
        .bind(recipient)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.map(batch_info).transpose()
    }

    async fn batch_items(
        &self,
        batch_id: &str,
        after_seq: i64,
        limit: i64,
    ) -> StoreResult<Vec<BatchItem>> {
        // A range scan of the index items_sealed (batch_id, seq).
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT seq, body FROM items WHERE batch_id = $1 AND seq > $2 \
             ORDER BY seq LIMIT $3",
        )
        .bind(batch_id)
        .bind(after_seq)
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(rows
            .into_iter()
            .map(|(seq, body)| BatchItem { seq, body })
            .collect())
    }

    async fn ack_batch(
        &self,
        recipient: &str,
        batch_id: &str,
        findings: &str,
        now_ms: i64,
    ) -> StoreResult<Option<BatchInfo>> {
        // The row lock of the UPDATE serialises concurrent acks; the second finds the batch
        // acknowledged and changes nothing.
        sqlx::query(
            "UPDATE batches SET state = 'acknowledged', acked_at = $1, findings = $2 \
             WHERE batch_id = $3 AND recipient = $4 AND state = 'ready'",
        )
        .bind(now_ms)
        .bind(findings)
        .bind(batch_id)
        .bind(recipient)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        self.batch(recipient, batch_id).await
    }

    async fn open_items(&self, recipient: &str) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM items WHERE recipient = $1 AND batch_id IS NULL")
            .bind(recipient)
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)
    }
}

/// The number of open items among the recipient's first `max_items` open ones (so at most
/// `max_items`) and the oldest `created_at` among them.
async fn open_head<'c, E>(
    executor: E,
    recipient: &str,
    max_items: i64,
) -> StoreResult<(i64, Option<i64>)>
where
    E: sqlx::Executor<'c, Database = Postgres>,
{
    sqlx::query_as(
        "SELECT COUNT(*), MIN(created_at) FROM (\
         SELECT created_at FROM items WHERE recipient = $1 AND batch_id IS NULL \
         ORDER BY seq LIMIT $2) AS head",
    )
    .bind(recipient)
    .bind(max_items)
    .fetch_one(executor)
    .await
    .map_err(map_err)
}

/// The seal rule: a full batch whenever `max_items` are open; the rest once its oldest item has
/// reached `max_age_ms`.
fn should_seal(open: i64, oldest: Option<i64>, rule: SealRule, now_ms: i64) -> bool {
    match oldest {
        Some(oldest) if open > 0 => {
            open >= rule.max_items || now_ms.saturating_sub(oldest) >= rule.max_age_ms
        }
        _ => false,
    }
}

/// Sorted distinct periods as a JSON array.
fn periods_json(mut periods: Vec<String>) -> String {
    periods.sort_unstable();
    periods.dedup();
    serde_json::to_string(&periods).unwrap_or_else(|_| "[]".to_string())
}
