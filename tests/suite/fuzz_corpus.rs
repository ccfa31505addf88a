//! Replays the fuzz corpus (`conformance-tests/fuzz-corpus/<target>/`: every input a fuzzer
//! crashed on, and seeds) through the same code the fuzz targets run (`fuzz/common.rs`): no
//! input may panic, and each must finish within bounds.

use crate::fuzz_common as common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The longest one input may take (a debug build on a busy 2-core machine; the fuzzers run
/// each input in well under a second).
const BOUND: Duration = Duration::from_secs(20);

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("conformance-tests/fuzz-corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != "README.md"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "{}: the corpus must not be empty",
        dir.display()
    );
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            // Inputs holding a NUL byte are stored as hex text (`<name>.hex`), so that the
            // repository holds no binary file.
            let bytes = if p.extension().is_some_and(|e| e == "hex") {
                let digits: Vec<u8> = bytes
                    .into_iter()
                    .filter(|b| !b.is_ascii_whitespace())
                    .collect();
                hex::decode(&digits).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            } else {
                bytes
            };
            (p, bytes)
        })
        .collect()
}

fn replay(target: &str, run: impl Fn(&[u8])) {
    let mut failures = Vec::new();
    for (path, bytes) in corpus(target) {
        let started = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&bytes)));
        let took = started.elapsed();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if result.is_err() {
            failures.push(format!("{name}: panicked"));
        } else if took > BOUND {
            failures.push(format!("{name}: took {took:?}"));
        }
    }
    assert!(failures.is_empty(), "{target}: {failures:#?}");
}

#[test]
fn json_corpus_replays() {
    replay("json", |b| common::run_format(common::Target::Json, b));
}

#[test]
fn xml_corpus_replays() {
    replay("xml", |b| common::run_format(common::Target::Xml, b));
}

#[test]
fn csv_corpus_replays() {
    replay("csv", |b| common::run_format(common::Target::Csv, b));
}

#[test]
fn mapping_corpus_replays() {
    replay("mapping", common::run_mapping);
}

#[test]
fn targets_name_their_corpus_directories() {
    for t in [
        common::Target::Json,
        common::Target::Xml,
        common::Target::Csv,
    ] {
        assert!(!corpus(t.name()).is_empty());
    }
}
