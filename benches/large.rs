//! 1 GB deliveries benchmark (quality.md: "a 1 GB delivery (CSV or XML): processed as a stream;
//! peak RSS ≤ 256 MB").
//!
//! 1. Generates, streaming to files in a temporary directory, a fallwerk-csv export
//!    (Windows-1252, CRLF, 1–3 rows per case, unique `Fallnr`) and an xsozial-lieferung message
//!    (one header, many `<fall>`), both entirely valid, of about `WEICHE_LARGE_BYTES` bytes each.
//! 2. Runs `weiche convert --format … --mode partial --vendor demo-vendor FILE` on each (stdout to
//!    /dev/null, the receipt read from stderr) while polling `/proc/<pid>/status` every 20 ms:
//!    peak RSS (`VmHWM`), wall time, MB/s, records/s.
//! 3. Starts `weiche serve` on a fresh SQLite database with one pull recipient, posts each file
//!    streamed from disk (chunked, never read whole) and records the server's peak RSS during the
//!    request (the high-water mark is reset through `/proc/<pid>/clear_refs` before each request)
//!    and after a short settle time (batch sealing runs after the receipt).
//! 4. Prints a table and an RSS-over-input timeline per run.
//!
//! Only receipts are asserted (E1/E2, every generated case accepted, none rejected, every record
//! routed to the recipient on the server); timings and memory are reported, never asserted.
//!
//! Run with `cargo bench --bench large`. Environment knobs (all optional):
//! - `WEICHE_LARGE_BYTES` (default 1,000,000,000): target size of each generated file,
//! - `WEICHE_LARGE_ONLY` (`csv` or `xml`): run one format only,
//! - `WEICHE_LARGE_SKIP` (`convert`, `server`, or both): skip paths (both: generate only),
//! - `WEICHE_LARGE_CSV_ROWS` (1–3, default 3): most rows (services) of a CSV case; 1 gives about
//!   twice as many records per gigabyte,
//! - `WEICHE_LARGE_XML_TEST_ATTR` (e.g. `false`): write `test="…"` on the XML root element (by
//!   default the attribute is omitted, as in the reference example; it defaults to false),
//! - `WEICHE_LARGE_XML_PRETTY=1`: put a line break and indentation between the `<fall>` elements
//!   (by default they follow each other directly, each indented inside; the engine collects the
//!   root element's white space as text and rejects a pretty-printed delivery of more than about
//!   1,400 `<fall>` with `L004`),
//! - `WEICHE_LARGE_SETTLE_SECS` (default 5): how long the server is watched after each receipt,
//! - `WEICHE_LARGE_DIR`: parent of the temporary directory (default: cargo's target tmp dir),
//! - `WEICHE_LARGE_KEEP=1`: keep the temporary directory (files, database, logs).

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The vendor (the reference mappings' default vendor).
const VENDOR: &str = "demo-vendor";
/// The pull recipient (the shipped statistics policy: statute, every program).
const RECIPIENT: &str = "statistik-nrw";
/// The bar from quality.md, in bytes.
const RSS_LIMIT: u64 = 256 * 1024 * 1024;
/// Poll interval of `/proc/<pid>/status`.
const POLL: Duration = Duration::from_millis(20);
/// Points of the printed RSS timeline.
const TIMELINE_POINTS: usize = 10;

#[path = "support/exports.rs"]
mod exports;
use exports::*;

// ---------------------------------------------------------------------------------------------
// Memory of a process
// ---------------------------------------------------------------------------------------------

/// A `/proc/<pid>/status` value in kB (`VmHWM`, `VmRSS`, `RssAnon`, …); `None` once gone.
fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Bytes the process has read so far (`rchar` of `/proc/<pid>/io`).
fn rchar(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("rchar:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Resets the process's `VmHWM` to its current RSS; false when the kernel refuses.
fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// One sample: (elapsed, input bytes so far, VmRSS kB, RssAnon kB).
type Sample = (Duration, u64, u64, u64);

/// What the poller saw.
#[derive(Default)]
struct Watched {
    /// Last `VmHWM` read (kB).
    hwm_kb: u64,
    /// Highest `VmRSS` read (kB).
    max_rss_kb: u64,
    /// Highest `RssAnon` read (kB): heap, the part the process itself allocates.
    max_anon_kb: u64,
    samples: Vec<Sample>,
}

/// Polls a process's memory every [`POLL`] until `stop` is set or the process is gone.
/// `progress` gives the input bytes so far (for the timeline).
fn watch(
    pid: u32,
    stop: Arc<AtomicBool>,
    progress: impl Fn() -> Option<u64> + Send + 'static,
) -> std::thread::JoinHandle<Watched> {
    std::thread::spawn(move || {
        let t = Instant::now();
        let mut w = Watched::default();
        let mut last_progress = 0;
        while !stop.load(Ordering::Relaxed) {
            let Some(hwm) = status_kb(pid, "VmHWM") else {
                // Gone (or a zombie without memory): keep the last value read.
                std::thread::sleep(POLL);
                continue;
            };
            let rss = status_kb(pid, "VmRSS").unwrap_or(0);
            let anon = status_kb(pid, "RssAnon").unwrap_or(0);
            last_progress = progress().unwrap_or(last_progress);
            w.hwm_kb = w.hwm_kb.max(hwm);
            w.max_rss_kb = w.max_rss_kb.max(rss);
            w.max_anon_kb = w.max_anon_kb.max(anon);
            w.samples.push((t.elapsed(), last_progress, rss, anon));
            std::thread::sleep(POLL);
        }
        w
    })
}

/// About [`TIMELINE_POINTS`] samples spread over the input, as "x% rss/anon" text.
fn timeline(samples: &[Sample], total: u64) -> String {
    let mut s = String::new();
    let mut next = 0.0;
    for &(at, done, rss, anon) in samples {
        let frac = if total > 0 {
            done as f64 / total as f64
        } else {
            0.0
        };
        if frac >= next {
            write!(
                s,
                " {:>3.0}%@{:.0}s {}/{}",
                (frac * 100.0).min(999.0),
                at.as_secs_f64(),
                rss / 1024,
                anon / 1024
            )
            .unwrap();
            next = frac + 1.0 / TIMELINE_POINTS as f64;
        }
    }
    if let Some(&(at, done, rss, anon)) = samples.last() {
        let frac = done as f64 / total.max(1) as f64;
        write!(
            s,
            " | end {:.0}%@{:.0}s {}/{}",
            frac * 100.0,
            at.as_secs_f64(),
            rss / 1024,
            anon / 1024
        )
        .unwrap();
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------------

/// One measured run.
struct Run {
    format: &'static str,
    path: &'static str,
    bytes: u64,
    records: u64,
    wall: Duration,
    /// Peak RSS (kB).
    peak_kb: u64,
    /// Peak RSS including the settle time after the receipt (server only).
    peak_after_kb: Option<u64>,
    max_anon_kb: u64,
    timeline: String,
    status: String,
}

impl Run {
    fn mb_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.wall.as_secs_f64()
    }
    fn rec_s(&self) -> f64 {
        self.records as f64 / self.wall.as_secs_f64()
    }
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `weiche convert` on a generated file and checks its receipt.
fn convert(format: &'static str, file: &Generated, dir: &Path) -> Run {
    let err_path = dir.join(format!("convert-{format}.stderr"));
    let err = std::fs::File::create(&err_path).unwrap();
    let t = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_weiche"))
        .args([
            "convert", "--format", format, "--mode", "partial", "--vendor", VENDOR,
        ])
        .arg("--mappings-dir")
        .arg(manifest().join("mappings"))
        .arg("--schemas-dir")
        .arg(manifest().join("schemas"))
        .arg(&file.path)
        .current_dir(dir)
        .env("TMPDIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .expect("start weiche convert");
    let pid = child.id();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = watch(pid, stop.clone(), move || rchar(pid));
    let status = child.wait().expect("wait for weiche convert");
    let wall = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let w = poller.join().unwrap();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let receipt = last_json(&stderr).unwrap_or_else(|| {
        panic!(
            "{format}: no receipt on stderr (exit {status}):\n{}",
            &stderr[stderr.len().saturating_sub(4000)..]
        )
    });
    check_receipt(format, "convert", &receipt, file.cases, false);
    assert!(
        matches!(status.code(), Some(0)),
        "{format}: weiche convert exited with {status}"
    );
    Run {
        format,
        path: "convert",
        bytes: file.bytes,
        records: file.cases,
        wall,
        peak_kb: w.hwm_kb,
        peak_after_kb: None,
        max_anon_kb: w.max_anon_kb,
        timeline: timeline(&w.samples, file.bytes),
        status: receipt["status"].as_str().unwrap_or("?").to_string(),
    }
}

/// Panics unless the receipt is E1/E2 with every generated case accepted (and routed).
fn check_receipt(format: &str, path: &str, r: &Value, cases: u64, routed: bool) {
    let brief = || {
        let mut r = r.clone();
        for k in ["errors", "warnings", "notes"] {
            if let Some(Value::Array(a)) = r.get_mut(k) {
                a.truncate(5);
            }
        }
        serde_json::to_string_pretty(&r).unwrap()
    };
    let ok = matches!(r["status"].as_str(), Some("E1" | "E2"))
        && r["received"] == cases
        && r["accepted"] == cases
        && r["rejected"] == 0
        && r["duplicate"] != true
        && (!routed || r["routed"][RECIPIENT] == cases);
    assert!(
        ok,
        "{format} via {path}: expected E1/E2 with {cases} records accepted{}; receipt:\n{}",
        if routed { " and routed" } else { "" },
        brief()
    );
}

/// Plain bearer token of a principal (the configuration holds only its SHA-256).
fn token(principal: &str) -> String {
    hex::encode(Sha256::digest(
        format!("weiche-large-token:{principal}").as_bytes(),
    ))
}

/// Writes the policy, key and configuration into `dir`; returns the configuration path.
fn write_config(dir: &Path, port: u16, max_body: u64) -> PathBuf {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    let shipped = std::fs::read_to_string(manifest().join("policies/statistik-nrw.toml"))
        .expect("policies/statistik-nrw.toml");
    std::fs::write(policies.join(format!("{RECIPIENT}.toml")), shipped).unwrap();
    let key = dir.join("statistik.key");
    std::fs::write(&key, hex::encode(Sha256::digest(b"weiche-large-key"))).unwrap();
    let sha = |p: &str| hex::encode(Sha256::digest(token(p).as_bytes()));
    let q = |p: &Path| format!("{:?}", p.display().to_string());
    let db_url = format!(
        "{:?}",
        format!("sqlite://{}", dir.join("data").join("weiche.db").display())
    );
    let config = format!(
        r#"listen = "127.0.0.1:{port}"
data_dir = {data}
database_url = {db}
mappings_dir = {mappings}
policies_dir = {policies}
schemas_dir = {schemas}

[limits]
max_body_bytes = {max_body}
max_records = 1000000000

[[vendors]]
id = "{VENDOR}"
token = {{ sha256 = "{v}" }}
formats = ["fallwerk-csv", "xsozial-lieferung"]
default_format = "fallwerk-csv"

[[recipients]]
id = "{RECIPIENT}"
token = {{ sha256 = "{r}" }}
pseudonym_keys = [{{ kid = "l1", secret = {{ file = {key} }} }}]

[[admins]]
id = "admin"
token = {{ sha256 = "{a}" }}
"#,
        data = q(&dir.join("data")),
        db = db_url,
        mappings = q(&manifest().join("mappings")),
        policies = q(&policies),
        schemas = q(&manifest().join("schemas")),
        key = q(&key),
        v = sha(VENDOR),
        r = sha(RECIPIENT),
        a = sha("admin"),
    );
    let path = dir.join("weiche.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// The real server.
struct Server {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Server {
    async fn start(config: &Path, dir: &Path, port: u16) -> Server {
        let log = dir.join("server.log");
        let out = std::fs::File::create(&log).expect("server log");
        let child = Command::new(env!("CARGO_BIN_EXE_weiche"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .current_dir(dir)
            .env_remove("WEICHE_CONFIG")
            .env_remove("WEICHE_DATABASE_URL")
            .env_remove("WEICHE_LISTEN")
            .env_remove("WEICHE_MAX_BODY_BYTES")
            .env_remove("WEICHE_MAX_RECORDS")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start weiche serve");
        let mut server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let client = reqwest::Client::new();
        let t = Instant::now();
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("weiche serve exited with {status}:\n{}", server.log_tail());
            }
            if let Ok(r) = client
                .get(format!("{}/health/ready", server.base))
                .send()
                .await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "weiche serve not ready after 60 s:\n{}",
                server.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut start = s.len().saturating_sub(4000);
        while !s.is_char_boundary(start) {
            start += 1;
        }
        s[start..].to_string()
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Posts a generated file to the server and checks the receipt.
async fn post(
    server: &Server,
    client: &reqwest::Client,
    format: &'static str,
    file: &Generated,
    settle: Duration,
) -> Run {
    let pid = server.pid();
    let reset = reset_peak(pid);
    if !reset {
        eprintln!("note: could not reset VmHWM of the server; its peak is cumulative");
    }
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let sent = sent.clone();
        watch(pid, stop.clone(), move || {
            Some(sent.load(Ordering::Relaxed))
        })
    };
    let (content_type, url) = match format {
        "fallwerk-csv" => (
            "text/csv",
            format!(
                "{}/api/v1/deliveries?format={format}&mode=partial",
                server.base
            ),
        ),
        _ => (
            "application/xml",
            format!("{}/api/v1/deliveries?format={format}", server.base),
        ),
    };
    let t = Instant::now();
    let mut req = client
        .post(&url)
        .bearer_auth(token(VENDOR))
        .header("content-type", content_type)
        .body(file_body(&file.path, sent.clone()).await);
    if format == "fallwerk-csv" {
        req = req.header("Idempotency-Key", uuid::Uuid::new_v4().to_string());
    }
    let resp = req.send().await.unwrap_or_else(|e| {
        panic!(
            "{format}: POST /api/v1/deliveries: {e}\n{}",
            server.log_tail()
        )
    });
    let http = resp.status();
    let text = resp.text().await.expect("receipt body");
    let wall = t.elapsed();
    let peak_kb = status_kb(pid, "VmHWM").unwrap_or(0);
    tokio::time::sleep(settle).await;
    stop.store(true, Ordering::Relaxed);
    let w = poller.join().unwrap();
    let peak_after_kb = status_kb(pid, "VmHWM").unwrap_or(w.hwm_kb);
    assert!(
        http.is_success(),
        "{format}: HTTP {http}: {}",
        &text[..text.len().min(4000)]
    );
    let receipt: Value = serde_json::from_str(&text).expect("receipt is JSON");
    check_receipt(format, "server", &receipt, file.cases, true);
    let during: Vec<Sample> = w.samples.iter().copied().filter(|s| s.0 <= wall).collect();
    Run {
        format,
        path: "server",
        bytes: file.bytes,
        records: file.cases,
        wall,
        peak_kb: peak_kb.max(
            w.samples
                .iter()
                .filter(|s| s.0 <= wall)
                .map(|s| s.2)
                .max()
                .unwrap_or(0),
        ),
        peak_after_kb: Some(peak_after_kb),
        max_anon_kb: w.max_anon_kb,
        timeline: timeline(&during, file.bytes),
        status: receipt["status"].as_str().unwrap_or("?").to_string(),
    }
}

/// Whether the server's SQLite store has a body dictionary (packs bodies).
async fn packed_bodies(db: &Path) -> bool {
    use sqlx::Connection;
    let url = format!("sqlite://{}?mode=ro", db.display());
    let Ok(mut conn) = sqlx::SqliteConnection::connect(&url).await else {
        return false;
    };
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM body_dictionaries")
        .fetch_one(&mut conn)
        .await
        .is_ok_and(|n| n > 0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.replace('_', ""))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn env_str(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn main() {
    let target = env_u64("WEICHE_LARGE_BYTES", 1_000_000_000).max(10_000);
    let only = env_str("WEICHE_LARGE_ONLY");
    let skip = env_str("WEICHE_LARGE_SKIP");
    let test_attr = env_str("WEICHE_LARGE_XML_TEST_ATTR");
    let csv_rows = env_u64("WEICHE_LARGE_CSV_ROWS", 3).clamp(1, 3) as usize;
    let pretty = env_str("WEICHE_LARGE_XML_PRETTY").is_some_and(|v| v != "0");
    let settle = Duration::from_secs(env_u64("WEICHE_LARGE_SETTLE_SECS", 5));
    let keep = env_str("WEICHE_LARGE_KEEP").is_some_and(|v| v != "0");
    let parent = env_str("WEICHE_LARGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&parent).unwrap();
    let dir = tempfile::Builder::new()
        .prefix("weiche-large-")
        .tempdir_in(&parent)
        .expect("temp dir");
    let began = Instant::now();
    println!(
        "weiche 1 GB deliveries benchmark: target {:.0} MB per file, in {}",
        target as f64 / 1e6,
        dir.path().display()
    );
    let want = |f: &str| only.as_deref().is_none_or(|o| f.contains(o));

    // ---- 1. data --------------------------------------------------------------------------
    let mut files: Vec<(&'static str, Generated)> = Vec::new();
    if want("csv") {
        let g = generate_csv(&dir.path().join("fallwerk.csv"), target, csv_rows);
        println!(
            "generated fallwerk-csv: {:.1} MB, {} cases in {} rows ({} B/case) in {:.1} s",
            g.bytes as f64 / 1e6,
            g.cases,
            g.rows,
            g.bytes / g.cases.max(1),
            g.time.as_secs_f64()
        );
        files.push(("fallwerk-csv", g));
    }
    if want("xml") {
        let g = generate_xml(
            &dir.path().join("lieferung.xml"),
            target,
            test_attr.as_deref(),
            pretty,
        );
        println!(
            "generated xsozial-lieferung: {:.1} MB, {} <fall> ({} B/case) in {:.1} s{}{}",
            g.bytes as f64 / 1e6,
            g.cases,
            g.bytes / g.cases.max(1),
            g.time.as_secs_f64(),
            match &test_attr {
                Some(v) => format!(", root with test=\"{v}\""),
                None => ", root without @test (as in the reference example)".into(),
            },
            if pretty {
                ", white space between <fall>"
            } else {
                ", no white space between <fall>"
            }
        );
        files.push(("xsozial-lieferung", g));
    }

    let mut runs: Vec<Run> = Vec::new();

    // ---- 2. weiche convert ----------------------------------------------------------------
    if !skip.as_deref().is_some_and(|s| s.contains("convert")) {
        for (format, file) in &files {
            let run = convert(format, file, dir.path());
            println!(
                "convert {format}: {} in {:.1} s, peak RSS {:.1} MB",
                run.status,
                run.wall.as_secs_f64(),
                mb(run.peak_kb)
            );
            runs.push(run);
        }
    }

    // ---- 3. weiche serve ------------------------------------------------------------------
    if !skip.as_deref().is_some_and(|s| s.contains("server")) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(async {
            let port = free_port();
            let max_body = files.iter().map(|(_, g)| g.bytes).max().unwrap_or(0) * 2 + (1 << 20);
            let config = write_config(dir.path(), port, max_body);
            let server = Server::start(&config, dir.path(), port).await;
            println!(
                "server ready: RSS {:.1} MB (VmHWM {:.1} MB)",
                mb(status_kb(server.pid(), "VmRSS").unwrap_or(0)),
                mb(status_kb(server.pid(), "VmHWM").unwrap_or(0))
            );
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(4 * 3600))
                .build()
                .unwrap();
            // A server that has run for a while packs its bodies (store/codec.rs: once it has
            // 1,000 item bodies it trains a dictionary). A first, small CSV delivery with other
            // case ids brings it there, so the large delivery is measured as it would run.
            if files.iter().any(|(f, _)| *f == "fallwerk-csv") {
                let warm = generate_csv_from(&dir.path().join("warm-up.csv"), 1_500_000, csv_rows, 900_000_001);
                let run = post(&server, &client, "fallwerk-csv", &warm, Duration::from_secs(3)).await;
                let packs = packed_bodies(&dir.path().join("data/weiche.db")).await;
                println!(
                    "warm-up: {} cases, {} in {:.1} s; bodies packed from then on: {}",
                    warm.cases,
                    run.status,
                    run.wall.as_secs_f64(),
                    if packs { "yes" } else { "no" }
                );
            }
            for (format, file) in &files {
                let run = post(&server, &client, format, file, settle).await;
                println!(
                    "server {format}: {} in {:.1} s, peak RSS {:.1} MB during the request, {:.1} MB incl. {} s after",
                    run.status,
                    run.wall.as_secs_f64(),
                    mb(run.peak_kb),
                    mb(run.peak_after_kb.unwrap_or(0)),
                    settle.as_secs()
                );
                runs.push(run);
            }
            let db = dir.path().join("data");
            let db_bytes: u64 = std::fs::read_dir(&db)
                .map(|d| {
                    d.filter_map(Result::ok)
                        .filter_map(|e| e.metadata().ok())
                        .map(|m| m.len())
                        .sum()
                })
                .unwrap_or(0);
            println!(
                "database directory after the run: {:.1} MB",
                db_bytes as f64 / 1e6
            );
            server.stop();
        });
    }

    // ---- 4. table -------------------------------------------------------------------------
    println!(
        "\n| format | path | size MB | records | wall s | MB/s | records/s | peak RSS MB | ≤ 256 MB |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---|");
    for r in &runs {
        let peak = match r.peak_after_kb {
            Some(after) if after > r.peak_kb => {
                format!("{:.1} ({:.1} incl. after)", mb(r.peak_kb), mb(after))
            }
            _ => format!("{:.1}", mb(r.peak_kb)),
        };
        let worst = r.peak_kb.max(r.peak_after_kb.unwrap_or(0)) * 1024;
        println!(
            "| {} | {} | {:.1} | {} | {:.1} | {:.1} | {:.0} | {} | {} |",
            r.format,
            r.path,
            r.bytes as f64 / 1e6,
            r.records,
            r.wall.as_secs_f64(),
            r.mb_s(),
            r.rec_s(),
            peak,
            if worst <= RSS_LIMIT { "yes" } else { "**no**" }
        );
    }
    println!("\nRSS over the input (input read %, @ seconds, VmRSS/RssAnon MB):");
    for r in &runs {
        println!(
            "  {} {} (max RssAnon {:.1} MB):{}",
            r.format,
            r.path,
            mb(r.max_anon_kb),
            r.timeline
        );
    }
    println!("\ntotal {:.1} s", began.elapsed().as_secs_f64());
    if keep {
        let kept = dir.keep();
        println!("kept {}", kept.display());
    }
}
