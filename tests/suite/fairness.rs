//! No delivery blocks another: while one vendor's large delivery trickles its last bytes, other
//! vendors' small deliveries are received, stored and answered at once (quality.md: "one slow or
//! huge delivery in progress never delays another vendor's small delivery by more than 1 s").
//! The large delivery stages its output and begins its store transaction only once its body has
//! ended, so it holds no lock while its client is slow.

use crate::testkit;

use reqwest::Client;
use serde_json::Value;
use std::time::{Duration, Instant};
use testkit::*;

/// Records of the large delivery (about 30 MB of klidas-json).
const LARGE_RECORDS: usize = 44_000;
/// Bytes of its end that trickle in.
const TRICKLE_BYTES: usize = 200;
/// How long the trickle lasts.
const TRICKLE: Duration = Duration::from_secs(60);
/// Small deliveries posted by the other vendor during the trickle.
const SMALL_DELIVERIES: usize = 10;

/// Both backends at once, in one test: the test mostly waits for the trickle, and as two tests it
/// would hold both of the test harness's threads (one per core) for a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_deliveries_pass_a_trickling_large_one_on_both_backends() {
    tokio::join!(
        small_deliveries_pass_a_trickling_large_one(Backend::Sqlite),
        small_deliveries_pass_a_trickling_large_one(Backend::Postgres),
    );
}

async fn small_deliveries_pass_a_trickling_large_one(backend: Backend) {
    // Bytes 1 s apart at most: far inside the idle timeout.
    let Some(s) = TestServer::start_with(backend, "[limits]\nbody_idle_timeout_secs = 20\n").await
    else {
        return;
    };
    let large = klidas_delivery(
        "fa1e0000-0000-4000-8000-000000000001",
        "L",
        LARGE_RECORDS,
        "ergaenzung",
    )
    .into_bytes();
    assert!(large.len() > 30_000_000, "{} bytes", large.len());
    let (head, tail) = large.split_at(large.len() - TRICKLE_BYTES);
    let head = bytes::Bytes::copy_from_slice(head);
    let tail: Vec<u8> = tail.to_vec();
    let gap = TRICKLE / TRICKLE_BYTES as u32;
    // The head at once, then the tail one byte at a time.
    let stream = futures::stream::unfold(None::<usize>, move |sent| {
        let head = head.clone();
        let tail = tail.clone();
        async move {
            match sent {
                None => Some((Ok::<_, std::io::Error>(head), Some(0))),
                Some(i) if i < tail.len() => {
                    tokio::time::sleep(gap).await;
                    Some((Ok(bytes::Bytes::copy_from_slice(&tail[i..=i])), Some(i + 1)))
                }
                Some(_) => None,
            }
        }
    });
    let url = s.url("/api/v1/deliveries?format=klidas-json");
    let big = tokio::spawn(async move {
        let started = Instant::now();
        let r = Client::new()
            .post(url)
            .bearer_auth(VENDOR_TOKEN)
            .header("Content-Type", "application/json")
            .body(reqwest::Body::wrap_stream(stream))
            .timeout(Duration::from_secs(600))
            .send()
            .await
            .expect("the large delivery is answered");
        let status = r.status();
        let receipt: Value = r.json().await.unwrap();
        (status, receipt, started.elapsed())
    });

    // The small deliveries come in the second half of the trickle, when the large delivery's
    // pipeline has long produced more output than any buffer holds.
    let started = Instant::now();
    tokio::time::sleep(TRICKLE / 2).await;
    let client = Client::new();
    let mut took = Vec::new();
    for i in 0..SMALL_DELIVERIES {
        let body = klidas_delivery(
            &format!("fa1e0000-0000-4000-8000-1000000000{i:02}"),
            &format!("S{i}"),
            5,
            "ergaenzung",
        );
        let t = Instant::now();
        let r = client
            .post(s.url("/api/v1/deliveries?format=klidas-json"))
            .bearer_auth(OTHER_VENDOR_TOKEN)
            .header("Content-Type", "application/json")
            .body(body)
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .expect("a small delivery is answered");
        let elapsed = t.elapsed();
        let status = r.status();
        let receipt: Value = r.json().await.unwrap();
        assert_eq!(status, 200, "{backend:?}: small delivery {i}: {receipt}");
        assert_eq!(receipt["status"], "E1", "{receipt}");
        assert_eq!(receipt["accepted"], 5, "{receipt}");
        took.push(elapsed);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(
        started.elapsed() < TRICKLE,
        "{backend:?}: the small deliveries ended after the trickle ({:?}): the test proves nothing",
        started.elapsed()
    );
    assert!(
        !big.is_finished(),
        "{backend:?}: the large delivery ended before the small ones did"
    );
    for (i, t) in took.iter().enumerate() {
        assert!(
            *t < Duration::from_secs(1),
            "{backend:?}: small delivery {i} took {t:?} while a large one trickled (all: {took:?})"
        );
    }

    let (status, receipt, elapsed) = big.await.unwrap();
    assert_eq!(status, 200, "{backend:?}: {receipt}");
    assert_eq!(receipt["status"], "E1", "{backend:?}: {receipt}");
    assert_eq!(receipt["accepted"], LARGE_RECORDS, "{backend:?}: {receipt}");
    assert!(
        elapsed >= TRICKLE,
        "{backend:?}: the trickle lasted {elapsed:?}"
    );
    s.stop().await;
}
