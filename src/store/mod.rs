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

mod month;
mod postgres;
mod sqlite;

pub use month::Month;
pub use postgres::{OPEN_COUNT_SQL as POSTGRES_OPEN_COUNT_SQL, PostgresStore};
pub use sqlite::SqliteStore;

use async_trait::async_trait;
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

/// The delivery row, written at commit.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// Weiche's delivery id (UUID text).
    pub id: String,
    /// Sending vendor.
    pub vendor: String,
    /// Idempotency key (payload message id or `Idempotency-Key` header). `None` for deliveries
    /// that are not registered for idempotency (e.g. rejected whole).
    pub idempotency_key: Option<String>,
    /// Lowercase hex SHA-256 of the body bytes.
    pub content_hash: String,
    /// Mapping id.
    pub format: String,
    /// `full` or `partial`.
    pub mode: String,
    /// Receipt status `E1`…`E4`.
    pub status: String,
    /// Test delivery flag.
    pub test: bool,
    /// Unix milliseconds.
    pub received_at: i64,
    /// The receipt as JSON text.
    pub receipt: String,
    /// The client of each record the receipt has an entry about (error, warning or note), by
    /// its keyed subject pseudonym, so that an erasure finds the entries without reading any
    /// receipt ([`DeliveryTx::erase_client`]).
    pub subjects: Vec<ReceiptSubject>,
}

/// The client of one record of a receipt: the record's 1-based position in the delivery and the
/// client's subject pseudonym ([`crate::audit::AuditKey::subject`]: keyed, never the client id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptSubject {
    /// The `record` of the receipt's entries about it.
    pub record: i64,
    /// `AuditKey::subject(vendor, client_id)`.
    pub subject: String,
}

/// What an erasure found of one client and removed, made unreadable or scrubbed: counts only.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
pub struct Erased {
    /// Accepted records (canonical records) deleted.
    pub records: u64,
    /// Output items of those records (`record` items): deleted when not yet sealed, blanked to
    /// `{"type","record_ref","erased":true}` when sealed into a batch.
    pub items: u64,
    /// Lifecycle items of those records (`cancellation`, `revocation`, earlier `erasure`):
    /// deleted or blanked like `items`.
    pub lifecycle_items: u64,
    /// Receipts with entries about the client (errors of its rejected records, warnings and
    /// notes) that were scrubbed.
    pub receipts: u64,
    /// Those entries: their messages are replaced by [`ERASED_MESSAGE`].
    pub receipt_entries: u64,
    /// Recorded consent withdrawals of the client deleted.
    pub withdrawals: u64,
    /// Recipients' feedback on the client's records deleted.
    pub feedback: u64,
}

impl Erased {
    /// Nothing of the client was found.
    pub fn is_empty(&self) -> bool {
        *self == Erased::default()
    }
}

/// The message of a receipt entry after its client was erased.
pub const ERASED_MESSAGE: &str = "erased: the client's data was erased (GDPR Art. 17)";

/// Replaces the message of every entry (`errors`, `warnings`, `notes`) about one of `records`
/// in a stored receipt by [`ERASED_MESSAGE`]. Returns the new receipt text (keys in their order)
/// and how many entries changed; `None` when none did.
fn scrub_receipt(receipt: &str, records: &[i64]) -> StoreResult<Option<(String, u64)>> {
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

/// A canonical record to store (insert, or replace the earlier version with the same vendor,
/// record id and reporting period).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct NewRecord {
    /// Vendor.
    pub vendor: String,
    /// The vendor's record id.
    pub record_id: String,
    /// `YYYY-MM`.
    pub reporting_period: String,
    /// Program code.
    pub program: String,
    /// Vendor-scoped client id (personal data; used for erasure and disclosure look-ups).
    pub client_id: String,
    /// The delivery that wrote this version.
    pub delivery_id: String,
    /// Canonical JSON.
    pub body: String,
}

impl std::fmt::Debug for NewRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewRecord")
            .field("vendor", &self.vendor)
            .field("record_id", &self.record_id)
            .field("reporting_period", &self.reporting_period)
            .finish_non_exhaustive()
    }
}

/// Kind of an output item (consent-and-pseudonyms.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ItemKind {
    /// New or replaced version of a record.
    Record,
    /// Dropped from a later full delivery, or cancelled by the vendor.
    Cancellation,
    /// The consent it was sent under was withdrawn.
    Revocation,
    /// An administrator erased the client.
    Erasure,
}

impl ItemKind {
    /// Spelling in items and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Record => "record",
            ItemKind::Cancellation => "cancellation",
            ItemKind::Revocation => "revocation",
            ItemKind::Erasure => "erasure",
        }
    }

    /// Parses the database spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "record" => ItemKind::Record,
            "cancellation" => ItemKind::Cancellation,
            "revocation" => ItemKind::Revocation,
            "erasure" => ItemKind::Erasure,
            _ => return None,
        })
    }
}

/// One output item for one recipient (the recipient's view of a record, with its envelope).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct NewItem {
    /// Recipient id.
    pub recipient: String,
    /// Item kind.
    pub kind: ItemKind,
    /// Vendor of the record it is about.
    pub vendor: String,
    /// The vendor's record id it is about.
    pub record_id: String,
    /// Reporting period of the record.
    pub reporting_period: String,
    /// The recipient's pseudonym of the record id.
    pub record_ref: String,
    /// The item as JSON text, exactly as the recipient will receive it.
    pub body: String,
    /// The consent id the item was sent under (`None` under a statute).
    pub consent_id: Option<String>,
}

impl std::fmt::Debug for NewItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewItem")
            .field("recipient", &self.recipient)
            .field("kind", &self.kind)
            .field("record_ref", &self.record_ref)
            .finish_non_exhaustive()
    }
}

/// A recipient holding the current version of a record: its latest item for the record is a
/// `record` item (not a cancellation, revocation or erasure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Recipient id.
    pub recipient: String,
    /// Vendor.
    pub vendor: String,
    /// The vendor's record id.
    pub record_id: String,
    /// Reporting period.
    pub reporting_period: String,
    /// The recipient's pseudonym of the record id (from that latest item).
    pub record_ref: String,
    /// The consent the latest item was sent under.
    pub consent_id: Option<String>,
}

/// An audit event to append to the hash chain.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NewAuditEvent {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// Event kind (`routing`, `cancellation`, `revocation`, `erasure`, `withdrawal`, …).
    pub kind: String,
    /// Keyed pseudonym of the data subject (vendor + client id), for disclosure reports.
    pub subject: Option<String>,
    /// Canonical JSON of the event (pseudonymous only: ids, refs, actions).
    pub body: String,
    /// The field set the body refers to by its SHA-256 (`fields_sha256`), stored with the event
    /// unless already stored.
    pub field_set: Option<Arc<FieldSet>>,
}

/// The delivered fields of a routing decision with their actions (`[{"path","action"}]`),
/// stored once in `audit_field_sets` and referred to by the audit events by SHA-256: a
/// recipient's list is the same for every record under one policy and consent scope, and
/// repeating it in each event made it most of the audit trail's bytes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldSet {
    /// `hex(SHA-256(fields))`.
    pub sha256: String,
    /// The JSON array of `{"path","action"}`.
    pub fields: String,
}

impl FieldSet {
    /// A field set of a JSON array text, with its hash.
    pub fn new(fields: String) -> FieldSet {
        FieldSet {
            sha256: Self::hash(&fields),
            fields,
        }
    }

    /// Whether `sha256` is the hash of `fields` (a stored set was not altered).
    pub fn is_intact(&self) -> bool {
        Self::hash(&self.fields) == self.sha256
    }

    fn hash(fields: &str) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(fields.as_bytes()))
    }
}

/// A stored audit event with its chain link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Position in the chain (1, 2, …).
    pub seq: i64,
    /// Unix milliseconds.
    pub at_ms: i64,
    /// Event kind.
    pub kind: String,
    /// Subject pseudonym.
    pub subject: Option<String>,
    /// Canonical JSON of the event.
    pub body: String,
    /// Hash of the previous event (64 zeros for the first).
    pub prev_hash: String,
    /// `hex(SHA-256(prev_hash ‖ body))`, see [`crate::audit::link_hash`].
    pub hash: String,
}

/// A recorded consent withdrawal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withdrawal {
    /// Vendor-scoped client id.
    pub client_id: String,
    /// The vendor's consent id.
    pub consent_id: String,
    /// `YYYY-MM-DD`: from this day on the consent no longer holds.
    pub withdrawn_on: String,
}

/// The link to the purged part of the audit chain: the last purged event's `seq` and stored
/// hash. The first kept event must be `seq + 1` with `prev_hash = hash`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct AuditAnchor {
    /// `seq` of the last purged event.
    pub seq: i64,
    /// Its stored hash.
    pub hash: String,
}

/// What [`Store::purge`] removes: everything older than these limits (`None`: kept forever).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cutoffs {
    /// Records of reporting periods before this month, with what recipients hold of them
    /// (`holdings`).
    pub records_before: Option<Month>,
    /// Output items created before this instant (unix ms), once delivered (sealed into a batch the
    /// recipient acknowledged), and the batches they were in. PostgreSQL drops a month of items
    /// at a time: once the month ended before this instant and all its items are delivered.
    pub outputs_before_ms: Option<i64>,
    /// Audit events written before this instant (unix ms), from the start of the chain.
    pub audit_before_ms: Option<i64>,
    /// Delivery receipts received before this instant (unix ms).
    pub receipts_before_ms: Option<i64>,
    /// Count what would go, change nothing.
    pub dry_run: bool,
}

/// What [`Store::purge`] removed (or, in a dry run, would remove). Counts and partition names
/// only: nothing in it is personal data.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PurgeReport {
    /// A dry run: nothing was changed.
    pub dry_run: bool,
    /// Another process was purging at the same time; this call did nothing.
    pub skipped: bool,
    /// Records.
    pub records: u64,
    /// Rows of `holdings` (what recipients held of purged items) purged with their records.
    pub holdings: u64,
    /// Output items.
    pub items: u64,
    /// Batches.
    pub batches: u64,
    /// Audit events.
    pub audit_events: u64,
    /// Delivery receipts.
    pub receipts: u64,
    /// PostgreSQL partitions dropped (in a dry run: that would be dropped).
    pub partitions_dropped: Vec<String>,
    /// Output items past their retention that were kept because they are not delivered yet (on
    /// PostgreSQL: all items of the months that hold such an item), or that lie outside any
    /// monthly partition.
    pub overdue_items: u64,
    /// Records past their retention kept because they lie outside any monthly partition
    /// (PostgreSQL, when a partition could not be made).
    pub overdue_records: u64,
    /// The audit chain's anchor after this purge, when audit events were purged (note it
    /// outside the database, like `last_hash`).
    pub audit_anchor: Option<AuditAnchor>,
    /// Remarks for the operator: partitions kept and why, lock time-outs, a broken audit chain.
    pub notes: Vec<String>,
}

/// What [`Store::maintain_partitions`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PartitionReport {
    /// Another process was maintaining the partitions; this call did nothing.
    pub skipped: bool,
    /// Partitions created.
    pub created: Vec<String>,
    /// Rows moved out of a DEFAULT partition into a new monthly one.
    pub moved_rows: u64,
    /// Remarks for the operator (partitions deferred by a lock time-out, rows that fit no month).
    pub notes: Vec<String>,
}

/// What [`DeliveryTx::commit`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Everything is durably stored.
    Committed,
    /// A delivery with the same vendor and idempotency key exists already; nothing of this one was
    /// stored. Carries the first delivery's content hash and receipt.
    Duplicate {
        /// Content hash of the first delivery.
        content_hash: String,
        /// Receipt JSON of the first delivery.
        receipt: String,
    },
}

/// A stored delivery receipt, as listed for its vendor.
#[derive(Debug, Clone)]
pub struct StoredDelivery {
    /// Delivery id.
    pub id: String,
    /// Unix milliseconds.
    pub received_at: i64,
    /// Receipt JSON.
    pub receipt: String,
}

/// State of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchState {
    /// Sealed, not yet acknowledged.
    Ready,
    /// Acknowledged by the recipient.
    Acknowledged,
}

impl BatchState {
    /// Spelling in the API and database.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchState::Ready => "ready",
            BatchState::Acknowledged => "acknowledged",
        }
    }

    /// Parses the API / database spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ready" => Some(BatchState::Ready),
            "acknowledged" => Some(BatchState::Acknowledged),
            _ => None,
        }
    }
}

/// A sealed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchInfo {
    /// Batch id (UUID text).
    pub batch_id: String,
    /// Recipient it belongs to.
    pub recipient: String,
    /// Unix milliseconds of sealing.
    pub created_at: i64,
    /// Number of items.
    pub items: i64,
    /// Sorted distinct reporting periods of its items.
    pub periods: Vec<String>,
    /// State.
    pub state: BatchState,
}

/// One item of a batch, in order.
#[derive(Debug, Clone)]
pub struct BatchItem {
    /// Position in the recipient's item sequence (increasing).
    pub seq: i64,
    /// Item JSON.
    pub body: String,
}

/// Consecutive items of a batch, their JSON joined by a separator (what a JSON or NDJSON
/// fetch sends as is).
#[derive(Debug, Clone)]
pub struct JoinedItems {
    /// How many items.
    pub count: i64,
    /// `seq` of the last one.
    pub last_seq: i64,
    /// The items' JSON, in order, with the separator between them.
    pub text: String,
}

/// Rules for sealing a recipient's open items into a batch.
#[derive(Debug, Clone, Copy)]
pub struct SealRule {
    /// Seal as soon as this many items are open (a batch never holds more).
    pub max_items: i64,
    /// Seal whatever is open once the oldest open item is this old (milliseconds).
    pub max_age_ms: i64,
    /// The recipient is a push recipient: every sealed batch also becomes a pending push group
    /// (due at once).
    pub push: bool,
}

/// State of a push group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushState {
    /// Waiting to be sent (or to be retried).
    Pending,
    /// The recipient answered `2xx`.
    Delivered,
    /// A dead letter: refused with a `4xx`, or `max_attempts` reached.
    Dead,
    /// A dead letter an administrator discarded.
    Discarded,
}

impl PushState {
    /// Spelling in the API and database.
    pub fn as_str(self) -> &'static str {
        match self {
            PushState::Pending => "pending",
            PushState::Delivered => "delivered",
            PushState::Dead => "dead",
            PushState::Discarded => "discarded",
        }
    }

    /// Parses the database spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => PushState::Pending,
            "delivered" => PushState::Delivered,
            "dead" => PushState::Dead,
            "discarded" => PushState::Discarded,
            _ => return None,
        })
    }
}

/// A sealed group of a push recipient's items (a batch), with its push state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushGroup {
    /// The batch id; also the `Idempotency-Key` of every attempt.
    pub batch_id: String,
    /// Recipient.
    pub recipient: String,
    /// Position among the recipient's batches.
    pub seal_no: i64,
    /// Number of items.
    pub items: i64,
    /// State.
    pub state: PushState,
    /// Attempts made so far.
    pub attempts: i64,
    /// When the next attempt is due (unix ms).
    pub next_at: i64,
    /// What the last failed attempt met (status or transport error; never a response body).
    pub last_error: Option<String>,
    /// Last change (unix ms).
    pub updated_at: i64,
}

/// What one push attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// `2xx`: delivered.
    Delivered,
    /// Retry at `next_at` (unix ms).
    Retry {
        /// When the next attempt is due.
        next_at: i64,
        /// What the attempt met.
        error: String,
    },
    /// A dead letter now.
    Dead {
        /// What the attempt met.
        error: String,
    },
}

/// The outcome of one attempt on a push group, to record with [`Store::push_results`].
#[derive(Debug, Clone)]
pub struct PushResult {
    /// The group (its batch id).
    pub batch_id: String,
    /// What the attempt came to.
    pub outcome: PushOutcome,
    /// When the answer arrived (unix ms): `updated_at`, and `next_at` unless a retry.
    pub at_ms: i64,
    /// Audit events to append with it (a dead letter's).
    pub audit: Vec<NewAuditEvent>,
}

/// A finding a recipient sent with a batch acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    /// The recipient's reference of the record (an item's `record_ref` in that batch).
    #[schema(min_length = 1, max_length = 256)]
    pub record_ref: String,
    /// The recipient's finding code.
    #[schema(min_length = 1, max_length = 64)]
    pub code: String,
    /// The recipient's message.
    #[serde(default)]
    #[schema(max_length = 2000)]
    pub message: String,
}

/// A finding translated back to the vendor's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackRow {
    /// Position in the feedback (increasing; the cursor).
    pub seq: i64,
    /// The vendor's record id.
    pub record_id: String,
    /// Reporting period.
    pub reporting_period: String,
    /// Recipient that sent it.
    pub recipient: String,
    /// Code.
    pub code: String,
    /// Message.
    pub message: String,
    /// Unix ms of the acknowledgement.
    pub received_at: i64,
}

/// What [`Store::ack_batch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckOutcome {
    /// No such batch of this recipient.
    NotFound,
    /// A finding's `record_ref` names no item of the batch (index into the findings); nothing
    /// was changed.
    UnknownRef(usize),
    /// Acknowledged now, or earlier (then nothing changed).
    Acknowledged(BatchInfo),
}

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
    /// `max_items` are open; none if too few and too young). Safe to call from several processes.
    /// Returns the number of batches sealed.
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
    /// Audit events about one subject, in order.
    async fn audit_by_subject(&self, subject: &str) -> StoreResult<Vec<AuditRow>>;
    /// The stored field sets among `sha256s` (those absent are left out).
    async fn field_sets(&self, sha256s: &[String]) -> StoreResult<Vec<FieldSet>>;
    /// Makes deleted data unrecoverable from the database files where the backend allows
    /// (SQLite: `secure_delete` is on; this checkpoints and truncates the WAL).
    async fn compact(&self) -> StoreResult<()>;

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
}

// --- helpers shared by the backends ---------------------------------------------------------

/// A push group row: batch id, recipient, seal no, items, state, attempts, next at, last error,
/// updated at.
type PushGroupTuple = (
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
fn push_group(
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
fn should_seal(open: i64, oldest: Option<i64>, rule: SealRule, now_ms: i64) -> bool {
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
fn batches_to_seal(open: i64, oldest: Option<i64>, rule: SealRule, now_ms: i64) -> i64 {
    let full = open / rule.max_items.max(1);
    if full > 0 {
        full
    } else {
        i64::from(should_seal(open, oldest, rule, now_ms))
    }
}

/// Counts erased items by kind: `record` items, and lifecycle items (everything else).
fn count_items<'a>(erased: &mut Erased, kinds: impl Iterator<Item = &'a String>) {
    for kind in kinds {
        if kind == ItemKind::Record.as_str() {
            erased.items += 1;
        } else {
            erased.lifecycle_items += 1;
        }
    }
}

/// `(delivery id, record)` pairs grouped by delivery, in delivery-id order.
fn by_delivery(mut pairs: Vec<(String, i64)>) -> Vec<(String, Vec<i64>)> {
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
fn periods_json(mut periods: Vec<String>) -> String {
    periods.sort_unstable();
    periods.dedup();
    serde_json::to_string(&periods).unwrap_or_else(|_| "[]".to_string())
}

/// The distinct field sets the events refer to, in first-seen order.
fn field_sets_of(events: &[NewAuditEvent]) -> Vec<&FieldSet> {
    let mut out: Vec<&FieldSet> = Vec::new();
    for set in events.iter().filter_map(|e| e.field_set.as_deref()) {
        if !out.iter().any(|s| s.sha256 == set.sha256) {
            out.push(set);
        }
    }
    out
}

/// The state, next due time and error an outcome writes.
fn outcome_columns(outcome: &PushOutcome, now_ms: i64) -> (PushState, i64, Option<&str>) {
    match outcome {
        PushOutcome::Delivered => (PushState::Delivered, now_ms, None),
        PushOutcome::Retry { next_at, error } => (PushState::Pending, *next_at, Some(error)),
        PushOutcome::Dead { error } => (PushState::Dead, now_ms, Some(error)),
    }
}

/// A feedback row: seq, record id, period, recipient, code, message, received at.
type FeedbackTuple = (i64, String, String, String, String, String, i64);

/// Columns of a feedback row, in [`FeedbackTuple`]'s order.
const FEEDBACK_COLUMNS: &str =
    "seq, record_id, reporting_period, recipient, code, message, received_at";

/// Decodes a feedback row.
fn feedback_row(
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
fn feedback_rows<'a>(
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
fn findings_json(findings: &[Finding]) -> String {
    serde_json::to_string(findings).unwrap_or_else(|_| "[]".to_string())
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
