//! Atomic deliveries under `kill -9`: the real `weiche serve` binary is killed with SIGKILL at
//! random moments while clients post 1,000-record deliveries, then restarted. Every delivery
//! whose receipt reached a client must be complete; every other delivery must be wholly present
//! or wholly absent — records, routed items and the delivery row alike. Runs on SQLite and (when
//! `WEICHE_TEST_POSTGRES_URL` is set) on PostgreSQL.

use crate::{support, testkit};

use rand::Rng;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::*;

const RECORDS: usize = 1000;
const ROUNDS: usize = 3;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// The child is handed to the caller, which kills and waits for it.
#[allow(clippy::zombie_processes)]
async fn start(config: &std::path::Path, base: &str) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weiche"))
        .args(["serve", "--config"])
        .arg(config)
        .env("WEICHE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start weiche serve");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{base}/health/ready")).send().await
            && r.status() == 200
        {
            return child;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("server did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn crash_run(database_url: String) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = write_config(dir.path(), &database_url, "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    std::fs::write(&config, text).unwrap();

    // prefix -> got a receipt
    let attempted: Arc<Mutex<BTreeMap<String, bool>>> = Arc::default();
    let mut next = 0usize;
    for round in 0..ROUNDS {
        let mut child = start(&config, &base).await;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Receipts of this round: the kill waits for the first, so every round proves
        // something however slow the machine.
        let receipts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut clients = Vec::new();
        for lane in 0..2 {
            let attempted = attempted.clone();
            let stop = stop.clone();
            let receipts = receipts.clone();
            let base = base.clone();
            let first = next + lane * 1000;
            clients.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut n = first;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let prefix = format!("R{round}-D{n}");
                    let id = uuid::Uuid::new_v4().to_string();
                    let body = klidas_delivery(&id, &prefix, RECORDS, "ergaenzung");
                    attempted.lock().unwrap().insert(prefix.clone(), false);
                    let sent = client
                        .post(format!("{base}/api/v1/deliveries"))
                        .bearer_auth(VENDOR_TOKEN)
                        .body(body)
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 200 => {
                            if let Ok(v) = r.json::<serde_json::Value>().await {
                                assert_eq!(v["accepted"], RECORDS as u64);
                                attempted.lock().unwrap().insert(prefix, true);
                                receipts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            }
                        }
                        _ => return,
                    }
                    n += 1;
                }
            }));
        }
        next += 2000;
        let deadline = Instant::now() + Duration::from_secs(120);
        while receipts.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            assert!(
                Instant::now() < deadline,
                "round {round}: no receipt within 120 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Then at a random moment, most likely in the middle of a delivery.
        let wait = rand::thread_rng().gen_range(100..1500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for c in clients {
            c.await.unwrap();
        }
    }

    // Restart once more, then look at what survived.
    let mut child = start(&config, &base).await;
    let store = weiche::store::connect(&database_url).await.unwrap();
    let attempted = attempted.lock().unwrap().clone();
    let mut complete = 0usize;
    for (prefix, receipted) in &attempted {
        let mut present = 0;
        for i in 0..RECORDS {
            if store
                .record("demo-vendor", &format!("{prefix}-{i}"), "2026-10")
                .await
                .unwrap()
                .is_some()
            {
                present += 1;
            }
        }
        assert!(
            present == 0 || present == RECORDS,
            "delivery {prefix} is half-stored: {present} of {RECORDS} records"
        );
        if *receipted {
            assert_eq!(
                present, RECORDS,
                "delivery {prefix} had a receipt but is not complete"
            );
        }
        if present == RECORDS {
            complete += 1;
        }
    }
    let receipted = attempted.values().filter(|r| **r).count();
    assert!(
        receipted > 0,
        "no delivery finished before the kills; the test proves nothing"
    );
    // One delivery row per complete delivery, and every record's items for both recipients.
    let rows = store
        .deliveries("demo-vendor", None, None, 100_000)
        .await
        .unwrap();
    assert_eq!(rows.len(), complete, "delivery rows vs complete deliveries");
    for recipient in ["statistik-nrw", "statistik-zwei"] {
        let rule = weiche::store::SealRule {
            max_items: 1_000_000,
            max_age_ms: 0,
            push: false,
            call_items: weiche::store::SEAL_ITEMS_PER_CALL,
        };
        store.seal(recipient, rule, i64::MAX / 2).await.unwrap();
        let items: i64 = store
            .batches(recipient, None)
            .await
            .unwrap()
            .iter()
            .map(|b| b.items)
            .sum();
        assert_eq!(items as usize, complete * RECORDS, "items of {recipient}");
    }
    eprintln!(
        "kill -9 check: {} deliveries attempted, {receipted} with receipt, {complete} complete, none partial",
        attempted.len()
    );
    child.kill().unwrap();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_leaves_whole_deliveries_or_none_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = support::fresh_sqlite_url(dir.path());
    crash_run(url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_leaves_whole_deliveries_or_none_postgres() {
    if let Some(url) = support::fresh_postgres_url().await {
        crash_run(url.clone()).await;
        support::drop_postgres_database(&url).await;
    }
}
