//! Weiche — an interoperability gateway for the German social sector.
//!
//! Vendors' case-management exports come in over HTTPS, are translated by administrator-edited
//! mapping files into one canonical client-data model, validated, filtered per recipient by policy
//! and consent, stored, and routed to the statistics office (pull), job centres and partner
//! agencies (push), with receipts back to the vendor.
//!
//! # Layout
//!
//! The module tree reads like the data flow:
//!
//! | module | owns |
//! |---|---|
//! | [`ingest`] | one delivery from body stream to receipt: limits, idempotency, the pipeline driver |
//! | [`lifecycle`] | what changes what recipients hold: cancellation, revocation, withdrawal, erasure |
//! | [`adapt`] | mapping files and the format engines that turn vendor bytes into [`adapt::Draft`]s |
//! | [`validate`] | the canonical JSON Schema and code lists; parses drafts into [`model::CanonicalRecord`] |
//! | [`consent`] | recipient policies, consent checks, field actions, pseudonyms, aggregates |
//! | [`route`] | which accepted record goes to which recipient, and in what shape |
//! | [`deliver`] | getting items out: sealing batches, rendering them (JSON, NDJSON, XML, CSV), push lanes |
//! | [`store`] | the storage traits, their values, the audit hash chain as stored, the SQL both backends share, and the SQLite and PostgreSQL implementations |
//! | [`audit`] | the audit trail's events, the verification of a store's chain and the disclosure report |
//! | [`retention`] | purging old records, outputs, receipts and audit events; PostgreSQL partitions |
//! | [`api`] | the HTTP surface (actix-web): authentication, parsing, answers and their HTTP status |
//! | [`app`] | the composition root: builds TLS, push clients and the gateway, runs server and workers |
//! | [`gateway`] | the assembled stages, store and clock shared by every request |
//! | [`config`] | the settings: configuration file, environment overrides, embedded defaults, principals |
//! | [`tls`] | rustls for the server and the push clients (BSI TR-02102-2 suites, client certificates) |
//! | [`telemetry`] | logs, metrics and OTLP traces (no personal data: see [`model::Personal`]) |
//! | [`cli`] | the `weiche` command line |
//!
//! Shared vocabulary: [`model`] (canonical types), [`catalogue`] (the spec's error codes) and
//! [`clock`] (now, the Berlin day, RFC 3339).
//!
//! Lower layers never import higher ones (docs/architecture.md, "Layers"); a test in
//! `src/layering.rs` reads the imports of `src/` and fails when one does.

pub mod adapt;
pub mod api;
pub mod app;
pub mod audit;
pub mod catalogue;
pub mod cli;
pub mod clock;
pub mod config;
pub mod consent;
pub mod deliver;
pub mod gateway;
pub mod ingest;
pub mod lifecycle;
pub mod model;
pub mod retention;
pub mod route;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod validate;

#[cfg(test)]
mod layering;
