//! Pull batches in all four renderings (JSON, NDJSON, XML, CSV) from the real server on port 0
//! with a fresh database: the same items in each, XML well-formed and lossless, CSV with a header
//! and one row per item, identical bytes on every fetch. Runs on SQLite and, when
//! `WEICHE_TEST_POSTGRES_URL` is set, on PostgreSQL.

use crate::testkit;

use quick_xml::events::Event;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use testkit::*;
use weiche::deliver::formats::flatten;

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(s) = super::TestServer::start(super::Backend::Sqlite).await {
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
                    if let Some(s) = super::TestServer::start(super::Backend::Postgres).await {
                        super::$name(&s).await;
                        s.stop().await;
                    }
                }
            )*
        }
    };
}

both_backends!(
    batches_in_four_formats,
    unknown_accept_and_foreign_batches,
    a_batch_of_whole_store_pages,
);

/// One fetch: status, content type, body bytes.
async fn fetch(c: &Client, s: &TestServer, token: &str, id: &str, accept: Option<&str>) -> Fetched {
    let mut req = c
        .get(s.url(&format!("/api/v1/batches/{id}")))
        .bearer_auth(token);
    if let Some(a) = accept {
        req = req.header("Accept", a);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let content_type = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = r.bytes().await.unwrap().to_vec();
    Fetched {
        status,
        content_type,
        body,
    }
}

struct Fetched {
    status: StatusCode,
    content_type: String,
    body: Vec<u8>,
}

/// Fetches twice and checks both answers are `200` with the same bytes.
async fn fetch_stable(c: &Client, s: &TestServer, id: &str, accept: Option<&str>) -> Fetched {
    let a = fetch(c, s, STATS_TOKEN, id, accept).await;
    assert_eq!(
        a.status,
        200,
        "{accept:?}: {}",
        String::from_utf8_lossy(&a.body)
    );
    let b = fetch(c, s, STATS_TOKEN, id, accept).await;
    assert_eq!(b.status, 200);
    assert!(
        a.body == b.body,
        "{accept:?}: a second fetch gave other bytes"
    );
    a
}

/// A parsed XML element.
#[derive(Debug, Default)]
struct El {
    name: String,
    attrs: Vec<(String, String)>,
    text: String,
    children: Vec<El>,
}

impl El {
    fn child(&self, name: &str) -> &El {
        self.children
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no <{name}> in <{}>", self.name))
    }
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a whole document with quick-xml (end names checked, references resolved).
fn parse_xml(xml: &str) -> El {
    let mut r = quick_xml::Reader::from_str(xml);
    r.config_mut().check_end_names = true;
    r.config_mut().expand_empty_elements = true;
    let mut stack = vec![El::default()];
    loop {
        match r.read_event().expect("well-formed XML") {
            Event::Start(e) => {
                let mut el = El {
                    name: String::from_utf8(e.name().as_ref().to_vec()).unwrap(),
                    ..El::default()
                };
                for a in e.attributes() {
                    let a = a.expect("attribute");
                    el.attrs.push((
                        String::from_utf8(a.key.as_ref().to_vec()).unwrap(),
                        a.unescape_value().expect("attribute value").into_owned(),
                    ));
                }
                stack.push(el);
            }
            Event::End(_) => {
                let el = stack.pop().unwrap();
                stack.last_mut().unwrap().children.push(el);
            }
            Event::Text(t) => {
                let text = t.xml_content().expect("text");
                stack.last_mut().unwrap().text.push_str(&text);
            }
            Event::GeneralRef(g) => {
                let s = if g.is_char_ref() {
                    g.resolve_char_ref().unwrap().unwrap().to_string()
                } else {
                    match g.decode().unwrap().as_ref() {
                        "amp" => "&",
                        "lt" => "<",
                        "gt" => ">",
                        "quot" => "\"",
                        "apos" => "'",
                        other => panic!("entity {other}"),
                    }
                    .to_string()
                };
                stack.last_mut().unwrap().text.push_str(&s);
            }
            Event::Decl(_) => {}
            Event::Eof => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(stack.len(), 1, "unclosed elements");
    let mut doc = stack.pop().unwrap();
    assert_eq!(doc.children.len(), 1, "exactly one root element");
    doc.children.pop().unwrap()
}

/// An XML item element read back into JSON by the documented rules (docs/batch-formats.md).
fn xml_to_json(el: &El) -> Value {
    match el.attr("typ") {
        Some("null") => Value::Null,
        Some("boolean") => Value::Bool(el.text == "true"),
        Some("number") => serde_json::from_str(&el.text).unwrap(),
        Some("object") => json!({}),
        Some("array") => Value::Array(el.children.iter().map(xml_to_json).collect()),
        None if el.children.is_empty() => Value::String(el.text.clone()),
        None => Value::Object(
            el.children
                .iter()
                .map(|c| {
                    let key = match (c.name.as_str(), c.attr("name")) {
                        ("member", Some(n)) => n.to_string(),
                        _ => c.name.clone(),
                    };
                    (key, xml_to_json(c))
                })
                .collect(),
        ),
        Some(other) => panic!("unknown typ {other}"),
    }
}

fn record_refs(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["record_ref"].as_str().unwrap().to_string())
        .collect()
}

/// The statistics office's ready batches (listing seals what is due).
async fn ready_batches(c: &Client, s: &TestServer) -> Vec<Value> {
    let list = c
        .get(s.url("/api/v1/batches?state=ready"))
        .bearer_auth(STATS_TOKEN)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    list["batches"].as_array().unwrap().clone()
}

async fn deliver(c: &Client, s: &TestServer, body: String) -> Value {
    let r = c
        .post(s.url("/api/v1/deliveries"))
        .bearer_auth(VENDOR_TOKEN)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn batches_in_four_formats(s: &TestServer) {
    let c = Client::new();
    // 1 200 records (more than one store page of 1 000), then a full delivery without the last
    // ten: replaced records and ten cancellations, items with different fields.
    let r = deliver(
        &c,
        s,
        klidas_delivery(
            "55555555-0000-4000-8000-000000000001",
            "F",
            1200,
            "ergaenzung",
        ),
    )
    .await;
    assert_eq!(r["accepted"], 1200, "{r}");
    let r = deliver(
        &c,
        s,
        klidas_delivery(
            "55555555-0000-4000-8000-000000000002",
            "F",
            1190,
            "vollstaendig",
        ),
    )
    .await;
    assert_eq!(r["accepted"], 1190, "{r}");
    assert_eq!(r["cancelled"], 10, "{r}");

    let batches = ready_batches(&c, s).await;
    assert!(!batches.is_empty());
    let mut total = 0;
    let mut cancellations = 0;
    for b in &batches {
        let id = b["batch_id"].as_str().unwrap();

        // JSON (default and */*) and NDJSON: the reference items.
        let json = fetch_stable(&c, s, id, None).await;
        assert!(json.content_type.starts_with("application/json"));
        let doc: Value = serde_json::from_slice(&json.body).unwrap();
        let items = doc["items"].as_array().unwrap().clone();
        assert_eq!(items.len() as i64, b["items"].as_i64().unwrap());
        assert_eq!(fetch_stable(&c, s, id, Some("*/*")).await.body, json.body);
        let refs = record_refs(&items);
        total += items.len();
        cancellations += items.iter().filter(|i| i["type"] == "cancellation").count();

        let nd = fetch_stable(&c, s, id, Some("application/x-ndjson")).await;
        assert!(nd.content_type.starts_with("application/x-ndjson"));
        let lines: Vec<Value> = std::str::from_utf8(&nd.body)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines, items);

        // XML: well-formed, the header, one <item> per item, lossless.
        let xml = fetch_stable(&c, s, id, Some("application/xml")).await;
        assert!(
            xml.content_type.starts_with("application/xml"),
            "{}",
            xml.content_type
        );
        let text = std::str::from_utf8(&xml.body).expect("UTF-8");
        let root = parse_xml(text);
        assert_eq!(root.name, "weiche:statistik.batch.0001");
        assert_eq!(root.attr("xmlns:weiche"), Some("urn:weiche:batch:1"));
        assert_eq!(root.attr("produkt"), Some("Weiche"));
        assert_eq!(root.attr("produktversion"), Some(env!("CARGO_PKG_VERSION")));
        let kopf = root.child("nachrichtenkopf");
        let ident = kopf.child("identifikation.nachricht");
        assert_eq!(ident.child("nachrichtenUUID").text, id);
        assert_eq!(
            ident.child("nachrichtentyp").child("code").text,
            "statistik.batch.0001"
        );
        assert_eq!(ident.child("erstellungszeitpunkt").text, b["created_at"]);
        assert_eq!(kopf.child("leser").child("kennung").text, "statistik-nrw");
        assert_eq!(root.child("anzahlItems").text, items.len().to_string());
        let months: Vec<Value> = root
            .child("berichtsmonate")
            .children
            .iter()
            .map(|m| Value::String(m.text.clone()))
            .collect();
        assert_eq!(Value::Array(months), b["periods"]);
        let xml_items: Vec<&El> = root.children.iter().filter(|e| e.name == "item").collect();
        assert_eq!(xml_items.len(), items.len());
        let xml_refs: Vec<String> = xml_items
            .iter()
            .map(|e| e.child("record_ref").text.clone())
            .collect();
        assert_eq!(xml_refs, refs);
        let back: Vec<Value> = xml_items.iter().map(|e| xml_to_json(e)).collect();
        assert_eq!(back, items, "the XML items read back as the JSON items");

        // CSV: a header and one row per item; every leaf in its column.
        let csv = fetch_stable(&c, s, id, Some("text/csv")).await;
        assert_eq!(csv.content_type, "text/csv; charset=utf-8; header=present");
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(b';')
            .from_reader(csv.body.as_slice());
        let header: Vec<String> = reader
            .headers()
            .unwrap()
            .iter()
            .map(str::to_string)
            .collect();
        let col = |path: &str| header.iter().position(|h| h == path);
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), items.len());
        let ref_col = col("record_ref").expect("record_ref column");
        let csv_refs: Vec<String> = rows.iter().map(|r| r[ref_col].to_string()).collect();
        assert_eq!(csv_refs, refs);
        for (row, item) in rows.iter().zip(&items) {
            assert_eq!(row.len(), header.len());
            let flat = flatten(item);
            for (path, cell) in &flat {
                assert_eq!(&row[col(path).expect("column of every path")], cell);
            }
            let filled = row.iter().filter(|c| !c.is_empty()).count();
            assert_eq!(filled, flat.iter().filter(|(_, c)| !c.is_empty()).count());
        }
        assert!(col("client.birth_date").is_some());
        assert!(col("services.0.kind").is_some());
    }
    assert_eq!(total, 2400);
    assert_eq!(cancellations, 10);
}

async fn unknown_accept_and_foreign_batches(s: &TestServer) {
    let c = Client::new();
    let r = deliver(
        &c,
        s,
        klidas_delivery("55555555-0000-4000-8000-000000000003", "U", 3, "ergaenzung"),
    )
    .await;
    assert_eq!(r["accepted"], 3, "{r}");
    let id = ready_batches(&c, s).await[0]["batch_id"]
        .as_str()
        .unwrap()
        .to_string();
    for accept in ["application/pdf", "text/html", "application/xml;q=0"] {
        let f = fetch(&c, s, STATS_TOKEN, &id, Some(accept)).await;
        assert_eq!(f.status, 400, "{accept}");
        let e: Value = serde_json::from_slice(&f.body).unwrap();
        assert_eq!(e["code"], "R400");
    }
    // Weighed by q: CSV preferred over XML.
    let f = fetch(
        &c,
        s,
        STATS_TOKEN,
        &id,
        Some("application/xml;q=0.5, text/csv"),
    )
    .await;
    assert_eq!(f.status, 200);
    assert!(f.content_type.starts_with("text/csv"));
    // Another recipient's batch is not found, whatever the format.
    for accept in ["application/xml", "text/csv"] {
        let f = fetch(&c, s, OTHER_STATS_TOKEN, &id, Some(accept)).await;
        assert_eq!(f.status, 404, "{accept}");
    }
}

/// A batch of exactly two store pages (2 × 1,000 items): the last page is full, so the end of
/// the batch is found by a page that is empty; JSON still closes, NDJSON has one line an item.
async fn a_batch_of_whole_store_pages(s: &TestServer) {
    let c = Client::new();
    let r = deliver(
        &c,
        s,
        klidas_delivery(
            "55555555-0000-4000-8000-000000000002",
            "P",
            2000,
            "ergaenzung",
        ),
    )
    .await;
    assert_eq!(r["routed"]["statistik-nrw"], 2000, "{r}");
    let batches = ready_batches(&c, s).await;
    assert_eq!(batches.len(), 1, "{batches:?}");
    assert_eq!(batches[0]["items"], 2000);
    let id = batches[0]["batch_id"].as_str().unwrap();
    let json: Value =
        serde_json::from_slice(&fetch_stable(&c, s, id, Some("application/json")).await.body)
            .unwrap();
    let items = json["items"].as_array().unwrap();
    assert_eq!(items.len(), 2000);
    let ndjson = fetch_stable(&c, s, id, Some("application/x-ndjson"))
        .await
        .body;
    let lines: Vec<Value> = String::from_utf8(ndjson)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(&lines, items, "NDJSON has the JSON's items, in order");
    let refs: std::collections::BTreeSet<&str> = items
        .iter()
        .map(|i| i["record_ref"].as_str().unwrap())
        .collect();
    assert_eq!(refs.len(), 2000);
}
