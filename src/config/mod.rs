//! Configuration: one TOML file, environment overrides, secrets from files or the environment,
//! and embedded defaults so that `weiche serve` with no arguments runs a complete demo.
//!
//! [`load`] reads and checks the settings — the file, the principals and their secrets, the
//! mappings, the policies, the canonical schema and code lists — and returns either a [`Loaded`]
//! configuration or every [`Problem`] found, each with file and line. It builds no runtime
//! object: TLS configurations, push clients, the gateway and its workers are assembled by the
//! composition root ([`crate::app`]), which `weiche check` and `weiche serve` share, so they can
//! never disagree; `weiche purge` and `weiche audit verify` use the settings alone.

mod permissions;
mod principals;
pub mod push;

pub use principals::{AuthMode, Principal, Principals, Role, parse_fingerprint};

use crate::adapt::MappingSet;
use crate::consent::policy::DeliveryKind;
use crate::consent::{Policy, PseudonymKey};
use crate::route::{Recipient, Router};
use crate::validate::Validator;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The configuration built into the binary.
pub const DEMO_CONFIG: &str = include_str!("demo.toml");

/// The policies shipped in `policies/`, built into the binary.
pub const EMBEDDED_POLICIES: &[(&str, &str)] = &[(
    "statistik-nrw.toml",
    include_str!("../../policies/statistik-nrw.toml"),
)];

/// A configuration file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Socket address to listen on (env `WEICHE_LISTEN`).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// HTTPS (and, with `client_ca`, client certificates). Without it the server speaks plain
    /// HTTP, which is allowed only on a loopback `listen` address unless `allow_plain_http`.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Allow plain HTTP on a non-loopback `listen` address without `[tls]` — only for running
    /// behind a TLS-terminating proxy (env `WEICHE_ALLOW_PLAIN_HTTP=true`).
    #[serde(default)]
    pub allow_plain_http: bool,
    /// Directory for the SQLite database and generated demo secrets (env `WEICHE_DATA_DIR`).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; default `sqlite://<data_dir>/weiche.db`
    /// (env `WEICHE_DATABASE_URL`).
    #[serde(default)]
    pub database_url: Option<String>,
    /// Directory of mapping files; default `./mappings` if present, else the built-in ones
    /// (env `WEICHE_MAPPINGS_DIR`).
    #[serde(default)]
    pub mappings_dir: Option<PathBuf>,
    /// Directory of recipient policies; default `./policies` if present, else the built-in ones
    /// (env `WEICHE_POLICIES_DIR`).
    #[serde(default)]
    pub policies_dir: Option<PathBuf>,
    /// Directory with `canonical-record.schema.json` and `codelists/`; default `./schemas` if
    /// present, else the built-in ones (env `WEICHE_SCHEMAS_DIR`).
    #[serde(default)]
    pub schemas_dir: Option<PathBuf>,
    /// Input limits.
    #[serde(default)]
    pub limits: Limits,
    /// Vendors that post deliveries.
    #[serde(default)]
    pub vendors: Vec<VendorConfig>,
    /// Recipients (each needs a policy file with the same id).
    #[serde(default)]
    pub recipients: Vec<RecipientConfig>,
    /// Administrators.
    #[serde(default)]
    pub admins: Vec<AdminConfig>,
    /// Key (hex, ≥ 32 bytes) that pseudonymises data subjects in the audit trail; default: the
    /// file `audit.key` in data_dir, generated on first start.
    #[serde(default)]
    pub audit_key: Option<SecretSource>,
    /// The push workers (lease and polling of push recipients' lanes).
    #[serde(default)]
    pub push: push::PushWorkerConfig,
    /// How long stored data is kept before it is purged.
    #[serde(default)]
    pub retention: Retention,
    /// Alert webhooks (`[alerts.<kind>]`), signed like push deliveries.
    #[serde(default)]
    pub alerts: AlertsConfig,
}

/// The `[alerts]` section: one webhook per alert kind, each with the settings of a push
/// endpoint (`url`, `ca_file`, `client_cert_file`/`client_key_file`, `secret`, `timeout_secs`);
/// the notice is a signed JSON POST like a push delivery (docs/console.md, "Alerts").
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// A mapping file failed to load (the previous version, if any, stays in service).
    #[serde(default)]
    pub mapping_failed: Option<push::PushConfig>,
    /// A push group became a dead letter.
    #[serde(default)]
    pub dead_letter: Option<push::PushConfig>,
}

/// The `[retention]` section: how long stored data is kept. `0` keeps it forever. Purging runs
/// at start-up and every hour (docs/operations.md "Retention").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Stored canonical records are purged this many months after the end of their reporting
    /// period (24: a record of 2024-10 goes at the start of 2026-11, Europe/Berlin).
    #[serde(default = "default_records_months")]
    pub records_months: u32,
    /// Output items, and the batches they were sealed into, are purged this many days after the
    /// item was created, once delivered (its batch acknowledged); undelivered items are kept. On
    /// PostgreSQL a whole month of items goes at once, when the last of them is due and all are
    /// delivered.
    #[serde(default = "default_outputs_days")]
    pub outputs_days: u32,
    /// Audit events are purged this many months after they were written, oldest first. Must be
    /// at least `records_months` and cover `outputs_days`, so the trail outlives what it records.
    #[serde(default = "default_audit_months")]
    pub audit_months: u32,
    /// Delivery receipts (and with them the idempotency keys) are purged this many days after
    /// the delivery was received.
    #[serde(default = "default_receipts_days")]
    pub receipts_days: u32,
}

fn default_records_months() -> u32 {
    24
}

fn default_outputs_days() -> u32 {
    90
}

fn default_audit_months() -> u32 {
    120
}

fn default_receipts_days() -> u32 {
    365
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            records_months: default_records_months(),
            outputs_days: default_outputs_days(),
            audit_months: default_audit_months(),
            receipts_days: default_receipts_days(),
        }
    }
}

impl Retention {
    /// Keeps everything forever (every period 0).
    pub fn forever() -> Self {
        Retention {
            records_months: 0,
            outputs_days: 0,
            audit_months: 0,
            receipts_days: 0,
        }
    }

    /// What is wrong with the periods: audit events must be kept at least as long as the
    /// records and outputs they are about.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.audit_months == 0 {
            return problems;
        }
        if self.records_months == 0 || self.records_months > self.audit_months {
            problems.push(format!(
                "[retention] audit_months = {} is shorter than records_months = {}{}: audit \
                 events must be kept at least as long as the records (raise audit_months or set \
                 it to 0 = forever)",
                self.audit_months,
                self.records_months,
                if self.records_months == 0 {
                    " (forever)"
                } else {
                    ""
                }
            ));
        }
        if self.outputs_days == 0
            || u64::from(self.outputs_days) > u64::from(self.audit_months) * 28
        {
            problems.push(format!(
                "[retention] audit_months = {} does not cover outputs_days = {}{}: audit events \
                 must be kept at least as long as the outputs (raise audit_months or set it to 0 \
                 = forever)",
                self.audit_months,
                self.outputs_days,
                if self.outputs_days == 0 {
                    " (forever)"
                } else {
                    ""
                }
            ));
        }
        problems
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

/// The `[tls]` section: PEM files, relative paths against the configuration file's directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Server certificate chain (PEM, leaf first). Re-read when the file changes.
    pub cert: PathBuf,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1). Re-read when it changes.
    pub key: PathBuf,
    /// CA certificates (PEM) that sign vendors' client certificates. When set, the server asks
    /// for a client certificate and verifies it against these; callers without one still
    /// connect and authenticate by token.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// TLS settings after loading: absolute (or working-directory relative) paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// Client CA certificates (PEM).
    pub client_ca: Option<PathBuf>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}

/// Input limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest accepted body in bytes (`L001`; env `WEICHE_MAX_BODY_BYTES`).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    /// Most records in one delivery (`L002`; env `WEICHE_MAX_RECORDS`).
    #[serde(default = "default_max_records")]
    pub max_records: u64,
    /// A delivery body that sends nothing for this many seconds is given up (slow clients must
    /// not hold a delivery open).
    #[serde(default = "default_body_idle")]
    pub body_idle_timeout_secs: u64,
    /// An idle keep-alive connection is closed after this many seconds. Longer than the idle
    /// timeout of the load balancer or proxy in front (often 60 s), so that the proxy, not
    /// Weiche, closes idle connections: otherwise a request the proxy sends on a connection
    /// Weiche is just closing meets a reset. `0` turns keep-alive off.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u64,
    // --- rate limits (src/api/ratelimit.rs) ---
    /// Requests per second each authenticated principal may make on average; above it (once
    /// `burst` is used up) the answer is `429 R429` with `Retry-After`. `0` turns the limit off.
    #[serde(default = "default_requests_per_second")]
    pub requests_per_second: u32,
    /// Requests a principal may make at once on top of the average rate (the bucket size;
    /// at least 1).
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Failed authentications (`401 T070`) per second from one client address (IPv6: one /64)
    /// on average, before further failures answer `429 R429`; requests with valid credentials
    /// are never counted. `0` turns the limit off.
    #[serde(default = "default_failed_auth_per_second")]
    pub failed_auth_per_second: u32,
    /// Failed authentications one client address may have at once on top of
    /// `failed_auth_per_second` (at least 1).
    #[serde(default = "default_failed_auth_burst")]
    pub failed_auth_burst: u32,
}

fn default_body_idle() -> u64 {
    30
}

fn default_keep_alive() -> u64 {
    75
}

fn default_requests_per_second() -> u32 {
    1_000
}

fn default_burst() -> u32 {
    5_000
}

fn default_failed_auth_per_second() -> u32 {
    50
}

fn default_failed_auth_burst() -> u32 {
    1_000
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: default_max_body(),
            max_records: default_max_records(),
            body_idle_timeout_secs: default_body_idle(),
            keep_alive_secs: default_keep_alive(),
            requests_per_second: default_requests_per_second(),
            burst: default_burst(),
            failed_auth_per_second: default_failed_auth_per_second(),
            failed_auth_burst: default_failed_auth_burst(),
        }
    }
}

fn default_max_body() -> u64 {
    1 << 30
}

fn default_max_records() -> u64 {
    2_000_000
}

/// Where a secret comes from: exactly one of `file`, `env`, `sha256` (tokens only).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// A file holding the secret (trailing white space ignored).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// An environment variable holding the secret.
    #[serde(default)]
    pub env: Option<String>,
    /// The SHA-256 (hex) of a token, for configurations that keep no token at all.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Create `file` with 256 random bits (hex) if it does not exist (demo set-ups).
    #[serde(default)]
    pub generate: bool,
}

/// A vendor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VendorConfig {
    /// Vendor id (lands in `source.vendor`).
    pub id: String,
    /// Bearer token; may be omitted only with `auth = "certificate"`.
    #[serde(default)]
    pub token: Option<SecretSource>,
    /// SHA-256 (hex, colons allowed) of the DER of the vendor's TLS client certificate.
    #[serde(default)]
    pub cert_sha256: Option<String>,
    /// Which credentials the vendor presents: `"token"` (default), `"certificate"` (client
    /// certificate instead of a token) or `"token+certificate"` (both, naming this vendor).
    #[serde(default)]
    pub auth: AuthMode,
    /// Formats (mapping ids) the vendor may post.
    pub formats: Vec<String>,
    /// Format assumed when the request names none.
    #[serde(default)]
    pub default_format: Option<String>,
}

/// A recipient principal.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientConfig {
    /// Recipient id (a policy file with this id must exist).
    pub id: String,
    /// Bearer token (required for pull recipients; a push recipient needs none).
    #[serde(default)]
    pub token: Option<SecretSource>,
    /// Pseudonym keys, current first; older ones are kept for look-ups.
    pub pseudonym_keys: Vec<KeyConfig>,
    /// The HTTPS endpoint items are pushed to (required for, and only for, recipients whose
    /// policy says `[delivery] kind = "push"`).
    #[serde(default)]
    pub push: Option<push::PushConfig>,
}

/// A pseudonym key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Key id (part of every pseudonym).
    pub kid: String,
    /// The secret as hex, at least 32 bytes.
    pub secret: SecretSource,
}

/// An administrator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Admin id.
    pub id: String,
    /// Bearer token.
    pub token: SecretSource,
}

/// One problem found while loading, with file and line where known.
#[derive(Debug, Clone)]
pub struct Problem {
    /// File (or `environment`).
    pub file: String,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        } else {
            write!(f, "{}: {}", self.file, self.message)
        }
    }
}

/// The policy ids a policy file that failed to load may have meant: its `id` if the text is
/// TOML with one, and its file name without `.toml`.
fn policy_ids_of(file: &str, text: &str) -> Vec<String> {
    let mut ids: Vec<String> = Path::new(file)
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .into_iter()
        .collect();
    if let Ok(table) = text.parse::<toml::Table>()
        && let Some(id) = table.get("id").and_then(|v| v.as_str())
    {
        ids.push(id.to_string());
    }
    ids
}

/// Settings of a vendor after loading.
#[derive(Debug, Clone)]
pub struct VendorSettings {
    /// Allowed formats.
    pub formats: Vec<String>,
    /// Default format.
    pub default_format: Option<String>,
    /// Which credentials the vendor presents.
    pub auth: AuthMode,
}

/// Everything start-up needs, loaded and checked.
#[derive(Debug)]
pub struct Loaded {
    /// Listen address.
    pub listen: String,
    /// HTTPS settings; `None` means plain HTTP (loopback, or explicitly allowed).
    pub tls: Option<TlsSettings>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Database URL.
    pub database_url: String,
    /// Input limits.
    pub limits: Limits,
    /// Who may call.
    pub principals: Principals,
    /// Vendors' settings by id.
    pub vendors: BTreeMap<String, VendorSettings>,
    /// Mappings.
    pub mappings: MappingSet,
    /// Where the mappings came from (a directory, or `None` for the built-in ones).
    pub mappings_dir: Option<PathBuf>,
    /// Canonical schema and code lists.
    pub validator: Validator,
    /// Recipients with policies and keys.
    pub router: Router,
    /// Generated demo token files: (principal id, path).
    pub demo_tokens: Vec<(String, PathBuf)>,
    /// Non-fatal remarks (e.g. which built-in sources are used).
    pub notices: Vec<String>,
    /// The audit trail's subject key.
    pub audit_key: crate::audit::AuditKey,
    /// Recipients' older pseudonym keys (kept for look-ups of earlier pseudonyms).
    pub older_keys: BTreeMap<String, Vec<PseudonymKey>>,
    /// Secret files that every user may read or write, one warning each (`weiche check`
    /// prints them, `weiche serve` logs them).
    pub warnings: Vec<String>,
    /// Push recipients' endpoints (settings: paths resolved, secret read; the HTTPS clients are
    /// built by [`crate::app`]), by recipient id.
    pub push_endpoints: BTreeMap<String, push::PushEndpoint>,
    /// Where the configuration came from (its path, or `(built-in defaults)`), for problems
    /// found while building the runtime from it.
    pub origin: String,
    /// Push worker settings.
    pub push_worker: push::PushWorkerConfig,
    /// How long stored data is kept.
    pub retention: Retention,
    /// Alert webhooks by alert kind (`mapping_failed`, `dead_letter`).
    pub alert_endpoints: BTreeMap<String, push::PushEndpoint>,
}

/// Reads an environment override.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Loads the configuration file at `path` (or `WEICHE_CONFIG`, or the embedded demo
/// configuration) and everything it points to.
pub fn load(path: Option<&Path>) -> Result<Loaded, Vec<Problem>> {
    let path = path
        .map(Path::to_path_buf)
        .or_else(|| env("WEICHE_CONFIG").map(PathBuf::from));
    let (origin, text, base) = match &path {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => (
                p.display().to_string(),
                t,
                p.parent().map(Path::to_path_buf).unwrap_or_default(),
            ),
            Err(e) => {
                return Err(vec![Problem {
                    file: p.display().to_string(),
                    line: 0,
                    message: format!("cannot read the configuration file: {e}"),
                }]);
            }
        },
        None => (
            "(built-in defaults)".to_string(),
            DEMO_CONFIG.to_string(),
            PathBuf::new(),
        ),
    };
    let mut file: ConfigFile = toml::from_str(&text).map_err(|e| {
        vec![Problem {
            file: origin.clone(),
            line: e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(0),
            message: e.message().to_string(),
        }]
    })?;
    let mut problems = Vec::new();
    apply_env(&mut file, &mut problems);
    // Relative secret paths: against the file's directory, or data_dir for the built-in defaults.
    let secret_base = if path.is_some() {
        base.clone()
    } else {
        file.data_dir.clone()
    };
    let mut notices = Vec::new();
    let pick =
        |configured: &Option<PathBuf>, default: &str, notices: &mut Vec<String>| match configured {
            Some(p) => Some(if p.is_relative() && path.is_some() {
                base.join(p)
            } else {
                p.clone()
            }),
            None if Path::new(default).is_dir() => Some(PathBuf::from(default)),
            None => {
                notices.push(format!(
                    "no ./{default} directory: using the built-in {default}"
                ));
                None
            }
        };
    let mappings_dir = pick(&file.mappings_dir, "mappings", &mut notices);
    let policies_dir = pick(&file.policies_dir, "policies", &mut notices);
    let schemas_dir = pick(&file.schemas_dir, "schemas", &mut notices);

    // Mappings.
    let mappings = match &mappings_dir {
        Some(dir) => match MappingSet::load_dir(dir) {
            Ok(set) => set,
            Err(e) => {
                problems.push(problem_from(&e.to_string()));
                MappingSet::default()
            }
        },
        None => MappingSet::embedded(),
    };
    // Mapping files that fail to load do not stop the server (they are reported by the admin
    // endpoint and the log, and hot reload picks up the fix); `weiche check` reports them.

    // Schema and code lists.
    let validator = match &schemas_dir {
        Some(dir) => Validator::load_dir(dir),
        None => Validator::embedded(),
    };
    let validator = match validator {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push(problem_from(&e.to_string()));
            None
        }
    };

    // Principals and their secrets.
    let mut principals = Principals::default();
    let mut demo_tokens = Vec::new();
    // A principal with an optional token, an optional certificate fingerprint and its mode.
    let mut credentials = |id: &str,
                           role: Role,
                           src: Option<&SecretSource>,
                           cert: Option<[u8; 32]>,
                           auth: AuthMode,
                           problems: &mut Vec<Problem>| {
        let hash = match src.map(|src| principals::token_hash(src, &secret_base)) {
            Some(Ok((hash, generated))) => {
                if let Some(p) = generated {
                    demo_tokens.push((id.to_string(), p));
                }
                Some(hash)
            }
            Some(Err(m)) => {
                problems.push(Problem {
                    file: origin.clone(),
                    line: 0,
                    message: format!("token of {id}: {m}"),
                });
                return;
            }
            None => None,
        };
        if let Err(m) = principals.add_credentials(id, role, hash, cert, auth) {
            problems.push(Problem {
                file: origin.clone(),
                line: 0,
                message: m,
            });
        }
    };
    let mut vendors = BTreeMap::new();
    for v in &file.vendors {
        let mut vendor_problem = |message: String| {
            problems.push(Problem {
                file: origin.clone(),
                line: 0,
                message: format!("vendor {}: {message}", v.id),
            })
        };
        if v.token.is_none() && v.auth.needs_token() {
            vendor_problem(format!(
                "token is missing (it may be omitted only with auth = \"certificate\"; auth is \"{}\")",
                v.auth.as_str()
            ));
        }
        let cert = match (&v.cert_sha256, v.auth.needs_certificate()) {
            (Some(text), true) => match principals::parse_fingerprint(text) {
                Ok(fp) => Some(fp),
                Err(m) => {
                    vendor_problem(m);
                    None
                }
            },
            (None, true) => {
                vendor_problem(format!(
                    "auth = \"{}\" needs cert_sha256 (SHA-256 of the client certificate's DER)",
                    v.auth.as_str()
                ));
                None
            }
            (Some(_), false) => {
                vendor_problem(
                    "cert_sha256 is set but auth = \"token\" does not use it: set auth = \"certificate\" or \"token+certificate\"".into(),
                );
                None
            }
            (None, false) => None,
        };
        if v.auth.needs_certificate() && file.tls.as_ref().is_none_or(|t| t.client_ca.is_none()) {
            vendor_problem(format!(
                "auth = \"{}\" needs [tls] with client_ca (client certificates are only asked for then)",
                v.auth.as_str()
            ));
        }
        if v.auth == AuthMode::Certificate && v.token.is_some() {
            notices.push(format!(
                "vendor {}: auth = \"certificate\": its token alone does not authenticate it",
                v.id
            ));
        }
        let complete = (v.token.is_some() || !v.auth.needs_token())
            && (cert.is_some() || !v.auth.needs_certificate());
        if complete {
            credentials(
                &v.id,
                Role::Vendor,
                v.token.as_ref(),
                cert,
                v.auth,
                &mut problems,
            );
        }
        for f in v.formats.iter().chain(v.default_format.iter()) {
            if f != "*" && !mappings.mappings.contains_key(f) {
                // Not fatal: the mapping may be broken now and fixed by hot reload.
                notices.push(format!(
                    "vendor {}: format '{f}' has no loaded mapping (deliveries in it answer V000)",
                    v.id
                ));
            }
        }
        if let Some(d) = &v.default_format
            && !v.formats.contains(d)
            && !v.formats.iter().any(|f| f == "*")
        {
            problems.push(Problem {
                file: origin.clone(),
                line: 0,
                message: format!(
                    "vendor {}: default_format '{d}' is not among its formats",
                    v.id
                ),
            });
        }
        vendors.insert(
            v.id.clone(),
            VendorSettings {
                formats: v.formats.clone(),
                default_format: v.default_format.clone(),
                auth: v.auth,
            },
        );
    }
    for a in &file.admins {
        credentials(
            &a.id,
            Role::Admin,
            Some(&a.token),
            None,
            AuthMode::Token,
            &mut problems,
        );
    }

    // Policies and recipients.
    let mut policies: BTreeMap<String, Policy> = BTreeMap::new();
    // The ids the policy files that failed to load would have given: a recipient of one of them
    // is not told again that it has no policy (the file's own problem says it, once).
    let mut failed_policies: BTreeSet<String> = BTreeSet::new();
    let policy_sources: Vec<(String, Result<String, String>)> = match &policies_dir {
        Some(dir) => match std::fs::read_dir(dir) {
            Ok(entries) => {
                let mut files: Vec<PathBuf> = entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                    .collect();
                files.sort();
                files
                    .into_iter()
                    .map(|p| {
                        let text = std::fs::read_to_string(&p).map_err(|e| e.to_string());
                        (p.display().to_string(), text)
                    })
                    .collect()
            }
            Err(e) => {
                problems.push(Problem {
                    file: dir.display().to_string(),
                    line: 0,
                    message: format!("cannot read the policies directory: {e}"),
                });
                Vec::new()
            }
        },
        None => EMBEDDED_POLICIES
            .iter()
            .map(|(n, t)| (n.to_string(), Ok(t.to_string())))
            .collect(),
    };
    for (name, text) in policy_sources {
        match text.map_err(|e| Problem {
            file: name.clone(),
            line: 0,
            message: e,
        }) {
            Ok(text) => match Policy::from_text(&name, &text) {
                Ok(p) => {
                    if let Some(validator) = &validator {
                        check_policy_codes(&p, validator, &mut problems);
                    }
                    if let Some(prev) = policies.get(p.id()) {
                        problems.push(Problem {
                            file: name.clone(),
                            line: crate::adapt::mapping::key_line(&text, &["id"]),
                            message: format!(
                                "policy id '{}' is already defined by {}",
                                p.id(),
                                prev.origin
                            ),
                        });
                    } else {
                        policies.insert(p.id().to_string(), p);
                    }
                }
                Err(e) => {
                    problems.push(problem_from(&e.to_string()));
                    failed_policies.extend(policy_ids_of(&name, &text));
                }
            },
            Err(p) => {
                problems.push(p);
                failed_policies.extend(policy_ids_of(&name, ""));
            }
        }
    }
    let mut recipients = Vec::new();
    let mut older_keys: BTreeMap<String, Vec<PseudonymKey>> = BTreeMap::new();
    let mut push_endpoints = BTreeMap::new();
    for r in &file.recipients {
        if let Some(token) = &r.token {
            credentials(
                &r.id,
                Role::Recipient,
                Some(token),
                None,
                AuthMode::Token,
                &mut problems,
            );
        }
        let Some(policy) = policies.remove(&r.id) else {
            if failed_policies.contains(&r.id) {
                continue;
            }
            problems.push(Problem {
                file: origin.clone(),
                line: 0,
                message: format!("recipient {}: no policy file with id '{}'", r.id, r.id),
            });
            continue;
        };
        let mut recipient_problem = |message: String| {
            problems.push(Problem {
                file: origin.clone(),
                line: 0,
                message: format!("recipient {}: {message}", r.id),
            })
        };
        match (policy.file.delivery.kind, &r.push) {
            (DeliveryKind::Pull, None) if r.token.is_none() => {
                recipient_problem("a pull recipient needs a token".into())
            }
            (DeliveryKind::Pull, None) => {}
            (DeliveryKind::Pull, Some(_)) => recipient_problem(format!(
                "[recipients.push] is set but the policy ({}) says delivery kind = \"pull\"",
                policy.origin
            )),
            (DeliveryKind::Push, None) => recipient_problem(format!(
                "the policy ({}) says delivery kind = \"push\": configure [recipients.push] with url and secret",
                policy.origin
            )),
            (DeliveryKind::Push, Some(push)) => {
                let base = if path.is_some() {
                    &base
                } else {
                    &file.data_dir
                };
                match push.build(base, &secret_base) {
                    Ok(endpoint) => {
                        if endpoint.timeout.as_secs() >= file.push.lease_secs {
                            recipient_problem(format!(
                                "push.timeout_secs must be shorter than [push] lease_secs ({})",
                                file.push.lease_secs
                            ));
                        }
                        push_endpoints.insert(r.id.clone(), endpoint);
                    }
                    Err(m) => recipient_problem(format!("[recipients.push]: {m}")),
                }
            }
        }
        let mut keys = Vec::new();
        for k in &r.pseudonym_keys {
            match principals::secret_bytes(&k.secret, &secret_base) {
                Ok(bytes) if bytes.len() >= 32 => keys.push(PseudonymKey::new(&k.kid, bytes)),
                Ok(_) => problems.push(Problem {
                    file: origin.clone(),
                    line: 0,
                    message: format!(
                        "recipient {}: pseudonym key {} is shorter than 32 bytes",
                        r.id, k.kid
                    ),
                }),
                Err(m) => problems.push(Problem {
                    file: origin.clone(),
                    line: 0,
                    message: format!("recipient {}: pseudonym key {}: {m}", r.id, k.kid),
                }),
            }
        }
        let mut keys = keys.into_iter();
        match keys.next() {
            Some(key) => {
                older_keys.insert(r.id.clone(), keys.collect());
                recipients.push(Recipient {
                    policy: Arc::new(policy),
                    key,
                })
            }
            None => problems.push(Problem {
                file: origin.clone(),
                line: 0,
                message: format!("recipient {}: needs at least one pseudonym key", r.id),
            }),
        }
    }
    for (id, p) in policies {
        notices.push(format!(
            "policy {id} ({}) has no recipient in the configuration: not used",
            p.origin
        ));
    }

    let on_postgres = file
        .database_url
        .as_deref()
        .is_some_and(|u| u.starts_with("postgres"));
    if on_postgres && file.audit_key.is_none() {
        notices.push(
            "no audit_key configured: this instance generates its own in data_dir; instances sharing one PostgreSQL need one shared audit_key, or disclosure reports miss events".into(),
        );
    }
    let audit_source = file.audit_key.clone().unwrap_or(SecretSource {
        // Absolute, so it lands in data_dir (which is relative to the working directory)
        // whatever base relative secret paths use.
        file: Some(
            std::path::absolute(file.data_dir.join("audit.key"))
                .unwrap_or_else(|_| file.data_dir.join("audit.key")),
        ),
        env: None,
        sha256: None,
        generate: true,
    });
    let mut alert_endpoints = BTreeMap::new();
    for (kind, settings) in [
        ("mapping_failed", &file.alerts.mapping_failed),
        ("dead_letter", &file.alerts.dead_letter),
    ] {
        let Some(settings) = settings else { continue };
        let base = if path.is_some() {
            &base
        } else {
            &file.data_dir
        };
        match settings.build(base, &secret_base) {
            Ok(endpoint) => {
                alert_endpoints.insert(kind.to_string(), endpoint);
            }
            Err(m) => problems.push(Problem {
                file: origin.clone(),
                line: 0,
                message: format!("[alerts.{kind}]: {m}"),
            }),
        }
    }
    let audit_key = match principals::secret_bytes(&audit_source, &secret_base) {
        Ok(bytes) if bytes.len() >= 32 => Some(crate::audit::AuditKey::new(bytes)),
        Ok(_) => {
            problems.push(Problem {
                file: origin.clone(),
                line: 0,
                message: "audit_key is shorter than 32 bytes".into(),
            });
            None
        }
        Err(m) => {
            problems.push(Problem {
                file: origin.clone(),
                line: 0,
                message: format!("audit_key: {m}"),
            });
            None
        }
    };
    let tls = file.tls.as_ref().map(|t| {
        let resolve = |p: &PathBuf| {
            if p.is_relative() && path.is_some() {
                base.join(p)
            } else {
                p.clone()
            }
        };
        TlsSettings {
            cert: resolve(&t.cert),
            key: resolve(&t.key),
            client_ca: t.client_ca.as_ref().map(resolve),
        }
    });
    match &tls {
        Some(_) => {
            if file.allow_plain_http {
                notices.push("allow_plain_http has no effect: [tls] is configured".into());
            }
        }
        None if file.allow_plain_http => {}
        None => {
            if !is_loopback(&file.listen) {
                problems.push(Problem {
                    file: origin.clone(),
                    line: 0,
                    message: format!(
                        "listen = \"{}\": plain HTTP only on loopback; configure [tls] (or set allow_plain_http = true behind a TLS-terminating proxy)",
                        file.listen
                    ),
                });
            }
        }
    }
    // --- secret file permissions (src/config/permissions.rs) ---
    let warnings = {
        let mut paths: Vec<PathBuf> = Vec::new();
        let mut add = |src: &SecretSource| {
            paths.extend(principals::secret_path(src, &secret_base));
        };
        file.vendors
            .iter()
            .filter_map(|v| v.token.as_ref())
            .for_each(&mut add);
        for r in &file.recipients {
            r.token.iter().for_each(&mut add);
            r.pseudonym_keys.iter().for_each(|k| add(&k.secret));
            r.push.iter().for_each(|p| add(&p.secret));
        }
        file.admins.iter().for_each(|a| add(&a.token));
        add(&audit_source);
        // Private keys of TLS (the server's, and push clients' resolved as push.rs does).
        paths.extend(tls.as_ref().map(|t| t.key.clone()));
        let push_base = if path.is_some() {
            &base
        } else {
            &file.data_dir
        };
        for key in file
            .recipients
            .iter()
            .filter_map(|r| r.push.as_ref()?.client_key_file.as_ref())
        {
            paths.push(if key.is_relative() {
                push_base.join(key)
            } else {
                key.clone()
            });
        }
        paths.sort();
        paths.dedup();
        paths
            .iter()
            .filter_map(|p| permissions::loose_secret_file(p))
            .collect::<Vec<String>>()
    };
    for message in file.retention.problems() {
        problems.push(Problem {
            file: origin.clone(),
            line: 0,
            message,
        });
    }
    let database_url = file
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", file.data_dir.join("weiche.db").display()));
    match (problems.is_empty(), validator, audit_key) {
        (true, Some(validator), Some(audit_key)) => Ok(Loaded {
            audit_key,
            warnings,
            older_keys,
            listen: file.listen,
            tls,
            data_dir: file.data_dir,
            database_url,
            limits: file.limits,
            principals,
            vendors,
            mappings,
            mappings_dir,
            validator,
            router: Router::new(recipients),
            demo_tokens,
            notices,
            push_endpoints,
            origin,
            push_worker: file.push,
            retention: file.retention,
            alert_endpoints,
        }),
        _ => Err(problems),
    }
}

/// Whether every address `listen` stands for is a loopback address (127.0.0.0/8 or ::1).
/// A name like `localhost:8080` is resolved; what does not resolve counts as not loopback.
pub fn is_loopback(listen: &str) -> bool {
    use std::net::ToSocketAddrs;
    match listen.to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}

/// Checks a policy's codes against the code lists.
fn check_policy_codes(p: &Policy, validator: &Validator, problems: &mut Vec<Problem>) {
    let mut bad = |m: String| {
        problems.push(Problem {
            file: p.origin.clone(),
            line: 0,
            message: m,
        })
    };
    if !validator.has_code("purpose", &p.file.purpose) {
        bad(format!(
            "purpose '{}' is not in code list purpose",
            p.file.purpose
        ));
    }
    for prog in &p.file.route.programs {
        if !validator.has_code("program", prog) {
            bad(format!(
                "route.programs: '{prog}' is not in code list program"
            ));
        }
    }
}

impl Problem {
    /// A problem from a `file:line: message` (or `file: message`) text.
    pub fn from_text(text: &str) -> Problem {
        problem_from(text)
    }
}

/// Splits "file:line: message" back into a problem.
fn problem_from(text: &str) -> Problem {
    let mut parts = text.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(f), Some(l), Some(m)) if l.trim().parse::<usize>().is_ok() => Problem {
            file: f.to_string(),
            line: l.trim().parse().unwrap_or(0),
            message: m.trim().to_string(),
        },
        _ => match text.split_once(": ") {
            Some((f, m)) => Problem {
                file: f.to_string(),
                line: 0,
                message: m.to_string(),
            },
            None => Problem {
                file: String::new(),
                line: 0,
                message: text.to_string(),
            },
        },
    }
}

fn apply_env(file: &mut ConfigFile, problems: &mut Vec<Problem>) {
    if let Some(v) = env("WEICHE_LISTEN") {
        file.listen = v;
    }
    if let Some(v) = env("WEICHE_ALLOW_PLAIN_HTTP") {
        match v.as_str() {
            "true" | "1" => file.allow_plain_http = true,
            "false" | "0" => file.allow_plain_http = false,
            _ => problems.push(Problem {
                file: "environment".into(),
                line: 0,
                message: format!("WEICHE_ALLOW_PLAIN_HTTP='{v}' is not true or false"),
            }),
        }
    }
    if let Some(v) = env("WEICHE_DATA_DIR") {
        file.data_dir = v.into();
    }
    if let Some(v) = env("WEICHE_DATABASE_URL") {
        file.database_url = Some(v);
    }
    if let Some(v) = env("WEICHE_MAPPINGS_DIR") {
        file.mappings_dir = Some(v.into());
    }
    if let Some(v) = env("WEICHE_POLICIES_DIR") {
        file.policies_dir = Some(v.into());
    }
    if let Some(v) = env("WEICHE_SCHEMAS_DIR") {
        file.schemas_dir = Some(v.into());
    }
    for (name, slot) in [
        ("WEICHE_MAX_BODY_BYTES", &mut file.limits.max_body_bytes),
        ("WEICHE_MAX_RECORDS", &mut file.limits.max_records),
    ] {
        if let Some(v) = env(name) {
            match v.parse() {
                Ok(n) => *slot = n,
                Err(_) => problems.push(Problem {
                    file: "environment".into(),
                    line: 0,
                    message: format!("{name}='{v}' is not a number"),
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_defaults_and_checks() {
        let r = Retention::default();
        assert_eq!(
            (
                r.records_months,
                r.outputs_days,
                r.audit_months,
                r.receipts_days
            ),
            (24, 90, 120, 365)
        );
        assert!(r.problems().is_empty());
        assert!(Retention::forever().problems().is_empty());
        let parsed: ConfigFile = toml::from_str("[retention]\nrecords_months = 6\n").unwrap();
        assert_eq!(parsed.retention.records_months, 6);
        assert_eq!(parsed.retention.outputs_days, 90);
        assert!(toml::from_str::<ConfigFile>("[retention]\nrecord_months = 6\n").is_err());
        let short = Retention {
            audit_months: 12,
            ..Retention::default()
        };
        assert_eq!(short.problems().len(), 1, "{:?}", short.problems());
        let forever_records = Retention {
            records_months: 0,
            outputs_days: 0,
            ..Retention::default()
        };
        assert_eq!(forever_records.problems().len(), 2);
        let audit_forever = Retention {
            records_months: 0,
            audit_months: 0,
            ..Retention::default()
        };
        assert!(audit_forever.problems().is_empty());
    }

    #[test]
    fn loopback_addresses() {
        assert!(is_loopback("127.0.0.1:8080"));
        assert!(is_loopback("127.1.2.3:0"));
        assert!(is_loopback("[::1]:8080"));
        assert!(!is_loopback("0.0.0.0:8080"));
        assert!(!is_loopback("[::]:8080"));
        assert!(!is_loopback("192.0.2.1:8080"));
        assert!(!is_loopback("not an address"));
    }
}
