//! Configuration: one TOML file, environment overrides, secrets from files or the environment,
//! and embedded defaults so that `weiche serve` with no arguments runs a complete demo.
//!
//! [`load`] reads and checks everything start-up needs — the file, the principals and their
//! secrets, the mappings, the policies, the canonical schema and code lists — and returns either
//! a [`Loaded`] gateway configuration or every [`Problem`] found, each with file and line.
//! `weiche check` and `weiche serve` share it, so they can never disagree.

mod principals;

pub use principals::{Principal, Principals, Role};

use crate::adapt::MappingSet;
use crate::consent::{Policy, PseudonymKey};
use crate::route::{Recipient, Router};
use crate::validate::Validator;
use serde::Deserialize;
use std::collections::BTreeMap;
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
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: default_max_body(),
            max_records: default_max_records(),
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
    /// Bearer token.
    pub token: SecretSource,
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
    /// Bearer token (pull recipients).
    pub token: SecretSource,
    /// Pseudonym keys, current first; older ones are kept for look-ups.
    pub pseudonym_keys: Vec<KeyConfig>,
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

/// Settings of a vendor after loading.
#[derive(Debug, Clone)]
pub struct VendorSettings {
    /// Allowed formats.
    pub formats: Vec<String>,
    /// Default format.
    pub default_format: Option<String>,
}

/// Everything start-up needs, loaded and checked.
#[derive(Debug)]
pub struct Loaded {
    /// Listen address.
    pub listen: String,
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
    let mut token = |id: &str, role: Role, src: &SecretSource, problems: &mut Vec<Problem>| {
        match principals::token_hash(src, &secret_base) {
            Ok((hash, generated)) => {
                if let Some(p) = generated {
                    demo_tokens.push((id.to_string(), p));
                }
                if let Err(m) = principals.add(id, role, hash) {
                    problems.push(Problem {
                        file: origin.clone(),
                        line: 0,
                        message: m,
                    });
                }
            }
            Err(m) => problems.push(Problem {
                file: origin.clone(),
                line: 0,
                message: format!("token of {id}: {m}"),
            }),
        }
    };
    let mut vendors = BTreeMap::new();
    for v in &file.vendors {
        token(&v.id, Role::Vendor, &v.token, &mut problems);
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
            },
        );
    }
    for a in &file.admins {
        token(&a.id, Role::Admin, &a.token, &mut problems);
    }

    // Policies and recipients.
    let mut policies: BTreeMap<String, Policy> = BTreeMap::new();
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
                            line: 0,
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
                Err(e) => problems.push(problem_from(&e.to_string())),
            },
            Err(p) => problems.push(p),
        }
    }
    let mut recipients = Vec::new();
    let mut older_keys: BTreeMap<String, Vec<PseudonymKey>> = BTreeMap::new();
    for r in &file.recipients {
        token(&r.id, Role::Recipient, &r.token, &mut problems);
        let Some(policy) = policies.remove(&r.id) else {
            problems.push(Problem {
                file: origin.clone(),
                line: 0,
                message: format!("recipient {}: no policy file with id '{}'", r.id, r.id),
            });
            continue;
        };
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
    let database_url = file
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", file.data_dir.join("weiche.db").display()));
    match (problems.is_empty(), validator, audit_key) {
        (true, Some(validator), Some(audit_key)) => Ok(Loaded {
            audit_key,
            older_keys,
            listen: file.listen,
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
        }),
        _ => Err(problems),
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
