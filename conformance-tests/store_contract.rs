//! The store contract: one suite of tests of [`weiche::store::Store`], written once against
//! `Arc<dyn Store>` and run against both backends — SQLite on a fresh temporary file, and
//! PostgreSQL on a fresh database per test (admin URL in `WEICHE_TEST_POSTGRES_URL`; without it
//! the PostgreSQL half is skipped with a notice, or fails when `CI=true`).

use crate::support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use weiche::store::{
    AckOutcome, AuditRow, BatchState, CommitOutcome, Cutoffs, ERASED_MESSAGE, Erased, Finding,
    Holder, ItemKind, Month, NewAuditEvent, NewDelivery, NewItem, NewRecord, PushOutcome,
    PushResult, PushState, ReceiptSubject, SealRule, Store, StoreError, Withdrawal,
};

/// One backend under test: a store on a fresh database, and what is needed to open a second
/// store on the same database (as a second process would).
struct Backend {
    url: String,
    store: Arc<dyn Store>,
    postgres: bool,
    _dir: Option<tempfile::TempDir>,
}

impl Backend {
    async fn sqlite() -> Backend {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = support::fresh_sqlite_url(dir.path());
        let store = weiche::store::connect(&url)
            .await
            .expect("open sqlite store");
        Backend {
            url,
            store,
            postgres: false,
            _dir: Some(dir),
        }
    }

    async fn postgres() -> Option<Backend> {
        let url = support::fresh_postgres_url().await?;
        let store = weiche::store::connect(&url)
            .await
            .expect("open postgres store");
        Some(Backend {
            url,
            store,
            postgres: true,
            _dir: None,
        })
    }

    /// A second, independent store on the same database (own pools, like another process).
    async fn reopen(&self) -> Arc<dyn Store> {
        weiche::store::connect(&self.url)
            .await
            .expect("open second store")
    }

    /// The stored findings of a batch, read with plain SQL (the trait does not expose them).
    async fn findings(&self, batch_id: &str) -> Option<String> {
        use sqlx::Connection;
        if self.postgres {
            let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar("SELECT findings FROM batches WHERE batch_id = $1")
                .bind(batch_id)
                .fetch_one(&mut conn)
                .await
                .unwrap()
        } else {
            let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar("SELECT findings FROM batches WHERE batch_id = ?")
                .bind(batch_id)
                .fetch_one(&mut conn)
                .await
                .unwrap()
        }
    }

    /// Runs a test-written SQL statement (literals only, no parameters) returning one text
    /// column, with plain SQL on a separate connection.
    async fn texts(&self, sql: &str) -> Vec<Option<String>> {
        use sqlx::Connection;
        if self.postgres {
            let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap()
        } else {
            let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap()
        }
    }

    /// Runs a test-written `SELECT COUNT(*) …` (literals only).
    async fn count(&self, sql: &str) -> i64 {
        use sqlx::Connection;
        if self.postgres {
            let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
        } else {
            let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
        }
    }

    /// Runs a test-written statement (literals only) with plain SQL on a separate connection;
    /// returns the rows affected.
    async fn exec(&self, sql: &str) -> u64 {
        use sqlx::Connection;
        if self.postgres {
            let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::query(sql)
                .execute(&mut conn)
                .await
                .unwrap()
                .rows_affected()
        } else {
            let mut conn = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            sqlx::query(sql)
                .execute(&mut conn)
                .await
                .unwrap()
                .rows_affected()
        }
    }

    /// The partitions of a PostgreSQL table, by name.
    async fn partitions(&self, table: &str) -> Vec<String> {
        assert!(self.postgres);
        self.texts(&format!(
            "SELECT c.relname::text FROM pg_inherits AS i JOIN pg_class AS c \
             ON c.oid = i.inhrelid WHERE i.inhparent = '{table}'::regclass ORDER BY 1"
        ))
        .await
        .into_iter()
        .flatten()
        .collect()
    }

    /// Whether a table of that name exists (PostgreSQL).
    async fn table_exists(&self, name: &str) -> bool {
        self.count(&format!(
            "SELECT COUNT(*) FROM pg_class WHERE relname = '{name}' AND relkind IN ('r', 'p')"
        ))
        .await
            == 1
    }

    /// The stored state of a record (`None` when absent).
    async fn state(&self, vendor: &str, record_id: &str, period: &str) -> Option<String> {
        self.texts(&format!(
            "SELECT state FROM records WHERE vendor = '{vendor}' AND record_id = '{record_id}' \
             AND reporting_period = '{period}'"
        ))
        .await
        .pop()
        .flatten()
    }

    /// The database file of a SQLite backend.
    fn sqlite_path(&self) -> std::path::PathBuf {
        assert!(!self.postgres);
        std::path::PathBuf::from(self.url.trim_start_matches("sqlite://"))
    }

    async fn finish(self) {
        if self.postgres {
            support::drop_postgres_database(&self.url).await;
        }
    }
}

/// Generates, for every contract test `name(&Backend)`, a `sqlite::name` and a `postgres::name`
/// test.
macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let backend = super::Backend::sqlite().await;
                    super::$name(&backend).await;
                    backend.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(backend) = super::Backend::postgres().await else {
                        return;
                    };
                    super::$name(&backend).await;
                    backend.finish().await;
                }
            )*
        }
    };
}

contract_tests!(
    packed_bodies_read_back_exactly,
    commit_makes_delivery_records_and_items_visible,
    rollback_and_drop_leave_nothing,
    duplicate_key_returns_first_receipt_and_stores_nothing,
    null_keys_never_conflict,
    concurrent_duplicates_from_two_stores_commit_once,
    concurrent_deliveries_all_commit,
    records_are_replaced_by_vendor_id_and_period,
    deliveries_newest_first_with_since_and_keyset_pages,
    seal_full_batches_then_remainder_by_age,
    a_backlog_is_sealed_a_bounded_number_of_batches_per_call,
    seal_by_age_only,
    seal_many_batches_in_one_call,
    batch_items_in_seq_order_with_paging,
    batch_of_another_recipient_is_none,
    ack_is_idempotent_and_keeps_first_findings,
    push_groups_are_sealed_pending_and_in_order,
    push_lanes_are_leased_and_taken_over,
    push_results_of_a_window_in_one_call,
    concurrent_lane_claims_have_one_winner,
    batches_filter_by_state,
    chunked_put_of_5000_records_in_one_transaction,
    concurrent_sealing_from_two_stores_seals_each_item_once,
    put_stores_delivery_id_state_and_consent,
    cancel_missing_respects_scope_keep_and_delivery,
    cancel_missing_with_thousands_of_scopes_and_kept_ids,
    holders_follow_the_latest_item_within_the_transaction,
    client_holders_with_and_without_consent_filter,
    erase_client_deletes_open_and_stubs_sealed_items,
    open_items_are_counted_exactly_while_deliveries_run,
    withdrawals_keep_the_earliest_date,
    audit_chain_links_and_pages,
    audit_field_sets_are_stored_once_with_their_events,
    concurrent_audit_from_two_stores_is_gap_free,
    current_records_are_active_and_held,
    purge_records_by_reporting_period,
    purge_outputs_once_delivered_and_keep_what_recipients_hold,
    purge_audit_from_the_start_and_keep_the_chain_verifiable,
    audit_events_purged_before_they_are_indexed_are_skipped,
    purge_receipts_by_age,
);

// ---------------------------------------------------------------------------------------------
// Helpers

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn rec(vendor: &str, record_id: &str, period: &str, body: &str) -> NewRecord {
    NewRecord {
        vendor: vendor.into(),
        record_id: record_id.into(),
        reporting_period: period.into(),
        program: "P1".into(),
        client_id: format!("client-{record_id}"),
        delivery_id: "d-test".into(),
        body: body.into(),
        packed: None,
    }
}

/// A record with every field chosen: `(vendor, record_id, period, program, client, delivery)`.
fn rec_of(
    (vendor, record_id, period, program, client, delivery): (&str, &str, &str, &str, &str, &str),
    body: &str,
) -> NewRecord {
    NewRecord {
        vendor: vendor.into(),
        record_id: record_id.into(),
        reporting_period: period.into(),
        program: program.into(),
        client_id: client.into(),
        delivery_id: delivery.into(),
        body: body.into(),
        packed: None,
    }
}

fn item(recipient: &str, record_id: &str, period: &str, body: &str) -> NewItem {
    NewItem {
        recipient: recipient.into(),
        kind: ItemKind::Record,
        vendor: "v1".into(),
        record_id: record_id.into(),
        reporting_period: period.into(),
        record_ref: format!("p1.{record_id}"),
        body: body.into(),
        packed: None,
        consent_id: None,
    }
}

/// An item of vendor `v1` of any kind, with its consent; ref `{recipient}.{record_id}`.
fn item_of(
    recipient: &str,
    kind: ItemKind,
    record_id: &str,
    period: &str,
    consent: Option<&str>,
) -> NewItem {
    NewItem {
        recipient: recipient.into(),
        kind,
        vendor: "v1".into(),
        record_id: record_id.into(),
        reporting_period: period.into(),
        record_ref: format!("{recipient}.{record_id}"),
        body: format!(r#"{{"type":"{}","record":"{record_id}"}}"#, kind.as_str()),
        packed: None,
        consent_id: consent.map(str::to_string),
    }
}

/// The expected holder of a record of vendor `v1` made with [`item_of`].
fn holder(recipient: &str, record_id: &str, period: &str, consent: Option<&str>) -> Holder {
    Holder {
        recipient: recipient.into(),
        vendor: "v1".into(),
        record_id: record_id.into(),
        reporting_period: period.into(),
        record_ref: format!("{recipient}.{record_id}"),
        consent_id: consent.map(str::to_string),
    }
}

fn key(record_id: &str, period: &str) -> (String, String) {
    (record_id.to_string(), period.to_string())
}

fn event(kind: &str, subject: Option<&str>, body: &str) -> NewAuditEvent {
    NewAuditEvent {
        packed: None,
        at_ms: 1_700_000_000_000,
        kind: kind.into(),
        subject: subject.map(str::to_string),
        body: body.into(),
        field_set: None,
    }
}

/// Asserts the rows are the chain 1, 2, … from the genesis, each linked to its predecessor.
fn assert_chain(rows: &[AuditRow]) {
    let mut prev = weiche::audit::GENESIS.to_string();
    for (n, row) in rows.iter().enumerate() {
        assert_eq!(row.seq, n as i64 + 1, "gap-free sequence");
        assert_eq!(
            row.prev_hash, prev,
            "event {} links to its predecessor",
            row.seq
        );
        assert_eq!(row.hash, weiche::audit::link_hash(&prev, &row.body));
        prev = row.hash.clone();
    }
}

/// Every audit event, paged.
async fn all_audit(store: &Arc<dyn Store>) -> Vec<AuditRow> {
    let mut out: Vec<AuditRow> = Vec::new();
    loop {
        let after = out.last().map_or(0, |r| r.seq);
        let page = store.audit_events(after, 1_000).await.unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// `n` items for `recipient` with bodies `{prefix}-{i}`, periods cycling over three months.
fn items(recipient: &str, prefix: &str, n: usize) -> Vec<NewItem> {
    (0..n)
        .map(|i| {
            let period = format!("2026-0{}", 1 + i % 3);
            item(
                recipient,
                &format!("{prefix}-{i}"),
                &period,
                &format!("{prefix}-{i}"),
            )
        })
        .collect()
}

fn delivery(vendor: &str, key: Option<&str>, received_at: i64) -> NewDelivery {
    let id = uuid::Uuid::new_v4().to_string();
    NewDelivery {
        receipt: format!(r#"{{"delivery_id":"{id}","status":"E1"}}"#),
        content_hash: format!("hash-of-{id}"),
        id,
        vendor: vendor.into(),
        idempotency_key: key.map(str::to_string),
        format: "fallwerk-csv".into(),
        mode: "partial".into(),
        status: "E1".into(),
        test: false,
        received_at,
        subjects: Vec::new(),
    }
}

/// Writes one delivery in one `put` and commits it.
async fn deliver(
    store: &Arc<dyn Store>,
    records: &[NewRecord],
    items: &[NewItem],
    d: &NewDelivery,
) -> CommitOutcome {
    let mut tx = store.begin_delivery().await.unwrap();
    tx.put(records, items).await.unwrap();
    tx.commit(d).await.unwrap()
}

/// Items of a batch, fetched page by page.
async fn all_batch_items(store: &Arc<dyn Store>, batch_id: &str, page: i64) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let got = store.batch_items(batch_id, after, page).await.unwrap();
        assert!(got.len() as i64 <= page);
        let Some(last) = got.last() else { break };
        after = last.seq;
        out.extend(got.into_iter().map(|i| (i.seq, i.body)));
    }
    out
}

const NEVER: i64 = 1_000 * 3600 * 24 * 365;

// ---------------------------------------------------------------------------------------------
// Deliveries

async fn commit_makes_delivery_records_and_items_visible(b: &Backend) {
    let s = &b.store;
    assert_eq!(s.backend(), if b.postgres { "postgres" } else { "sqlite" });
    s.ping().await.unwrap();

    let mut tx = s.begin_delivery().await.unwrap();
    tx.put(
        &[rec("v1", "R1", "2026-10", r#"{"v":1}"#)],
        &[
            item("r1", "R1", "2026-10", "r1-R1"),
            item("r2", "R1", "2026-10", "r2-R1"),
        ],
    )
    .await
    .unwrap();
    // Readers neither block on nor see the open transaction.
    assert_eq!(s.record("v1", "R1", "2026-10").await.unwrap(), None);
    assert_eq!(s.open_items("r1").await.unwrap(), 0);
    let d = delivery("v1", Some("k1"), 1_000);
    assert_eq!(tx.commit(&d).await.unwrap(), CommitOutcome::Committed);

    assert_eq!(
        s.record("v1", "R1", "2026-10").await.unwrap().as_deref(),
        Some(r#"{"v":1}"#)
    );
    assert_eq!(s.record("v1", "R1", "2026-11").await.unwrap(), None);
    assert_eq!(s.record("v2", "R1", "2026-10").await.unwrap(), None);
    assert_eq!(s.open_items("r1").await.unwrap(), 1);
    assert_eq!(s.open_items("r2").await.unwrap(), 1);
    assert_eq!(s.open_items("r3").await.unwrap(), 0);
    let stored = s.delivery("v1", &d.id).await.unwrap().expect("delivery");
    assert_eq!(stored.id, d.id);
    assert_eq!(stored.received_at, 1_000);
    assert_eq!(stored.receipt, d.receipt);
    assert_eq!(
        s.delivery_by_key("v1", "k1").await.unwrap(),
        Some((d.content_hash.clone(), d.receipt.clone()))
    );
    assert_eq!(s.delivery_by_key("v2", "k1").await.unwrap(), None);
    assert_eq!(s.delivery_by_key("v1", "k2").await.unwrap(), None);
    assert_eq!(s.deliveries("v1", None, None, 10).await.unwrap().len(), 1);
}

/// A JSON body of record `n` for `store/codec.rs`: shared keys and codes, and values of its own.
fn json_body(kind: &str, n: usize) -> String {
    format!(
        r#"{{"type":"{kind}","record_ref":"p1.k.{n:032x}","reporting_period":"2026-10","client":{{"family_name":"Name{n}","sex":"{}","birth_date":"19{:02}-0{}-1{}"}},"services":[{{"kind":"beratung","start":"2026-10-0{}"}}]}}"#,
        ["f", "m", "d"][n % 3],
        n % 90 + 10,
        n % 9 + 1,
        n % 10,
        n % 9 + 1
    )
}

/// Records `A{n}` of vendor `v1` and their items for `r1`, with [`json_body`]s.
fn packable(ns: std::ops::Range<usize>) -> (Vec<NewRecord>, Vec<NewItem>) {
    let records = ns
        .clone()
        .map(|n| {
            rec(
                "v1",
                &format!("A{n}"),
                "2026-10",
                &json_body("canonical", n),
            )
        })
        .collect();
    let items = ns
        .map(|n| item("r1", &format!("A{n}"), "2026-10", &json_body("record", n)))
        .collect();
    (records, items)
}

/// Once a SQLite store has a body dictionary, record and item bodies are stored packed and
/// every read gives back exactly the JSON that was written: by this store, by a store opened
/// before the dictionary existed (another process) and by one opened after. The dictionary holds
/// no value only one body had. PostgreSQL stores text and never packs.
async fn packed_bodies_read_back_exactly(b: &Backend) {
    let s = &b.store;
    let before = b.reopen().await;
    let (plain_records, plain_items) = packable(0..300);
    deliver(s, &plain_records, &plain_items, &delivery("v1", None, 1)).await;
    assert!(s.body_packer().is_none());
    assert!(
        !s.pack_bodies(1000).await.unwrap(),
        "too few bodies to train on"
    );
    assert!(s.pack_bodies(200).await.unwrap());
    assert!(s.body_packer().is_some());

    // Written after: some bodies packed by the pipeline (the packer), the rest by the store.
    let (mut records, mut items) = packable(300..400);
    let want_records: Vec<String> = records.iter().map(|r| r.body.clone()).collect();
    let want_items: Vec<String> = plain_items
        .iter()
        .chain(&items)
        .map(|i| i.body.clone())
        .collect();
    if let Some(packer) = s.body_packer() {
        packer
            .pack(&mut records[..50], &mut items[..50], &mut [])
            .unwrap();
        assert!(records[0].body.is_empty() && records[0].packed.is_some());
        assert!(records[50].packed.is_none());
    }
    let events: Vec<NewAuditEvent> = (300..400)
        .map(|n| {
            event(
                "routing",
                Some(&format!("S{n}")),
                &format!(r#"{{"kind":"routing","record_ref":"p1.k.{n:032x}","recipient":"r1"}}"#),
            )
        })
        .collect();
    let mut tx = s.begin_delivery().await.unwrap();
    tx.put(&records, &items).await.unwrap();
    tx.audit(&events).await.unwrap();
    tx.commit(&delivery("v1", None, 2)).await.unwrap();
    // Packed bodies are zstd frames: SQLite stores them as BLOBs, PostgreSQL's `bytea` starts
    // with zstd's magic number.
    let packed = |table: &str| {
        if b.postgres {
            format!(
                "SELECT COUNT(*) FROM {table} \
                 WHERE substring(body FROM 1 FOR 4) = '\\x28b52ffd'::bytea"
            )
        } else {
            format!("SELECT COUNT(*) FROM {table} WHERE typeof(body) = 'blob'")
        }
    };
    assert_eq!(b.count(&packed("audit")).await, 100);
    let items_table = if b.postgres { "items" } else { "item_bodies" };
    assert_eq!(b.count(&packed(items_table)).await, 100);
    assert_eq!(b.count(&packed("records")).await, 100);
    let dict: Vec<u8> = {
        use sqlx::Connection;
        let sql = "SELECT dict FROM body_dictionaries";
        if b.postgres {
            let mut conn = sqlx::PgConnection::connect(&b.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
        } else {
            let mut conn = sqlx::SqliteConnection::connect(&b.url).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
        }
    };
    let dict = String::from_utf8_lossy(&dict);
    assert!(dict.contains("beratung"), "shared values are learnt");
    for n in 0..300 {
        assert!(
            !dict.contains(&format!("Name{n}\"")),
            "Name{n} is in one body only"
        );
    }

    let after = b.reopen().await;
    for reader in [s, &before, &after] {
        for (n, want) in (300..400).zip(&want_records) {
            let id = format!("A{n}");
            assert_eq!(
                reader.record("v1", &id, "2026-10").await.unwrap().as_ref(),
                Some(want)
            );
            let stored = reader.records_by_id("v1", &id).await.unwrap();
            assert_eq!(&stored[0].body, want);
        }
        let items = reader.record_items("v1", "A350").await.unwrap();
        assert_eq!(items[0].body, want_items[350]);
        let current = reader.current_records("r1", "2026-10").await.unwrap();
        assert_eq!(current.len(), 400);
        assert!(current.contains(&want_records[99]));
        // The chain hashes the text: it still links, and the bodies come back as written.
        let audit = all_audit(reader).await;
        assert_chain(&audit);
        assert_eq!(
            audit.iter().map(|r| r.body.as_str()).collect::<Vec<_>>(),
            events.iter().map(|e| e.body.as_str()).collect::<Vec<_>>()
        );
        assert_eq!(
            reader.audit_by_subject("S350").await.unwrap(),
            vec![audit[50].clone()]
        );
    }
    let rule = SealRule {
        max_items: 1000,
        max_age_ms: 0,
        push: false,
        call_items: weiche::store::SEAL_ITEMS_PER_CALL,
    };
    assert_eq!(s.seal("r1", rule, now_ms()).await.unwrap(), 1);
    let batch = s.batches("r1", None).await.unwrap().remove(0);
    let got = all_batch_items(&after, &batch.batch_id, 64).await;
    assert_eq!(
        got.into_iter().map(|(_, body)| body).collect::<Vec<_>>(),
        want_items
    );
    let joined = before
        .batch_items_joined(&batch.batch_id, 0, 1000, "\n")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(joined.count, 400);
    assert_eq!(joined.text, want_items.join("\n"));

    // Erasure reaches packed bodies: the sealed item becomes the bare envelope.
    let mut tx = s.begin_delivery().await.unwrap();
    let erased = tx
        .erase_client("v1", "client-A350", "S-A350")
        .await
        .unwrap();
    assert_eq!(erased.records, 1);
    tx.commit_plain().await.unwrap();
    let items = after.record_items("v1", "A350").await.unwrap();
    assert_eq!(
        items[0].body,
        r#"{"type":"record","record_ref":"p1.A350","erased":true}"#
    );
    assert_eq!(after.record("v1", "A350", "2026-10").await.unwrap(), None);
}

async fn rollback_and_drop_leave_nothing(b: &Backend) {
    let s = &b.store;
    let mut tx = s.begin_delivery().await.unwrap();
    tx.put(
        &[rec("v1", "R1", "2026-10", "a")],
        &[item("r1", "R1", "2026-10", "a")],
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();

    let mut tx = s.begin_delivery().await.unwrap();
    tx.put(
        &[rec("v1", "R2", "2026-10", "b")],
        &[item("r1", "R2", "2026-10", "b")],
    )
    .await
    .unwrap();
    drop(tx);

    // The store is usable afterwards (the writer was given back) and nothing was kept.
    let d = delivery("v1", Some("k"), 5);
    assert_eq!(
        deliver(s, &[rec("v1", "R3", "2026-10", "c")], &[], &d).await,
        CommitOutcome::Committed
    );
    assert_eq!(s.record("v1", "R1", "2026-10").await.unwrap(), None);
    assert_eq!(s.record("v1", "R2", "2026-10").await.unwrap(), None);
    assert_eq!(
        s.record("v1", "R3", "2026-10").await.unwrap().as_deref(),
        Some("c")
    );
    assert_eq!(s.open_items("r1").await.unwrap(), 0);
    let listed = s.deliveries("v1", None, None, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, d.id);
}

async fn duplicate_key_returns_first_receipt_and_stores_nothing(b: &Backend) {
    let s = &b.store;
    let first = delivery("v1", Some("K"), 100);
    assert_eq!(
        deliver(
            s,
            &[rec("v1", "A", "2026-10", "a1")],
            &items("r1", "first", 3),
            &first
        )
        .await,
        CommitOutcome::Committed
    );

    let second = delivery("v1", Some("K"), 200);
    let outcome = deliver(
        s,
        &[
            rec("v1", "A", "2026-10", "a2"),
            rec("v1", "B", "2026-10", "b"),
        ],
        &items("r1", "second", 4),
        &second,
    )
    .await;
    assert_eq!(
        outcome,
        CommitOutcome::Duplicate {
            content_hash: first.content_hash.clone(),
            receipt: first.receipt.clone(),
        }
    );
    assert_eq!(
        s.record("v1", "A", "2026-10").await.unwrap().as_deref(),
        Some("a1")
    );
    assert_eq!(s.record("v1", "B", "2026-10").await.unwrap(), None);
    assert_eq!(s.open_items("r1").await.unwrap(), 3);
    assert!(s.delivery("v1", &second.id).await.unwrap().is_none());
    assert_eq!(s.deliveries("v1", None, None, 10).await.unwrap().len(), 1);
    assert_eq!(
        s.delivery_by_key("v1", "K").await.unwrap(),
        Some((first.content_hash.clone(), first.receipt.clone()))
    );

    // Keys are per vendor.
    let other = delivery("v2", Some("K"), 300);
    assert_eq!(deliver(s, &[], &[], &other).await, CommitOutcome::Committed);
}

async fn null_keys_never_conflict(b: &Backend) {
    let s = &b.store;
    let d1 = delivery("v1", None, 1);
    let d2 = delivery("v1", None, 2);
    assert_eq!(
        deliver(s, &[rec("v1", "A", "2026-10", "a")], &[], &d1).await,
        CommitOutcome::Committed
    );
    assert_eq!(
        deliver(s, &[rec("v1", "B", "2026-10", "b")], &[], &d2).await,
        CommitOutcome::Committed
    );
    let ids: Vec<String> = s
        .deliveries("v1", None, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(ids, vec![d2.id.clone(), d1.id.clone()]);
    assert!(s.record("v1", "B", "2026-10").await.unwrap().is_some());
}

async fn concurrent_duplicates_from_two_stores_commit_once(b: &Backend) {
    let stores = [b.store.clone(), b.reopen().await];
    for round in 0..5 {
        let key = format!("key-{round}");
        let mut tasks = Vec::new();
        for (n, store) in stores.iter().enumerate() {
            let store = store.clone();
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                let d = delivery("v1", Some(&key), round);
                let items = items("r1", &format!("{key}-{n}"), 5);
                let outcome = deliver(&store, &[], &items, &d).await;
                (d, outcome)
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        let committed: Vec<_> = results
            .iter()
            .filter(|(_, o)| *o == CommitOutcome::Committed)
            .collect();
        assert_eq!(committed.len(), 1, "exactly one commit per key");
        let winner = &committed[0].0;
        for (_, outcome) in &results {
            if let CommitOutcome::Duplicate {
                content_hash,
                receipt,
            } = outcome
            {
                assert_eq!(content_hash, &winner.content_hash);
                assert_eq!(receipt, &winner.receipt);
            }
        }
    }
    assert_eq!(b.store.open_items("r1").await.unwrap(), 5 * 5);
    assert_eq!(
        b.store
            .deliveries("v1", None, None, 100)
            .await
            .unwrap()
            .len(),
        5
    );
}

async fn concurrent_deliveries_all_commit(b: &Backend) {
    let mut tasks = Vec::new();
    for n in 0..8 {
        let store = b.store.clone();
        tasks.push(tokio::spawn(async move {
            let d = delivery("v1", Some(&format!("c-{n}")), n);
            let records: Vec<NewRecord> = (0..50)
                .map(|i| rec("v1", &format!("D{n}-{i}"), "2026-10", "x"))
                .collect();
            deliver(&store, &records, &items("r1", &format!("d{n}"), 50), &d).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), CommitOutcome::Committed);
    }
    assert_eq!(b.store.open_items("r1").await.unwrap(), 8 * 50);
}

async fn records_are_replaced_by_vendor_id_and_period(b: &Backend) {
    let s = &b.store;
    deliver(
        s,
        &[
            rec("v1", "R1", "2026-10", "a"),
            rec("v1", "R1", "2026-11", "b"),
            rec("v2", "R1", "2026-10", "c"),
        ],
        &[],
        &delivery("v1", None, 1),
    )
    .await;
    deliver(
        s,
        &[rec("v1", "R1", "2026-10", "a2")],
        &[],
        &delivery("v1", None, 2),
    )
    .await;
    assert_eq!(
        s.record("v1", "R1", "2026-10").await.unwrap().as_deref(),
        Some("a2")
    );
    assert_eq!(
        s.record("v1", "R1", "2026-11").await.unwrap().as_deref(),
        Some("b")
    );
    assert_eq!(
        s.record("v2", "R1", "2026-10").await.unwrap().as_deref(),
        Some("c")
    );

    // Twice in one put, and across two puts of one transaction: the last version wins.
    let mut tx = s.begin_delivery().await.unwrap();
    tx.put(
        &[
            rec("v1", "R2", "2026-10", "x1"),
            rec("v1", "R3", "2026-10", "y1"),
            rec("v1", "R2", "2026-10", "x2"),
        ],
        &[],
    )
    .await
    .unwrap();
    tx.put(&[rec("v1", "R3", "2026-10", "y2")], &[])
        .await
        .unwrap();
    assert_eq!(
        tx.commit(&delivery("v1", None, 3)).await.unwrap(),
        CommitOutcome::Committed
    );
    assert_eq!(
        s.record("v1", "R2", "2026-10").await.unwrap().as_deref(),
        Some("x2")
    );
    assert_eq!(
        s.record("v1", "R3", "2026-10").await.unwrap().as_deref(),
        Some("y2")
    );
}

async fn deliveries_newest_first_with_since_and_keyset_pages(b: &Backend) {
    let s = &b.store;
    let mut made = Vec::new();
    for at in [1_000, 2_000, 2_000, 2_000, 3_000, 4_000, 2_000] {
        let d = delivery("v1", None, at);
        deliver(s, &[], &[], &d).await;
        made.push((at, d.id));
    }
    deliver(s, &[], &[], &delivery("v2", None, 5_000)).await;
    // Newest first; ties by id, descending (byte order on both backends).
    made.sort_by(|a, b| b.cmp(a));
    let expected: Vec<String> = made.iter().map(|(_, id)| id.clone()).collect();

    let ids = |v: Vec<weiche::store::StoredDelivery>| -> Vec<String> {
        v.into_iter().map(|d| d.id).collect()
    };
    assert_eq!(
        ids(s.deliveries("v1", None, None, 100).await.unwrap()),
        expected
    );
    assert!(s.deliveries("v1", None, None, 0).await.unwrap().is_empty());
    assert!(s.deliveries("v3", None, None, 10).await.unwrap().is_empty());

    let since: Vec<String> = made
        .iter()
        .filter(|(at, _)| *at >= 2_000)
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(
        ids(s.deliveries("v1", Some(2_000), None, 100).await.unwrap()),
        since
    );

    for (filter, want) in [(None, &expected), (Some(2_000), &since)] {
        let mut pages = Vec::new();
        let mut after = None;
        loop {
            let page = s.deliveries("v1", filter, after.clone(), 2).await.unwrap();
            assert!(page.len() <= 2);
            let Some(last) = page.last() else { break };
            after = Some((last.received_at, last.id.clone()));
            pages.extend(ids(page));
        }
        assert_eq!(&pages, want);
    }

    let (_, some_id) = &made[0];
    assert!(s.delivery("v1", some_id).await.unwrap().is_some());
    assert!(s.delivery("v2", some_id).await.unwrap().is_none());
    assert!(s.delivery("v1", "no-such-id").await.unwrap().is_none());
}

// ---------------------------------------------------------------------------------------------
// Sealing and batches

async fn seal_full_batches_then_remainder_by_age(b: &Backend) {
    let s = &b.store;
    let mut tx = s.begin_delivery().await.unwrap();
    let all = items("r1", "i", 25);
    for chunk in all.chunks(9) {
        tx.put(&[], chunk).await.unwrap();
    }
    tx.put(&[], &items("r2", "other", 4)).await.unwrap();
    tx.commit(&delivery("v1", None, 1)).await.unwrap();
    assert_eq!(s.open_items("r1").await.unwrap(), 25);

    let rule = SealRule {
        max_items: 10,
        max_age_ms: 3_600_000,
        push: false,
        call_items: weiche::store::SEAL_ITEMS_PER_CALL,
    };
    let now = now_ms();
    assert_eq!(s.seal("r1", rule, now).await.unwrap(), 2);
    assert_eq!(s.open_items("r1").await.unwrap(), 5);
    assert_eq!(s.seal("r1", rule, now).await.unwrap(), 0);
    let batches = s.batches("r1", None).await.unwrap();
    assert_eq!(batches.len(), 2);
    for batch in &batches {
        assert_eq!(batch.items, 10);
        assert_eq!(batch.recipient, "r1");
        assert_eq!(batch.state, BatchState::Ready);
        assert_eq!(batch.created_at, now);
        assert_eq!(batch.periods, vec!["2026-01", "2026-02", "2026-03"]);
    }

    // The young remainder is sealed once its oldest item reaches the age.
    let later = now + rule.max_age_ms;
    assert_eq!(s.seal("r1", rule, later).await.unwrap(), 1);
    assert_eq!(s.open_items("r1").await.unwrap(), 0);
    assert_eq!(
        s.seal("r1", rule, later + 1).await.unwrap(),
        0,
        "no empty batch"
    );
    let batches = s.batches("r1", None).await.unwrap();
    assert_eq!(
        batches.iter().map(|b| b.items).collect::<Vec<_>>(),
        vec![10, 10, 5]
    );
    assert_eq!(batches[2].created_at, later);

    // Batches hold the items in sequence: 0–9, 10–19, 20–24.
    let mut seen = Vec::new();
    for batch in &batches {
        seen.extend(
            all_batch_items(s, &batch.batch_id, 100)
                .await
                .into_iter()
                .map(|(_, body)| body),
        );
    }
    let want: Vec<String> = all.iter().map(|i| i.body.clone()).collect();
    assert_eq!(seen, want);
    assert_eq!(s.open_items("r2").await.unwrap(), 4);
    assert!(s.batches("r2", None).await.unwrap().is_empty());
}

/// One call seals at most `call_items` items (in whole batches), in one transaction; the rest
/// waits for the next call, in order.
async fn a_backlog_is_sealed_a_bounded_number_of_batches_per_call(b: &Backend) {
    let s = &b.store;
    let mut tx = s.begin_delivery().await.unwrap();
    let all = items("r1", "i", 25);
    tx.put(&[], &all).await.unwrap();
    tx.commit(&delivery("v1", None, 1)).await.unwrap();
    let rule = SealRule {
        max_items: 5,
        max_age_ms: 3_600_000,
        push: false,
        call_items: 12,
    };
    assert_eq!(rule.batches_per_call(), 2);
    let now = now_ms();
    assert_eq!(s.seal("r1", rule, now).await.unwrap(), 2);
    assert_eq!(s.open_items("r1").await.unwrap(), 15);
    assert_eq!(s.seal("r1", rule, now).await.unwrap(), 2);
    assert_eq!(s.seal("r1", rule, now).await.unwrap(), 1);
    assert_eq!(s.seal("r1", rule, now).await.unwrap(), 0);
    let batches = s.batches("r1", None).await.unwrap();
    assert_eq!(
        batches.iter().map(|b| b.items).collect::<Vec<_>>(),
        vec![5; 5]
    );
    let mut seen = Vec::new();
    for batch in &batches {
        seen.extend(
            all_batch_items(s, &batch.batch_id, 100)
                .await
                .into_iter()
                .map(|(_, body)| body),
        );
    }
    let want: Vec<String> = all.iter().map(|i| i.body.clone()).collect();
    assert_eq!(seen, want);
}

async fn seal_by_age_only(b: &Backend) {
    let s = &b.store;
    let rule = SealRule {
        max_items: 10,
        max_age_ms: 60_000,
        push: false,
        call_items: weiche::store::SEAL_ITEMS_PER_CALL,
    };
    let before = now_ms();
    deliver(s, &[], &items("r1", "a", 3), &delivery("v1", None, 1)).await;
    let after = now_ms();
    assert_eq!(s.seal("r1", rule, before + 59_999).await.unwrap(), 0);
    assert_eq!(s.seal("r1", rule, after + 60_000).await.unwrap(), 1);
    let batches = s.batches("r1", None).await.unwrap();
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].items, 3);
    assert_eq!(s.open_items("r1").await.unwrap(), 0);

    // Over the size: full batches go at once, the young rest waits.
    deliver(s, &[], &items("r1", "b", 12), &delivery("v1", None, 2)).await;
    let now = now_ms();
    assert_eq!(s.seal("r1", rule, now).await.unwrap(), 1);
    assert_eq!(s.open_items("r1").await.unwrap(), 2);
    assert_eq!(s.seal("r1", rule, now + 60_000).await.unwrap(), 1);
    let sizes: Vec<i64> = s
        .batches("r1", None)
        .await
        .unwrap()
        .iter()
        .map(|b| b.items)
        .collect();
    assert_eq!(sizes, vec![3, 10, 2]);
    // Nothing open: nothing to seal, however old.
    assert_eq!(s.seal("r3", rule, now + NEVER).await.unwrap(), 0);
}

/// More batches than one sealing statement claims (64 on PostgreSQL), and the old remainder, in
/// one call: in sequence, numbered in order, none empty, each as full as the rule says.
async fn seal_many_batches_in_one_call(b: &Backend) {
    let s = &b.store;
    let all = items("j1", "m", 2 * 150 + 1);
    deliver(s, &[], &all, &delivery("v1", None, 1)).await;
    let rule = SealRule {
        max_items: 2,
        max_age_ms: 0,
        push: true,
        call_items: weiche::store::SEAL_ITEMS_PER_CALL,
    };
    assert_eq!(s.seal("j1", rule, now_ms()).await.unwrap(), 151);
    assert_eq!(s.open_items("j1").await.unwrap(), 0);
    let batches = s.batches("j1", None).await.unwrap();
    assert_eq!(batches.len(), 151);
    assert!(batches[..150].iter().all(|b| b.items == 2));
    assert_eq!(batches[150].items, 1);
    let groups = s.push_heads("j1", 1_000).await.unwrap();
    assert_eq!(
        groups.iter().map(|g| &g.batch_id).collect::<Vec<_>>(),
        batches.iter().map(|b| &b.batch_id).collect::<Vec<_>>(),
        "every batch a push group, in seal order"
    );
    assert!(groups.windows(2).all(|w| w[0].seal_no + 1 == w[1].seal_no));
    let mut seen = Vec::new();
    for batch in &batches {
        seen.extend(
            all_batch_items(s, &batch.batch_id, 10)
                .await
                .into_iter()
                .map(|(_, body)| body),
        );
    }
    let want: Vec<String> = all.iter().map(|i| i.body.clone()).collect();
    assert_eq!(seen, want);
}

async fn batch_items_in_seq_order_with_paging(b: &Backend) {
    let s = &b.store;
    let mut want = Vec::new();
    for n in 0..3 {
        let mine = items("r1", &format!("d{n}"), 7 + n);
        want.extend(mine.iter().map(|i| i.body.clone()));
        let mut mixed = items("r2", &format!("x{n}"), 3);
        mixed.extend(mine);
        deliver(s, &[], &mixed, &delivery("v1", None, n as i64)).await;
    }
    assert_eq!(want.len(), 24);
    let rule = SealRule {
        max_items: 100,
        max_age_ms: 0,
        push: false,
        call_items: weiche::store::SEAL_ITEMS_PER_CALL,
    };
    assert_eq!(s.seal("r1", rule, now_ms()).await.unwrap(), 1);
    let batch = s.batches("r1", None).await.unwrap().remove(0);
    assert_eq!(batch.items, 24);

    let got = all_batch_items(s, &batch.batch_id, 5).await;
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "seq increasing");
    assert_eq!(
        got.iter().map(|(_, body)| body.clone()).collect::<Vec<_>>(),
        want
    );
    // Paging from the middle.
    let mid = got[9].0;
    let page = s.batch_items(&batch.batch_id, mid, 3).await.unwrap();
    assert_eq!(
        page.iter().map(|i| i.seq).collect::<Vec<_>>(),
        got[10..13].iter().map(|(seq, _)| *seq).collect::<Vec<_>>()
    );
    let last = got.last().unwrap().0;
    assert!(
        s.batch_items(&batch.batch_id, last, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.batch_items("no-such-batch", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.batch_items(&batch.batch_id, 0, 0)
            .await
            .unwrap()
            .is_empty()
    );

    // The same pages joined by the database.
    let mut joined = Vec::new();
    let mut after = 0;
    while let Some(page) = s
        .batch_items_joined(&batch.batch_id, after, 5, "\n")
        .await
        .unwrap()
    {
        assert!(page.count <= 5);
        assert_eq!(page.text.split('\n').count() as i64, page.count);
        joined.extend(page.text.split('\n').map(str::to_string));
        after = page.last_seq;
    }
    assert_eq!(joined, want);
    assert_eq!(after, last);
    let page = s
        .batch_items_joined(&batch.batch_id, mid, 3, ",")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(page.text, want[10..13].join(","));
    assert_eq!(page.last_seq, got[12].0);
    assert!(
        s.batch_items_joined("no-such-batch", 0, 10, ",")
            .await
            .unwrap()
            .is_none()
    );
}

async fn batch_of_another_recipient_is_none(b: &Backend) {
    let s = &b.store;
    deliver(s, &[], &items("r1", "a", 2), &delivery("v1", None, 1)).await;
    let rule = SealRule {
        max_items: 2,
        max_age_ms: NEVER,
        push: false,
        call_items: weiche::store::SEAL_ITEMS_PER_CALL,
    };
    assert_eq!(s.seal("r1", rule, now_ms()).await.unwrap(), 1);
    let batch = s.batches("r1", None).await.unwrap().remove(0);
    assert_eq!(
        s.batch("r1", &batch.batch_id).await.unwrap(),
        Some(batch.clone())
    );
    assert_eq!(s.batch("r2", &batch.batch_id).await.unwrap(), None);
    assert_eq!(s.batch("r1", "no-such-batch").await.unwrap(), None);
    assert!(s.batches("r2", None).await.unwrap().is_empty());
}

fn finding(record_ref: &str, code: &str, message: &str) -> Finding {
    Finding {
        record_ref: record_ref.into(),
        code: code.into(),
        message: message.into(),
    }
}

fn acked(outcome: AckOutcome) -> weiche::store::BatchInfo {
    match outcome {
        AckOutcome::Acknowledged(info) => info,
        other => panic!("not acknowledged: {other:?}"),
    }
}

async fn ack_is_idempotent_and_keeps_first_findings(b: &Backend) {
    let s = &b.store;
    deliver(s, &[], &items("r1", "a", 4), &delivery("v1", None, 1)).await;
    let rule = SealRule {
        max_items: 2,
        max_age_ms: NEVER,
        push: false,
        call_items: weiche::store::SEAL_ITEMS_PER_CALL,
    };
    assert_eq!(s.seal("r1", rule, now_ms()).await.unwrap(), 2);
    let batches = s.batches("r1", None).await.unwrap();
    let id = batches[0].batch_id.clone();

    // Another recipient's ack: not found, and nothing changes.
    assert_eq!(
        s.ack_batch("r2", &id, &[], 10).await.unwrap(),
        AckOutcome::NotFound
    );
    assert_eq!(
        s.batch("r1", &id).await.unwrap().unwrap().state,
        BatchState::Ready
    );
    assert_eq!(
        s.ack_batch("r1", "no-such-batch", &[], 10).await.unwrap(),
        AckOutcome::NotFound
    );
    // A finding about an item of another batch: refused whole, nothing changes.
    assert_eq!(
        s.ack_batch(
            "r1",
            &id,
            &[finding("p1.a-0", "X", ""), finding("p1.a-2", "X", "")],
            15
        )
        .await
        .unwrap(),
        AckOutcome::UnknownRef(1)
    );
    assert_eq!(
        s.batch("r1", &id).await.unwrap().unwrap().state,
        BatchState::Ready
    );
    assert!(s.feedback("v1", 0, 10).await.unwrap().is_empty());

    let first = [
        finding("p1.a-0", "X", "first"),
        finding("p1.a-1", "Y", "second"),
    ];
    let info = acked(s.ack_batch("r1", &id, &first, 20).await.unwrap());
    assert_eq!(info.state, BatchState::Acknowledged);
    assert_eq!(info.batch_id, id);
    assert_eq!(info.items, 2);
    let again = acked(
        s.ack_batch("r1", &id, &[finding("p1.a-0", "Z", "later")], 30)
            .await
            .unwrap(),
    );
    assert_eq!(again, info);
    assert_eq!(
        b.findings(&id).await.as_deref(),
        Some(
            r#"[{"record_ref":"p1.a-0","code":"X","message":"first"},{"record_ref":"p1.a-1","code":"Y","message":"second"}]"#
        )
    );
    // The findings are the vendor's feedback, translated back to its record ids, once.
    let feedback = s.feedback("v1", 0, 10).await.unwrap();
    let got: Vec<_> = feedback
        .iter()
        .map(|f| {
            (
                f.record_id.as_str(),
                f.reporting_period.as_str(),
                f.recipient.as_str(),
                f.code.as_str(),
                f.message.as_str(),
                f.received_at,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("a-0", "2026-01", "r1", "X", "first", 20),
            ("a-1", "2026-02", "r1", "Y", "second", 20),
        ]
    );
    assert!(feedback[0].seq < feedback[1].seq);
    let rest = s.feedback("v1", feedback[0].seq, 10).await.unwrap();
    assert_eq!(rest, feedback[1..]);
    assert_eq!(s.feedback("v1", 0, 1).await.unwrap().len(), 1);
    assert!(s.feedback("v2", 0, 10).await.unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Push groups and lanes

async fn push_groups_are_sealed_pending_and_in_order(b: &Backend) {
    let s = &b.store;
    deliver(s, &[], &items("j1", "a", 5), &delivery("v1", None, 1)).await;
    let rule = SealRule {
        max_items: 2,
        max_age_ms: 0,
        push: true,
        call_items: weiche::store::SEAL_ITEMS_PER_CALL,
    };
    assert_eq!(s.push_backlog("j1").await.unwrap(), 5);
    assert!(s.push_head("j1").await.unwrap().is_none());
    let now = now_ms();
    assert_eq!(s.seal("j1", rule, now).await.unwrap(), 3);
    assert_eq!(s.push_backlog("j1").await.unwrap(), 5);
    let head = s.push_head("j1").await.unwrap().expect("a pending group");
    assert_eq!(head.state, PushState::Pending);
    assert_eq!((head.items, head.attempts, head.next_at), (2, 0, now));
    assert_eq!(head.recipient, "j1");
    let bodies: Vec<String> = all_batch_items(s, &head.batch_id, 10)
        .await
        .into_iter()
        .map(|(_, body)| body)
        .collect();
    assert_eq!(bodies, vec!["a-0", "a-1"]);

    // Results are recorded only by the lane's holder.
    assert!(s.claim_lane("j1", "p1", now, 10_000).await.unwrap());
    assert!(
        !s.push_result("no-such", "p1", &PushOutcome::Delivered, now, &[])
            .await
            .unwrap()
    );
    assert!(
        !s.push_result(&head.batch_id, "p2", &PushOutcome::Delivered, now, &[])
            .await
            .unwrap(),
        "not the lane's holder"
    );
    let retry = PushOutcome::Retry {
        next_at: now + 500,
        error: "HTTP 503".into(),
    };
    assert!(
        s.push_result(&head.batch_id, "p1", &retry, now, &[])
            .await
            .unwrap()
    );
    let again = s.push_head("j1").await.unwrap().unwrap();
    assert_eq!(
        again.batch_id, head.batch_id,
        "a retried group stays the head"
    );
    assert_eq!((again.attempts, again.next_at), (1, now + 500));
    assert_eq!(again.last_error.as_deref(), Some("HTTP 503"));
    assert!(
        s.push_result(
            &head.batch_id,
            "p1",
            &PushOutcome::Delivered,
            now + 600,
            &[]
        )
        .await
        .unwrap()
    );
    assert!(
        !s.push_result(
            &head.batch_id,
            "p1",
            &PushOutcome::Delivered,
            now + 700,
            &[]
        )
        .await
        .unwrap(),
        "a delivered group is settled"
    );
    assert_eq!(
        s.batch("j1", &head.batch_id).await.unwrap().unwrap().state,
        BatchState::Acknowledged
    );
    assert_eq!(s.push_backlog("j1").await.unwrap(), 3);
    let next = s.push_head("j1").await.unwrap().unwrap();
    assert!(next.seal_no > head.seal_no);

    // A dead letter (with its audit event, in the same transaction) leaves the line.
    let dead = PushOutcome::Dead {
        error: "HTTP 400".into(),
    };
    let ev = event("dead_letter", None, r#"{"kind":"dead_letter"}"#);
    assert!(
        s.push_result(&next.batch_id, "p1", &dead, now, &[ev])
            .await
            .unwrap()
    );
    assert_eq!(all_audit(s).await.len(), 1);
    let third = s.push_head("j1").await.unwrap().unwrap();
    assert!(third.seal_no > next.seal_no);
    let dead_list = s.push_groups(PushState::Dead, None).await.unwrap();
    assert_eq!(dead_list.len(), 1);
    assert_eq!(dead_list[0].batch_id, next.batch_id);
    assert_eq!(dead_list[0].attempts, 1);
    assert_eq!(
        s.push_groups(PushState::Dead, Some("j2")).await.unwrap(),
        vec![]
    );

    // Replay puts it back first in line with its attempts reset; discard ends it.
    let replayed = s
        .settle_dead_letter(&next.batch_id, PushState::Pending, now + 5, &[])
        .await
        .unwrap()
        .expect("replayed");
    assert_eq!((replayed.state, replayed.attempts), (PushState::Pending, 0));
    assert_eq!(
        s.push_head("j1").await.unwrap().unwrap().batch_id,
        next.batch_id
    );
    assert!(
        s.settle_dead_letter(&next.batch_id, PushState::Discarded, now, &[])
            .await
            .unwrap()
            .is_none(),
        "only dead letters are settled"
    );
    assert!(
        s.push_result(&next.batch_id, "p1", &dead, now, &[])
            .await
            .unwrap()
    );
    let discarded = s
        .settle_dead_letter(&next.batch_id, PushState::Discarded, now, &[])
        .await
        .unwrap()
        .expect("discarded");
    assert_eq!(discarded.state, PushState::Discarded);
    assert_eq!(
        s.push_group(&next.batch_id).await.unwrap().unwrap().state,
        PushState::Discarded
    );
    assert_eq!(
        s.push_head("j1").await.unwrap().unwrap().batch_id,
        third.batch_id
    );
    assert!(
        s.push_groups(PushState::Dead, None)
            .await
            .unwrap()
            .is_empty()
    );
    // Pull sealing makes no push groups.
    deliver(s, &[], &items("r1", "p", 2), &delivery("v1", None, 2)).await;
    let pull = SealRule {
        max_items: 10,
        max_age_ms: 0,
        push: false,
        call_items: weiche::store::SEAL_ITEMS_PER_CALL,
    };
    assert_eq!(s.seal("r1", pull, now_ms()).await.unwrap(), 1);
    assert!(s.push_head("r1").await.unwrap().is_none());
}

async fn push_lanes_are_leased_and_taken_over(b: &Backend) {
    let s = &b.store;
    let other = b.reopen().await;
    let now = now_ms();
    assert!(s.claim_lane("j1", "p1", now, 1_000).await.unwrap());
    assert!(!other.claim_lane("j1", "p2", now + 10, 1_000).await.unwrap());
    // Renewal by the holder; other lanes are independent.
    assert!(s.claim_lane("j1", "p1", now + 500, 1_000).await.unwrap());
    assert!(
        !other
            .claim_lane("j1", "p2", now + 1_200, 1_000)
            .await
            .unwrap()
    );
    assert!(other.claim_lane("j2", "p2", now, 1_000).await.unwrap());
    // Expired: taken over, and the old holder is fenced off.
    assert!(
        other
            .claim_lane("j1", "p2", now + 1_501, 1_000)
            .await
            .unwrap()
    );
    assert!(!s.claim_lane("j1", "p1", now + 1_600, 1_000).await.unwrap());
    deliver(s, &[], &items("j1", "a", 1), &delivery("v1", None, 1)).await;
    let rule = SealRule {
        max_items: 10,
        max_age_ms: 0,
        push: true,
        call_items: weiche::store::SEAL_ITEMS_PER_CALL,
    };
    assert_eq!(s.seal("j1", rule, now_ms()).await.unwrap(), 1);
    let head = s.push_head("j1").await.unwrap().unwrap();
    assert!(
        !s.push_result(&head.batch_id, "p1", &PushOutcome::Delivered, now, &[])
            .await
            .unwrap()
    );
    assert!(
        other
            .push_result(&head.batch_id, "p2", &PushOutcome::Delivered, now, &[])
            .await
            .unwrap()
    );
    // Released: free at once.
    other.release_lane("j1", "p2").await.unwrap();
    s.release_lane("j2", "p1").await.unwrap(); // not p1's: no effect
    assert!(s.claim_lane("j1", "p1", now + 1_700, 1_000).await.unwrap());
    assert!(!s.claim_lane("j2", "p1", now + 10, 1_000).await.unwrap());
}

async fn push_results_of_a_window_in_one_call(b: &Backend) {
    let s = &b.store;
    deliver(s, &[], &items("j1", "w", 7), &delivery("v1", None, 1)).await;
    let rule = SealRule {
        max_items: 2,
        max_age_ms: 0,
        push: true,
        call_items: weiche::store::SEAL_ITEMS_PER_CALL,
    };
    let now = now_ms();
    assert_eq!(s.seal("j1", rule, now).await.unwrap(), 4);
    let heads = s.push_heads("j1", 10).await.unwrap();
    assert_eq!(heads.len(), 4);
    assert!(heads.windows(2).all(|w| w[0].seal_no < w[1].seal_no));
    assert_eq!(s.push_heads("j1", 2).await.unwrap(), heads[..2]);
    let result = |g: &weiche::store::PushGroup, outcome: PushOutcome, audit| PushResult {
        batch_id: g.batch_id.clone(),
        outcome,
        at_ms: now + 5,
        audit,
    };
    let window = vec![
        result(&heads[0], PushOutcome::Delivered, vec![]),
        result(
            &heads[1],
            PushOutcome::Dead {
                error: "HTTP 400".into(),
            },
            vec![event_at(now, 1)],
        ),
        result(
            &heads[2],
            PushOutcome::Retry {
                next_at: now + 1_000,
                error: "HTTP 503".into(),
            },
            vec![],
        ),
    ];
    // Not the lane's holder: nothing is recorded.
    assert!(s.claim_lane("j1", "p1", now, 10_000).await.unwrap());
    assert_eq!(s.push_results("j1", "p2", &window).await.unwrap(), 0);
    assert_eq!(s.push_heads("j1", 10).await.unwrap(), heads);
    // The holder records the window at once; a group no longer pending is skipped.
    let audit_before = s.audit_events(0, 1_000).await.unwrap().len();
    assert_eq!(s.push_results("j1", "p1", &window).await.unwrap(), 3);
    assert_eq!(s.push_results("j1", "p1", &window[..2]).await.unwrap(), 0);
    let state = |i: usize| {
        let id = heads[i].batch_id.clone();
        async move { s.push_group(&id).await.unwrap().unwrap() }
    };
    assert_eq!(state(0).await.state, PushState::Delivered);
    assert_eq!(state(1).await.state, PushState::Dead);
    let retried = state(2).await;
    assert_eq!(
        (retried.state, retried.attempts, retried.next_at),
        (PushState::Pending, 1, now + 1_000)
    );
    assert_eq!(retried.last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(state(3).await.attempts, 0);
    let pending: Vec<String> = s
        .push_heads("j1", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.batch_id)
        .collect();
    assert_eq!(
        pending,
        [heads[2].batch_id.clone(), heads[3].batch_id.clone()]
    );
    assert_eq!(
        s.audit_events(0, 1_000).await.unwrap().len(),
        audit_before + 1
    );
    let delivered = s.batch("j1", &heads[0].batch_id).await.unwrap().unwrap();
    assert_eq!(delivered.state, BatchState::Acknowledged);
}

async fn concurrent_lane_claims_have_one_winner(b: &Backend) {
    let now = now_ms();
    let mut stores = vec![b.store.clone()];
    for _ in 0..3 {
        stores.push(b.reopen().await);
    }
    for round in 0..10 {
        let lane = format!("lane-{round}");
        let claims = stores.iter().enumerate().map(|(i, s)| {
            let (s, lane) = (s.clone(), lane.clone());
            tokio::spawn(async move {
                s.claim_lane(&lane, &format!("p{i}"), now, 60_000)
                    .await
                    .unwrap()
            })
        });
        let won: Vec<bool> = futures::future::join_all(claims)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(won.iter().filter(|w| **w).count(), 1, "{won:?}");
    }
}

async fn batches_filter_by_state(b: &Backend) {
    let s = &b.store;
    deliver(s, &[], &items("r1", "a", 6), &delivery("v1", None, 1)).await;
    let rule = SealRule {
        max_items: 2,
        max_age_ms: NEVER,
        push: false,
        call_items: weiche::store::SEAL_ITEMS_PER_CALL,
    };
    assert_eq!(s.seal("r1", rule, now_ms()).await.unwrap(), 3);
    let all = s.batches("r1", None).await.unwrap();
    let ids: Vec<String> = all.iter().map(|b| b.batch_id.clone()).collect();
    acked(s.ack_batch("r1", &ids[1], &[], 5).await.unwrap());

    let ids_of = |v: Vec<weiche::store::BatchInfo>| -> Vec<String> {
        v.into_iter().map(|b| b.batch_id).collect()
    };
    assert_eq!(
        ids_of(s.batches("r1", None).await.unwrap()),
        ids,
        "oldest first"
    );
    assert_eq!(
        ids_of(s.batches("r1", Some(BatchState::Ready)).await.unwrap()),
        vec![ids[0].clone(), ids[2].clone()]
    );
    assert_eq!(
        ids_of(
            s.batches("r1", Some(BatchState::Acknowledged))
                .await
                .unwrap()
        ),
        vec![ids[1].clone()]
    );
}

async fn chunked_put_of_5000_records_in_one_transaction(b: &Backend) {
    let s = &b.store;
    let body = "x".repeat(200);
    let records: Vec<NewRecord> = (0..5_000)
        .map(|i| rec("v1", &format!("R{i:05}"), "2026-10", &format!("{i}:{body}")))
        .collect();
    let its: Vec<NewItem> = (0..5_000)
        .map(|i| item("r1", &format!("R{i:05}"), "2026-10", &format!("{i}")))
        .collect();
    let mut tx = s.begin_delivery().await.unwrap();
    for (r, i) in records.chunks(1_200).zip(its.chunks(1_200)) {
        tx.put(r, i).await.unwrap();
    }
    assert_eq!(
        tx.commit(&delivery("v1", Some("big"), 1)).await.unwrap(),
        CommitOutcome::Committed
    );
    assert_eq!(s.open_items("r1").await.unwrap(), 5_000);
    for i in [0, 1_199, 1_200, 2_500, 4_999] {
        assert_eq!(
            s.record("v1", &format!("R{i:05}"), "2026-10")
                .await
                .unwrap(),
            Some(format!("{i}:{body}"))
        );
    }

    // One put far beyond any statement's parameter limit (5,000 × 7 and 10,000 × 8 values).
    let records: Vec<NewRecord> = (0..5_000)
        .map(|i| rec("v1", &format!("S{i:05}"), "2026-11", &format!("s{i}")))
        .collect();
    let its: Vec<NewItem> = (0..10_000)
        .map(|i| item("r1", &format!("S{i:05}"), "2026-11", &format!("s{i}")))
        .collect();
    assert_eq!(
        deliver(s, &records, &its, &delivery("v1", Some("bigger"), 2)).await,
        CommitOutcome::Committed
    );
    assert_eq!(s.open_items("r1").await.unwrap(), 15_000);
    assert_eq!(
        s.record("v1", "S04999", "2026-11")
            .await
            .unwrap()
            .as_deref(),
        Some("s4999")
    );

    let rule = SealRule {
        max_items: 6_000,
        max_age_ms: 0,
        push: false,
        call_items: weiche::store::SEAL_ITEMS_PER_CALL,
    };
    assert_eq!(s.seal("r1", rule, now_ms()).await.unwrap(), 3);
    let batches = s.batches("r1", None).await.unwrap();
    assert_eq!(
        batches.iter().map(|b| b.items).collect::<Vec<_>>(),
        vec![6_000, 6_000, 3_000]
    );
    assert_eq!(batches[0].periods, vec!["2026-10", "2026-11"]);
    let got = all_batch_items(s, &batches[0].batch_id, 1_000).await;
    assert_eq!(got.len(), 6_000);
    assert_eq!(got[0].1, "0");
    assert_eq!(got[4_999].1, "4999");
    assert_eq!(got[5_000].1, "s0");
}

async fn concurrent_sealing_from_two_stores_seals_each_item_once(b: &Backend) {
    let stores = [b.store.clone(), b.reopen().await];
    let rule = SealRule {
        max_items: 10,
        max_age_ms: NEVER,
        push: false,
        call_items: weiche::store::SEAL_ITEMS_PER_CALL,
    };
    let writing = Arc::new(AtomicBool::new(true));
    let mut sealers = Vec::new();
    for store in &stores {
        for _ in 0..2 {
            let store = store.clone();
            let writing = writing.clone();
            sealers.push(tokio::spawn(async move {
                let mut sealed = 0;
                while writing.load(Ordering::SeqCst) {
                    sealed += store.seal("r1", rule, now_ms()).await.unwrap();
                    tokio::task::yield_now().await;
                }
                sealed
            }));
        }
    }
    let mut total = 0i64;
    let mut writers = Vec::new();
    for (n, store) in stores.iter().enumerate() {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let mut written = 0i64;
            for d in 0..15 {
                let count = 1 + (d * 7 + n * 3) % 23;
                let its = items("r1", &format!("w{n}-{d}"), count);
                deliver(&store, &[], &its, &delivery("v1", None, d as i64)).await;
                written += count as i64;
            }
            written
        }));
    }
    for w in writers {
        total += w.await.unwrap();
    }
    writing.store(false, Ordering::SeqCst);
    let mut sealed = 0;
    for t in sealers {
        sealed += t.await.unwrap();
    }
    sealed += stores[1]
        .seal("r1", rule, now_ms() + 2 * NEVER)
        .await
        .unwrap();
    assert_eq!(b.store.open_items("r1").await.unwrap(), 0);

    let batches = b.store.batches("r1", None).await.unwrap();
    assert_eq!(batches.len() as u64, sealed);
    assert!(batches.iter().all(|b| b.items >= 1 && b.items <= 10));
    assert!(
        batches.iter().filter(|b| b.items < 10).count() <= 1,
        "only the final, age-sealed batch may be short"
    );
    assert_eq!(batches.iter().map(|b| b.items).sum::<i64>(), total);
    let mut seqs = HashSet::new();
    for batch in &batches {
        let got = all_batch_items(&b.store, &batch.batch_id, 4).await;
        assert_eq!(got.len() as i64, batch.items);
        for (seq, _) in got {
            assert!(seqs.insert(seq), "item {seq} in two batches");
        }
    }
    assert_eq!(seqs.len() as i64, total);
}

// ---------------------------------------------------------------------------------------------
// Record lifecycle, holders, erasure, withdrawals, audit

async fn put_stores_delivery_id_state_and_consent(b: &Backend) {
    let s = &b.store;
    let r = rec_of(("v1", "R1", "2026-10", "P1", "C1", "d-1"), "a");
    deliver(
        s,
        &[r],
        &[item_of("r1", ItemKind::Record, "R1", "2026-10", Some("K1"))],
        &delivery("v1", None, 1),
    )
    .await;
    let rows = b
        .texts("SELECT delivery_id || '/' || state FROM records WHERE record_id = 'R1'")
        .await;
    assert_eq!(rows, vec![Some("d-1/active".to_string())]);
    assert_eq!(
        b.texts("SELECT consent_id FROM items").await,
        vec![Some("K1".to_string())]
    );

    // A new version (from another delivery) takes over the delivery id.
    let r = rec_of(("v1", "R1", "2026-10", "P1", "C1", "d-2"), "b");
    deliver(s, &[r], &[], &delivery("v1", None, 2)).await;
    assert_eq!(
        b.texts("SELECT delivery_id FROM records").await,
        vec![Some("d-2".to_string())]
    );
}

async fn cancel_missing_respects_scope_keep_and_delivery(b: &Backend) {
    let s = &b.store;
    let first = [
        ("v1", "R1", "2026-10", "P1", "C1", "dA"),
        ("v1", "R2", "2026-10", "P1", "C1", "dA"),
        ("v1", "R3", "2026-10", "P1", "C1", "dA"),
        ("v1", "R4", "2026-10", "P1", "C2", "dA"),
        ("v1", "R5", "2026-10", "P2", "C2", "dA"),
        ("v1", "R6", "2026-11", "P1", "C2", "dA"),
        ("v2", "R3", "2026-10", "P1", "C1", "dA"),
    ];
    let records: Vec<NewRecord> = first.iter().map(|k| rec_of(*k, "x")).collect();
    deliver(s, &records, &[], &delivery("v1", None, 1)).await;

    // A full delivery dB of (P1, 2026-10) writes R1, rejects R2 (kept) and omits R3 and R4.
    let scope = vec![key("P1", "2026-10")];
    let mut tx = s.begin_delivery().await.unwrap();
    tx.put(
        &[rec_of(("v1", "R1", "2026-10", "P1", "C1", "dB"), "y")],
        &[],
    )
    .await
    .unwrap();
    let cancelled = tx
        .cancel_missing("dB", "v1", &scope, &["R2".to_string()])
        .await
        .unwrap();
    assert_eq!(cancelled, vec![key("R3", "2026-10"), key("R4", "2026-10")]);
    // Already cancelled: not again.
    assert!(
        tx.cancel_missing("dB", "v1", &scope, &[])
            .await
            .unwrap()
            .iter()
            .all(|k| k.0 == "R2")
    );
    // No scopes: nothing.
    assert!(
        tx.cancel_missing("dB", "v1", &[], &[])
            .await
            .unwrap()
            .is_empty()
    );
    tx.commit(&delivery("v1", None, 2)).await.unwrap();

    assert_eq!(
        b.state("v1", "R1", "2026-10").await.as_deref(),
        Some("active")
    );
    assert_eq!(
        b.state("v1", "R2", "2026-10").await.as_deref(),
        Some("cancelled"),
        "the second call above (keep empty) cancelled R2"
    );
    assert_eq!(
        b.state("v1", "R3", "2026-10").await.as_deref(),
        Some("cancelled")
    );
    assert_eq!(
        b.state("v1", "R4", "2026-10").await.as_deref(),
        Some("cancelled")
    );
    assert_eq!(
        b.state("v1", "R5", "2026-10").await.as_deref(),
        Some("active")
    );
    assert_eq!(
        b.state("v1", "R6", "2026-11").await.as_deref(),
        Some("active")
    );
    assert_eq!(
        b.state("v2", "R3", "2026-10").await.as_deref(),
        Some("active")
    );
    // A cancelled record keeps its last body.
    assert_eq!(
        s.record("v1", "R3", "2026-10").await.unwrap().as_deref(),
        Some("x")
    );

    // Delivered again, a cancelled record is active again.
    deliver(
        s,
        &[rec_of(("v1", "R3", "2026-10", "P1", "C1", "dC"), "z")],
        &[],
        &delivery("v1", None, 3),
    )
    .await;
    assert_eq!(
        b.state("v1", "R3", "2026-10").await.as_deref(),
        Some("active")
    );

    // Rolled back, a cancellation leaves nothing; several scopes at once.
    let mut tx = s.begin_delivery().await.unwrap();
    let got = tx
        .cancel_missing(
            "dD",
            "v1",
            &[
                key("P1", "2026-10"),
                key("P2", "2026-10"),
                key("P1", "2026-11"),
            ],
            &["R1".to_string()],
        )
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![
            key("R3", "2026-10"),
            key("R5", "2026-10"),
            key("R6", "2026-11")
        ]
    );
    tx.rollback().await.unwrap();
    assert_eq!(
        b.state("v1", "R5", "2026-10").await.as_deref(),
        Some("active")
    );

    // The delivery's own records are never cancelled by it.
    let mut tx = s.begin_delivery().await.unwrap();
    assert_eq!(
        tx.cancel_missing("dC", "v1", &scope, &[]).await.unwrap(),
        vec![key("R1", "2026-10")]
    );
    tx.commit_plain().await.unwrap();
    assert_eq!(
        b.state("v1", "R3", "2026-10").await.as_deref(),
        Some("active")
    );
    assert_eq!(
        b.state("v1", "R1", "2026-10").await.as_deref(),
        Some("cancelled")
    );
}

async fn cancel_missing_with_thousands_of_scopes_and_kept_ids(b: &Backend) {
    let s = &b.store;
    // 6,000 records over 3 periods, then a full delivery over 40,000 scopes (far beyond any
    // parameter limit) that keeps 35,000 ids (most of them unknown) and writes none.
    let records: Vec<NewRecord> = (0..6_000)
        .map(|i| {
            let id = format!("R{i:05}");
            let period = format!("2026-0{}", 1 + i % 3);
            rec_of(("v1", &id, &period, "P1", "C", "old"), "x")
        })
        .collect();
    deliver(s, &records, &[], &delivery("v1", None, 1)).await;
    let mut scopes: Vec<(String, String)> = (0..40_000)
        .map(|i| key(&format!("Q{i}"), "2026-01"))
        .collect();
    scopes.push(key("P1", "2026-01"));
    scopes.push(key("P1", "2026-02"));
    let keep: Vec<String> = (0..35_000).map(|i| format!("R{:05}", i * 2)).collect();
    let mut tx = s.begin_delivery().await.unwrap();
    let cancelled = tx
        .cancel_missing("new", "v1", &scopes, &keep)
        .await
        .unwrap();
    tx.commit_plain().await.unwrap();
    // Periods 01 and 02 (i % 3 in {0, 1}), odd i only.
    let mut want: Vec<(String, String)> = (0..6_000)
        .filter(|i| i % 3 != 2 && i % 2 == 1)
        .map(|i| key(&format!("R{i:05}"), &format!("2026-0{}", 1 + i % 3)))
        .collect();
    want.sort();
    assert_eq!(cancelled.len(), want.len());
    assert_eq!(cancelled, want);
    assert_eq!(
        b.count("SELECT COUNT(*) FROM records WHERE state = 'cancelled'")
            .await,
        want.len() as i64
    );
}

async fn holders_follow_the_latest_item_within_the_transaction(b: &Backend) {
    let s = &b.store;
    let p = "2026-10";
    deliver(
        s,
        &[rec("v1", "R1", p, "a"), rec("v1", "R2", p, "b")],
        &[
            item_of("r1", ItemKind::Record, "R1", p, Some("K1")),
            item_of("r2", ItemKind::Record, "R1", p, None),
            item_of("r3", ItemKind::Record, "R1", p, Some("K3")),
            item_of("r4", ItemKind::Record, "R1", p, None),
            item_of("r1", ItemKind::Record, "R2", p, None),
        ],
        &delivery("v1", None, 1),
    )
    .await;
    // The same record id at another vendor and in another period are other records.
    let mut other = item_of("r9", ItemKind::Record, "R1", p, None);
    other.vendor = "v2".into();
    deliver(
        s,
        &[],
        &[
            other,
            item_of("r8", ItemKind::Record, "R1", "2026-11", None),
        ],
        &delivery("v1", None, 2),
    )
    .await;

    let mut tx = s.begin_delivery().await.unwrap();
    let keys = vec![key("R1", p), key("R2", p), key("R1", p), key("NOPE", p)];
    assert_eq!(
        tx.holders("v1", &keys).await.unwrap(),
        vec![
            holder("r1", "R1", p, Some("K1")),
            holder("r2", "R1", p, None),
            holder("r3", "R1", p, Some("K3")),
            holder("r4", "R1", p, None),
            holder("r1", "R2", p, None),
        ]
    );
    assert!(tx.holders("v1", &[]).await.unwrap().is_empty());
    assert!(tx.holders("v3", &keys).await.unwrap().is_empty());

    // Written in this transaction: a cancellation, a revocation and an erasure end holding; a
    // new record item after a revocation starts it again (under its own consent).
    tx.put(
        &[],
        &[
            item_of("r2", ItemKind::Cancellation, "R1", p, None),
            item_of("r3", ItemKind::Revocation, "R1", p, Some("K3")),
            item_of("r4", ItemKind::Erasure, "R1", p, None),
            item_of("r1", ItemKind::Revocation, "R2", p, None),
            item_of("r1", ItemKind::Record, "R2", p, Some("K9")),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        tx.holders("v1", &keys).await.unwrap(),
        vec![
            holder("r1", "R1", p, Some("K1")),
            holder("r1", "R2", p, Some("K9")),
        ]
    );
    tx.rollback().await.unwrap();

    // Many keys in one call.
    let many: Vec<(String, String)> = (0..40_000)
        .map(|i| key(&format!("X{i}"), p))
        .chain([key("R2", p)])
        .collect();
    let mut tx = s.begin_delivery().await.unwrap();
    assert_eq!(
        tx.holders("v1", &many).await.unwrap(),
        vec![holder("r1", "R2", p, None)]
    );
    tx.rollback().await.unwrap();
}

async fn client_holders_with_and_without_consent_filter(b: &Backend) {
    let s = &b.store;
    let records = [
        rec_of(("v1", "R1", "2026-10", "P1", "C1", "d"), "a"),
        rec_of(("v1", "R2", "2026-11", "P1", "C1", "d"), "b"),
        rec_of(("v1", "R3", "2026-10", "P1", "C2", "d"), "c"),
        rec_of(("v2", "R4", "2026-10", "P1", "C1", "d"), "d"),
    ];
    let mut v2_item = item_of("r1", ItemKind::Record, "R4", "2026-10", Some("K1"));
    v2_item.vendor = "v2".into();
    deliver(
        s,
        &records,
        &[
            item_of("r1", ItemKind::Record, "R1", "2026-10", Some("K1")),
            item_of("r2", ItemKind::Record, "R1", "2026-10", Some("K2")),
            item_of("r1", ItemKind::Record, "R2", "2026-11", Some("K2")),
            item_of("r3", ItemKind::Record, "R2", "2026-11", None),
            item_of("r1", ItemKind::Record, "R3", "2026-10", Some("K1")),
            // An item of C1's record id in a period without a record row: not C1's.
            item_of("r1", ItemKind::Record, "R1", "2026-12", Some("K1")),
            v2_item,
        ],
        &delivery("v1", None, 1),
    )
    .await;

    let mut tx = s.begin_delivery().await.unwrap();
    assert_eq!(
        tx.client_holders("v1", "C1", None).await.unwrap(),
        vec![
            holder("r1", "R1", "2026-10", Some("K1")),
            holder("r2", "R1", "2026-10", Some("K2")),
            holder("r1", "R2", "2026-11", Some("K2")),
            holder("r3", "R2", "2026-11", None),
        ]
    );
    assert_eq!(
        tx.client_holders("v1", "C1", Some("K2")).await.unwrap(),
        vec![
            holder("r2", "R1", "2026-10", Some("K2")),
            holder("r1", "R2", "2026-11", Some("K2")),
        ]
    );
    assert_eq!(
        tx.client_holders("v1", "C1", Some("K1")).await.unwrap(),
        vec![holder("r1", "R1", "2026-10", Some("K1"))]
    );
    assert!(
        tx.client_holders("v1", "C1", Some("K7"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        tx.client_holders("v1", "C9", None)
            .await
            .unwrap()
            .is_empty()
    );

    // In the same transaction: r2's item is revoked; r1's R1 is re-sent under K2, so the filter
    // follows the latest item's consent.
    tx.put(
        &[],
        &[
            item_of("r2", ItemKind::Revocation, "R1", "2026-10", Some("K2")),
            item_of("r1", ItemKind::Record, "R1", "2026-10", Some("K2")),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        tx.client_holders("v1", "C1", Some("K2")).await.unwrap(),
        vec![
            holder("r1", "R1", "2026-10", Some("K2")),
            holder("r1", "R2", "2026-11", Some("K2")),
        ]
    );
    assert!(
        tx.client_holders("v1", "C1", Some("K1"))
            .await
            .unwrap()
            .is_empty()
    );
    tx.rollback().await.unwrap();
}

/// A family name that occurs nowhere else in the database.
const ERASED_NAME: &str = "Zzyzxbrandtová";

async fn erase_client_deletes_open_and_stubs_sealed_items(b: &Backend) {
    let s = &b.store;
    let p = "2026-10";
    // R1 has a body larger than a page (overflow pages), R2 a small one; R3 is another client's.
    let big = format!(
        r#"{{"client":{{"family_name":"{ERASED_NAME}"}},"notes":"{}"}}"#,
        "n".repeat(20_000)
    );
    let small = format!(r#"{{"client":{{"family_name":"{ERASED_NAME}"}}}}"#);
    let records = [
        rec_of(("v1", "R1", p, "P1", "C-erase", "d"), &big),
        rec_of(("v1", "R2", p, "P1", "C-erase", "d"), &small),
        rec_of(("v1", "R3", p, "P1", "C-keep", "d"), r#"{"keep":true}"#),
        rec_of(
            ("v2", "R1", p, "P1", "C-erase", "d"),
            r#"{"other":"vendor"}"#,
        ),
    ];
    let named = |recipient: &str, record_id: &str| {
        let mut i = item_of(recipient, ItemKind::Record, record_id, p, Some("K1"));
        i.body = format!(r#"{{"type":"record","family_name":"{ERASED_NAME}"}}"#);
        i
    };
    deliver(
        s,
        &records,
        &[named("r1", "R1"), named("r1", "R2"), named("r1", "R3")],
        &delivery("v1", None, 1),
    )
    .await;
    let rule = SealRule {
        max_items: 100,
        max_age_ms: 0,
        push: false,
        call_items: weiche::store::SEAL_ITEMS_PER_CALL,
    };
    assert_eq!(s.seal("r1", rule, now_ms()).await.unwrap(), 1);
    let batch = s.batches("r1", None).await.unwrap().remove(0);
    // Later items, still open: a new version for r1, a first one for r2, one of C-keep.
    deliver(
        s,
        &[],
        &[
            named("r1", "R1"),
            named("r2", "R2"),
            named("r2", "R3"),
            item_of("r2", ItemKind::Cancellation, "R1", p, None),
        ],
        &delivery("v1", None, 2),
    )
    .await;
    assert_eq!(s.open_items("r1").await.unwrap(), 1);
    assert_eq!(s.open_items("r2").await.unwrap(), 3);
    // A receipt quoting the name (as receipts written before values were no longer quoted
    // did) about a rejected record of each client, found through the subjects; and a withdrawal.
    let mut with_errors = delivery("v1", None, 3);
    with_errors.receipt = format!(
        r#"{{"delivery_id":"{}","status":"E3","errors":[{{"record":1,"record_id":"R9","field":"client.family_name","code":"F002","message":"family name '{ERASED_NAME}' contains ','"}},{{"record":2,"record_id":"R8","field":"client.family_name","code":"F002","message":"family name '{ERASED_NAME}' contains '1'"}},{{"record":null,"code":"S020","message":"every record was rejected"}}],"warnings":[],"notes":[]}}"#,
        with_errors.id
    );
    with_errors.subjects = vec![
        ReceiptSubject {
            record: 1,
            subject: "S-erase".into(),
        },
        ReceiptSubject {
            record: 2,
            subject: "S-keep".into(),
        },
    ];
    deliver(s, &[], &[], &with_errors).await;
    let mut tx = s.begin_delivery().await.unwrap();
    tx.put_withdrawal(
        "v1",
        &Withdrawal {
            client_id: "C-erase".into(),
            consent_id: "K1".into(),
            withdrawn_on: "2026-10-01".into(),
        },
    )
    .await
    .unwrap();
    tx.commit_plain().await.unwrap();

    if !b.postgres {
        s.compact().await.unwrap();
        assert!(
            sqlite_files_contain(b, ERASED_NAME),
            "the name is in the file before the erasure (else the check below proves nothing)"
        );
    }

    let mut tx = s.begin_delivery().await.unwrap();
    assert_eq!(
        tx.erase_client("v1", "C-erase", "S-erase").await.unwrap(),
        Erased {
            records: 2,
            // R1 and R2 sealed for r1 (blanked), R1 open for r1 and R2 open for r2 (deleted).
            items: 4,
            // The open cancellation of R1 for r2.
            lifecycle_items: 1,
            receipts: 1,
            receipt_entries: 1,
            withdrawals: 1,
            feedback: 0,
        }
    );
    assert!(
        tx.client_holders("v1", "C-erase", None)
            .await
            .unwrap()
            .is_empty()
    );
    tx.commit_plain().await.unwrap();

    assert_eq!(s.record("v1", "R1", p).await.unwrap(), None);
    assert_eq!(s.record("v1", "R2", p).await.unwrap(), None);
    assert!(s.record("v1", "R3", p).await.unwrap().is_some());
    assert!(
        s.record("v2", "R1", p).await.unwrap().is_some(),
        "other vendor"
    );
    // Open items of the client are gone, others stay.
    assert_eq!(s.open_items("r1").await.unwrap(), 0);
    assert_eq!(s.open_items("r2").await.unwrap(), 1);
    // Sealed items are stubs, in order; C-keep's item is untouched.
    let bodies: Vec<String> = all_batch_items(s, &batch.batch_id, 10)
        .await
        .into_iter()
        .map(|(_, body)| body)
        .collect();
    assert_eq!(
        bodies,
        vec![
            r#"{"type":"record","record_ref":"r1.R1","erased":true}"#.to_string(),
            r#"{"type":"record","record_ref":"r1.R2","erased":true}"#.to_string(),
            format!(r#"{{"type":"record","family_name":"{ERASED_NAME}"}}"#),
        ]
    );
    // The receipt entry about C-erase's record is scrubbed, C-keep's and the delivery's stay.
    let receipt: serde_json::Value = serde_json::from_str(
        &s.delivery("v1", &with_errors.id)
            .await
            .unwrap()
            .unwrap()
            .receipt,
    )
    .unwrap();
    let messages: Vec<&str> = receipt["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages[0], ERASED_MESSAGE);
    assert!(messages[1].contains(ERASED_NAME), "{messages:?}");
    assert_eq!(messages[2], "every record was rejected");
    assert_eq!(receipt["errors"][0]["record_id"], "R9", "structure kept");
    assert!(s.withdrawals("v1").await.unwrap().is_empty());
    // A second erasure finds nothing.
    let mut tx = s.begin_delivery().await.unwrap();
    let again = tx.erase_client("v1", "C-erase", "S-erase").await.unwrap();
    assert!(again.is_empty(), "{again:?}");
    tx.commit_plain().await.unwrap();

    // Only C-keep's sealed and open items still carry the name; erase C-keep too, then nothing
    // in the files may.
    let mut tx = s.begin_delivery().await.unwrap();
    let keep = tx.erase_client("v1", "C-keep", "S-keep").await.unwrap();
    assert_eq!(
        (keep.records, keep.receipts, keep.receipt_entries),
        (1, 1, 1)
    );
    tx.commit_plain().await.unwrap();
    assert_eq!(
        b.count(&format!(
            // SQLite keeps item bodies in a table of their own.
            "SELECT COUNT(*) FROM {} WHERE body LIKE '%{ERASED_NAME}%'",
            if b.postgres { "items" } else { "item_bodies" }
        ))
        .await,
        0
    );
    assert_eq!(
        b.count(&format!(
            "SELECT COUNT(*) FROM records WHERE body LIKE '%{ERASED_NAME}%'"
        ))
        .await,
        0
    );
    assert_eq!(
        b.count(&format!(
            "SELECT COUNT(*) FROM deliveries WHERE receipt LIKE '%{ERASED_NAME}%'"
        ))
        .await,
        0
    );
    assert_eq!(b.count("SELECT COUNT(*) FROM receipt_subjects").await, 0);
    s.compact().await.unwrap();
    if !b.postgres {
        assert!(
            !sqlite_files_contain(b, ERASED_NAME),
            "the erased name is still in the database file or its WAL after compact"
        );
        let wal = b.sqlite_path().with_extension("db-wal");
        assert!(
            std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
            "compact truncates the WAL"
        );
    }
    // The store is still fine.
    s.ping().await.unwrap();
    assert_eq!(s.open_items("r2").await.unwrap(), 0);
}

/// Whether the SQLite database file or its WAL contains `needle` (UTF-8 bytes).
fn sqlite_files_contain(b: &Backend, needle: &str) -> bool {
    let db = b.sqlite_path();
    let mut files = vec![db.clone()];
    let mut wal = db.clone().into_os_string();
    wal.push("-wal");
    files.push(wal.into());
    let needle = needle.as_bytes();
    files.iter().any(|f| {
        std::fs::read(f).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
    })
}

async fn withdrawals_keep_the_earliest_date(b: &Backend) {
    let s = &b.store;
    let w = |client: &str, consent: &str, on: &str| Withdrawal {
        client_id: client.into(),
        consent_id: consent.into(),
        withdrawn_on: on.into(),
    };
    assert!(s.withdrawals("v1").await.unwrap().is_empty());
    let mut tx = s.begin_delivery().await.unwrap();
    tx.put_withdrawal("v1", &w("C1", "K1", "2026-05-10"))
        .await
        .unwrap();
    tx.put_withdrawal("v1", &w("C1", "K1", "2026-06-01"))
        .await
        .unwrap();
    tx.put_withdrawal("v1", &w("C2", "K1", "2026-07-01"))
        .await
        .unwrap();
    tx.put_withdrawal("v2", &w("C1", "K1", "2026-08-01"))
        .await
        .unwrap();
    tx.commit_plain().await.unwrap();
    assert_eq!(
        s.withdrawals("v1").await.unwrap(),
        vec![w("C1", "K1", "2026-05-10"), w("C2", "K1", "2026-07-01")]
    );

    let mut tx = s.begin_delivery().await.unwrap();
    tx.put_withdrawal("v1", &w("C1", "K1", "2026-04-30"))
        .await
        .unwrap();
    tx.put_withdrawal("v1", &w("C1", "K0", "2026-09-09"))
        .await
        .unwrap();
    tx.put_withdrawal("v1", &w("C1", "K1", "2026-05-01"))
        .await
        .unwrap();
    tx.commit_plain().await.unwrap();
    assert_eq!(
        s.withdrawals("v1").await.unwrap(),
        vec![
            w("C1", "K0", "2026-09-09"),
            w("C1", "K1", "2026-04-30"),
            w("C2", "K1", "2026-07-01"),
        ]
    );
    // Rolled back: nothing changes.
    let mut tx = s.begin_delivery().await.unwrap();
    tx.put_withdrawal("v1", &w("C1", "K1", "2020-01-01"))
        .await
        .unwrap();
    tx.put_withdrawal("v1", &w("C3", "K3", "2020-01-01"))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(s.withdrawals("v1").await.unwrap().len(), 3);
    assert_eq!(
        s.withdrawals("v2").await.unwrap(),
        vec![w("C1", "K1", "2026-08-01")]
    );
}

async fn audit_field_sets_are_stored_once_with_their_events(b: &Backend) {
    let s = &b.store;
    let set = |fields: &str| Arc::new(weiche::store::FieldSet::new(fields.to_string()));
    let a = set(r#"[{"path":"client.sex","action":"keep"}]"#);
    let c = set(r#"[{"path":"case.program","action":"keep"}]"#);
    let with = |n: i64, f: &Arc<weiche::store::FieldSet>| NewAuditEvent {
        field_set: Some(f.clone()),
        ..event_at(1_700_000_000_000, n)
    };
    // Rolled back: neither the events nor their set stay.
    let mut tx = s.begin_delivery().await.unwrap();
    tx.audit(&[with(0, &c)]).await.unwrap();
    tx.rollback().await.unwrap();
    assert!(
        s.field_sets(std::slice::from_ref(&c.sha256))
            .await
            .unwrap()
            .is_empty()
    );
    // Many events, two sets: each set once, also when a later transaction brings it again.
    let mut tx = s.begin_delivery().await.unwrap();
    tx.audit(&[with(1, &a), with(2, &a), with(3, &c)])
        .await
        .unwrap();
    tx.commit_plain().await.unwrap();
    let mut tx = s.begin_delivery().await.unwrap();
    tx.audit(&[with(4, &a)]).await.unwrap();
    tx.commit_plain().await.unwrap();
    let mut got = s
        .field_sets(&[a.sha256.clone(), c.sha256.clone(), "f".repeat(64)])
        .await
        .unwrap();
    got.sort_by(|x, y| x.sha256.cmp(&y.sha256));
    let mut want = vec![(*a).clone(), (*c).clone()];
    want.sort_by(|x, y| x.sha256.cmp(&y.sha256));
    assert_eq!(got, want);
    assert!(s.field_sets(&[]).await.unwrap().is_empty());
    assert_eq!(s.audit_events(0, 100).await.unwrap().len(), 4);
}

async fn audit_chain_links_and_pages(b: &Backend) {
    let s = &b.store;
    assert!(s.audit_events(0, 10).await.unwrap().is_empty());

    let mut tx = s.begin_delivery().await.unwrap();
    tx.audit(&[]).await.unwrap();
    tx.audit(&[
        event("routing", Some("S1"), r#"{"n":1}"#),
        event("routing", None, r#"{"n":2}"#),
    ])
    .await
    .unwrap();
    tx.audit(&[event("erasure", Some("S2"), r#"{"n":3}"#)])
        .await
        .unwrap();
    tx.commit_plain().await.unwrap();

    // Rolled back: no trace, no gap.
    let mut tx = s.begin_delivery().await.unwrap();
    tx.audit(&[event("routing", Some("S1"), r#"{"lost":true}"#)])
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    // With a delivery commit, and with many events at once (several INSERT chunks).
    let mut tx = s.begin_delivery().await.unwrap();
    let many: Vec<NewAuditEvent> = (4..2_504)
        .map(|n| {
            // S4: a run of consecutive events about one client (a record's routing decisions).
            let subject = match n {
                _ if n % 100 == 0 => Some("S1"),
                1_001..=1_003 | 1_005 => Some("S4"),
                _ => None,
            };
            event("routing", subject, &format!(r#"{{"n":{n}}}"#))
        })
        .collect();
    tx.audit(&many).await.unwrap();
    assert_eq!(
        tx.commit(&delivery("v1", None, 1)).await.unwrap(),
        CommitOutcome::Committed
    );

    let all = all_audit(s).await;
    assert_eq!(all.len(), 2_503);
    assert_chain(&all);
    assert_eq!(all[0].prev_hash, weiche::audit::GENESIS);
    assert_eq!(
        (
            all[0].at_ms,
            all[0].kind.as_str(),
            all[0].subject.as_deref()
        ),
        (1_700_000_000_000, "routing", Some("S1"))
    );
    assert_eq!(all[1].subject, None);
    assert_eq!(all[2].kind, "erasure");
    for (n, row) in all.iter().enumerate() {
        assert_eq!(row.body, format!(r#"{{"n":{}}}"#, n + 1));
    }

    // Pages.
    let page = s.audit_events(2, 3).await.unwrap();
    assert_eq!(page, all[2..5].to_vec());
    assert!(s.audit_events(2_503, 10).await.unwrap().is_empty());
    assert!(s.audit_events(0, 0).await.unwrap().is_empty());

    // By subject, in order.
    let s1 = s.audit_by_subject("S1").await.unwrap();
    let want: Vec<AuditRow> = all
        .iter()
        .filter(|r| r.subject.as_deref() == Some("S1"))
        .cloned()
        .collect();
    assert_eq!(want.len(), 1 + 25);
    assert_eq!(s1, want);
    assert_eq!(
        s.audit_by_subject("S2").await.unwrap(),
        vec![all[2].clone()]
    );
    assert!(s.audit_by_subject("S9").await.unwrap().is_empty());
    let s4 = s.audit_by_subject("S4").await.unwrap();
    assert_eq!(
        s4.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1_001, 1_002, 1_003, 1_005]
    );
    assert_eq!(s4[0], all[1_000]);

    // Indexed in passes (at most 1,000 events each, so a run straddles two passes), the answers
    // stay the same; a pass with fewer events waiting than asked for does nothing.
    assert_eq!(s.index_audit_subjects(10_000, 1_000).await.unwrap(), 0);
    assert_eq!(s.index_audit_subjects(1, 1_002).await.unwrap(), 1_002);
    assert_eq!(s.audit_by_subject("S4").await.unwrap(), s4);
    assert_eq!(s.index_audit_subjects(1, 100_000).await.unwrap(), 1_501);
    assert_eq!(s.index_audit_subjects(1, 100_000).await.unwrap(), 0);
    assert_eq!(
        b.count("SELECT COUNT(*) FROM audit_subject_runs").await,
        1 + 25 + 1 + 2 + 1,
        "S1 once and every 100th, S2, S4 split at 1,002 and again at 1,005"
    );
    assert_eq!(s.audit_by_subject("S1").await.unwrap(), want);
    assert_eq!(s.audit_by_subject("S4").await.unwrap(), s4);
    assert_eq!(
        s.audit_by_subject("S2").await.unwrap(),
        vec![all[2].clone()]
    );

    // A second store continues the same chain.
    let other = b.reopen().await;
    let mut tx = other.begin_delivery().await.unwrap();
    tx.audit(&[event("withdrawal", Some("S3"), r#"{"n":2504}"#)])
        .await
        .unwrap();
    tx.commit_plain().await.unwrap();
    let all = all_audit(s).await;
    assert_eq!(all.len(), 2_504);
    assert_chain(&all);
}

async fn concurrent_audit_from_two_stores_is_gap_free(b: &Backend) {
    let stores = [b.store.clone(), b.reopen().await];
    let mut tasks = Vec::new();
    for (n, store) in stores.iter().enumerate() {
        for t in 0..3 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut committed = 0usize;
                for round in 0..12 {
                    let mut tx = store.begin_delivery().await.unwrap();
                    // Some work before the append, as a delivery would do.
                    tx.put(
                        &[],
                        &[item_of(
                            "r1",
                            ItemKind::Record,
                            &format!("{n}-{t}-{round}"),
                            "2026-10",
                            None,
                        )],
                    )
                    .await
                    .unwrap();
                    let events: Vec<NewAuditEvent> = (0..3)
                        .map(|e| {
                            event(
                                "routing",
                                Some(&format!("S{n}")),
                                &format!(r#"{{"store":{n},"task":{t},"round":{round},"e":{e}}}"#),
                            )
                        })
                        .collect();
                    tx.audit(&events).await.unwrap();
                    if round % 4 == 3 {
                        tx.rollback().await.unwrap();
                    } else if round % 2 == 0 {
                        tx.commit_plain().await.unwrap();
                        committed += 3;
                    } else {
                        tx.commit(&delivery("v1", None, round)).await.unwrap();
                        committed += 3;
                    }
                }
                committed
            }));
        }
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let all = all_audit(&b.store).await;
    assert_eq!(all.len(), total);
    assert_chain(&all);
    // Each transaction's events are consecutive.
    for chunk in all.chunks(3) {
        let tx_of = |r: &AuditRow| r.body.split(r#","e":"#).next().unwrap().to_string();
        assert!(chunk.iter().all(|r| tx_of(r) == tx_of(&chunk[0])));
    }
}

async fn current_records_are_active_and_held(b: &Backend) {
    let s = &b.store;
    let p = "2026-10";
    let records = [
        rec_of(("v1", "R1", p, "P1", "C1", "d1"), "body-R1"),
        rec_of(("v1", "R2", p, "P1", "C1", "d1"), "body-R2"),
        rec_of(("v1", "R3", p, "P2", "C1", "d1"), "body-R3"),
        rec_of(("v1", "R4", "2026-11", "P1", "C1", "d1"), "body-R4"),
        rec_of(("v2", "R1", p, "P1", "C1", "d1"), "body-v2-R1"),
    ];
    let mut v2_item = item_of("r1", ItemKind::Record, "R1", p, None);
    v2_item.vendor = "v2".into();
    deliver(
        s,
        &records,
        &[
            item_of("r1", ItemKind::Record, "R1", p, None),
            item_of("r1", ItemKind::Record, "R2", p, None),
            item_of("r1", ItemKind::Record, "R3", p, None),
            item_of("r1", ItemKind::Record, "R4", "2026-11", None),
            item_of("r2", ItemKind::Record, "R1", p, None),
            v2_item,
        ],
        &delivery("v1", None, 1),
    )
    .await;
    assert_eq!(
        s.current_records("r1", p).await.unwrap(),
        vec!["body-R1", "body-R2", "body-R3", "body-v2-R1"]
    );
    assert_eq!(s.current_records("r2", p).await.unwrap(), vec!["body-R1"]);
    assert!(s.current_records("r3", p).await.unwrap().is_empty());
    assert_eq!(
        s.current_records("r1", "2026-11").await.unwrap(),
        vec!["body-R4"]
    );

    // r1's R2 is revoked; R3 is cancelled (its latest item for r1 is still a record item, but the
    // record is no longer active); R1 gets a new version.
    let mut tx = s.begin_delivery().await.unwrap();
    tx.put(
        &[rec_of(("v1", "R1", p, "P1", "C1", "d2"), "body-R1-v2")],
        &[
            item_of("r1", ItemKind::Revocation, "R2", p, None),
            item_of("r1", ItemKind::Record, "R1", p, None),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        tx.cancel_missing("d2", "v1", &[key("P2", p)], &[])
            .await
            .unwrap(),
        vec![key("R3", p)]
    );
    // Nothing of this is visible before the commit.
    assert_eq!(s.current_records("r1", p).await.unwrap().len(), 4);
    tx.commit(&delivery("v1", None, 2)).await.unwrap();
    assert_eq!(
        s.current_records("r1", p).await.unwrap(),
        vec!["body-R1-v2", "body-v2-R1"]
    );
    assert_eq!(
        s.current_records("r2", p).await.unwrap(),
        vec!["body-R1-v2"]
    );
}

// ---------------------------------------------------------------------------------------------
// Retention

fn month(period: &str) -> Month {
    Month::parse_period(period).unwrap()
}

/// Unix milliseconds of an RFC 3339 time.
fn ms(t: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(t)
        .unwrap()
        .timestamp_millis()
}

async fn purge_records_by_reporting_period(b: &Backend) {
    let s = &b.store;
    let records = [
        rec("v1", "R1", "2020-03", "old-1"),
        rec("v1", "R2", "2020-04", "old-2"),
        rec("v1", "R3", "2024-10", "old-3"),
        rec("v1", "R4", "2024-11", "kept-4"),
        rec("v1", "R5", "2026-10", "kept-5"),
    ];
    deliver(s, &records, &[], &delivery("v1", None, 1)).await;
    // What recipients held of purged items, for an old and a kept period.
    b.exec(
        "INSERT INTO holdings (vendor, record_id, reporting_period, recipient, kind, record_ref, \
         seq) VALUES ('v1', 'R1', '2020-03', 'r1', 'record', 'x', 1), \
         ('v1', 'R5', '2026-10', 'r1', 'record', 'y', 2)",
    )
    .await;
    if b.postgres {
        // Periods outside the months kept ready (12 before now to 2 after) land in DEFAULT;
        // maintenance gives them monthly partitions, moving the rows, and keeps the coming
        // months ready.
        let this = Month::of_ms(now_ms());
        let outside = |periods: &[&str]| -> Vec<Month> {
            periods
                .iter()
                .map(|p| month(p))
                .filter(|m| *m < this.plus(-12) || *m > this.plus(2))
                .collect()
        };
        let held_outside = outside(&["2020-03", "2026-10"]);
        let outside = outside(&["2020-03", "2020-04", "2024-10", "2024-11", "2026-10"]);
        assert_eq!(
            b.count("SELECT COUNT(*) FROM records_default").await,
            outside.len() as i64
        );
        let report = s
            .maintain_partitions(now_ms(), &Cutoffs::default())
            .await
            .unwrap();
        assert!(!report.skipped);
        assert_eq!(
            report.moved_rows,
            (outside.len() + held_outside.len()) as u64,
            "{report:?}"
        );
        let name = |table: &str, m: &Month| format!("{table}_p{:04}_{:02}", m.year(), m.month());
        let expected: Vec<String> = outside
            .iter()
            .map(|m| name("records", m))
            .chain(held_outside.iter().map(|m| name("holdings", m)))
            .collect();
        for p in &expected {
            assert!(report.created.contains(p), "{p}: {report:?}");
            let table = p.split("_p").next().unwrap();
            assert!(b.partitions(table).await.contains(p), "{p}");
        }
        assert_eq!(b.count("SELECT COUNT(*) FROM records_default").await, 0);
        assert_eq!(b.count("SELECT COUNT(*) FROM holdings_default").await, 0);
        for table in ["records", "holdings", "items"] {
            let parts = b.partitions(table).await;
            for k in 0..=2 {
                let m = this.plus(k);
                let name = format!("{table}_p{:04}_{:02}", m.year(), m.month());
                assert!(parts.contains(&name), "{name} missing in {parts:?}");
            }
            assert!(parts.contains(&format!("{table}_default")));
        }
        // A second run has nothing to do.
        let again = s
            .maintain_partitions(now_ms(), &Cutoffs::default())
            .await
            .unwrap();
        assert!(
            again.created.is_empty() && again.notes.is_empty(),
            "{again:?}"
        );
    } else {
        let report = s
            .maintain_partitions(now_ms(), &Cutoffs::default())
            .await
            .unwrap();
        assert_eq!(report, Default::default());
    }

    let cut = Cutoffs {
        records_before: Some(month("2024-11")),
        dry_run: true,
        ..Cutoffs::default()
    };
    let dry = s.purge(&cut).await.unwrap();
    assert!(dry.dry_run && !dry.skipped);
    assert_eq!((dry.records, dry.holdings), (3, 1), "{dry:?}");
    assert!(s.record("v1", "R1", "2020-03").await.unwrap().is_some());
    if b.postgres {
        assert_eq!(
            dry.partitions_dropped,
            [
                "records_p2020_03",
                "records_p2020_04",
                "records_p2024_10",
                "holdings_p2020_03"
            ]
        );
        assert!(b.table_exists("records_p2020_03").await);
    }

    let report = s
        .purge(&Cutoffs {
            dry_run: false,
            ..cut.clone()
        })
        .await
        .unwrap();
    assert!(!report.dry_run);
    assert_eq!((report.records, report.holdings), (3, 1), "{report:?}");
    assert_eq!(
        (report.items, report.audit_events, report.receipts),
        (0, 0, 0)
    );
    for (id, period) in [("R1", "2020-03"), ("R2", "2020-04"), ("R3", "2024-10")] {
        assert_eq!(s.record("v1", id, period).await.unwrap(), None, "{id}");
    }
    assert_eq!(
        s.record("v1", "R4", "2024-11").await.unwrap().as_deref(),
        Some("kept-4")
    );
    assert_eq!(
        s.record("v1", "R5", "2026-10").await.unwrap().as_deref(),
        Some("kept-5")
    );
    assert_eq!(b.count("SELECT COUNT(*) FROM holdings").await, 1);
    if b.postgres {
        // Whole partitions went, not rows.
        assert_eq!(report.partitions_dropped, dry.partitions_dropped);
        for p in &report.partitions_dropped {
            assert!(!b.table_exists(p).await, "{p} still exists");
            let table = p.split("_p").next().unwrap();
            assert!(!b.partitions(table).await.contains(p), "{p}");
        }
        assert!(b.table_exists("records_p2024_11").await);
        assert!(b.table_exists("records_p2026_10").await);
        // While another process purges, this one skips.
        use sqlx::Connection;
        let mut other = sqlx::PgConnection::connect(&b.url).await.unwrap();
        sqlx::query("SELECT pg_advisory_lock(hashtextextended('weiche.retention', 0))")
            .execute(&mut other)
            .await
            .unwrap();
        assert!(s.purge(&cut).await.unwrap().skipped);
        assert!(s.maintain_partitions(now_ms(), &cut).await.unwrap().skipped);
        other.close().await.unwrap();
    }
    // Nothing more to purge.
    let again = s.purge(&cut).await.unwrap();
    assert_eq!((again.records, again.holdings), (0, 0), "{again:?}");
    assert!(again.partitions_dropped.is_empty());
}

async fn purge_outputs_once_delivered_and_keep_what_recipients_hold(b: &Backend) {
    let s = &b.store;
    let p = "2026-10";
    let records = [
        rec_of(("v1", "R1", p, "P1", "C1", "d1"), "body-R1"),
        rec_of(("v1", "R2", p, "P1", "C2", "d1"), "body-R2"),
        rec_of(("v1", "R3", p, "P1", "C3", "d1"), "body-R3"),
    ];
    deliver(
        s,
        &records,
        &[
            item_of("r1", ItemKind::Record, "R1", p, Some("K1")),
            item_of("r1", ItemKind::Record, "R2", p, None),
            item_of("r2", ItemKind::Record, "R3", p, None),
        ],
        &delivery("v1", None, 1),
    )
    .await;
    let rule = SealRule {
        max_items: 100,
        max_age_ms: 0,
        push: false,
        call_items: weiche::store::SEAL_ITEMS_PER_CALL,
    };
    assert_eq!(s.seal("r1", rule, now_ms()).await.unwrap(), 1);
    assert_eq!(s.seal("r2", rule, now_ms()).await.unwrap(), 1);
    let b1 = s.batches("r1", None).await.unwrap().remove(0).batch_id;
    let b2 = s.batches("r2", None).await.unwrap().remove(0).batch_id;
    acked(s.ack_batch("r1", &b1, &[], now_ms()).await.unwrap());
    // Those items were made in June; the batches sealed an hour later.
    let june = ms("2026-06-15T08:00:00Z");
    b.exec(&format!("UPDATE items SET created_at = {june}"))
        .await;
    b.exec(&format!(
        "UPDATE batches SET created_at = {}",
        june + 3_600_000
    ))
    .await;
    // A young item of r1, delivered too: it stays.
    deliver(
        s,
        &[],
        &[item_of("r1", ItemKind::Record, "R3", p, None)],
        &delivery("v1", None, 2),
    )
    .await;
    assert_eq!(s.seal("r1", rule, now_ms()).await.unwrap(), 1);
    let b3 = s
        .batches("r1", Some(BatchState::Ready))
        .await
        .unwrap()
        .remove(0)
        .batch_id;
    acked(s.ack_batch("r1", &b3, &[], now_ms()).await.unwrap());
    if b.postgres {
        s.maintain_partitions(now_ms(), &Cutoffs::default())
            .await
            .unwrap();
        assert!(
            b.partitions("items")
                .await
                .contains(&"items_p2026_06".to_string())
        );
        assert_eq!(b.count("SELECT COUNT(*) FROM items_default").await, 0);
        assert_eq!(b.count("SELECT COUNT(*) FROM items_p2026_06").await, 3);
    }

    // 90 days back: after June, before the young item.
    let cut = Cutoffs {
        outputs_before_ms: Some(now_ms() - 90 * 86_400_000),
        ..Cutoffs::default()
    };
    // r2's batch is not acknowledged: its item stays. PostgreSQL keeps the whole month.
    let first = s.purge(&cut).await.unwrap();
    if b.postgres {
        assert_eq!((first.items, first.batches), (0, 0), "{first:?}");
        assert_eq!(first.overdue_items, 3);
        assert!(
            first
                .notes
                .iter()
                .any(|n| n.contains("items_p2026_06") && n.contains("1 of its 3")),
            "{first:?}"
        );
        assert!(b.table_exists("items_p2026_06").await);
        assert!(s.batch("r1", &b1).await.unwrap().is_some());
    } else {
        assert_eq!((first.items, first.batches), (2, 1), "{first:?}");
        assert_eq!(first.overdue_items, 1);
        assert!(s.batch("r1", &b1).await.unwrap().is_none());
    }
    assert!(s.batch("r2", &b2).await.unwrap().is_some());
    assert_eq!(all_batch_items(s, &b2, 10).await.len(), 1);

    // Acknowledged: now all of June goes.
    acked(s.ack_batch("r2", &b2, &[], now_ms()).await.unwrap());
    let dry = s
        .purge(&Cutoffs {
            dry_run: true,
            ..cut.clone()
        })
        .await
        .unwrap();
    let second = s.purge(&cut).await.unwrap();
    if b.postgres {
        assert_eq!((second.items, second.batches), (3, 2), "{second:?}");
        assert_eq!(second.partitions_dropped, ["items_p2026_06"]);
        assert!(!b.table_exists("items_p2026_06").await);
        assert!(
            !b.partitions("items")
                .await
                .contains(&"items_p2026_06".to_string())
        );
    } else {
        assert_eq!((second.items, second.batches), (1, 1), "{second:?}");
    }
    assert_eq!(
        (dry.items, dry.batches, dry.partitions_dropped.clone()),
        (
            second.items,
            second.batches,
            second.partitions_dropped.clone()
        )
    );
    assert_eq!(second.overdue_items, 0);
    assert!(s.batch("r1", &b1).await.unwrap().is_none());
    assert!(s.batch("r2", &b2).await.unwrap().is_none());
    assert!(all_batch_items(s, &b2, 10).await.is_empty());
    // The young batch and its item stay.
    assert_eq!(all_batch_items(s, &b3, 10).await.len(), 1);
    assert_eq!(b.count("SELECT COUNT(*) FROM items").await, 1);
    assert_eq!(b.count("SELECT COUNT(*) FROM batches").await, 1);

    // The recipients still hold what their purged items told them: lifecycle events and
    // aggregates find them.
    let keys = [key("R1", p), key("R2", p), key("R3", p)];
    let mut tx = s.begin_delivery().await.unwrap();
    assert_eq!(
        tx.holders("v1", &keys).await.unwrap(),
        vec![
            holder("r1", "R1", p, Some("K1")),
            holder("r1", "R2", p, None),
            holder("r1", "R3", p, None),
            holder("r2", "R3", p, None),
        ]
    );
    assert_eq!(
        tx.client_holders("v1", "C1", Some("K1")).await.unwrap(),
        vec![holder("r1", "R1", p, Some("K1"))]
    );
    assert!(
        tx.client_holders("v1", "C1", Some("K2"))
            .await
            .unwrap()
            .is_empty()
    );
    tx.rollback().await.unwrap();
    assert_eq!(
        s.current_records("r1", p).await.unwrap(),
        vec!["body-R1", "body-R2", "body-R3"]
    );
    assert_eq!(s.current_records("r2", p).await.unwrap(), vec!["body-R3"]);

    // A newer item wins over what is held: r1's R2 is revoked.
    deliver(
        s,
        &[],
        &[item_of("r1", ItemKind::Revocation, "R2", p, None)],
        &delivery("v1", None, 3),
    )
    .await;
    let mut tx = s.begin_delivery().await.unwrap();
    assert_eq!(
        tx.holders("v1", &keys).await.unwrap(),
        vec![
            holder("r1", "R1", p, Some("K1")),
            holder("r1", "R3", p, None),
            holder("r2", "R3", p, None),
        ]
    );
    tx.rollback().await.unwrap();
    assert_eq!(
        s.current_records("r1", p).await.unwrap(),
        vec!["body-R1", "body-R3"]
    );

    // Erasure removes what recipients held of the client's records too.
    let mut tx = s.begin_delivery().await.unwrap();
    assert_eq!(
        tx.client_holders("v1", "C1", None).await.unwrap(),
        vec![holder("r1", "R1", p, Some("K1"))]
    );
    assert_eq!(
        tx.erase_client("v1", "C1", "S-C1").await.unwrap().records,
        1
    );
    assert!(
        tx.client_holders("v1", "C1", None)
            .await
            .unwrap()
            .is_empty()
    );
    tx.commit_plain().await.unwrap();
    assert_eq!(
        b.count("SELECT COUNT(*) FROM holdings WHERE record_id = 'R1'")
            .await,
        0
    );
    let mut tx = s.begin_delivery().await.unwrap();
    assert!(tx.holders("v1", &[key("R1", p)]).await.unwrap().is_empty());
    tx.rollback().await.unwrap();
}

/// An audit event written at `at_ms`.
fn event_at(at_ms: i64, n: i64) -> NewAuditEvent {
    NewAuditEvent {
        packed: None,
        at_ms,
        kind: "routing".into(),
        subject: Some("S1".into()),
        body: format!(r#"{{"n":{n}}}"#),
        field_set: None,
    }
}

/// The seqs of a subject's audit events.
async fn subject_seqs(s: &Arc<dyn Store>, subject: &str) -> Vec<i64> {
    let events = s.audit_by_subject(subject).await.unwrap();
    events.iter().map(|r| r.seq).collect()
}

async fn append_events(s: &Arc<dyn Store>, events: Vec<NewAuditEvent>) {
    let mut tx = s.begin_delivery().await.unwrap();
    tx.audit(&events).await.unwrap();
    tx.commit_plain().await.unwrap();
}

/// The indexer reads the next events as a range of seqs after `indexed_upto`: a purge that
/// removed events it had not indexed yet must not leave it reading an empty range for ever.
async fn audit_events_purged_before_they_are_indexed_are_skipped(b: &Backend) {
    let s = &b.store;
    append_events(s, (1..=5).map(|n| event_at(1_000, n)).collect()).await;
    let purged = s
        .purge(&Cutoffs {
            audit_before_ms: Some(2_000),
            ..Cutoffs::default()
        })
        .await
        .unwrap();
    assert_eq!(purged.audit_events, 5);
    append_events(s, (6..=8).map(|n| event_at(now_ms(), n)).collect()).await;
    assert_eq!(s.index_audit_subjects(1, 2).await.unwrap(), 2);
    assert_eq!(s.index_audit_subjects(1, 2).await.unwrap(), 1);
    assert_eq!(s.index_audit_subjects(1, 2).await.unwrap(), 0);
    assert_eq!(subject_seqs(s, "S1").await, [6, 7, 8]);
    assert_eq!(
        b.count("SELECT indexed_upto FROM audit_index_state WHERE id = 1")
            .await,
        8
    );
}

async fn purge_audit_from_the_start_and_keep_the_chain_verifiable(b: &Backend) {
    let s = &b.store;
    assert_eq!(s.audit_anchor().await.unwrap(), None);
    append_events(s, (1..=5).map(|n| event_at(1_000, n)).collect()).await;
    assert_eq!(s.index_audit_subjects(1, 100).await.unwrap(), 5);
    assert_eq!(b.count("SELECT COUNT(*) FROM audit_subject_runs").await, 1);
    let all = all_audit(s).await;
    let purge = |before: i64, dry_run: bool| Cutoffs {
        audit_before_ms: Some(before),
        dry_run,
        ..Cutoffs::default()
    };

    let dry = s.purge(&purge(2_000, true)).await.unwrap();
    assert_eq!(dry.audit_events, 5);
    assert_eq!(all_audit(s).await.len(), 5);
    assert_eq!(s.audit_anchor().await.unwrap(), None);

    // All of it is old: all of it goes; the anchor carries the link.
    let r = s.purge(&purge(2_000, false)).await.unwrap();
    assert_eq!(r.audit_events, 5);
    assert_eq!(b.count("SELECT COUNT(*) FROM audit_subject_runs").await, 0);
    assert!(r.notes.is_empty(), "{r:?}");
    assert!(all_audit(s).await.is_empty());
    let anchor = s.audit_anchor().await.unwrap().expect("anchor");
    assert_eq!(
        (anchor.seq, anchor.hash.as_str()),
        (5, all[4].hash.as_str())
    );
    let v = weiche::audit::verify(s.as_ref()).await.unwrap();
    assert!(v.intact, "{v:?}");
    assert_eq!((v.events, v.last_hash.as_str()), (0, all[4].hash.as_str()));
    assert_eq!(v.anchor, Some(anchor.clone()));

    // The chain goes on from the anchor.
    append_events(s, (6..=8).map(|n| event_at(3_000, n)).collect()).await;
    append_events(s, (9..=10).map(|n| event_at(now_ms(), n)).collect()).await;
    let kept = all_audit(s).await;
    assert_eq!(
        kept.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [6, 7, 8, 9, 10]
    );
    assert_eq!(kept[0].prev_hash, anchor.hash);
    let v = weiche::audit::verify(s.as_ref()).await.unwrap();
    assert!(v.intact, "{v:?}");
    assert_eq!(v.events, 5);

    // Only the old ones go.
    assert_eq!(s.index_audit_subjects(1, 100).await.unwrap(), 5);
    let r = s.purge(&purge(4_000, false)).await.unwrap();
    assert_eq!(r.audit_events, 3);
    assert_eq!(
        all_audit(s).await.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [9, 10]
    );
    assert_eq!(s.audit_anchor().await.unwrap().unwrap().seq, 8);
    // The client's purged events are no longer found; the kept ones are, through the run that
    // reaches past the purge.
    assert_eq!(b.count("SELECT COUNT(*) FROM audit_subject_runs").await, 1);
    assert_eq!(subject_seqs(s, "S1").await, [9, 10]);
    let v = weiche::audit::verify(s.as_ref()).await.unwrap();
    assert!(v.intact, "{v:?}");
    assert_eq!(v.events, 2);

    // Kept events are still protected: an edit is reported, and a purge does not remove the
    // evidence (event 9 and the edited 10 stay).
    b.exec("UPDATE audit SET body = '{\"n\":99}' WHERE seq = 10")
        .await;
    let v = weiche::audit::verify(s.as_ref()).await.unwrap();
    assert_eq!(v.first_broken.as_ref().map(|b| b.seq), Some(10), "{v:?}");
    let r = s.purge(&purge(i64::MAX, false)).await.unwrap();
    assert_eq!(r.audit_events, 0);
    assert!(
        r.notes.iter().any(|n| n.contains("broken at event 10")),
        "{r:?}"
    );
    assert_eq!(all_audit(s).await.len(), 2);
    assert!(!weiche::audit::verify(s.as_ref()).await.unwrap().intact);
    // So is a deleted first kept event.
    b.exec("UPDATE audit SET body = '{\"n\":10}' WHERE seq = 10")
        .await;
    assert!(weiche::audit::verify(s.as_ref()).await.unwrap().intact);
    b.exec("DELETE FROM audit WHERE seq = 9").await;
    let v = weiche::audit::verify(s.as_ref()).await.unwrap();
    assert_eq!(v.first_broken.as_ref().map(|b| b.seq), Some(10), "{v:?}");
}

async fn purge_receipts_by_age(b: &Backend) {
    let s = &b.store;
    let mut old = delivery("v1", Some("old-key"), ms("2025-01-10T10:00:00Z"));
    let mut young = delivery("v1", Some("young-key"), now_ms());
    for d in [&mut old, &mut young] {
        d.subjects = vec![ReceiptSubject {
            record: 1,
            subject: "S1".into(),
        }];
    }
    deliver(s, &[], &[], &old).await;
    deliver(s, &[], &[], &young).await;
    let cut = Cutoffs {
        receipts_before_ms: Some(now_ms() - 365 * 86_400_000),
        ..Cutoffs::default()
    };
    let dry = s
        .purge(&Cutoffs {
            dry_run: true,
            ..cut.clone()
        })
        .await
        .unwrap();
    assert_eq!(dry.receipts, 1);
    assert!(s.delivery("v1", &old.id).await.unwrap().is_some());
    let r = s.purge(&cut).await.unwrap();
    assert_eq!(r.receipts, 1);
    assert!(s.delivery("v1", &old.id).await.unwrap().is_none());
    assert_eq!(s.delivery_by_key("v1", "old-key").await.unwrap(), None);
    assert!(s.delivery("v1", &young.id).await.unwrap().is_some());
    assert_eq!(s.deliveries("v1", None, None, 10).await.unwrap().len(), 1);
    // A receipt's subjects go with it.
    assert_eq!(
        b.count("SELECT COUNT(*) FROM receipt_subjects WHERE subject = 'S1'")
            .await,
        1
    );
}

// ---------------------------------------------------------------------------------------------
// ---------------------------------------------------------------------------------------------
// Counting open items (PostgreSQL keeps a counter, migration 0007)

async fn open_items_are_counted_exactly_while_deliveries_run(b: &Backend) {
    let s = &b.store;
    let within = |f| tokio::time::timeout(std::time::Duration::from_secs(30), f);
    // A delivery in progress: its items are not counted, and counting does not wait for it.
    let mut open_tx = s.begin_delivery().await.unwrap();
    open_tx.put(&[], &items("r1", "T", 5)).await.unwrap();
    assert_eq!(within(s.open_items("r1")).await.unwrap().unwrap(), 0);
    assert_eq!(
        open_tx.commit(&delivery("v1", None, 3)).await.unwrap(),
        CommitOutcome::Committed
    );
    assert_eq!(s.open_items("r1").await.unwrap(), 5);
    // (On SQLite a second delivery waits for the first; on PostgreSQL it need not.)
    deliver(s, &[], &items("r1", "A", 3), &delivery("v1", None, 1)).await;
    deliver(s, &[], &items("r2", "B", 2), &delivery("v1", None, 2)).await;
    assert_eq!(s.open_items("r2").await.unwrap(), 2);
    // Counting again (and from another store) changes nothing.
    assert_eq!(s.open_items("r1").await.unwrap(), 8);
    assert_eq!(s.open_items("r1").await.unwrap(), 8);
    let other = b.reopen().await;
    assert_eq!(other.open_items("r1").await.unwrap(), 8);
    // A rolled-back delivery leaves the count as it was.
    let mut tx = s.begin_delivery().await.unwrap();
    tx.put(&[], &items("r1", "X", 4)).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(s.open_items("r1").await.unwrap(), 8);
    // Sealing takes items out of the count, for that recipient only.
    let rule = SealRule {
        max_items: 5,
        max_age_ms: NEVER,
        push: false,
        call_items: weiche::store::SEAL_ITEMS_PER_CALL,
    };
    assert_eq!(s.seal("r1", rule, now_ms()).await.unwrap(), 1);
    assert_eq!(other.open_items("r1").await.unwrap(), 3);
    assert_eq!(s.open_items("r2").await.unwrap(), 2);
    assert_eq!(s.open_items("r3").await.unwrap(), 0);
    if b.postgres {
        // The counter agrees with the items themselves.
        let counted = b
            .count("SELECT COUNT(*) FROM items WHERE recipient = 'r1' AND batch_id IS NULL")
            .await;
        assert_eq!(counted, 3);
    }
}

/// The open-items count reads no items on PostgreSQL: its plan scans only the counter tables.
#[tokio::test]
async fn postgres_counts_open_items_without_reading_them() {
    let Some(b) = Backend::postgres().await else {
        return;
    };
    let s = &b.store;
    deliver(s, &[], &items("r1", "I", 2_000), &delivery("v1", None, 1)).await;
    assert_eq!(s.open_items("r1").await.unwrap(), 2_000);
    let sql = weiche::store::POSTGRES_OPEN_COUNT_SQL.replace("$1", "'r1'");
    let plan: Vec<String> = b
        .texts(&format!("EXPLAIN {sql}"))
        .await
        .into_iter()
        .flatten()
        .collect();
    let plan = plan.join("\n");
    // Scans name their table: `Seq Scan on items_p2026_12`, `Index Scan using … on items`.
    assert!(
        !plan.contains(" on items"),
        "the count reads items:\n{plan}"
    );
    assert!(plan.contains(" on open_item_deltas"), "{plan}");
    b.finish().await;
}

// Connecting

#[tokio::test]
async fn sqlite_creates_directory_and_file_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/weiche.db");
    let url = format!("sqlite://{}", path.display());
    let store = weiche::store::connect(&url).await.unwrap();
    store.ping().await.unwrap();
    assert!(path.exists());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    // Opening again runs no migration twice.
    drop(store);
    weiche::store::connect(&url).await.unwrap();
}

#[tokio::test]
async fn sqlite_in_memory_works() {
    let store = weiche::store::connect("sqlite::memory:").await.unwrap();
    let d = delivery("v1", Some("k"), 1);
    assert_eq!(
        deliver(
            &store,
            &[rec("v1", "A", "2026-10", "a")],
            &items("r1", "m", 3),
            &d
        )
        .await,
        CommitOutcome::Committed
    );
    assert_eq!(
        store.record("v1", "A", "2026-10").await.unwrap().as_deref(),
        Some("a")
    );
    let rule = SealRule {
        max_items: 2,
        max_age_ms: 0,
        push: false,
        call_items: weiche::store::SEAL_ITEMS_PER_CALL,
    };
    assert_eq!(store.seal("r1", rule, now_ms()).await.unwrap(), 2);
    assert_eq!(store.open_items("r1").await.unwrap(), 0);
}

#[tokio::test]
async fn unsupported_url_and_unreachable_database() {
    assert!(matches!(
        weiche::store::connect("mysql://localhost/x").await.err(),
        Some(StoreError::UnsupportedUrl(_))
    ));
    // Nothing listens on port 1.
    match weiche::store::connect("postgres://weiche@127.0.0.1:1/weiche").await {
        Err(StoreError::Unavailable(_)) => {}
        Err(other) => panic!("expected Unavailable, got {other:?}"),
        Ok(_) => panic!("connected to port 1?"),
    }
}

#[tokio::test]
async fn sqlite_wal_is_truncated_after_start_up_and_not_checkpointed_by_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weiche.db");
    let url = format!("sqlite://{}", path.display());
    let wal = dir.path().join("weiche.db-wal");
    let wal_size = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    {
        let store = weiche::store::connect(&url).await.unwrap();
        // About 20 MB in one delivery: below the housekeeper's thresholds, so the WAL keeps it.
        let body = "x".repeat(10_000);
        let records: Vec<NewRecord> = (0..2_000)
            .map(|i| rec("v1", &format!("R{i}"), "2026-10", &body))
            .collect();
        let d = delivery("v1", Some("big"), 1);
        assert_eq!(
            deliver(&store, &records, &[], &d).await,
            CommitOutcome::Committed
        );
        assert!(
            wal_size() > 20_000_000,
            "a commit checkpointed the WAL: {} bytes left",
            wal_size()
        );
        // An unclean end: the store is dropped without any checkpoint of its own.
        std::mem::forget(store);
    }
    let store = weiche::store::connect(&url).await.unwrap();
    // The housekeeper's first pass copies and truncates it, in the background.
    let started = std::time::Instant::now();
    while wal_size() > 0 && started.elapsed() < std::time::Duration::from_secs(30) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(wal_size(), 0, "the WAL is truncated after start-up");
    assert_eq!(
        store
            .record("v1", "R1999", "2026-10")
            .await
            .unwrap()
            .map(|b| b.len()),
        Some(10_000),
        "the data survived the checkpoint"
    );
}

/// A database written by the release before the smaller write set (SQLite migrations up to 0006,
/// PostgreSQL up to 0007) keeps its items and audit trail when the store opens it: item bodies
/// move to `item_bodies` (SQLite), each audit event with a subject becomes a run, and new items
/// continue the sequence.
async fn upgrade_keeps_items_and_audit(url: &str, postgres: bool) {
    let (dir, last) = if postgres {
        ("src/store/migrations/postgres", 7)
    } else {
        ("src/store/migrations/sqlite", 6)
    };
    let mut old =
        sqlx::migrate::Migrator::new(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
            .await
            .unwrap();
    old.migrations = old
        .migrations
        .iter()
        .filter(|m| m.version <= last)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    let hash = weiche::audit::link_hash(weiche::audit::GENESIS, r#"{"n":1}"#);
    let now = now_ms();
    let statements = [
        format!(
            "INSERT INTO items (recipient, kind, vendor, record_id, reporting_period, record_ref, \
             body, created_at) VALUES ('r1', 'record', 'v1', 'R1', '2026-10', 'ref-1', \
             '{{\"old\":true}}', {now})"
        ),
        format!(
            "INSERT INTO audit (seq, at_ms, kind, subject, body, prev_hash, hash) VALUES \
             (1, {now}, 'routing', 'S1', '{{\"n\":1}}', '{}', '{hash}')",
            weiche::audit::GENESIS
        ),
    ];
    {
        use sqlx::Connection;
        if postgres {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            old.run(&mut conn).await.unwrap();
            for s in &statements {
                sqlx::query(s).execute(&mut conn).await.unwrap();
            }
        } else {
            let opts = url
                .parse::<sqlx::sqlite::SqliteConnectOptions>()
                .unwrap()
                .create_if_missing(true);
            let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
            old.run(&mut conn).await.unwrap();
            for s in &statements {
                sqlx::query(s).execute(&mut conn).await.unwrap();
            }
        }
    }

    let s = weiche::store::connect(url)
        .await
        .expect("the store upgrades");
    let items = s.record_items("v1", "R1").await.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        (items[0].seq, items[0].body.as_str()),
        (1, r#"{"old":true}"#)
    );
    let trail = s.audit_by_subject("S1").await.unwrap();
    assert_eq!(
        trail
            .iter()
            .map(|r| (r.seq, r.hash.as_str()))
            .collect::<Vec<_>>(),
        [(1, hash.as_str())]
    );
    assert!(weiche::audit::verify(s.as_ref()).await.unwrap().intact);

    // New items follow the old ones, and the old one is sealed and read like any other.
    let mut tx = s.begin_delivery().await.unwrap();
    tx.put(&[], &[item("r1", "R1", "2026-10", r#"{"new":true}"#)])
        .await
        .unwrap();
    tx.commit_plain().await.unwrap();
    let rule = SealRule {
        max_items: 10,
        max_age_ms: 0,
        push: false,
        call_items: 100,
    };
    assert_eq!(s.seal("r1", rule, now_ms()).await.unwrap(), 1);
    let items = s.record_items("v1", "R1").await.unwrap();
    assert_eq!(items.iter().map(|i| i.seq).collect::<Vec<_>>(), [1, 2]);
    let batch = items[0].batch_id.clone().expect("sealed");
    let bodies: Vec<String> = s
        .batch_items(&batch, 0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.body)
        .collect();
    assert_eq!(bodies, [r#"{"old":true}"#, r#"{"new":true}"#]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_upgrade_keeps_items_and_audit() {
    let dir = tempfile::tempdir().unwrap();
    upgrade_keeps_items_and_audit(&support::fresh_sqlite_url(dir.path()), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_upgrade_keeps_items_and_audit() {
    let Some(url) = support::fresh_postgres_url().await else {
        return;
    };
    upgrade_keeps_items_and_audit(&url, true).await;
    support::drop_postgres_database(&url).await;
}
