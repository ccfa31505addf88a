//! The mapping language: one TOML file per vendor format, read and checked here.
//!
//! A mapping names its syntax (a closed set: [`Syntax`]), where a delivery's header values and
//! its records are found, and for every canonical path the source field it comes from, with
//! optional value maps. It has no loops and no scripting: applying it always terminates.
//! `docs/mapping-guide.md` is the administrator's reference.

use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

/// Errors loading a mapping file.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    /// The file is not valid TOML or does not fit the mapping language.
    #[error("{file}:{line}: {message}")]
    Syntax {
        /// File name.
        file: String,
        /// 1-based line (0 when unknown).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The file parsed but is inconsistent.
    #[error("{file}: {message}")]
    Invalid {
        /// File name.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The file could not be read.
    #[error("{file}: {source}")]
    Io {
        /// File name.
        file: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// The closed set of source syntaxes a mapping can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Syntax {
    /// One JSON document with a header and an array of records.
    Json,
}

/// Delivery mode of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Complete snapshot for each (program, reporting month) it covers.
    Full,
    /// Adds or replaces only the records it contains.
    Partial,
}

impl Mode {
    /// Spelling in receipts and queries.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Partial => "partial",
        }
    }

    /// Parses `full` / `partial`.
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "full" => Some(Mode::Full),
            "partial" => Some(Mode::Partial),
            _ => None,
        }
    }
}

/// A mapping file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingFile {
    /// Format id vendors name in `?format=` and that lands in `source.format`.
    pub id: String,
    /// Source syntax.
    pub syntax: Syntax,
    /// One line for administrators.
    #[serde(default)]
    pub description: String,
    /// Vendor `weiche convert` assumes when `--vendor` is not given.
    #[serde(default)]
    pub default_vendor: Option<String>,
    /// Where the delivery's header values and records are.
    pub delivery: DeliverySpec,
    /// How one record is built.
    pub record: RecordSpec,
    /// Named value maps: vendor value → canonical code.
    #[serde(default)]
    pub maps: BTreeMap<String, BTreeMap<String, String>>,
}

/// Delivery-level part of a mapping.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySpec {
    /// Source path of the array of records (JSON: a pointer to a member of the top-level object).
    pub records: String,
    /// Format version check: missing → `X001`, a value not in `accept` → `V000`.
    #[serde(default)]
    pub version: Option<VersionSpec>,
    /// Source path of the payload's message id, the idempotency key (must be non-empty: `X001`).
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Delivery mode taken from the payload (unknown value → `X001`). Without it the request's
    /// `mode` parameter counts (default `partial`).
    #[serde(default)]
    pub mode: Option<ModeSpec>,
    /// Source paths that must hold objects (else `X001`).
    #[serde(default)]
    pub objects: Vec<String>,
    /// Source paths that are read by nobody but known (no `W002`).
    #[serde(default)]
    pub informational: Vec<String>,
    /// Header values copied into every record: canonical path → rule.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldRule>,
}

/// The version check of a format.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionSpec {
    /// Source path of the version.
    pub from: String,
    /// Versions this mapping understands.
    pub accept: Vec<String>,
}

/// Delivery mode from the payload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeSpec {
    /// Source path.
    pub from: String,
    /// Payload value → `full` / `partial`.
    pub map: BTreeMap<String, Mode>,
}

/// Record-level part of a mapping.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordSpec {
    /// Canonical path → rule, relative to one record.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldRule>,
    /// Canonical arrays (`services`, `consents`) built from a source array: name → spec.
    #[serde(default)]
    pub lists: BTreeMap<String, ListSpec>,
    /// Source paths inside a record that are known but not mapped (no `W002`).
    #[serde(default)]
    pub informational: Vec<String>,
}

/// A canonical array built from a source array.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListSpec {
    /// Source path of the array, relative to the record.
    pub from: String,
    /// Canonical field inside one element → rule relative to the source element.
    pub fields: BTreeMap<String, FieldRule>,
}

/// Where one canonical value comes from and how it is transformed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRule {
    /// Source path (JSON pointer relative to the record, list element or document).
    pub from: String,
    /// What the source holds.
    #[serde(default, rename = "type")]
    pub kind: ValueKind,
    /// For lists of strings: join the entries with this separator into one string.
    #[serde(default)]
    pub join: Option<String>,
    /// Name of a value map in `[maps]`; a value not in it is `F003`.
    #[serde(default)]
    pub map: Option<String>,
    /// Missing or empty → `X001` (delivery-level fields only).
    #[serde(default)]
    pub required: bool,
}

/// The source type a field rule expects; another type is `F002`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueKind {
    /// A string.
    #[default]
    String,
    /// A number.
    Number,
    /// A list of strings.
    StringList,
}

/// Where a TOML error sits.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// A JSON pointer split into its reference tokens (`/a/b` → `["a","b"]`, `~1` → `/`, `~0` → `~`).
pub fn pointer_tokens(pointer: &str) -> Option<Vec<String>> {
    if pointer.is_empty() {
        return Some(Vec::new());
    }
    let rest = pointer.strip_prefix('/')?;
    Some(
        rest.split('/')
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect(),
    )
}

impl MappingFile {
    /// Parses and checks a mapping file's text.
    pub fn parse(file: &str, text: &str) -> Result<MappingFile, MappingError> {
        let parsed: MappingFile = toml::from_str(text).map_err(|e| MappingError::Syntax {
            file: file.to_string(),
            line: e.span().map(|s| line_of(text, s.start)).unwrap_or(0),
            message: e.message().to_string(),
        })?;
        parsed.check(file)?;
        Ok(parsed)
    }

    fn check(&self, file: &str) -> Result<(), MappingError> {
        let invalid = |message: String| MappingError::Invalid {
            file: file.to_string(),
            message,
        };
        if self.id.is_empty()
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(invalid(format!(
                "id '{}' must be lowercase letters, digits and '-'",
                self.id
            )));
        }
        let mut pointers: Vec<&str> = vec![&self.delivery.records];
        pointers.extend(self.delivery.version.iter().map(|v| v.from.as_str()));
        pointers.extend(self.delivery.idempotency_key.iter().map(String::as_str));
        pointers.extend(self.delivery.mode.iter().map(|m| m.from.as_str()));
        pointers.extend(self.delivery.objects.iter().map(String::as_str));
        pointers.extend(self.delivery.informational.iter().map(String::as_str));
        pointers.extend(self.record.informational.iter().map(String::as_str));
        let mut rules: Vec<(&str, &FieldRule)> = Vec::new();
        rules.extend(self.delivery.fields.iter().map(|(k, v)| (k.as_str(), v)));
        rules.extend(self.record.fields.iter().map(|(k, v)| (k.as_str(), v)));
        for (name, list) in &self.record.lists {
            if name != "services" && name != "consents" {
                return Err(invalid(format!(
                    "list '{name}': only the canonical arrays 'services' and 'consents' can be built from a list"
                )));
            }
            pointers.push(&list.from);
            rules.extend(list.fields.iter().map(|(k, v)| (k.as_str(), v)));
        }
        for (target, rule) in &rules {
            pointers.push(&rule.from);
            if let Some(map) = &rule.map
                && !self.maps.contains_key(map)
            {
                return Err(invalid(format!(
                    "field '{target}' uses value map '{map}', which [maps] does not define"
                )));
            }
            if rule.join.is_some() && rule.kind != ValueKind::StringList {
                return Err(invalid(format!(
                    "field '{target}': join needs type = \"string_list\""
                )));
            }
        }
        for p in pointers {
            if pointer_tokens(p).is_none() {
                return Err(invalid(format!(
                    "'{p}' is not a JSON pointer (it must start with '/')"
                )));
            }
        }
        if pointer_tokens(&self.delivery.records).is_some_and(|t| t.len() != 1) {
            return Err(invalid(
                "delivery.records must name a member of the top-level object, e.g. \"/faelle\""
                    .into(),
            ));
        }
        Ok(())
    }

    /// The source field name of a pointer, for messages (`/klient/name/familienname` → `familienname`).
    pub fn source_name(pointer: &str) -> &str {
        pointer.rsplit('/').next().unwrap_or(pointer)
    }

    /// A value map by name.
    pub fn value_map(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.maps.get(name)
    }
}

/// A tree of the source paths a mapping knows, to find unknown fields (`W002`).
#[derive(Debug, Default)]
pub struct KnownTree {
    /// Children by key. A node with `leaf` set is consumed whole.
    pub children: HashMap<String, KnownTree>,
    /// The whole value at this path is read by a rule.
    pub leaf: bool,
    /// For list sources: the tree of one element.
    pub element: Option<Box<KnownTree>>,
}

impl KnownTree {
    /// Marks a pointer as known; returns the node.
    pub fn insert(&mut self, pointer: &str) -> &mut KnownTree {
        let mut node = self;
        for token in pointer_tokens(pointer).unwrap_or_default() {
            node = node.children.entry(token).or_default();
        }
        node
    }
}
