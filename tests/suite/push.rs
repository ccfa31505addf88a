//! Push delivery (http-api.md, "Push recipients"; quality.md, Reliability) against a real HTTPS
//! receiver started here on a loopback port, with a CA and a server certificate generated here
//! (rcgen). The receiver checks every request's `X-Weiche-Signature`, records what it answered,
//! and can be down (connection refused), answer `503`, `400`, or `2xx`.
//!
//! - An outage (refused, then `503`s, then back) loses nothing and duplicates nothing: every
//!   item arrives in exactly one accepted request, items of one record in the order they arose,
//!   and every retry of a group carries the same `Idempotency-Key`.
//! - A `400` makes a dead letter at once (an audit event); an administrator's replay delivers
//!   it; discard ends another; both are audit events.
//! - Two server instances on one PostgreSQL database deliver each item exactly once, and when
//!   the instance holding the lane is stopped, the other takes over.
//! - Two `weiche serve` processes on one PostgreSQL database: the one holding the lane is
//!   killed with SIGKILL in the middle of sending; the other takes the lane over after its lease
//!   and every item arrives, once per `Idempotency-Key`, in order per record.

use crate::{pushkit, support, testkit};

use pushkit::*;
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use testkit::*;

async fn start(backend: Backend, port: u16, ca_pem: &str) -> Option<TestServer> {
    let dir = tempfile::tempdir().unwrap();
    let url = match backend {
        Backend::Sqlite => support::fresh_sqlite_url(dir.path()),
        Backend::Postgres => support::fresh_postgres_url().await?,
    };
    let config = push_config(dir.path(), &url, port, ca_pem, 30, 7);
    Some(TestServer::from_config(dir, &config, url, None).await)
}

/// Posts `n` records `<prefix>-<i>` (a fresh message id each time) to the server at `base`;
/// the receipt, which must be `E1`.
async fn post_records(base: &str, prefix: &str, n: usize) -> Value {
    let message_id = uuid::Uuid::new_v4().to_string();
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/deliveries?format=klidas-json"))
        .bearer_auth(VENDOR_TOKEN)
        .header("Content-Type", "application/json")
        .body(klidas_delivery(&message_id, prefix, n, "ergaenzung"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let receipt: Value = r.json().await.unwrap();
    assert_eq!(receipt["status"], "E1", "{receipt}");
    receipt
}

/// Delivers `n` records `<prefix>-<i>` (`_what` names the call).
async fn deliver(s: &TestServer, _what: &str, prefix: &str, n: usize) -> Value {
    post_records(&s.base, prefix, n).await
}

async fn admin(s: &TestServer, method: reqwest::Method, path: &str) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .request(method, s.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `expected` distinct items (record ref, type, delivery), each once; items of one record in
/// the order of their deliveries.
fn assert_each_once_in_order(
    items: &[(String, String, String)],
    expected: usize,
    deliveries: &[String],
) {
    assert_eq!(items.len(), expected, "items accepted");
    let distinct: BTreeSet<_> = items.iter().collect();
    assert_eq!(distinct.len(), expected, "an item was accepted twice");
    let mut per_record: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (record_ref, _, delivery) in items {
        let pos = deliveries
            .iter()
            .position(|d| d == delivery)
            .expect("item of a known delivery");
        per_record.entry(record_ref).or_default().push(pos);
    }
    for (record, order) in per_record {
        assert!(
            order.windows(2).all(|w| w[0] <= w[1]),
            "items of {record} out of order: {order:?}"
        );
    }
}

/// Every item of the accepted requests once; items of one record in delivery order.
fn assert_exactly_once_in_order(rx: &Receiver, expected: usize, deliveries: &[String]) {
    assert_each_once_in_order(&rx.accepted(), expected, deliveries);
    let log = rx.log();
    assert!(
        log.iter().all(|r| r.signature_ok),
        "a signature did not verify"
    );
    // One key per group: a key that was accepted once is never accepted again.
    let mut keys = BTreeSet::new();
    for r in log.iter().filter(|r| r.status == 200) {
        assert!(keys.insert(&r.key), "group {} accepted twice", r.key);
        assert!(r.items.len() <= 7, "batch_size exceeded");
    }
}

async fn outage_run(backend: Backend) {
    let (ca, tls) = pki();
    let port = free_port();
    let Some(s) = start(backend, port, &ca).await else {
        return;
    };
    let mut rx = Receiver::new(port, tls);
    // Down: nothing listens on the port. Two deliveries; the second replaces some records.
    let first = deliver(&s, "push-1", "p", 24).await;
    let second = deliver(&s, "push-2", "p", 10).await;
    let routed = |r: &Value| r["routed"][JOBCENTER].as_u64().unwrap() as usize;
    let expected = routed(&first) + routed(&second);
    assert!(expected > 20, "{first}");
    // Let attempts fail against the closed port.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let head = s.gateway.store.push_head(JOBCENTER).await.unwrap();
        if head.as_ref().is_some_and(|g| g.attempts >= 2) {
            assert!(
                head.unwrap().last_error.unwrap().contains("connection"),
                "refused connections are retried"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no failed attempts recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Up, but unavailable for a while, then accepting.
    rx.set(Mode::Unavailable(5));
    rx.start();
    rx.wait_for(expected, Duration::from_secs(60)).await;
    // Nothing more arrives afterwards.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deliveries = [
        first["delivery_id"].as_str().unwrap().to_string(),
        second["delivery_id"].as_str().unwrap().to_string(),
    ];
    assert_exactly_once_in_order(&rx, expected, &deliveries);
    let log = rx.log();
    assert!(log.iter().filter(|r| r.status == 503).count() == 5);
    // The group that met the 503s was retried under its one key.
    let first_key = &log[0].key;
    assert!(log.iter().take(6).all(|r| &r.key == first_key), "{log:?}");
    assert_eq!(
        s.gateway.store.push_backlog(JOBCENTER).await.unwrap(),
        0,
        "everything delivered"
    );
    let (st, dead) = admin(&s, reqwest::Method::GET, "/api/v1/admin/dead-letters").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(dead["dead_letters"].as_array().unwrap().len(), 0);
    rx.stop().await;
    s.stop().await;
}

#[tokio::test]
async fn outage_loses_nothing_sqlite() {
    outage_run(Backend::Sqlite).await;
}

#[tokio::test]
async fn outage_loses_nothing_postgres() {
    outage_run(Backend::Postgres).await;
}

async fn dead_letter_run(backend: Backend) {
    let (ca, tls) = pki();
    let port = free_port();
    let Some(s) = start(backend, port, &ca).await else {
        return;
    };
    let mut rx = Receiver::new(port, tls);
    rx.set(Mode::Refuse);
    rx.start();
    let receipt = deliver(&s, "dead-1", "d", 9).await;
    let expected = receipt["routed"][JOBCENTER].as_u64().unwrap() as usize;
    assert!(expected > 7, "two groups: {receipt}");
    // Both groups refused once each, and dead at once.
    let deadline = Instant::now() + Duration::from_secs(20);
    let dead = loop {
        let (_, d) = admin(&s, reqwest::Method::GET, "/api/v1/admin/dead-letters").await;
        let list = d["dead_letters"].as_array().unwrap().clone();
        if list.len() == 2 {
            break list;
        }
        assert!(Instant::now() < deadline, "no dead letters: {d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        dead.iter()
            .all(|g| g["attempts"] == 1 && g["last_error"] == "HTTP 400")
    );
    assert!(dead.iter().all(|g| g["recipient"] == JOBCENTER));
    assert_eq!(rx.log().len(), 2, "a 400 is not retried");
    // Replay the first, discard the second.
    rx.set(Mode::Accept);
    let id = |g: &Value| g["id"].as_str().unwrap().to_string();
    let (st, g) = admin(
        &s,
        reqwest::Method::POST,
        &format!("/api/v1/admin/dead-letters/{}/replay", id(&dead[0])),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{g}");
    assert_eq!(g["state"], "pending");
    let (st, g) = admin(
        &s,
        reqwest::Method::POST,
        &format!("/api/v1/admin/dead-letters/{}/discard", id(&dead[1])),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{g}");
    assert_eq!(g["state"], "discarded");
    let replayed = dead[0]["items"].as_u64().unwrap() as usize;
    rx.wait_for(replayed, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rx.accepted().len(),
        replayed,
        "only the replayed group arrives"
    );
    // Settled dead letters are gone from the list and cannot be settled again.
    let (_, d) = admin(&s, reqwest::Method::GET, "/api/v1/admin/dead-letters").await;
    assert_eq!(d["dead_letters"].as_array().unwrap().len(), 0);
    let (st, _) = admin(
        &s,
        reqwest::Method::POST,
        &format!("/api/v1/admin/dead-letters/{}/replay", id(&dead[1])),
    )
    .await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, _) = admin(
        &s,
        reqwest::Method::POST,
        "/api/v1/admin/dead-letters/no-such-group/replay",
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // Not for other roles.
    let r = reqwest::Client::new()
        .get(s.url("/api/v1/admin/dead-letters"))
        .bearer_auth(VENDOR_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Each step is an audit event, and the chain holds.
    let events = s.gateway.store.audit_events(0, 100_000).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "dead_letter").count(), 2);
    assert_eq!(
        kinds.iter().filter(|k| **k == "dead_letter_replay").count(),
        1
    );
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "dead_letter_discard")
            .count(),
        1
    );
    let (st, v) = admin(&s, reqwest::Method::GET, "/api/v1/admin/audit/verify").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["intact"], true, "{v}");
    rx.stop().await;
    s.stop().await;
}

#[tokio::test]
async fn refused_items_are_dead_letters_until_replayed_sqlite() {
    dead_letter_run(Backend::Sqlite).await;
}

#[tokio::test]
async fn refused_items_are_dead_letters_until_replayed_postgres() {
    dead_letter_run(Backend::Postgres).await;
}

#[tokio::test]
async fn two_instances_deliver_each_item_once() {
    let Some(url) = support::fresh_postgres_url().await else {
        return;
    };
    let (ca, tls) = pki();
    let port = free_port();
    let dir_a = tempfile::tempdir().unwrap();
    // A short lease, so that the takeover after a stop is quick.
    let config = push_config(dir_a.path(), &url, port, &ca, 3, 7);
    let mut a = TestServer::from_config(dir_a, &config, url.clone(), None).await;
    let b = TestServer::from_config(tempfile::tempdir().unwrap(), &config, url, None).await;
    let mut rx = Receiver::new(port, tls);
    rx.start();
    let mut deliveries = Vec::new();
    let mut expected = 0;
    for round in 0..6 {
        let s = if round % 2 == 0 { &a } else { &b };
        let r = deliver(s, &format!("two-{round}"), &format!("t{}", round % 3), 15).await;
        expected += r["routed"][JOBCENTER].as_u64().unwrap() as usize;
        deliveries.push(r["delivery_id"].as_str().unwrap().to_string());
    }
    rx.wait_for(expected, Duration::from_secs(60)).await;
    // One instance stops (giving its lanes up); the other carries on alone. (Taking over an
    // expired lease of a crashed process is covered by the store contract tests.)
    let holder = |s: &TestServer| s.gateway.instance.clone();
    let (a_id, b_id) = (holder(&a), holder(&b));
    // (b drops the shared database at its stop.)
    a.database_url.clear();
    a.stop().await;
    for round in 6..8 {
        let r = deliver(&b, &format!("two-{round}"), &format!("t{}", round % 3), 15).await;
        expected += r["routed"][JOBCENTER].as_u64().unwrap() as usize;
        deliveries.push(r["delivery_id"].as_str().unwrap().to_string());
    }
    rx.wait_for(expected, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_ne!(a_id, b_id);
    assert_exactly_once_in_order(&rx, expected, &deliveries);
    rx.stop().await;
    b.stop().await;
}

/// A `weiche serve` process on a free port; killed (SIGKILL) when dropped.
struct Process {
    child: std::process::Child,
    base: String,
    instance: String,
}

impl Process {
    // The child is waited for by `kill` (also on drop).
    #[allow(clippy::zombie_processes)]
    async fn start(config: &std::path::Path) -> Process {
        let port = free_port();
        let base = format!("http://127.0.0.1:{port}");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weiche"))
            .args(["serve", "--config"])
            .arg(config)
            .env("WEICHE_LISTEN", format!("127.0.0.1:{port}"))
            .env("WEICHE_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start weiche serve");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(format!("{base}/health/ready")).await
                && r.status() == StatusCode::OK
            {
                let ready: Value = r.json().await.unwrap();
                let instance = ready["instance"].as_str().unwrap().to_string();
                return Process {
                    child,
                    base,
                    instance,
                };
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("weiche serve did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Posts `n` records `<prefix>-<i>`: (delivery id, items routed to the push recipient).
    async fn deliver(&self, prefix: &str, n: usize) -> (String, usize) {
        let receipt = post_records(&self.base, prefix, n).await;
        (
            receipt["delivery_id"].as_str().unwrap().to_string(),
            receipt["routed"][JOBCENTER].as_u64().unwrap() as usize,
        )
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The instance holding the push recipient's lane.
async fn lane_owner(pool: &sqlx::PgPool) -> Option<String> {
    sqlx::query_scalar("SELECT owner FROM push_lanes WHERE recipient = $1")
        .bind(JOBCENTER)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_deliver_each_item_once_when_the_lane_holder_is_killed() {
    let Some(url) = support::fresh_postgres_url().await else {
        return;
    };
    let (ca, tls) = pki();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    // A lease of 3 s: the takeover after the kill comes quickly.
    let config = push_config(dir.path(), &url, port, &ca, 3, 7);
    let mut processes = [Process::start(&config).await, Process::start(&config).await];
    assert_ne!(processes[0].instance, processes[1].instance);
    // The receiver is down while the first deliveries arrive, through both processes, so a
    // backlog of groups waits; then it answers slowly, so the kill meets a lane mid-stream.
    let mut rx = Receiver::new(port, tls);
    let mut deliveries = Vec::new();
    let mut expected = 0;
    for round in 0..4 {
        let (id, routed) = processes[round % 2]
            .deliver(&format!("k{}", round % 3), 30)
            .await;
        deliveries.push(id);
        expected += routed;
    }
    assert!(expected > 40, "several groups wait: {expected} items");
    rx.set_delay(Duration::from_millis(100));
    rx.start();
    rx.wait_for(1, Duration::from_secs(30)).await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let owner = lane_owner(&pool).await.expect("the lane is held");
    let holder = processes
        .iter()
        .position(|p| p.instance == owner)
        .expect("one of the two holds the lane");
    processes[holder].kill();
    let before_kill = rx.accepted_once_per_key().len();
    assert!(
        before_kill < expected,
        "the kill came in the middle of sending ({before_kill} of {expected} arrived before)"
    );
    // The survivor takes deliveries and, after the lease ran out, the lane.
    let survivor = &processes[1 - holder];
    for round in 4..6 {
        let (id, routed) = survivor.deliver(&format!("k{}", round % 3), 30).await;
        deliveries.push(id);
        expected += routed;
    }
    rx.set_delay(Duration::ZERO);
    let deadline = Instant::now() + Duration::from_secs(60);
    while rx.accepted_once_per_key().len() < expected {
        assert!(
            Instant::now() < deadline,
            "{} of {expected} items arrived",
            rx.accepted_once_per_key().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Once per key: a group the killed process had sent but not recorded comes again under
    // its key, with the same items; no item comes under two keys.
    assert_each_once_in_order(&rx.accepted_once_per_key(), expected, &deliveries);
    assert!(rx.log().iter().all(|r| r.signature_ok));
    assert_eq!(
        lane_owner(&pool).await.as_deref(),
        Some(survivor.instance.as_str())
    );
    pool.close().await;
    rx.stop().await;
    drop(processes);
    support::drop_postgres_database(&url).await;
}

/// Runs `weiche <args>` and returns its exit code and output (stdout and stderr).
fn weiche(args: &[&str], config: &std::path::Path) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weiche"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("WEICHE_LOG", "warn")
        .output()
        .expect("run weiche");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// `weiche purge` and `weiche audit verify` read the settings and open the store, nothing else:
/// a push recipient whose CA file is missing does not stop them. `weiche check`, which builds
/// what `serve` starts with, still reports the file.
#[test]
fn purge_and_audit_verify_need_no_push_clients() {
    let dir = tempfile::tempdir().unwrap();
    let url = support::fresh_sqlite_url(dir.path());
    let (ca_pem, _) = pki();
    let config = push_config(dir.path(), &url, free_port(), &ca_pem, 30, 7);
    std::fs::remove_file(dir.path().join("push-ca.pem")).unwrap();

    let (code, out) = weiche(&["purge", "--dry-run"], &config);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("would purge"), "{out}");

    let (code, out) = weiche(&["audit", "verify"], &config);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("audit chain intact"), "{out}");

    let (code, out) = weiche(&["check"], &config);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("push-ca.pem"), "{out}");
}
