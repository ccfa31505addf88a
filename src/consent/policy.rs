//! Recipient policies: one TOML file per recipient (purpose, legal basis, route filter, field
//! actions, delivery settings), checked at load. A field a policy does not name is dropped.

use super::projection::Projection;
use crate::model::Consent;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Errors loading a policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Not valid TOML or not the policy language.
    #[error("{file}:{line}: {message}")]
    Syntax {
        /// File.
        file: String,
        /// 1-based line (0 when unknown).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Parsed but not acceptable.
    #[error("{file}:{line}: {message}")]
    Invalid {
        /// File.
        file: String,
        /// 1-based line of the key the problem is about.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Could not be read.
    #[error("{file}: {source}")]
    Io {
        /// File.
        file: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// The legal basis a recipient receives data under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LegalBasis {
    /// A statute (cited in `citation`): routed without consent.
    Statute,
    /// The client's consent: routed only under a valid consent, and only the consented field
    /// groups.
    Consent,
}

/// How a recipient gets its items (a closed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryKind {
    /// The recipient pulls sealed batches.
    Pull,
    /// Weiche POSTs items to the recipient's HTTPS endpoint (configured with the recipient).
    Push,
}

/// A policy file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Recipient id (matches the recipient principal in the configuration).
    pub id: String,
    /// One line for administrators.
    #[serde(default)]
    pub description: String,
    /// Purpose code (code list `purpose`).
    pub purpose: String,
    /// Legal basis.
    pub legal_basis: LegalBasis,
    /// Citation of the statute (required for `statute` and for special categories).
    #[serde(default)]
    pub citation: Option<String>,
    /// Must be `true` (with a citation) for any non-drop action on `sensitive.*`.
    #[serde(default)]
    pub special_categories: bool,
    /// k for aggregates.
    #[serde(default = "default_min_cell")]
    pub min_cell: u32,
    /// Delivery settings.
    pub delivery: DeliverySettings,
    /// Which records go to this recipient.
    pub route: RouteFilter,
    /// Canonical path or field group → action (`keep`, `drop`, `pseudonymise`,
    /// `generalise:year|year_month|age_band|prefix:N`).
    pub fields: BTreeMap<String, String>,
}

fn default_min_cell() -> u32 {
    5
}

/// Delivery settings of a recipient.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    /// Pull or push.
    pub kind: DeliveryKind,
    /// A batch is sealed when this many items are open (pull).
    #[serde(default = "default_batch_items")]
    pub batch_max_items: u32,
    /// A batch is sealed when its oldest item is this old, in seconds (pull).
    #[serde(default = "default_batch_age")]
    pub batch_max_age_secs: u64,
    /// Items per push request, at most (push; default 100).
    #[serde(default = "default_push_batch")]
    pub batch_size: u32,
    /// Attempts before a push group becomes a dead letter (push; default 12).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Delay before the first retry, in milliseconds; doubled each further attempt, with
    /// jitter (push; default 1,000).
    #[serde(default = "default_backoff_base")]
    pub backoff_base_ms: u64,
    /// Longest delay between two attempts, in milliseconds (push; default 3,600,000 = 1 h).
    /// A `Retry-After` answer may ask for longer (up to a day).
    #[serde(default = "default_backoff_cap")]
    pub backoff_cap_ms: u64,
}

fn default_push_batch() -> u32 {
    100
}

fn default_max_attempts() -> u32 {
    12
}

fn default_backoff_base() -> u64 {
    1_000
}

fn default_backoff_cap() -> u64 {
    3_600_000
}

fn default_batch_items() -> u32 {
    10_000
}

fn default_batch_age() -> u64 {
    60
}

/// The route filter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFilter {
    /// Programs (required, non-empty).
    pub programs: Vec<String>,
    /// Only these vendors (empty: all).
    #[serde(default)]
    pub vendors: Vec<String>,
    /// Only municipality keys with one of these prefixes (empty: all).
    #[serde(default)]
    pub municipality_prefixes: Vec<String>,
}

/// A field action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Unchanged.
    Keep,
    /// Removed.
    Drop,
    /// Replaced by the recipient's pseudonym.
    Pseudonymise,
    /// Date to `YYYY`.
    Year,
    /// Date to `YYYY-MM`.
    YearMonth,
    /// Birth date to an age band.
    AgeBand,
    /// The first N characters.
    Prefix(usize),
}

impl Action {
    /// Parses the policy spelling.
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "keep" => Action::Keep,
            "drop" => Action::Drop,
            "pseudonymise" => Action::Pseudonymise,
            "generalise:year" => Action::Year,
            "generalise:year_month" => Action::YearMonth,
            "generalise:age_band" => Action::AgeBand,
            other => {
                let n = other.strip_prefix("generalise:prefix:")?.parse().ok()?;
                Action::Prefix(n)
            }
        })
    }

    /// The policy spelling.
    pub fn name(self) -> String {
        match self {
            Action::Keep => "keep".into(),
            Action::Drop => "drop".into(),
            Action::Pseudonymise => "pseudonymise".into(),
            Action::Year => "generalise:year".into(),
            Action::YearMonth => "generalise:year_month".into(),
            Action::AgeBand => "generalise:age_band".into(),
            Action::Prefix(n) => format!("generalise:prefix:{n}"),
        }
    }
}

pub use crate::model::LEAF_PATHS;

const DATE_PATHS: &[&str] = &[
    "client.birth_date",
    "case.opened_on",
    "case.closed_on",
    "services[].start",
    "services[].end",
    "consents[].granted_on",
    "consents[].valid_until",
    "consents[].withdrawn_on",
];

/// A loaded, checked policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The file as written.
    pub file: PolicyFile,
    /// Where it came from.
    pub origin: String,
    /// SHA-256 (hex) of the policy text as loaded.
    pub version: String,
    /// Action per leaf path, resolved (exact path over field group; unnamed → drop).
    pub actions: BTreeMap<&'static str, Action>,
    /// The compiled projections of this policy per consent scope, with their audit field sets,
    /// made on first use ([`Policy::projection`]).
    projections: ProjectionCache,
}

/// Compiled projections of one policy, one slot per consent scope
/// ([`super::projection::scope_index`]).
struct ProjectionCache(Box<[std::sync::OnceLock<Box<Projection>>]>);

impl Default for ProjectionCache {
    fn default() -> Self {
        ProjectionCache(
            (0..super::projection::SCOPES)
                .map(|_| std::sync::OnceLock::new())
                .collect(),
        )
    }
}

impl Clone for ProjectionCache {
    /// An empty cache: the projections are compiled again on use.
    fn clone(&self) -> Self {
        ProjectionCache::default()
    }
}

impl std::fmt::Debug for ProjectionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProjectionCache")
    }
}

impl Policy {
    /// Parses and checks a policy file's text.
    pub fn from_text(origin: &str, text: &str) -> Result<Policy, PolicyError> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| PolicyError::Syntax {
            file: origin.to_string(),
            line: e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(0),
            message: e.message().to_string(),
        })?;
        // Each problem names the key it is about, for its line (the first line if none).
        let at = |path: &[&str], message: String| PolicyError::Invalid {
            file: origin.to_string(),
            line: crate::adapt::mapping::key_line(text, path).max(1),
            message,
        };
        if file.legal_basis == LegalBasis::Statute
            && file.citation.as_deref().is_none_or(|c| c.trim().is_empty())
        {
            let key: &[&str] = if file.citation.is_some() {
                &["citation"]
            } else {
                &["legal_basis"]
            };
            return Err(at(
                key,
                "legal_basis = \"statute\" needs a citation (e.g. citation = \"§ 51b SGB II\")"
                    .into(),
            ));
        }
        if file.route.programs.is_empty() {
            return Err(at(
                &["route", "programs"],
                "route.programs must name at least one program".into(),
            ));
        }
        if file.delivery.batch_max_items == 0 {
            return Err(at(
                &["delivery", "batch_max_items"],
                "delivery.batch_max_items must be at least 1".into(),
            ));
        }
        if file.delivery.batch_size == 0 || file.delivery.batch_size > 10_000 {
            return Err(at(
                &["delivery", "batch_size"],
                "delivery.batch_size must be between 1 and 10000".into(),
            ));
        }
        if file.delivery.max_attempts == 0 {
            return Err(at(
                &["delivery", "max_attempts"],
                "delivery.max_attempts must be at least 1".into(),
            ));
        }
        if file.delivery.backoff_base_ms == 0
            || file.delivery.backoff_cap_ms < file.delivery.backoff_base_ms
        {
            let key = if file.delivery.backoff_base_ms == 0 {
                "backoff_base_ms"
            } else {
                "backoff_cap_ms"
            };
            return Err(at(
                &["delivery", key],
                "delivery.backoff_base_ms must be at least 1 and at most delivery.backoff_cap_ms"
                    .into(),
            ));
        }
        let mut actions: BTreeMap<&'static str, Action> = BTreeMap::new();
        let mut exact: BTreeMap<&'static str, Action> = BTreeMap::new();
        for (name, spelled) in &file.fields {
            let field = ["fields", name.as_str()];
            let invalid = |message: String| at(&field, message);
            let action = Action::parse(spelled).ok_or_else(|| {
                invalid(format!(
                    "fields.\"{name}\": unknown action '{spelled}' (keep, drop, pseudonymise, generalise:year, generalise:year_month, generalise:age_band, generalise:prefix:N)"
                ))
            })?;
            if let Some(path) = LEAF_PATHS.iter().find(|p| **p == name) {
                check_action(path, action)
                    .map_err(|m| invalid(format!("fields.\"{name}\": {m}")))?;
                exact.insert(path, action);
            } else if crate::model::FIELD_GROUPS.contains(&name.as_str()) {
                for path in LEAF_PATHS {
                    if crate::model::field_group(path) == Some(name.as_str()) {
                        check_action(path, action)
                            .map_err(|m| invalid(format!("fields.\"{name}\" ({path}): {m}")))?;
                        actions.insert(path, action);
                    }
                }
            } else {
                return Err(invalid(format!(
                    "fields.\"{name}\" is neither a canonical field path nor a field group"
                )));
            }
        }
        actions.extend(exact);
        actions.retain(|_, a| *a != Action::Drop);
        let sensitive = actions.keys().any(|p| p.starts_with("sensitive."));
        if sensitive
            && (!file.special_categories
                || file.citation.as_deref().is_none_or(|c| c.trim().is_empty()))
        {
            let key = if !file.special_categories
                && crate::adapt::mapping::key_line(text, &["special_categories"]) == 0
            {
                "fields"
            } else if file.special_categories {
                "citation"
            } else {
                "special_categories"
            };
            return Err(at(
                &[key],
                "the policy lets sensitive.* through, which needs special_categories = true and a citation of the law that allows processing special categories (Art. 9 GDPR)".into(),
            ));
        }
        Ok(Policy {
            version: hex::encode(Sha256::digest(text.as_bytes())),
            origin: origin.to_string(),
            file,
            actions,
            projections: ProjectionCache::default(),
        })
    }

    /// The recipient id.
    pub fn id(&self) -> &str {
        &self.file.id
    }

    /// The resolved action of a leaf path.
    pub fn action(&self, path: &str) -> Action {
        self.actions.get(path).copied().unwrap_or(Action::Drop)
    }

    /// This policy narrowed by a consent (by its scope), compiled on first use.
    pub fn projection(&self, consent: Option<&Consent>) -> &Projection {
        let slot =
            &self.projections.0[super::projection::scope_index(super::projection::scope(consent))];
        slot.get_or_init(|| Box::new(Projection::compile(self, consent)))
    }
}

fn check_action(path: &str, action: Action) -> Result<(), String> {
    match action {
        Action::Keep | Action::Drop => Ok(()),
        Action::Pseudonymise => Ok(()),
        Action::Year | Action::YearMonth if DATE_PATHS.contains(&path) => Ok(()),
        Action::AgeBand if path == "client.birth_date" => Ok(()),
        Action::Prefix(n)
            if (path == "client.address.postal_code"
                || path == "client.address.municipality_key")
                && n > 0 =>
        {
            Ok(())
        }
        _ if path == "client.linkage_key" => Err("the linkage key only takes pseudonymise".into()),
        other => Err(format!("{} does not apply to {path}", other.name())),
    }
    .and_then(|()| {
        if path == "client.linkage_key" && !matches!(action, Action::Pseudonymise | Action::Drop) {
            Err("the linkage key only takes pseudonymise".into())
        } else {
            Ok(())
        }
    })
}
