//! The administrator's console in a real browser (admin-console.md, "Qualities"): starts the
//! real server on a free port — with its own mappings directory and a push recipient on a local
//! HTTPS receiver — posts an `E3` and an `E1` delivery, and runs `tests/browser/console.py`
//! (Playwright for Python driving Debian's headless Chromium; see that file for what it checks).
//!
//! Needs `/usr/bin/chromium` (or `WEICHE_CHROMIUM`) and the Python package `playwright`
//! (`.ci/run` installs both). Without them the test prints a notice and passes — except under
//! `CI=true`, where it fails.

use crate::{pushkit, support, testkit};

use pushkit::*;
use std::process::Command;
use testkit::*;

/// Why the browser tests cannot run here, if they cannot.
fn missing() -> Option<String> {
    let chromium = std::env::var("WEICHE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !std::path::Path::new(&chromium).exists() {
        return Some(format!(
            "{chromium} is not installed (apt-get install chromium)"
        ));
    }
    let playwright = Command::new("python3")
        .args(["-c", "import playwright.sync_api"])
        .output();
    match playwright {
        Ok(o) if o.status.success() => None,
        _ => Some("the Python package playwright is not installed (pip install playwright)".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_works_in_headless_chromium() {
    if let Some(why) = missing() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "browser tests cannot run under CI: {why}"
        );
        eprintln!("NOTICE: browser tests skipped: {why}");
        return;
    }
    // The server: own mappings (the editor writes them), a push recipient, SQLite.
    let (ca_pem, tls) = pki();
    let port = free_port();
    let mut receiver = Receiver::new(port, tls);
    receiver.start();
    let dir = tempfile::tempdir().unwrap();
    let url = support::fresh_sqlite_url(dir.path());
    let config = push_config(dir.path(), &url, port, &ca_pem, 30, 7);
    let mappings = dir.path().join("mappings");
    std::fs::create_dir_all(&mappings).unwrap();
    for f in [
        "klidas-json.toml",
        "xsozial-lieferung.toml",
        "fallwerk-csv.toml",
    ] {
        std::fs::copy(repo().join("mappings").join(f), mappings.join(f)).unwrap();
    }
    let text = std::fs::read_to_string(&config).unwrap();
    let shipped = format!("mappings_dir = \"{}\"", repo().join("mappings").display());
    assert!(text.contains(&shipped));
    std::fs::write(
        &config,
        text.replace(
            &shipped,
            &format!("mappings_dir = \"{}\"", mappings.display()),
        ),
    )
    .unwrap();
    let s = TestServer::from_config(dir, &config, url, None).await;

    // An E3 and an E1 delivery.
    let c = reqwest::Client::new();
    for (case, status) in [("mixed-errors", "E3"), ("basic", "E1")] {
        let body = std::fs::read(repo().join(format!(
            "conformance-tests/cases/klidas-json/{case}/input.json"
        )))
        .unwrap();
        let (_, r) = post_klidas(&c, &s, body).await;
        assert_eq!(r["status"], status, "{r}");
    }

    let shots = repo().join("target/browser-screenshots");
    let sample = repo().join("conformance-tests/cases/klidas-json/basic/input.json");
    let script = repo().join("tests/browser/console.py");
    let base = s.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(base)
            .arg(ADMIN_TOKEN)
            .arg(VENDOR_TOKEN)
            .arg(sample)
            .arg(shots)
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    s.stop().await;
    receiver.stop().await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "browser tests failed:\n{stdout}\n{stderr}"
    );
}
