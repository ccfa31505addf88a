//! The values the store takes and gives: deliveries, records, items, audit events, batches, push
//! groups, feedback, retention reports. Plain data; [`super::Store`] says what is done with them.

use super::Month;
use super::codec::PackedBody;
use std::sync::Arc;

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
    /// receipt ([`super::DeliveryTx::erase_client`]).
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
    /// Canonical JSON (empty once packed).
    pub body: String,
    /// The body packed by the store's [`BodyPacker`], when the store packs bodies.
    pub packed: Option<PackedBody>,
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
    /// The item as JSON text, exactly as the recipient will receive it (empty once packed).
    pub body: String,
    /// The body packed by the store's [`BodyPacker`], when the store packs bodies.
    pub packed: Option<PackedBody>,
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
    /// The body packed by the store's [`BodyPacker`], when the store packs bodies: a delivery's
    /// events are packed on its pipeline's thread, before its write transaction begins. The
    /// chain still hashes `body`.
    pub packed: Option<PackedBody>,
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
    /// `hex(SHA-256(prev_hash ‖ body))`, see [`super::chain::link_hash`].
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

/// What [`super::Store::purge`] removes: everything older than these limits (`None`: kept forever).
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

/// What [`super::Store::purge`] removed (or, in a dry run, would remove). Counts and partition names
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

/// What [`super::Store::maintain_partitions`] did.
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

/// What [`super::DeliveryTx::commit`] did.
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
    /// Items one call of [`super::Store::seal`] seals at most, rounded up to whole batches
    /// (normally [`SEAL_ITEMS_PER_CALL`]).
    pub call_items: i64,
}

/// Items one call of [`super::Store::seal`] seals at most (rounded up to whole batches), so that
/// sealing a large backlog is many short transactions, not one that holds the write lock for
/// minutes.
pub const SEAL_ITEMS_PER_CALL: i64 = 100_000;

impl SealRule {
    /// Batches one call of [`super::Store::seal`] seals at most: a call that sealed this many
    /// may have left more to seal.
    pub fn batches_per_call(&self) -> i64 {
        (self.call_items / self.max_items.max(1)).max(1)
    }
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
    /// What the last failed attempt met: status or transport error, with up to 500 bytes of
    /// the receiver's answer as text (`HTTP 400: …`; logged without the answer).
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

/// The outcome of one attempt on a push group, to record with [`super::Store::push_results`].
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

/// What [`super::Store::ack_batch`] did.
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

// --- the administrator's console (admin-console.md) -------------------------------------------

/// The `owner` a paused push lane holds (with a lease that never runs out): no process claims
/// it until it is resumed. Process ids are UUIDs, so it is never a process's id.
pub const PAUSED_LANE_OWNER: &str = "(paused)";

/// Filters of the administrator's delivery list; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// Vendor.
    pub vendor: Option<String>,
    /// Format (mapping id).
    pub format: Option<String>,
    /// Status `E1`–`E4`.
    pub status: Option<String>,
    /// `full` or `partial`.
    pub mode: Option<String>,
    /// Delivery id.
    pub id: Option<String>,
    /// Received at or after (unix ms).
    pub since: Option<i64>,
    /// Received before (unix ms).
    pub until: Option<i64>,
}

/// A delivery of any vendor, as the administrator sees it.
#[derive(Debug, Clone)]
pub struct DeliverySummary {
    /// Delivery id.
    pub id: String,
    /// Vendor.
    pub vendor: String,
    /// Format (mapping id).
    pub format: String,
    /// `full` or `partial`.
    pub mode: String,
    /// Status `E1`–`E4`.
    pub status: String,
    /// A test delivery.
    pub test: bool,
    /// Unix milliseconds.
    pub received_at: i64,
    /// Receipt JSON.
    pub receipt: String,
}

/// A stored canonical record of one reporting period.
#[derive(Clone)]
pub struct StoredRecord {
    /// Reporting period.
    pub reporting_period: String,
    /// The vendor's client id.
    pub client_id: String,
    /// Canonical JSON.
    pub body: String,
    /// Last change (unix ms).
    pub updated_at: i64,
}

impl std::fmt::Debug for StoredRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredRecord")
            .field("reporting_period", &self.reporting_period)
            .finish_non_exhaustive()
    }
}

/// An output item about a record, as a recipient received (or will receive) it.
#[derive(Clone)]
pub struct RecordItem {
    /// Position in the item sequence.
    pub seq: i64,
    /// Recipient.
    pub recipient: String,
    /// `record`, `cancellation`, `revocation` or `erasure`.
    pub kind: String,
    /// Reporting period.
    pub reporting_period: String,
    /// The recipient's pseudonym of the record id.
    pub record_ref: String,
    /// The item JSON as the recipient receives it.
    pub body: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// The batch or push group it is in (`None` while open).
    pub batch_id: Option<String>,
}

impl std::fmt::Debug for RecordItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordItem")
            .field("seq", &self.seq)
            .field("recipient", &self.recipient)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}
