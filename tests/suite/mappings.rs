//! The mapping engine through the running server: XML and CSV deliveries, hot reload of the
//! mappings directory (a fourth vendor connected by dropping in one file, a broken file reported
//! without disturbing the working mappings), and the admin mapping endpoints.

use crate::testkit;

use reqwest::{Client, StatusCode};
use serde_json::Value;
use std::time::{Duration, Instant};
use testkit::*;

fn case_input(format: &str, case: &str) -> Vec<u8> {
    let dir = repo()
        .join("conformance-tests/cases")
        .join(format)
        .join(case);
    let input = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_stem().is_some_and(|s| s == "input"))
        .unwrap();
    std::fs::read(input).unwrap()
}

async fn deliver(
    s: &TestServer,
    format: &str,
    content_type: &str,
    body: Vec<u8>,
    key: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Client::new()
        .post(s.url(&format!("/api/v1/deliveries?format={format}")))
        .bearer_auth(VENDOR_TOKEN)
        .header("Content-Type", content_type)
        .body(body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let r = req.send().await.unwrap();
    (r.status(), r.json().await.unwrap())
}

async fn admin_mappings(s: &TestServer) -> Value {
    Client::new()
        .get(s.url("/api/v1/admin/mappings"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls until `done` holds (hot reload is asynchronous), at most 10 s.
async fn eventually<F, Fut>(mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(
            Instant::now() < deadline,
            "condition not reached within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(s) = super::TestServer::start_with_own_mappings(super::Backend::Sqlite).await {
                        super::$name(&s).await;
                        s.stop().await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(s) = super::TestServer::start_with_own_mappings(super::Backend::Postgres).await {
                        super::$name(&s).await;
                        s.stop().await;
                    }
                }
            )*
        }
    };
}

both_backends!(
    xml_and_csv_deliveries_are_received,
    a_fourth_vendor_is_connected_by_one_file,
    a_client_major_nested_vendor_is_connected_by_one_file,
    admin_preview_stores_nothing,
);

async fn xml_and_csv_deliveries_are_received(s: &TestServer) {
    let (st, r) = deliver(
        s,
        "xsozial-lieferung",
        "application/xml",
        case_input("xsozial-lieferung", "basic"),
        None,
    )
    .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(
        (r["status"].as_str(), r["accepted"].as_u64()),
        (Some("E1"), Some(4))
    );
    assert_eq!(r["mapping_version"].as_str().unwrap().len(), 64);
    // The XML message id is the idempotency key.
    let (_, again) = deliver(
        s,
        "xsozial-lieferung",
        "application/xml",
        case_input("xsozial-lieferung", "basic"),
        None,
    )
    .await;
    assert_eq!(again["duplicate"], true);
    let (st, r) = deliver(
        s,
        "xsozial-lieferung",
        "application/xml",
        case_input("xsozial-lieferung", "dtd-refused"),
        None,
    )
    .await;
    assert_eq!(st, 422);
    assert_eq!(r["errors"][0]["code"], "X000");

    // CSV: Windows-1252 by default; the Idempotency-Key header is the key.
    let (st, r) = deliver(
        s,
        "fallwerk-csv",
        "text/csv",
        case_input("fallwerk-csv", "multi-row-cases"),
        Some("fw-2026-10-1"),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(
        (r["status"].as_str(), r["accepted"].as_u64()),
        (Some("E2"), Some(3))
    );
    let (_, again) = deliver(
        s,
        "fallwerk-csv",
        "text/csv",
        case_input("fallwerk-csv", "multi-row-cases"),
        Some("fw-2026-10-1"),
    )
    .await;
    assert_eq!(again["duplicate"], true);
    // The same export in UTF-8, declared by charset, gives the same records.
    let text = encoding_rs::WINDOWS_1252
        .decode(&case_input("fallwerk-csv", "multi-row-cases"))
        .0
        .into_owned();
    let (st, r) = deliver(
        s,
        "fallwerk-csv",
        "text/csv; charset=utf-8",
        text.clone().into_bytes(),
        Some("fw-2026-10-2"),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["accepted"], 3);
    // Declared UTF-8 but sent as Windows-1252: S001.
    let (st, r) = deliver(
        s,
        "fallwerk-csv",
        "text/csv; charset=utf-8",
        case_input("fallwerk-csv", "multi-row-cases"),
        Some("fw-2026-10-3"),
    )
    .await;
    assert_eq!(st, 422, "{r}");
    assert_eq!(r["errors"][0]["code"], "S001");
    // Record errors name the canonical field and the source column.
    let (_, r) = deliver(
        s,
        "fallwerk-csv",
        "text/csv",
        case_input("fallwerk-csv", "mixed-errors"),
        Some("fw-2026-10-4"),
    )
    .await;
    let birth = r["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["code"] == "F002")
        .unwrap();
    assert_eq!(birth["field"], "client.birth_date");
    assert_eq!(birth["source"], "Geburtsdatum");
}

async fn a_fourth_vendor_is_connected_by_one_file(s: &TestServer) {
    let dir = s.dir.path().join("mappings");
    let sample = case_input("caseflow-xml", "basic");
    let (st, e) = deliver(s, "caseflow-xml", "application/xml", sample.clone(), None).await;
    assert_eq!(st, 400, "{e}");
    assert_eq!(e["code"], "V000");

    // Drop the new mapping file into the running server's mappings directory.
    std::fs::copy(
        repo().join("mappings/caseflow-xml.toml"),
        dir.join("caseflow-xml.toml"),
    )
    .unwrap();
    eventually(|| async {
        admin_mappings(s).await["mappings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["format"] == "caseflow-xml")
    })
    .await;
    let (st, r) = deliver(s, "caseflow-xml", "application/xml", sample.clone(), None).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(
        (
            r["status"].as_str(),
            r["accepted"].as_u64(),
            r["rejected"].as_u64()
        ),
        (Some("E3"), Some(2), Some(1))
    );

    // A broken file is reported with file and line; the working mappings stay.
    std::fs::write(
        dir.join("broken.toml"),
        "id = \"broken\"\nsyntax = \"json\"\n[record.fields]\n\"program\" = { from = 42 }\n",
    )
    .unwrap();
    // A broken edit of a working mapping keeps the old version.
    let klidas = dir.join("klidas-json.toml");
    let good = std::fs::read_to_string(&klidas).unwrap();
    std::fs::write(
        &klidas,
        good.replace("[maps.fachbereich]", "[maps.fachbereich\n"),
    )
    .unwrap();
    eventually(|| async {
        admin_mappings(s).await["failures"]
            .as_array()
            .unwrap()
            .len()
            == 2
    })
    .await;
    let listing = admin_mappings(s).await;
    let failures = listing["failures"].as_array().unwrap();
    let broken = failures
        .iter()
        .find(|f| f["file"].as_str().unwrap().ends_with("broken.toml"))
        .unwrap();
    assert_eq!(broken["line"], 4, "{broken}");
    assert!(
        failures
            .iter()
            .any(|f| f["file"].as_str().unwrap().ends_with("klidas-json.toml"))
    );
    let formats: Vec<&str> = listing["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["format"].as_str().unwrap())
        .collect();
    assert!(
        formats.contains(&"klidas-json") && formats.contains(&"caseflow-xml"),
        "{formats:?}"
    );
    let (st, r) = deliver(
        s,
        "klidas-json",
        "application/json",
        case_input("klidas-json", "basic"),
        None,
    )
    .await;
    assert_eq!(
        (st.as_u16(), r["status"].as_str()),
        (200, Some("E1")),
        "{r}"
    );
    let version_before = r["mapping_version"].clone();

    // Fixing the file brings the new version in.
    std::fs::write(
        &klidas,
        good.replace(
            "\"Bildung\" = \"bildung\"",
            "\"Bildung\" = \"bildung\"\n\"Bildungsarbeit\" = \"bildung\"",
        ),
    )
    .unwrap();
    eventually(|| async {
        admin_mappings(s).await["failures"]
            .as_array()
            .unwrap()
            .len()
            == 1
    })
    .await;
    let body = String::from_utf8(case_input("klidas-json", "basic"))
        .unwrap()
        .replace("9c0e4b7a", "9c0e4b7b");
    let (_, r) = deliver(
        s,
        "klidas-json",
        "application/json",
        body.into_bytes(),
        None,
    )
    .await;
    assert_ne!(r["mapping_version"], version_before);
}

/// Issue 16: a vendor whose export is client-major nested JSON (clients → cases) is connected by
/// dropping one mapping file into the running server's mappings directory: no rebuild, no
/// restart, no configuration change (the mapping names its vendor in `vendors`).
async fn a_client_major_nested_vendor_is_connected_by_one_file(s: &TestServer) {
    let dir = s.dir.path().join("mappings");
    let sample = case_input("klientplus-json", "client-major");
    let (st, e) = deliver(
        s,
        "klientplus-json",
        "application/json",
        sample.clone(),
        None,
    )
    .await;
    assert_eq!(st, 400, "{e}");
    assert_eq!(e["code"], "V000");

    std::fs::copy(
        repo().join("mappings/klientplus-json.toml"),
        dir.join("klientplus-json.toml"),
    )
    .unwrap();
    eventually(|| async {
        admin_mappings(s).await["mappings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["format"] == "klientplus-json")
    })
    .await;
    let (st, r) = deliver(
        s,
        "klientplus-json",
        "application/json",
        sample.clone(),
        None,
    )
    .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(
        (
            r["status"].as_str(),
            r["received"].as_u64(),
            r["accepted"].as_u64(),
            r["mode"].as_str()
        ),
        (Some("E1"), Some(3), Some(3), Some("partial")),
        "{r}"
    );
    // The payload's message id is the idempotency key: the same export again is a duplicate.
    let (_, again) = deliver(s, "klientplus-json", "application/json", sample, None).await;
    assert_eq!(again["duplicate"], true, "{again}");

    // Every case of every client arrived, each with its client's data.
    let (_, r) = deliver(
        s,
        "klientplus-json",
        "application/json",
        case_input("klientplus-json", "cookbook"),
        None,
    )
    .await;
    assert_eq!(
        (
            r["status"].as_str(),
            r["accepted"].as_u64(),
            r["rejected"].as_u64()
        ),
        (Some("E3"), Some(3), Some(1)),
        "{r}"
    );
    let errors = r["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .all(|e| e["code"] == "F002" && e["source"] == "../name"),
        "{errors:?}"
    );
}

async fn admin_preview_stores_nothing(s: &TestServer) {
    let c = Client::new();
    let r = c
        .post(s.url("/api/v1/admin/mappings/fallwerk-csv/preview"))
        .bearer_auth(ADMIN_TOKEN)
        .body(case_input("fallwerk-csv", "basic"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["receipt"]["status"], "E1");
    let records = v["records"].as_array().unwrap();
    assert!(!records.is_empty());
    assert_eq!(
        v["views"]["statistik-nrw"].as_array().unwrap().len(),
        records.len()
    );
    assert!(
        v["views"]["statistik-nrw"][0]["record_ref"]
            .as_str()
            .unwrap()
            .starts_with("p1.t1.")
    );
    // Nothing stored or routed.
    let batches: Value = c
        .get(s.url("/api/v1/batches"))
        .bearer_auth(STATS_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(batches["batches"].as_array().unwrap().is_empty());
    let deliveries: Value = c
        .get(s.url("/api/v1/deliveries"))
        .bearer_auth(VENDOR_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(deliveries["deliveries"].as_array().unwrap().is_empty());
    // Admin only.
    let r = c
        .post(s.url("/api/v1/admin/mappings/fallwerk-csv/preview"))
        .bearer_auth(VENDOR_TOKEN)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c.get(s.url("/api/v1/admin/mappings")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(s.url("/api/v1/admin/mappings/nonesuch/preview"))
        .bearer_auth(ADMIN_TOKEN)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}
