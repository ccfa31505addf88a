//! Consent, legal basis, lifecycle and audit end to end (issue: "nothing leaves without a rule
//! that allows it"): one delivery with consents for a job centre but not for a partner agency; the
//! statistics office gets pseudonymised, generalised records under its statute; the job centre
//! only the consented groups; the partner agency nothing; a withdrawal revokes at the job centre
//! only; an erasure tells the holders and leaves no trace of the name in the database file; a
//! tampered audit row is found.

use crate::{support, testkit};

use reqwest::Client;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use testkit::*;

const JC_TOKEN: &str = "jobcenter-token-0123456789abcdef0123456789abcd";
const PA_TOKEN: &str = "partner-token-0123456789abcdef0123456789abcdef";
const NAME: &str = "Zzyzxbrandtová";

fn sha(t: &str) -> String {
    hex::encode(Sha256::digest(t.as_bytes()))
}

const JOBCENTER_POLICY: &str = r#"
id = "jobcenter-koeln"
purpose = "eingliederung"
legal_basis = "consent"
[delivery]
kind = "pull"
batch_max_age_secs = 0
[route]
programs = ["sgb2"]
[fields]
"client.identity" = "keep"
"client.contact" = "keep"
"client.address" = "keep"
"case" = "keep"
"services" = "keep"
"#;

const PARTNER_POLICY: &str = r#"
id = "traeger-nord"
purpose = "hilfeplanung"
legal_basis = "consent"
[delivery]
kind = "pull"
batch_max_age_secs = 0
[route]
programs = ["sgb2", "sgb8"]
[fields]
"client.identity" = "keep"
"case" = "keep"
"#;

async fn start(backend: Backend, now: &str) -> Option<TestServer> {
    let dir = tempfile::tempdir().unwrap();
    let database_url = match backend {
        Backend::Sqlite => support::fresh_sqlite_url(dir.path()),
        Backend::Postgres => support::fresh_postgres_url().await?,
    };
    let config = write_config(dir.path(), &database_url, "");
    let policies = dir.path().join("policies");
    std::fs::write(policies.join("jobcenter-koeln.toml"), JOBCENTER_POLICY).unwrap();
    std::fs::write(policies.join("traeger-nord.toml"), PARTNER_POLICY).unwrap();
    std::fs::write(dir.path().join("key3.hex"), "33".repeat(32)).unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        r#"
[[recipients]]
id = "jobcenter-koeln"
token = {{ sha256 = "{}" }}
pseudonym_keys = [{{ kid = "jc1", secret = {{ file = "key3.hex" }} }}]

[[recipients]]
id = "traeger-nord"
token = {{ sha256 = "{}" }}
pseudonym_keys = [{{ kid = "tn1", secret = {{ file = "key3.hex" }} }}]
"#,
        sha(JC_TOKEN),
        sha(PA_TOKEN)
    ));
    std::fs::write(&config, text).unwrap();
    let now_ms = chrono::DateTime::parse_from_rfc3339(now)
        .unwrap()
        .timestamp_millis();
    Some(TestServer::from_config(dir, &config, database_url, Some(now_ms)).await)
}

fn delivery() -> String {
    json!({
        "klidas": "1.0",
        "uebermittlung": {"id": "5d2f8a90-0c1b-4e57-9f3a-7b6c5d4e3f21", "erstellt": "2026-11-02T10:00:00+01:00",
                          "absender": "Test", "lieferart": "ergaenzung", "berichtsmonat": "2026-10"},
        "faelle": [{
            "fallId": "JC-9001", "fachbereich": "SGB II", "eroeffnet": "2026-01-05", "team": "Team West",
            "klient": {"id": "KL-9001", "name": {"familienname": NAME, "vornamen": ["Marta"]},
                       "geburtsdatum": "1990-06-15", "geschlecht": "weiblich", "staatsangehoerigkeit": "CZE",
                       "adresse": {"strasse": "Venloer Straße", "hausnummer": "9", "plz": "50672", "ags": "05315000", "sozialraum": "Ehrenfeld"},
                       "kontakt": {"telefon": "0221 5550999"}, "erwerb": "arbeitslos"},
            "leistungen": [{"code": "BER", "von": "2026-02-01", "stundenProWoche": 3}],
            "einwilligungen": [
                {"id": "EW-JC-1", "zweck": "Eingliederung", "empfaenger": "jobcenter-koeln",
                 "datengruppen": ["client.identity", "services"], "erteilt": "2026-01-05"},
                {"id": "EW-ALT-7", "zweck": "Hilfeplanung", "empfaenger": "traeger-nord",
                 "datengruppen": ["client.identity"], "erteilt": "2026-01-05", "gueltigBis": "2026-06-30"}
            ]
        }]
    })
    .to_string()
}

async fn items(c: &Client, s: &TestServer, token: &str) -> Vec<Value> {
    let list: Value = c
        .get(s.url("/api/v1/batches?state=ready"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut out = Vec::new();
    for b in list["batches"].as_array().unwrap() {
        let batch: Value = c
            .get(s.url(&format!(
                "/api/v1/batches/{}",
                b["batch_id"].as_str().unwrap()
            )))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        out.extend(batch["items"].as_array().unwrap().iter().cloned());
        c.post(s.url(&format!(
            "/api/v1/batches/{}/ack",
            b["batch_id"].as_str().unwrap()
        )))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    }
    out
}

async fn consent_flow(s: &TestServer) {
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
    assert_eq!(r["status"], "E1", "{r}");
    assert_eq!(r["routed"]["statistik-nrw"], 1);
    assert_eq!(r["routed"]["jobcenter-koeln"], 1);
    assert!(r["routed"].get("traeger-nord").is_none(), "{r}");
    let notes = r["notes"].as_array().unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n["recipient"] == "traeger-nord" && n["code"] == "C001"),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|n| n["recipient"] == "jobcenter-koeln" && n["code"] == "C002"),
        "{notes:?}"
    );

    // Statistics office: pseudonymised and generalised, under its statute.
    let stats = items(&c, s, STATS_TOKEN).await;
    assert_eq!(stats.len(), 1);
    let st = &stats[0];
    let text = st.to_string();
    assert!(
        !text.contains(NAME) && !text.contains("KL-9001") && !text.contains("1990-06-15"),
        "{text}"
    );
    assert_eq!(st["client"]["birth_date"], "35-44");
    assert!(
        st["client"]["client_id"]
            .as_str()
            .unwrap()
            .starts_with("p1.t1.")
    );
    assert!(st.get("consent_id").is_none());

    // Job centre: only the consented groups (identity, services), with the consent named.
    let jc = items(&c, s, JC_TOKEN).await;
    assert_eq!(jc.len(), 1);
    let j = &jc[0];
    assert_eq!(j["consent_id"], "EW-JC-1");
    assert_eq!(j["client"]["family_name"], NAME);
    assert!(
        j["client"].get("address").is_none() && j["client"].get("contact").is_none(),
        "{j}"
    );
    assert!(j.get("case").is_none());
    assert_eq!(j["services"][0]["kind"], "beratung");

    // Partner agency: nothing (its consent expired on 2026-06-30).
    assert!(items(&c, s, PA_TOKEN).await.is_empty());

    // A withdrawal revokes at the job centre only.
    let w: Value = c
        .post(s.url("/api/v1/consents/withdrawals"))
        .bearer_auth(VENDOR_TOKEN)
        .json(
            &json!({"client_id": "KL-9001", "consent_id": "EW-JC-1", "withdrawn_on": "2026-11-01"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(w["revocations"], 1, "{w}");
    let jc = items(&c, s, JC_TOKEN).await;
    assert_eq!(jc.len(), 1);
    assert_eq!(jc[0]["type"], "revocation");
    assert_eq!(jc[0]["record_ref"], j["record_ref"]);
    assert_eq!(jc[0]["consent_id"], "EW-JC-1");
    assert!(jc[0].get("client").is_none());
    assert!(items(&c, s, STATS_TOKEN).await.is_empty());
    assert!(items(&c, s, PA_TOKEN).await.is_empty());

    // Re-delivering the record (new message id) no longer reaches the job centre.
    let again = delivery().replace("5d2f8a90", "5d2f8a91");
    let r: Value = c
        .post(s.url("/api/v1/deliveries"))
        .bearer_auth(VENDOR_TOKEN)
        .body(again)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(r["routed"].get("jobcenter-koeln").is_none(), "{r}");
    assert!(items(&c, s, JC_TOKEN).await.is_empty());
    assert_eq!(items(&c, s, STATS_TOKEN).await.len(), 1);

    // Erasure: the statistics office (a holder) is told; the job centre is not (it holds nothing).
    let e: Value = c
        .delete(s.url("/api/v1/admin/clients/demo-vendor/KL-9001"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(e["erased_records"], 1, "{e}");
    let st = items(&c, s, STATS_TOKEN).await;
    assert_eq!(st.len(), 1);
    assert_eq!(st[0]["type"], "erasure");
    assert!(items(&c, s, JC_TOKEN).await.is_empty());

    // The disclosure report still answers who got what (from pseudonymous audit events).
    let d: Value = c
        .get(s.url("/api/v1/admin/disclosures?vendor=demo-vendor&client_id=KL-9001"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let events = d["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["recipient"] == "jobcenter-koeln" && e["consent_id"] == "EW-JC-1"),
        "{d}"
    );
    assert!(events.iter().any(|e| e["kind"] == "erasure"), "{d}");
    assert!(!d.to_string().contains(NAME));

    let v: Value = c
        .get(s.url("/api/v1/admin/audit/verify"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["intact"], true, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_lifecycle_and_audit_sqlite() {
    let s = start(Backend::Sqlite, "2026-11-02T09:00:00Z")
        .await
        .unwrap();
    consent_flow(&s).await;
    // The name is gone from the database files.
    let url = s.database_url.clone();
    let path = url.trim_start_matches("sqlite://").to_string();
    for file in [path.clone(), format!("{path}-wal")] {
        if let Ok(bytes) = std::fs::read(&file) {
            let needle = NAME.as_bytes();
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{NAME} still in {file}"
            );
        }
    }
    // Tampering with one audit row is detected.
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("UPDATE audit SET body = replace(body, 'statute', 'consent') WHERE seq = 1")
        .execute(&pool)
        .await
        .unwrap();
    let v: Value = Client::new()
        .get(s.url("/api/v1/admin/audit/verify"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["intact"], false, "{v}");
    assert_eq!(v["first_broken"]["seq"], 1, "{v}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consent_lifecycle_and_audit_postgres() {
    let Some(s) = start(Backend::Postgres, "2026-11-02T09:00:00Z").await else {
        return;
    };
    consent_flow(&s).await;
    let pool = sqlx::PgPool::connect(&s.database_url).await.unwrap();
    sqlx::query("DELETE FROM audit WHERE seq = 2")
        .execute(&pool)
        .await
        .unwrap();
    let v: Value = Client::new()
        .get(s.url("/api/v1/admin/audit/verify"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["intact"], false, "{v}");
    pool.close().await;
    s.stop().await;
}
