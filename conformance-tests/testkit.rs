//! Test kit: the real server on port 0 with a fresh database and known principals, and
//! generated klidas-json deliveries. A module of `tests/suite/` (and of the benches and the
//! test binaries apart from it, by `#[path]`), next to `support`.
#![allow(dead_code)]

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use weiche::gateway::Gateway;

/// Plain tokens of the test principals.
pub const VENDOR_TOKEN: &str = "vendor-token-0123456789abcdef0123456789abcdef";
pub const OTHER_VENDOR_TOKEN: &str = "other-vendor-token-0123456789abcdef0123456789";
pub const STATS_TOKEN: &str = "statistik-token-0123456789abcdef0123456789abcd";
pub const OTHER_STATS_TOKEN: &str = "statistik-zwei-token-0123456789abcdef01234567";
pub const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef0123456789abcdef01";

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sha(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Writes a configuration for the test principals into `dir` and returns its path. The
/// policies are the shipped ones with batches sealed at once, plus a second statistics office.
pub fn write_config(dir: &Path, database_url: &str, extra: &str) -> PathBuf {
    write_config_with(dir, database_url, extra, &repo().join("mappings"))
}

/// Like [`write_config`], with another mappings directory.
pub fn write_config_with(dir: &Path, database_url: &str, extra: &str, mappings: &Path) -> PathBuf {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    let shipped = std::fs::read_to_string(repo().join("policies/statistik-nrw.toml")).unwrap();
    let immediate = shipped.replace("batch_max_age_secs = 2", "batch_max_age_secs = 0");
    assert_ne!(
        immediate, shipped,
        "the shipped policy sets batch_max_age_secs = 2"
    );
    std::fs::write(policies.join("statistik-nrw.toml"), &immediate).unwrap();
    std::fs::write(
        policies.join("statistik-zwei.toml"),
        immediate.replace("id = \"statistik-nrw\"", "id = \"statistik-zwei\""),
    )
    .unwrap();
    std::fs::write(dir.join("key1.hex"), "11".repeat(32)).unwrap();
    std::fs::write(dir.join("key2.hex"), "22".repeat(32)).unwrap();
    let config = format!(
        r#"
listen = "127.0.0.1:0"
data_dir = "{data}"
database_url = "{database_url}"
mappings_dir = "{mappings}"
policies_dir = "{policies}"
schemas_dir = "{schemas}"
{extra}

[[vendors]]
id = "demo-vendor"
token = {{ sha256 = "{v}" }}
formats = ["klidas-json", "xsozial-lieferung", "fallwerk-csv"]
default_format = "klidas-json"

[[vendors]]
id = "other-vendor"
token = {{ sha256 = "{ov}" }}
formats = ["klidas-json"]

[[recipients]]
id = "statistik-nrw"
token = {{ sha256 = "{s}" }}
pseudonym_keys = [{{ kid = "t1", secret = {{ file = "key1.hex" }} }}]

[[recipients]]
id = "statistik-zwei"
token = {{ sha256 = "{os}" }}
pseudonym_keys = [{{ kid = "t2", secret = {{ file = "key2.hex" }} }}]

[[admins]]
id = "admin"
token = {{ sha256 = "{a}" }}
"#,
        data = dir.join("data").display(),
        mappings = mappings.display(),
        policies = policies.display(),
        schemas = repo().join("schemas").display(),
        v = sha(VENDOR_TOKEN),
        ov = sha(OTHER_VENDOR_TOKEN),
        s = sha(STATS_TOKEN),
        os = sha(OTHER_STATS_TOKEN),
        a = sha(ADMIN_TOKEN),
    );
    let path = dir.join("weiche.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// A running server.
pub struct TestServer {
    pub base: String,
    pub gateway: Arc<Gateway>,
    pub dir: tempfile::TempDir,
    pub database_url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Starts a server on a fresh database; `None` when the backend is not available locally.
    pub async fn start(backend: Backend) -> Option<TestServer> {
        Self::start_with(backend, "").await
    }

    /// Starts with extra top-level configuration lines (e.g. `[limits]`).
    pub async fn start_with(backend: Backend, extra: &str) -> Option<TestServer> {
        Self::start_full(backend, extra, false).await
    }

    /// Starts with a private copy of the three reference mappings in `<dir>/mappings`, for tests
    /// that change mapping files while the server runs.
    pub async fn start_with_own_mappings(backend: Backend) -> Option<TestServer> {
        Self::start_full(backend, "", true).await
    }

    async fn start_full(backend: Backend, extra: &str, own_mappings: bool) -> Option<TestServer> {
        let dir = tempfile::tempdir().unwrap();
        let database_url = match backend {
            Backend::Sqlite => crate::support::fresh_sqlite_url(dir.path()),
            Backend::Postgres => crate::support::fresh_postgres_url().await?,
        };
        let mappings = if own_mappings {
            let m = dir.path().join("mappings");
            std::fs::create_dir_all(&m).unwrap();
            for f in [
                "klidas-json.toml",
                "xsozial-lieferung.toml",
                "fallwerk-csv.toml",
            ] {
                std::fs::copy(repo().join("mappings").join(f), m.join(f)).unwrap();
            }
            m
        } else {
            repo().join("mappings")
        };
        let config = write_config_with(dir.path(), &database_url, extra, &mappings);
        Some(Self::from_config(dir, &config, database_url, None).await)
    }

    /// Starts on a configuration file already written into `dir`, optionally with a pinned clock
    /// (unix milliseconds).
    pub async fn from_config(
        dir: tempfile::TempDir,
        config: &Path,
        database_url: String,
        now_ms: Option<i64>,
    ) -> TestServer {
        let (loaded, runtime) = weiche::app::load(Some(config)).unwrap_or_else(|p| {
            panic!("test configuration: {p:?}");
        });
        let mut gateway = Gateway::open(loaded).await.expect("open store");
        if let Some(ms) = now_ms {
            gateway.clock = Arc::new(weiche::clock::FixedClock(ms));
        }
        let gateway = Arc::new(gateway);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(weiche::app::serve(
            listener,
            gateway.clone(),
            runtime,
            async move {
                let _ = stopped.await;
            },
        ));
        TestServer {
            base,
            gateway,
            dir,
            database_url,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
        if self.database_url.starts_with("postgres") {
            crate::support::drop_postgres_database(&self.database_url).await;
        }
    }
}

/// Posts a klidas-json delivery as the test vendor; the status and the JSON answer (`Null` when
/// the answer is no JSON).
pub async fn post_klidas(
    c: &reqwest::Client,
    s: &TestServer,
    body: impl Into<reqwest::Body>,
) -> (reqwest::StatusCode, serde_json::Value) {
    let r = c
        .post(s.url("/api/v1/deliveries?format=klidas-json"))
        .bearer_auth(VENDOR_TOKEN)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// A klidas-json delivery of `n` valid records with ids `<prefix>-<i>`.
pub fn klidas_delivery(message_id: &str, prefix: &str, n: usize, lieferart: &str) -> String {
    let names = [
        "Müller",
        "Doğan",
        "Nowak",
        "Kowalczyk",
        "Öztürk",
        "Schmitz",
        "Bondarenko",
    ];
    let faelle: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "fallId": format!("{prefix}-{i}"),
                "fachbereich": if i % 3 == 0 { "SGB II" } else { "Suchthilfe" },
                "eroeffnet": "2026-01-05",
                "abgeschlossen": null,
                "team": "Team Nord",
                "klient": {
                    "id": format!("KL-{prefix}-{i}"),
                    "name": { "familienname": names[i % names.len()], "vornamen": ["Anna", "Maria"] },
                    "geburtsdatum": format!("19{:02}-0{}-1{}", 50 + i % 49, 1 + i % 9, i % 10),
                    "geschlecht": if i % 2 == 0 { "weiblich" } else { "maennlich" },
                    "staatsangehoerigkeit": "DEU",
                    "adresse": { "strasse": "Hauptstraße", "hausnummer": "1", "plz": "50667",
                                 "ags": "05315000", "sozialraum": "Altstadt" },
                    "kontakt": { "telefon": "0221 555000", "email": "x@example.org" },
                    "bedarfsgemeinschaft": null,
                    "schulabschluss": "Realschulabschluss",
                    "erwerb": "arbeitslos"
                },
                "leistungen": [
                    { "code": "BER", "rechtsgrundlage": "SGB II § 16a", "von": "2026-02-01", "bis": null, "stundenProWoche": 2 }
                ],
                "schutzbedarf": null,
                "einwilligungen": []
            })
        })
        .collect();
    serde_json::json!({
        "klidas": "1.0",
        "uebermittlung": { "id": message_id, "erstellt": "2026-11-02T16:20:05+01:00",
                           "absender": "Test", "lieferart": lieferart, "berichtsmonat": "2026-10" },
        "faelle": faelle
    })
    .to_string()
}
