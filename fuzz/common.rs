//! What the fuzz targets drive, shared by the targets (`fuzz/fuzz_targets/*.rs`) and by the
//! corpus replay test (`tests/suite/fuzz_corpus.rs`), so a stored input replays exactly as it ran.
//!
//! A format target's input is one control byte and a body. The control byte picks how the body
//! is read (bits 0–5: read sizes of `n × 7` bytes, `0` = all at once — streaming engines must
//! not care where reads end) and the `charset` the request names (bits 6–7: none, `utf-8`,
//! `windows-1252`, `iso-8859-1`). The body goes through every shipped mapping of the target's
//! syntax with the same [`pipeline::run`] that `weiche convert` and `POST /api/v1/deliveries`
//! use: engine, validation, consent and routing to one recipient with the shipped policy.
//!
//! The mapping target's input is the text of a mapping file (lossily UTF-8); one that loads
//! is run on the basic golden delivery of its syntax.
#![allow(dead_code)]

use std::io::Read;
use std::sync::{Arc, OnceLock};
use weiche::adapt::{Mapping, Syntax};
use weiche::ingest::Status;
use weiche::ingest::pipeline::{self, Job};
use weiche::route::{Recipient, Router};
use weiche::validate::Validator;

/// The shipped mappings (`mappings/`), built in so the targets read no files.
pub const MAPPINGS: &[(&str, &str)] = &[
    (
        "caseflow-xml.toml",
        include_str!("../mappings/caseflow-xml.toml"),
    ),
    (
        "fallwerk-csv.toml",
        include_str!("../mappings/fallwerk-csv.toml"),
    ),
    (
        "klidas-json.toml",
        include_str!("../mappings/klidas-json.toml"),
    ),
    (
        "xsozial-lieferung.toml",
        include_str!("../mappings/xsozial-lieferung.toml"),
    ),
    (
        "klientplus-json.toml",
        include_str!("../mappings/klientplus-json.toml"),
    ),
    (
        "sozialakte-xml.toml",
        include_str!("../mappings/sozialakte-xml.toml"),
    ),
    (
        "fallmonitor-jsonl.toml",
        include_str!("../mappings/fallmonitor-jsonl.toml"),
    ),
    ("kasso-csv.toml", include_str!("../mappings/kasso-csv.toml")),
];

/// The deliveries a fuzzed mapping is run on, by syntax.
const SAMPLE_JSON: &[u8] =
    include_bytes!("../conformance-tests/cases/klidas-json/basic/input.json");
const SAMPLE_XML: &[u8] =
    include_bytes!("../conformance-tests/cases/xsozial-lieferung/basic/input.xml");
const SAMPLE_CSV: &[u8] = include_bytes!("../conformance-tests/cases/fallwerk-csv/basic/input.csv");
const SAMPLE_JSONL: &[u8] =
    include_bytes!("../conformance-tests/cases/fallmonitor-jsonl/basic/input.jsonl");

/// The most records one fuzzed delivery may have (`L002` above).
const MAX_RECORDS: u64 = 1_000;

/// Which engine a format target drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The JSON engine (klidas-json, klientplus-json, and JSON Lines: fallmonitor-jsonl).
    Json,
    /// The XML engine (xsozial-lieferung, caseflow-xml).
    Xml,
    /// The CSV engine (fallwerk-csv).
    Csv,
}

impl Target {
    /// The corpus directory name (`conformance-tests/fuzz-corpus/<name>/`).
    pub fn name(self) -> &'static str {
        match self {
            Target::Json => "json",
            Target::Xml => "xml",
            Target::Csv => "csv",
        }
    }

    fn syntax(self) -> Syntax {
        match self {
            Target::Json => Syntax::Json,
            Target::Xml => Syntax::Xml,
            Target::Csv => Syntax::Csv,
        }
    }
}

/// Mappings, schema, code lists and one recipient, loaded once.
struct Engines {
    mappings: Vec<Arc<Mapping>>,
    validator: Validator,
    router: Router,
    audit_key: weiche::audit::AuditKey,
}

fn engines() -> &'static Engines {
    static ENGINES: OnceLock<Engines> = OnceLock::new();
    ENGINES.get_or_init(|| {
        let mappings = MAPPINGS
            .iter()
            .map(|(name, text)| Arc::new(Mapping::from_text(name, text).expect("shipped mapping")))
            .collect();
        let policy = weiche::consent::Policy::from_text(
            "statistik-nrw.toml",
            include_str!("../policies/statistik-nrw.toml"),
        )
        .expect("shipped policy");
        let router = Router::new(vec![Recipient {
            policy: Arc::new(policy),
            key: weiche::consent::PseudonymKey::new("fuzz", vec![0x11; 32]),
        }]);
        Engines {
            mappings,
            validator: Validator::embedded().expect("built-in schema"),
            router,
            audit_key: weiche::audit::AuditKey::new(vec![0x22; 32]),
        }
    })
}

/// Reads a slice in pieces of at most `size` bytes.
struct Pieces<'a> {
    data: &'a [u8],
    size: usize,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.size).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Runs one delivery through one mapping and checks the receipt's invariants.
fn deliver(mapping: &Mapping, body: &[u8], piece: usize, charset: Option<&str>) {
    let e = engines();
    let job = Job {
        delivery_id: "00000000-0000-0000-0000-000000000000",
        vendor: "fuzz-vendor",
        mapping,
        mode_param: None,
        max_records: MAX_RECORDS,
        charset,
        validator: &e.validator,
        router: Some(&e.router),
        emit_test_records: true,
        // The processing day of every fuzzed delivery: 2026-11-02.
        today: weiche::clock::berlin_date(1_793_617_200_000),
        at: "2026-11-02T12:00:00Z",
        withdrawals: Job::no_withdrawals(),
        audit_key: Some(&e.audit_key),
        background: false,
    };
    let mut reader = Pieces {
        data: body,
        size: piece,
    };
    let mut handed = 0u64;
    let outcome = pipeline::run(&job, &mut reader, &mut |acc| {
        handed += 1;
        assert!(!acc.json.is_empty());
        Ok(())
    });
    let r = &outcome.receipt;
    assert!(outcome.aborted.is_none(), "a slice reader never breaks off");
    assert!(
        r.accepted + r.rejected <= r.received || r.status == Status::E4,
        "counts: {} + {} > {}",
        r.accepted,
        r.rejected,
        r.received
    );
    assert!(handed <= MAX_RECORDS);
    serde_json::to_string(r).expect("a receipt serialises");
}

/// A format target: control byte, then the body (see the module documentation).
pub fn run_format(target: Target, data: &[u8]) {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let piece = match control & 0x3f {
        0 => usize::MAX,
        n => usize::from(n) * 7,
    };
    let charset = match control >> 6 {
        0 => None,
        1 => Some("utf-8"),
        2 => Some("windows-1252"),
        _ => Some("iso-8859-1"),
    };
    for m in engines().mappings.iter().filter(|m| {
        m.file.syntax == target.syntax()
            || (target == Target::Json && m.file.syntax == Syntax::Jsonl)
    }) {
        deliver(m, body, piece, charset);
    }
}

/// The mapping target: the input as a mapping file's text.
pub fn run_mapping(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(mapping) = Mapping::from_text("fuzz.toml", &text) else {
        return;
    };
    let sample = match mapping.file.syntax {
        Syntax::Json => SAMPLE_JSON,
        Syntax::Jsonl => SAMPLE_JSONL,
        Syntax::Xml => SAMPLE_XML,
        Syntax::Csv => SAMPLE_CSV,
    };
    deliver(&mapping, sample, usize::MAX, None);
}
