//! Push test kit: an HTTPS receiver on a loopback port with a CA and server certificate made
//! here (rcgen), which checks every request's `X-Weiche-Signature`, records what it answered,
//! and can be down, answer `503` or `400`; and the configuration of a push recipient pointing
//! at it. A module of `tests/suite/` (and of the benches, by `#[path]`), next to `support`
//! and `testkit`.
#![allow(dead_code)]

use crate::testkit::write_config;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use hmac::{Hmac, Mac};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use sha2::Sha512;
use std::borrow::Cow;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The shared signing secret of the test recipient.
pub const SECRET: &str = "push-secret-0123456789abcdef0123456789abcdef";
/// The push recipient's id.
pub const JOBCENTER: &str = "jobcenter-test";

/// What the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `200`.
    Accept,
    /// `503` for the next n requests, then `200`.
    Unavailable(usize),
    /// `400`.
    Refuse,
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub key: String,
    pub signature_ok: bool,
    pub status: u16,
    /// (record_ref, type, source.delivery_id) of each item.
    pub items: Vec<(String, String, String)>,
    /// When it arrived.
    pub at: Instant,
}

#[derive(Debug)]
struct ReceiverState {
    mode: Mutex<Mode>,
    /// How long each answer takes (a slow receiver).
    delay: Mutex<Duration>,
    log: Mutex<Vec<Received>>,
    /// The body of a `400` answer.
    reason: Mutex<String>,
}

/// The receiver: an HTTPS server that can be stopped and started again on its port.
pub struct Receiver {
    port: u16,
    state: Arc<ReceiverState>,
    tls: rustls::ServerConfig,
    handle: Option<actix_web::dev::ServerHandle>,
}

fn verify(timestamp: &str, body: &[u8], signature: &str) -> bool {
    let mut mac = Hmac::<Sha512>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::decode(signature).is_ok_and(|s| mac.verify_slice(&s).is_ok())
}

/// A pushed body as far as the sink reads it: the three members of each item it logs. Read
/// typed, so that the rest of each item is skipped rather than built (the benchmark's sink shares
/// the server's two cores).
#[derive(serde::Deserialize)]
struct PushBody<'a> {
    #[serde(borrow)]
    items: Vec<PushItem<'a>>,
}

#[derive(serde::Deserialize)]
struct PushItem<'a> {
    #[serde(default, borrow)]
    record_ref: Option<Cow<'a, str>>,
    #[serde(default, borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    source: Option<PushSource<'a>>,
}

#[derive(serde::Deserialize)]
struct PushSource<'a> {
    #[serde(default, borrow)]
    delivery_id: Option<Cow<'a, str>>,
}

/// (record_ref, type, source.delivery_id) of each item, "" for what is missing; none for a body
/// of another shape.
fn items_of(body: &[u8]) -> Vec<(String, String, String)> {
    let Ok(parsed) = serde_json::from_slice::<PushBody>(body) else {
        return Vec::new();
    };
    let text = |t: Option<Cow<'_, str>>| t.map(Cow::into_owned).unwrap_or_default();
    parsed
        .items
        .into_iter()
        .map(|i| {
            (
                text(i.record_ref),
                text(i.kind),
                text(i.source.and_then(|s| s.delivery_id)),
            )
        })
        .collect()
}

async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<ReceiverState>,
) -> HttpResponse {
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let signature_ok = verify(
        &header("X-Weiche-Timestamp"),
        &body,
        &header("X-Weiche-Signature"),
    );
    let items = items_of(&body);
    let delay = *state.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let status = {
        let mut mode = state.mode.lock().unwrap();
        match *mode {
            Mode::Accept => 200,
            Mode::Refuse => 400,
            Mode::Unavailable(0) => {
                *mode = Mode::Accept;
                200
            }
            Mode::Unavailable(n) => {
                *mode = Mode::Unavailable(n - 1);
                503
            }
        }
    };
    state.log.lock().unwrap().push(Received {
        at: Instant::now(),
        key: header("Idempotency-Key"),
        signature_ok,
        status,
        items,
    });
    let body = if status == 400 {
        state.reason.lock().unwrap().clone()
    } else {
        String::new()
    };
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
        .insert_header(("Retry-After", "0"))
        .body(body)
}

impl Receiver {
    pub fn new(port: u16, tls: rustls::ServerConfig) -> Receiver {
        Receiver {
            port,
            state: Arc::new(ReceiverState {
                mode: Mutex::new(Mode::Accept),
                delay: Mutex::new(Duration::ZERO),
                log: Mutex::new(Vec::new()),
                reason: Mutex::new(String::new()),
            }),
            tls,
            handle: None,
        }
    }

    pub fn set(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// The body of every `400` answer from now on.
    pub fn set_reason(&self, reason: &str) {
        *self.state.reason.lock().unwrap() = reason.to_string();
    }

    /// Every answer from now on takes `delay`.
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    pub fn start(&mut self) {
        let data = web::Data::from(self.state.clone());
        let listener = std::net::TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(64 << 20))
                .default_service(web::to(receive))
        })
        .workers(1)
        .disable_signals()
        .listen_rustls_0_23(listener, self.tls.clone())
        .unwrap()
        .run();
        self.handle = Some(server.handle());
        tokio::spawn(server);
    }

    pub async fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.stop(false).await;
        }
    }

    pub fn log(&self) -> Vec<Received> {
        self.state.log.lock().unwrap().clone()
    }

    /// Items of the accepted requests, in arrival order.
    pub fn accepted(&self) -> Vec<(String, String, String)> {
        self.log()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .flat_map(|r| r.items)
            .collect()
    }

    /// Items of the accepted requests, in arrival order, each `Idempotency-Key` counted once —
    /// what a receiver that honours the key takes in. Panics when a key comes again with other
    /// items than the first time.
    pub fn accepted_once_per_key(&self) -> Vec<(String, String, String)> {
        let mut first: std::collections::BTreeMap<String, Vec<(String, String, String)>> =
            Default::default();
        let mut out = Vec::new();
        for r in self.log() {
            if !(200..300).contains(&r.status) {
                continue;
            }
            match first.get(&r.key) {
                Some(items) => assert_eq!(items, &r.items, "key {} again with other items", r.key),
                None => {
                    out.extend(r.items.iter().cloned());
                    first.insert(r.key.clone(), r.items);
                }
            }
        }
        out
    }

    pub async fn wait_for(&self, items: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.accepted().len() < items {
            assert!(
                Instant::now() < deadline,
                "the receiver got {} of {items} items in time",
                self.accepted().len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A CA and a server certificate for 127.0.0.1: the CA as PEM, and the receiver's TLS config.
pub fn pki() -> (String, rustls::ServerConfig) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Receiver CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "receiver");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
    let chain = vec![cert.der().clone()];
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    (ca_cert.pem(), tls)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes the configuration with the push recipient (and its policy, CA, secret) into `dir`.
/// `batch_size` is the push recipient's; its retries wait 20–200 ms.
pub fn push_config(
    dir: &Path,
    database_url: &str,
    port: u16,
    ca_pem: &str,
    lease_secs: u64,
    batch_size: u32,
) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    std::fs::write(dir.join("push-ca.pem"), ca_pem).unwrap();
    std::fs::write(dir.join("push.secret"), SECRET).unwrap();
    std::fs::write(dir.join("key3.hex"), "33".repeat(32)).unwrap();
    std::fs::write(
        dir.join("policies").join("jobcenter-test.toml"),
        format!(
            r#"id = "{JOBCENTER}"
description = "test job centre (push)"
purpose = "eingliederung"
legal_basis = "statute"
citation = "§ 50 SGB II"

[delivery]
kind = "push"
batch_size = {batch_size}
max_attempts = 60
backoff_base_ms = 20
backoff_cap_ms = 200

[route]
programs = ["sgb2", "sucht"]

[fields]
"client.client_id" = "pseudonymise"
"client.sex" = "keep"
"case.opened_on" = "generalise:year_month"
"#
        ),
    )
    .unwrap();
    let extra = format!(
        r#"
[push]
lease_secs = {lease_secs}
poll_ms = 50

[[recipients]]
id = "{JOBCENTER}"
pseudonym_keys = [{{ kid = "j1", secret = {{ file = "key3.hex" }} }}]

[recipients.push]
url = "https://127.0.0.1:{port}/weiche/items"
ca_file = "push-ca.pem"
secret = {{ file = "push.secret" }}
timeout_secs = 2
"#
    );
    write_config(dir, database_url, &extra)
}
