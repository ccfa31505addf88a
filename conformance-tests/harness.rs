//! Golden cases: every case in `conformance-tests/cases/` and every example of
//! `../shared/examples/` (for the formats this version ships a mapping for) must convert to the
//! expected records and receipt — in-process and through the real `weiche convert` binary.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use weiche::adapt::MappingSet;
use weiche::cli::conformance::{self, Case};
use weiche::validate::Validator;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn engines() -> (MappingSet, Validator) {
    let mappings = MappingSet::load_dir(&repo().join("mappings")).expect("mappings");
    assert!(mappings.failures.is_empty(), "{:?}", mappings.failures);
    let validator = Validator::load_dir(&repo().join("schemas")).expect("schemas");
    (mappings, validator)
}

fn shared_examples() -> Option<PathBuf> {
    let dir = repo().join("../shared/examples");
    if dir.is_dir() {
        Some(dir)
    } else if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("../shared/examples is missing; CI must run every example");
    } else {
        eprintln!("../shared/examples not found next to the checkout: shared examples not run");
        None
    }
}

fn assert_report(dir: &Path, report: &conformance::Report) {
    let mut text = String::new();
    for (name, diffs) in &report.failures {
        text.push_str(&format!("FAIL {name}\n"));
        for d in diffs {
            text.push_str(&format!("  {d}\n"));
        }
    }
    assert!(
        report.failures.is_empty(),
        "{} under {}:\n{text}",
        report.failures.len(),
        dir.display()
    );
}

#[test]
fn golden_cases() {
    let (mappings, validator) = engines();
    let dir = repo().join("conformance-tests/cases");
    let report = conformance::run_dir(&dir, &mappings, &validator);
    assert!(
        report.cases >= 20,
        "only {} golden cases found",
        report.cases
    );
    assert_report(&dir, &report);
}

#[test]
fn shared_examples_are_golden_cases_too() {
    let Some(dir) = shared_examples() else { return };
    let (mappings, validator) = engines();
    let cases = conformance::discover(&dir);
    assert!(!cases.is_empty());
    let mut ran = 0;
    for case in &cases {
        let diffs = conformance::run_case(case, &mappings, &validator);
        assert!(diffs.is_empty(), "{}:\n{}", case.name, diffs.join("\n"));
        ran += 1;
    }
    assert!(ran >= 9, "ran {ran} shared examples");
}

#[test]
fn the_golden_copies_equal_the_shared_examples() {
    let Some(shared) = shared_examples() else {
        return;
    };
    for case in conformance::discover(&shared) {
        let local = repo().join("conformance-tests/cases").join(&case.name);
        let input = case
            .input
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        for file in [
            "expected.ndjson",
            "expected-receipt.json",
            "README",
            input.as_str(),
        ] {
            let a = std::fs::read(case.dir.join(file)).unwrap();
            let b = std::fs::read(local.join(file)).unwrap_or_default();
            assert_eq!(a, b, "{}/{file} differs from the shared example", case.name);
        }
    }
}

/// Runs the real binary: NDJSON on stdout, receipt on stderr, exit status by receipt status.
fn convert(case: &Case) -> (i32, Vec<Value>, Value) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weiche"));
    cmd.arg("convert").arg("--format").arg(&case.format);
    if let Some(m) = &case.mode {
        cmd.args(["--mode", m]);
    }
    if let Some(v) = &case.vendor {
        cmd.args(["--vendor", v]);
    }
    if let Some(d) = &case.delivery_id {
        cmd.args(["--delivery-id", d]);
    }
    cmd.arg(&case.input).current_dir(repo());
    let out = cmd.output().expect("run weiche convert");
    let records = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every stdout line is one JSON record"))
        .collect();
    let receipt = serde_json::from_slice(&out.stderr).expect("stderr is the receipt as JSON");
    (out.status.code().unwrap_or(-1), records, receipt)
}

#[test]
fn convert_binary_reproduces_every_case() {
    let mut cases = conformance::discover(&repo().join("conformance-tests/cases"));
    if let Some(shared) = shared_examples() {
        cases.extend(conformance::discover(&shared));
    }
    assert!(!cases.is_empty());
    for case in &cases {
        let (code, records, receipt) = convert(case);
        let expected_receipt: Value = serde_json::from_str(
            &std::fs::read_to_string(case.dir.join("expected-receipt.json")).unwrap(),
        )
        .unwrap();
        let want = match expected_receipt["status"].as_str() {
            Some("E1" | "E2") => 0,
            Some("E3") => 1,
            _ => 2,
        };
        assert_eq!(code, want, "{}: exit status", case.name);
        let expected: Vec<Value> = std::fs::read_to_string(case.dir.join("expected.ndjson"))
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let mut diffs = Vec::new();
        conformance::compare_receipt(&expected_receipt, &receipt, &mut diffs);
        conformance::compare_records(
            &expected,
            &records,
            case.delivery_id.is_some(),
            case.vendor.is_some(),
            &mut diffs,
        );
        assert!(diffs.is_empty(), "{}:\n{}", case.name, diffs.join("\n"));
        if let Some(first) = records.first() {
            let keys: Vec<&String> = first.as_object().unwrap().keys().collect();
            let order = [
                "schema_version",
                "source",
                "reporting_period",
                "program",
                "client",
                "case",
            ];
            assert_eq!(
                &keys[..6],
                &order,
                "{}: keys in the order of canonical-model.md",
                case.name
            );
        }
    }
}

#[test]
fn conformance_command_runs_the_cases() {
    let out = Command::new(env!("CARGO_BIN_EXE_weiche"))
        .args(["conformance", "conformance-tests/cases"])
        .current_dir(repo())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}

#[test]
fn conformance_reports_a_difference() {
    // A broken expectation must be reported: copy a case and change one expected value.
    let tmp = tempfile::tempdir().unwrap();
    let src = repo().join("conformance-tests/cases/klidas-json/basic");
    let dst = tmp.path().join("klidas-json/basic");
    std::fs::create_dir_all(&dst).unwrap();
    for f in ["input.json", "README", "expected-receipt.json"] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    let ndjson = std::fs::read_to_string(src.join("expected.ndjson")).unwrap();
    std::fs::write(
        dst.join("expected.ndjson"),
        ndjson.replacen("\"Kalk\"", "\"Deutz\"", 1),
    )
    .unwrap();
    let (mappings, validator) = engines();
    let report = conformance::run_dir(tmp.path(), &mappings, &validator);
    assert_eq!(report.failures.len(), 1);
    assert!(
        report.failures[0]
            .1
            .iter()
            .any(|d| d.contains("JH-2026-0417")),
        "{:?}",
        report.failures
    );
}

#[test]
fn white_space_between_many_records_is_not_a_value() {
    // A pretty-printed message with thousands of records: the white space between the <fall>
    // elements belongs to no value and must not add up to the 4 KiB value limit (L004).
    let src = std::fs::read_to_string(
        repo().join("conformance-tests/cases/xsozial-lieferung/basic/input.xml"),
    )
    .unwrap();
    let start = src.find("<fall>").unwrap();
    let end = src.find("</fall>").unwrap() + "</fall>".len();
    let mut xml = src[..start].to_string();
    for i in 0..2000 {
        xml.push_str(&src[start..end].replace("F-2026-0101", &format!("F-WS-{i}")));
        xml.push_str("\n  ");
    }
    xml.push_str("</lieferung>\n");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pretty.xml");
    std::fs::write(&file, xml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weiche"))
        .args(["convert", "--format", "xsozial-lieferung"])
        .arg(&file)
        .current_dir(repo())
        .output()
        .unwrap();
    let receipt: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(receipt["status"], "E1", "{receipt}");
    assert_eq!(receipt["accepted"], 2000);
}

/// (record, code, field) of every error and warning of a receipt, sorted.
fn findings(receipt: &Value) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = ["errors", "warnings"]
        .iter()
        .flat_map(|list| receipt[*list].as_array().cloned().unwrap_or_default())
        .map(|e| {
            (
                e["record"].to_string(),
                e["code"].as_str().unwrap_or("").to_string(),
                e["field"].to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_golden_case_reports_exactly_its_findings() {
    // The examples' README compares only codes; the golden cases of this repository are held to
    // their exact findings too (record, code, field), so a W002 path with its indices, or a
    // value read by a rule and reported anyway, shows up as a difference.
    let (mappings, _) = engines();
    for case in conformance::discover(&repo().join("conformance-tests/cases")) {
        let (_, _, receipt) = convert(&case);
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(case.dir.join("expected-receipt.json")).unwrap(),
        )
        .unwrap();
        assert!(mappings.get(&case.format).is_some(), "{}", case.name);
        assert_eq!(
            findings(&receipt),
            findings(&expected),
            "{}: errors and warnings (record, code, field)",
            case.name
        );
    }
}
