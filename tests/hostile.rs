//! Hostile input through the real server: no `500`, no hang, nothing stored. Malformed and
//! oversized bodies are covered by the golden cases (every delivery-level code) and the server
//! tests; here: slow clients, bodies that break off, and personal data never reaching a log line
//! at `trace` level.

#[path = "../conformance-tests/support/mod.rs"]
mod support;
#[path = "../conformance-tests/testkit.rs"]
mod testkit;

use reqwest::Client;
use serde_json::Value;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::*;

/// Captures every log line of this test process.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

const NAME: &str = "Qwxyzbrandtmüller";
const GIVEN: &str = "Ottilie-Ximena";
const BORN: &str = "1911-11-19";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_personal_data_in_logs_at_trace_level() {
    let capture = Capture::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .json()
        .init();
    tracing::info!("capture works");
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let c = Client::new();
    let basic = String::from_utf8(
        std::fs::read(repo().join("conformance-tests/cases/klidas-json/basic/input.json")).unwrap(),
    )
    .unwrap()
    .replace("Doğan", NAME)
    .replace("1994-08-03", BORN)
    .replace("\"Zeynep\"", &format!("\"{GIVEN}\""));
    assert!(basic.contains(NAME));
    // Accepted, rejected (the bad value quoted in the receipt), previewed, pulled.
    let r: Value = c
        .post(s.url("/api/v1/deliveries"))
        .bearer_auth(VENDOR_TOKEN)
        .body(basic.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "E1", "{r}");
    let broken = basic
        .replace("9c0e4b7a", "9c0e4b7c")
        .replace(BORN, "1911-11-31")
        .replace("\"KL-55012\"", &format!("\"{NAME}\""));
    let r: Value = c
        .post(s.url("/api/v1/deliveries"))
        .bearer_auth(VENDOR_TOKEN)
        .body(broken)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "E3", "{r}");
    let _ = c
        .post(s.url("/api/v1/admin/mappings/klidas-json/preview"))
        .bearer_auth(ADMIN_TOKEN)
        .body(basic.clone())
        .send()
        .await
        .unwrap();
    let list: Value = c
        .get(s.url("/api/v1/batches"))
        .bearer_auth(STATS_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for b in list["batches"].as_array().unwrap() {
        let _ = c
            .get(s.url(&format!(
                "/api/v1/batches/{}",
                b["batch_id"].as_str().unwrap()
            )))
            .bearer_auth(STATS_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await;
    }
    let _ = c
        .delete(s.url("/api/v1/admin/clients/demo-vendor/KL-55012"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    s.stop().await;
    let logs = String::from_utf8_lossy(&capture.0.lock().unwrap()).to_string();
    assert!(
        logs.contains("capture works"),
        "the capture must see log lines"
    );
    assert!(
        logs.contains("delivery processed"),
        "the server's own lines are captured too"
    );
    assert!(
        logs.lines().count() > 20,
        "trace level produced {} lines",
        logs.lines().count()
    );
    for secret in [
        NAME,
        GIVEN,
        BORN,
        "1911-11-31",
        "Kalker Hauptstraße",
        "0221 5550193",
        "KL-55012",
    ] {
        let hits: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains(secret))
            .take(3)
            .collect();
        assert!(hits.is_empty(), "{secret} appears in log lines: {hits:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_given_up_and_stores_nothing() {
    let s = TestServer::start_with(Backend::Sqlite, "[limits]\nbody_idle_timeout_secs = 1\n")
        .await
        .unwrap();
    let body =
        std::fs::read(repo().join("conformance-tests/cases/klidas-json/basic/input.json")).unwrap();
    let half = body[..body.len() / 2].to_vec();
    // Send half the body, then nothing: the server must answer within a few seconds.
    let stream = futures::stream::unfold(0u8, move |step| {
        let half = half.clone();
        async move {
            match step {
                0 => Some((Ok::<_, std::io::Error>(half), 1)),
                1 => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    None
                }
                _ => None,
            }
        }
    });
    let started = Instant::now();
    let r = Client::new()
        .post(s.url("/api/v1/deliveries"))
        .bearer_auth(VENDOR_TOKEN)
        .body(reqwest::Body::wrap_stream(stream))
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("the server answers a stalled body");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(r.status(), 422);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["code"], "X000", "{e}");
    // Nothing stored; the server still serves others.
    let list: Value = Client::new()
        .get(s.url("/api/v1/deliveries"))
        .bearer_auth(VENDOR_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(list["deliveries"].as_array().unwrap().is_empty());
    let r = Client::new()
        .post(s.url("/api/v1/deliveries"))
        .bearer_auth(VENDOR_TOKEN)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_of_the_http_layer_are_json_too() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let c = Client::new();
    // A withdrawal body far over the extractor's limit: 413 with the API's error body.
    let huge = vec![b'x'; 2 << 20];
    let r = c
        .post(s.url("/api/v1/consents/withdrawals"))
        .bearer_auth(VENDOR_TOKEN)
        .header("Content-Type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let e: Value = r.json().await.expect("a JSON error body");
    assert_eq!(e["code"], "L001", "{e}");
    assert!(e["details"].is_array());
    s.stop().await;
}
