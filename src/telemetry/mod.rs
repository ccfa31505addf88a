//! Logging set-up. Log lines carry ids, refs and counts only: personal data sits in
//! [`crate::model::Personal`], whose `Debug` is redacted, and no code logs bodies or values.
//! JSON lines when stderr is not a terminal, readable lines when it is. Level from `WEICHE_LOG`
//! (or `RUST_LOG`), default `info`.

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber (once; later calls are ignored).
pub fn init() {
    let filter = std::env::var("WEICHE_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".to_string());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if std::io::stderr().is_terminal() {
        builder.try_init()
    } else {
        builder.json().flatten_event(true).try_init()
    };
}
