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

// --- Compressed bodies (docs/security.md, "Compressed bodies") ---------------------------------

/// gzip of `data` (fast level, as a vendor's tool might send it).
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Peak resident memory of this process (`VmHWM`), in KiB; `None` off Linux.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_delivery_is_the_same_delivery_as_the_plain_one() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let c = Client::new();
    let body =
        std::fs::read(repo().join("conformance-tests/cases/klidas-json/basic/input.json")).unwrap();
    let r = c
        .post(s.url("/api/v1/deliveries"))
        .bearer_auth(VENDOR_TOKEN)
        .header("Content-Encoding", "gzip")
        .body(gzip(&body))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let first: Value = r.json().await.unwrap();
    assert_eq!(first["status"], "E1", "{first}");
    // The same content uncompressed is a duplicate: the content hash is of the decompressed bytes.
    let r: Value = c
        .post(s.url("/api/v1/deliveries"))
        .bearer_auth(VENDOR_TOKEN)
        .body(body.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["duplicate"], true, "{r}");
    assert_eq!(r["delivery_id"], first["delivery_id"]);
    // A corrupt gzip body is refused whole, not a 500; so is a truncated one.
    let mut corrupt = gzip(&body);
    let n = corrupt.len();
    corrupt[n / 2] ^= 0x55;
    corrupt[n - 6] ^= 0xff;
    for bad in [corrupt, gzip(&body)[..n / 2].to_vec(), b"not gzip".to_vec()] {
        let r = c
            .post(s.url("/api/v1/deliveries"))
            .bearer_auth(VENDOR_TOKEN)
            .header("Content-Encoding", "gzip")
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422);
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["code"], "X000", "{e}");
    }
    // Other codings are refused with 415 before anything is read.
    for coding in ["deflate", "br", "zstd", "gzip, gzip", "compress"] {
        let r = c
            .post(s.url("/api/v1/deliveries"))
            .bearer_auth(VENDOR_TOKEN)
            .header("Content-Encoding", coding)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 415, "{coding}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["code"], "R415", "{e}");
    }
    // `identity` is no coding at all (the same delivery again: a duplicate).
    let r = c
        .post(s.url("/api/v1/deliveries"))
        .bearer_auth(VENDOR_TOKEN)
        .header("Content-Encoding", "identity")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_bomb_is_l001_with_bounded_memory() {
    let limit: u64 = 16 << 20;
    let s = TestServer::start_with(
        Backend::Sqlite,
        &format!("[limits]\nmax_body_bytes = {limit}\n"),
    )
    .await
    .unwrap();
    // 1 GiB of white space after the opening of a JSON object compresses to about 1 MiB; the
    // engine reads white space without end, so only the limit on decompressed bytes stops it.
    let bomb = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        e.write_all(b"{").unwrap();
        let spaces = vec![b' '; 1 << 20];
        for _ in 0..1024 {
            e.write_all(&spaces).unwrap();
        }
        e.finish().unwrap()
    };
    assert!(bomb.len() < 2 << 20, "{} bytes", bomb.len());
    let before = peak_rss_kib();
    let started = Instant::now();
    let r = Client::new()
        .post(s.url("/api/v1/deliveries"))
        .bearer_auth(VENDOR_TOKEN)
        .header("Content-Encoding", "gzip")
        .body(bomb.clone())
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("the server answers a gzip bomb");
    assert_eq!(r.status(), 413);
    let receipt: Value = r.json().await.unwrap();
    assert_eq!(receipt["status"], "E4", "{receipt}");
    assert_eq!(receipt["errors"][0]["code"], "L001", "{receipt}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    if let (Some(before), Some(after)) = (before, peak_rss_kib()) {
        assert!(
            after.saturating_sub(before) < 256 << 10,
            "peak memory grew by {} MiB",
            (after - before) >> 10
        );
    }
    // The bomb to an endpoint that takes no encoded body: 415 before anything is inflated
    // (even before authentication).
    for (path, token) in [
        ("/api/v1/consents/withdrawals", Some(VENDOR_TOKEN)),
        (
            "/api/v1/admin/mappings/klidas-json/preview",
            Some(ADMIN_TOKEN),
        ),
        ("/api/v1/batches/nope/ack", None),
    ] {
        let mut req = Client::new()
            .post(s.url(path))
            .header("Content-Encoding", "gzip")
            .header("Content-Type", "application/json")
            .body(bomb.clone());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.expect("an answer");
        assert_eq!(r.status(), 415, "{path}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["code"], "R415", "{path}: {e}");
    }
    // Only the E4 receipt was stored, and the server still serves.
    let list: Value = Client::new()
        .get(s.url("/api/v1/deliveries"))
        .bearer_auth(VENDOR_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let receipts = list["deliveries"].as_array().unwrap();
    assert_eq!(receipts.len(), 1, "{list}");
    assert_eq!(receipts[0]["status"], "E4", "{list}");
    assert_eq!(receipts[0]["accepted"], 0, "{list}");
    s.stop().await;
}

// --- Secret files readable by every user (docs/security.md, "Secrets") ------------------------

#[cfg(unix)]
#[test]
fn weiche_check_warns_about_world_readable_secret_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // Temporary directories are 0700, which would shut other users out of the files anyway.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = format!("sqlite://{}", dir.path().join("w.db").display());
    let config = write_config(dir.path(), &db, "");
    let key = dir.path().join("key1.hex");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(
        dir.path().join("key2.hex"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let check = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_weiche"))
            .arg("check")
            .arg("--config")
            .arg(&config)
            .env_remove("WEICHE_CONFIG")
            .output()
            .unwrap()
    };
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "a warning is not a problem: {stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect();
    assert_eq!(warnings.len(), 1, "only the world-readable file: {stderr}");
    assert!(
        warnings[0].contains(&key.display().to_string())
            && warnings[0].contains("0644")
            && warnings[0].contains("chmod 600"),
        "{stderr}"
    );
    assert!(!stderr.contains(&"11".repeat(32)), "no secret content");
    // The generated audit key is private from the start.
    let audit = dir.path().join("data/audit.key");
    let mode = std::fs::metadata(&audit).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", audit.display());
    // Fixed: no warning.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("warning:"), "{stderr}");
}

// --- Gzip bombs in every format, measured in the server process ------------------------------

/// Peak resident memory (`VmHWM`) of a process, in KiB.
fn peak_rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("Linux /proc");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A `weiche serve` process of the real binary; killed when dropped.
struct Served {
    child: std::process::Child,
    base: String,
}

impl Served {
    /// Starts on a free port. The port is chosen before the process binds it, so another server
    /// of this test binary may take it first: then the process exits and another port is tried.
    /// Ready means the process itself said it listens (`weiche listening on …`, after binding)
    /// and answers `/health/ready`.
    async fn start(config: &std::path::Path) -> Served {
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let log = config.with_file_name(format!("serve-{port}.log"));
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weiche"))
                .args(["serve", "--config"])
                .arg(config)
                .env_remove("WEICHE_CONFIG")
                .env("WEICHE_LISTEN", format!("127.0.0.1:{port}"))
                .env("WEICHE_LOG", "warn")
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("start weiche serve");
            let base = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                let listening = std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("weiche listening on");
                if listening
                    && let Ok(r) = reqwest::get(format!("{base}/health/ready")).await
                    && r.status() == 200
                {
                    return Served { child, base };
                }
                assert!(
                    Instant::now() < deadline,
                    "weiche serve did not become ready"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("weiche serve found no free port in 5 tries");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gzip_bombs_in_every_format_stay_under_256_mb_in_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("w.db").display());
    gzip_bombs_in_every_format(dir.path(), &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gzip_bombs_in_every_format_stay_under_256_mb_in_the_server_on_postgres() {
    let Some(db) = support::fresh_postgres_url().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    gzip_bombs_in_every_format(dir.path(), &db).await;
    support::drop_postgres_database(&db).await;
}

/// Four gzip bombs at once in each format against a real `weiche serve` on `db`: each is
/// `413 L001`, and the server's peak RSS stays under 256 MB.
async fn gzip_bombs_in_every_format(dir: &std::path::Path, db: &str) {
    // The limit on decompressed bytes: four bodies held whole up to it would need 512 MiB.
    let limit: u64 = 128 << 20;
    let config = write_config(dir, db, &format!("[limits]\nmax_body_bytes = {limit}\n"));
    let server = Served::start(&config).await;
    // 32 MiB more spaces than the limit as one gzip member (about 160 KiB, a ratio of about
    // 1,000); each bomb is a member with the start of an unfinished delivery of its format, then
    // that one (concatenated members are one body). Only a little more than the limit, so that
    // the client has sent (nearly) all of it when the early answer comes: a bigger bomb changes
    // nothing on the server, which stops reading at the limit.
    let spaces = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        let mib = vec![b' '; 1 << 20];
        for _ in 0..(limit >> 20) + 32 {
            e.write_all(&mib).unwrap();
        }
        e.finish().unwrap()
    };
    assert!(spaces.len() < 1 << 20, "{} bytes", spaces.len());
    let xml = String::from_utf8(
        std::fs::read(repo().join("conformance-tests/cases/xsozial-lieferung/basic/input.xml"))
            .unwrap(),
    )
    .unwrap();
    let csv =
        std::fs::read(repo().join("conformance-tests/cases/fallwerk-csv/basic/input.csv")).unwrap();
    let csv_head: Vec<u8> = {
        // The header row and one case row, then a row whose first cell never ends.
        let mut lines = csv.split(|b| *b == b'\n');
        let mut head = Vec::new();
        for _ in 0..2 {
            head.extend_from_slice(lines.next().unwrap());
            head.push(b'\n');
        }
        head.extend_from_slice(b"2026-9999");
        head
    };
    let heads: [(&str, Vec<u8>); 3] = [
        ("klidas-json", b"{\"klidas\": \"1.0\", ".to_vec()),
        (
            "xsozial-lieferung",
            xml.as_bytes()[..xml.find("<fall>").unwrap()].to_vec(),
        ),
        ("fallwerk-csv", csv_head),
    ];
    let client = Client::new();
    for (format, head) in heads {
        let mut bomb = gzip(&head);
        bomb.extend_from_slice(&spaces);
        let posts = (0..4).map(|_| {
            client
                .post(format!("{}/api/v1/deliveries?format={format}", server.base))
                .bearer_auth(VENDOR_TOKEN)
                .header("Content-Encoding", "gzip")
                .body(bomb.clone())
                .timeout(Duration::from_secs(600))
                .send()
        });
        for r in futures::future::join_all(posts).await {
            let r = r.expect("the server answers a gzip bomb");
            assert_eq!(r.status(), 413, "{format}");
            let receipt: Value = r.json().await.unwrap();
            assert_eq!(receipt["status"], "E4", "{format}: {receipt}");
            assert_eq!(receipt["errors"][0]["code"], "L001", "{format}: {receipt}");
        }
        let peak = peak_rss_of(server.child.id());
        eprintln!("{format}: peak RSS of the server {} MiB", peak >> 10);
        assert!(
            peak <= 256 << 10,
            "{format}: the server's peak RSS is {} MiB",
            peak >> 10
        );
    }
    // The server still serves.
    let r = client
        .post(format!("{}/api/v1/deliveries", server.base))
        .bearer_auth(VENDOR_TOKEN)
        .body(
            std::fs::read(repo().join("conformance-tests/cases/klidas-json/basic/input.json"))
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

// --- Characters XML 1.0 forbids, control characters in CSV -----------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_and_control_characters_are_refused_whole() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    refused_whole(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_and_control_characters_are_refused_whole_on_postgres() {
    if let Some(s) = TestServer::start(Backend::Postgres).await {
        refused_whole(s).await;
    }
}

/// XML with characters XML 1.0 forbids and CSV with control characters: `422 X000` naming the
/// character, nothing stored or routed.
async fn refused_whole(s: TestServer) {
    let c = Client::new();
    let xml = String::from_utf8(
        std::fs::read(repo().join("conformance-tests/cases/xsozial-lieferung/basic/input.xml"))
            .unwrap(),
    )
    .unwrap();
    let csv =
        std::fs::read(repo().join("conformance-tests/cases/fallwerk-csv/basic/input.csv")).unwrap();
    let team = b"Team Nordstadt";
    let at = csv.windows(team.len()).position(|w| w == team).unwrap();
    let mut bodies: Vec<(&str, Vec<u8>, String)> = Vec::new();
    for bad in ['\u{0}', '\u{1}', '\u{1b}'] {
        let mut hostile = csv.clone();
        hostile[at + 4] = bad as u8;
        bodies.push(("fallwerk-csv", hostile, format!("U+{:04X}", bad as u32)));
    }
    for bad in ['\u{0}', '\u{8}', '\u{ffff}'] {
        bodies.push((
            "xsozial-lieferung",
            xml.replacen("Team Oberbilk", &format!("Team{bad}Hostile"), 1)
                .into_bytes(),
            format!("U+{:04X}", bad as u32),
        ));
    }
    bodies.push((
        "xsozial-lieferung",
        xml.replacen("Team Oberbilk", "Team&#1;Hostile", 1)
            .into_bytes(),
        "U+0001".into(),
    ));
    for (format, body, named) in bodies {
        let r = c
            .post(s.url(&format!("/api/v1/deliveries?format={format}")))
            .bearer_auth(VENDOR_TOKEN)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{format} {named}");
        let receipt: Value = r.json().await.unwrap();
        assert_eq!(receipt["status"], "E4", "{receipt}");
        assert_eq!(receipt["accepted"], 0, "{receipt}");
        assert_eq!(receipt["errors"][0]["code"], "X000", "{receipt}");
        let message = receipt["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(&named), "{format}: {message}");
    }
    // Nothing was stored or routed: every receipt is E4, and no batch has an item.
    let list: Value = c
        .get(s.url("/api/v1/deliveries"))
        .bearer_auth(VENDOR_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let receipts = list["deliveries"].as_array().unwrap();
    assert_eq!(receipts.len(), 7, "{list}");
    assert!(receipts.iter().all(|r| r["status"] == "E4"), "{list}");
    assert_eq!(
        s.gateway.store.open_items("statistik-nrw").await.unwrap(),
        0
    );
    s.stop().await;
}
