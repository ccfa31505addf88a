//! Observability end to end: a local OTLP/HTTP receiver on port 0 records what Weiche exports;
//! the real server (SQLite) takes deliveries; the spans of every pipeline stage must arrive with
//! the delivery id, the metrics with their names and values, `/metrics` must answer Prometheus
//! text with the same counts, and nothing exported may carry personal data.
//!
//! The global tracing subscriber can be installed once per process, so this file has one test.

#[path = "../conformance-tests/support/mod.rs"]
mod support;
#[path = "../conformance-tests/testkit.rs"]
mod testkit;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use testkit::*;

/// What the receiver got: (path, JSON body) per request.
#[derive(Default)]
struct Received {
    requests: Vec<(String, Value)>,
}

async fn collect(
    got: web::Data<Mutex<Received>>,
    req: HttpRequest,
    body: web::Bytes,
) -> HttpResponse {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if !content_type.starts_with("application/json") {
        return HttpResponse::UnsupportedMediaType().body(content_type);
    }
    let Ok(json) = serde_json::from_slice::<Value>(&body) else {
        return HttpResponse::BadRequest().body("not JSON");
    };
    got.lock()
        .unwrap()
        .requests
        .push((req.path().to_string(), json));
    HttpResponse::Ok()
        .content_type("application/json")
        .body("{}")
}

/// Starts the OTLP receiver; returns its base URL.
fn start_receiver(got: Arc<Mutex<Received>>) -> (String, actix_web::dev::ServerHandle) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let data = web::Data::from(got);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(64 << 20))
            .route("/v1/traces", web::post().to(collect))
            .route("/v1/metrics", web::post().to(collect))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    (base, handle)
}

/// An OTLP attribute list as key → value (the string, int or double as text).
fn attributes(list: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for a in list.as_array().into_iter().flatten() {
        let key = a["key"].as_str().unwrap_or_default().to_string();
        let v = &a["value"];
        let value = if let Some(s) = v["stringValue"].as_str() {
            s.to_string()
        } else if !v["intValue"].is_null() {
            json_number(&v["intValue"]).to_string()
        } else if let Some(d) = v["doubleValue"].as_f64() {
            d.to_string()
        } else {
            v.to_string()
        };
        out.insert(key, value);
    }
    out
}

/// An OTLP/JSON integer (a string per the protobuf JSON mapping, or a number).
fn json_number(v: &Value) -> i64 {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not an integer: {v}"))
}

#[derive(Debug, Clone)]
struct Span {
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: BTreeMap<String, String>,
}

fn spans(got: &Received) -> (Vec<Span>, Vec<BTreeMap<String, String>>) {
    let mut spans = Vec::new();
    let mut resources = Vec::new();
    for (path, body) in &got.requests {
        if path != "/v1/traces" {
            continue;
        }
        for rs in body["resourceSpans"].as_array().into_iter().flatten() {
            resources.push(attributes(&rs["resource"]["attributes"]));
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for s in ss["spans"].as_array().into_iter().flatten() {
                    spans.push(Span {
                        name: s["name"].as_str().unwrap_or_default().to_string(),
                        trace_id: s["traceId"].as_str().unwrap_or_default().to_string(),
                        span_id: s["spanId"].as_str().unwrap_or_default().to_string(),
                        parent: s["parentSpanId"].as_str().unwrap_or_default().to_string(),
                        attributes: attributes(&s["attributes"]),
                    });
                }
            }
        }
    }
    (spans, resources)
}

/// The metrics of the last metrics export, by name.
fn last_metrics(got: &Received) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for (path, body) in &got.requests {
        if path != "/v1/metrics" {
            continue;
        }
        for rm in body["resourceMetrics"].as_array().into_iter().flatten() {
            for sm in rm["scopeMetrics"].as_array().into_iter().flatten() {
                for m in sm["metrics"].as_array().into_iter().flatten() {
                    out.insert(
                        m["name"].as_str().unwrap_or_default().to_string(),
                        m.clone(),
                    );
                }
            }
        }
    }
    out
}

/// The data points of a sum or gauge as (attributes, value).
fn points(metric: &Value) -> Vec<(BTreeMap<String, String>, i64)> {
    let data = if metric["sum"].is_object() {
        &metric["sum"]
    } else {
        &metric["gauge"]
    };
    data["dataPoints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| (attributes(&p["attributes"]), json_number(&p["asInt"])))
        .collect()
}

/// The value of one Prometheus sample line (`name{labels} value`).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn flush(telemetry: &Arc<weiche::telemetry::Telemetry>) {
    let t = telemetry.clone();
    tokio::task::spawn_blocking(move || t.flush())
        .await
        .unwrap()
        .expect("flush");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_arrive_by_otlp_and_at_metrics() {
    let got = Arc::new(Mutex::new(Received::default()));
    let (endpoint, receiver) = start_receiver(got.clone());
    let telemetry = Arc::new(weiche::telemetry::init_with(Some(&endpoint)));
    assert!(telemetry.exporting());

    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let c = reqwest::Client::new();
    let mut receipts = Vec::new();
    let mixed =
        std::fs::read(repo().join("conformance-tests/cases/klidas-json/mixed-errors/input.json"))
            .unwrap();
    let valid = klidas_delivery(
        "7a0c4d8e-1f2b-4c3d-9e8f-0a1b2c3d4e5f",
        "TEL",
        3,
        "ergaenzung",
    );
    for body in [mixed, valid.into_bytes()] {
        let r = c
            .post(s.url("/api/v1/deliveries"))
            .bearer_auth(VENDOR_TOKEN)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let receipt: Value = r.json().await.unwrap();
        assert!(receipt["delivery_id"].is_string(), "{receipt}");
        receipts.push(receipt);
    }
    assert_eq!(receipts[0]["status"], "E3");
    assert_eq!(receipts[1]["status"], "E1");
    let total = |key: &str| -> u64 { receipts.iter().map(|r| r[key].as_u64().unwrap()).sum() };
    assert!(total("rejected") > 0);
    let mut routed: BTreeMap<String, u64> = BTreeMap::new();
    let mut rejected: BTreeMap<String, u64> = BTreeMap::new();
    for r in &receipts {
        for (recipient, n) in r["routed"].as_object().unwrap() {
            *routed.entry(recipient.clone()).or_default() += n.as_u64().unwrap();
        }
        let mut first: BTreeMap<u64, String> = BTreeMap::new();
        for e in r["errors"].as_array().unwrap() {
            if let Some(p) = e["record"].as_u64() {
                first
                    .entry(p)
                    .or_insert(e["code"].as_str().unwrap().to_string());
            }
        }
        for code in first.values() {
            *rejected.entry(code.clone()).or_default() += 1;
        }
    }
    assert!(
        !routed.is_empty(),
        "the valid records go to the statistics offices"
    );

    // The sealer (every second; batches are due at once in the test policy) seals the items and
    // records a `deliver` span; wait for it by flushing until it has arrived.
    let mut deliver = None;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        flush(&telemetry).await;
        let (spans, _) = spans(&got.lock().unwrap());
        deliver = spans.into_iter().find(|s| s.name == "deliver");
        if deliver.is_some() {
            break;
        }
    }
    let deliver = deliver.expect("a deliver span from the batch sealer");
    assert!(deliver.attributes["weiche.batches"].parse::<i64>().unwrap() >= 1);

    // Prometheus text at /metrics, once the sealer's pass over every recipient has set the
    // outbox depths (a `deliver` span may come from a pass that is not the last).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        let r = c.get(s.url("/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let text = r.text().await.unwrap();
        let open = routed.keys().any(|recipient| {
            sample(
                &text,
                &format!("weiche_outbox_depth{{recipient=\"{recipient}\"}}"),
            ) != Some(0.0)
        });
        if !open || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let count =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
    assert_eq!(
        count("weiche_records_received_total"),
        total("received") as f64
    );
    assert_eq!(
        count("weiche_records_accepted_total"),
        total("accepted") as f64
    );
    for (code, n) in &rejected {
        assert_eq!(
            count(&format!("weiche_records_rejected_total{{code=\"{code}\"}}")),
            *n as f64
        );
    }
    for (recipient, n) in &routed {
        assert_eq!(
            count(&format!(
                "weiche_records_routed_total{{recipient=\"{recipient}\"}}"
            )),
            *n as f64
        );
        // Sealed by now: nothing open.
        assert_eq!(
            count(&format!("weiche_outbox_depth{{recipient=\"{recipient}\"}}")),
            0.0
        );
    }
    assert_eq!(count("weiche_deliveries_total{status=\"E1\"}"), 1.0);
    assert_eq!(count("weiche_deliveries_total{status=\"E3\"}"), 1.0);
    assert_eq!(
        count("weiche_push_attempts_total{outcome=\"success\"}"),
        0.0
    );
    for stage in [
        "ingest",
        "adapt",
        "validate",
        "route",
        "store",
        "store_wait",
    ] {
        assert_eq!(
            count(&format!("weiche_stage_seconds_count{{stage=\"{stage}\"}}")),
            2.0,
            "{stage}"
        );
        assert_eq!(
            count(&format!(
                "weiche_stage_seconds_bucket{{stage=\"{stage}\",le=\"+Inf\"}}"
            )),
            2.0
        );
    }
    assert!(count("weiche_stage_seconds_count{stage=\"deliver\"}") >= 1.0);
    for family in [
        "# TYPE weiche_records_received_total counter",
        "# TYPE weiche_records_rejected_total counter",
        "# TYPE weiche_records_routed_total counter",
        "# TYPE weiche_push_attempts_total counter",
        "# TYPE weiche_outbox_depth gauge",
        "# TYPE weiche_stage_seconds histogram",
        "# TYPE weiche_deliveries_total counter",
    ] {
        assert!(text.contains(family), "{family} missing in\n{text}");
    }

    // Spans: one trace per delivery, `ingest` the parent of the stages, all with the delivery id.
    flush(&telemetry).await;
    let received = std::mem::take(&mut *got.lock().unwrap());
    let (spans, resources) = spans(&received);
    assert!(
        resources
            .iter()
            .all(|r| r.get("service.name").map(String::as_str) == Some("weiche")),
        "{resources:?}"
    );
    for r in &receipts {
        let id = r["delivery_id"].as_str().unwrap();
        let of = |name: &str| -> Vec<&Span> {
            spans
                .iter()
                .filter(|s| {
                    s.name == name
                        && s.attributes.get("weiche.delivery_id").map(String::as_str) == Some(id)
                })
                .collect()
        };
        let ingest = of("ingest");
        assert_eq!(ingest.len(), 1, "one ingest span for {id}: {spans:#?}");
        let ingest = ingest[0];
        assert_eq!(ingest.attributes["weiche.vendor"], "demo-vendor");
        assert_eq!(ingest.attributes["weiche.format"], "klidas-json");
        assert!(ingest.parent.is_empty(), "ingest is a root span");
        for stage in ["adapt", "validate", "route", "store"] {
            let found = of(stage);
            assert_eq!(found.len(), 1, "one {stage} span for {id}: {spans:#?}");
            assert_eq!(found[0].trace_id, ingest.trace_id, "{stage}");
            assert_eq!(
                found[0].parent, ingest.span_id,
                "{stage} is a child of ingest"
            );
        }
        let validate = of("validate")[0];
        assert_eq!(
            validate.attributes["weiche.records"],
            r["received"].as_u64().unwrap().to_string()
        );
        assert!(validate.attributes.contains_key("weiche.stage_seconds"));
    }

    // Metrics by OTLP: the same instruments, dotted names, cumulative values.
    let metrics = last_metrics(&received);
    for name in [
        "weiche.records.received",
        "weiche.records.accepted",
        "weiche.records.rejected",
        "weiche.records.routed",
        "weiche.deliveries",
        "weiche.outbox.depth",
        "weiche.stage.duration",
    ] {
        assert!(
            metrics.contains_key(name),
            "{name} not exported: {:?}",
            metrics.keys()
        );
    }
    let single = |name: &str| -> i64 { points(&metrics[name]).iter().map(|(_, v)| v).sum() };
    assert_eq!(single("weiche.records.received"), total("received") as i64);
    assert_eq!(single("weiche.records.accepted"), total("accepted") as i64);
    for (attrs, v) in points(&metrics["weiche.records.rejected"]) {
        assert_eq!(Some(&(v as u64)), rejected.get(&attrs["code"]), "{attrs:?}");
    }
    for (attrs, v) in points(&metrics["weiche.records.routed"]) {
        assert_eq!(
            Some(&(v as u64)),
            routed.get(&attrs["recipient"]),
            "{attrs:?}"
        );
    }
    let stages: Vec<String> = metrics["weiche.stage.duration"]["histogram"]["dataPoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| attributes(&p["attributes"])["stage"].clone())
        .collect();
    for stage in ["ingest", "adapt", "validate", "route", "store", "deliver"] {
        assert!(
            stages.iter().any(|s| s == stage),
            "{stage} not in {stages:?}"
        );
    }

    // No personal data anywhere in what was exported or scraped (names, client ids, birth
    // dates, addresses of the deliveries).
    let exported: String = received
        .requests
        .iter()
        .map(|(_, b)| b.to_string())
        .collect();
    for personal in [
        "Wójcik",
        "Agnieszka",
        "KL-60001",
        "Mallinckrodtstraße",
        "KL-TEL-0",
        "Müller",
        "x@example.org",
    ] {
        assert!(!exported.contains(personal), "{personal} exported");
        assert!(!text.contains(personal), "{personal} in /metrics");
    }

    s.stop().await;
    let t = Arc::try_unwrap(telemetry).ok().expect("one guard");
    tokio::task::spawn_blocking(move || t.shutdown())
        .await
        .unwrap();
    receiver.stop(true).await;
}
