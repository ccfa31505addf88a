//! Weiche's integration tests, in one test binary.
//!
//! One binary links once instead of once per file, and its slow tests (the 60 s trickle of
//! `fairness`, the crash and outage scripts, the golden cases) overlap with the rest instead of
//! running one file after another. Run one file's tests with its module name as the filter:
//! `cargo test --test suite fairness::`.
//!
//! Two files stay binaries of their own, because each installs the process-wide tracing
//! subscriber: `tests/hostile.rs` (it captures every log line at trace level) and
//! `tests/telemetry.rs` (OTLP export).
//!
//! The golden cases, the crash test and the store contract live in `conformance-tests/` with the
//! helpers every file shares.

#[path = "../../fuzz/common.rs"]
mod fuzz_common;
#[path = "../../conformance-tests/pushkit.rs"]
mod pushkit;
#[path = "../../conformance-tests/support/mod.rs"]
mod support;
#[path = "../../conformance-tests/testkit.rs"]
mod testkit;

#[path = "../../conformance-tests/harness.rs"]
mod conformance;
#[path = "../../conformance-tests/crash.rs"]
mod crash;
#[path = "../../conformance-tests/store_contract.rs"]
mod store_contract;

mod authz;
mod batch_formats;
mod browser;
mod consent;
mod console;
mod console_alerts;
mod console_api;
mod console_push;
mod early_write;
mod erasure;
mod fairness;
mod feedback;
mod fuzz_corpus;
mod instances;
mod mappings;
mod openapi;
mod operator_messages;
mod properties;
mod push;
mod ratelimit;
mod receipt_messages;
mod server;
mod tls;
