//! Validation: owns the canonical JSON Schema (`schemas/canonical-record.schema.json`), the code
//! lists (`schemas/codelists/*.gc`, Genericode 1.0) and the record rules of conformance-rules.md,
//! and turns a mapping's [`Draft`] into a [`CanonicalRecord`] or the list of everything wrong with
//! it.
//!
//! A [`Validator`] is built once (the schema compiled, the code lists loaded, the schema's
//! `x-codelist` and `format: "date"` annotations collected) and then shared read-only; [`Validator::check`]
//! runs per record. A record's findings are, in this order: the mapping's own issues, the rules
//! checked in code (code lists, calendar dates, partial birth dates, names, postal code,
//! municipality key, e-mail, date order, household role, consent field groups), then the schema's
//! errors on fields nothing else has complained about. Codes: required `F001`; type, pattern,
//! length, calendar `F002`; code list `F003`; inconsistency `F004`; range `F006`; partial birth
//! date `W001` (a warning).

mod codelists;
mod rules;
mod schema;

use crate::adapt::{Draft, Issue};
use crate::catalogue::{Code, echo, shape, value_for};
use crate::model::{CanonicalRecord, FIELD_GROUPS};
use codelists::CodeList;
use rules::{BirthRange, NameProblem};
use schema::FieldPath;
use serde_json::Value;
use std::path::Path;

/// File name of the canonical schema inside a schema directory.
pub const SCHEMA_FILE: &str = "canonical-record.schema.json";

/// Sub-directory of a schema directory that holds the code lists.
pub const CODELIST_DIR: &str = "codelists";

/// The schema and code lists of the repository, compiled into the binary.
const EMBEDDED_SCHEMA: (&str, &str) = (
    "schemas/canonical-record.schema.json",
    include_str!("../../schemas/canonical-record.schema.json"),
);

macro_rules! embedded_lists {
    ($($name:literal),* $(,)?) => {
        [$((
            concat!("schemas/codelists/", $name, ".gc"),
            include_str!(concat!("../../schemas/codelists/", $name, ".gc")),
        )),*]
    };
}

const EMBEDDED_CODELISTS: [(&str, &str); 10] = embedded_lists!(
    "employment_status",
    "household_role",
    "nationality",
    "program",
    "purpose",
    "risk_level",
    "school_qualification",
    "service_kind",
    "sex",
    "substance",
);

/// A problem loading the schema or a code list. Always names the file, and the line where there
/// is one.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// A file could not be read.
    #[error("{file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The schema file is not valid JSON.
    #[error("{file}:{line}:{column}: not valid JSON: {message}")]
    Json {
        /// The file.
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The schema is valid JSON but not a usable schema (or an annotation is wrong).
    #[error("{file}{}: {message}", at(line))]
    Schema {
        /// The file.
        file: String,
        /// 1-based line, when known.
        line: Option<usize>,
        /// What is wrong (names the JSON pointer).
        message: String,
    },
    /// A code-list file is not well-formed or not a usable Genericode code list.
    #[error("{file}{}: {message}", at(line))]
    CodeList {
        /// The file.
        file: String,
        /// 1-based line, when known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
}

/// At most `max` characters of an administrator's file content for an error message.
fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn at(line: &Option<usize>) -> String {
    line.map(|l| format!(":{l}")).unwrap_or_default()
}

/// The outcome of checking one draft.
#[derive(Debug)]
pub struct Checked {
    /// The canonical record, when the draft has no error.
    pub record: Option<CanonicalRecord>,
    /// Every error of the record (the mapping's first), `F001`–`F006`.
    pub errors: Vec<Issue>,
    /// Warnings (`W001`, and the mapping's `W002`s); they do not reject the record.
    pub warnings: Vec<Issue>,
}

/// A code-list annotation resolved to a loaded list.
struct CodeListField {
    path: FieldPath,
    list: usize,
}

/// The compiled schema and the loaded code lists. Immutable after loading; `Send + Sync`, so
/// share it with an `Arc`.
pub struct Validator {
    schema: jsonschema::Validator,
    doc: Value,
    /// Sorted by name.
    lists: Vec<CodeList>,
    codelist_fields: Vec<CodeListField>,
    date_fields: Vec<FieldPath>,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.lists.iter().map(|l| l.name.as_str()).collect();
        f.debug_struct("Validator")
            .field("codelists", &names)
            .finish_non_exhaustive()
    }
}

impl Validator {
    /// Loads `canonical-record.schema.json` and `codelists/*.gc` from a directory (the
    /// repository's `schemas/`; a directory that holds `schemas/` is accepted too).
    pub fn load_dir(dir: &Path) -> Result<Validator, ValidateError> {
        let dir =
            if !dir.join(SCHEMA_FILE).exists() && dir.join("schemas").join(SCHEMA_FILE).exists() {
                dir.join("schemas")
            } else {
                dir.to_path_buf()
            };
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| ValidateError::Io {
                file: p.display().to_string(),
                source,
            })
        };
        let schema_path = dir.join(SCHEMA_FILE);
        let schema_text = read(&schema_path)?;
        let list_dir = dir.join(CODELIST_DIR);
        let entries = std::fs::read_dir(&list_dir).map_err(|source| ValidateError::Io {
            file: list_dir.display().to_string(),
            source,
        })?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| ValidateError::Io {
                file: list_dir.display().to_string(),
                source,
            })?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "gc") {
                files.push(path);
            }
        }
        files.sort();
        let mut lists = Vec::with_capacity(files.len());
        for path in &files {
            lists.push((path.display().to_string(), read(path)?));
        }
        let list_refs: Vec<(&str, &str)> = lists
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        Validator::from_sources(
            (&schema_path.display().to_string(), &schema_text),
            &list_refs,
        )
    }

    /// The repository's schema and code lists compiled into the binary, for `weiche serve` with
    /// no configuration.
    pub fn embedded() -> Result<Validator, ValidateError> {
        Validator::from_sources(EMBEDDED_SCHEMA, &EMBEDDED_CODELISTS)
    }

    /// Builds from file contents: `(file name, text)` of the schema and of each code list. A code
    /// list's name is its file name without directories and `.gc`.
    pub fn from_sources(
        schema: (&str, &str),
        codelists: &[(&str, &str)],
    ) -> Result<Validator, ValidateError> {
        let (schema_file, schema_text) = schema;
        let schema_err = |line: Option<usize>, message: String| ValidateError::Schema {
            file: schema_file.to_string(),
            line,
            message,
        };
        let doc: Value = serde_json::from_str(schema_text).map_err(|e| {
            let (line, column) = (e.line(), e.column());
            let full = e.to_string();
            let suffix = format!(" at line {line} column {column}");
            ValidateError::Json {
                file: schema_file.to_string(),
                line,
                column,
                message: full.strip_suffix(&suffix).unwrap_or(&full).to_string(),
            }
        })?;
        let compiled = jsonschema::draft202012::options()
            .should_validate_formats(false)
            .build(&doc)
            .map_err(|e| {
                let pointer = e.instance_path().as_str().to_string();
                schema_err(
                    schema::line_of_pointer(schema_text, &pointer),
                    format!(
                        "not a valid JSON Schema at '{pointer}': {}",
                        shorten(&e.to_string(), 300)
                    ),
                )
            })?;
        let annotations = schema::collect_annotations(&doc).map_err(|(pointer, m)| {
            schema_err(schema::line_of_pointer(schema_text, &pointer), m)
        })?;

        let mut lists = Vec::with_capacity(codelists.len());
        for (file, text) in codelists {
            let list = codelists::parse_genericode(file, text)?;
            if lists.iter().any(|l: &CodeList| l.name == list.name) {
                return Err(ValidateError::CodeList {
                    file: file.to_string(),
                    line: None,
                    message: format!("a second code list named '{}'", list.name),
                });
            }
            lists.push(list);
        }
        lists.sort_by(|a, b| a.name.cmp(&b.name));

        let mut codelist_fields = Vec::with_capacity(annotations.codelists.len());
        for a in annotations.codelists {
            let Ok(list) = lists.binary_search_by(|l| l.name.as_str().cmp(&a.list)) else {
                return Err(schema_err(
                    schema::line_of_pointer(schema_text, &a.pointer),
                    format!(
                        "{}: x-codelist '{}' has no code list file {}.gc",
                        a.path.pattern(),
                        a.list,
                        a.list
                    ),
                ));
            };
            codelist_fields.push(CodeListField { path: a.path, list });
        }
        Ok(Validator {
            schema: compiled,
            doc,
            lists,
            codelist_fields,
            date_fields: annotations.dates,
        })
    }

    /// The loaded code lists as `(name, listURI, listVersionID)`, sorted by name.
    pub fn codelist_ids(&self) -> Vec<(String, String, String)> {
        self.lists
            .iter()
            .map(|l| (l.name.clone(), l.uri.clone(), l.version.clone()))
            .collect()
    }

    /// True if `code` is in list `list` (exact, case-sensitive); false for an unknown list.
    pub fn has_code(&self, list: &str, code: &str) -> bool {
        self.list(list).is_some_and(|l| l.contains(code))
    }

    /// The position of `code` in list `list`, in the order the list's file gives its rows;
    /// `None` for a code not in the list or an unknown list.
    pub fn code_rank(&self, list: &str, code: &str) -> Option<usize> {
        self.list(list).and_then(|l| l.rank(code))
    }

    /// The codes of list `list` in the order its file gives its rows; `None` for an unknown list.
    pub fn codes_in_order(&self, list: &str) -> Option<Vec<&str>> {
        let l = self.list(list)?;
        let mut codes: Vec<(&str, usize)> = l.codes.iter().map(|(c, i)| (c.as_str(), *i)).collect();
        codes.sort_by_key(|(_, i)| *i);
        Some(codes.into_iter().map(|(c, _)| c).collect())
    }

    fn list(&self, name: &str) -> Option<&CodeList> {
        self.lists
            .binary_search_by(|l| l.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.lists[i])
    }

    /// Parses one draft into a canonical record, or lists every error of it. The draft's own
    /// issues are carried over (`W…` into `warnings`, everything else into `errors`).
    pub fn check(&self, draft: Draft) -> Checked {
        let Draft { fields, issues, .. } = draft;
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        for issue in issues {
            if matches!(issue.code, Code::W001 | Code::W002) {
                warnings.push(issue);
            } else {
                errors.push(issue);
            }
        }
        let value = Value::Object(fields);
        let mut report = Report {
            n_mapping: errors.len(),
            errors,
        };
        self.rules(&value, &mut report, &mut warnings);

        if !self.schema.is_valid(&value) {
            let n_before = report.errors.len();
            for err in self.schema.iter_errors(&value) {
                schema::map_error(&self.doc, &err, &mut |code, field, message| {
                    report.add_schema(n_before, code, field, message);
                });
            }
        }
        let mut errors = report.errors;
        // A missing case number shows as one F001, on source.record_id.
        let record_id_missing = errors
            .iter()
            .any(|e| e.code == Code::F001 && e.field.as_deref() == Some("source.record_id"));
        if record_id_missing {
            let n_mapping = report.n_mapping;
            let mut i = 0usize;
            errors.retain(|e| {
                let keep = i < n_mapping
                    || !(e.code == Code::F001 && e.field.as_deref() == Some("case.case_id"));
                i += 1;
                keep
            });
        }

        let record = if errors.is_empty() {
            match serde_json::from_value::<CanonicalRecord>(value) {
                Ok(r) => Some(r),
                Err(e) => {
                    errors.push(Issue {
                        code: Code::F002,
                        field: None,
                        // serde's text may quote a value, so only its category is named.
                        message: format!(
                            "record does not fit the canonical model ({:?} error)",
                            e.classify()
                        ),
                    });
                    None
                }
            }
        } else {
            None
        };
        Checked {
            record,
            errors,
            warnings,
        }
    }

    /// The rules checked in code.
    fn rules(&self, v: &Value, r: &mut Report, warnings: &mut Vec<Issue>) {
        let mut indices = Vec::new();

        let period = match get(v, &["reporting_period"]) {
            Some(Value::String(s)) => {
                let p = rules::parse_month(s);
                if p.is_none() {
                    r.add(
                        Code::F002,
                        "reporting_period".into(),
                        format!("'{}' is not a month YYYY-MM", echo(s)),
                    );
                }
                p
            }
            _ => None,
        };

        for field in &self.codelist_fields {
            let list = &self.lists[field.list];
            field.path.for_each(v, &mut indices, &mut |val, ix| {
                if let Value::String(s) = val
                    && !list.contains(s)
                {
                    r.add(
                        Code::F003,
                        field.path.display(ix),
                        format!(
                            "{} is not in code list {}",
                            value_for(&field.path.pattern(), s),
                            list.name
                        ),
                    );
                }
            });
        }

        for path in &self.date_fields {
            path.for_each(v, &mut indices, &mut |val, ix| {
                if let Value::String(s) = val
                    && rules::parse_date(s).is_none()
                {
                    r.add(
                        Code::F002,
                        path.display(ix),
                        format!(
                            "not a date YYYY-MM-DD: {}",
                            rules::date_problem(s, &["YYYY-MM-DD"])
                        ),
                    );
                }
            });
        }

        let Some(client) = v.get("client") else {
            self.case_rules(v, r);
            return;
        };
        if let Some(Value::String(s)) = client.get("birth_date") {
            const FIELD: &str = "client.birth_date";
            match rules::parse_birth_date(s) {
                None => r.add(
                    Code::F002,
                    FIELD.into(),
                    format!(
                        "not a date YYYY-MM-DD, YYYY-MM or YYYY: {}",
                        rules::date_problem(s, &["YYYY-MM-DD", "YYYY-MM", "YYYY"])
                    ),
                ),
                Some(birth) => {
                    if birth.partial
                        && !warnings
                            .iter()
                            .any(|w| w.code == Code::W001 && w.field.as_deref() == Some(FIELD))
                    {
                        warnings.push(Issue::new(
                            Code::W001,
                            FIELD,
                            if s.len() == 4 {
                                "partial birth date: the year only".to_string()
                            } else {
                                "partial birth date: the year and month only".to_string()
                            },
                        ));
                    }
                    if let Some(period) = period {
                        let rp = get(v, &["reporting_period"])
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        match rules::birth_range(&birth, period) {
                            BirthRange::Ok => {}
                            BirthRange::AfterPeriod => r.add(
                                Code::F004,
                                FIELD.into(),
                                format!("birth date is after the reporting month {rp}"),
                            ),
                            BirthRange::TooOld => r.add(
                                Code::F004,
                                FIELD.into(),
                                format!(
                                    "birth date is more than 120 years before the end of the reporting month {rp}"
                                ),
                            ),
                        }
                    }
                }
            }
        }

        for (key, what) in [
            ("family_name", "family name"),
            ("given_names", "given names"),
        ] {
            if let Some(Value::String(s)) = client.get(key)
                && let Err(problem) = rules::check_name(s)
            {
                let message = match problem {
                    NameProblem::Empty => format!("{what} is empty"),
                    NameProblem::TooLong(n) => {
                        format!("{what} has {n} characters, more than {}", rules::NAME_MAX)
                    }
                    NameProblem::BadChar(c) => format!(
                        "{what} ({}) contains '{}', which is not a letter, mark, space, '-', ''' or '.'",
                        shape(s),
                        c.escape_debug()
                    ),
                };
                r.add(Code::F002, format!("client.{key}"), message);
            }
        }

        if let Some(address) = client.get("address") {
            if let Some(Value::String(s)) = address.get("postal_code")
                && !rules::ascii_digits(s, 5)
            {
                r.add(
                    Code::F002,
                    "client.address.postal_code".into(),
                    format!("postal code: 5 digits expected, got {}", digits_shape(s)),
                );
            }
            if let Some(Value::String(s)) = address.get("municipality_key")
                && !rules::ascii_digits(s, 8)
            {
                r.add(
                    Code::F002,
                    "client.address.municipality_key".into(),
                    format!(
                        "municipality key: 8 digits expected, got {}",
                        digits_shape(s)
                    ),
                );
            }
        }
        if let Some(Value::String(s)) = client.get("contact").and_then(|c| c.get("email"))
            && s.bytes().filter(|&b| b == b'@').count() != 1
        {
            r.add(
                Code::F002,
                "client.contact.email".into(),
                format!(
                    "e-mail address ({}) does not contain exactly one '@'",
                    shape(s)
                ),
            );
        }

        if client.get("household_role").is_some()
            && client.get("household_id").is_none()
            && !r.mapped("client.household_id")
        {
            r.add(
                Code::F004,
                "client.household_role".into(),
                "household role given without a household id".into(),
            );
        }
        self.case_rules(v, r);
    }

    /// Date order in the case and the services; consent field groups.
    fn case_rules(&self, v: &Value, r: &mut Report) {
        if let Some(case) = v.get("case")
            && let (Some(opened), Some(closed)) = (day(case, "opened_on"), day(case, "closed_on"))
            && closed < opened
        {
            r.add(
                Code::F004,
                "case.closed_on".into(),
                "case closed before it was opened".into(),
            );
        }
        if let Some(Value::Array(services)) = v.get("services") {
            for (i, s) in services.iter().enumerate() {
                if let (Some(start), Some(end)) = (day(s, "start"), day(s, "end"))
                    && end < start
                {
                    r.add(
                        Code::F004,
                        format!("services[{i}].end"),
                        "service ends before it starts".into(),
                    );
                }
            }
        }
        if let Some(Value::Array(consents)) = v.get("consents") {
            for (i, c) in consents.iter().enumerate() {
                let Some(Value::Array(groups)) = c.get("fields") else {
                    continue;
                };
                for (j, g) in groups.iter().enumerate() {
                    if let Value::String(g) = g
                        && !FIELD_GROUPS.contains(&g.as_str())
                    {
                        r.add(
                            Code::F003,
                            format!("consents[{i}].fields[{j}]"),
                            format!(
                                "{} is not a field group ({})",
                                value_for("consents[].fields[]", g),
                                FIELD_GROUPS.join(", ")
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// What a value that should be N digits is instead: `4` (digits only), or its shape (`6
/// characters: digits and spaces`) — never the value.
fn digits_shape(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.len().to_string()
    } else {
        shape(s)
    }
}

/// A member of an object by path.
fn get<'v>(v: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(v, |cur, k| cur.get(*k))
}

/// A valid `YYYY-MM-DD` member of an object, parsed.
fn day(obj: &Value, key: &str) -> Option<rules::Day> {
    obj.get(key)
        .and_then(Value::as_str)
        .and_then(rules::parse_date)
}

/// True if `field` is `by` or lies inside it (`services[0].end` inside `services[0]`).
fn within(field: &str, by: &str) -> bool {
    field.len() >= by.len()
        && field.starts_with(by)
        && (field.len() == by.len()
            || by.is_empty()
            || matches!(field.as_bytes()[by.len()], b'.' | b'['))
}

/// The errors of one record while it is being checked.
struct Report {
    /// The mapping's errors come first; this many.
    n_mapping: usize,
    errors: Vec<Issue>,
}

impl Report {
    /// True if the mapping already reported an error on `field` or on a field containing it.
    fn mapped(&self, field: &str) -> bool {
        self.errors[..self.n_mapping]
            .iter()
            .any(|e| e.field.as_deref().is_some_and(|f| within(field, f)))
    }

    /// Adds a finding of the rules checked in code, unless the mapping already reported the field
    /// or the same code is already there for it.
    fn add(&mut self, code: Code, field: String, message: String) {
        if self.mapped(&field)
            || self.errors[self.n_mapping..]
                .iter()
                .any(|e| e.code == code && e.field.as_deref() == Some(field.as_str()))
        {
            return;
        }
        self.errors.push(Issue::new(code, field, message));
    }

    /// Adds a schema finding, unless an earlier finding (mapping or rules; the first `n_before`)
    /// concerns the field, a field containing it or a field inside it, or the schema already gave
    /// this code for it.
    fn add_schema(&mut self, n_before: usize, code: Code, field: String, message: String) {
        let earlier = self.errors[..n_before].iter().any(|e| {
            e.field
                .as_deref()
                .is_some_and(|f| within(&field, f) || within(f, &field))
        });
        let same = self.errors[n_before..]
            .iter()
            .any(|e| e.code == code && e.field.as_deref() == Some(field.as_str()));
        if !earlier && !same {
            self.errors.push(Issue {
                code,
                field: (!field.is_empty()).then_some(field),
                message,
            });
        }
    }
}

#[cfg(test)]
mod tests;
