//! Alert webhooks (admin-console.md, "Alerts"): a local HTTPS receiver gets a signed notice when
//! a mapping file breaks and when a dead letter arises; each notice is in the audit trail.

use crate::{pushkit, support, testkit};

use pushkit::*;
use serde_json::Value;
use std::time::{Duration, Instant};
use testkit::*;

/// Waits until the receiver got a request whose key starts with `prefix`; that request.
async fn wait_for_key(r: &Receiver, prefix: &str) -> Received {
    let start = Instant::now();
    loop {
        if let Some(got) = r.log().into_iter().find(|x| x.key.starts_with(prefix)) {
            return got;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no {prefix} notice: {:?}",
            r.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_notice_goes_out_when_a_mapping_breaks_and_when_a_dead_letter_arises() {
    // The job centre refuses everything (dead letters); the alert endpoint accepts.
    let (ca_pem, tls) = pki();
    let port = free_port();
    let mut jobcenter = Receiver::new(port, tls);
    jobcenter.set(Mode::Refuse);
    jobcenter.set_reason("{\"fehler\": \"Feld kundennummer fehlt\"}");
    jobcenter.start();
    let (alert_ca, alert_tls) = pki();
    let alert_port = free_port();
    let mut alerts = Receiver::new(alert_port, alert_tls);
    alerts.start();

    let dir = tempfile::tempdir().unwrap();
    let url = support::fresh_sqlite_url(dir.path());
    let config = push_config(dir.path(), &url, port, &ca_pem, 30, 7);
    std::fs::write(dir.path().join("alert-ca.pem"), &alert_ca).unwrap();
    let mappings = dir.path().join("mappings");
    std::fs::create_dir_all(&mappings).unwrap();
    for f in [
        "klidas-json.toml",
        "xsozial-lieferung.toml",
        "fallwerk-csv.toml",
    ] {
        std::fs::copy(repo().join("mappings").join(f), mappings.join(f)).unwrap();
    }
    let shipped = format!("mappings_dir = \"{}\"", repo().join("mappings").display());
    let mut text = std::fs::read_to_string(&config).unwrap().replace(
        &shipped,
        &format!("mappings_dir = \"{}\"", mappings.display()),
    );
    for kind in ["mapping_failed", "dead_letter"] {
        text.push_str(&format!(
            "\n[alerts.{kind}]\nurl = \"https://127.0.0.1:{alert_port}/alerts\"\n\
             ca_file = \"alert-ca.pem\"\nsecret = {{ file = \"push.secret\" }}\ntimeout_secs = 2\n"
        ));
    }
    std::fs::write(&config, text).unwrap();
    let s = TestServer::from_config(dir, &config, url, None).await;

    // A mapping file breaks (once the server answers, its mappings directory is watched).
    let ready = reqwest::get(s.url("/health/ready")).await.unwrap();
    assert_eq!(ready.status(), 200);
    std::fs::write(
        mappings.join("fallwerk-csv.toml"),
        "id = \"fallwerk-csv\"\nsyntax = = \"csv\"\n",
    )
    .unwrap();
    let notice = wait_for_key(&alerts, "mapping_failed:").await;
    assert!(notice.signature_ok, "signed like a push delivery");
    assert_eq!(notice.status, 200);

    // A dead letter arises.
    let r = reqwest::Client::new()
        .post(s.url("/api/v1/deliveries?format=klidas-json"))
        .bearer_auth(VENDOR_TOKEN)
        .header("Content-Type", "application/json")
        .body(klidas_delivery(
            "6b0d8c1e-5d5e-4b8e-9a55-000000000001",
            "D",
            2,
            "ergaenzung",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let notice = wait_for_key(&alerts, "dead_letter:").await;
    assert!(notice.signature_ok);

    // The console shows the dead letter with the records it holds.
    let recipient: Value = reqwest::Client::new()
        .get(s.url("/api/v1/admin/recipients/jobcenter-test"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let dead = &recipient["push"]["dead"][0];
    // The receiver's answer, as text.
    assert_eq!(
        dead["last_error"], "HTTP 400: {\"fehler\": \"Feld kundennummer fehlt\"}",
        "{recipient}"
    );
    assert_eq!(
        dead["record_refs"].as_array().unwrap().len(),
        2,
        "{recipient}"
    );

    // Discarded, it moves to the recipient's discarded groups.
    let id = dead["id"].as_str().unwrap();
    let r = reqwest::Client::new()
        .post(s.url(&format!("/api/v1/admin/dead-letters/{id}/discard")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let recipient: Value = reqwest::Client::new()
        .get(s.url("/api/v1/admin/recipients/jobcenter-test"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(recipient["push"]["dead"].as_array().unwrap().is_empty());
    assert_eq!(recipient["push"]["discarded"][0]["id"], id);

    // Each notice once, and in the audit trail.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let keys: Vec<String> = alerts.log().into_iter().map(|x| x.key).collect();
    assert_eq!(
        keys.iter()
            .filter(|k| k.starts_with("mapping_failed:"))
            .count(),
        1,
        "{keys:?}"
    );
    assert_eq!(
        keys.iter()
            .filter(|k| k.starts_with("dead_letter:"))
            .count(),
        1,
        "{keys:?}"
    );
    let events: Value = reqwest::Client::new()
        .get(s.url("/api/v1/admin/audit/events?kind=alert"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(events["events"].as_array().unwrap().len(), 2, "{events}");
    s.stop().await;
    jobcenter.stop().await;
    alerts.stop().await;
}
