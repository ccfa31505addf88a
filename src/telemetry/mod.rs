//! Logging, traces and metrics. Log lines, spans and metrics carry ids, refs, codes and counts
//! only: personal data sits in [`crate::model::Personal`], whose `Debug` is redacted, and no code
//! logs bodies or values.
//!
//! * Logs: JSON lines when stderr is not a terminal, readable lines when it is. Level from
//!   `WEICHE_LOG` (or `RUST_LOG`), default `info`.
//! * Metrics: [`metrics`], rendered at `GET /metrics` (Prometheus text) and, when OTLP is
//!   configured, exported as OpenTelemetry metrics (the name mapping is in [`metrics`]).
//! * Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (e.g. `http://127.0.0.1:4318`), Weiche's
//!   spans go by OTLP/HTTP (JSON) to `<endpoint>/v1/traces` and metrics to `<endpoint>/v1/metrics`,
//!   service name `weiche` ([`otlp`] has the details). Unset: nothing is exported.
//!
//! Spans of one delivery (`ingest` is the parent of the others, all in one trace):
//!
//! | span | covers | attributes |
//! |---|---|---|
//! | `ingest` | the whole delivery, request body to receipt | `weiche.delivery_id`, `weiche.vendor`, `weiche.format` |
//! | `adapt` | the mapping engine over the whole body | `weiche.delivery_id`, `weiche.format`, `weiche.stage_seconds` |
//! | `validate` | entered per record around validation | `weiche.delivery_id`, `weiche.records`, `weiche.stage_seconds` |
//! | `route` | entered per record around routing | `weiche.delivery_id`, `weiche.records`, `weiche.stage_seconds` |
//! | `store` | writing the records and committing the delivery | `weiche.delivery_id` |
//!
//! `weiche.stage_seconds` is the stage's cumulative time within the delivery (`adapt` without
//! the time of validation, routing and handing records to the store). The batch sealer records a
//! `deliver` span (attributes `weiche.open_items`, `weiche.batches`) for each round that found
//! open items.

pub mod metrics;
mod otlp;

use arc_swap::ArcSwapOption;
use std::future::Future;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The service name in exported telemetry.
pub const SERVICE_NAME: &str = "weiche";

/// The standard variable naming the OTLP endpoint.
pub const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Installs the global subscriber for logging only (once; later calls are ignored).
pub fn init() {
    let _ = install_subscriber(None);
}

/// Installs logging and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the OTLP export of traces
/// and metrics. Keep the guard for as long as the process runs: dropping it flushes and stops
/// the export.
pub fn init_from_env() -> Telemetry {
    let endpoint = std::env::var(ENDPOINT_VAR)
        .ok()
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty());
    init_with(endpoint.as_deref())
}

/// Installs logging and, with `Some(endpoint)` (e.g. `http://127.0.0.1:4318`), the OTLP export
/// of traces and metrics to it. The global subscriber is installed once per process; a later
/// call still (re)installs the metric export.
pub fn init_with(endpoint: Option<&str>) -> Telemetry {
    let (pipeline, problem) = match endpoint.map(otlp::build) {
        None => (None, None),
        Some(Ok(p)) => (Some(p), None),
        Some(Err(e)) => (None, Some(e)),
    };
    let tracer = pipeline.as_ref().map(|p| {
        use opentelemetry::trace::TracerProvider as _;
        p.tracer.tracer(SERVICE_NAME)
    });
    if let Some(t) = &tracer {
        TRACER.store(Some(Arc::new(t.clone())));
    }
    let installed = install_subscriber(tracer);
    if let Some(p) = &pipeline {
        use opentelemetry::metrics::MeterProvider as _;
        metrics::install(&p.meter.meter(SERVICE_NAME));
        if !installed {
            tracing::warn!("a subscriber was installed before: spans are not exported");
        }
        tracing::info!(
            endpoint = endpoint.unwrap_or_default(),
            "exporting traces and metrics by OTLP/HTTP"
        );
    }
    if let Some(e) = problem {
        tracing::warn!("OTLP export disabled: {e}");
    }
    Telemetry { pipeline }
}

/// Installs the global subscriber; false when one was installed before.
fn install_subscriber(tracer: Option<opentelemetry_sdk::trace::Tracer>) -> bool {
    let filter = std::env::var("WEICHE_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".to_string());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (plain, json) = if std::io::stderr().is_terminal() {
        (
            Some(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)),
            None,
        )
    } else {
        (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            ),
        )
    };
    // Only Weiche's own spans and events go to OpenTelemetry (not those of the libraries, and
    // so never those of the exporter's own HTTP requests).
    let otel = tracer.map(|t| {
        tracing_opentelemetry::layer().with_tracer(t).with_filter(
            tracing_subscriber::filter::filter_fn(|m| m.target().starts_with("weiche")),
        )
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(plain)
        .with(json)
        .with(otel)
        .try_init()
        .is_ok()
}

/// The running telemetry export; flushes and stops it on drop (or [`Telemetry::shutdown`]).
#[must_use = "dropping the guard stops the export"]
pub struct Telemetry {
    pipeline: Option<otlp::Pipeline>,
}

impl Telemetry {
    /// Whether traces and metrics are exported.
    pub fn exporting(&self) -> bool {
        self.pipeline.is_some()
    }

    /// Exports every finished span and the current metrics now (blocks until done).
    pub fn flush(&self) -> Result<(), String> {
        let Some(p) = &self.pipeline else {
            return Ok(());
        };
        let traces = p.tracer.force_flush();
        let metrics = p.meter.force_flush();
        traces
            .map_err(|e| format!("flushing spans failed: {e}"))
            .and(metrics.map_err(|e| format!("flushing metrics failed: {e}")))
    }

    /// Flushes and stops the export (blocks until done).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(p) = self.pipeline.take() {
            metrics::uninstall();
            TRACER.store(None);
            if let Err(e) = p.tracer.shutdown() {
                eprintln!("OTLP span export shutdown: {e}");
            }
            if let Err(e) = p.meter.shutdown() {
                eprintln!("OTLP metric export shutdown: {e}");
            }
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The tracer of the OTLP export, for spans recorded after the fact.
static TRACER: ArcSwapOption<opentelemetry_sdk::trace::Tracer> = ArcSwapOption::const_empty();

/// Exports a root span that started at `start` and ends now, when OTLP export is on; for work
/// that is worth a span only once its result is known (e.g. a sealing round that sealed batches).
pub fn finished_span(name: &'static str, start: SystemTime, attributes: &[(&'static str, i64)]) {
    use opentelemetry::trace::{Span as _, Tracer as _};
    if let Some(tracer) = TRACER.load().as_deref() {
        let mut span = tracer
            .span_builder(name)
            .with_start_time(start)
            .with_attributes(
                attributes
                    .iter()
                    .map(|(k, v)| opentelemetry::KeyValue::new(*k, *v)),
            )
            .start(tracer);
        span.end();
    }
}

/// Cumulative time of one stage across tasks; observed into `weiche_stage_seconds` once, when
/// the last clone is dropped (nothing when no time was measured).
#[derive(Clone)]
pub struct StageClock(Arc<ClockInner>);

struct ClockInner {
    stage: &'static str,
    nanos: AtomicU64,
}

impl Drop for ClockInner {
    fn drop(&mut self) {
        let nanos = *self.nanos.get_mut();
        if nanos > 0 {
            metrics::stage(self.stage, Duration::from_nanos(nanos));
        }
    }
}

/// Adds the time from [`StageClock::start`] to its clock when dropped.
pub struct ClockGuard<'a> {
    clock: &'a ClockInner,
    started: Instant,
}

impl Drop for ClockGuard<'_> {
    fn drop(&mut self) {
        let nanos = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.clock.nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl StageClock {
    /// A clock for a stage (one of [`metrics::STAGES`]).
    pub fn new(stage: &'static str) -> Self {
        StageClock(Arc::new(ClockInner {
            stage,
            nanos: AtomicU64::new(0),
        }))
    }

    /// Measures until the guard is dropped.
    pub fn start(&self) -> ClockGuard<'_> {
        ClockGuard {
            clock: &self.0,
            started: Instant::now(),
        }
    }

    /// Measures a future's wall time to its completion.
    pub async fn time<F: Future>(&self, fut: F) -> F::Output {
        let _timed = self.start();
        fut.await
    }
}
