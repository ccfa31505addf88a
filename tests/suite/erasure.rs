//! Erasure reaches every copy (GDPR Art. 17), on SQLite and PostgreSQL: one delivery in which a
//! client has an accepted record and a record rejected for a birth date that does not exist;
//! its data is then in a record, in items of a recipient that keeps names and addresses, in the
//! receipt's entries and in a recorded withdrawal. After the erasure neither the API (receipt,
//! batches, disclosure report) nor the database (SQLite: the file and its WAL after the
//! erasure's checkpoint; PostgreSQL: every row of every table as text) holds the client's name,
//! birth dates or address; the audit chain verifies and shows the erasure with its counts. An
//! erasure that finds nothing says so and is recorded too. And the issue's own walk-through: a
//! client with only a rejected record (golden case `mixed-errors`) is found in the receipt.

use crate::{support, testkit};

use reqwest::Client;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use testkit::*;

const CLEAR_TOKEN: &str = "klartext-token-0123456789abcdef0123456789abcd";

/// The erased client's values: each occurs nowhere else (the address's postal code as JSON
/// text, so that it is not mistaken for digits of a hash).
const FAMILY: &str = "Quastenflosserová";
const GIVEN: &str = "Ludmiła";
const BIRTH: &str = "1987-03-14";
const WRONG_BIRTH: &str = "1987-02-30";
const STREET: &str = "Zypressenhainweg";
const DISTRICT: &str = "Quellenviertel";
const POSTAL: &str = "\"50999\"";

/// The values of the client that must be gone.
const NEEDLES: [&str; 7] = [FAMILY, GIVEN, BIRTH, WRONG_BIRTH, STREET, DISTRICT, POSTAL];

/// Another client's values, which must stay.
const OTHER_FAMILY: &str = "Habermaßová";

/// A recipient that keeps names and addresses, so that its items hold them.
const CLEAR_POLICY: &str = r#"
id = "klartext-amt"
purpose = "eingliederung"
legal_basis = "statute"
citation = "§ 50 SGB II"
[delivery]
kind = "pull"
batch_max_age_secs = 0
[route]
programs = ["sgb2"]
[fields]
"client.identity" = "keep"
"client.address" = "keep"
"case" = "keep"
"#;

fn sha(t: &str) -> String {
    hex::encode(Sha256::digest(t.as_bytes()))
}

async fn start(backend: Backend) -> Option<TestServer> {
    let dir = tempfile::tempdir().unwrap();
    let database_url = match backend {
        Backend::Sqlite => support::fresh_sqlite_url(dir.path()),
        Backend::Postgres => support::fresh_postgres_url().await?,
    };
    let config = write_config(dir.path(), &database_url, "");
    std::fs::write(
        dir.path().join("policies").join("klartext-amt.toml"),
        CLEAR_POLICY,
    )
    .unwrap();
    std::fs::write(dir.path().join("key9.hex"), "99".repeat(32)).unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        r#"
[[recipients]]
id = "klartext-amt"
token = {{ sha256 = "{}" }}
pseudonym_keys = [{{ kid = "k9", secret = {{ file = "key9.hex" }} }}]
"#,
        sha(CLEAR_TOKEN)
    ));
    std::fs::write(&config, text).unwrap();
    Some(TestServer::from_config(dir, &config, database_url, None).await)
}

fn case(fall: &str, client: &str, family: &str, birth: &str) -> Value {
    json!({
        "fallId": fall, "fachbereich": "SGB II", "eroeffnet": "2026-01-05",
        "klient": {"id": client, "name": {"familienname": family, "vornamen": [GIVEN]},
                   "geburtsdatum": birth, "geschlecht": "weiblich", "staatsangehoerigkeit": "POL",
                   "adresse": {"strasse": STREET, "hausnummer": "17", "plz": "50999",
                               "ags": "05315000", "sozialraum": DISTRICT}},
        "leistungen": [{"code": "BER", "von": "2026-02-01"}]
    })
}

fn delivery() -> String {
    let mut other = case("JC-7004", "KL-7004", OTHER_FAMILY, "1979-11-02");
    other["klient"]["name"]["vornamen"] = json!(["Inge"]);
    other["klient"]["adresse"] = json!({"strasse": "Amselweg", "plz": "50670"});
    let mut other_rejected = case(
        "JC-7003",
        "KL-7003",
        "Brzęczyszczykiewicz, Grzegorz",
        "1970",
    );
    other_rejected["klient"]["name"]["vornamen"] = json!(["Grzegorz"]);
    other_rejected["klient"]["adresse"] = Value::Null;
    json!({
        "klidas": "1.0",
        "uebermittlung": {"id": "7a1e0c55-3f4b-4d7e-9a61-2b8c9d0e1f70", "erstellt": "2026-11-02T10:00:00+01:00",
                          "absender": "Test", "lieferart": "ergaenzung", "berichtsmonat": "2026-10"},
        "faelle": [
            case("JC-7001", "KL-7001", FAMILY, BIRTH),
            case("JC-7002", "KL-7001", FAMILY, WRONG_BIRTH),
            other_rejected,
            other,
        ]
    })
    .to_string()
}

async fn get(c: &Client, s: &TestServer, token: &str, path: &str) -> Value {
    let r = c.get(s.url(path)).bearer_auth(token).send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

/// Every item of every batch (ready or acknowledged) of a recipient, as JSON text.
async fn all_batches(c: &Client, s: &TestServer, token: &str) -> String {
    let mut out = String::new();
    for state in ["ready", "acknowledged"] {
        let list = get(c, s, token, &format!("/api/v1/batches?state={state}")).await;
        for b in list["batches"].as_array().unwrap() {
            let id = b["batch_id"].as_str().unwrap();
            out.push_str(
                &get(c, s, token, &format!("/api/v1/batches/{id}"))
                    .await
                    .to_string(),
            );
        }
    }
    out
}

/// The needles found in `text`.
fn found_in(text: &str) -> Vec<&'static str> {
    NEEDLES.into_iter().filter(|n| text.contains(n)).collect()
}

/// Every row of every table of the PostgreSQL database, as text.
async fn postgres_rows(url: &str) -> String {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(tables.iter().any(|t| t == "deliveries"), "{tables:?}");
    let mut out = String::new();
    for t in &tables {
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT t::text FROM \"{t}\" AS t"))
            .fetch_all(&pool)
            .await
            .unwrap();
        for r in rows {
            out.push_str(&r);
            out.push('\n');
        }
    }
    // `bytea` columns (bodies) print as hex above: their bytes as (lossy) text too.
    let binary: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND data_type = 'bytea' ORDER BY 1, 2",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(binary.iter().any(|(t, c)| t == "records" && c == "body"));
    for (t, c) in &binary {
        let values: Vec<Vec<u8>> = sqlx::query_scalar(&format!("SELECT \"{c}\" FROM \"{t}\""))
            .fetch_all(&pool)
            .await
            .unwrap();
        for v in values {
            out.push_str(&String::from_utf8_lossy(&v));
            out.push('\n');
        }
    }
    pool.close().await;
    out
}

/// The SQLite database file and its WAL, as (lossy) text.
fn sqlite_bytes(url: &str) -> String {
    let path = url.trim_start_matches("sqlite://").to_string();
    let mut out = String::new();
    for file in [path.clone(), format!("{path}-wal")] {
        if let Ok(bytes) = std::fs::read(&file) {
            out.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    out
}

async fn database_text(s: &TestServer, backend: Backend) -> String {
    match backend {
        Backend::Sqlite => sqlite_bytes(&s.database_url),
        Backend::Postgres => postgres_rows(&s.database_url).await,
    }
}

async fn erase(c: &Client, s: &TestServer, client_id: &str) -> Value {
    let r = c
        .delete(s.url(&format!("/api/v1/admin/clients/demo-vendor/{client_id}")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn erasure_reaches_every_copy(s: &TestServer, backend: Backend) {
    let c = Client::new();
    let r: Value = c
        .post(s.url("/api/v1/deliveries?format=klidas-json"))
        .bearer_auth(VENDOR_TOKEN)
        .body(delivery())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "E3", "{r}");
    assert_eq!(
        (r["accepted"].as_u64(), r["rejected"].as_u64()),
        (Some(2), Some(2)),
        "{r}"
    );
    let delivery_id = r["delivery_id"].as_str().unwrap().to_string();
    let errors = r["errors"].as_array().unwrap();
    let birth_error = errors
        .iter()
        .find(|e| e["record"] == 2)
        .expect("record 2 is rejected");
    assert_eq!(birth_error["field"], "client.birth_date");
    assert_eq!(birth_error["code"], "F002");
    assert!(
        birth_error["message"]
            .as_str()
            .unwrap()
            .contains("day 30 in February"),
        "{birth_error}"
    );
    assert!(
        found_in(&r.to_string()).is_empty(),
        "the receipt quotes: {r}"
    );
    let other_error = errors.iter().find(|e| e["record"] == 3).unwrap().clone();

    // A withdrawal recorded for the client.
    let w = c
        .post(s.url("/api/v1/consents/withdrawals"))
        .bearer_auth(VENDOR_TOKEN)
        .json(&json!({"client_id": "KL-7001", "consent_id": "EW-1", "withdrawn_on": "2026-11-01"}))
        .send()
        .await
        .unwrap();
    assert!(w.status().is_success(), "{}", w.status());

    // Before: the values are there (else the checks below would prove nothing). The clear
    // recipient's first batch is fetched and acknowledged, so its items are sealed.
    let clear = all_batches(&c, s, CLEAR_TOKEN).await;
    assert!(clear.contains(FAMILY) && clear.contains(STREET), "{clear}");
    let db = database_text(s, backend).await;
    assert!(
        db.contains(FAMILY) && db.contains(BIRTH),
        "values in the database before"
    );

    let e = erase(&c, s, "KL-7001").await;
    assert_eq!(e["found"], true, "{e}");
    let erased = &e["erased"];
    assert_eq!(erased["records"], 1, "{e}");
    assert_eq!(e["erased_records"], 1, "{e}");
    // One record item for each of the three recipients.
    assert_eq!(erased["items"], 3, "{e}");
    assert_eq!(erased["lifecycle_items"], 0, "{e}");
    assert_eq!(erased["receipts"], 1, "{e}");
    assert_eq!(erased["receipt_entries"], 1, "{e}");
    assert_eq!(erased["withdrawals"], 1, "{e}");
    assert_eq!(erased["feedback"], 0, "{e}");
    assert_eq!(e["notified"], 3, "{e}");
    let erasure_id = e["erasure_id"].as_str().unwrap().to_string();

    // The API: receipt, receipts list, batches, disclosure report.
    let receipt = get(
        &c,
        s,
        VENDOR_TOKEN,
        &format!("/api/v1/deliveries/{delivery_id}"),
    )
    .await;
    assert!(found_in(&receipt.to_string()).is_empty(), "{receipt}");
    let entry = receipt["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["record"] == 2)
        .unwrap();
    assert_eq!(entry["message"], weiche::store::ERASED_MESSAGE, "{entry}");
    assert_eq!(entry["code"], "F002");
    let kept = receipt["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["record"] == 3)
        .unwrap();
    assert_eq!(*kept, other_error, "another client's entry is unchanged");
    let list = get(&c, s, VENDOR_TOKEN, "/api/v1/deliveries").await;
    assert!(found_in(&list.to_string()).is_empty(), "{list}");
    for token in [CLEAR_TOKEN, STATS_TOKEN, OTHER_STATS_TOKEN] {
        let items = all_batches(&c, s, token).await;
        assert!(found_in(&items).is_empty(), "{items}");
        assert!(items.contains(&erasure_id), "erasure items: {items}");
    }
    assert!(all_batches(&c, s, CLEAR_TOKEN).await.contains(OTHER_FAMILY));
    let report = get(
        &c,
        s,
        ADMIN_TOKEN,
        "/api/v1/admin/disclosures?vendor=demo-vendor&client_id=KL-7001",
    )
    .await;
    assert!(found_in(&report.to_string()).is_empty(), "{report}");

    // The audit chain verifies and shows the erasure with its counts.
    let v = get(&c, s, ADMIN_TOKEN, "/api/v1/admin/audit/verify").await;
    assert_eq!(v["intact"], true, "{v}");
    let summary = report["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|ev| ev["kind"] == "erasure" && ev["recipient"].is_null())
        .unwrap_or_else(|| panic!("no erasure event: {report}"));
    assert_eq!(summary["delivery_id"], erasure_id.as_str());
    let counts: Value = serde_json::from_str(summary["note"].as_str().unwrap()).unwrap();
    assert_eq!(&counts, erased, "{summary}");

    // The database.
    let db = database_text(s, backend).await;
    let left = found_in(&db);
    assert!(
        left.is_empty(),
        "still in the database ({backend:?}): {left:?}"
    );
    assert!(db.contains(OTHER_FAMILY), "another client's record stays");

    // An erasure that finds nothing says so, and is recorded.
    let none = erase(&c, s, "KL-0000").await;
    assert_eq!(none["found"], false, "{none}");
    assert!(
        none["message"].as_str().unwrap().contains("nothing"),
        "{none}"
    );
    assert_eq!(none["erased"]["records"], 0);
    let report = get(
        &c,
        s,
        ADMIN_TOKEN,
        "/api/v1/admin/disclosures?vendor=demo-vendor&client_id=KL-0000",
    )
    .await;
    let events = report["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{report}");
    assert_eq!(events[0]["kind"], "erasure");
    assert_eq!(events[0]["delivery_id"], none["erasure_id"]);
    let v = get(&c, s, ADMIN_TOKEN, "/api/v1/admin/audit/verify").await;
    assert_eq!(v["intact"], true, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_reaches_every_copy_sqlite() {
    let s = start(Backend::Sqlite).await.unwrap();
    erasure_reaches_every_copy(&s, Backend::Sqlite).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_reaches_every_copy_postgres() {
    let Some(s) = start(Backend::Postgres).await else {
        return;
    };
    erasure_reaches_every_copy(&s, Backend::Postgres).await;
    s.stop().await;
}

/// The issue's walk-through: the golden mixed-errors delivery; its record 3 (client `KL-60003`)
/// is rejected for 30 February. Erasing that client, which has no accepted record, finds its
/// receipt entry, and the receipt no longer says anything about it but code, field and position.
async fn erasure_of_a_rejected_only_client(s: &TestServer) {
    let c = Client::new();
    let body =
        std::fs::read(repo().join("conformance-tests/cases/klidas-json/mixed-errors/input.json"))
            .unwrap();
    let r: Value = c
        .post(s.url("/api/v1/deliveries?format=klidas-json"))
        .bearer_auth(VENDOR_TOKEN)
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "E3", "{r}");
    assert!(!r.to_string().contains("1990-02-30"), "{r}");
    let id = r["delivery_id"].as_str().unwrap().to_string();
    let e = erase(&c, s, "KL-60003").await;
    assert_eq!(e["found"], true, "{e}");
    assert_eq!(e["erased_records"], 0, "{e}");
    assert_eq!(e["erased"]["receipts"], 1, "{e}");
    assert_eq!(e["erased"]["receipt_entries"], 1, "{e}");
    let receipt = get(&c, s, VENDOR_TOKEN, &format!("/api/v1/deliveries/{id}")).await;
    for list in ["errors", "warnings", "notes"] {
        for entry in receipt[list].as_array().unwrap() {
            let erased = entry["message"] == weiche::store::ERASED_MESSAGE;
            assert_eq!(erased, entry["record"] == 3, "{entry}");
        }
    }
    // Once is enough: a repeat finds nothing more.
    let again = erase(&c, s, "KL-60003").await;
    assert_eq!(again["found"], false, "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_of_a_rejected_only_client_sqlite() {
    let s = start(Backend::Sqlite).await.unwrap();
    erasure_of_a_rejected_only_client(&s).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_of_a_rejected_only_client_postgres() {
    let Some(s) = start(Backend::Postgres).await else {
        return;
    };
    erasure_of_a_rejected_only_client(&s).await;
    s.stop().await;
}
