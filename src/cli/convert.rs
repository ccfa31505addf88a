//! `weiche convert`: ingest, mapping and validation of a local file, without server or database.

use crate::adapt::{MappingSet, Mode};
use crate::ingest::pipeline::{self, Job};
use crate::validate::Validator;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The delivery id conversions use unless `--delivery-id` is given.
pub const NIL_DELIVERY_ID: &str = "00000000-0000-0000-0000-000000000000";

/// Arguments of `weiche convert`.
#[derive(Debug, clap::Args)]
pub struct ConvertArgs {
    /// Format (mapping id).
    #[arg(long)]
    pub format: String,
    /// Delivery mode for formats that do not declare one.
    #[arg(long)]
    pub mode: Option<String>,
    /// Vendor id for `source.vendor` (default: the mapping's default vendor).
    #[arg(long)]
    pub vendor: Option<String>,
    /// Fixed `source.delivery_id` (default: the nil UUID).
    #[arg(long)]
    pub delivery_id: Option<String>,
    /// Directory of mapping files (default: env WEICHE_MAPPINGS_DIR, ./mappings, else built in).
    #[arg(long)]
    pub mappings_dir: Option<PathBuf>,
    /// Directory of the schema and code lists (default: env WEICHE_SCHEMAS_DIR, ./schemas, else built in).
    #[arg(long)]
    pub schemas_dir: Option<PathBuf>,
    /// Character set of the file, as a request's `Content-Type` would name it (CSV).
    #[arg(long)]
    pub charset: Option<String>,
    /// The export to convert.
    pub file: PathBuf,
}

/// Picks a directory: the explicit one, the env variable, `./<default>` if present, else `None`
/// (built-in files).
pub fn pick_dir(explicit: Option<&Path>, env: &str, default: &str) -> Option<PathBuf> {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| {
            std::env::var(env)
                .ok()
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .or_else(|| Path::new(default).is_dir().then(|| PathBuf::from(default)))
}

/// Loads mappings and the validator for offline work; problems are printed.
pub fn load_engines(
    mappings_dir: Option<&Path>,
    schemas_dir: Option<&Path>,
) -> Result<(MappingSet, Validator), String> {
    let mappings = match pick_dir(mappings_dir, "WEICHE_MAPPINGS_DIR", "mappings") {
        Some(dir) => MappingSet::load_dir(&dir).map_err(|e| e.to_string())?,
        None => MappingSet::embedded(),
    };
    for f in &mappings.failures {
        eprintln!("warning: {f}");
    }
    let validator = match pick_dir(schemas_dir, "WEICHE_SCHEMAS_DIR", "schemas") {
        Some(dir) => Validator::load_dir(&dir),
        None => Validator::embedded(),
    }
    .map_err(|e| e.to_string())?;
    Ok((mappings, validator))
}

/// Runs the conversion.
pub fn run(args: ConvertArgs) -> ExitCode {
    let (mappings, validator) =
        match load_engines(args.mappings_dir.as_deref(), args.schemas_dir.as_deref()) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
    let Some(mapping) = mappings.get(&args.format) else {
        eprintln!(
            "no mapping for format '{}' (loaded: {})",
            args.format,
            mappings
                .mappings
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
        return ExitCode::from(2);
    };
    let mode = match args.mode.as_deref().map(|m| (m, Mode::parse(m))) {
        None => None,
        Some((_, Some(m))) => Some(m),
        Some((m, None)) => {
            eprintln!("--mode must be full or partial, not '{m}'");
            return ExitCode::from(2);
        }
    };
    let Some(vendor) = args
        .vendor
        .clone()
        .or_else(|| mapping.file.default_vendor.clone())
    else {
        eprintln!(
            "--vendor is needed: mapping '{}' names no default vendor",
            args.format
        );
        return ExitCode::from(2);
    };
    let file = match std::fs::File::open(&args.file) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{}: {e}", args.file.display());
            return ExitCode::from(2);
        }
    };
    let delivery_id = args.delivery_id.as_deref().unwrap_or(NIL_DELIVERY_ID);
    let job = Job {
        delivery_id,
        vendor: &vendor,
        mapping: &mapping,
        mode_param: mode,
        max_records: u64::MAX,
        charset: args.charset.as_deref(),
        validator: &validator,
        router: None,
        emit_test_records: true,
        today: crate::clock::berlin_date(chrono::Utc::now().timestamp_millis()),
        at: "",
        withdrawals: Job::no_withdrawals(),
        audit_key: None,
        background: false,
    };
    // Records are spooled to a temporary file and copied to stdout only if the delivery is not
    // rejected whole, so an E4 prints no records without holding them in memory.
    let spool_path =
        std::env::temp_dir().join(format!("weiche-convert-{}.ndjson", uuid::Uuid::new_v4()));
    let spool = match std::fs::File::create(&spool_path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{}: {e}", spool_path.display());
            return ExitCode::from(2);
        }
    };
    let mut out = BufWriter::with_capacity(256 * 1024, spool);
    let total = std::fs::metadata(&args.file).map(|m| m.len()).unwrap_or(0);
    let progress = Progress::new(total);
    let mut reader = BufReader::with_capacity(
        256 * 1024,
        Counting {
            inner: file,
            progress: &progress,
        },
    );
    let mut records = 0u64;
    let outcome = pipeline::run(&job, &mut reader, &mut |acc| {
        records += 1;
        progress.tick(records);
        out.write_all(acc.json.as_bytes())
            .and_then(|()| out.write_all(b"\n"))
            .map_err(|e| crate::adapt::AdaptError::Aborted(format!("spool file: {e}")))
    });
    progress.finish();
    let copied = out.into_inner().map_err(|e| e.into_error()).and_then(|f| {
        drop(f);
        if outcome.receipt.status == crate::ingest::Status::E4 {
            return Ok(());
        }
        let mut f = std::fs::File::open(&spool_path)?;
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        std::io::copy(&mut f, &mut lock)?;
        lock.flush()
    });
    let _ = std::fs::remove_file(&spool_path);
    if let Err(e) = copied {
        eprintln!("writing records: {e}");
        return ExitCode::from(2);
    }
    match serde_json::to_string_pretty(&outcome.receipt) {
        Ok(r) => eprintln!("{r}"),
        Err(e) => eprintln!("receipt: {e}"),
    }
    ExitCode::from(outcome.receipt.status.exit_code() as u8)
}

/// Progress of a long conversion on stderr — only when stderr is a terminal, so the receipt on
/// stderr stays machine-readable otherwise.
struct Progress {
    enabled: bool,
    total: u64,
    read: std::sync::atomic::AtomicU64,
    started: std::time::Instant,
    last: std::sync::Mutex<std::time::Instant>,
}

impl Progress {
    fn new(total: u64) -> Self {
        let now = std::time::Instant::now();
        Progress {
            enabled: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            total,
            read: std::sync::atomic::AtomicU64::new(0),
            started: now,
            last: std::sync::Mutex::new(now),
        }
    }

    fn tick(&self, records: u64) {
        if !self.enabled {
            return;
        }
        {
            let Ok(mut last) = self.last.lock() else {
                return;
            };
            if last.elapsed() < std::time::Duration::from_millis(500) {
                return;
            }
            *last = std::time::Instant::now();
        }
        let read = self.read.load(std::sync::atomic::Ordering::Relaxed);
        let pct = (read * 100).checked_div(self.total).unwrap_or(0);
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        eprint!(
            "\r{pct:>3}%  {:.0} MB  {records} records  {:.0} records/s\x1b[K",
            read as f64 / 1e6,
            records as f64 / secs
        );
    }

    fn finish(&self) {
        if self.enabled {
            eprint!("\r\x1b[K");
        }
    }
}

/// Counts the bytes read for [`Progress`].
struct Counting<'p, R> {
    inner: R,
    progress: &'p Progress,
}

impl<R: std::io::Read> std::io::Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress
            .read
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}
