//! Delivery benchmark (quality.md, "Speed and memory"): the two ways out of Weiche.
//!
//! - **Push**: the real server (in this process, on a fresh database) with one push recipient
//!   (`batch_size = 100`) pointing at a local HTTPS sink (actix-web + rustls, in this process,
//!   checking every signature and parsing every body). Records are ingested while the sink is
//!   down; then the sink starts and the time from its first to its last accepted request gives
//!   records/s.
//! - **Pull**: one sealed batch of 10,000 records of the statistics office, fetched over HTTP
//!   (JSON, NDJSON, XML and CSV where served), each fetch read to the end; records/s and MB/s of
//!   the best and the median of several fetches.
//!
//! Run with `cargo bench --bench delivery`. SQLite always; PostgreSQL too when
//! `WEICHE_TEST_POSTGRES_URL` names an admin database (a fresh database is created next to it). Knobs: `WEICHE_BENCH_PUSH_RECORDS` (default 20,000),
//! `WEICHE_BENCH_PULL_FETCHES` (default 5). Timings are reported, never asserted; only the
//! counts are (every item arrives once).

#[path = "../conformance-tests/pushkit.rs"]
mod pushkit;
#[path = "../conformance-tests/support/mod.rs"]
mod support;
#[path = "../conformance-tests/testkit.rs"]
mod testkit;

use pushkit::*;
use std::time::{Duration, Instant};
use testkit::*;

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let records = knob("WEICHE_BENCH_PUSH_RECORDS", 20_000).max(10_000);
    let fetches = knob("WEICHE_BENCH_PULL_FETCHES", 5).max(1);
    println!("# Weiche delivery benchmark");
    println!(
        "machine: {} cores; push records: {records}; pull fetches per format: {fetches}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    run("sqlite", None, records, fetches).await;
    if std::env::var("WEICHE_TEST_POSTGRES_URL").is_ok() {
        run(
            "postgres",
            support::fresh_postgres_url().await,
            records,
            fetches,
        )
        .await;
    } else {
        println!("\n(PostgreSQL skipped: set WEICHE_TEST_POSTGRES_URL)");
    }
}

async fn run(backend: &str, pg_url: Option<String>, records: usize, fetches: usize) {
    let dir = tempfile::tempdir().unwrap();
    let url = match pg_url {
        Some(u) => u,
        None => support::fresh_sqlite_url(dir.path()),
    };
    let (ca, tls) = pki();
    let port = free_port();
    let config = push_config(dir.path(), &url, port, &ca, 60, 100);
    // The statistics office seals at 10,000 items only (no age rule within the run).
    let policy = dir.path().join("policies/statistik-nrw.toml");
    let text = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(
        &policy,
        text.replace("batch_max_age_secs = 0", "batch_max_age_secs = 86400"),
    )
    .unwrap();
    let s = TestServer::from_config(dir, &config, url, None).await;
    let client = reqwest::Client::new();

    // Ingest while the sink is down.
    let started = Instant::now();
    let mut pushed = 0usize;
    for d in 0..records.div_ceil(1_000) {
        let body = klidas_delivery(
            &uuid::Uuid::new_v4().to_string(),
            &format!("b{d}"),
            1_000,
            "ergaenzung",
        );
        let (status, receipt) = post_klidas(&client, &s, body).await;
        assert_eq!(status, 200);
        pushed += receipt["routed"][JOBCENTER].as_u64().unwrap() as usize;
    }
    println!(
        "\n## {backend}\ningest of {records} records (sink down): {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Push: start the sink, wait for every item.
    let mut rx = Receiver::new(port, tls);
    rx.start();
    rx.wait_for(pushed, Duration::from_secs(600)).await;
    let log = rx.log();
    let accepted: Vec<_> = log.iter().filter(|r| r.status == 200).collect();
    let first = accepted.first().unwrap().at;
    let last = accepted.last().unwrap().at;
    // The first accepted request's own items count from its arrival on: exclude them.
    let items_after_first: usize = accepted.iter().skip(1).map(|r| r.items.len()).sum();
    let secs = (last - first).as_secs_f64().max(1e-9);
    assert_eq!(rx.accepted().len(), pushed, "every item once");
    assert!(log.iter().all(|r| r.signature_ok));
    println!(
        "push to local HTTPS sink: {pushed} items in {} requests (batch_size 100), {:.0} records/s \
         (first to last accepted request: {:.2} s)",
        accepted.len(),
        items_after_first as f64 / secs,
        secs
    );
    rx.stop().await;

    // Pull: one batch of 10,000.
    let list: serde_json::Value = client
        .get(s.url("/api/v1/batches"))
        .bearer_auth(STATS_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let batch = list["batches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["items"] == 10_000)
        .expect("a batch of 10,000")["batch_id"]
        .as_str()
        .unwrap()
        .to_string();
    println!("pull of one batch of 10,000 records (best / median of {fetches}):");
    for accept in [
        "application/json",
        "application/x-ndjson",
        "application/xml",
        "text/csv",
    ] {
        let mut times = Vec::new();
        let mut bytes = 0usize;
        let mut served = true;
        for _ in 0..fetches {
            let t = Instant::now();
            let r = client
                .get(s.url(&format!("/api/v1/batches/{batch}")))
                .bearer_auth(STATS_TOKEN)
                .header("Accept", accept)
                .send()
                .await
                .unwrap();
            let ct = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            if r.status() != 200 || !ct.starts_with(accept) {
                served = false;
                break;
            }
            bytes = r.bytes().await.unwrap().len();
            times.push(t.elapsed().as_secs_f64());
        }
        if !served {
            println!("  {accept:<22} not served");
            continue;
        }
        times.sort_by(f64::total_cmp);
        let (best, median) = (times[0], times[times.len() / 2]);
        println!(
            "  {accept:<22} {:>9.0} / {:>9.0} records/s, {:>6.1} MB/s best ({} bytes)",
            10_000.0 / best,
            10_000.0 / median,
            bytes as f64 / best / 1e6,
            bytes
        );
    }
    s.stop().await;
}
