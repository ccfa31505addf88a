//! Early writes: once a delivery's body has ended and the writer is free, its store
//! transaction begins while its pipeline still runs, and its records are written as they come
//! (`weiche_early_writes_total` counts such deliveries). The delivery stays atomic: stored whole
//! when it is accepted, not at all when it ends rejected whole after records were written.

use crate::testkit;

use reqwest::{Client, StatusCode};
use serde_json::Value;
use testkit::*;

/// Records a delivery: several chunks of an early write.
const RECORDS: usize = 450;
/// Deliveries posted at most until one was written early (the writer may be busy with a seal
/// or a checkpoint at the moment a body ends).
const ATTEMPTS: usize = 20;

/// One test for both backends, one after the other: the counter is per process, so a test
/// beside it would count too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_writes_keep_deliveries_atomic_on_both_backends() {
    early_writes_keep_deliveries_atomic(Backend::Sqlite).await;
    early_writes_keep_deliveries_atomic(Backend::Postgres).await;
}

async fn early_writes(c: &Client, s: &TestServer) -> u64 {
    let text = c
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("weiche_early_writes_total "))
        .expect("weiche_early_writes_total in /metrics")
        .parse()
        .unwrap()
}

/// How many records and output items the store holds under the test vendor's `record_id`.
async fn stored(s: &TestServer, record_id: &str) -> (usize, usize) {
    let store = &s.gateway.store;
    let records = store.records_by_id("demo-vendor", record_id).await.unwrap();
    let items = store.record_items("demo-vendor", record_id).await.unwrap();
    (records.len(), items.len())
}

/// Posts deliveries made by `body(attempt)` until one was written early; returns the attempts'
/// answers and the index of that one.
async fn until_written_early(
    c: &Client,
    s: &TestServer,
    body: impl Fn(usize) -> String,
) -> (Vec<(StatusCode, Value)>, usize) {
    let mut answers = Vec::new();
    for attempt in 0..ATTEMPTS {
        let before = early_writes(c, s).await;
        answers.push(post_klidas(c, s, body(attempt)).await);
        if early_writes(c, s).await > before {
            return (answers, attempt);
        }
    }
    panic!("no delivery of {ATTEMPTS} was written early");
}

async fn early_writes_keep_deliveries_atomic(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let c = Client::new();
    let id = |prefix: &str, attempt: usize| {
        format!("ea{prefix}{attempt:05}-0000-4000-8000-000000000000")
    };

    // Accepted: every record stored, with its items for both recipients.
    let (answers, early) = until_written_early(&c, &s, |attempt| {
        klidas_delivery(
            &id("1", attempt),
            &format!("A{attempt}"),
            RECORDS,
            "ergaenzung",
        )
    })
    .await;
    for (status, receipt) in &answers {
        assert_eq!(*status, 200, "{receipt}");
        assert_eq!(receipt["status"], "E1", "{receipt}");
        assert_eq!(receipt["accepted"], RECORDS, "{receipt}");
    }
    for i in [0, RECORDS / 2, RECORDS - 1] {
        let record_id = format!("A{early}-{i}");
        let (stored, items) = stored(&s, &record_id).await;
        assert_eq!(stored, 1, "{record_id}");
        assert_eq!(items, 2, "{record_id}: one item for each recipient");
    }

    // Rejected whole (the body breaks off after its records): nothing of it is stored,
    // although its first records were written before the end showed the break.
    let (answers, early) = until_written_early(&c, &s, |attempt| {
        let body = klidas_delivery(
            &id("2", attempt),
            &format!("R{attempt}"),
            RECORDS,
            "ergaenzung",
        );
        body[..body.len() - 40].to_string()
    })
    .await;
    for (status, receipt) in &answers {
        assert_eq!(*status, 422, "{receipt}");
        assert_eq!(receipt["status"], "E4", "{receipt}");
        assert_eq!(receipt["errors"][0]["code"], "X000", "{receipt}");
    }
    for attempt in 0..=early {
        for i in [0, RECORDS / 2] {
            let record_id = format!("R{attempt}-{i}");
            let (stored, items) = stored(&s, &record_id).await;
            assert!(stored == 0, "{record_id} was stored");
            assert!(items == 0, "{record_id} has items");
        }
    }
    // The message ids were not claimed: a corrected delivery with the same id goes through.
    let (status, receipt) = post_klidas(
        &c,
        &s,
        klidas_delivery(&id("2", early), &format!("R{early}"), RECORDS, "ergaenzung"),
    )
    .await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["duplicate"], false, "{receipt}");
    s.stop().await;
}
