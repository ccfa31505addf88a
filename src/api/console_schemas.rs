//! OpenAPI schemas of the console's endpoints (`browse` and `mapping_editor`): what their JSON
//! answers hold. Documentation only; the handlers build the JSON.
#![allow(dead_code)]

use utoipa::ToSchema;

/// A delivery in the administrator's list.
#[derive(ToSchema)]
pub(super) struct AdminDeliverySummary {
    /// Delivery id.
    delivery_id: String,
    /// Vendor.
    vendor: String,
    /// Format (mapping id).
    format: String,
    /// `full` or `partial`.
    mode: String,
    /// `E1`–`E4`.
    status: String,
    /// A test delivery.
    test: bool,
    /// Receive time (RFC 3339, UTC).
    #[schema(format = DateTime)]
    received_at: String,
    /// Records received.
    received: u64,
    /// Records accepted.
    accepted: u64,
    /// Records rejected.
    rejected: u64,
    /// Number of error entries of the receipt.
    errors: u64,
    /// Number of warning entries of the receipt.
    warnings: u64,
    /// Version of the mapping used (`null` when none was used).
    #[schema(required = true)]
    mapping_version: Option<String>,
}

/// `GET /api/v1/admin/deliveries`.
#[derive(ToSchema)]
pub(super) struct AdminDeliveryList {
    /// One page, newest first.
    deliveries: Vec<AdminDeliverySummary>,
    /// Cursor of the next page; `null` on the last page.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// `GET /api/v1/admin/deliveries/{id}`: the list entry plus the receipt.
#[derive(ToSchema)]
pub(super) struct AdminDelivery {
    /// Delivery id.
    delivery_id: String,
    /// Vendor.
    vendor: String,
    /// Format (mapping id).
    format: String,
    /// `E1`–`E4`.
    status: String,
    /// Receive time (RFC 3339, UTC).
    #[schema(format = DateTime)]
    received_at: String,
    /// The receipt as the vendor got it.
    receipt: crate::ingest::receipt::Receipt,
}

/// One item a recipient received of a record, with the policy and actions behind it.
#[derive(ToSchema)]
pub(super) struct RecipientItem {
    /// Position in the item sequence.
    seq: i64,
    /// `record`, `cancellation`, `revocation` or `erasure`.
    kind: String,
    /// Reporting period.
    reporting_period: String,
    /// The recipient's pseudonym of the record id.
    record_ref: String,
    /// When the item arose (RFC 3339, UTC).
    created_at: String,
    /// Its batch or push group (`null` while open).
    #[schema(required = true)]
    batch_id: Option<String>,
    /// The item as the recipient receives it.
    #[schema(value_type = Object)]
    body: serde_json::Value,
    /// Version of the policy it was made under (from the audit trail).
    #[schema(required = true)]
    policy_version: Option<String>,
    /// `statute` or `consent`.
    #[schema(required = true)]
    legal_basis: Option<String>,
    /// The consent it was sent under.
    #[schema(required = true)]
    consent_id: Option<String>,
    /// Each delivered field with its action.
    fields: Vec<crate::audit::FieldAction>,
}

/// What one recipient received of a record.
#[derive(ToSchema)]
pub(super) struct RecipientView {
    /// Recipient id.
    recipient: String,
    /// Its items about the record, in order.
    items: Vec<RecipientItem>,
}

/// `GET /api/v1/admin/records/{vendor}/{record_id}`.
#[derive(ToSchema)]
pub(super) struct AdminRecord {
    /// Vendor.
    vendor: String,
    /// The vendor's record id.
    record_id: String,
    /// The stored canonical record per reporting period (`{reporting_period, updated_at,
    /// record}`), newest period first.
    #[schema(value_type = Vec<Object>)]
    records: serde_json::Value,
    /// Per recipient, what it received.
    recipients: Vec<RecipientView>,
    /// Recipients the record was not routed to (`{recipient, reporting_period, note}`).
    #[schema(value_type = Vec<Object>)]
    not_routed: serde_json::Value,
}

/// A recipient in the console.
#[derive(ToSchema)]
pub(super) struct AdminRecipient {
    /// Recipient id.
    id: String,
    /// One line from the policy.
    description: String,
    /// `pull` or `push`.
    kind: String,
    /// Purpose code.
    purpose: String,
    /// `statute` or `consent`.
    legal_basis: String,
    /// Citation of the statute.
    #[schema(required = true)]
    citation: Option<String>,
    /// SHA-256 of the policy as loaded.
    policy_version: String,
    /// The route filter (`programs`, `vendors`, `municipality_prefixes`).
    #[schema(value_type = Object)]
    route: serde_json::Value,
    /// Field or group → action (detail only).
    #[schema(value_type = Object, required = false)]
    fields: serde_json::Value,
    /// Pull recipients: `open_items`, `ready_batches`, `acknowledged_batches`,
    /// `oldest_ready_at`, `last_batch_at` (and `batches` in the detail).
    #[schema(value_type = Object, required = false)]
    pull: serde_json::Value,
    /// Push recipients: `paused`, `waiting_items`, `pending_groups`, `in_flight`,
    /// `next_attempt_at`, `last_error`, `oldest_waiting_at`, `dead_letters` (and `groups`,
    /// `dead` with each dead letter's `record_refs`, and the latest 50 `discarded`, in the
    /// detail).
    #[schema(value_type = Object, required = false)]
    push: serde_json::Value,
}

/// `GET /api/v1/admin/recipients`.
#[derive(ToSchema)]
pub(super) struct AdminRecipientList {
    /// The configured recipients.
    recipients: Vec<AdminRecipient>,
}

/// `POST /api/v1/admin/recipients/{id}/pause|resume`.
#[derive(ToSchema)]
pub(super) struct LaneState {
    /// Recipient id.
    recipient: String,
    /// Whether the lane is paused now.
    paused: bool,
}

/// `GET /api/v1/admin/stats`.
#[derive(ToSchema)]
pub(super) struct AdminStats {
    /// `24h` or `30d`.
    window: String,
    /// Start of the window (RFC 3339, UTC).
    since: String,
    /// Deliveries counted.
    deliveries: u64,
    /// More deliveries than counted were received in the window.
    truncated: bool,
    /// Deliveries per status.
    #[schema(value_type = Object)]
    by_status: serde_json::Value,
    /// Records `received`, `accepted`, `rejected`.
    #[schema(value_type = Object)]
    records: serde_json::Value,
    /// Per bucket (hour or day): `start` and the count of each status `E1`–`E4`.
    #[schema(value_type = Vec<Object>)]
    series: serde_json::Value,
    /// The grouping of `groups`.
    by: String,
    /// `{key, count}`, largest first.
    #[schema(value_type = Vec<Object>)]
    groups: serde_json::Value,
    /// The ten most frequent codes of errors and warnings, `{code, count}`.
    #[schema(value_type = Vec<Object>)]
    codes: serde_json::Value,
    /// Per recipient: `id`, `kind`, `waiting`, `oldest_waiting_at`, `last_batch_at`,
    /// `dead_letters`.
    #[schema(value_type = Vec<Object>)]
    recipients: serde_json::Value,
}

/// An audit event without client data.
#[derive(ToSchema)]
pub(super) struct AdminAuditEvent {
    /// Position in the chain.
    seq: i64,
    /// Time (RFC 3339, UTC).
    at: String,
    /// Kind.
    kind: String,
    /// Vendor (empty for administrators' actions not about a vendor).
    vendor: String,
    /// Recipient.
    #[schema(required = true)]
    recipient: Option<String>,
    /// Delivery or action id.
    #[schema(required = true)]
    delivery_id: Option<String>,
    /// Reporting period.
    #[schema(required = true)]
    reporting_period: Option<String>,
    /// `statute` or `consent`.
    #[schema(required = true)]
    legal_basis: Option<String>,
    /// Policy version.
    #[schema(required = true)]
    policy_version: Option<String>,
    /// Number of fields delivered (events written before field sets), else `null`.
    #[schema(required = true)]
    fields: Option<u64>,
    /// Remark (for administrators' actions: JSON naming the administrator).
    #[schema(required = true)]
    note: Option<String>,
}

/// `GET /api/v1/admin/audit/events`.
#[derive(ToSchema)]
pub(super) struct AdminAuditEvents {
    /// One page, in chain order.
    events: Vec<AdminAuditEvent>,
    /// Cursor of the next page; `null` at the end.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// `GET /api/v1/admin/mappings/{format}/source`.
#[derive(ToSchema)]
pub(super) struct MappingSource {
    /// The mapping id.
    format: String,
    /// Its file.
    file: String,
    /// Version in service (SHA-256 of the text).
    version: String,
    /// The text in service (`null` if it can no longer be found).
    #[schema(required = true)]
    text: Option<String>,
    /// Whether a mappings directory is configured (deployments possible).
    editable: bool,
    /// The file on disk fails to load (the version in service is an earlier one).
    file_fails_to_load: bool,
}

/// One problem of a mapping text.
#[derive(ToSchema)]
pub(super) struct MappingProblem {
    /// 1-based line (`0` when unknown).
    line: u64,
    /// 1-based column (`0` when unknown).
    column: u64,
    /// What is wrong.
    message: String,
}

/// `POST /api/v1/admin/mappings/{format}/check`.
#[derive(ToSchema)]
pub(super) struct MappingCheck {
    /// The mapping id.
    format: String,
    /// The text loads.
    ok: bool,
    /// Version the text would have.
    version: String,
    /// `json`, `xml` or `csv` when the text loads.
    #[schema(required = true)]
    syntax: Option<String>,
    /// Version in service (`null`: no mapping loaded for the format).
    #[schema(required = true)]
    in_service: Option<String>,
    /// The problems.
    problems: Vec<MappingProblem>,
}

/// A deployment done.
#[derive(ToSchema)]
pub(super) struct Deployment {
    /// The mapping id.
    format: String,
    /// The file written.
    file: String,
    /// The new version.
    version: String,
    /// The version it replaced.
    previous_version: String,
    /// Whether the reload took the new version into service.
    in_service: bool,
}

/// One entry of a mapping's history.
#[derive(ToSchema)]
pub(super) struct MappingVersion {
    /// Version.
    version: String,
    /// Time of the deployment (`null` for the version in service before the first one).
    #[schema(required = true)]
    at: Option<String>,
    /// The administrator who deployed it.
    #[schema(required = true)]
    admin: Option<String>,
    /// `deploy`, `rollback` or `in service before`.
    action: String,
}

/// `GET /api/v1/admin/mappings/{format}/versions`.
#[derive(ToSchema)]
pub(super) struct MappingVersions {
    /// The mapping id.
    format: String,
    /// The version in service.
    in_service: String,
    /// The history, newest first.
    versions: Vec<MappingVersion>,
}

/// `GET /api/v1/admin/me`.
#[derive(ToSchema)]
pub(super) struct Me {
    /// The administrator's id (from the configuration).
    id: String,
    /// Always `admin`.
    role: String,
}
