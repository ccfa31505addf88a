//! The library ceiling (`../shared/bench/ceiling`, quality.md): built and run from a benchmark so
//! that end to end is compared with the ceiling measured in the same run, on the same machine.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What one ceiling run printed.
pub struct Ceiling {
    /// `--write-set` it ran with.
    pub write_set: String,
    /// Its output lines (`stage=…`, `fused=…`, `result …`, `ceiling_…`).
    pub lines: Vec<String>,
    /// 10⁶ ÷ the fused 1-core µs per record.
    pub one_core: f64,
    /// 10⁶ ÷ the fused 2-core µs per record.
    pub two_core: f64,
}

/// The ceiling's source folder, beside the checkout.
fn source(repo: &Path) -> PathBuf {
    repo.join("../shared/bench/ceiling")
}

/// Builds the ceiling into `<repo>/target/ceiling` (its own lock file and target folder).
pub fn build(repo: &Path) -> Result<PathBuf, String> {
    let manifest = source(repo).join("Cargo.toml");
    if !manifest.exists() {
        return Err(format!("{} not found", manifest.display()));
    }
    let target = repo.join("target/ceiling");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--locked",
            "--quiet",
            "--manifest-path",
        ])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building the ceiling failed: {status}"));
    }
    Ok(target.join("release/ceiling"))
}

/// Writes `gen.py -n <records>` input (seed 1) to `path`.
pub fn generate(repo: &Path, records: usize, path: &Path) -> Result<(), String> {
    let out = Command::new("python3")
        .arg(repo.join("../shared/bench/gen.py"))
        .args(["-n", &records.to_string(), "--seed", "1", "-o"])
        .arg(path)
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "gen.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// Runs the ceiling on `input` with a write set (`rows`, `segments` or `records`).
pub fn run(
    repo: &Path,
    binary: &Path,
    input: &Path,
    db: &Path,
    write_set: &str,
) -> Result<Ceiling, String> {
    std::fs::create_dir_all(db).map_err(|e| e.to_string())?;
    let out = Command::new(binary)
        .arg("--input")
        .arg(input)
        .arg("--db")
        .arg(db)
        .args(["--write-set", write_set])
        .arg("--schema")
        .arg(repo.join("schemas/canonical-record.schema.json"))
        .arg("--example")
        .arg(repo.join("../shared/examples/klidas-json/basic"))
        .output()
        .map_err(|e| format!("{}: {e}", binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(format!(
            "the ceiling failed ({}):\n{text}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let value = |key: &str| -> Result<f64, String> {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("the ceiling printed no {key}:\n{text}"))
    };
    Ok(Ceiling {
        write_set: write_set.to_string(),
        one_core: value("ceiling_1core_records_per_s")?,
        two_core: value("ceiling_2core_records_per_s")?,
        lines: text.lines().map(str::to_string).collect(),
    })
}
