//! The console's endpoints (admin-console.md) answer as specified: all vendors' deliveries with
//! filters and paging, one receipt, a record with what each recipient got (audited, naming the
//! admin), recipients, stats, audit events without client data, and the mapping editor —
//! check with line and column, draft preview, deploy with `If-Match` (409 otherwise), the new
//! version serving deliveries, history and rollback.

use crate::testkit;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use testkit::*;

fn case(path: &str) -> Vec<u8> {
    std::fs::read(repo().join("conformance-tests/cases").join(path)).unwrap()
}

async fn get(c: &Client, s: &TestServer, path: &str) -> Value {
    let r = c
        .get(s.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    r.json().await.unwrap()
}

async fn post_delivery(c: &Client, s: &TestServer, body: Vec<u8>) -> Value {
    let (status, receipt) = post_klidas(c, s, body).await;
    assert_eq!(status, StatusCode::OK);
    receipt
}

async fn browse(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let c = Client::new();
    let basic = post_delivery(&c, &s, case("klidas-json/basic/input.json")).await;
    let mixed = post_delivery(&c, &s, case("klidas-json/mixed-errors/input.json")).await;
    assert_eq!(mixed["status"], "E3");

    // Newest first; filters; paging by cursor.
    let all = get(&c, &s, "/api/v1/admin/deliveries").await;
    let ids: Vec<&str> = all["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["delivery_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            mixed["delivery_id"].as_str().unwrap(),
            basic["delivery_id"].as_str().unwrap()
        ]
    );
    let e3 = get(&c, &s, "/api/v1/admin/deliveries?status=E3").await;
    assert_eq!(e3["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(e3["deliveries"][0]["rejected"], 6);
    let none = get(&c, &s, "/api/v1/admin/deliveries?vendor=other-vendor").await;
    assert!(none["deliveries"].as_array().unwrap().is_empty());
    let page = get(&c, &s, "/api/v1/admin/deliveries?limit=1").await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = get(
        &c,
        &s,
        &format!("/api/v1/admin/deliveries?limit=1&cursor={cursor}"),
    )
    .await;
    assert_eq!(rest["deliveries"][0]["delivery_id"], basic["delivery_id"]);
    assert!(rest["next_cursor"].is_null());

    // One receipt, as the vendor got it.
    let one = get(
        &c,
        &s,
        &format!(
            "/api/v1/admin/deliveries/{}",
            mixed["delivery_id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(one["receipt"], mixed);

    // A record and what each recipient received of it; the view is audited.
    let record = get(&c, &s, "/api/v1/admin/records/demo-vendor/JH-2026-0417").await;
    assert_eq!(record["records"][0]["reporting_period"], "2026-10");
    let views = record["recipients"].as_array().unwrap();
    assert!(!views.is_empty(), "{record}");
    let item = &views[0]["items"][0];
    assert!(item["policy_version"].is_string(), "{item}");
    assert!(
        item["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["action"].is_string()),
        "{item}"
    );
    let events = get(&c, &s, "/api/v1/admin/audit/events?kind=admin_record_view").await;
    let event = &events["events"][0];
    assert!(
        event["note"]
            .as_str()
            .unwrap()
            .contains("\"admin\":\"admin\""),
        "{event}"
    );
    // The audit list carries no client data.
    let text = get(&c, &s, "/api/v1/admin/audit/events").await.to_string();
    assert!(
        !text.contains("KL-55012") && !text.contains("record_ref"),
        "{text}"
    );

    // Recipients, and counts for the dashboard.
    let recipients = get(&c, &s, "/api/v1/admin/recipients").await;
    assert_eq!(recipients["recipients"][0]["kind"], "pull");
    let stats = get(&c, &s, "/api/v1/admin/stats?window=24h&by=code").await;
    assert_eq!(stats["deliveries"], 2);
    assert_eq!(stats["by_status"]["E3"], 1);
    assert!(
        stats["records"]["received"].as_u64().unwrap() > 0,
        "{stats}"
    );
    assert!(
        stats["codes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["code"] == "F001")
    );
    let bad = c
        .get(s.url("/api/v1/admin/stats?window=7d"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_browses_deliveries_records_and_recipients_sqlite() {
    browse(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_browses_deliveries_records_and_recipients_postgres() {
    browse(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_is_checked_previewed_deployed_and_rolled_back() {
    let Some(s) = TestServer::start_with_own_mappings(Backend::Sqlite).await else {
        return;
    };
    let c = Client::new();
    let base = "/api/v1/admin/mappings/klidas-json";
    let source = get(&c, &s, &format!("{base}/source")).await;
    let text = source["text"].as_str().unwrap().to_string();
    let v1 = source["version"].as_str().unwrap().to_string();
    assert!(source["editable"].as_bool().unwrap());

    // A broken draft: the problem's line and column.
    let broken = text.replacen("\n", "\n= oops\n", 3);
    let check: Value = c
        .post(s.url(&format!("{base}/check")))
        .bearer_auth(ADMIN_TOKEN)
        .body(broken.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(check["ok"], false);
    assert!(
        check["problems"][0]["line"].as_u64().unwrap() > 0,
        "{check}"
    );
    assert!(
        check["problems"][0]["column"].as_u64().unwrap() > 0,
        "{check}"
    );

    // A working draft, previewed against a sample: the draft's description is not in the
    // answer, but its change of a source field is.
    let draft = text.replacen("description = \"", "description = \"Entwurf: ", 1);
    assert_ne!(draft, text, "the mapping has a description");
    let sample = String::from_utf8(case("klidas-json/basic/input.json")).unwrap();
    let r = c
        .post(s.url(&format!("{base}/preview?draft=true&vendor=demo-vendor")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"mapping": draft, "sample": sample}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let preview: Value = r.json().await.unwrap();
    assert_eq!(preview["receipt"]["status"], "E1", "{preview}");
    let v2 = preview["receipt"]["mapping_version"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(v2, v1);
    let r = c
        .post(s.url(&format!("{base}/preview?draft=true")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"mapping": broken, "sample": sample}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Deploy: without If-Match, or with a stale one, 409; with the version in service, done.
    for if_match in [None, Some("\"0000\"")] {
        let mut req = c
            .put(s.url(base))
            .bearer_auth(ADMIN_TOKEN)
            .body(draft.clone());
        if let Some(v) = if_match {
            req = req.header("If-Match", v);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CONFLICT);
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["code"], "R409");
    }
    let r = c
        .put(s.url(base))
        .bearer_auth(ADMIN_TOKEN)
        .header("If-Match", format!("\"{v1}\""))
        .body(draft.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let done: Value = r.json().await.unwrap();
    assert_eq!(done["version"], v2.as_str());
    assert_eq!(done["in_service"], true);
    // The file was written; the new version serves a delivery.
    let on_disk = std::fs::read_to_string(s.dir.path().join("mappings/klidas-json.toml")).unwrap();
    assert_eq!(on_disk, draft);
    let receipt = post_delivery(&c, &s, case("klidas-json/basic/input.json")).await;
    assert_eq!(receipt["mapping_version"], v2.as_str());

    // History with the admin's name; rollback; the deployment is audited.
    let history = get(&c, &s, &format!("{base}/versions")).await;
    assert_eq!(history["in_service"], v2.as_str());
    assert_eq!(history["versions"][0]["admin"], "admin");
    assert_eq!(history["versions"][1]["version"], v1.as_str());
    let r = c
        .post(s.url(&format!("{base}/versions/{v1}/deploy")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let source = get(&c, &s, &format!("{base}/source")).await;
    assert_eq!(source["version"], v1.as_str());
    let events = get(&c, &s, "/api/v1/admin/audit/events?kind=mapping_deployed").await;
    assert_eq!(events["events"].as_array().unwrap().len(), 2);
    s.stop().await;
}
