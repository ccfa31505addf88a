//! What operators are told about broken mapping and policy files: `weiche check` names every
//! problem with its file and line, once; `weiche serve` logs a mapping file that failed to load
//! with its file, line and error (quality.md, "Operations"; docs/configuration.md).

use crate::testkit;

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::*;

/// A private copy of the shipped mappings with `klidas-json.toml` changed by `edit`.
fn mappings_with(dir: &Path, edit: impl Fn(&str) -> String) -> std::path::PathBuf {
    let mappings = dir.join("mappings");
    std::fs::create_dir_all(&mappings).unwrap();
    for name in [
        "klidas-json.toml",
        "xsozial-lieferung.toml",
        "fallwerk-csv.toml",
    ] {
        let text = std::fs::read_to_string(repo().join("mappings").join(name)).unwrap();
        let text = if name == "klidas-json.toml" {
            let edited = edit(&text);
            assert_ne!(edited, text, "the edit changed nothing");
            edited
        } else {
            text
        };
        std::fs::write(mappings.join(name), text).unwrap();
    }
    mappings
}

/// The 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .expect("needle in text")
        + 1
}

/// `weiche check --config <config>`: exit status and stderr.
fn check(config: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_weiche"))
        .arg("check")
        .arg("--config")
        .arg(config)
        .env_remove("WEICHE_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The problem lines of `weiche check` (not warnings, not the count).
fn problems(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| !l.starts_with("warning:") && !l.ends_with("problem(s) found"))
        .collect()
}

#[test]
fn check_names_the_line_of_semantic_mapping_errors() {
    // Each edit makes one semantic (not syntax) error; the line is that of the key it is about.
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "map = \"fachbereich\"",
            "map = \"fachbereich_nope\"",
            "map = \"fachbereich_nope\"",
            "field 'program' uses value map 'fachbereich_nope', which [maps] does not define",
        ),
        (
            "id = \"klidas-json\"",
            "id = \"Klidas JSON\"",
            "id = \"Klidas JSON\"",
            "id 'Klidas JSON' must be lowercase letters, digits and '-'",
        ),
        (
            "\"program\" = { from = \"/fachbereich\", map = \"fachbereich\" }",
            "\"program\" = { from = \"fachbereich\", map = \"fachbereich\" }",
            "\"program\" = { from = \"fachbereich\"",
            "'fachbereich' is not a path (it must start with '/')",
        ),
        (
            "[record.lists.services",
            "[record.lists.leistungen",
            "[record.lists.leistungen]",
            "list 'leistungen': only the canonical arrays",
        ),
    ];
    for (from, to, needle, message) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mappings = mappings_with(dir.path(), |t| t.replace(from, to));
        let file = mappings.join("klidas-json.toml");
        let text = std::fs::read_to_string(&file).unwrap();
        let line = line_of(&text, needle);
        let db = format!("sqlite://{}", dir.path().join("w.db").display());
        let config = write_config_with(dir.path(), &db, "", &mappings);
        let (status, stderr) = check(&config);
        assert_eq!(status, 1, "{stderr}");
        let problems = problems(&stderr);
        assert_eq!(problems.len(), 1, "one problem, once: {stderr}");
        let expected = format!("{}:{line}: {message}", file.display());
        assert!(
            problems[0].starts_with(&expected),
            "expected {expected}\n got {}",
            problems[0]
        );
    }
}

#[test]
fn check_names_a_broken_policy_once_with_its_line() {
    // A bad variant (a syntax error of the policy language) and semantic errors: one line each,
    // and no follow-on "no policy file" for the recipient whose policy it is.
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "kind = \"pull\"",
            "kind = \"pul\"",
            "kind = \"pul\"",
            "unknown variant",
        ),
        (
            "programs = [\"sgb2\"",
            "programs = [] # [\"sgb2\"",
            "programs = []",
            "route.programs must name at least one program",
        ),
        (
            "\"client.sex\" = \"keep\"",
            "\"client.sex\" = \"generalise:year\"",
            "\"client.sex\" = \"generalise:year\"",
            "fields.\"client.sex\": generalise:year does not apply to client.sex",
        ),
        (
            "batch_max_items = 10000",
            "batch_max_items = 0",
            "batch_max_items = 0",
            "delivery.batch_max_items must be at least 1",
        ),
    ];
    for (from, to, needle, message) in cases {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}", dir.path().join("w.db").display());
        let config = write_config(dir.path(), &db, "");
        let policy = dir.path().join("policies/statistik-nrw.toml");
        let text = std::fs::read_to_string(&policy).unwrap();
        let edited = text.replacen(from, to, 1);
        assert_ne!(edited, text, "{from}");
        std::fs::write(&policy, &edited).unwrap();
        let line = line_of(&edited, needle);
        let (status, stderr) = check(&config);
        assert_eq!(status, 1, "{stderr}");
        let problems = problems(&stderr);
        assert_eq!(problems.len(), 1, "one problem, once: {stderr}");
        let expected = format!("{}:{line}: ", policy.display());
        assert!(
            problems[0].starts_with(&expected) && problems[0].contains(message),
            "expected {expected}… {message}\n got {}",
            problems[0]
        );
        assert!(!stderr.contains("no policy file"), "{stderr}");
    }
}

#[test]
fn serve_logs_a_mapping_that_failed_to_load() {
    let dir = tempfile::tempdir().unwrap();
    let mappings = mappings_with(dir.path(), |t| {
        t.replacen("map = \"fachbereich\"", "map = \"fachbereich_nope\"", 1)
    });
    let file = mappings.join("klidas-json.toml");
    let line = line_of(&std::fs::read_to_string(&file).unwrap(), "fachbereich_nope");
    let db = format!("sqlite://{}", dir.path().join("w.db").display());
    let config = write_config_with(dir.path(), &db, "", &mappings);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = dir.path().join("serve.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_weiche"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("WEICHE_CONFIG")
        .env("WEICHE_LISTEN", format!("127.0.0.1:{port}"))
        .env("WEICHE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start weiche serve");
    let deadline = Instant::now() + Duration::from_secs(60);
    let started = loop {
        let up = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        if up || Instant::now() > deadline {
            break up;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(started, "weiche serve did not start: {text}");
    // JSON lines (stderr is no terminal); the failure is a warning with file, line and error.
    let failures: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("mapping file failed to load"))
        })
        .collect();
    assert_eq!(failures.len(), 1, "one line for the broken file: {text}");
    let f = &failures[0];
    assert_eq!(f["level"], "WARN", "{f}");
    assert_eq!(f["file"], file.display().to_string(), "{f}");
    assert_eq!(f["line"], line, "{f}");
    assert!(
        f["error"]
            .as_str()
            .is_some_and(|e| e.contains("value map 'fachbereich_nope'")),
        "{f}"
    );
    let message = f["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("{}:{line}: ", file.display())),
        "{message}"
    );
}
