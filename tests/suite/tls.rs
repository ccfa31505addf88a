//! HTTPS and mutual TLS (quality.md, Security; http-api.md, Authentication): the real server on
//! 127.0.0.1:0 over rustls with a test PKI made here (rcgen): a CA, a server certificate for
//! 127.0.0.1/localhost and client certificates. A vendor with `auth = "certificate"` delivers
//! with its client certificate and no token; unknown certificates authenticate nobody; token
//! vendors keep working over TLS; only TLS 1.2/1.3 with the BSI suites are negotiable; a
//! changed certificate file is picked up without a restart. Also: plain HTTP is refused on a
//! non-loopback address unless explicitly allowed.

use crate::{support, testkit};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use testkit::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weiche::gateway::Gateway;

/// Token of the vendor that needs token and certificate.
const BOTH_TOKEN: &str = "both-vendor-token-0123456789abcdef0123456789ab";

/// A certificate with its key, as PEM, and the certificate's DER.
struct Issued {
    cert: Certificate,
    key: KeyPair,
}

impl Issued {
    fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.cert.der()))
    }

    /// A reqwest identity (certificate and key in one PEM).
    fn identity(&self) -> reqwest::Identity {
        reqwest::Identity::from_pem(format!("{}{}", self.cert_pem(), self.key_pem()).as_bytes())
            .unwrap()
    }
}

fn ca(name: &str) -> Issued {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    Issued { cert, key }
}

fn issue(ca: &Issued, name: &str, sans: &[&str], purpose: ExtendedKeyUsagePurpose) -> Issued {
    let key = KeyPair::generate().unwrap();
    let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(sans).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![purpose];
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    Issued { cert, key }
}

/// The test PKI: a CA with a server certificate and client certificates A (cert-vendor),
/// B (unknown fingerprint, same CA) and C (both-vendor), and a foreign CA's client certificate.
struct Pki {
    ca: Issued,
    server: Issued,
    a: Issued,
    b: Issued,
    c: Issued,
    foreign: Issued,
}

impl Pki {
    fn new() -> Pki {
        let ca = ca("Weiche Test CA");
        let server = issue(
            &ca,
            "weiche test server",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let client = |name: &str| issue(&ca, name, &[], ExtendedKeyUsagePurpose::ClientAuth);
        let (a, b, c) = (client("vendor A"), client("vendor B"), client("vendor C"));
        let other = self::ca("Foreign CA");
        let foreign = issue(&other, "vendor A", &[], ExtendedKeyUsagePurpose::ClientAuth);
        Pki {
            ca,
            server,
            a,
            b,
            c,
            foreign,
        }
    }

    /// Writes `ca.pem`, `server.pem`, `server.key` into `dir`.
    fn write(&self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("ca.pem"), self.ca.cert_pem()).unwrap();
        write_server(dir, &self.server);
    }
}

fn write_server(dir: &Path, server: &Issued) {
    std::fs::write(dir.join("server.pem"), server.cert_pem()).unwrap();
    std::fs::write(dir.join("server.key"), server.key_pem()).unwrap();
}

/// The `[tls]` section and the certificate vendors (paths relative to the configuration file).
fn tls_extra(pki: &Pki) -> String {
    format!(
        r#"
[tls]
cert = "tls/server.pem"
key = "tls/server.key"
client_ca = "tls/ca.pem"

[[vendors]]
id = "cert-vendor"
auth = "certificate"
cert_sha256 = "{a}"
formats = ["klidas-json"]

[[vendors]]
id = "both-vendor"
auth = "token+certificate"
token = {{ sha256 = "{both}" }}
cert_sha256 = "{c}"
formats = ["klidas-json"]
"#,
        a = pki.a.sha256(),
        c = pki.c.sha256(),
        both = hex::encode(Sha256::digest(BOTH_TOKEN.as_bytes())),
    )
}

/// The server over HTTPS.
struct TlsServer {
    base: String,
    gateway: Arc<Gateway>,
    dir: tempfile::TempDir,
    pki: Pki,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TlsServer {
    async fn start() -> TlsServer {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new();
        pki.write(&dir.path().join("tls"));
        let db = support::fresh_sqlite_url(dir.path());
        let config = write_config(dir.path(), &db, &tls_extra(&pki));
        let loaded = weiche::config::load(Some(&config))
            .unwrap_or_else(|p| panic!("test configuration: {p:?}"));
        let settings = loaded.tls.clone().expect("[tls] is configured");
        assert_eq!(settings.cert, dir.path().join("tls/server.pem"));
        let tls = weiche::tls::server_config(&settings).unwrap();
        let runtime = weiche::app::Runtime {
            tls: Some(tls),
            ..Default::default()
        };
        let gateway = Arc::new(Gateway::open(loaded).await.expect("open store"));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(weiche::app::serve(
            listener,
            gateway.clone(),
            runtime,
            async move {
                let _ = stopped.await;
            },
        ));
        TlsServer {
            base,
            gateway,
            dir,
            pki,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A client trusting the test CA, presenting `identity` if given.
    fn client(&self, identity: Option<&Issued>) -> reqwest::Client {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.pki.ca.cert_pem().as_bytes()).unwrap(),
            )
            .timeout(Duration::from_secs(20));
        if let Some(id) = identity {
            b = b.identity(id.identity());
        }
        b.build().unwrap()
    }

    /// Stops the server (drop the clients first: graceful shutdown waits for their idle
    /// keep-alive connections).
    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

fn basic_input() -> Vec<u8> {
    std::fs::read(repo().join("conformance-tests/cases/klidas-json/basic/input.json")).unwrap()
}

async fn post_delivery(
    client: &reqwest::Client,
    server: &TlsServer,
    token: Option<&str>,
) -> reqwest::Response {
    let mut req = client
        .post(server.url("/api/v1/deliveries?format=klidas-json"))
        .header("Content-Type", "application/json")
        .body(basic_input());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

async fn status_and_code(resp: reqwest::Response) -> (StatusCode, String) {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (status, body["code"].as_str().unwrap_or("").to_string())
}

#[tokio::test]
async fn certificate_vendor_delivers_without_a_token() {
    let server = TlsServer::start().await;
    let with_a = server.client(Some(&server.pki.a));
    let resp = post_delivery(&with_a, &server, None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let receipt: Value = resp.json().await.unwrap();
    assert_eq!(receipt["status"], "E1", "{receipt}");
    let id = receipt["delivery_id"].as_str().unwrap().to_string();

    // The receipt is cert-vendor's: readable with certificate A, not by another vendor.
    let resp = with_a
        .get(server.url(&format!("/api/v1/deliveries/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let again: Value = resp.json().await.unwrap();
    assert_eq!(again["delivery_id"], id.as_str());
    let resp = server
        .client(None)
        .get(server.url(&format!("/api/v1/deliveries/{id}")))
        .bearer_auth(OTHER_VENDOR_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // And the records name it as their source.
    let record = server
        .gateway
        .store
        .record("cert-vendor", "JH-2026-0417", "2026-10")
        .await
        .unwrap()
        .expect("record stored under cert-vendor");
    let record: Value = serde_json::from_str(&record).unwrap();
    assert_eq!(record["source"]["vendor"], "cert-vendor");
    assert_eq!(record["source"]["delivery_id"], id.as_str());
    drop(with_a);
    server.stop().await;
}

#[tokio::test]
async fn unknown_or_missing_credentials_authenticate_nobody() {
    let server = TlsServer::start().await;
    // Certificate B: same CA, unknown fingerprint.
    let with_b = server.client(Some(&server.pki.b));
    let (status, code) = status_and_code(post_delivery(&with_b, &server, None).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::UNAUTHORIZED, "T070"));
    // Neither certificate nor token.
    let bare = server.client(None);
    let (status, code) = status_and_code(post_delivery(&bare, &server, None).await).await;
    assert_eq!((status, code.as_str()), (StatusCode::UNAUTHORIZED, "T070"));
    // Certificate A with a wrong token, or with another principal's token.
    let with_a = server.client(Some(&server.pki.a));
    for token in ["not-a-token-0123456789abcdef0123456789", OTHER_VENDOR_TOKEN] {
        let (status, code) =
            status_and_code(post_delivery(&with_a, &server, Some(token)).await).await;
        assert_eq!(
            (status, code.as_str()),
            (StatusCode::UNAUTHORIZED, "T070"),
            "{token}"
        );
    }
    // A certificate vendor is still a vendor only.
    let resp = with_a
        .get(server.url("/api/v1/batches"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // A certificate of another CA does not even complete the handshake.
    let foreign = server.client(Some(&server.pki.foreign));
    assert!(
        foreign
            .get(server.url("/api/v1/deliveries"))
            .send()
            .await
            .is_err()
    );
    drop((with_a, with_b, bare, foreign));
    server.stop().await;
}

#[tokio::test]
async fn token_principals_work_over_tls() {
    let server = TlsServer::start().await;
    let bare = server.client(None);
    let resp = post_delivery(&bare, &server, Some(VENDOR_TOKEN)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let receipt: Value = resp.json().await.unwrap();
    assert_eq!(receipt["status"], "E1", "{receipt}");
    // An unknown certificate beside a token-only vendor's token does not matter.
    let with_b = server.client(Some(&server.pki.b));
    let resp = with_b
        .get(server.url("/api/v1/deliveries"))
        .bearer_auth(VENDOR_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = bare
        .get(server.url("/api/v1/batches"))
        .bearer_auth(STATS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = bare.get(server.url("/health/live")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    drop((bare, with_b));
    server.stop().await;
}

#[tokio::test]
async fn token_and_certificate_vendor_needs_both() {
    let server = TlsServer::start().await;
    let list = |client: reqwest::Client, token: Option<&'static str>| {
        let url = server.url("/api/v1/deliveries");
        async move {
            let mut req = client.get(url);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            req.send().await.unwrap().status()
        }
    };
    let with_c = || server.client(Some(&server.pki.c));
    assert_eq!(list(with_c(), Some(BOTH_TOKEN)).await, StatusCode::OK);
    assert_eq!(list(with_c(), None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        list(server.client(None), Some(BOTH_TOKEN)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        list(server.client(Some(&server.pki.a)), Some(BOTH_TOKEN)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        list(server.client(Some(&server.pki.b)), Some(BOTH_TOKEN)).await,
        StatusCode::UNAUTHORIZED
    );
    server.stop().await;
}

#[tokio::test]
async fn only_tls_1_2_and_1_3_with_bsi_suites() {
    let server = TlsServer::start().await;
    // TLS 1.2 (ECDHE-ECDSA with AES-GCM) and TLS 1.3 both work.
    for max in [
        reqwest::tls::Version::TLS_1_2,
        reqwest::tls::Version::TLS_1_3,
    ] {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(server.pki.ca.cert_pem().as_bytes()).unwrap(),
            )
            .max_tls_version(max)
            .build()
            .unwrap();
        let resp = client.get(server.url("/health/live")).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{max:?}");
    }

    // A client that offers only ChaCha20-Poly1305 (not a TR-02102-2 suite) gets no connection.
    use rustls::crypto::ring::{cipher_suite, default_provider};
    let chacha = rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        ..default_provider()
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server.pki.ca.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(chacha))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .build()
        .unwrap();
    assert!(client.get(server.url("/health/live")).send().await.is_err());

    // A TLS 1.1 ClientHello is answered with a fatal protocol_version alert.
    let addr = server.base.trim_start_matches("https://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut hello = vec![0x03, 0x02]; // client_version TLS 1.1
    hello.extend([7u8; 32]); // random
    hello.push(0); // no session id
    hello.extend([0x00, 0x04, 0xc0, 0x13, 0xc0, 0x09]); // ECDHE-{RSA,ECDSA}-AES128-SHA
    hello.extend([0x01, 0x00]); // null compression
    // signature_algorithms (rustls wants it before it looks at the version): ecdsa/rsa sha256
    hello.extend([
        0x00, 0x0a, 0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x04, 0x01,
    ]);
    let mut handshake = vec![0x01, 0x00, 0x00, hello.len() as u8];
    handshake.extend(hello);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, handshake.len() as u8];
    record.extend(handshake);
    stream.write_all(&record).await.unwrap();
    let mut answer = [0u8; 7];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut answer))
        .await
        .expect("an answer to the TLS 1.1 hello")
        .unwrap();
    assert_eq!(answer[0], 0x15, "an alert record: {answer:?}");
    assert_eq!(answer[5..], [2, 70], "fatal protocol_version: {answer:?}");
    server.stop().await;
}

#[tokio::test]
async fn changed_certificate_files_are_served_without_a_restart() {
    let server = TlsServer::start().await;
    let served = |server: &TlsServer| {
        let client = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(server.pki.ca.cert_pem().as_bytes()).unwrap(),
            )
            .tls_info(true)
            .build()
            .unwrap();
        let url = server.url("/health/live");
        async move {
            let resp = client.get(url).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            resp.extensions()
                .get::<reqwest::tls::TlsInfo>()
                .and_then(|i| i.peer_certificate())
                .map(<[u8]>::to_vec)
                .expect("peer certificate")
        }
    };
    assert_eq!(served(&server).await, server.pki.server.cert.der().to_vec());
    let renewed = issue(
        &server.pki.ca,
        "weiche test server (renewed)",
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    write_server(&server.dir.path().join("tls"), &renewed);
    // Files are checked at most once a second.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if served(&server).await == renewed.cert.der().to_vec() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the renewed certificate is not served"
        );
    }
    server.stop().await;
}

/// Writes a configuration (no `[tls]` unless in `extra`) and swaps the listen address.
fn plain_config(dir: &Path, listen: &str, extra: &str) -> std::path::PathBuf {
    let db = support::fresh_sqlite_url(dir);
    let path = write_config(dir, &db, extra);
    let text = std::fs::read_to_string(&path).unwrap();
    let swapped = text.replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{listen}\""),
    );
    assert!(swapped.contains(&format!("listen = \"{listen}\"")));
    std::fs::write(&path, swapped).unwrap();
    path
}

fn problems(path: &Path) -> Vec<String> {
    match weiche::app::load(Some(path)) {
        Ok(_) => Vec::new(),
        Err(p) => p.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn plain_http_only_on_loopback_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let found = problems(&plain_config(dir.path(), "0.0.0.0:8080", ""));
    assert!(
        found
            .iter()
            .any(|p| p.contains("plain HTTP only on loopback; configure [tls]")),
        "{found:?}"
    );
    let found = problems(&plain_config(dir.path(), "[::]:8080", ""));
    assert_eq!(found.len(), 1, "{found:?}");
    for listen in ["127.0.0.1:8080", "127.0.0.2:0", "[::1]:8080"] {
        let found = problems(&plain_config(dir.path(), listen, ""));
        assert!(found.is_empty(), "{listen}: {found:?}");
    }
    let found = problems(&plain_config(
        dir.path(),
        "0.0.0.0:8080",
        "allow_plain_http = true",
    ));
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn tls_and_certificate_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    pki.write(&dir.path().join("tls"));
    // With [tls], any listen address is fine.
    let found = problems(&plain_config(dir.path(), "0.0.0.0:8443", &tls_extra(&pki)));
    assert!(found.is_empty(), "{found:?}");
    // A certificate vendor needs [tls] with a client CA.
    let no_tls = tls_extra(&pki).replace(
        "[tls]\ncert = \"tls/server.pem\"\nkey = \"tls/server.key\"\nclient_ca = \"tls/ca.pem\"\n",
        "",
    );
    let found = problems(&plain_config(dir.path(), "127.0.0.1:0", &no_tls));
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found
            .iter()
            .all(|p| p.contains("needs [tls] with client_ca"))
    );
    // A missing key file, a key of another certificate.
    let missing = tls_extra(&pki).replace("tls/server.key", "tls/missing.key");
    let found = problems(&plain_config(dir.path(), "127.0.0.1:0", &missing));
    assert!(
        found.len() == 1 && found[0].contains("missing.key"),
        "{found:?}"
    );
    std::fs::write(dir.path().join("tls/other.key"), pki.a.key_pem()).unwrap();
    let mismatched = tls_extra(&pki).replace("tls/server.key", "tls/other.key");
    let found = problems(&plain_config(dir.path(), "127.0.0.1:0", &mismatched));
    assert_eq!(found.len(), 1, "{found:?}");
    // Token mode without a token; a bad fingerprint; cert_sha256 unused by auth = "token".
    let bad = tls_extra(&pki)
        .replace("auth = \"token+certificate\"\n", "")
        .replace(&pki.a.sha256(), "abcd");
    let found = problems(&plain_config(dir.path(), "127.0.0.1:0", &bad));
    assert!(
        found
            .iter()
            .any(|p| p.contains("cert-vendor") && p.contains("64 hex digits")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.contains("both-vendor") && p.contains("does not use it")),
        "{found:?}"
    );
    let tokenless = tls_extra(&pki).replace("auth = \"certificate\"\n", "");
    let found = problems(&plain_config(dir.path(), "127.0.0.1:0", &tokenless));
    assert!(
        found
            .iter()
            .any(|p| p.contains("cert-vendor") && p.contains("token is missing")),
        "{found:?}"
    );
}
