//! The mapping language: one TOML file per vendor format, read and checked here.
//!
//! A mapping names its syntax (a closed set: [`Syntax`]), where a delivery's header values and
//! its records are found, and for every canonical path the source field it comes from, with
//! optional value maps. It has no loops and no scripting: applying it always terminates.
//! `docs/mapping-guide.md` is the administrator's reference.

use serde::Deserialize;
use std::collections::BTreeMap;

/// The most list steps `delivery.records` may name.
pub const MAX_RECORD_STEPS: usize = 8;

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
    #[error("{}", located(file, *line, message))]
    Invalid {
        /// File name.
        file: String,
        /// 1-based line of the key the problem is about (0 when unknown).
        line: usize,
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

/// `file:line: message`, or `file: message` when the line is unknown.
fn located(file: &str, line: usize, message: &str) -> String {
    if line > 0 {
        format!("{file}:{line}: {message}")
    } else {
        format!("{file}: {message}")
    }
}

impl MappingError {
    /// The 1-based line the error is about (0 when unknown).
    pub fn line(&self) -> usize {
        match self {
            MappingError::Syntax { line, .. } | MappingError::Invalid { line, .. } => *line,
            MappingError::Io { .. } => 0,
        }
    }

    /// What is wrong, without file and line.
    pub fn message(&self) -> String {
        match self {
            MappingError::Syntax { message, .. } | MappingError::Invalid { message, .. } => {
                message.clone()
            }
            MappingError::Io { source, .. } => source.to_string(),
        }
    }

    /// The file the error is about.
    pub fn file(&self) -> &str {
        match self {
            MappingError::Syntax { file, .. }
            | MappingError::Invalid { file, .. }
            | MappingError::Io { file, .. } => file,
        }
    }
}

/// The closed set of source syntaxes a mapping can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Syntax {
    /// One JSON document with a header and an array of records.
    Json,
    /// One XML message: a root element with header elements and repeated record elements.
    Xml,
    /// A CSV export: one header row, one or more rows per record.
    Csv,
    /// JSON Lines: one JSON object a line (optionally a header line first), streamed line by line.
    Jsonl,
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
    /// Vendors allowed to post this format, in addition to the formats each vendor's
    /// configuration lists (so a new vendor format needs only its mapping file).
    #[serde(default)]
    pub vendors: Vec<String>,
    /// XML settings (`syntax = "xml"` only).
    #[serde(default)]
    pub xml: Option<XmlSpec>,
    /// CSV settings (`syntax = "csv"` only).
    #[serde(default)]
    pub csv: Option<CsvSpec>,
    /// JSON Lines settings (`syntax = "jsonl"` only).
    #[serde(default)]
    pub jsonl: Option<JsonlSpec>,
    /// Where the delivery's header values and records are.
    #[serde(default)]
    pub delivery: DeliverySpec,
    /// How one record is built.
    pub record: RecordSpec,
    /// Named value maps: vendor value → canonical code.
    #[serde(default)]
    pub maps: BTreeMap<String, BTreeMap<String, String>>,
}

/// XML settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XmlSpec {
    /// Namespace of the format's elements; elements of other namespaces are ignored with `W002`.
    /// Empty: the format uses no namespace.
    pub namespace: String,
    /// Local name of the root element (another root, or the root in another namespace, is `X001`).
    pub root: String,
    /// Elements that hold a `code` of a Weiche code list: element name → code list name. Their
    /// `listURI` / `listVersionID` attributes, when present, must be `urn:weiche:codeliste:<list>`
    /// and `1`, else the delivery is rejected with `S010`.
    #[serde(default)]
    pub codelists: BTreeMap<String, String>,
    /// Further parents of a `code` whose code list is not Weiche's (no `S010` check); like the
    /// `codelists` elements they may hold an XÖV `name` next to the `code`.
    #[serde(default)]
    pub code_parents: Vec<String>,
}

/// CSV settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvSpec {
    /// Field separator (one character).
    #[serde(default = "default_separator")]
    pub separator: char,
    /// Quote character.
    #[serde(default = "default_quote")]
    pub quote: char,
    /// Encoding when the request names no `charset` and the body has no UTF-8 byte-order mark
    /// (an encoding label encoding_rs knows, e.g. `windows-1252`, `iso-8859-1`, `utf-8`).
    #[serde(default = "default_encoding")]
    pub encoding: String,
    /// Consecutive rows with the same value in this column form one record.
    pub group_by: String,
    /// Columns that must be in the header row (else `X001`).
    #[serde(default)]
    pub required_columns: Vec<String>,
}

/// JSON Lines settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlSpec {
    /// The first non-empty line is the delivery header (the object `[delivery]` paths start at),
    /// not a record. Without it the idempotency key comes from the `Idempotency-Key` request
    /// header, the mode from `?mode=`, and every other value from the record lines.
    #[serde(default)]
    pub header_line: bool,
}

fn default_separator() -> char {
    ';'
}

fn default_quote() -> char {
    '"'
}

fn default_encoding() -> String {
    "windows-1252".into()
}

/// Delivery-level part of a mapping.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliverySpec {
    /// Source path of the records, through every list on the way: `/faelle` (the records are the
    /// entries of the top-level member `faelle`, or the `fall` elements under the XML root), or
    /// `/klienten/faelle` (every entry of `faelle` in every entry of `klienten`: a record's rules
    /// read its client with `../`). JSON Lines: inside one line; absent, the line is the record.
    /// Not used for CSV.
    #[serde(default)]
    pub records: Option<String>,
    /// Format version check: missing → `X001`, a value not in `accept` → `V000`.
    #[serde(default)]
    pub version: Option<VersionSpec>,
    /// Source path of the payload's message id, the idempotency key (must be non-empty: `X001`).
    /// Without it the request's `Idempotency-Key` header is used.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// The message id must be a UUID (else `X001`).
    #[serde(default)]
    pub idempotency_key_uuid: bool,
    /// Delivery mode taken from the payload (unknown value → `X001`). Without it the request's
    /// `mode` parameter counts (default `partial`).
    #[serde(default)]
    pub mode: Option<ModeSpec>,
    /// Test flag from the payload: a test delivery is validated and answered, never stored.
    #[serde(default)]
    pub test: Option<TestSpec>,
    /// Source paths that must hold objects (else `X001`).
    #[serde(default)]
    pub objects: Vec<String>,
    /// Source paths that must occur exactly once (else `X001`).
    #[serde(default)]
    pub once: Vec<String>,
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

/// Test flag from the payload.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    /// Source path.
    pub from: String,
    /// Payload value → test or not; another value is `X001`. Absent means not a test.
    pub map: BTreeMap<String, bool>,
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
    /// Source paths inside a record that are known but not mapped (no `W002`): `../` steps
    /// to an enclosing element, a number to one list element, `*` to every element.
    #[serde(default)]
    pub informational: Vec<String>,
}

/// A canonical array built from a source array (JSON, XML) or from rows (CSV).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListSpec {
    /// Source path of the array or repeated element, relative to the record (JSON, XML).
    #[serde(default)]
    pub from: Option<String>,
    /// Which rows of a CSV record give entries.
    #[serde(default)]
    pub rows: Option<RowSelect>,
    /// Canonical field inside one element → rule relative to the source element (or row).
    pub fields: BTreeMap<String, FieldRule>,
}

/// Rows of a CSV record that give list entries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowSelect {
    /// Every row with a value in any of these columns gives one entry.
    #[serde(default)]
    pub when_any: Vec<String>,
    /// Only the first row with a value in this column gives (the one) entry.
    #[serde(default)]
    pub first_with: Option<String>,
}

/// Where one canonical value comes from and how it is transformed. Transforms run in this order:
/// read (`from`, or the constant `value`); for lists `split`, then trim and NFC of each entry;
/// for strings trim and NFC; `absent`; `split` + `part`; `pattern`; then `decimal` (numbers),
/// `join` (lists), `date`, `map`; `default` (as written, untransformed) when nothing is left.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRule {
    /// Source path: a JSON pointer (`/person/name/last`), an XML element path
    /// (`/person/household/@id`) or a CSV column name (`Surname`).
    #[serde(default)]
    pub from: Option<String>,
    /// A constant instead of a source value.
    #[serde(default)]
    pub value: Option<String>,
    /// What the source holds.
    #[serde(default, rename = "type")]
    pub kind: ValueKind,
    /// For lists of strings: join the entries with this separator into one string.
    #[serde(default)]
    pub join: Option<String>,
    /// Split a string into a list at this separator (entries trimmed, empty ones dropped), or,
    /// with `part`, into parts of which one is taken.
    #[serde(default)]
    pub split: Option<String>,
    /// With `split`: take part N (1 is the first, -1 the last) as the value; a missing part is
    /// `F002`.
    #[serde(default)]
    pub part: Option<i64>,
    /// A regular expression (the `regex` crate's syntax) the whole cleaned text must match, with
    /// named groups `(?P<name>…)`; the value is the group `group`. No match is `F002`.
    #[serde(default)]
    pub pattern: Option<String>,
    /// With `pattern`: the named group that is the value (may be left out if the pattern has
    /// exactly one named group). A group that matched nothing gives an absent value.
    #[serde(default)]
    pub group: Option<String>,
    /// Texts that mean "no value" (`"unbekannt"`, `"k.A."`, `"-"`): such a value counts as
    /// absent, so `default` applies. Compared after cleaning (and with `fold`, folded).
    #[serde(default)]
    pub absent: Vec<String>,
    /// `map` (and `absent`) ignore case and umlaut spellings: `Ä`/`ä` = `ae`, `ö` = `oe`,
    /// `ü` = `ue`, `ß` = `ss`.
    #[serde(default)]
    pub fold: bool,
    /// Date pattern of the source (`TT.MM.JJJJ`, `MM/JJJJ`, `JJJJ-MM-TT`, …): the value becomes
    /// `YYYY-MM-DD` (or `YYYY-MM` for patterns without a day). Not a valid date → `F002`.
    #[serde(default)]
    pub date: Option<String>,
    /// With `date`: `00` for an unknown day (and month) gives a partial date (`YYYY-MM`, `YYYY`).
    #[serde(default)]
    pub partial: bool,
    /// For `type = "number"` given as text: `dot` (`19.5`) or `comma` (`19,5`); a number with the
    /// other separator or a thousands separator is `F002`.
    #[serde(default)]
    pub decimal: Option<Decimal>,
    /// Name of a value map in `[maps]`; a value not in it is `F003`.
    #[serde(default)]
    pub map: Option<String>,
    /// Used when the source is absent or empty.
    #[serde(default)]
    pub default: Option<String>,
    /// Missing or empty → `X001` (delivery-level fields only).
    #[serde(default)]
    pub required: bool,
}

/// Decimal separator of numbers given as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decimal {
    /// `19.5`
    Dot,
    /// `19,5`
    Comma,
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

/// The 1-based line of a key in a TOML text (`["record", "fields", "program", "map"]`): of the
/// deepest key of the path that the text has, whether written as a table header, a dotted key
/// or inside an inline table; 0 when not even the first key is there (or the text is no TOML).
/// For problems found after parsing (mappings, policies), so that they too name their line.
pub fn key_line(text: &str, path: &[&str]) -> usize {
    let Ok(doc) = toml_edit::ImDocument::parse(text) else {
        return 0;
    };
    let mut table: &dyn toml_edit::TableLike = doc.as_table();
    let mut line = 0;
    for key in path {
        let Some((k, item)) = table.get_key_value(key) else {
            break;
        };
        if let Some(span) = k.span().or_else(|| item.span()) {
            line = line_of(text, span.start);
        }
        match item.as_table_like() {
            Some(t) => table = t,
            None => break,
        }
    }
    line
}

/// Whether a mapping may fill a canonical path (list fields as `services[].kind`).
fn is_canonical_target(target: &str) -> bool {
    matches!(target, "source.record_id" | "reporting_period" | "program")
        || (crate::model::LEAF_PATHS.contains(&target) && target != "client.linkage_key")
}

/// A source path split into tokens: a pointer for JSON and XML (`/a/@b`), a column for CSV.
pub fn path_tokens(syntax: Syntax, path: &str) -> Option<Vec<String>> {
    match syntax {
        Syntax::Csv => (!path.is_empty()).then(|| vec![path.to_string()]),
        Syntax::Json | Syntax::Xml | Syntax::Jsonl => {
            pointer_tokens(path).filter(|t| !t.is_empty())
        }
    }
}

/// The `../` steps at the start of a record path: how many enclosing elements up, and the rest
/// as a path from there (`../name/x` → `(1, "/name/x")`). CSV paths never go up.
pub fn split_up(syntax: Syntax, path: &str) -> (usize, String) {
    if syntax == Syntax::Csv {
        return (0, path.to_string());
    }
    let mut up = 0;
    let mut rest = path;
    while let Some(r) = rest.strip_prefix("../") {
        up += 1;
        rest = r;
    }
    if up == 0 {
        (0, path.to_string())
    } else {
        (up, format!("/{rest}"))
    }
}

/// The canonical type of a target a rule must produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetType {
    /// One text.
    Text,
    /// One text holding a date.
    Date,
    /// A number.
    Number,
    /// A list of texts.
    List,
}

fn target_type(target: &str) -> TargetType {
    match target {
        "consents[].fields" => TargetType::List,
        "services[].hours_per_week" => TargetType::Number,
        "reporting_period"
        | "client.birth_date"
        | "case.opened_on"
        | "case.closed_on"
        | "services[].start"
        | "services[].end"
        | "consents[].granted_on"
        | "consents[].valid_until"
        | "consents[].withdrawn_on" => TargetType::Date,
        _ => TargetType::Text,
    }
}

/// The most bytes a compiled `pattern` may take (`RegexBuilder::size_limit`).
pub const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// Compiles a rule's `pattern`: anchored at both ends (the whole value must match), bounded in
/// size.
pub fn compile_pattern(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(PATTERN_SIZE_LIMIT)
        .dfa_size_limit(PATTERN_SIZE_LIMIT)
        .build()
}

/// Folds a text for `fold = true`: lowercase, and `ä` → `ae`, `ö` → `oe`, `ü` → `ue`, `ß` → `ss`.
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        match c {
            'ä' => out.push_str("ae"),
            'ö' => out.push_str("oe"),
            'ü' => out.push_str("ue"),
            'ß' => out.push_str("ss"),
            c => out.push(c),
        }
    }
    out
}

/// How a source path may be written where it stands.
#[derive(Clone, Copy, Default)]
struct Allow {
    /// `../` (record fields and record.informational).
    up: bool,
    /// `*` for every element of a list (informational).
    star: bool,
    /// The delivery: must not reach into the records.
    header: bool,
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
        parsed.check(file, text)?;
        Ok(parsed)
    }

    fn check(&self, file: &str, text: &str) -> Result<(), MappingError> {
        // Each problem names the key it is about, for its line.
        let at = |path: &[&str], message: String| MappingError::Invalid {
            file: file.to_string(),
            line: key_line(text, path),
            message,
        };
        fn key(path: &[String]) -> Vec<&str> {
            path.iter().map(String::as_str).collect()
        }
        if self.id.is_empty()
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(at(
                &["id"],
                format!("id '{}' must be lowercase letters, digits and '-'", self.id),
            ));
        }
        if let Some(records) = &self.delivery.records
            && self.syntax != Syntax::Csv
        {
            let tokens = pointer_tokens(records).unwrap_or_default();
            if tokens.is_empty()
                || tokens.len() > MAX_RECORD_STEPS
                || tokens.iter().any(|t| {
                    t.is_empty() || t == "*" || t == ".." || t.bytes().all(|b| b.is_ascii_digit())
                })
            {
                return Err(at(
                    &["delivery", "records"],
                    format!(
                        "delivery.records '{records}' must name the list of records through every list on the way, e.g. \"/cases\" or \"/clients/cases\" (member or element names, at most {MAX_RECORD_STEPS})"
                    ),
                ));
            }
        }
        match self.syntax {
            Syntax::Json | Syntax::Xml => {
                if self.delivery.records.is_none() {
                    return Err(at(
                        &["delivery"],
                        "delivery.records is required for JSON and XML".into(),
                    ));
                }
            }
            Syntax::Jsonl => {
                let d = &self.delivery;
                let header_line = self.jsonl.as_ref().is_some_and(|j| j.header_line);
                if !header_line
                    && (d.version.is_some()
                        || d.idempotency_key.is_some()
                        || d.mode.is_some()
                        || d.test.is_some()
                        || !d.objects.is_empty()
                        || !d.once.is_empty()
                        || !d.informational.is_empty()
                        || !d.fields.is_empty())
                {
                    return Err(at(&["delivery"],
                        "a JSON Lines mapping without [jsonl] header_line = true has no delivery header: the mode comes from ?mode=, the idempotency key from the Idempotency-Key header, and every other value from the record lines".into(),
                    ));
                }
            }
            Syntax::Csv => {
                if self.csv.is_none() {
                    return Err(at(
                        &["syntax"],
                        "syntax = \"csv\" needs a [csv] section".into(),
                    ));
                }
                let d = &self.delivery;
                if d.records.is_some()
                    || d.version.is_some()
                    || d.idempotency_key.is_some()
                    || d.mode.is_some()
                    || d.test.is_some()
                    || !d.objects.is_empty()
                    || !d.once.is_empty()
                    || !d.informational.is_empty()
                    || !d.fields.is_empty()
                {
                    return Err(at(&["delivery"],
                        "a CSV mapping has no [delivery] section: every value comes from the rows, the mode from ?mode= and the idempotency key from the Idempotency-Key header".into(),
                    ));
                }
            }
        }
        if self.syntax == Syntax::Xml && self.xml.is_none() {
            return Err(at(
                &["syntax"],
                "syntax = \"xml\" needs an [xml] section".into(),
            ));
        }
        if self.syntax != Syntax::Xml && self.xml.is_some() {
            return Err(at(
                &["xml"],
                "an [xml] section needs syntax = \"xml\"".into(),
            ));
        }
        if self.syntax != Syntax::Jsonl && self.jsonl.is_some() {
            return Err(at(
                &["jsonl"],
                "a [jsonl] section needs syntax = \"jsonl\"".into(),
            ));
        }
        if self.syntax != Syntax::Csv && self.csv.is_some() {
            return Err(at(
                &["csv"],
                "a [csv] section needs syntax = \"csv\"".into(),
            ));
        }
        if let Some(csv) = &self.csv {
            if encoding_rs::Encoding::for_label(csv.encoding.as_bytes()).is_none() {
                return Err(at(
                    &["csv", "encoding"],
                    format!("csv.encoding '{}' is not an encoding label", csv.encoding),
                ));
            }
            if !csv.separator.is_ascii() || !csv.quote.is_ascii() {
                let which = if csv.separator.is_ascii() {
                    "quote"
                } else {
                    "separator"
                };
                return Err(at(
                    &["csv", which],
                    "csv.separator and csv.quote must be ASCII characters".into(),
                ));
            }
        }
        // Source paths, each with the key that names it and what it may hold.
        let mut paths: Vec<(&str, Vec<String>, Allow)> = Vec::new();
        let named = |keys: &[&str]| keys.iter().map(|k| k.to_string()).collect::<Vec<_>>();
        let header = Allow {
            header: true,
            ..Allow::default()
        };
        paths.extend(self.delivery.version.iter().map(|v| {
            (
                v.from.as_str(),
                named(&["delivery", "version", "from"]),
                header,
            )
        }));
        paths.extend(
            self.delivery
                .idempotency_key
                .iter()
                .map(|p| (p.as_str(), named(&["delivery", "idempotency_key"]), header)),
        );
        paths.extend(self.delivery.mode.iter().map(|m| {
            (
                m.from.as_str(),
                named(&["delivery", "mode", "from"]),
                header,
            )
        }));
        paths.extend(self.delivery.test.iter().map(|m| {
            (
                m.from.as_str(),
                named(&["delivery", "test", "from"]),
                header,
            )
        }));
        for (list, keys, allow) in [
            (&self.delivery.objects, ["delivery", "objects"], header),
            (&self.delivery.once, ["delivery", "once"], header),
            (
                &self.delivery.informational,
                ["delivery", "informational"],
                Allow {
                    star: true,
                    ..header
                },
            ),
            (
                &self.record.informational,
                ["record", "informational"],
                Allow {
                    up: true,
                    star: true,
                    header: false,
                },
            ),
        ] {
            paths.extend(list.iter().map(|p| (p.as_str(), named(&keys), allow)));
        }
        // Field rules: (canonical target, the key of the rule, the rule, may go up).
        let mut rules: Vec<(String, Vec<String>, &FieldRule, Allow)> = Vec::new();
        rules.extend(
            self.delivery
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), named(&["delivery", "fields", k]), v, header)),
        );
        rules.extend(self.record.fields.iter().map(|(k, v)| {
            (
                k.clone(),
                named(&["record", "fields", k]),
                v,
                Allow {
                    up: true,
                    ..Allow::default()
                },
            )
        }));
        for (name, list) in &self.record.lists {
            let list_key = named(&["record", "lists", name]);
            if name != "services" && name != "consents" {
                return Err(at(
                    &key(&list_key),
                    format!(
                        "list '{name}': only the canonical arrays 'services' and 'consents' can be built from a list"
                    ),
                ));
            }
            match (self.syntax, &list.from, &list.rows) {
                (Syntax::Csv, None, Some(rows)) => {
                    let rows_key = [key(&list_key), vec!["rows"]].concat();
                    if rows.when_any.is_empty() == rows.first_with.is_none() {
                        return Err(at(
                            &rows_key,
                            format!(
                                "list '{name}': rows needs exactly one of when_any or first_with"
                            ),
                        ));
                    }
                    let when_any = [list_key.clone(), named(&["rows", "when_any"])].concat();
                    let first_with = [list_key.clone(), named(&["rows", "first_with"])].concat();
                    paths.extend(
                        rows.when_any
                            .iter()
                            .map(|p| (p.as_str(), when_any.clone(), Allow::default())),
                    );
                    paths.extend(
                        rows.first_with
                            .iter()
                            .map(|p| (p.as_str(), first_with.clone(), Allow::default())),
                    );
                }
                (Syntax::Csv, _, _) => {
                    return Err(at(
                        &[key(&list_key), vec!["from"]].concat(),
                        format!("list '{name}': CSV lists take rows = {{…}}, not from"),
                    ));
                }
                (_, Some(from), None) => {
                    paths.push((
                        from,
                        [list_key.clone(), named(&["from"])].concat(),
                        Allow::default(),
                    ));
                }
                _ => {
                    return Err(at(
                        &key(&list_key),
                        format!("list '{name}' needs from = \"…\" (and no rows)"),
                    ));
                }
            }
            rules.extend(list.fields.iter().map(|(k, v)| {
                (
                    format!("{name}[].{k}"),
                    [list_key.clone(), named(&["fields", k])].concat(),
                    v,
                    Allow::default(),
                )
            }));
        }
        for (target, rule_key, _, _) in &rules {
            if !is_canonical_target(target) {
                return Err(at(
                    &key(rule_key),
                    format!(
                        "'{target}' is not a canonical field a mapping can fill (see canonical-model.md)"
                    ),
                ));
            }
        }
        for (target, rule_key, rule, _) in &rules {
            if rule.required && rule_key[0] == "record" {
                return Err(at(
                    &[key(rule_key), vec!["required"]].concat(),
                    format!(
                        "field '{target}': required applies to [delivery.fields] only (a missing record value is F001 anyway)"
                    ),
                ));
            }
        }
        for (target, rule_key, rule, allow) in &rules {
            let fail = |k: &str, message: String| at(&[key(rule_key), vec![k]].concat(), message);
            if rule.map.is_some() && rule.kind == ValueKind::Number {
                return Err(fail(
                    "map",
                    format!("field '{target}': map does not apply to numbers"),
                ));
            }
            match (&rule.from, &rule.value) {
                (Some(from), None) => {
                    paths.push((from, [rule_key.clone(), named(&["from"])].concat(), *allow))
                }
                (None, Some(_)) => {}
                _ => {
                    return Err(at(
                        &key(rule_key),
                        format!("field '{target}' needs exactly one of from or value"),
                    ));
                }
            }
            if let Some(map) = &rule.map
                && !self.maps.contains_key(map)
            {
                return Err(fail(
                    "map",
                    format!(
                        "field '{target}' uses value map '{map}', which [maps] does not define"
                    ),
                ));
            }
            if rule.join.is_some() && rule.kind != ValueKind::StringList {
                return Err(fail(
                    "join",
                    format!("field '{target}': join needs type = \"string_list\""),
                ));
            }
            if rule.split.is_some() && rule.kind != ValueKind::StringList && rule.part.is_none() {
                return Err(fail(
                    "split",
                    format!(
                        "field '{target}': split needs type = \"string_list\" (all parts, as a list) or part = N (one part)"
                    ),
                ));
            }
            if let Some(part) = rule.part {
                if rule.split.is_none() {
                    return Err(fail(
                        "part",
                        format!("field '{target}': part needs split = \"…\" (where to cut)"),
                    ));
                }
                if part == 0 {
                    return Err(fail(
                        "part",
                        format!(
                            "field '{target}': part counts from 1 (the first part), or from -1 (the last)"
                        ),
                    ));
                }
                if rule.kind == ValueKind::StringList {
                    return Err(fail(
                        "part",
                        format!(
                            "field '{target}': part takes one part, so the rule gives one text: use type = \"string\" (or \"number\")"
                        ),
                    ));
                }
            }
            if rule.decimal.is_some() && rule.kind != ValueKind::Number {
                return Err(fail(
                    "decimal",
                    format!("field '{target}': decimal needs type = \"number\""),
                ));
            }
            if rule.group.is_some() && rule.pattern.is_none() {
                return Err(fail(
                    "group",
                    format!("field '{target}': group needs a pattern"),
                ));
            }
            if let Some(pattern) = &rule.pattern {
                let re = compile_pattern(pattern).map_err(|e| {
                    let why = match e {
                        regex::Error::CompiledTooBig(_) => format!(
                            "it compiles to more than {PATTERN_SIZE_LIMIT} bytes; make it simpler"
                        ),
                        other => other.to_string(),
                    };
                    fail(
                        "pattern",
                        format!("field '{target}': pattern does not compile: {why}"),
                    )
                })?;
                let names: Vec<&str> = re.capture_names().flatten().collect();
                match &rule.group {
                    Some(g) if !names.contains(&g.as_str()) => {
                        return Err(fail(
                            "group",
                            format!(
                                "field '{target}': the pattern has no group named '{g}' (it has: {})",
                                if names.is_empty() {
                                    "none".to_string()
                                } else {
                                    names.join(", ")
                                }
                            ),
                        ));
                    }
                    Some(_) => {}
                    None if names.len() == 1 => {}
                    None if names.is_empty() => {
                        return Err(fail(
                            "pattern",
                            format!(
                                "field '{target}': the pattern needs a named group (?P<name>…) that holds the value"
                            ),
                        ));
                    }
                    None => {
                        return Err(fail(
                            "pattern",
                            format!(
                                "field '{target}': the pattern has several named groups ({}): say which one is the value with group = \"…\"",
                                names.join(", ")
                            ),
                        ));
                    }
                }
            }
            if rule.fold && rule.map.is_none() && rule.absent.is_empty() {
                return Err(fail(
                    "fold",
                    format!(
                        "field '{target}': fold applies to map and absent, and the rule has neither"
                    ),
                ));
            }
            if rule.fold
                && let Some(name) = &rule.map
                && let Some(map) = self.maps.get(name)
            {
                let mut seen: BTreeMap<String, (&String, &String)> = BTreeMap::new();
                for (k, v) in map {
                    if let Some((k0, v0)) = seen.insert(fold(k), (k, v))
                        && v0 != v
                    {
                        return Err(fail(
                            "fold",
                            format!(
                                "field '{target}': with fold, '{k0}' and '{k}' of value map '{name}' are the same label but map to different codes"
                            ),
                        ));
                    }
                }
            }
            if let Some(pattern) = &rule.date
                && super::rules::DatePattern::parse(pattern).is_none()
            {
                return Err(fail(
                    "date",
                    format!(
                        "field '{target}': date pattern '{pattern}' must be built from TT, MM and JJJJ with separators, e.g. TT.MM.JJJJ"
                    ),
                ));
            }
            // The rule must be able to give its target's type.
            let gives_list = rule.kind == ValueKind::StringList && rule.join.is_none();
            match target_type(target) {
                TargetType::List if !gives_list => {
                    return Err(fail(
                        "type",
                        format!(
                            "field '{target}' holds a list of texts: the rule needs type = \"string_list\" without join"
                        ),
                    ));
                }
                TargetType::Text | TargetType::Date if gives_list => {
                    return Err(fail(
                        if rule.split.is_some() {
                            "split"
                        } else {
                            "type"
                        },
                        format!(
                            "field '{target}' holds one text, but type = \"string_list\" without join gives a list: add join = \" \" (all entries in one text), or take one part with split and part = N (and type = \"string\")"
                        ),
                    ));
                }
                TargetType::Number if rule.kind != ValueKind::Number => {
                    return Err(fail(
                        "type",
                        format!(
                            "field '{target}' holds a number: the rule needs type = \"number\" (with decimal = \"comma\" or \"dot\" for numbers written as text)"
                        ),
                    ));
                }
                TargetType::Text | TargetType::Date | TargetType::List
                    if rule.kind == ValueKind::Number =>
                {
                    return Err(fail(
                        "type",
                        format!(
                            "field '{target}' holds text, but type = \"number\" gives a number"
                        ),
                    ));
                }
                TargetType::Text | TargetType::Number | TargetType::List if rule.date.is_some() => {
                    return Err(fail(
                        "date",
                        format!("field '{target}' is not a date: date does not apply"),
                    ));
                }
                _ => {}
            }
        }
        let steps = self
            .delivery
            .records
            .as_deref()
            .and_then(pointer_tokens)
            .unwrap_or_default();
        let enclosing = self.levels().saturating_sub(1);
        for (p, path_key, allow) in paths {
            let (up, rest) = split_up(self.syntax, p);
            let fail = |message: String| Err(at(&key(&path_key), message));
            if up > 0 && !allow.up {
                return fail(format!(
                    "'{p}': '../' (an enclosing element of the record) can be read only by [record.fields] and record.informational"
                ));
            }
            if up > enclosing {
                return fail(if enclosing == 0 {
                    format!(
                        "'{p}': a record has no enclosing element here; values of the header are read by [delivery.fields]"
                    )
                } else {
                    format!(
                        "'{p}' goes up {up} elements, but a record (delivery.records) has only {enclosing} enclosing element(s)"
                    )
                });
            }
            let Some(tokens) = path_tokens(self.syntax, &rest) else {
                return fail(match self.syntax {
                    Syntax::Csv => format!("'{p}' is not a column name"),
                    _ => format!("'{p}' is not a path (it must start with '/')"),
                });
            };
            if self.syntax != Syntax::Csv {
                if tokens.iter().any(|t| t == "..") {
                    return fail(format!("'{p}': '..' may only stand at the start of a path"));
                }
                if !allow.star && tokens.iter().any(|t| t == "*") {
                    return fail(format!(
                        "'{p}': '*' (every element of a list) is allowed in informational only"
                    ));
                }
                if allow.header
                    && !steps.is_empty()
                    && tokens.first() == steps.first()
                    && self.syntax != Syntax::Jsonl
                {
                    return fail(format!(
                        "'{p}' lies inside the records ('{}'): paths inside a record belong in [record] (record.informational, [record.fields]), relative to one record",
                        self.delivery.records.as_deref().unwrap_or("")
                    ));
                }
            }
        }
        Ok(())
    }

    /// Levels of elements down to a record: 1 when the records are one list (`/faelle`), 2 for
    /// `/klienten/faelle` (a client, then its case), …; a JSON Lines line is one more level when
    /// `records` is set.
    pub fn levels(&self) -> usize {
        let steps = self
            .delivery
            .records
            .as_deref()
            .and_then(pointer_tokens)
            .map(|t| t.len())
            .unwrap_or(0);
        match self.syntax {
            Syntax::Csv => 1,
            Syntax::Json | Syntax::Xml => steps.max(1),
            Syntax::Jsonl => steps + 1,
        }
    }

    /// The source field name of a pointer, for messages (`/person/name/last` → `last`).
    pub fn source_name(pointer: &str) -> &str {
        pointer
            .rsplit('/')
            .next()
            .unwrap_or(pointer)
            .trim_start_matches('@')
    }

    /// A value map by name.
    pub fn value_map(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.maps.get(name)
    }
}

/// A tree of the source paths a mapping knows, to find unknown fields (`W002`).
#[derive(Debug, Default)]
pub struct KnownTree {
    /// Children by key. A node with `leaf` set is consumed whole. The keys come from the mapping
    /// file, and every member of every record is looked up here, so the hasher is FxHash, not
    /// SipHash. Lookups of vendor keys cannot degrade a table that holds only the mapping's keys.
    pub children: rustc_hash::FxHashMap<String, KnownTree>,
    /// The whole value at this path is read by a rule.
    pub leaf: bool,
    /// For list sources: the tree of one element.
    pub element: Option<Box<KnownTree>>,
}

impl KnownTree {
    /// Marks a path as known; returns the node. A `*` step stands for every element of a list.
    pub fn insert(&mut self, syntax: Syntax, path: &str) -> &mut KnownTree {
        let mut node = self;
        for token in path_tokens(syntax, path).unwrap_or_default() {
            node = if token == "*" {
                node.element.get_or_insert_with(Default::default)
            } else {
                node.children.entry(token).or_default()
            };
        }
        node
    }
}
