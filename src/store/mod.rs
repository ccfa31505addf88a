//! Durable storage of deliveries, receipts, canonical records and per-recipient output items, and
//! the batches pull recipients fetch. One trait, [`Store`], with a SQLite implementation (the
//! embedded default: WAL, `synchronous=FULL`) and a PostgreSQL implementation, each with its own
//! migrations under `src/store/migrations/`. One contract test suite
//! (`conformance-tests/store_contract.rs`) runs against both.
//!
//! A delivery is written through a [`DeliveryTx`]: records and items arrive in chunks (multi-row
//! `INSERT`s, never one statement per row) inside one database transaction, and
//! [`DeliveryTx::commit`] adds the delivery row with its receipt and commits. Until then nothing
//! of the delivery is visible; a crash leaves no trace of it.
//!
//! Retention ([`Store::purge`], [`Store::maintain_partitions`]; docs/operations.md "Retention")
//! removes old records, delivered outputs, receipts and the oldest audit events. On PostgreSQL
//! `records`, `items` and `holdings` are partitioned by month and purging drops whole partitions.
//! What a recipient holds of a record survives the purge of its items in `holdings` (one row per
//! record and recipient: the last purged item's kind, ref and consent), so cancellations,
//! revocations, erasures and aggregates still find the holders of records whose items are gone.

pub mod chain;
mod codec;
mod month;
mod postgres;
mod shared;
mod sql;
mod sqlite;
pub mod sqlite_memory;
mod types;

pub use codec::{BodyPacker, PackedBody};
pub use month::Month;
pub use postgres::{OPEN_COUNT_SQL as POSTGRES_OPEN_COUNT_SQL, PostgresStore};
pub use sqlite::SqliteStore;
pub use types::*;

use async_trait::async_trait;
use shared::{
    FEEDBACK_COLUMNS, FeedbackTuple, PushGroupTuple, SEAL_CHUNK, batches_of_head, batches_to_seal,
    by_delivery, count_items, feedback_row, feedback_rows, field_sets_of, findings_json,
    head_batches, outcome_columns, periods_json, push_group_row, scrub_receipt, should_seal,
};
use std::sync::Arc;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or answered with a connection-level error (→ `U001`).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Any other database error.
    #[error("storage error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database URL is not one we support.
    #[error("unsupported database url '{0}': use sqlite://… or postgres://…")]
    UnsupportedUrl(String),
    /// Stored data could not be read back.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

/// Result alias.
pub type StoreResult<T> = Result<T, StoreError>;

/// One delivery being written: chunks of records and items, then commit or rollback.
#[async_trait]
pub trait DeliveryTx: Send {
    /// Adds records (insert or replace by vendor + record id + reporting period) and output items.
    async fn put(&mut self, records: &[NewRecord], items: &[NewItem]) -> StoreResult<()>;
    /// Writes the delivery row and commits everything, unless a delivery with the same vendor and
    /// idempotency key exists, in which case everything is rolled back and the first one's receipt
    /// is returned.
    async fn commit(self: Box<Self>, delivery: &NewDelivery) -> StoreResult<CommitOutcome>;
    /// Discards everything written through this transaction.
    async fn rollback(self: Box<Self>) -> StoreResult<()>;
    /// Commits without a delivery row (withdrawals, erasures).
    async fn commit_plain(self: Box<Self>) -> StoreResult<()>;
    /// The holders of the given records `(record_id, reporting_period)` of a vendor, as of
    /// everything written so far in this transaction.
    async fn holders(
        &mut self,
        vendor: &str,
        keys: &[(String, String)],
    ) -> StoreResult<Vec<Holder>>;
    /// Full-delivery cancellation: the vendor's active records in the `(program, period)` scopes
    /// that this delivery (`delivery_id`) did not write and whose record id is not in `keep` (ids
    /// present in the delivery but rejected) are marked cancelled. Returns their
    /// `(record_id, reporting_period)` keys.
    async fn cancel_missing(
        &mut self,
        delivery_id: &str,
        vendor: &str,
        scopes: &[(String, String)],
        keep: &[String],
    ) -> StoreResult<Vec<(String, String)>>;
    /// Appends events to the audit hash chain, in order (serialised across processes).
    async fn audit(&mut self, events: &[NewAuditEvent]) -> StoreResult<()>;
    /// Records a consent withdrawal (idempotent per vendor, client and consent: the earliest
    /// `withdrawn_on` is kept).
    async fn put_withdrawal(&mut self, vendor: &str, withdrawal: &Withdrawal) -> StoreResult<()>;
    /// Holders of a client's current records: all of them, or only those whose latest item was
    /// sent under `consent_id`.
    async fn client_holders(
        &mut self,
        vendor: &str,
        client_id: &str,
        consent_id: Option<&str>,
    ) -> StoreResult<Vec<Holder>>;
    /// Erasure of a client wherever its data is: deletes its records (and what recipients held
    /// of them, and their feedback), deletes their items not yet sealed into a batch and replaces
    /// the body of their sealed items by `{"type":…,"record_ref":…,"erased":true}`, scrubs the
    /// receipt entries about its records (found through `subject`, the client's subject
    /// pseudonym, in the receipts' [`ReceiptSubject`]s, which are deleted) and deletes its
    /// recorded withdrawals. Returns what it found; all zero for an unknown client or a repeat.
    async fn erase_client(
        &mut self,
        vendor: &str,
        client_id: &str,
        subject: &str,
    ) -> StoreResult<Erased>;
}

/// The storage interface every backend implements.
#[async_trait]
pub trait Store: Send + Sync {
    /// Backend name (`sqlite` or `postgres`), for logs and health.
    fn backend(&self) -> &'static str;
    /// Checks the database answers.
    async fn ping(&self) -> StoreResult<()>;
    /// Starts writing one delivery.
    async fn begin_delivery(&self) -> StoreResult<Box<dyn DeliveryTx>>;
    /// Starts writing one delivery when that needs no wait: `None` while another writer holds
    /// the store (on SQLite, the one writer; on PostgreSQL, every pooled connection). Ingest
    /// uses it to write a delivery's first records while its pipeline still runs, only when no
    /// one else wants the writer at that moment.
    async fn try_begin_delivery(&self) -> StoreResult<Option<Box<dyn DeliveryTx>>>;
    /// Whether a delivery may append its audit events while its pipeline still runs. SQLite:
    /// yes (the write lock the delivery holds serialises the chain anyway). PostgreSQL: no, the
    /// chain's lock is taken only for the appends just before the commit, so deliveries write
    /// their records side by side.
    fn appends_audit_early(&self) -> bool;
    /// The receipt of a delivery registered under this vendor and idempotency key.
    async fn delivery_by_key(
        &self,
        vendor: &str,
        key: &str,
    ) -> StoreResult<Option<(String, String)>>;
    /// One of the vendor's deliveries (`None` when absent or another vendor's).
    async fn delivery(&self, vendor: &str, id: &str) -> StoreResult<Option<StoredDelivery>>;
    /// The vendor's deliveries, newest first: received at or after `since` (unix ms), strictly
    /// after the position `after` = (received_at, id) of the previous page's last entry.
    async fn deliveries(
        &self,
        vendor: &str,
        since: Option<i64>,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> StoreResult<Vec<StoredDelivery>>;
    /// The current canonical JSON of a record.
    async fn record(
        &self,
        vendor: &str,
        record_id: &str,
        period: &str,
    ) -> StoreResult<Option<String>>;
    /// Seals the recipient's open items into batches per the rule (several if more than
    /// `max_items` are open; none if too few and too young), at most
    /// [`SealRule::batches_per_call`] in one transaction. Safe to call from several processes.
    /// Returns the number of batches sealed; when that is the cap, more may be due.
    async fn seal(&self, recipient: &str, rule: SealRule, now_ms: i64) -> StoreResult<u64>;
    /// The recipient's batches, oldest first, optionally only in one state.
    async fn batches(
        &self,
        recipient: &str,
        state: Option<BatchState>,
    ) -> StoreResult<Vec<BatchInfo>>;
    /// One of the recipient's batches (`None` when absent or another recipient's).
    async fn batch(&self, recipient: &str, batch_id: &str) -> StoreResult<Option<BatchInfo>>;
    /// Items of a batch with `seq` > `after_seq`, in order, at most `limit`.
    async fn batch_items(
        &self,
        batch_id: &str,
        after_seq: i64,
        limit: i64,
    ) -> StoreResult<Vec<BatchItem>>;
    /// Like [`Store::batch_items`], as one text with `separator` between the items, joined by
    /// the database (one row instead of one a item); `None` when no item follows `after_seq`.
    async fn batch_items_joined(
        &self,
        batch_id: &str,
        after_seq: i64,
        limit: i64,
        separator: &str,
    ) -> StoreResult<Option<JoinedItems>>;
    /// Marks the recipient's batch acknowledged (idempotent: a second ack changes nothing) and
    /// stores the findings of the first ack, each translated to the vendor's record through the
    /// batch's item with that `record_ref` (feedback, see [`Store::feedback`]).
    async fn ack_batch(
        &self,
        recipient: &str,
        batch_id: &str,
        findings: &[Finding],
        now_ms: i64,
    ) -> StoreResult<AckOutcome>;
    /// Number of items not yet sealed into a batch for the recipient.
    async fn open_items(&self, recipient: &str) -> StoreResult<i64>;
    /// The vendor's recorded consent withdrawals.
    async fn withdrawals(&self, vendor: &str) -> StoreResult<Vec<Withdrawal>>;
    /// Canonical JSON of the records of a period the recipient currently holds (active records
    /// whose latest item for the recipient is a `record` item), for aggregates.
    async fn current_records(&self, recipient: &str, period: &str) -> StoreResult<Vec<String>>;
    /// Audit events with `seq` > `after_seq`, in order, at most `limit`.
    async fn audit_events(&self, after_seq: i64, limit: i64) -> StoreResult<Vec<AuditRow>>;
    /// Audit events about one subject, in order: through `audit_subject_runs` up to the indexed
    /// event, and by a scan of the events after it.
    async fn audit_by_subject(&self, subject: &str) -> StoreResult<Vec<AuditRow>>;
    /// Indexes the subjects of the audit events appended since the last call (at most
    /// `max_events` of them, in one transaction), when at least `min_events` are waiting;
    /// returns how many events it indexed. Appending an event writes no index entry: an entry
    /// per record, on a random page of the index, cost each commit a page written per record;
    /// indexed in sorted batches, each page is written once per batch.
    async fn index_audit_subjects(&self, min_events: i64, max_events: i64) -> StoreResult<u64>;
    /// The stored field sets among `sha256s` (those absent are left out).
    async fn field_sets(&self, sha256s: &[String]) -> StoreResult<Vec<FieldSet>>;
    /// Makes deleted data unrecoverable from the database files where the backend allows
    /// (SQLite: `secure_delete` is on; this checkpoints and truncates the WAL).
    async fn compact(&self) -> StoreResult<()>;
    /// Packs record and item bodies from now on, once `min_bodies` plain item bodies are stored
    /// to train a dictionary from (or one is stored already); returns whether bodies are
    /// packed. SQLite's housekeeper and PostgreSQL's trainer task call it every second until
    /// it succeeds. See `store/codec.rs`.
    async fn pack_bodies(&self, min_bodies: i64) -> StoreResult<bool> {
        let _ = min_bodies;
        Ok(false)
    }
    /// What packs bodies for this store now (`None` while it stores text). A delivery's
    /// pipeline packs its records and items with it before they are staged, so the store's
    /// writer does not.
    fn body_packer(&self) -> Option<Arc<BodyPacker>> {
        None
    }

    // --- push delivery and feedback ------------------------------------------------------------

    /// Claims or renews the push lane of a recipient for `owner` until `now_ms + lease_ms`, when
    /// it is free, expired or already `owner`'s. Returns whether `owner` holds it now.
    async fn claim_lane(
        &self,
        recipient: &str,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
    ) -> StoreResult<bool>;
    /// Gives the lane up if `owner` holds it (on shutdown), so another process takes over at once.
    async fn release_lane(&self, recipient: &str, owner: &str) -> StoreResult<()>;
    /// The recipient's pending push groups in seal order (the head first), at most `limit`.
    async fn push_heads(&self, recipient: &str, limit: i64) -> StoreResult<Vec<PushGroup>>;
    /// The recipient's next push group: its pending group with the lowest `seal_no`.
    async fn push_head(&self, recipient: &str) -> StoreResult<Option<PushGroup>> {
        Ok(self.push_heads(recipient, 1).await?.into_iter().next())
    }
    /// Records the outcomes of attempts on pending groups of `recipient`, in order and in one
    /// transaction, counting each attempt and appending each result's audit events — if
    /// `owner` still holds the recipient's lane (fencing: on PostgreSQL the lane row is locked
    /// for the transaction, so no other process claims it meanwhile). Returns how many were
    /// recorded: `0` (and nothing changed) when the lane was lost; a group that is no longer
    /// pending is skipped.
    async fn push_results(
        &self,
        recipient: &str,
        owner: &str,
        results: &[PushResult],
    ) -> StoreResult<usize>;
    /// [`Store::push_results`] of one attempt: whether it was recorded.
    async fn push_result(
        &self,
        batch_id: &str,
        owner: &str,
        outcome: &PushOutcome,
        now_ms: i64,
        audit: &[NewAuditEvent],
    ) -> StoreResult<bool> {
        let Some(group) = self.push_group(batch_id).await? else {
            return Ok(false);
        };
        let result = PushResult {
            batch_id: batch_id.to_string(),
            outcome: outcome.clone(),
            at_ms: now_ms,
            audit: audit.to_vec(),
        };
        Ok(self
            .push_results(&group.recipient, owner, &[result])
            .await?
            == 1)
    }
    /// Push groups in a state (dead letters: [`PushState::Dead`]), oldest first, optionally of
    /// one recipient.
    async fn push_groups(
        &self,
        state: PushState,
        recipient: Option<&str>,
    ) -> StoreResult<Vec<PushGroup>>;
    /// One push group.
    async fn push_group(&self, batch_id: &str) -> StoreResult<Option<PushGroup>>;
    /// Moves a dead letter to `to` (`Pending`: replay, due at once with the attempts reset;
    /// `Discarded`), appending `audit` in the same transaction. `None` when there is no such
    /// dead letter (absent, or not dead).
    async fn settle_dead_letter(
        &self,
        batch_id: &str,
        to: PushState,
        now_ms: i64,
        audit: &[NewAuditEvent],
    ) -> StoreResult<Option<PushGroup>>;
    /// Items of a push recipient not yet delivered: open ones and those in pending groups.
    async fn push_backlog(&self, recipient: &str) -> StoreResult<i64>;
    /// The vendor's feedback with `seq` > `after_seq`, oldest first, at most `limit`.
    async fn feedback(
        &self,
        vendor: &str,
        after_seq: i64,
        limit: i64,
    ) -> StoreResult<Vec<FeedbackRow>>;
    /// Keeps the monthly time partitions in shape (PostgreSQL; nothing to do on SQLite): creates
    /// the partitions of `records` and `holdings` from 12 months before to 2 months after the
    /// month of `now_ms` (not before `cutoffs.records_before`) and of `items` for this month and
    /// the next 2, and moves rows that landed in a DEFAULT partition into a new monthly one.
    /// DDL waits at most a few seconds for locks; what it cannot do now is reported and done by a
    /// later call. Safe to call from several processes (one works, the others skip).
    async fn maintain_partitions(
        &self,
        now_ms: i64,
        cutoffs: &Cutoffs,
    ) -> StoreResult<PartitionReport>;
    /// Purges what is older than the cut-offs (see [`Cutoffs`]); on PostgreSQL records, items and
    /// holdings by dropping monthly partitions. Before an output item goes, what its recipient
    /// holds of the record is kept in `holdings`. Audit events go from the start of the chain and
    /// only as far as the chain verifies; the last one purged becomes the [`AuditAnchor`]. Safe
    /// to call from several processes (one works, the others skip).
    async fn purge(&self, cutoffs: &Cutoffs) -> StoreResult<PurgeReport>;
    /// The anchor of the audit chain (`None` while no event was ever purged).
    async fn audit_anchor(&self) -> StoreResult<Option<AuditAnchor>>;

    // --- the administrator's console ----------------------------------------------------------

    /// Deliveries of all vendors, newest first, matching `filter`, strictly after the position
    /// `after` = (received_at, id) of the previous page's last entry, at most `limit`.
    async fn admin_deliveries(
        &self,
        filter: &DeliveryFilter,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> StoreResult<Vec<DeliverySummary>>;
    /// The stored canonical records of a vendor's record id, one per reporting period, newest
    /// period first.
    async fn records_by_id(&self, vendor: &str, record_id: &str) -> StoreResult<Vec<StoredRecord>>;
    /// The output items about a vendor's record id (all recipients, all periods), in order.
    async fn record_items(&self, vendor: &str, record_id: &str) -> StoreResult<Vec<RecordItem>>;
    /// Pauses (`true`) or resumes a push lane: a paused lane is held by
    /// [`PAUSED_LANE_OWNER`] with a lease that never runs out, so no process claims it (and a
    /// process sending on it loses it at its next renewal or result).
    async fn set_lane_paused(&self, recipient: &str, paused: bool) -> StoreResult<()>;
    /// Whether a push lane is paused.
    async fn lane_paused(&self, recipient: &str) -> StoreResult<bool>;
}

/// Opens the store a URL names (`sqlite://path` or `postgres://…`), creating the SQLite file and
/// its directory when missing, and runs the backend's migrations.
pub async fn connect(url: &str) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(PostgresStore::connect(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_string()))
    }
}
