//! The adapters' output: a [`Draft`] is one record in canonical shape but with raw, unchecked
//! values, plus what the mapping already found wrong with it. Only [`crate::validate`] turns a
//! draft into a [`crate::model::CanonicalRecord`].

use crate::catalogue::Code;
use serde_json::{Map, Value};

/// One finding about one record (an error, a warning or a note), naming the canonical field path
/// (with 0-based indices, e.g. `services[1].end`) or, for `W002`, the source field.
#[derive(Clone, PartialEq, Eq)]
pub struct Issue {
    /// Catalogue code (`F001`–`F006`, `W001`, `W002`, `C001`, `C002`).
    pub code: Code,
    /// Canonical path, or the source field / column name for `W002`.
    pub field: Option<String>,
    /// Text for a person. Never quotes a personal value: it names the rule and the value's shape
    /// (`crate::catalogue::shape`); only values of fields that are not personal
    /// (`crate::catalogue::quotable`) are quoted.
    pub message: String,
}

impl Issue {
    /// A finding on a field.
    pub fn new(code: Code, field: impl Into<String>, message: impl Into<String>) -> Self {
        Issue {
            code,
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

impl std::fmt::Debug for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Debug shows only code and field (the message may quote a code or period).
        f.debug_struct("Issue")
            .field("code", &self.code)
            .field("field", &self.field)
            .finish_non_exhaustive()
    }
}

/// One record as a mapping produced it.
#[derive(Clone)]
pub struct Draft {
    /// 1-based position in the delivery, in order of first appearance.
    pub position: usize,
    /// The vendor's record id (trimmed), when the mapping found one.
    pub record_id: Option<String>,
    /// Canonical-shaped tree (`{"client": {"family_name": …}, "services": [{…}], …}`). Values are
    /// trimmed, NFC-normalised strings, JSON numbers or arrays; absent values are omitted.
    /// `schema_version` and `source.vendor` / `source.format` / `source.delivery_id` are filled
    /// in by ingest, never by a mapping.
    pub fields: Map<String, Value>,
    /// What the mapping already found: value-map misses (`F003`), wrong source types (`F002`),
    /// unknown source fields (`W002`), …
    pub issues: Vec<Issue>,
}

impl std::fmt::Debug for Draft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Draft")
            .field("position", &self.position)
            .field("record_id", &self.record_id)
            .field("issues", &self.issues)
            .finish_non_exhaustive()
    }
}

impl Draft {
    /// An empty draft at a position.
    pub fn new(position: usize) -> Self {
        Draft {
            position,
            record_id: None,
            fields: Map::new(),
            issues: Vec::new(),
        }
    }

    /// Sets a value at a dotted canonical path (`client.address.street`), creating objects.
    pub fn set(&mut self, path: &str, value: Value) {
        set_path(&mut self.fields, path, value);
    }

    /// The text at `group.member` (`source.record_id`, `client.client_id`), if there is one.
    pub fn text(&self, group: &str, member: &str) -> Option<&str> {
        self.fields.get(group)?.get(member)?.as_str()
    }
}

/// Sets `value` at a dotted path inside `map`, creating intermediate objects.
pub fn set_path(map: &mut Map<String, Value>, path: &str, value: Value) {
    let mut parts = path.split('.').peekable();
    let mut cur = map;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            cur.insert(part.to_string(), value);
            return;
        }
        // Looked up before inserting: the key is allocated only for a new member.
        if !cur.get(part).is_some_and(Value::is_object) {
            cur.insert(part.to_string(), Value::Object(Map::new()));
        }
        cur = cur
            .get_mut(part)
            .and_then(Value::as_object_mut)
            .expect("just made an object");
    }
}

/// A record an engine has read but not mapped yet: its source tree, what was found while reading
/// it, and the values the delivery's header gives every record. A sink that takes records this
/// way ([`super::AdaptSink::takes_unmapped`]) has them mapped on another thread with
/// [`super::Mapping::map_unmapped`]; nothing else can open one, so the vendor's tree goes no
/// further than the mapping.
pub struct Unmapped {
    pub(crate) position: usize,
    pub(crate) tree: Value,
    pub(crate) issues: Vec<Issue>,
    pub(crate) values: std::sync::Arc<Vec<(String, Value)>>,
}

impl std::fmt::Debug for Unmapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unmapped")
            .field("position", &self.position)
            .field("issues", &self.issues)
            .finish_non_exhaustive()
    }
}
