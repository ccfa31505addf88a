//! Shared test support: fresh, isolated databases for tests that need a store.
//!
//! Reuse from another test file with
//! `#[path = "../conformance-tests/support/mod.rs"] mod support;` (or `mod support;` from a test
//! crate in `conformance-tests/`).

use sqlx::Connection;
use std::sync::Once;

/// Environment variable naming an administrative PostgreSQL URL (one that may create databases).
#[allow(dead_code)]
pub const POSTGRES_URL_VAR: &str = "WEICHE_TEST_POSTGRES_URL";

/// A SQLite URL for a fresh database file inside `dir` (the store creates the file).
#[allow(dead_code)]
pub fn fresh_sqlite_url(dir: &std::path::Path) -> String {
    let file = dir.join(format!("weiche-{}.db", uuid::Uuid::new_v4().simple()));
    format!("sqlite://{}", file.display())
}

/// Creates a fresh, empty PostgreSQL database `weiche_t_<uuid>` through the admin URL in
/// `WEICHE_TEST_POSTGRES_URL` and returns the URL of the new database.
///
/// `WEICHE_TEST_BACKEND=sqlite` deselects PostgreSQL for the run (CI runs the suite once per
/// backend). Without the variable: panics when `CI=true` (PostgreSQL tests must not be skipped in CI),
/// otherwise prints a one-line notice to stderr (once per test process) and returns `None`.
#[allow(dead_code)]
pub async fn fresh_postgres_url() -> Option<String> {
    if std::env::var("WEICHE_TEST_BACKEND").is_ok_and(|b| b == "sqlite") {
        static CHOSEN: Once = Once::new();
        CHOSEN.call_once(|| {
            eprintln!("PostgreSQL tests not selected in this run (WEICHE_TEST_BACKEND=sqlite)");
        });
        return None;
    }
    let admin = match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{POSTGRES_URL_VAR} must be set in CI: PostgreSQL tests may not be skipped");
            }
            static NOTICE: Once = Once::new();
            NOTICE.call_once(|| {
                eprintln!("PostgreSQL contract tests skipped: set {POSTGRES_URL_VAR}");
            });
            return None;
        }
    };
    let name = format!("weiche_t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {POSTGRES_URL_VAR}: {e}"));
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
    let _ = conn.close().await;
    Some(with_database(&admin, &name))
}

/// Drops a database made by [`fresh_postgres_url`] (best effort; open connections are
/// terminated).
#[allow(dead_code)]
pub async fn drop_postgres_database(url: &str) {
    let Ok(admin) = std::env::var(POSTGRES_URL_VAR) else {
        return;
    };
    let Some(name) = database_of(url) else {
        return;
    };
    if !name.starts_with("weiche_t_") {
        return;
    }
    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut conn)
            .await;
        let _ = conn.close().await;
    }
}

/// Byte range of the database path segment (after the authority, before any query) of a URL.
#[allow(dead_code)]
fn database_span(url: &str) -> (usize, usize) {
    let end = url.find('?').unwrap_or(url.len());
    let authority = url.find("://").map_or(0, |i| i + 3);
    match url[authority..end].find('/') {
        Some(slash) => (authority + slash, end),
        None => (end, end),
    }
}

/// The URL with its database replaced by `database`.
#[allow(dead_code)]
fn with_database(url: &str, database: &str) -> String {
    let (start, end) = database_span(url);
    format!("{}/{database}{}", &url[..start], &url[end..])
}

/// The database a URL names.
#[allow(dead_code)]
fn database_of(url: &str) -> Option<String> {
    let (start, end) = database_span(url);
    let path = url.get(start + 1..end)?;
    (!path.is_empty()).then(|| path.to_string())
}
