//! The audit trail: one event per routing decision (and per cancellation, revocation, erasure and
//! withdrawal) in a SHA-256 hash chain, `hash = SHA-256(previous_hash ‖ canonical JSON of the
//! event)`. Events are pseudonymous: record refs, ids of recipients and consents, policy versions
//! and field actions — never a value of a field.
//!
//! This module owns the events ([`Event`]), the verification of a store's chain ([`verify`]) and
//! the disclosure report ([`disclosure`]). The chain itself — linking, checking a run of rows,
//! how far a purge may cut — belongs to the store ([`crate::store::chain`], re-exported here).

/// The key that pseudonymises data subjects in the audit trail (so a disclosure report can find
/// a client's events without the trail holding the client id).
#[derive(Clone)]
pub struct AuditKey(secrecy::SecretSlice<u8>);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey([redacted])")
    }
}

impl AuditKey {
    /// A key from its secret bytes.
    pub fn new(secret: Vec<u8>) -> Self {
        AuditKey(secrecy::SecretSlice::from(secret))
    }

    /// The subject pseudonym of a client: `hex(HMAC-SHA256(key, "subject" ‖ 0x00 ‖ vendor/client_id))`.
    pub fn subject(&self, vendor: &str, client_id: &str) -> String {
        use hmac::{Hmac, Mac};
        use secrecy::ExposeSecret;
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.expose_secret())
            .expect("HMAC takes keys of any length");
        mac.update(b"subject\0");
        mac.update(vendor.as_bytes());
        mac.update(b"/");
        mac.update(client_id.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// One field of an output with the action applied to it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct FieldAction {
    /// Canonical path without indices.
    pub path: String,
    /// Action (`keep`, `pseudonymise`, `generalise:…`).
    pub action: String,
}

/// The canonical JSON body of an audit event. Key order is fixed by this struct; absent values
/// are omitted. Pseudonymous only. `S` is the text type: `String` when read, `&str` when the
/// router writes an event from borrowed values (the JSON is the same).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Event<S = String> {
    /// RFC 3339 time.
    pub at: S,
    /// `routing`, `not_routed`, `cancellation`, `revocation`, `erasure`, `withdrawal`.
    pub kind: S,
    /// Delivery (or action) id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<S>,
    /// Vendor.
    pub vendor: S,
    /// The recipient's pseudonym of the record id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_ref: Option<S>,
    /// Reporting period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting_period: Option<S>,
    /// Recipient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<S>,
    /// `statute` or `consent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legal_basis: Option<S>,
    /// Citation of the statute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub citation: Option<S>,
    /// Consent id used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent_id: Option<S>,
    /// SHA-256 of the policy as loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<S>,
    /// Each delivered field with its action (events written before field sets existed; new
    /// routing events refer to a field set instead, `fields_sha256`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldAction>,
    /// SHA-256 of the stored field set ([`crate::store::FieldSet`]) that lists each delivered
    /// field with its action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields_sha256: Option<S>,
    /// Why nothing was routed (`C001`) or other remarks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<S>,
}

impl<S: serde::Serialize> Event<S> {
    /// The event's canonical JSON. Written into room for a typical event (about 470 bytes),
    /// which `serde_json::to_string` would have grown twice to.
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(EVENT_JSON_ROOM);
        serde_json::to_writer(&mut out, self).expect("audit events serialise");
        String::from_utf8(out).expect("serde_json writes UTF-8")
    }
}

/// Bytes reserved for an event's JSON (the text is kept until the event is appended).
const EVENT_JSON_ROOM: usize = 512;

/// An audit event about a push group (`dead_letter`, `dead_letter_replay`,
/// `dead_letter_discard`): the group by id and counts, never an item. Serialises in field order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PushEvent {
    /// RFC 3339 time.
    pub at: String,
    /// `dead_letter`, `dead_letter_replay` or `dead_letter_discard`.
    pub kind: String,
    /// The group's batch id.
    pub batch_id: String,
    /// The push recipient.
    pub recipient: String,
    /// Items in the group.
    pub items: i64,
    /// Attempts made so far.
    pub attempts: i64,
    /// Why the group became a dead letter (the last answer or error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The administrator who replayed or discarded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

impl PushEvent {
    /// The event's canonical JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("audit events serialise")
    }
}

// ---------------------------------------------------------------------------------------------
// Read side: chain verification and the disclosure report.
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
use crate::store::AuditRow;
use crate::store::{AuditAnchor, Store, StoreError};
use sha2::Sha256;

pub use crate::store::chain::{
    BrokenLink, ChainState, GENESIS, PurgePrefix, Verification, check_chain, link_hash,
    purge_prefix,
};

/// Audit events the indexer indexes per pass at most (one short write transaction).
const INDEX_EVENTS_PER_PASS: i64 = 100_000;
/// The indexer runs a pass at once when this many events wait for their index entries, and
/// otherwise every [`INDEX_EVERY`] for whatever waits.
const INDEX_BATCH: i64 = 30_000;
/// See [`INDEX_BATCH`].
const INDEX_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Indexes the subjects of appended audit events in the background, in sorted batches
/// ([`Store::index_audit_subjects`]), until `stop` resolves. Reads of a subject's events are
/// complete without it (they scan the events not yet indexed); it keeps that scan short.
pub async fn run_indexer(
    store: std::sync::Arc<dyn Store>,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_full = std::time::Instant::now();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {
                let min = if last_full.elapsed() >= INDEX_EVERY {
                    last_full = std::time::Instant::now();
                    1
                } else {
                    INDEX_BATCH
                };
                if let Err(e) = store.index_audit_subjects(min, INDEX_EVENTS_PER_PASS).await {
                    tracing::warn!("indexing audit subjects failed: {e}");
                }
            }
        }
    }
}

/// How many events [`verify`] reads from the store per page.
pub const VERIFY_PAGE: i64 = 5_000;

/// Verifies the whole audit hash chain of a store — from the genesis, or from the anchor when
/// the oldest events were purged — reading it in pages of [`VERIFY_PAGE`] events, and reports
/// the first broken link. A broken chain is a result, not an error; errors are the store's.
pub async fn verify(store: &dyn Store) -> Result<Verification, StoreError> {
    verify_paged(store, VERIFY_PAGE).await
}

/// [`verify`] with a page size. A purge that moves the anchor while the chain is read makes the
/// start look broken; then the check runs again from the new anchor (a few times at most).
async fn verify_paged(store: &dyn Store, page: i64) -> Result<Verification, StoreError> {
    let mut attempts = 0;
    loop {
        let anchor = store.audit_anchor().await?;
        let v = verify_from(store, anchor.as_ref(), page).await?;
        attempts += 1;
        if v.intact || attempts >= 3 || store.audit_anchor().await? == anchor {
            return Ok(v);
        }
    }
}

/// Checks the chain from `anchor` (or the genesis) on.
async fn verify_from(
    store: &dyn Store,
    anchor: Option<&AuditAnchor>,
    page: i64,
) -> Result<Verification, StoreError> {
    let page = page.max(1);
    let mut state = anchor.map_or_else(ChainState::new, ChainState::after);
    loop {
        let after = state.last_seq();
        let rows = store.audit_events(after, page).await?;
        let n = rows.len();
        check_chain(&rows, &mut state);
        if (n as i64) < page {
            return Ok(state.verification());
        }
        if state.last_seq() <= after {
            return Err(StoreError::Corrupt(format!(
                "audit events after seq {after} did not advance (last seq {})",
                state.last_seq()
            )));
        }
    }
}

/// The disclosure report of one client (GDPR Art. 15: who got what, when, on which basis): the
/// client's audit events, found by its subject pseudonym ([`AuditKey::subject`]), in chain order.
/// Each entry is `{"at", "kind", "delivery_id", "recipient", "legal_basis", "citation",
/// "consent_id", "policy_version", "fields": [{"path","action"}], "reporting_period",
/// "record_ref", "note"}`, absent values as `null` (`fields` as `[]`). An event body that is not
/// an [`Event`] is [`StoreError::Corrupt`].
pub async fn disclosure(
    store: &dyn Store,
    key: &AuditKey,
    vendor: &str,
    client_id: &str,
) -> Result<Vec<serde_json::Value>, StoreError> {
    let subject = key.subject(vendor, client_id);
    let rows = store.audit_by_subject(&subject).await?;
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        let e: Event = serde_json::from_str(&row.body).map_err(|err| {
            StoreError::Corrupt(format!(
                "audit event {} is not a valid event: {err}",
                row.seq
            ))
        })?;
        events.push((row.seq, e));
    }
    let mut wanted: Vec<String> = events
        .iter()
        .filter_map(|(_, e)| e.fields_sha256.clone())
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let sets = field_sets(store, &wanted).await?;
    events
        .into_iter()
        .map(|(seq, mut e)| {
            if let Some(sha256) = &e.fields_sha256 {
                e.fields = sets.get(sha256).cloned().ok_or_else(|| {
                    StoreError::Corrupt(format!("audit event {seq}: field set {sha256} is missing"))
                })?;
            }
            Ok(disclosure_entry(e))
        })
        .collect()
}

/// The field sets with these hashes, each checked against its hash (an edited set is
/// [`StoreError::Corrupt`], as an edited event breaks the chain).
async fn field_sets(
    store: &dyn Store,
    sha256s: &[String],
) -> Result<std::collections::HashMap<String, Vec<FieldAction>>, StoreError> {
    let mut out = std::collections::HashMap::new();
    if sha256s.is_empty() {
        return Ok(out);
    }
    for set in store.field_sets(sha256s).await? {
        if !set.is_intact() {
            return Err(StoreError::Corrupt(format!(
                "field set {} does not match its SHA-256: it was altered",
                set.sha256
            )));
        }
        let fields: Vec<FieldAction> = serde_json::from_str(&set.fields).map_err(|err| {
            StoreError::Corrupt(format!("field set {} is not valid: {err}", set.sha256))
        })?;
        out.insert(set.sha256, fields);
    }
    Ok(out)
}

/// The field set of a list of delivered fields: `[{"path","action"}]` and its SHA-256.
pub fn field_set(fields: &[FieldAction]) -> crate::store::FieldSet {
    crate::store::FieldSet::new(serde_json::to_string(fields).expect("field actions serialise"))
}

/// One entry of a disclosure report from a stored event (its field set resolved).
fn disclosure_entry(e: Event) -> serde_json::Value {
    serde_json::json!({
        "at": e.at,
        "kind": e.kind,
        "delivery_id": e.delivery_id,
        "recipient": e.recipient,
        "legal_basis": e.legal_basis,
        "citation": e.citation,
        "consent_id": e.consent_id,
        "policy_version": e.policy_version,
        "fields": e.fields,
        "reporting_period": e.reporting_period,
        "record_ref": e.record_ref,
        "note": e.note,
    })
}

#[cfg(test)]
mod chain_tests {
    use super::*;

    /// An intact chain of `n` events.
    fn chain(n: i64) -> Vec<AuditRow> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let body =
                    format!(r#"{{"at":"2026-01-01T00:00:00.000Z","kind":"routing","n":{seq}}}"#);
                let hash = link_hash(&prev, &body);
                let row = AuditRow {
                    seq,
                    at_ms: 1_767_225_600_000 + seq,
                    kind: "routing".into(),
                    subject: Some(format!("S{}", seq % 3)),
                    body,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                row
            })
            .collect()
    }

    fn check(rows: &[AuditRow]) -> Verification {
        let mut state = ChainState::new();
        check_chain(rows, &mut state);
        state.verification()
    }

    fn broken_at(v: &Verification) -> (i64, String) {
        let b = v.first_broken.as_ref().expect("chain is broken");
        (b.seq, b.reason.clone())
    }

    #[test]
    fn intact_chain() {
        let rows = chain(7);
        let v = check(&rows);
        assert_eq!(
            v,
            Verification {
                events: 7,
                intact: true,
                first_broken: None,
                last_hash: rows[6].hash.clone(),
                anchor: None,
            }
        );
    }

    #[test]
    fn empty_chain_is_intact_at_genesis() {
        let v = check(&[]);
        assert!(v.intact);
        assert_eq!(v.events, 0);
        assert_eq!(v.last_hash, GENESIS);
    }

    #[test]
    fn edited_body_breaks_its_own_link() {
        let mut rows = chain(6);
        rows[2].body = rows[2].body.replace("routing", "not_routed");
        let v = check(&rows);
        assert!(!v.intact);
        let (seq, reason) = broken_at(&v);
        assert_eq!(seq, 3);
        assert!(reason.contains("hash does not match"), "{reason}");
        // Later events are still counted.
        assert_eq!(v.events, 6);
        assert_eq!(v.last_hash, rows[5].hash);
    }

    #[test]
    fn edited_body_with_recomputed_hash_breaks_the_next_link() {
        let mut rows = chain(6);
        rows[2].body = rows[2].body.replace("routing", "not_routed");
        rows[2].hash = link_hash(&rows[2].prev_hash, &rows[2].body);
        let (seq, reason) = broken_at(&check(&rows));
        assert_eq!(seq, 4);
        assert!(
            reason.contains("prev_hash does not match the hash of event 3"),
            "{reason}"
        );
    }

    #[test]
    fn edited_hash_breaks_its_own_link() {
        let mut rows = chain(5);
        rows[1].hash = "f".repeat(64);
        let (seq, reason) = broken_at(&check(&rows));
        assert_eq!(seq, 2);
        assert!(reason.contains("hash does not match"), "{reason}");
    }

    #[test]
    fn deleted_middle_row_is_a_gap() {
        let mut rows = chain(6);
        rows.remove(2);
        let v = check(&rows);
        let (seq, reason) = broken_at(&v);
        assert_eq!(seq, 4);
        assert!(
            reason.contains("expected event 3, found event 4"),
            "{reason}"
        );
        assert_eq!(v.events, 5);
    }

    #[test]
    fn deleted_row_with_renumbered_successors_breaks_the_link() {
        // Deleting event 3 and renumbering the rest hides the gap but not the link.
        let mut rows = chain(6);
        rows.remove(2);
        for (i, r) in rows.iter_mut().enumerate() {
            r.seq = i as i64 + 1;
        }
        let (seq, reason) = broken_at(&check(&rows));
        assert_eq!(seq, 3);
        assert!(
            reason.contains("prev_hash does not match the hash of event 2"),
            "{reason}"
        );
    }

    #[test]
    fn reordered_rows_break() {
        let mut rows = chain(5);
        rows.swap(1, 2);
        let (seq, reason) = broken_at(&check(&rows));
        assert_eq!(seq, 3);
        assert!(
            reason.contains("expected event 2, found event 3"),
            "{reason}"
        );

        // Swapped contents under the original numbering: the links do not fit.
        let mut rows = chain(5);
        rows.swap(1, 2);
        rows[1].seq = 2;
        rows[2].seq = 3;
        let (seq, reason) = broken_at(&check(&rows));
        assert_eq!(seq, 2);
        assert!(
            reason.contains("prev_hash does not match the hash of event 1"),
            "{reason}"
        );
    }

    #[test]
    fn first_event_must_be_seq_one_at_genesis() {
        let mut rows = chain(3);
        rows.remove(0);
        let (seq, reason) = broken_at(&check(&rows));
        assert_eq!(seq, 2);
        assert!(
            reason.contains("expected event 1, found event 2"),
            "{reason}"
        );

        let mut rows = chain(1);
        rows[0].prev_hash = "a".repeat(64);
        rows[0].hash = link_hash(&rows[0].prev_hash, &rows[0].body);
        let (seq, reason) = broken_at(&check(&rows));
        assert_eq!(seq, 1);
        assert!(reason.contains("genesis"), "{reason}");
    }

    #[test]
    fn only_the_first_break_is_reported() {
        let mut rows = chain(8);
        rows[6].hash = "0".repeat(64);
        rows[2].body.push(' ');
        assert_eq!(broken_at(&check(&rows)).0, 3);
    }

    #[test]
    fn pages_check_like_one_pass_including_links_across_pages() {
        let mut rows = chain(10);
        // Break the link between pages [1..=5] and [6..=10].
        rows[4].body.push(' ');
        rows[4].hash = link_hash(&rows[4].prev_hash, &rows[4].body);
        let whole = check(&rows);
        let mut state = ChainState::new();
        for page in rows.chunks(5) {
            check_chain(page.iter().cloned(), &mut state);
        }
        assert_eq!(state.verification(), whole);
        assert_eq!(broken_at(&whole).0, 6);
        assert_eq!(state.last_seq(), 10);
        assert!(!state.intact());
    }

    fn anchor_of(row: &AuditRow) -> AuditAnchor {
        AuditAnchor {
            seq: row.seq,
            hash: row.hash.clone(),
        }
    }

    #[test]
    fn a_purged_chain_checks_from_its_anchor() {
        let rows = chain(8);
        let anchor = anchor_of(&rows[2]);
        let mut state = ChainState::after(&anchor);
        check_chain(&rows[3..], &mut state);
        let v = state.verification();
        assert!(v.intact, "{v:?}");
        assert_eq!(v.events, 5);
        assert_eq!(v.anchor, Some(anchor.clone()));
        assert_eq!(
            serde_json::to_value(&v).unwrap()["anchor"],
            serde_json::json!({"seq": 3, "hash": rows[2].hash})
        );
        // Without the anchor the same rows do not verify.
        let mut state = ChainState::new();
        check_chain(&rows[3..], &mut state);
        assert!(!state.intact());
        // A kept event deleted right after the anchor, an edited first kept event, a wrong
        // anchor: all detected.
        let mut state = ChainState::after(&anchor);
        check_chain(&rows[4..], &mut state);
        assert_eq!(broken_at(&state.verification()).0, 5);
        let mut edited = rows[3..].to_vec();
        edited[0].body.push(' ');
        edited[0].hash = link_hash(&edited[0].prev_hash, &edited[0].body);
        let mut state = ChainState::after(&anchor);
        check_chain(&edited, &mut state);
        assert_eq!(broken_at(&state.verification()).0, 5);
        let mut state = ChainState::after(&AuditAnchor {
            seq: 3,
            hash: "e".repeat(64),
        });
        check_chain(&rows[3..], &mut state);
        let (seq, reason) = broken_at(&state.verification());
        assert_eq!(seq, 4);
        assert!(reason.contains("anchor"), "{reason}");
        // An empty kept chain ends at its anchor.
        let v = ChainState::after(&anchor).verification();
        assert!(v.intact);
        assert_eq!(v.last_hash, rows[2].hash);
    }

    #[test]
    fn purge_prefix_stops_at_the_cut_off_and_before_breaks() {
        let rows = chain(10);
        // Events 1–6 are older than the cut-off (at_ms = base + seq).
        let cut = rows[6].at_ms;
        let p = purge_prefix(None, &rows, cut);
        assert_eq!((p.events, p.stop, p.broken.is_none()), (6, true, true));
        assert_eq!(p.through, Some(anchor_of(&rows[5])));
        // From an anchor, on the rest.
        let p = purge_prefix(Some(&anchor_of(&rows[5])), &rows[6..], i64::MAX);
        assert_eq!((p.events, p.stop), (4, false));
        assert_eq!(p.through, Some(anchor_of(&rows[9])));
        // Nothing old: nothing goes.
        let p = purge_prefix(None, &rows, 0);
        assert_eq!((p.events, p.through, p.stop), (0, None, true));
        // A break at event 5: events 4 and 5 stay, so verify still sees it.
        let mut broken = rows.clone();
        broken[4].body.push(' ');
        let p = purge_prefix(None, &broken, i64::MAX);
        assert_eq!(p.events, 3);
        assert_eq!(p.through, Some(anchor_of(&rows[2])));
        assert!(p.stop);
        assert_eq!(p.broken.as_ref().map(|b| b.seq), Some(5));
        let mut state = ChainState::after(p.through.as_ref().unwrap());
        check_chain(&broken[3..], &mut state);
        assert_eq!(broken_at(&state.verification()).0, 5);
        // A gap after event 4: event 4 and the one after the gap stay.
        let mut gap = rows.clone();
        gap.remove(4);
        let p = purge_prefix(None, &gap, i64::MAX);
        assert_eq!(p.through, Some(anchor_of(&rows[2])));
        // A break at the very first kept event: nothing goes.
        let p = purge_prefix(Some(&anchor_of(&rows[1])), &rows[3..], i64::MAX);
        assert_eq!((p.events, p.through), (0, None));
    }

    #[test]
    fn verification_serialises() {
        let v = check(&chain(2));
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"events": 2, "intact": true, "first_broken": null, "last_hash": v.last_hash, "anchor": null})
        );
        let mut rows = chain(2);
        rows[1].hash = "1".repeat(64);
        let json = serde_json::to_value(check(&rows)).unwrap();
        assert_eq!(json["intact"], false);
        assert_eq!(json["first_broken"]["seq"], 2);
        assert!(json["first_broken"]["reason"].is_string());
    }

    /// A routing event of client `C` of vendor `acme`.
    fn routing_event(
        n: usize,
        fields: Vec<FieldAction>,
        set: Option<&crate::store::FieldSet>,
    ) -> Event {
        Event {
            at: format!("2026-02-01T10:00:0{n}.000Z"),
            kind: "routing".into(),
            delivery_id: Some(format!("d-{n}")),
            vendor: "acme".into(),
            record_ref: Some(format!("ref-{n}")),
            reporting_period: Some("2026-01".into()),
            recipient: Some("statistik".into()),
            legal_basis: Some("statute".into()),
            citation: Some("§ 1 Test".into()),
            consent_id: None,
            policy_version: Some("p1".into()),
            fields,
            fields_sha256: set.map(|s| s.sha256.clone()),
            note: None,
        }
    }

    async fn append_one(
        store: &dyn Store,
        e: &Event,
        set: Option<crate::store::FieldSet>,
        body: Option<&str>,
    ) {
        let key = AuditKey::new(b"test key".to_vec());
        let mut tx = store.begin_delivery().await.unwrap();
        tx.audit(&[crate::store::NewAuditEvent {
            packed: None,
            at_ms: 0,
            kind: "routing".into(),
            subject: Some(key.subject("acme", "C")),
            body: body.map_or_else(|| e.to_json(), str::to_string),
            field_set: set.map(std::sync::Arc::new),
        }])
        .await
        .unwrap();
        tx.commit_plain().await.unwrap();
    }

    #[tokio::test]
    async fn disclosure_entries_carry_who_what_when_and_basis() {
        let store = crate::store::SqliteStore::connect("sqlite::memory:")
            .await
            .unwrap();
        let key = AuditKey::new(b"test key".to_vec());
        let sex = vec![FieldAction {
            path: "client.sex".into(),
            action: "keep".into(),
        }];
        // An event with its fields inline (as written before field sets), and one that refers
        // to a stored field set: both report the fields.
        append_one(&store, &routing_event(1, sex.clone(), None), None, None).await;
        let set = field_set(&sex);
        append_one(
            &store,
            &routing_event(2, Vec::new(), Some(&set)),
            Some(set.clone()),
            None,
        )
        .await;
        let stored = store.audit_events(0, 10).await.unwrap();
        assert!(!stored[1].body.contains("client.sex"), "{}", stored[1].body);
        let report = disclosure(&store, &key, "acme", "C").await.unwrap();
        let entry = |n: usize| {
            serde_json::json!({
                "at": format!("2026-02-01T10:00:0{n}.000Z"),
                "kind": "routing",
                "delivery_id": format!("d-{n}"),
                "recipient": "statistik",
                "legal_basis": "statute",
                "citation": "§ 1 Test",
                "consent_id": null,
                "policy_version": "p1",
                "fields": [{"path": "client.sex", "action": "keep"}],
                "reporting_period": "2026-01",
                "record_ref": format!("ref-{n}"),
                "note": null,
            })
        };
        assert_eq!(report, vec![entry(1), entry(2)]);
        // A second event with the same set stores it once.
        append_one(
            &store,
            &routing_event(3, Vec::new(), Some(&set)),
            Some(set.clone()),
            None,
        )
        .await;
        assert_eq!(
            store
                .field_sets(std::slice::from_ref(&set.sha256))
                .await
                .unwrap(),
            vec![set.clone()]
        );
        assert_eq!(
            disclosure(&store, &key, "acme", "C").await.unwrap().len(),
            3
        );

        // A set that is missing, or that does not match its hash, is corruption.
        let other = field_set(&[FieldAction {
            path: "client.birth_date".into(),
            action: "generalise:year".into(),
        }]);
        append_one(
            &store,
            &routing_event(4, Vec::new(), Some(&other)),
            None,
            None,
        )
        .await;
        assert!(matches!(
            disclosure(&store, &key, "acme", "C").await,
            Err(StoreError::Corrupt(m)) if m.contains("missing")
        ));
        let store = crate::store::SqliteStore::connect("sqlite::memory:")
            .await
            .unwrap();
        let forged = crate::store::FieldSet {
            sha256: set.sha256.clone(),
            fields: other.fields.clone(),
        };
        append_one(
            &store,
            &routing_event(1, Vec::new(), Some(&set)),
            Some(forged),
            None,
        )
        .await;
        assert!(matches!(
            disclosure(&store, &key, "acme", "C").await,
            Err(StoreError::Corrupt(m)) if m.contains("altered")
        ));
        // A body that is not an event is corruption too.
        let store = crate::store::SqliteStore::connect("sqlite::memory:")
            .await
            .unwrap();
        append_one(
            &store,
            &routing_event(1, Vec::new(), None),
            None,
            Some("not json"),
        )
        .await;
        assert!(matches!(
            disclosure(&store, &key, "acme", "C").await,
            Err(StoreError::Corrupt(_))
        ));
    }

    /// Appends `n` events (subjects cycling over `S0`, `S1`, `S2`) to a store.
    async fn append(store: &dyn Store, vendor: &str, n: usize) {
        let key = AuditKey::new(b"test key".to_vec());
        let events: Vec<crate::store::NewAuditEvent> = (0..n)
            .map(|i| {
                let client = format!("C{}", i % 3);
                let e = Event {
                    at: "2026-02-01T10:00:00.000Z".into(),
                    kind: "routing".into(),
                    delivery_id: Some(format!("d-{i}")),
                    vendor: vendor.into(),
                    record_ref: Some(format!("ref-{i}")),
                    reporting_period: Some("2026-01".into()),
                    recipient: Some("statistik".into()),
                    legal_basis: Some("statute".into()),
                    citation: None,
                    consent_id: None,
                    policy_version: None,
                    fields: Vec::new(),
                    fields_sha256: None,
                    note: None,
                };
                crate::store::NewAuditEvent {
                    packed: None,
                    at_ms: i as i64,
                    kind: "routing".into(),
                    subject: Some(key.subject(vendor, &client)),
                    body: e.to_json(),
                    field_set: None,
                }
            })
            .collect();
        let mut tx = store.begin_delivery().await.unwrap();
        tx.audit(&events).await.unwrap();
        tx.commit_plain().await.unwrap();
    }

    #[tokio::test]
    async fn verify_pages_through_a_store() {
        let store = crate::store::SqliteStore::connect("sqlite::memory:")
            .await
            .unwrap();
        assert_eq!(verify(&store).await.unwrap(), check(&[]));
        append(&store, "acme", 7).await;
        append(&store, "acme", 3).await;
        for page in [1, 3, 5, 10, 11, VERIFY_PAGE] {
            let v = verify_paged(&store, page).await.unwrap();
            assert!(v.intact, "page {page}: {v:?}");
            assert_eq!(v.events, 10, "page {page}");
        }
        let all = store.audit_events(0, 100).await.unwrap();
        assert_eq!(verify(&store).await.unwrap(), check(&all));
    }

    #[tokio::test]
    async fn disclosure_finds_the_clients_events_only() {
        let store = crate::store::SqliteStore::connect("sqlite::memory:")
            .await
            .unwrap();
        append(&store, "acme", 7).await;
        let key = AuditKey::new(b"test key".to_vec());
        let report = disclosure(&store, &key, "acme", "C1").await.unwrap();
        let refs: Vec<&str> = report
            .iter()
            .map(|e| e["record_ref"].as_str().unwrap())
            .collect();
        assert_eq!(refs, ["ref-1", "ref-4"]);
        assert!(
            disclosure(&store, &key, "other", "C1")
                .await
                .unwrap()
                .is_empty()
        );
        let other_key = AuditKey::new(b"other key".to_vec());
        assert!(
            disclosure(&store, &other_key, "acme", "C1")
                .await
                .unwrap()
                .is_empty()
        );
    }
}
