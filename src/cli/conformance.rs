//! Golden cases: run an export through ingest, mapping and validation and compare the records and
//! the receipt with the expected ones, exactly as `../shared/examples/README.md` says a test
//! should compare (JSON values, not bytes; only the receipt members it names).
//!
//! A case is a folder `<format>/<case>/` with `input.*`, `expected.ndjson`,
//! `expected-receipt.json` and a `README` whose line ends in `Options: --mode … --vendor …`.

use super::convert::NIL_DELIVERY_ID;
use crate::adapt::{MappingSet, Mode};
use crate::catalogue::Code;
use crate::ingest::pipeline::{self, Job};
use crate::validate::Validator;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// One golden case.
#[derive(Debug, Clone)]
pub struct Case {
    /// `<format>/<case>`.
    pub name: String,
    /// Format (mapping id) = the parent folder's name.
    pub format: String,
    /// The input file.
    pub input: PathBuf,
    /// The folder.
    pub dir: PathBuf,
    /// `--mode`.
    pub mode: Option<String>,
    /// `--vendor`.
    pub vendor: Option<String>,
    /// `--delivery-id`.
    pub delivery_id: Option<String>,
}

/// Finds every case under a directory (`<format>/<case>/`), sorted by name.
pub fn discover(dir: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    let Ok(formats) = std::fs::read_dir(dir) else {
        return cases;
    };
    for f in formats.filter_map(Result::ok).filter(|e| e.path().is_dir()) {
        let format = f.file_name().to_string_lossy().to_string();
        let Ok(entries) = std::fs::read_dir(f.path()) else {
            continue;
        };
        for c in entries.filter_map(Result::ok).filter(|e| e.path().is_dir()) {
            let case_dir = c.path();
            let Some(input) = std::fs::read_dir(&case_dir).ok().and_then(|files| {
                files
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .find(|p| p.file_stem().is_some_and(|s| s == "input"))
            }) else {
                continue;
            };
            let readme = std::fs::read_to_string(case_dir.join("README")).unwrap_or_default();
            let options = readme
                .split("Options:")
                .nth(1)
                .unwrap_or("")
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>();
            let opt = |name: &str| {
                options
                    .iter()
                    .position(|o| o == name)
                    .and_then(|i| options.get(i + 1))
                    .cloned()
            };
            cases.push(Case {
                name: format!("{format}/{}", c.file_name().to_string_lossy()),
                format: format.clone(),
                input,
                dir: case_dir.clone(),
                mode: opt("--mode"),
                vendor: opt("--vendor"),
                delivery_id: opt("--delivery-id"),
            });
        }
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    cases
}

/// Runs one case; returns the differences (empty: the case passes).
pub fn run_case(case: &Case, mappings: &MappingSet, validator: &Validator) -> Vec<String> {
    let mut diffs = Vec::new();
    let Some(mapping) = mappings.get(&case.format) else {
        return vec![format!("no mapping loaded for format '{}'", case.format)];
    };
    let read = |name: &str| std::fs::read_to_string(case.dir.join(name));
    let (Ok(expected_receipt), Ok(expected_records)) =
        (read("expected-receipt.json"), read("expected.ndjson"))
    else {
        return vec!["expected-receipt.json or expected.ndjson missing".into()];
    };
    let Ok(expected_receipt) = serde_json::from_str::<Value>(&expected_receipt) else {
        return vec!["expected-receipt.json is not JSON".into()];
    };
    let vendor = case
        .vendor
        .clone()
        .or_else(|| mapping.file.default_vendor.clone())
        .unwrap_or_else(|| "demo-vendor".into());
    let delivery_id = case.delivery_id.as_deref().unwrap_or(NIL_DELIVERY_ID);
    let job = Job {
        delivery_id,
        vendor: &vendor,
        mapping: &mapping,
        mode_param: case.mode.as_deref().and_then(Mode::parse),
        max_records: u64::MAX,
        charset: None,
        validator,
        router: None,
        emit_test_records: true,
        today: crate::clock::berlin_date(chrono::Utc::now().timestamp_millis()),
        at: "",
        withdrawals: Job::no_withdrawals(),
        audit_key: None,
        background: false,
    };
    let file = match std::fs::File::open(&case.input) {
        Ok(f) => f,
        Err(e) => return vec![format!("{}: {e}", case.input.display())],
    };
    let mut records: Vec<Value> = Vec::new();
    let mut reader = std::io::BufReader::new(file);
    let outcome = pipeline::run(&job, &mut reader, &mut |acc| {
        records.push(serde_json::from_str(&acc.json).unwrap_or(Value::Null));
        Ok(())
    });
    let receipt = match serde_json::to_value(&outcome.receipt) {
        Ok(v) => v,
        Err(e) => return vec![format!("receipt: {e}")],
    };
    if outcome.receipt.status == crate::ingest::Status::E4 {
        records.clear();
    }
    compare_receipt(&expected_receipt, &receipt, &mut diffs);
    let expected: Vec<Value> = expected_records
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    compare_records(
        &expected,
        &records,
        case.delivery_id.is_some(),
        case.vendor.is_some(),
        &mut diffs,
    );
    diffs
}

fn codes_of(receipt: &Value, list: &str, record: Option<u64>) -> Vec<String> {
    receipt[list]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["record"].as_u64() == record)
                .filter_map(|e| e["code"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Compares receipts by the rules of the examples' README.
pub fn compare_receipt(expected: &Value, actual: &Value, diffs: &mut Vec<String>) {
    if expected["status"] != actual["status"] {
        diffs.push(format!(
            "status: expected {}, got {}",
            expected["status"], actual["status"]
        ));
    }
    let delivery_level: Vec<String> = codes_of(expected, "errors", None);
    let whole =
        expected["status"] == "E4" && delivery_level.iter().any(|c| c != Code::S020.as_str());
    let counts: &[&str] = if whole {
        &["accepted"]
    } else {
        &["received", "accepted", "rejected"]
    };
    for k in counts {
        if expected[*k] != actual[*k] {
            diffs.push(format!(
                "{k}: expected {}, got {}",
                expected[*k], actual[*k]
            ));
        }
    }
    let actual_codes: Vec<String> = actual["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["code"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for code in &delivery_level {
        if !actual_codes.contains(code) {
            diffs.push(format!(
                "delivery-level error {code} expected, got {actual_codes:?}"
            ));
        }
    }
    for e in expected["errors"].as_array().into_iter().flatten() {
        let Some(pos) = e["record"].as_u64() else {
            continue;
        };
        let got: Vec<&Value> = actual["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|x| x["record"].as_u64() == Some(pos))
                    .collect()
            })
            .unwrap_or_default();
        if !got.iter().any(|x| x["record_id"] == e["record_id"]) {
            diffs.push(format!(
                "record {pos}: expected an error with record_id {}, got {:?}",
                e["record_id"],
                got.iter()
                    .map(|x| x["record_id"].to_string())
                    .collect::<Vec<_>>()
            ));
        }
        if !got.iter().any(|x| x["code"] == e["code"]) {
            diffs.push(format!(
                "record {pos}: expected error {}, got {:?}",
                e["code"],
                got.iter()
                    .map(|x| x["code"].to_string())
                    .collect::<Vec<_>>()
            ));
        }
    }
    let rejected: Vec<u64> = expected["errors"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["record"].as_u64()).collect())
        .unwrap_or_default();
    let mut w002 = false;
    for w in expected["warnings"].as_array().into_iter().flatten() {
        match w["code"].as_str() {
            Some("W001") => {
                let Some(pos) = w["record"].as_u64() else {
                    continue;
                };
                if rejected.contains(&pos) {
                    continue;
                }
                if !codes_of(actual, "warnings", Some(pos))
                    .iter()
                    .any(|c| c == "W001")
                {
                    diffs.push(format!("record {pos}: W001 expected"));
                }
            }
            Some("W002") => w002 = true,
            _ => {}
        }
    }
    if w002
        && !actual["warnings"]
            .as_array()
            .is_some_and(|a| a.iter().any(|w| w["code"] == "W002"))
    {
        diffs.push("a W002 warning expected".into());
    }
    if expected["test"] == Value::Bool(true) && actual["test"] != Value::Bool(true) {
        diffs.push("\"test\": true expected".into());
    }
}

/// JSON equality where numbers compare by value (`20` equals `20.0`).
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Compares records matched by `source.record_id`.
pub fn compare_records(
    expected: &[Value],
    actual: &[Value],
    fixed_delivery_id: bool,
    fixed_vendor: bool,
    diffs: &mut Vec<String>,
) {
    let key = |v: &Value| v["source"]["record_id"].as_str().unwrap_or("").to_string();
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(s) = v.get_mut("source").and_then(Value::as_object_mut) {
            if !fixed_delivery_id {
                s.remove("delivery_id");
            }
            if !fixed_vendor {
                s.remove("vendor");
            }
        }
        v
    };
    let actual_by: BTreeMap<String, &Value> = actual.iter().map(|v| (key(v), v)).collect();
    if actual_by.len() != actual.len() {
        diffs.push("two output records share a record_id".into());
    }
    for e in expected {
        let k = key(e);
        match actual_by.get(&k) {
            None => diffs.push(format!("record {k}: missing")),
            Some(a) => {
                if !json_eq(&strip(e), &strip(a)) {
                    diffs.push(format!(
                        "record {k}: differs\n  expected {}\n  got      {}",
                        strip(e),
                        strip(a)
                    ));
                }
            }
        }
    }
    let expected_keys: Vec<String> = expected.iter().map(key).collect();
    for k in actual_by.keys() {
        if !expected_keys.contains(k) {
            diffs.push(format!("record {k}: not expected"));
        }
    }
}

/// Result of a directory run.
#[derive(Debug, Default)]
pub struct Report {
    /// Cases run.
    pub cases: usize,
    /// Failed cases with their differences.
    pub failures: Vec<(String, Vec<String>)>,
}

/// Runs every case of a directory.
pub fn run_dir(dir: &Path, mappings: &MappingSet, validator: &Validator) -> Report {
    let mut report = Report::default();
    let cases = discover(dir);
    let total = cases.len();
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    for (i, case) in cases.iter().enumerate() {
        if progress {
            eprint!("\r[{}/{total}] {}\x1b[K", i + 1, case.name);
        }
        report.cases += 1;
        let diffs = run_case(case, mappings, validator);
        if !diffs.is_empty() {
            report.failures.push((case.name.clone(), diffs));
        }
    }
    if progress && total > 0 {
        eprintln!();
    }
    report
}

/// `weiche conformance [DIR]`.
pub fn main(dir: Option<PathBuf>) -> ExitCode {
    let dir = dir.unwrap_or_else(|| PathBuf::from("conformance-tests/cases"));
    let (mappings, validator) = match super::convert::load_engines(None, None) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let report = run_dir(&dir, &mappings, &validator);
    for (name, diffs) in &report.failures {
        println!("FAIL {name}");
        for d in diffs {
            println!("  {d}");
        }
    }
    let failed = report.failures.len();
    println!("{} passed, {failed} failed", report.cases - failed);
    if report.cases == 0 {
        println!("no cases found under {}", dir.display());
        return ExitCode::from(2);
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
