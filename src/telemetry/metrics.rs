//! Process-local metrics, rendered at `GET /metrics` in the Prometheus text exposition format
//! 0.0.4, and mirrored into OpenTelemetry instruments when an OTLP exporter is configured.
//!
//! Labels carry ids, codes and outcomes only (catalogue codes, recipient ids, stage names): no
//! personal data, and no unbounded values such as delivery ids.
//!
//! | Prometheus (`/metrics`) | OTLP instrument | kind | labels / attributes |
//! |---|---|---|---|
//! | `weiche_records_received_total` | `weiche.records.received` | counter | |
//! | `weiche_records_accepted_total` | `weiche.records.accepted` | counter | |
//! | `weiche_records_rejected_total` | `weiche.records.rejected` | counter | `code` |
//! | `weiche_records_routed_total` | `weiche.records.routed` | counter | `recipient` |
//! | `weiche_push_attempts_total` | `weiche.push.attempts` | counter | `outcome` |
//! | `weiche_deliveries_total` | `weiche.deliveries` | counter | `status` |
//! | `weiche_early_writes_total` | `weiche.early_writes` | counter | |
//! | `weiche_outbox_depth` | `weiche.outbox.depth` | gauge | `recipient` |
//! | `weiche_stage_seconds` | `weiche.stage.duration` (unit `s`) | histogram | `stage` |
//! | `weiche_purged_total` | `weiche.purged` | counter | `kind` |
//! | `weiche_retention_overdue` | `weiche.retention.overdue` | gauge | `kind` |
//!
//! * Records count once per delivery that got a receipt (not for duplicates answered with the
//!   first receipt). A rejected record counts under the code of its first error, so the
//!   rejected series add up to `weiche_records_rejected_total` of all codes = rejected records.
//! * `status` of a delivery: the receipt status `E1`…`E4`, `S100` for a duplicate answered with
//!   the first receipt, else the catalogue code of the error answer (e.g. `U001`, `X000`).
//! * `outcome` of a push attempt: [`PUSH_OUTCOMES`] (`failure`: the group became a dead letter).
//! * `early_writes`: deliveries whose store transaction began while their pipeline still ran
//!   (their body had ended and the writer was free), so that writing overlapped mapping.
//! * `outbox_depth`: open items per recipient (not yet sealed into a batch), refreshed by the
//!   batch sealer every second.
//! * `stage`: [`STAGES`]; `adapt`, `validate` and `route` are the cumulative time of the stage in
//!   one delivery, `store` the time spent writing and committing, `ingest` the whole delivery,
//!   `deliver` one sealing round that found open items.
//! * `kind` of a purge: [`PURGE_KINDS`] — rows purged by retention (declared with 0).
//! * `retention_overdue`: rows past their retention that the last purge had to keep, by `kind`
//!   `items` (not delivered yet) or `records` (a partition could not be dropped yet).

use crate::catalogue::Code;
use arc_swap::ArcSwapOption;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// The pipeline stages timed in `weiche_stage_seconds`.
pub const STAGES: [&str; 6] = ["ingest", "adapt", "validate", "route", "store", "deliver"];

/// Outcomes of push attempts (`weiche_push_attempts_total{outcome}`): delivered, failed and
/// retried later, failed for good.
pub const PUSH_OUTCOMES: [&str; 3] = ["success", "retry", "failure"];

/// What retention purges (`weiche_purged_total{kind}`): records, holdings (what recipients held
/// of purged items), output items, batches, audit events, receipts.
pub const PURGE_KINDS: [&str; 6] = [
    "records",
    "holdings",
    "items",
    "batches",
    "audit_events",
    "receipts",
];

/// Upper bounds (seconds) of the stage-latency histogram buckets.
pub const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default, Clone)]
struct Hist {
    /// Per bucket (not cumulative), plus one for `+Inf`.
    buckets: [u64; BUCKETS.len() + 1],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct State {
    received: u64,
    accepted: u64,
    rejected: BTreeMap<String, u64>,
    routed: BTreeMap<String, u64>,
    push: BTreeMap<String, u64>,
    deliveries: BTreeMap<String, u64>,
    early_writes: u64,
    outbox: BTreeMap<String, i64>,
    stages: BTreeMap<String, Hist>,
    purged: BTreeMap<String, u64>,
    overdue: BTreeMap<String, i64>,
}

fn state() -> MutexGuard<'static, State> {
    static STATE: OnceLock<Mutex<State>> = OnceLock::new();
    STATE
        .get_or_init(|| {
            let mut s = State::default();
            for o in PUSH_OUTCOMES {
                s.push.insert(o.to_string(), 0);
            }
            for st in STAGES {
                s.stages.insert(st.to_string(), Hist::default());
            }
            for k in PURGE_KINDS {
                s.purged.insert(k.to_string(), 0);
            }
            Mutex::new(s)
        })
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The OpenTelemetry instruments, present while an OTLP exporter is installed.
struct Instruments {
    received: Counter<u64>,
    accepted: Counter<u64>,
    rejected: Counter<u64>,
    routed: Counter<u64>,
    push: Counter<u64>,
    deliveries: Counter<u64>,
    early_writes: Counter<u64>,
    outbox: Gauge<i64>,
    stage: Histogram<f64>,
    purged: Counter<u64>,
    overdue: Gauge<i64>,
}

static OTEL: ArcSwapOption<Instruments> = ArcSwapOption::const_empty();

/// Creates the OpenTelemetry instruments on `meter`; from now on every update is mirrored there.
pub(crate) fn install(meter: &Meter) {
    let counter = |name: &'static str, unit: &'static str, description: &'static str| {
        meter
            .u64_counter(name)
            .with_unit(unit)
            .with_description(description)
            .build()
    };
    let instruments = Instruments {
        received: counter(
            "weiche.records.received",
            "{record}",
            "Records received in deliveries",
        ),
        accepted: counter(
            "weiche.records.accepted",
            "{record}",
            "Records accepted in deliveries",
        ),
        rejected: counter(
            "weiche.records.rejected",
            "{record}",
            "Records rejected, by the code of their first error",
        ),
        routed: counter(
            "weiche.records.routed",
            "{record}",
            "Records routed, by recipient",
        ),
        push: counter(
            "weiche.push.attempts",
            "{attempt}",
            "Push delivery attempts, by outcome",
        ),
        deliveries: counter(
            "weiche.deliveries",
            "{delivery}",
            "Deliveries answered, by receipt status or error code",
        ),
        early_writes: counter(
            "weiche.early_writes",
            "{delivery}",
            "Deliveries whose store transaction began while their pipeline still ran",
        ),
        outbox: meter
            .i64_gauge("weiche.outbox.depth")
            .with_unit("{item}")
            .with_description("Open items not yet sealed into a batch, by recipient")
            .build(),
        stage: meter
            .f64_histogram("weiche.stage.duration")
            .with_unit("s")
            .with_description("Time spent per pipeline stage and delivery")
            .with_boundaries(BUCKETS.to_vec())
            .build(),
        purged: counter(
            "weiche.purged",
            "{row}",
            "Rows purged by retention, by kind",
        ),
        overdue: meter
            .i64_gauge("weiche.retention.overdue")
            .with_unit("{row}")
            .with_description("Rows past their retention kept by the last purge, by kind")
            .build(),
    };
    // Gauges already known are exported once the reader collects, not only on their next change.
    for (recipient, depth) in &state().outbox {
        instruments
            .outbox
            .record(*depth, &[KeyValue::new("recipient", recipient.clone())]);
    }
    OTEL.store(Some(Arc::new(instruments)));
}

/// Stops mirroring into OpenTelemetry (the exporter is being shut down).
pub(crate) fn uninstall() {
    OTEL.store(None);
}

fn otel(f: impl FnOnce(&Instruments)) {
    if let Some(i) = OTEL.load().as_deref() {
        f(i);
    }
}

/// What one delivery that got a receipt adds to the counters: plain counts, filled in by the
/// ingest stage from its receipt.
#[derive(Debug, Default)]
pub struct DeliveryCounts<'a> {
    /// The receipt status (`E1`…`E4`).
    pub status: &'a str,
    /// Records received.
    pub received: u64,
    /// Records accepted.
    pub accepted: u64,
    /// Rejected records by the catalogue code of their first error.
    pub rejected: BTreeMap<String, u64>,
    /// Records routed, by recipient.
    pub routed: Option<&'a BTreeMap<String, u64>>,
}

/// Counts a delivery that got a receipt (records received, accepted, rejected by code, routed
/// per recipient, and the delivery by status).
pub fn delivery(counts: &DeliveryCounts<'_>) {
    let routed = counts.routed.into_iter().flatten();
    {
        let mut s = state();
        s.received += counts.received;
        s.accepted += counts.accepted;
        for (code, n) in &counts.rejected {
            *s.rejected.entry(code.clone()).or_default() += n;
        }
        for (recipient, n) in routed.clone() {
            *s.routed.entry(recipient.clone()).or_default() += n;
        }
    }
    otel(|i| {
        i.received.add(counts.received, &[]);
        i.accepted.add(counts.accepted, &[]);
        for (code, n) in &counts.rejected {
            i.rejected.add(*n, &[KeyValue::new("code", code.clone())]);
        }
        for (recipient, n) in routed {
            i.routed
                .add(*n, &[KeyValue::new("recipient", recipient.clone())]);
        }
    });
    delivery_status(counts.status);
}

/// Counts a repeated delivery answered with the first one's receipt: only as a delivery with
/// status `S100`.
pub fn delivery_duplicate() {
    delivery_status(Code::S100.as_str());
}

/// Counts a delivery answered with an error body (`status` = its catalogue code).
pub fn delivery_failed(code: Code) {
    delivery_status(code.as_str());
}

fn delivery_status(status: &str) {
    *state().deliveries.entry(status.to_string()).or_default() += 1;
    otel(|i| {
        i.deliveries
            .add(1, &[KeyValue::new("status", status.to_string())]);
    });
}

/// Counts a delivery whose store transaction began while its pipeline still ran.
pub fn early_write() {
    state().early_writes += 1;
    otel(|i| i.early_writes.add(1, &[]));
}

/// Counts one push attempt with its outcome (one of [`PUSH_OUTCOMES`]).
pub fn push_attempt(outcome: &str) {
    *state().push.entry(outcome.to_string()).or_default() += 1;
    otel(|i| {
        i.push
            .add(1, &[KeyValue::new("outcome", outcome.to_string())]);
    });
}

/// Sets the number of open items of a recipient.
pub fn outbox_depth(recipient: &str, depth: i64) {
    state().outbox.insert(recipient.to_string(), depth);
    otel(|i| {
        i.outbox
            .record(depth, &[KeyValue::new("recipient", recipient.to_string())]);
    });
}

/// Counts rows purged by retention (`kind`: one of [`PURGE_KINDS`]).
pub fn purged(kind: &str, rows: u64) {
    if rows == 0 {
        return;
    }
    *state().purged.entry(kind.to_string()).or_default() += rows;
    otel(|i| {
        i.purged
            .add(rows, &[KeyValue::new("kind", kind.to_string())]);
    });
}

/// Sets the number of rows past their retention that the last purge kept (`kind`: `items` or
/// `records`).
pub fn retention_overdue(kind: &str, rows: i64) {
    state().overdue.insert(kind.to_string(), rows);
    otel(|i| {
        i.overdue
            .record(rows, &[KeyValue::new("kind", kind.to_string())]);
    });
}

/// Records the time one delivery (or sealing round) spent in a stage (one of [`STAGES`]).
pub fn stage(stage: &str, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    {
        let mut s = state();
        let h = s.stages.entry(stage.to_string()).or_default();
        let bucket = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        h.buckets[bucket] += 1;
        h.count += 1;
        h.sum += secs;
    }
    otel(|i| {
        i.stage
            .record(secs, &[KeyValue::new("stage", stage.to_string())]);
    });
}

/// A label value escaped for the text format.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn family<V: std::fmt::Display>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    label: &str,
    series: &BTreeMap<String, V>,
) {
    header(out, name, kind, help);
    for (value, n) in series {
        let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {n}", escape(value));
    }
}

/// Content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric in the Prometheus text exposition format 0.0.4.
pub fn render() -> String {
    let s = state();
    let mut out = String::with_capacity(4096);
    header(
        &mut out,
        "weiche_records_received_total",
        "counter",
        "Records received in deliveries.",
    );
    let _ = writeln!(out, "weiche_records_received_total {}", s.received);
    header(
        &mut out,
        "weiche_records_accepted_total",
        "counter",
        "Records accepted in deliveries.",
    );
    let _ = writeln!(out, "weiche_records_accepted_total {}", s.accepted);
    family(
        &mut out,
        "weiche_records_rejected_total",
        "counter",
        "Records rejected, by the code of their first error.",
        "code",
        &s.rejected,
    );
    family(
        &mut out,
        "weiche_records_routed_total",
        "counter",
        "Records routed, by recipient.",
        "recipient",
        &s.routed,
    );
    family(
        &mut out,
        "weiche_push_attempts_total",
        "counter",
        "Push delivery attempts, by outcome.",
        "outcome",
        &s.push,
    );
    family(
        &mut out,
        "weiche_deliveries_total",
        "counter",
        "Deliveries answered, by receipt status or error code.",
        "status",
        &s.deliveries,
    );
    header(
        &mut out,
        "weiche_early_writes_total",
        "counter",
        "Deliveries whose store transaction began while their pipeline still ran.",
    );
    let _ = writeln!(out, "weiche_early_writes_total {}", s.early_writes);
    family(
        &mut out,
        "weiche_outbox_depth",
        "gauge",
        "Open items not yet sealed into a batch, by recipient.",
        "recipient",
        &s.outbox,
    );
    family(
        &mut out,
        "weiche_purged_total",
        "counter",
        "Rows purged by retention, by kind.",
        "kind",
        &s.purged,
    );
    family(
        &mut out,
        "weiche_retention_overdue",
        "gauge",
        "Rows past their retention kept by the last purge, by kind.",
        "kind",
        &s.overdue,
    );
    header(
        &mut out,
        "weiche_stage_seconds",
        "histogram",
        "Time spent per pipeline stage and delivery.",
    );
    for (stage, h) in &s.stages {
        let stage = escape(stage);
        let mut cumulative = 0;
        for (i, n) in h.buckets.iter().enumerate() {
            cumulative += n;
            let le = BUCKETS
                .get(i)
                .map(|b| b.to_string())
                .unwrap_or_else(|| "+Inf".to_string());
            let _ = writeln!(
                out,
                "weiche_stage_seconds_bucket{{stage=\"{stage}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "weiche_stage_seconds_sum{{stage=\"{stage}\"}} {}",
            h.sum
        );
        let _ = writeln!(
            out,
            "weiche_stage_seconds_count{{stage=\"{stage}\"}} {}",
            h.count
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn renders_declared_families() {
        stage("validate", Duration::from_millis(3));
        let text = render();
        for name in [
            "# TYPE weiche_records_received_total counter",
            "# TYPE weiche_records_rejected_total counter",
            "# TYPE weiche_outbox_depth gauge",
            "# TYPE weiche_stage_seconds histogram",
            "weiche_push_attempts_total{outcome=\"success\"} 0",
            "weiche_stage_seconds_bucket{stage=\"validate\",le=\"+Inf\"}",
            "weiche_stage_seconds_count{stage=\"deliver\"}",
            "# TYPE weiche_purged_total counter",
            "weiche_purged_total{kind=\"records\"}",
            "# TYPE weiche_retention_overdue gauge",
            "# TYPE weiche_early_writes_total counter",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
        assert!(text.contains("weiche_stage_seconds_bucket{stage=\"validate\",le=\"0.005\"} "));
    }
}
