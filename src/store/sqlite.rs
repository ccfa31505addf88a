//! SQLite implementation of [`Store`]: the embedded default. Owns the connection set-up (WAL,
//! `synchronous=FULL`, foreign keys, busy timeout), the SQLite migrations under
//! `src/store/migrations/sqlite`, and every SQLite query of the store.
//!
//! Two pools: a **writer** pool with exactly one connection, so writing transactions queue for it
//! instead of failing with `SQLITE_BUSY`, and a **reader** pool (`query_only`) that WAL lets read
//! while a delivery is being written. Writing transactions start with `BEGIN IMMEDIATE`, so that
//! even another process on the same file makes them wait (busy timeout) rather than fail on a
//! lock upgrade.
//!
//! Every connection runs with `secure_delete = ON`: deleted content (erasure) is overwritten with
//! zeros; [`Store::compact`] then checkpoints the WAL into the database file and truncates it, so
//! no copy of the erased data remains in either file. Audit appends rely on the write lock the
//! delivery transaction holds from `BEGIN IMMEDIATE` on.
//!
//! Collections of any size (holder keys, cancellation scopes, kept ids) are bound as one JSON
//! array and read with `json_each`, so no statement comes near SQLite's parameter limit.
//!
//! Retention deletes in chunks of [`PURGE_CHUNK`] rows, one short write transaction each, so a
//! purge never holds the write lock for long: records by reporting period (index
//! `records_period`), delivered items in `seq` order up to the first item created at or after
//! the cut-off, receipts by `received_at`, audit events from the start of the chain. Then
//! [`Store::compact`] checkpoints and truncates the WAL.
//!
//! Item and record times (`created_at`, `updated_at`) are taken from this process's clock
//! ([`std::time::SystemTime::now`]) when [`DeliveryTx::put`] runs, the same clock the callers of
//! [`Store::seal`] use for `now_ms`.

use super::chain::{AUDIT_SELECT, AuditTuple, audit_row};
use super::codec::{
    self, BodyPacker, BodyWriter, Codec, StoredBody, UnpackError, Unpacker, unpack_with,
};
use super::codec::{TRAIN_AFTER_BODIES, TRAINING_BACK_OFF, TRAINING_EVERY};
use super::shared::{
    BATCH_COLUMNS, HolderRow, LAST_LINK, NO_NEWER_HOLDING, NO_NEWER_ITEM, batch_info, holder,
    holder_columns, insert_blocks, map_migrate_err, now_ms,
};
use super::{
    AckOutcome, AuditAnchor, AuditRow, BatchInfo, BatchItem, BatchState, CommitOutcome, Cutoffs,
    DeliveryTx, Erased, FEEDBACK_COLUMNS, FeedbackRow, FeedbackTuple, FieldSet, Finding, Holder,
    JoinedItems, Month, NewAuditEvent, NewDelivery, NewItem, NewRecord, PartitionReport,
    PurgeReport, PushGroup, PushGroupTuple, PushResult, PushState, SEAL_CHUNK, SealRule, Store,
    StoreError, StoreResult, StoredDelivery, Withdrawal, batches_of_head, batches_to_seal,
    by_delivery, count_items, feedback_row, feedback_rows, field_sets_of, findings_json,
    outcome_columns, periods_json, push_group_row, scrub_receipt, should_seal,
};
use super::{DeliveryFilter, DeliverySummary, PAUSED_LANE_OWNER, RecordItem, StoredRecord};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite, Transaction};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// SQLite's limit on bound parameters in one statement (`SQLITE_MAX_VARIABLE_NUMBER`).
const MAX_PARAMS: usize = 32_766;
/// Rows per multi-row `INSERT`. Full chunks all have the same SQL text, so their prepared
/// statement is cached and reused; only a delivery's last, shorter chunk is prepared afresh.
const MAX_ROWS_PER_INSERT: usize = 1_000;
/// Columns bound per record row.
const RECORD_COLUMNS: usize = 8;
/// Columns bound per item row.
const ITEM_COLUMNS: usize = 9;
/// Columns bound per audit row.
const AUDIT_COLUMNS: usize = 7;
/// How long a connection waits for a lock held by another connection or process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Page cache of the writer connection (`PRAGMA cache_size`; negative = KiB): 32 MiB.
const WRITER_CACHE_SIZE: &str = "-32768";
/// The writer never checkpoints inside a commit (`wal_autocheckpoint = 0`): the
/// [`Housekeeper`] does, on its own connection, off every commit path.
const WAL_AUTOCHECKPOINT_PAGES: &str = "0";
/// How often the housekeeper looks at the WAL.
const HOUSEKEEPING_POLL: Duration = Duration::from_millis(250);
/// How often the housekeeper copies the WAL into the database file (`PASSIVE`: never waits for
/// the writer or readers). Copying every second, not at every commit, copies each often-written
/// page (B-tree interior and index pages) once instead of again and again.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// Bytes of one WAL frame: a page (SQLite's default 4 KiB) and its 24-byte header.
const WAL_FRAME_BYTES: u64 = 4096 + 24;
/// How often the housekeeper truncates the WAL (`TRUNCATE`, which waits briefly for readers and
/// runs only when a `PASSIVE` pass has copied every frame); also as soon as the WAL has grown
/// past [`WAL_TRUNCATE_BYTES`] (after a large delivery).
const TRUNCATE_EVERY: Duration = Duration::from_secs(300);
/// How long the housekeeper waits after a checkpoint in the writer's turn that readers blocked.
const CHECKPOINT_BACK_OFF: Duration = Duration::from_secs(5);
/// Once the WAL holds this much, the housekeeper checkpoints in the writer's turn (`RESTART`),
/// and the next commit writes the WAL from its beginning: its pages are then in the page cache
/// already, where new ones would be allocated and zeroed by the kernel.
const RESTART_BYTES: u64 = 128 << 20;
/// How long a checkpoint in the writer's turn waits for readers of the frames it copies.
const WRITER_CHECKPOINT_WAIT: Duration = Duration::from_millis(200);
/// A WAL larger than this is truncated at the next pass.
const WAL_TRUNCATE_BYTES: u64 = 256 << 20;
/// A WAL reset leaves at most this much of the file behind (`journal_size_limit`), to be
/// written over again. As large as [`WAL_TRUNCATE_BYTES`]: at 64 MiB, the first commit after
/// nearly every reset cut the file back, and freeing and re-allocating its pages in the kernel
/// took a fifth of the writer's time under load (`perf`, BENCHMARKS.md). The housekeeper
/// truncates a larger WAL.
const WAL_KEEP_BYTES: u64 = WAL_TRUNCATE_BYTES;
/// Connections in the reader pool.
const READERS: u32 = 4;
/// How long a caller waits for the writer connection (a long delivery holds it throughout).
const WRITER_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(60);
/// Rows deleted per write transaction when purging.
const PURGE_CHUNK: i64 = 5_000;

const _: () = assert!(MAX_ROWS_PER_INSERT * RECORD_COLUMNS <= MAX_PARAMS);
const _: () = assert!(MAX_ROWS_PER_INSERT * ITEM_COLUMNS <= MAX_PARAMS);
const _: () = assert!(MAX_ROWS_PER_INSERT * AUDIT_COLUMNS <= MAX_PARAMS);

/// The SQLite store: one writer connection, a few read-only readers, and the housekeeper's
/// connection for checkpoints.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// The dictionaries of packed bodies (`store/codec.rs`).
    codec: Arc<Codec>,
    /// Checkpoints the WAL (and trains the body dictionary) in the background while the store
    /// lives (`None` in memory).
    _housekeeper: Option<Arc<Housekeeper>>,
}

/// What `PRAGMA wal_checkpoint` reports.
struct Checkpointed {
    /// Readers (or a writer) kept it from finishing.
    busy: bool,
    /// Frames in the WAL (0 when it was reset; a restarted WAL keeps its file length).
    frames: u64,
}

/// Runs `PRAGMA wal_checkpoint(<mode>)` on a pool or a connection.
async fn checkpoint<'c, E>(on: E, mode: &str) -> StoreResult<Checkpointed>
where
    E: sqlx::Executor<'c, Database = Sqlite>,
{
    let (busy, log, _): (i64, i64, i64) = sqlx::query_as(&format!("PRAGMA wal_checkpoint({mode})"))
        .fetch_one(on)
        .await
        .map_err(map_err)?;
    Ok(Checkpointed {
        busy: busy != 0,
        frames: u64::try_from(log).unwrap_or(0),
    })
}

/// SQLite housekeeping off the commit path: a task with its own connection copies the WAL into
/// the database file (`PASSIVE`) every [`CHECKPOINT_EVERY`]. Once the WAL holds
/// [`RESTART_BYTES`] of frames, it copies once more (`PASSIVE`, what was committed during the
/// first pass), then takes the writer's turn for a moment and checkpoints there (`RESTART`), so
/// that the next commit writes the WAL from its beginning again. It truncates the WAL every
/// [`TRUNCATE_EVERY`] or as soon as the file has grown past [`WAL_TRUNCATE_BYTES`] (after a
/// large delivery), so the WAL never keeps gigabytes. Stopped when the store is dropped.
#[derive(Debug)]
struct Housekeeper {
    task: tokio::task::JoinHandle<()>,
}

/// Runs `PRAGMA wal_checkpoint(<mode>)` on the writer connection, between two deliveries: no
/// commit can add frames while it copies the last ones, and it waits at most
/// [`WRITER_CHECKPOINT_WAIT`] for readers of older frames. Returns whether readers blocked it.
async fn checkpoint_in_writer_turn(writer: &SqlitePool, mode: &str) -> StoreResult<bool> {
    let busy_timeout = |wait: Duration| format!("PRAGMA busy_timeout = {}", wait.as_millis());
    let mut conn = writer.acquire().await.map_err(map_err)?;
    sqlx::query(&busy_timeout(WRITER_CHECKPOINT_WAIT))
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    let done = checkpoint(&mut *conn, mode).await;
    if let Err(e) = sqlx::query(&busy_timeout(BUSY_TIMEOUT))
        .execute(&mut *conn)
        .await
    {
        // Never hand deliveries a writer with the short wait: the pool opens a new one.
        conn.close().await.ok();
        return Err(map_err(e));
    }
    Ok(done?.busy)
}

impl Housekeeper {
    async fn start(
        options: SqliteConnectOptions,
        path: std::path::PathBuf,
        writer: SqlitePool,
        codec: Arc<Codec>,
    ) -> StoreResult<Self> {
        // A short busy timeout: a checkpoint that must wait gives up at once and is tried again
        // at the next pass.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.busy_timeout(Duration::from_millis(100)))
            .await
            .map_err(map_err)?;
        let mut wal = path.into_os_string();
        wal.push("-wal");
        let wal = std::path::PathBuf::from(wal);
        let task = tokio::spawn(async move {
            let mut last_copy = std::time::Instant::now();
            // `None`: never truncated by this process, so the first pass truncates.
            let mut last_truncate: Option<std::time::Instant> = None;
            let mut back_off_until = std::time::Instant::now();
            let mut next_training = std::time::Instant::now();
            loop {
                tokio::time::sleep(HOUSEKEEPING_POLL).await;
                if codec.packer().is_none() && std::time::Instant::now() >= next_training {
                    next_training = std::time::Instant::now() + TRAINING_EVERY;
                    if let Err(e) = pack_bodies(&writer, &pool, &codec, TRAIN_AFTER_BODIES).await {
                        tracing::warn!("no body dictionary yet: {e}");
                        next_training = std::time::Instant::now() + TRAINING_BACK_OFF;
                    }
                }
                let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
                let may_block = std::time::Instant::now() >= back_off_until;
                let truncate = may_block
                    && (size > WAL_TRUNCATE_BYTES
                        || last_truncate.is_none_or(|t| t.elapsed() >= TRUNCATE_EVERY));
                if size == 0 || !(truncate || last_copy.elapsed() >= CHECKPOINT_EVERY) {
                    continue;
                }
                last_copy = std::time::Instant::now();
                // PASSIVE copies without blocking anyone, however large the WAL; what the
                // writer's turn then copies is only what was committed meanwhile. Its frame
                // count decides, not the file's length.
                let frames = match checkpoint(&pool, "PASSIVE").await {
                    Ok(done) => done.frames,
                    Err(e) => {
                        tracing::debug!("SQLite PASSIVE checkpoint failed: {e}");
                        continue;
                    }
                };
                let restart = may_block && frames * WAL_FRAME_BYTES > RESTART_BYTES;
                if !(truncate || restart) {
                    continue;
                }
                // The pass above took a while; copy what was committed meanwhile too, still
                // without blocking anyone, so that the writer's turn below copies (and waits
                // for) as little as possible.
                if let Err(e) = checkpoint(&pool, "PASSIVE").await {
                    tracing::debug!("SQLite PASSIVE checkpoint failed: {e}");
                }
                // Under steady load a PASSIVE checkpoint never catches up with the commits, so
                // the WAL would only grow (2 GB in a 30 s benchmark, every frame written to a
                // newly allocated block). In the writer's turn the checkpoint copies the last
                // frames and waits for readers of them; the next commit then starts the WAL over.
                let mode = if truncate { "TRUNCATE" } else { "RESTART" };
                match checkpoint_in_writer_turn(&writer, mode).await {
                    Ok(false) if truncate => last_truncate = Some(std::time::Instant::now()),
                    Ok(false) => {}
                    // Readers held it: back off, since every try holds the writer for up to
                    // the wait.
                    Ok(true) => {
                        back_off_until = std::time::Instant::now() + CHECKPOINT_BACK_OFF;
                    }
                    Err(e) => tracing::debug!("SQLite {mode} checkpoint failed: {e}"),
                }
            }
        });
        Ok(Housekeeper { task })
    }
}

impl Drop for Housekeeper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SqliteStore {
    /// Opens (creating the file and its parent directory when missing) the database a
    /// `sqlite://…` URL names, e.g. `sqlite://./data/weiche.db` or `sqlite:///abs/path.db`, and
    /// runs the SQLite migrations. `sqlite::memory:` gives a private in-memory database served by
    /// the single writer connection (for tests only).
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let base = SqliteConnectOptions::from_str(url)
            .map_err(|_| StoreError::UnsupportedUrl(url.to_string()))?
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            // Deleted content is overwritten with zeros (in the WAL, and in the database file
            // once checkpointed), so an erasure leaves no readable trace; see `compact`.
            .pragma("secure_delete", "ON");
        let in_memory = is_in_memory(url, &base);
        if !in_memory
            && let Some(parent) = base.get_filename().parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Unavailable(format!(
                    "cannot create directory {}: {e}",
                    parent.display()
                ))
            })?;
        }

        let mut writer_options = base
            .clone()
            .create_if_missing(true)
            .synchronous(SqliteSynchronous::Full)
            .pragma("cache_size", WRITER_CACHE_SIZE)
            .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
            // Statement journals of the multi-row INSERTs (and other temporary files) in memory:
            // as files they were a third of the bytes the server wrote (`perf trace`).
            .pragma("temp_store", "MEMORY")
            .pragma("journal_size_limit", WAL_KEEP_BYTES.to_string());
        if !in_memory {
            writer_options = writer_options.journal_mode(SqliteJournalMode::Wal);
        }
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(WRITER_ACQUIRE_TIMEOUT)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(writer_options)
            .await
            .map_err(map_err)?;
        sqlx::migrate!("src/store/migrations/sqlite")
            .run(&writer)
            .await
            .map_err(|e| map_migrate_err(e, map_err))?;

        let codec = Arc::new(Codec::default());
        let (reader, housekeeper) = if in_memory {
            // An in-memory database has no WAL: readers beside the writer would meet table
            // locks (SQLITE_LOCKED) instead of a snapshot, so one connection does everything.
            (writer.clone(), None)
        } else {
            // A WAL left large by an earlier run (a crash, a huge delivery) is copied and
            // truncated by the housekeeper's first pass, in the background: start-up does not
            // wait for gigabytes to be copied.
            codec.load(&stored_dictionaries(&writer).await?, true)?;
            let housekeeper = Housekeeper::start(
                base.clone(),
                base.get_filename().to_path_buf(),
                writer.clone(),
                codec.clone(),
            )
            .await?;
            let reader_options = base.pragma("query_only", "ON");
            let reader = SqlitePoolOptions::new()
                .max_connections(READERS)
                .min_connections(0)
                .acquire_timeout(Duration::from_secs(30))
                .connect_with(reader_options)
                .await
                .map_err(map_err)?;
            (reader, Some(Arc::new(housekeeper)))
        };
        Ok(SqliteStore {
            writer,
            reader,
            codec,
            _housekeeper: housekeeper,
        })
    }

    /// The pool of reading connections.
    fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    /// The one writing connection.
    fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// Starts a writing transaction on the writer connection (`BEGIN IMMEDIATE`).
    async fn begin_write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)
    }

    /// A delivery transaction on `tx`, packing bodies with the current dictionary.
    fn delivery_tx(&self, tx: Transaction<'static, Sqlite>) -> SqliteDeliveryTx {
        SqliteDeliveryTx {
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
            let stored = stored_dictionaries(&self.reader).await?;
            self.codec.load(&stored, false)
        })
        .await
    }
}

/// The stored body dictionaries, oldest first.
async fn stored_dictionaries(pool: &SqlitePool) -> StoreResult<Vec<(i64, Vec<u8>)>> {
    sqlx::query_as("SELECT id, dict FROM body_dictionaries ORDER BY created_at, rowid")
        .fetch_all(pool)
        .await
        .map_err(map_err)
}

/// SQLite's `body_dictionaries`: read on the reader pool, written in a short write of its own.
struct Dictionaries<'a> {
    writer: &'a SqlitePool,
    reader: &'a SqlitePool,
}

impl codec::DictionaryTable for Dictionaries<'_> {
    async fn stored(&self) -> StoreResult<Vec<(i64, Vec<u8>)>> {
        stored_dictionaries(self.reader).await
    }

    async fn plain_items(&self, limit: i64) -> StoreResult<i64> {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT 1 FROM item_bodies WHERE typeof(body) = 'text' LIMIT ?1)",
        )
        .bind(limit)
        .fetch_one(self.reader)
        .await
        .map_err(map_err)
    }

    async fn samples(&self, items: i64, records: i64, events: i64) -> StoreResult<Vec<String>> {
        let mut bodies: Vec<String> = Vec::new();
        for (sql, limit) in [
            (
                "SELECT body FROM item_bodies WHERE typeof(body) = 'text' ORDER BY seq DESC LIMIT ?1",
                items,
            ),
            (
                "SELECT body FROM records WHERE typeof(body) = 'text' LIMIT ?1",
                records,
            ),
            (
                "SELECT body FROM audit WHERE typeof(body) = 'text' ORDER BY seq DESC LIMIT ?1",
                events,
            ),
        ] {
            bodies.extend(
                sqlx::query_scalar::<_, String>(sql)
                    .bind(limit)
                    .fetch_all(self.reader)
                    .await
                    .map_err(map_err)?,
            );
        }
        Ok(bodies)
    }

    async fn insert_first(&self, id: i64, dict: &[u8]) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO body_dictionaries (id, dict, created_at) SELECT ?1, ?2, ?3 \
             WHERE NOT EXISTS (SELECT 1 FROM body_dictionaries)",
        )
        .bind(id)
        .bind(dict)
        .bind(now_ms())
        .execute(self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }
}

/// See [`codec::pack_bodies`].
async fn pack_bodies(
    writer: &SqlitePool,
    reader: &SqlitePool,
    codec: &Codec,
    min_bodies: i64,
) -> StoreResult<bool> {
    codec::pack_bodies(&Dictionaries { writer, reader }, codec, min_bodies).await
}

/// Columns of a push group row, in [`PushGroupTuple`]'s order.
const PUSH_COLUMNS: &str =
    "batch_id, recipient, seal_no, item_count, state, attempts, next_at, last_error, updated_at";

/// Whether the URL names an in-memory database.
fn is_in_memory(url: &str, options: &SqliteConnectOptions) -> bool {
    url.contains(":memory:")
        || url.contains("mode=memory")
        || options
            .get_filename()
            .to_string_lossy()
            .starts_with("file:sqlx-in-memory-")
}

// --- Where SQLite's SQL differs: the names the shared SQL (sql.rs) asks for ------------------

super::sql::shared_fns!(Sqlite);
use shared_sql::{insert_records, open_head, seal_round};

/// The items with their bodies, as `i`: SQLite keeps the bodies in `item_bodies` (migration
/// 0008), so that sealing rewrites small rows.
const ITEMS_WITH_BODY: &str = "items AS i JOIN item_bodies AS b ON b.seq = i.seq";

/// An item's body in [`ITEMS_WITH_BODY`].
const ITEM_BODY: &str = "b.body";

/// Inserts items, then their bodies, with multi-row `INSERT`s; their `seq` follows the order of
/// `items`. The seqs are given explicitly, from the largest ever used (`AUTOINCREMENT` keeps it
/// in `sqlite_sequence`): `BEGIN IMMEDIATE` holds the write lock, so nothing else adds items.
async fn insert_items(
    tx: &mut Transaction<'static, Sqlite>,
    items: &[NewItem],
    bodies: &BodyWriter,
    now: i64,
) -> StoreResult<()> {
    if items.is_empty() {
        return Ok(());
    }
    let mut next: i64 = sqlx::query_scalar(
        "SELECT MAX(n) FROM (SELECT COALESCE(MAX(seq), 0) AS n FROM items \
         UNION ALL SELECT seq FROM sqlite_sequence WHERE name = 'items')",
    )
    .fetch_one(&mut **tx)
    .await
    .map_err(map_err)?;
    for (range, kept) in insert_blocks(items.len(), MAX_ROWS_PER_INSERT) {
        let chunk = &items[range];
        let first = next + 1;
        let mut qb = QueryBuilder::<Sqlite>::new(
            "INSERT INTO items (seq, recipient, kind, vendor, record_id, reporting_period, \
             record_ref, created_at, consent_id) ",
        );
        qb.push_values(chunk, |mut row, i| {
            next += 1;
            row.push_bind(next)
                .push_bind(i.recipient.as_str())
                .push_bind(i.kind.as_str())
                .push_bind(i.vendor.as_str())
                .push_bind(i.record_id.as_str())
                .push_bind(i.reporting_period.as_str())
                .push_bind(i.record_ref.as_str())
                .push_bind(now)
                .push_bind(i.consent_id.as_deref());
        });
        qb.build()
            .persistent(kept)
            .execute(&mut **tx)
            .await
            .map_err(map_err)?;
        let mut qb = QueryBuilder::<Sqlite>::new("INSERT INTO item_bodies (seq, body) ");
        let mut seq = first;
        let params = bodies.params(chunk.iter().map(|i| (i.body.as_str(), i.packed.as_ref())))?;
        qb.push_values(params, |mut row, body| {
            row.push_bind(seq).push_bind(body);
            seq += 1;
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
    tx: &mut Transaction<'static, Sqlite>,
    vendor: &str,
    client_id: &str,
) -> StoreResult<Vec<String>> {
    const SENT: &str = "i.batch_id IS NOT NULL AND i.vendor = $1 \
         AND (i.record_id, i.reporting_period) IN (SELECT record_id, reporting_period \
         FROM records WHERE vendor = $1 AND client_id = $2)";
    let kinds: Vec<String> =
        sqlx::query_scalar(&format!("SELECT i.kind FROM items AS i WHERE {SENT}"))
            .bind(vendor)
            .bind(client_id)
            .fetch_all(&mut **tx)
            .await
            .map_err(map_err)?;
    sqlx::query(&format!(
        "UPDATE item_bodies SET body = '{{\"type\":' || {kind} || ',\"record_ref\":' \
         || {record_ref} || ',\"erased\":true}}' \
         FROM items AS i WHERE i.seq = item_bodies.seq AND {SENT}",
        kind = json_text("i.kind"),
        record_ref = json_text("i.record_ref"),
    ))
    .bind(vendor)
    .bind(client_id)
    .execute(&mut **tx)
    .await
    .map_err(map_err)?;
    Ok(kinds)
}

/// Joins so that the left table is the outer loop: SQLite's planner keeps a CROSS JOIN's order.
const LOOP_JOIN: &str = "CROSS JOIN";

/// Row locks of a writing transaction: none needed, `BEGIN IMMEDIATE` holds SQLite's write lock
/// (no other connection or process writes meanwhile).
const FOR_UPDATE: &str = "";

/// Shared row locks: none needed, as for [`FOR_UPDATE`].
const FOR_SHARE: &str = "";

/// A text column as a JSON string: `json_quote` escapes like serde_json (compact, no spaces).
fn json_text(column: &str) -> String {
    format!("json_quote({column})")
}

/// One appender of the audit chain at a time: the transaction began with `BEGIN IMMEDIATE`, so
/// it holds SQLite's write lock already.
async fn lock_audit(_tx: &mut Transaction<'static, Sqlite>) -> StoreResult<()> {
    Ok(())
}

/// The records to write: all of them; SQLite applies the rows of one `INSERT … ON CONFLICT DO
/// UPDATE` in order, so of several versions of a record the last wins by itself.
fn last_versions(records: &[NewRecord]) -> &[NewRecord] {
    records
}

/// Maps a sqlx error: connection-level failures (and a database that stays locked or cannot be
/// written) are [`StoreError::Unavailable`], everything else [`StoreError::Database`].
fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
        sqlx::Error::Database(db) => {
            // Primary result code = extended code & 0xff: BUSY 5, LOCKED 6, IOERR 10, FULL 13,
            // CANTOPEN 14.
            let primary = db
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .map(|c| c & 0xff);
            match primary {
                Some(5 | 6 | 10 | 13 | 14) => StoreError::Unavailable(e.to_string()),
                _ => StoreError::Database(e),
            }
        }
        _ => StoreError::Database(e),
    }
}

/// The receipt's subjects of a delivery whose row was just inserted, as one JSON array of
/// `[record, subject]` pairs (no parameter limit).
async fn insert_receipt_subjects(
    tx: &mut Transaction<'static, Sqlite>,
    d: &NewDelivery,
) -> StoreResult<()> {
    if d.subjects.is_empty() {
        return Ok(());
    }
    let pairs: Vec<(i64, &str)> = d
        .subjects
        .iter()
        .map(|s| (s.record, s.subject.as_str()))
        .collect();
    sqlx::query(
        "INSERT INTO receipt_subjects (delivery_id, record, subject)          SELECT ?1, json_extract(value, '$[0]'), json_extract(value, '$[1]')          FROM json_each(?2) WHERE true ON CONFLICT (delivery_id, record) DO NOTHING",
    )
    .bind(&d.id)
    .bind(json_array(&pairs)?)
    .execute(&mut **tx)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// A delivery being written on the writer connection.
struct SqliteDeliveryTx {
    tx: Transaction<'static, Sqlite>,
    /// How its bodies are stored (packed once a dictionary is trained).
    bodies: BodyWriter,
}

super::sql::impl_delivery_tx!(SqliteDeliveryTx, Sqlite, {
    async fn holders(
        &mut self,
        vendor: &str,
        keys: &[(String, String)],
    ) -> StoreResult<Vec<Holder>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // The keys travel as one JSON array of [record_id, period] pairs (no parameter limit);
        // CROSS JOIN makes them the outer loop, each probing the index items_latest (and the
        // primary key of holdings). The latest of items and holdings by seq decides.
        let keys = json_array(keys)?;
        let rows: Vec<HolderRow> = sqlx::query_as(&format!(
            "SELECT {items} FROM items AS i WHERE i.seq IN (\
             SELECT MAX(j.seq) FROM (SELECT json_extract(value, '$[0]') AS record_id, \
             json_extract(value, '$[1]') AS reporting_period FROM json_each(?2)) AS k \
             CROSS JOIN items AS j ON j.vendor = ?1 AND j.record_id = k.record_id \
             AND j.reporting_period = k.reporting_period \
             GROUP BY j.record_id, j.reporting_period, j.recipient) \
             AND i.kind = 'record' AND {no_newer_holding} \
             UNION ALL \
             SELECT {held} FROM (SELECT DISTINCT json_extract(value, '$[0]') AS record_id, \
             json_extract(value, '$[1]') AS reporting_period FROM json_each(?2)) AS k \
             CROSS JOIN holdings AS h ON h.vendor = ?1 AND h.record_id = k.record_id \
             AND h.reporting_period = k.reporting_period \
             WHERE h.kind = 'record' AND {no_newer_item} \
             ORDER BY 3, 4, 1",
            items = holder_columns("i"),
            held = holder_columns("h"),
            no_newer_holding = NO_NEWER_HOLDING,
            no_newer_item = NO_NEWER_ITEM,
        ))
        .bind(vendor)
        .bind(keys)
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
        // Scopes and kept ids travel as JSON arrays (one parameter each, however many).
        let mut cancelled: Vec<(String, String)> = sqlx::query_as(
            "UPDATE records SET state = 'cancelled', updated_at = ?1 \
             WHERE vendor = ?2 AND state = 'active' AND delivery_id <> ?3 \
             AND (program, reporting_period) IN (SELECT json_extract(value, '$[0]'), \
             json_extract(value, '$[1]') FROM json_each(?4)) \
             AND record_id NOT IN (SELECT value FROM json_each(?5)) \
             RETURNING record_id, reporting_period",
        )
        .bind(now_ms())
        .bind(vendor)
        .bind(delivery_id)
        .bind(json_array(scopes)?)
        .bind(json_array(keep)?)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(map_err)?;
        cancelled.sort_unstable();
        Ok(cancelled)
    }
});

super::sql::impl_store!(SqliteStore, Sqlite, SqliteDeliveryTx, {
    async fn pack_bodies(&self, min_bodies: i64) -> StoreResult<bool> {
        pack_bodies(&self.writer, &self.reader, &self.codec, min_bodies).await
    }

    fn body_packer(&self) -> Option<Arc<BodyPacker>> {
        self.codec.packer()
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn begin_delivery(&self) -> StoreResult<Box<dyn DeliveryTx>> {
        Ok(Box::new(self.delivery_tx(self.begin_write().await?)))
    }

    async fn try_begin_delivery(&self) -> StoreResult<Option<Box<dyn DeliveryTx>>> {
        let tx = self
            .writer
            .try_begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_err)?;
        Ok(tx.map(|tx| Box::new(self.delivery_tx(tx)) as Box<dyn DeliveryTx>))
    }

    fn appends_audit_early(&self) -> bool {
        true
    }

    async fn seal(&self, recipient: &str, rule: SealRule, now_ms: i64) -> StoreResult<u64> {
        if rule.max_items < 1 {
            return Ok(0);
        }
        // Cheap check on a reader first: most calls find nothing to seal and need no write lock.
        let (open, oldest) = open_head(&self.reader, recipient, rule.max_items).await?;
        if !should_seal(open, oldest, rule, now_ms) {
            return Ok(0);
        }
        // BEGIN IMMEDIATE holds SQLite's write lock for the whole sealing: no other connection
        // or process can add, seal or change items meanwhile.
        let mut tx = self.begin_write().await?;
        let mut sealed: i64 = 0;
        loop {
            // Up to SEAL_CHUNK batches a round, in six statements however many batches: every
            // statement is a round trip to SQLite's thread, and a 1,000-record delivery fills
            // ten batches of a push recipient at once.
            let n = seal_round(&mut *tx, recipient, rule, now_ms, sealed).await?;
            if n == 0 {
                break;
            }
            // The head's items in order, read from the index of open items alone (it holds
            // their periods), and cut into batches here: grouping them in SQL sorted them twice
            // (`row_number` and `GROUP BY`), which cost half as much as the update below. The
            // write lock is held, so each batch's items are the open items up to its last seq.
            let head: Vec<(i64, String)> = sqlx::query_as(
                "SELECT seq, reporting_period FROM items \
                 WHERE recipient = ?1 AND batch_id IS NULL ORDER BY seq LIMIT ?2",
            )
            .bind(recipient)
            .bind(n.saturating_mul(rule.max_items))
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
            let batches = batches_of_head(&head, rule.max_items);
            let Some(last_seq) = batches.last().map(|b| b.last_seq) else {
                break;
            };
            let ids: Vec<String> = batches
                .iter()
                .map(|_| uuid::Uuid::now_v7().to_string())
                .collect();
            let mut qb = QueryBuilder::<Sqlite>::new("UPDATE items SET batch_id = CASE");
            for (b, id) in batches.iter().zip(&ids) {
                qb.push(" WHEN seq <= ")
                    .push_bind(b.last_seq)
                    .push(" THEN ")
                    .push_bind(id.as_str());
            }
            qb.push(" END WHERE recipient = ")
                .push_bind(recipient)
                .push(" AND batch_id IS NULL AND seq <= ")
                .push_bind(last_seq);
            qb.build().execute(&mut *tx).await.map_err(map_err)?;
            let base: i64 = sqlx::query_scalar(
                "SELECT COALESCE(MAX(seal_no), 0) FROM batches WHERE recipient = ?",
            )
            .bind(recipient)
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO batches (batch_id, recipient, seal_no, created_at, item_count, \
                 periods, state) ",
            );
            let mut seal_no = base;
            qb.push_values(batches.iter().zip(&ids), |mut row, (b, id)| {
                seal_no += 1;
                row.push_bind(id.as_str())
                    .push_bind(recipient)
                    .push_bind(seal_no)
                    .push_bind(now_ms)
                    .push_bind(b.count)
                    .push_bind(periods_json(b.periods.clone()))
                    .push_unseparated(", 'ready'");
            });
            qb.build().execute(&mut *tx).await.map_err(map_err)?;
            if rule.push {
                sqlx::query(
                    "INSERT INTO push_groups (batch_id, recipient, seal_no, item_count, state, \
                     next_at, updated_at) SELECT batch_id, recipient, seal_no, item_count, \
                     'pending', ?3, ?3 FROM batches WHERE recipient = ?1 AND seal_no > ?2",
                )
                .bind(recipient)
                .bind(base)
                .bind(now_ms)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
            }
            sealed += i64::try_from(batches.len()).unwrap_or(i64::MAX);
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
        // Read row by row and joined here: packed bodies are unpacked first.
        let rows: Vec<(i64, StoredBody)> = sqlx::query_as(
            "SELECT i.seq, b.body FROM items AS i JOIN item_bodies AS b ON b.seq = i.seq \
             WHERE i.batch_id = ?1 AND i.seq > ?2 ORDER BY i.seq LIMIT ?3",
        )
        .bind(batch_id)
        .bind(after_seq)
        .bind(limit.max(0))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        let Some(&(last_seq, _)) = rows.last() else {
            return Ok(None);
        };
        let text = self
            .unpacked(|u| {
                let mut text = String::new();
                for (n, (_, body)) in rows.iter().enumerate() {
                    if n > 0 {
                        text.push_str(separator);
                    }
                    text.push_str(&u.text(body)?);
                }
                Ok(text)
            })
            .await?;
        Ok(Some(JoinedItems {
            count: rows.len() as i64,
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
        // The write lock (BEGIN IMMEDIATE) serialises acks.
        let mut tx = self.begin_write().await?;
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM batches WHERE batch_id = ? AND recipient = ?")
                .bind(batch_id)
                .bind(recipient)
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
        let Some(state) = state else {
            return Ok(AckOutcome::NotFound);
        };
        if state == BatchState::Ready.as_str() {
            let refs: Vec<&str> = findings.iter().map(|f| f.record_ref.as_str()).collect();
            let mut known: Vec<(String, String, String, String)> = sqlx::query_as(
                "SELECT DISTINCT record_ref, vendor, record_id, reporting_period FROM items \
                 WHERE batch_id = ?1 AND record_ref IN (SELECT value FROM json_each(?2))",
            )
            .bind(batch_id)
            .bind(json_array(&refs)?)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
            known.sort_unstable();
            let rows = match feedback_rows(findings, &known) {
                Ok(rows) => rows,
                Err(i) => return Ok(AckOutcome::UnknownRef(i)),
            };
            for chunk in rows.chunks(MAX_ROWS_PER_INSERT) {
                let mut qb = QueryBuilder::<Sqlite>::new(
                    "INSERT INTO feedback (vendor, record_id, reporting_period, recipient, \
                     batch_id, code, message, received_at) ",
                );
                qb.push_values(chunk, |mut row, r| {
                    row.push_bind(r[0])
                        .push_bind(r[1])
                        .push_bind(r[2])
                        .push_bind(recipient)
                        .push_bind(batch_id)
                        .push_bind(r[3])
                        .push_bind(r[4])
                        .push_bind(now_ms);
                });
                qb.build().execute(&mut *tx).await.map_err(map_err)?;
            }
            sqlx::query(
                "UPDATE batches SET state = 'acknowledged', acked_at = ?, findings = ? \
                 WHERE batch_id = ?",
            )
            .bind(now_ms)
            .bind(findings_json(findings))
            .bind(batch_id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        let row = sqlx::query_as(&format!(
            "SELECT {BATCH_COLUMNS} FROM batches WHERE batch_id = ? AND recipient = ?"
        ))
        .bind(batch_id)
        .bind(recipient)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        match row.map(batch_info).transpose()? {
            Some(info) => Ok(AckOutcome::Acknowledged(info)),
            None => Ok(AckOutcome::NotFound),
        }
    }

    async fn open_items(&self, recipient: &str) -> StoreResult<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM items WHERE recipient = ? AND batch_id IS NULL")
            .bind(recipient)
            .fetch_one(&self.reader)
            .await
            .map_err(map_err)
    }

    async fn field_sets(&self, sha256s: &[String]) -> StoreResult<Vec<FieldSet>> {
        let mut out = Vec::new();
        for chunk in sha256s.chunks(500) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "SELECT sha256, fields FROM audit_field_sets WHERE sha256 IN (",
            );
            let mut list = qb.separated(", ");
            for h in chunk {
                list.push_bind(h.as_str());
            }
            qb.push(")");
            let rows: Vec<(String, String)> = qb
                .build_query_as()
                .fetch_all(&self.reader)
                .await
                .map_err(map_err)?;
            out.extend(
                rows.into_iter()
                    .map(|(sha256, fields)| FieldSet { sha256, fields }),
            );
        }
        Ok(out)
    }

    async fn compact(&self) -> StoreResult<()> {
        // secure_delete (set on every connection) has zeroed deleted content in the pages
        // written since; copying every WAL frame into the database file and truncating the WAL
        // leaves no older page image behind. Readers that still hold an old snapshot make the
        // checkpoint report busy; it is retried briefly.
        for attempt in 0..50 {
            if !checkpoint(&self.writer, "TRUNCATE").await?.busy {
                return Ok(());
            }
            if attempt < 49 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Err(StoreError::Unavailable(
            "WAL checkpoint stayed blocked by readers".into(),
        ))
    }

    async fn claim_lane(
        &self,
        recipient: &str,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> StoreResult<bool> {
        // One statement under the write lock: claim when free, expired or already ours.
        let claimed = sqlx::query(
            "INSERT INTO push_lanes (recipient, owner, lease_until) VALUES (?1, ?2, ?4) \
             ON CONFLICT (recipient) DO UPDATE SET owner = ?2, lease_until = ?4 \
             WHERE push_lanes.owner IS NULL OR push_lanes.owner = ?2 \
             OR push_lanes.lease_until < ?3",
        )
        .bind(recipient)
        .bind(owner)
        .bind(now_ms)
        .bind(now_ms.saturating_add(lease_ms))
        .execute(&self.writer)
        .await
        .map_err(map_err)?
        .rows_affected();
        Ok(claimed == 1)
    }

    async fn push_backlog(&self, recipient: &str) -> StoreResult<i64> {
        sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM items WHERE recipient = ?1 AND batch_id IS NULL) + \
             COALESCE((SELECT SUM(item_count) FROM push_groups \
             WHERE recipient = ?1 AND state = 'pending'), 0)",
        )
        .bind(recipient)
        .fetch_one(&self.reader)
        .await
        .map_err(map_err)
    }

    /// Nothing to do: SQLite tables are not partitioned.
    async fn maintain_partitions(
        &self,
        _now_ms: i64,
        _cutoffs: &Cutoffs,
    ) -> StoreResult<PartitionReport> {
        Ok(PartitionReport::default())
    }

    async fn purge(&self, cutoffs: &Cutoffs) -> StoreResult<PurgeReport> {
        let dry_run = cutoffs.dry_run;
        let mut r = PurgeReport {
            dry_run,
            ..PurgeReport::default()
        };
        if let Some(before) = cutoffs.records_before {
            self.purge_records(before, dry_run, &mut r).await?;
        }
        if let Some(before) = cutoffs.outputs_before_ms {
            self.purge_items(before, cutoffs.records_before, dry_run, &mut r)
                .await?;
        }
        if let Some(before) = cutoffs.audit_before_ms {
            self.purge_audit(before, dry_run, &mut r).await?;
        }
        if let Some(before) = cutoffs.receipts_before_ms {
            self.purge_receipts(before, dry_run, &mut r).await?;
        }
        let deleted = r.records + r.holdings + r.items + r.batches + r.audit_events + r.receipts;
        if !dry_run && deleted > 0 {
            // secure_delete has zeroed the rows; leave no copy in the WAL either.
            self.compact().await?;
        }
        Ok(r)
    }
});

impl SqliteStore {
    /// Deletes with `sql` — `DELETE … WHERE rowid IN (SELECT rowid … ?1 … LIMIT ?2)` — one chunk
    /// of [`PURGE_CHUNK`] rows per write transaction until a chunk comes back short; first asks
    /// a reader whether `probe` (`SELECT COUNT(*) FROM (SELECT 1 … ? … LIMIT 1)`) finds anything,
    /// so that a purge with nothing to do never queues for the write lock.
    async fn delete_chunked<T>(&self, probe: &str, sql: &str, bound: T) -> StoreResult<u64>
    where
        T: for<'q> sqlx::Encode<'q, Sqlite> + sqlx::Type<Sqlite> + Clone + Send + Sync + 'static,
    {
        if self.count(probe, bound.clone()).await? == 0 {
            return Ok(0);
        }
        let mut total = 0;
        loop {
            let mut tx = self.begin_write().await?;
            let n = sqlx::query(sql)
                .bind(bound.clone())
                .bind(PURGE_CHUNK)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?
                .rows_affected();
            tx.commit().await.map_err(map_err)?;
            total += n;
            if n < PURGE_CHUNK as u64 {
                return Ok(total);
            }
        }
    }

    /// A `SELECT COUNT(*)` with one bound value, on a reader.
    async fn count<T>(&self, sql: &str, bound: T) -> StoreResult<u64>
    where
        T: for<'q> sqlx::Encode<'q, Sqlite> + sqlx::Type<Sqlite> + Send + 'static,
    {
        let n: i64 = sqlx::query_scalar(sql)
            .bind(bound)
            .fetch_one(&self.reader)
            .await
            .map_err(map_err)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Records of periods before `before`, and their holdings.
    async fn purge_records(
        &self,
        before: Month,
        dry_run: bool,
        r: &mut PurgeReport,
    ) -> StoreResult<()> {
        let before = before.period();
        if dry_run {
            r.records = self
                .count(
                    "SELECT COUNT(*) FROM records WHERE reporting_period < ?",
                    before.clone(),
                )
                .await?;
            r.holdings = self
                .count(
                    "SELECT COUNT(*) FROM holdings WHERE reporting_period < ?",
                    before,
                )
                .await?;
            return Ok(());
        }
        r.records = self
            .delete_chunked(
                "SELECT COUNT(*) FROM (SELECT 1 FROM records WHERE reporting_period < ? LIMIT 1)",
                "DELETE FROM records WHERE rowid IN (SELECT rowid FROM records \
                 WHERE reporting_period < ?1 LIMIT ?2)",
                before.clone(),
            )
            .await?;
        r.holdings = self
            .delete_chunked(
                "SELECT COUNT(*) FROM (SELECT 1 FROM holdings WHERE reporting_period < ? LIMIT 1)",
                "DELETE FROM holdings WHERE rowid IN (SELECT rowid FROM holdings \
                 WHERE reporting_period < ?1 LIMIT ?2)",
                before,
            )
            .await?;
        Ok(())
    }

    /// Delivered items created before `before_ms`, in seq order, with their batches; what the
    /// recipients hold of them goes to holdings first.
    async fn purge_items(
        &self,
        before_ms: i64,
        records_before: Option<Month>,
        dry_run: bool,
        r: &mut PurgeReport,
    ) -> StoreResult<()> {
        // Items are numbered in the order they were written, by this process's clock: every item
        // before the first one created at or after the cut-off is older than it. (Should the
        // clock have gone back, younger ones after that point wait for a later purge.)
        let limit: Option<i64> =
            sqlx::query_scalar("SELECT seq FROM items WHERE created_at >= ? ORDER BY seq LIMIT 1")
                .bind(before_ms)
                .fetch_optional(&self.reader)
                .await
                .map_err(map_err)?;
        let limit = limit.unwrap_or(i64::MAX);
        let delivered_i = delivered("i");
        if dry_run {
            r.items = self
                .count(
                    &format!("SELECT COUNT(*) FROM items AS i WHERE i.seq < ? AND {delivered_i}"),
                    limit,
                )
                .await?;
            r.batches = self
                .count(
                    &format!(
                        "SELECT COUNT(*) FROM batches WHERE batch_id IN (SELECT i.batch_id \
                         FROM items AS i WHERE i.seq < ? AND {delivered_i})"
                    ),
                    limit,
                )
                .await?;
            r.overdue_items = self
                .count(
                    &format!(
                        "SELECT COUNT(*) FROM items AS i WHERE i.seq < ? AND NOT ({delivered_i})"
                    ),
                    limit,
                )
                .await?;
            return Ok(());
        }
        let records_before = records_before.map(Month::period);
        let delivered_items = delivered("items");
        let mut after = i64::MIN;
        let any = self
            .count(
                &format!(
                    "SELECT COUNT(*) FROM (SELECT 1 FROM items AS i \
                     WHERE i.seq < ? AND {delivered_i} LIMIT 1)"
                ),
                limit,
            )
            .await?;
        let mut more = any > 0;
        while more {
            let mut tx = self.begin_write().await?;
            let (n, lo, hi): (i64, Option<i64>, Option<i64>) = sqlx::query_as(&format!(
                "SELECT COUNT(*), MIN(seq), MAX(seq) FROM (SELECT i.seq FROM items AS i \
                 WHERE i.seq > ?1 AND i.seq < ?2 AND {delivered_i} ORDER BY i.seq LIMIT ?3)"
            ))
            .bind(after)
            .bind(limit)
            .bind(PURGE_CHUNK)
            .fetch_one(&mut *tx)
            .await
            .map_err(map_err)?;
            let (Some(lo), Some(hi)) = (lo, hi) else {
                tx.rollback().await.map_err(map_err)?;
                break;
            };
            // What each recipient holds: the latest item per record and recipient, unless a
            // newer item stays.
            sqlx::query(&format!(
                "INSERT INTO holdings (vendor, record_id, reporting_period, recipient, kind, \
                 record_ref, consent_id, seq) \
                 SELECT i.vendor, i.record_id, i.reporting_period, i.recipient, i.kind, \
                 i.record_ref, i.consent_id, i.seq FROM items AS i \
                 WHERE i.seq BETWEEN ?1 AND ?2 AND {delivered_i} \
                 AND (?3 IS NULL OR i.reporting_period >= ?3) \
                 AND NOT EXISTS (SELECT 1 FROM items AS n WHERE n.vendor = i.vendor \
                 AND n.record_id = i.record_id AND n.reporting_period = i.reporting_period \
                 AND n.recipient = i.recipient AND n.seq > i.seq) \
                 ON CONFLICT (vendor, record_id, reporting_period, recipient) DO UPDATE SET \
                 kind = excluded.kind, record_ref = excluded.record_ref, \
                 consent_id = excluded.consent_id, seq = excluded.seq \
                 WHERE excluded.seq > holdings.seq"
            ))
            .bind(lo)
            .bind(hi)
            .bind(records_before.as_deref())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
            // A batch goes as a whole with its first purged item; its later items stay until
            // their own time (they count as delivered).
            let batches = sqlx::query(&format!(
                "DELETE FROM batches WHERE batch_id IN (SELECT i.batch_id FROM items AS i \
                 WHERE i.seq BETWEEN ?1 AND ?2 AND {delivered_i})"
            ))
            .bind(lo)
            .bind(hi)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?
            .rows_affected();
            let items = sqlx::query(&format!(
                "DELETE FROM items WHERE items.seq BETWEEN ?1 AND ?2 AND {delivered_items}"
            ))
            .bind(lo)
            .bind(hi)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?
            .rows_affected();
            tx.commit().await.map_err(map_err)?;
            r.batches += batches;
            r.items += items;
            after = hi;
            more = n >= PURGE_CHUNK;
        }
        // What is left before the cut-off is not delivered yet.
        r.overdue_items = self
            .count("SELECT COUNT(*) FROM items WHERE seq < ?", limit)
            .await?;
        Ok(())
    }

    /// Audit events written before `before_ms`, from the start of the chain, as far as it
    /// verifies; the last one purged becomes the anchor.
    async fn purge_audit(
        &self,
        before_ms: i64,
        dry_run: bool,
        r: &mut PurgeReport,
    ) -> StoreResult<()> {
        let mut anchor = self.audit_anchor().await?;
        if !oldest_event_before(&self.reader, before_ms).await? {
            return Ok(());
        }
        loop {
            // Read, check and delete under the write lock (a dry run reads on a reader).
            let mut tx = if dry_run {
                None
            } else {
                Some(self.begin_write().await?)
            };
            let after = anchor.as_ref().map_or(0, |a| a.seq);
            let sql =
                format!("SELECT {AUDIT_SELECT} FROM audit WHERE seq > ? ORDER BY seq LIMIT ?");
            let query = sqlx::query_as::<_, AuditTuple>(&sql)
                .bind(after)
                .bind(PURGE_CHUNK);
            let rows: Vec<AuditTuple> = match tx.as_mut() {
                Some(tx) => query.fetch_all(&mut **tx).await,
                None => query.fetch_all(&self.reader).await,
            }
            .map_err(map_err)?;
            let rows: Vec<AuditRow> = self
                .unpacked(|u| rows.iter().map(|row| audit_row(u, row)).collect())
                .await?;
            let prefix = super::chain::purge_prefix(anchor.as_ref(), &rows, before_ms);
            if let Some(b) = &prefix.broken {
                r.notes.push(format!(
                    "audit chain broken at event {}: not purged past it ({})",
                    b.seq, b.reason
                ));
            }
            if let (Some(through), Some(tx)) = (&prefix.through, tx.as_mut()) {
                sqlx::query("DELETE FROM audit WHERE seq <= ?")
                    .bind(through.seq)
                    .execute(&mut **tx)
                    .await
                    .map_err(map_err)?;
                sqlx::query("DELETE FROM audit_subject_runs WHERE last_seq <= ?")
                    .bind(through.seq)
                    .execute(&mut **tx)
                    .await
                    .map_err(map_err)?;
                sqlx::query(
                    "INSERT INTO audit_anchor (id, seq, hash, purged_at) VALUES (1, ?, ?, ?) \
                     ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, \
                     purged_at = excluded.purged_at",
                )
                .bind(through.seq)
                .bind(&through.hash)
                .bind(now_ms())
                .execute(&mut **tx)
                .await
                .map_err(map_err)?;
            }
            if let Some(tx) = tx {
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

    /// Receipts received before `before_ms`.
    async fn purge_receipts(
        &self,
        before_ms: i64,
        dry_run: bool,
        r: &mut PurgeReport,
    ) -> StoreResult<()> {
        r.receipts = if dry_run {
            self.count(
                "SELECT COUNT(*) FROM deliveries WHERE received_at < ?",
                before_ms,
            )
            .await?
        } else {
            self.delete_chunked(
                "SELECT COUNT(*) FROM (SELECT 1 FROM deliveries WHERE received_at < ? LIMIT 1)",
                "DELETE FROM deliveries WHERE rowid IN (SELECT rowid FROM deliveries \
                 WHERE received_at < ?1 LIMIT ?2)",
                before_ms,
            )
            .await?
        };
        Ok(())
    }
}

/// Whether the oldest kept audit event was written before `before_ms` (else a purge of audit
/// events has nothing to do).
async fn oldest_event_before(reader: &SqlitePool, before_ms: i64) -> StoreResult<bool> {
    let oldest: Option<i64> = sqlx::query_scalar("SELECT at_ms FROM audit ORDER BY seq LIMIT 1")
        .fetch_optional(reader)
        .await
        .map_err(map_err)?;
    Ok(oldest.is_some_and(|at| at < before_ms))
}

/// The kind of the latest item or holding (by seq) of record `r` for the recipient `?2`; NULL
/// when there is neither.
const LATEST_KIND: &str = "COALESCE((SELECT i.kind FROM items AS i \
     WHERE i.vendor = r.vendor AND i.record_id = r.record_id \
     AND i.reporting_period = r.reporting_period AND i.recipient = ?2 \
     AND i.seq > COALESCE((SELECT h.seq FROM holdings AS h WHERE h.vendor = r.vendor \
     AND h.record_id = r.record_id AND h.reporting_period = r.reporting_period \
     AND h.recipient = ?2), -1) ORDER BY i.seq DESC LIMIT 1), \
     (SELECT h.kind FROM holdings AS h WHERE h.vendor = r.vendor AND h.record_id = r.record_id \
     AND h.reporting_period = r.reporting_period AND h.recipient = ?2))";

/// Item `alias` is delivered: sealed into a batch that is not waiting for its acknowledgement
/// (acknowledged, or already purged with an earlier month of items).
fn delivered(alias: &str) -> String {
    format!(
        "{alias}.batch_id IS NOT NULL \
         AND {alias}.batch_id NOT IN (SELECT batch_id FROM batches WHERE state = 'ready')"
    )
}

/// A collection bound as one JSON array parameter (read back with `json_each`).
fn json_array<T: serde::Serialize + ?Sized>(values: &T) -> StoreResult<String> {
    serde_json::to_string(values).map_err(|e| StoreError::Corrupt(format!("json parameter: {e}")))
}
