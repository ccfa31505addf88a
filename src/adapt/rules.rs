//! The engine-independent half of a mapping: rules applied to a record's source tree.
//!
//! Each syntax engine turns its input into `serde_json::Value` trees — the JSON engine directly,
//! the XML engine element by element (attributes as `@name`, repeated elements as arrays), the CSV
//! engine row group by row group — and this module applies the mapping's rules to them: look-up,
//! trimming and NFC, the closed set of transforms, value maps, lists, unknown fields (`W002`),
//! and the header checks (`X001`, `V000`). No rule can loop; applying a mapping always ends.

use super::Unmapped;
use super::mapping::{
    Decimal, FieldRule, KnownTree, MappingFile, RowSelect, ValueKind, compile_pattern, fold,
    path_tokens, split_up,
};
use super::{
    AdaptError, AdaptSink, DeliveryHeader, Draft, Issue, MAX_VALUE_BYTES, normalize, normalized,
};
use crate::catalogue::{Code, echo, quotable, shape};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

/// Nesting deeper than this is `L003`.
pub(crate) const MAX_DEPTH: usize = 32;

/// A date pattern such as `TT.MM.JJJJ` or `MM/JJJJ`.
#[derive(Debug, Clone)]
pub(crate) struct DatePattern {
    parts: Vec<Part>,
    has_day: bool,
    has_month: bool,
}

#[derive(Debug, Clone, Copy)]
enum Part {
    Day,
    Month,
    Year,
    Lit(char),
}

/// `YYYY`, `YYYY-MM` or `YYYY-MM-DD` from a date's parts as [`DatePattern::apply`] read them (the
/// year from 4 digits, month and day from 2 each), as `format!("{y:04}-{m:02}-{d:02}")` would
/// write them. Without `format!`: this runs for every date of every record.
fn iso_date(y: u32, m: Option<u32>, d: Option<u32>) -> String {
    fn push_digits(s: &mut String, v: u32, n: u32) {
        for i in (0..n).rev() {
            let digit = (v / 10u32.pow(i)) % 10;
            s.push(char::from_digit(digit, 10).expect("a digit below 10"));
        }
    }
    let mut s = String::with_capacity(10);
    push_digits(&mut s, y, 4);
    for part in [m, d].into_iter().flatten() {
        s.push('-');
        push_digits(&mut s, part, 2);
    }
    s
}

impl DatePattern {
    /// Parses a pattern of `TT`, `MM`, `JJJJ` (also `DD`, `YYYY`) and literal separators.
    pub(crate) fn parse(p: &str) -> Option<DatePattern> {
        let mut parts = Vec::new();
        let mut rest = p;
        while !rest.is_empty() {
            let (part, len) = if rest.starts_with("JJJJ") || rest.starts_with("YYYY") {
                (Part::Year, 4)
            } else if rest.starts_with("TT") || rest.starts_with("DD") {
                (Part::Day, 2)
            } else if rest.starts_with("MM") {
                (Part::Month, 2)
            } else {
                let c = rest.chars().next()?;
                if c.is_alphanumeric() {
                    return None;
                }
                (Part::Lit(c), c.len_utf8())
            };
            parts.push(part);
            rest = &rest[len..];
        }
        let count = |f: fn(&Part) -> bool| parts.iter().filter(|p| f(p)).count();
        let years = count(|p| matches!(p, Part::Year));
        let months = count(|p| matches!(p, Part::Month));
        let days = count(|p| matches!(p, Part::Day));
        if years != 1 || months > 1 || days > 1 || (days == 1 && months == 0) {
            return None;
        }
        Some(DatePattern {
            parts,
            has_day: days == 1,
            has_month: months == 1,
        })
    }

    /// Applies the pattern: `YYYY-MM-DD` (or `YYYY-MM`, `YYYY`), `None` if the text does not fit
    /// or is no calendar date. With `partial`, a day (and month) of `00` drops that part.
    pub(crate) fn apply(&self, text: &str, partial: bool) -> Option<String> {
        let (mut d, mut m, mut y) = (None, None, None);
        let mut rest = text;
        for part in &self.parts {
            let take = |rest: &mut &str, n: usize| -> Option<u32> {
                let digits = rest.get(..n)?;
                if !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                *rest = &rest[n..];
                digits.parse().ok()
            };
            match part {
                Part::Day => d = Some(take(&mut rest, 2)?),
                Part::Month => m = Some(take(&mut rest, 2)?),
                Part::Year => y = Some(take(&mut rest, 4)?),
                Part::Lit(c) => rest = rest.strip_prefix(*c)?,
            }
        }
        if !rest.is_empty() {
            return None;
        }
        let y = y?;
        match (self.has_month, self.has_day, m, d) {
            (true, true, Some(0), Some(0)) if partial => Some(iso_date(y, None, None)),
            (true, true, Some(m), Some(0)) if partial && (1..=12).contains(&m) => {
                Some(iso_date(y, Some(m), None))
            }
            (true, true, Some(m), Some(d)) => {
                chrono::NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, m, d)?;
                Some(iso_date(y, Some(m), Some(d)))
            }
            (true, false, Some(m), _) if (1..=12).contains(&m) => Some(iso_date(y, Some(m), None)),
            (false, false, _, _) => Some(iso_date(y, None, None)),
            _ => None,
        }
    }

    /// Why `text` is no date of this pattern, for a message that must not quote it: the
    /// calendar problem when it has the pattern's form (`a date with day 31 in April`), else
    /// its shape.
    pub(crate) fn problem(&self, text: &str) -> String {
        let mut rest = text;
        for part in &self.parts {
            let n = match part {
                Part::Day | Part::Month => 2,
                Part::Year => 4,
                Part::Lit(c) => match rest.strip_prefix(*c) {
                    Some(r) => {
                        rest = r;
                        continue;
                    }
                    None => return format!("a value of another form ({})", shape(text)),
                },
            };
            match rest.get(..n) {
                Some(d) if d.bytes().all(|b| b.is_ascii_digit()) => rest = &rest[n..],
                _ => return format!("a value of another form ({})", shape(text)),
            }
        }
        if !rest.is_empty() {
            return format!("a value of another form ({})", shape(text));
        }
        // The form fits: rebuild the ISO text from the parts and name the calendar problem.
        let take = |part: &Part| -> String {
            let mut rest = text;
            for p in &self.parts {
                let n = match p {
                    Part::Day | Part::Month => 2,
                    Part::Year => 4,
                    Part::Lit(c) => c.len_utf8(),
                };
                if std::mem::discriminant(p) == std::mem::discriminant(part) {
                    return rest[..n].to_string();
                }
                rest = &rest[n..];
            }
            String::new()
        };
        let iso = match (self.has_month, self.has_day) {
            (true, true) => format!(
                "{}-{}-{}",
                take(&Part::Year),
                take(&Part::Month),
                take(&Part::Day)
            ),
            (true, false) => format!("{}-{}", take(&Part::Year), take(&Part::Month)),
            _ => take(&Part::Year),
        };
        crate::clock::date_problem(&iso, &["YYYY-MM-DD", "YYYY-MM", "YYYY"])
    }
}

/// A field rule with its path pre-split.
#[derive(Debug)]
pub(crate) struct Rule {
    target: String,
    /// Where the value goes: the target's steps, split once.
    place: Place,
    /// Enclosing elements up (`../`) the path starts at (0: the record or entry itself).
    up: usize,
    tokens: Vec<String>,
    source: String,
    date: Option<DatePattern>,
    /// The compiled `pattern` and the group that is the value.
    pattern: Option<(regex::Regex, String)>,
    /// `absent` texts (folded with `fold`).
    absent: Vec<String>,
    /// With `fold`: the value map with folded keys.
    folded: Option<std::collections::HashMap<String, String>>,
    rule: FieldRule,
}

impl Rule {
    fn compile(file: &MappingFile, target: &str, r: &FieldRule) -> Rule {
        let syntax = file.syntax;
        let from = r.from.clone().unwrap_or_default();
        let (up, rest) = split_up(syntax, &from);
        let pattern = r.pattern.as_deref().and_then(|p| {
            let re = compile_pattern(p).ok()?;
            let group = r
                .group
                .clone()
                .or_else(|| re.capture_names().flatten().next().map(str::to_string))?;
            Some((re, group))
        });
        let norm = |s: &String| if r.fold { fold(s) } else { s.clone() };
        Rule {
            target: target.to_string(),
            place: Place::new(target),
            up,
            tokens: path_tokens(syntax, &rest).unwrap_or_default(),
            source: MappingFile::source_name(&from).to_string(),
            date: r.date.as_deref().and_then(DatePattern::parse),
            pattern,
            absent: r.absent.iter().map(|a| norm(&normalize(a))).collect(),
            folded: r
                .map
                .as_ref()
                .filter(|_| r.fold)
                .and_then(|m| file.value_map(m))
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (fold(&normalize(k)), v.clone()))
                        .collect()
                }),
            rule: r.clone(),
        }
    }

    /// The canonical target path.
    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// The source path as written in the mapping.
    pub(crate) fn from(&self) -> &str {
        self.rule.from.as_deref().unwrap_or("")
    }

    /// Whether a cleaned text means "no value" (`absent`).
    fn is_absent(&self, text: &str) -> bool {
        text.is_empty()
            || (!self.absent.is_empty()
                && if self.rule.fold {
                    self.absent.contains(&fold(text))
                } else {
                    self.absent.iter().any(|a| a == text)
                })
    }

    /// The source value of this rule: in the record (or list entry) `source`, or, with `../`, in
    /// an enclosing element (`ancestors`, outermost first).
    fn lookup<'v>(
        &self,
        source: &'v Value,
        ancestors: &[&'v Map<String, Value>],
    ) -> Option<&'v Value> {
        if self.up == 0 {
            return get(source, &self.tokens);
        }
        let parent = ancestors.get(ancestors.len().checked_sub(self.up)?)?;
        let (first, rest) = self.tokens.split_first()?;
        get(parent.get(first)?, rest)
    }
}

/// Where a rule's value goes in a draft: the steps of its target path (`client.address.street`),
/// and the members each object on the way will hold, so that it is made large enough at once.
#[derive(Debug)]
struct Place {
    /// The steps, split at `.` once, when the mapping is compiled (not for every record).
    steps: Vec<String>,
    /// For each object on the way (`client`, `client.address`): how many members the rules of
    /// its record or entry can give it.
    room: Vec<usize>,
}

impl Place {
    fn new(target: &str) -> Place {
        Place {
            steps: target.split('.').map(str::to_string).collect(),
            room: Vec::new(),
        }
    }

    /// The steps to the object the value goes into (`client`, `address`).
    fn parents(&self) -> &[String] {
        &self.steps[..self.steps.len().saturating_sub(1)]
    }

    /// The object in `map` the value goes into, made on the way as [`super::set_path`] makes
    /// it (a member on the way that is not an object is replaced).
    fn parent<'m>(&self, map: &'m mut Map<String, Value>) -> &'m mut Map<String, Value> {
        let mut cur = map;
        for (i, part) in self.parents().iter().enumerate() {
            // Looked up before inserting: the key is allocated only for a new member.
            if !cur.get(part).is_some_and(Value::is_object) {
                let room = self.room.get(i).copied().unwrap_or(0);
                cur.insert(part.clone(), Value::Object(Map::with_capacity(room)));
            }
            cur = cur
                .get_mut(part)
                .and_then(Value::as_object_mut)
                .expect("just made an object");
        }
        cur
    }

    /// Puts `value` into the object [`Place::parent`] gave.
    fn put(&self, parent: &mut Map<String, Value>, value: Value) {
        if let Some(last) = self.steps.last() {
            parent.insert(last.clone(), value);
        }
    }

    /// Sets `value` at this place in `map`, creating objects on the way, as
    /// [`super::set_path`] does.
    #[cfg(test)]
    fn set(&self, map: &mut Map<String, Value>, value: Value) {
        self.put(self.parent(map), value);
    }
}

/// Fills in the rooms of the rules of one record (or one list entry) and returns the members
/// their top level can have.
fn make_room(rules: &mut [Rule]) -> usize {
    let mut members: std::collections::HashMap<&[String], std::collections::HashSet<&str>> =
        std::collections::HashMap::new();
    for r in rules.iter() {
        for depth in 0..r.place.steps.len() {
            members
                .entry(&r.place.steps[..depth])
                .or_default()
                .insert(&r.place.steps[depth]);
        }
    }
    let rooms: Vec<Vec<usize>> = rules
        .iter()
        .map(|r| {
            (1..r.place.steps.len())
                .map(|depth| members.get(&r.place.steps[..depth]).map_or(0, |m| m.len()))
                .collect()
        })
        .collect();
    let top = members.get(&[][..]).map_or(0, |m| m.len());
    for (r, room) in rules.iter_mut().zip(rooms) {
        r.place.room = room;
    }
    top
}

/// A list rule with its path pre-split.
#[derive(Debug)]
pub(crate) struct ListRule {
    /// `services` or `consents`.
    pub(crate) target: String,
    tokens: Vec<String>,
    /// CSV row selection.
    pub(crate) rows: Option<RowSelect>,
    fields: Vec<Rule>,
    /// The members an entry's rules can give it.
    room: usize,
}

impl ListRule {
    /// Columns or paths the list's fields read.
    pub(crate) fn sources(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(Rule::from)
    }

    /// The rules of an entry's fields.
    pub(crate) fn fields(&self) -> &[Rule] {
        &self.fields
    }

    /// An empty entry, large enough for what the rules can give it.
    pub(crate) fn entry(&self) -> Map<String, Value> {
        Map::with_capacity(self.room)
    }
}

/// The source path a CSV list is known by (its entries are the rows its `rows` rule selects).
pub(crate) fn csv_list_key(target: &str) -> String {
    format!("#{target}")
}

/// How records are built.
#[derive(Debug)]
pub(crate) struct RecordPlan {
    fields: Vec<Rule>,
    /// The members a record's draft can have.
    room: usize,
    /// The lists.
    pub(crate) lists: Vec<ListRule>,
    /// Known source paths of a record.
    pub(crate) known: KnownTree,
    /// Known source paths of the enclosing elements: `[0]` of the parent (`../`), `[1]` of its
    /// parent (`../../`), …
    pub(crate) ancestors_known: Vec<KnownTree>,
    /// The members (first path steps) record rules read in each enclosing element, as
    /// `ancestors_known`: a record waits for them when they come after it.
    pub(crate) ancestors_members: Vec<Vec<String>>,
}

impl RecordPlan {
    /// Compiles the record part of a checked mapping.
    pub(crate) fn compile(file: &MappingFile) -> RecordPlan {
        let syntax = file.syntax;
        let enclosing = file.levels().saturating_sub(1);
        let mut known = KnownTree::default();
        let mut ancestors_known: Vec<KnownTree> =
            (0..enclosing).map(|_| KnownTree::default()).collect();
        let mut ancestors_members: Vec<Vec<String>> = vec![Vec::new(); enclosing];
        let mut mark = |path: &str, read: bool| {
            let (up, rest) = split_up(syntax, path);
            if up == 0 {
                known.insert(syntax, path).leaf = true;
            } else if let Some(tree) = ancestors_known.get_mut(up - 1) {
                tree.insert(syntax, &rest).leaf = true;
                if read
                    && let Some(first) =
                        path_tokens(syntax, &rest).and_then(|t| t.into_iter().next())
                    && !ancestors_members[up - 1].contains(&first)
                {
                    ancestors_members[up - 1].push(first);
                }
            }
        };
        for r in file.record.fields.values() {
            if let Some(from) = &r.from {
                mark(from, true);
            }
        }
        for p in &file.record.informational {
            mark(p, false);
        }
        let mut lists = Vec::new();
        for (name, list) in &file.record.lists {
            let mut element = KnownTree::default();
            for r in list.fields.values() {
                if let Some(from) = &r.from {
                    element.insert(syntax, from).leaf = true;
                }
            }
            let from = match &list.from {
                Some(f) => f.clone(),
                None => csv_list_key(name),
            };
            known.insert(syntax, &from).element = Some(Box::new(element));
            let mut fields: Vec<Rule> = list
                .fields
                .iter()
                .map(|(t, r)| Rule::compile(file, t, r))
                .collect();
            let room = make_room(&mut fields);
            lists.push(ListRule {
                target: name.clone(),
                tokens: path_tokens(syntax, &from).unwrap_or_default(),
                rows: list.rows.clone(),
                fields,
                room,
            });
        }
        let mut fields: Vec<Rule> = file
            .record
            .fields
            .iter()
            .map(|(t, r)| Rule::compile(file, t, r))
            .collect();
        // The record's own members, its lists, and what ingest adds (`schema_version`, and
        // `source` when no rule fills it).
        let room = make_room(&mut fields) + lists.len() + 2;
        RecordPlan {
            fields,
            room,
            lists,
            known,
            ancestors_known,
            ancestors_members,
        }
    }

    /// The record-level rules.
    pub(crate) fn fields(&self) -> &[Rule] {
        &self.fields
    }

    /// An empty draft at a position, large enough for what the rules can give it.
    pub(crate) fn draft(&self, position: usize) -> Draft {
        let mut draft = Draft::new(position);
        draft.fields = Map::with_capacity(self.room);
        draft
    }

    /// Builds the draft of one record from its source tree; `ancestors` are the enclosing
    /// elements' values (outermost first) that `../` paths read.
    pub(crate) fn map(
        &self,
        file: &MappingFile,
        position: usize,
        root: &Value,
        ancestors: &[&Map<String, Value>],
        check_unknown: bool,
    ) -> Draft {
        let mut draft = self.draft(position);
        apply_rules(file, &self.fields, root, ancestors, None, &mut draft, None);
        for list in &self.lists {
            let entries: Vec<&Value> = match get(root, &list.tokens) {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(a)) => a.iter().filter(|e| !e.is_null()).collect(),
                Some(v @ Value::Object(_)) => vec![v],
                Some(_) => {
                    draft.issues.push(Issue::new(
                        Code::F002,
                        list.target.clone(),
                        format!("{} must be a list", list.target),
                    ));
                    Vec::new()
                }
            };
            let mut out = Vec::new();
            for entry in entries {
                let index = out.len();
                if !entry.is_object() {
                    draft.issues.push(Issue::new(
                        Code::F002,
                        format!("{}[{index}]", list.target),
                        format!("entries of {} must be objects", list.target),
                    ));
                    out.push(Value::Object(Map::new()));
                    continue;
                }
                let mut element = list.entry();
                apply_rules(
                    file,
                    &list.fields,
                    entry,
                    &[],
                    Some((&list.target, index)),
                    &mut draft,
                    Some(&mut element),
                );
                out.push(Value::Object(element));
            }
            if !out.is_empty() {
                draft.fields.insert(list.target.clone(), Value::Array(out));
            }
        }
        draft.record_id = record_id(&draft);
        if check_unknown && let Value::Object(obj) = root {
            let mut unknown = Vec::new();
            unknown_fields(obj, &self.known, "", &mut unknown);
            for (path, key) in unknown {
                draft.issues.push(unknown_issue(path, &key));
            }
        }
        draft
    }
}

/// The vendor's record id a draft's rules filled (`source.record_id`).
pub(crate) fn record_id(draft: &Draft) -> Option<String> {
    draft.text("source", "record_id").map(str::to_string)
}

/// `W002` for an unknown source field (or a list element no rule reads: `key` ends in `]`).
pub(crate) fn unknown_issue(path: String, key: &str) -> Issue {
    let message = if key.ends_with(']') {
        format!("list element '{}' is read by no rule: ignored", echo(key))
    } else {
        format!("unknown field '{}' ignored", echo(key))
    };
    Issue::new(Code::W002, path, message)
}

/// How the delivery header is checked and read.
#[derive(Debug)]
pub(crate) struct HeaderPlan {
    fields: Vec<Rule>,
    /// Known source paths of the header (and the records member).
    pub(crate) known: KnownTree,
    /// Top-level members / elements the header needs.
    pub(crate) members: Vec<String>,
}

impl HeaderPlan {
    /// Compiles the delivery part of a checked mapping.
    pub(crate) fn compile(file: &MappingFile) -> HeaderPlan {
        let syntax = file.syntax;
        let d = &file.delivery;
        let mut known = KnownTree::default();
        if let Some(records) = &d.records {
            known.insert(syntax, records).leaf = true;
        }
        let mut paths: Vec<&str> = Vec::new();
        paths.extend(d.version.iter().map(|v| v.from.as_str()));
        paths.extend(d.idempotency_key.iter().map(String::as_str));
        paths.extend(d.mode.iter().map(|m| m.from.as_str()));
        paths.extend(d.test.iter().map(|m| m.from.as_str()));
        paths.extend(d.objects.iter().map(String::as_str));
        paths.extend(d.once.iter().map(String::as_str));
        paths.extend(d.fields.values().filter_map(|r| r.from.as_deref()));
        let mut members: Vec<String> = Vec::new();
        for p in &paths {
            known.insert(syntax, p).leaf = true;
            if let Some(first) = path_tokens(syntax, p).and_then(|t| t.into_iter().next())
                && !members.contains(&first)
            {
                members.push(first);
            }
        }
        for p in d.objects.iter().chain(d.once.iter()) {
            known.insert(syntax, p).leaf = false;
        }
        for p in &paths {
            // Paths read by rules stay leaves even under an object or once path.
            if !d.objects.iter().chain(d.once.iter()).any(|o| o == p) {
                known.insert(syntax, p).leaf = true;
            }
        }
        for p in &d.informational {
            known.insert(syntax, p).leaf = true;
        }
        HeaderPlan {
            fields: d
                .fields
                .iter()
                .map(|(t, r)| Rule::compile(file, t, r))
                .collect(),
            known,
            members,
        }
    }

    /// Checks the header document and reads what it declares: the header, and the values copied
    /// into every record.
    pub(crate) fn finish(
        &self,
        file: &MappingFile,
        doc: &Value,
    ) -> Result<(DeliveryHeader, Vec<(String, Value)>), AdaptError> {
        let syntax = file.syntax;
        let d = &file.delivery;
        let at = |p: &str| get(doc, &path_tokens(syntax, p).unwrap_or_default()).cloned();
        let x001 = |m: String| AdaptError::rejected(Code::X001, m);
        for p in &d.once {
            match at(p) {
                None | Some(Value::Null) => return Err(x001(format!("'{p}' is missing"))),
                Some(Value::Array(_)) => {
                    return Err(x001(format!("'{p}' must occur exactly once")));
                }
                Some(_) => {}
            }
        }
        if let Some(v) = &d.version {
            match at(&v.from) {
                Some(Value::String(s)) => {
                    let s = normalize(&s);
                    if !v.accept.contains(&s) {
                        return Err(AdaptError::rejected(
                            Code::V000,
                            format!(
                                "format version '{}' is not supported (supported: {})",
                                echo(&s),
                                v.accept.join(", ")
                            ),
                        ));
                    }
                }
                _ => {
                    return Err(x001(format!(
                        "'{}' must be a string with the format version",
                        v.from
                    )));
                }
            }
        }
        for p in &d.objects {
            if !at(p).is_some_and(|v| v.is_object()) {
                return Err(x001(format!("'{p}' must be an object")));
            }
        }
        let mut header = DeliveryHeader::default();
        if let Some(p) = &d.idempotency_key {
            match at(p).as_ref().and_then(Value::as_str).map(normalize) {
                Some(id) if !id.is_empty() => {
                    if d.idempotency_key_uuid && uuid::Uuid::parse_str(&id).is_err() {
                        return Err(x001(format!("'{p}' must be a UUID")));
                    }
                    header.idempotency_key = Some(id);
                }
                _ => {
                    return Err(x001(format!(
                        "'{p}' (the message id) must be a non-empty string"
                    )));
                }
            }
        }
        if let Some(m) = &d.mode {
            let raw = at(&m.from).as_ref().and_then(Value::as_str).map(normalize);
            match raw.as_deref().and_then(|r| m.map.get(r)) {
                Some(mode) => header.mode = Some(*mode),
                None => {
                    return Err(x001(format!(
                        "'{}' must be one of: {}",
                        m.from,
                        m.map.keys().cloned().collect::<Vec<_>>().join(", ")
                    )));
                }
            }
        }
        if let Some(t) = &d.test {
            match at(&t.from) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => match t.map.get(&normalize(&s)) {
                    Some(flag) => header.test = *flag,
                    None => {
                        return Err(x001(format!(
                            "'{}' must be one of: {}",
                            t.from,
                            t.map.keys().cloned().collect::<Vec<_>>().join(", ")
                        )));
                    }
                },
                Some(_) => return Err(x001(format!("'{}' must be a string", t.from))),
            }
        }
        let mut values = Vec::new();
        for r in &self.fields {
            let field = FieldPath {
                entry: None,
                target: &r.target,
            };
            match extract(file, r, &field, get(doc, &r.tokens).map(Source::Json)) {
                Ok(Some(v)) => values.push((r.target.clone(), v)),
                Ok(None) if r.rule.required => {
                    return Err(x001(format!("'{}' is required", r.from())));
                }
                Ok(None) => {}
                Err(issue)
                    if issue.code == Code::F002
                        && get(doc, &r.tokens).is_some_and(Value::is_array) =>
                {
                    return Err(x001(format!("'{}' must occur exactly once", r.from())));
                }
                Err(_) => {
                    // Copied raw into every record, where validation names the problem.
                    if let Some(Value::String(s)) = get(doc, &r.tokens) {
                        values.push((r.target.clone(), Value::String(normalize(s))));
                    }
                }
            }
        }
        Ok((header, values))
    }
}

/// Assembles a delivery from what an engine reads: header members (until the header is complete,
/// then checked once) and record trees (mapped into drafts, held back until the header is known,
/// then completed with the header's values and handed to the sink). Shared by the JSON and XML
/// engines.
pub(crate) struct Assembler<'a> {
    file: &'a MappingFile,
    header: &'a HeaderPlan,
    record: &'a RecordPlan,
    /// Where drafts, the header and warnings go.
    pub(crate) sink: &'a mut dyn AdaptSink,
    doc: Map<String, Value>,
    done: bool,
    /// Members the header still waits for.
    waiting: Vec<String>,
    /// The values the header gives every record (target, value).
    values: Arc<Vec<(String, Value)>>,
    /// Records that wait for the header.
    pending: Vec<Waiting>,
    position: usize,
}

/// A record waiting for its delivery's header.
enum Waiting {
    Mapped(Draft),
    Unmapped(Unmapped),
}

/// What a repeated header member does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Repeat {
    /// The last one wins (JSON object members).
    Replace,
    /// They form an array (repeated XML elements).
    Collect,
}

impl<'a> Assembler<'a> {
    /// An assembler for a mapping's plans.
    pub(crate) fn new(
        file: &'a MappingFile,
        header: &'a HeaderPlan,
        record: &'a RecordPlan,
        sink: &'a mut dyn AdaptSink,
    ) -> Self {
        Assembler {
            file,
            header,
            record,
            sink,
            doc: Map::new(),
            done: false,
            waiting: header.members.clone(),
            values: Arc::default(),
            pending: Vec::new(),
            position: 0,
        }
    }

    /// One member of the header: unknown fields are warned about (`W002`); once every member the
    /// header needs is there, the header is checked and released.
    pub(crate) fn header_member(
        &mut self,
        key: String,
        value: Value,
        repeat: Repeat,
    ) -> Result<(), AdaptError> {
        let mut one = Map::new();
        one.insert(key.clone(), value);
        let mut unknown = Vec::new();
        unknown_fields(&one, &self.header.known, "", &mut unknown);
        for (path, name) in unknown {
            self.sink.warning(unknown_issue(path, &name));
        }
        if self.done {
            return Ok(());
        }
        let value = one.remove(&key).unwrap_or(Value::Null);
        match (repeat, self.doc.get_mut(&key)) {
            (Repeat::Collect, Some(Value::Array(a))) => a.push(value),
            (Repeat::Collect, Some(existing)) => {
                let prev = existing.take();
                *existing = Value::Array(vec![prev, value]);
            }
            _ => {
                self.doc.insert(key, value);
            }
        }
        let doc = &self.doc;
        self.waiting.retain(|m| !doc.contains_key(m));
        self.try_finish()
    }

    /// Members starting with `@` (the root element's attributes) will not come any more: they
    /// all arrive with the root's start tag, so the header does not wait for absent ones.
    pub(crate) fn root_attributes_done(&mut self) -> Result<(), AdaptError> {
        self.waiting.retain(|m| !m.starts_with('@'));
        self.try_finish()
    }

    fn try_finish(&mut self) -> Result<(), AdaptError> {
        if !self.done && self.waiting.is_empty() {
            self.finish()?;
        }
        Ok(())
    }

    /// One record's source tree inside its enclosing elements (outermost first, for `../`);
    /// `issues` found while reading it go first.
    ///
    /// When the sink takes records unmapped and the record reads no enclosing element, it is
    /// handed over as it is, to be mapped on the sink's side ([`map_unmapped`]).
    pub(crate) fn record_in(
        &mut self,
        tree: Value,
        ancestors: &[&Map<String, Value>],
        issues: Vec<Issue>,
    ) -> Result<(), AdaptError> {
        self.position += 1;
        let record = if ancestors.is_empty() && self.sink.takes_unmapped() {
            Waiting::Unmapped(Unmapped {
                position: self.position,
                tree,
                issues,
                values: Arc::default(),
            })
        } else {
            Waiting::Mapped(map_read(
                self.file,
                self.record,
                self.position,
                &tree,
                ancestors,
                issues,
            ))
        };
        if self.done {
            self.emit(record)
        } else {
            self.pending.push(record);
            Ok(())
        }
    }

    /// Checks the header (once), tells the sink, and releases the drafts that waited for it.
    pub(crate) fn finish(&mut self) -> Result<(), AdaptError> {
        if !self.done {
            self.done = true;
            let doc = Value::Object(std::mem::take(&mut self.doc));
            let (header, values) = self.header.finish(self.file, &doc)?;
            self.values = Arc::new(values);
            self.sink.header(&header)?;
        }
        for record in std::mem::take(&mut self.pending) {
            self.emit(record)?;
        }
        Ok(())
    }

    fn emit(&mut self, record: Waiting) -> Result<(), AdaptError> {
        match record {
            Waiting::Mapped(mut draft) => {
                set_header_values(&mut draft, &self.values);
                self.sink.record(draft)
            }
            Waiting::Unmapped(mut record) => {
                record.values = Arc::clone(&self.values);
                self.sink.unmapped(record)
            }
        }
    }
}

/// Sets the values the delivery's header gives every record.
fn set_header_values(draft: &mut Draft, values: &[(String, Value)]) {
    for (target, value) in values {
        draft.set(target, value.clone());
    }
}

/// Maps a record an engine handed over unmapped, as [`Assembler::record_in`] and the emit after
/// it would have: the issues found while reading first, then the mapping's, then the header's
/// values.
pub(crate) fn map_unmapped(file: &MappingFile, plan: &RecordPlan, record: Unmapped) -> Draft {
    let Unmapped {
        position,
        tree,
        issues,
        values,
    } = record;
    let mut draft = map_read(file, plan, position, &tree, &[], issues);
    set_header_values(&mut draft, &values);
    draft
}

/// Maps a record's tree; the `issues` found while reading it go first.
fn map_read(
    file: &MappingFile,
    plan: &RecordPlan,
    position: usize,
    tree: &Value,
    ancestors: &[&Map<String, Value>],
    issues: Vec<Issue>,
) -> Draft {
    let mut draft = plan.map(file, position, tree, ancestors, true);
    if !issues.is_empty() {
        let mut all = issues;
        all.append(&mut draft.issues);
        draft.issues = all;
    }
    draft
}

/// Looks a pre-split path up.
pub(crate) fn get<'v>(mut v: &'v Value, tokens: &[String]) -> Option<&'v Value> {
    for t in tokens {
        v = step(v, t)?;
    }
    Some(v)
}

/// One step of a path: a member of an object, an element of an array by its index.
fn step<'v>(v: &'v Value, token: &str) -> Option<&'v Value> {
    match v {
        Value::Object(m) => m.get(token),
        Value::Array(a) => a.get(token.parse::<usize>().ok()?),
        _ => None,
    }
}

fn number(text: &str, decimal: Decimal) -> Option<Value> {
    let (sep, other) = match decimal {
        Decimal::Dot => ('.', ','),
        Decimal::Comma => (',', '.'),
    };
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    if unsigned.contains(other) || unsigned.is_empty() {
        return None;
    }
    let mut parts = unsigned.split(sep);
    let int = parts.next()?;
    let frac = parts.next();
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    // xs:decimal (dot) allows `.5` and `19.`; the decimal comma of CSV exports needs digits on
    // both sides.
    let loose = decimal == Decimal::Dot;
    let ok = match frac {
        None => !int.is_empty() && digits(int),
        Some(f) => {
            digits(int)
                && digits(f)
                && if loose {
                    !(int.is_empty() && f.is_empty())
                } else {
                    !int.is_empty() && !f.is_empty()
                }
        }
    };
    if parts.next().is_some() || !ok {
        return None;
    }
    let mut normal = text.replace(sep, ".");
    if normal.ends_with('.') {
        normal.push('0');
    }
    let f: f64 = normal.parse().ok()?;
    if f.fract() == 0.0 && f.abs() < 1e15 {
        Some(Value::from(f as i64))
    } else {
        serde_json::Number::from_f64(f).map(Value::Number)
    }
}

/// The canonical path a rule's value goes to, spelled out only when a message needs it (a
/// record's rules run for every record; their paths are text only in issues).
#[derive(Clone, Copy)]
pub(crate) struct FieldPath<'a> {
    /// The list and the entry's index, for a list entry's field.
    pub(crate) entry: Option<(&'a str, usize)>,
    /// The path inside the record or the entry.
    pub(crate) target: &'a str,
}

impl std::fmt::Display for FieldPath<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.entry {
            Some((list, index)) => write!(f, "{list}[{index}].{}", self.target),
            None => f.write_str(self.target),
        }
    }
}

/// A source value as an engine found it: a node of a JSON tree, or a text (a CSV cell) that no
/// tree was built for.
#[derive(Clone, Copy)]
pub(crate) enum Source<'v> {
    /// A value in a record's tree (JSON, XML).
    Json(&'v Value),
    /// A text, as a CSV cell is.
    Text(&'v str),
}

impl<'v> Source<'v> {
    /// The text, when the source is one.
    fn text(self) -> Option<&'v str> {
        match self {
            Source::Json(Value::String(s)) => Some(s),
            Source::Text(s) => Some(s),
            Source::Json(_) => None,
        }
    }
}

/// Applies one rule to a source value: `Ok(None)` when absent.
///
/// `field` is the canonical path the value goes to (`services[0].kind`): messages quote the
/// value only when that field is not personal ([`crate::catalogue::quotable`]), and otherwise
/// describe its shape.
pub(crate) fn extract(
    file: &MappingFile,
    r: &Rule,
    field: &FieldPath<'_>,
    value: Option<Source<'_>>,
) -> Result<Option<Value>, Issue> {
    let rule = &r.rule;
    let source = r.source.as_str();
    let what = |s: &str| {
        if quotable(&field.to_string()) {
            format!("'{}'", echo(s))
        } else {
            format!("({})", shape(s))
        }
    };
    let issue = |code: Code, message: String| Issue {
        code,
        field: None,
        message,
    };
    let bad_type = |what: &str| issue(Code::F002, format!("{source} must be {what}"));
    // Cleaned text → the text the rule takes from it: `absent`, `split` + `part`, `pattern`.
    let refine = refiner(|raw| {
        let mut t = normalized(raw);
        if r.is_absent(&t) {
            return Ok(None);
        }
        if let (Some(sep), Some(n)) = (&rule.split, rule.part) {
            let parts: Vec<&str> = t.split(sep.as_str()).collect();
            let index = if n > 0 {
                usize::try_from(n - 1).ok()
            } else {
                parts
                    .len()
                    .checked_sub(usize::try_from(-n).unwrap_or(usize::MAX))
            };
            match index.and_then(|i| parts.get(i)) {
                Some(p) => t = Cow::Owned(normalize(p)),
                None => {
                    return Err(issue(
                        Code::F002,
                        format!(
                            "{source} {} has no part {n} when split at '{}' ({} part(s))",
                            what(&t),
                            echo(sep),
                            parts.len()
                        ),
                    ));
                }
            }
            if r.is_absent(&t) {
                return Ok(None);
            }
        }
        if let Some((re, group)) = &r.pattern {
            match re.captures(&t) {
                None => {
                    return Err(issue(
                        Code::F002,
                        format!(
                            "{source} {} does not match the pattern of the mapping",
                            what(&t)
                        ),
                    ));
                }
                Some(c) => match c.name(group) {
                    None => return Ok(None),
                    Some(m) => t = Cow::Owned(normalize(m.as_str())),
                },
            }
            if r.is_absent(&t) {
                return Ok(None);
            }
        }
        Ok(Some(t))
    });
    let lookup = |s: &str| -> Option<String> {
        match &r.folded {
            Some(folded) => folded.get(&fold(s)).cloned(),
            None => file
                .value_map(rule.map.as_deref().unwrap_or(""))
                .and_then(|m| m.get(s))
                .cloned(),
        }
    };
    let convert = |s: Cow<'_, str>| -> Result<Value, Issue> {
        let s = match &r.date {
            Some(p) => Cow::Owned(p.apply(&s, rule.partial).ok_or_else(|| {
                issue(
                    Code::F002,
                    format!(
                        "{source} is not a valid date {}: {}",
                        rule.date.as_deref().unwrap_or(""),
                        p.problem(&s)
                    ),
                )
            })?),
            None => s,
        };
        match &rule.map {
            None => Ok(Value::String(s.into_owned())),
            Some(_) => match lookup(&s) {
                Some(code) => Ok(Value::String(code)),
                None => Err(issue(
                    Code::F003,
                    format!(
                        "{source} value {} is not in the mapping's value map",
                        what(&s)
                    ),
                )),
            },
        }
    };
    let value = match &rule.value {
        Some(constant) => Some(Source::Text(constant)),
        None => value,
    };
    let result = match value {
        None | Some(Source::Json(Value::Null)) => None,
        Some(value) => match rule.kind {
            ValueKind::String => match value.text() {
                Some(s) => match refine(s)? {
                    None => None,
                    Some(t) => Some(convert(t)?),
                },
                _ => return Err(bad_type("a single text value")),
            },
            ValueKind::Number => match (value, value.text(), rule.decimal) {
                (Source::Json(n @ Value::Number(_)), _, _) => Some(n.clone()),
                (_, Some(s), Some(decimal)) => match refine(s)? {
                    None => None,
                    Some(t) => Some(number(&t, decimal).ok_or_else(|| {
                        issue(Code::F002, format!("{source} {} is not a number", what(&t)))
                    })?),
                },
                _ => return Err(bad_type("a number")),
            },
            ValueKind::StringList => {
                let items: Vec<String> = match value {
                    Source::Json(Value::Array(a)) => {
                        let mut out = Vec::new();
                        for item in a {
                            match item {
                                Value::Null => {}
                                Value::String(s) => out.push(s.clone()),
                                _ => return Err(bad_type("a list of strings")),
                            }
                        }
                        out
                    }
                    _ => match (value.text(), &rule.split) {
                        (Some(s), Some(sep)) => s.split(sep.as_str()).map(str::to_string).collect(),
                        (Some(s), None) => vec![s.to_string()],
                        (None, _) => return Err(bad_type("a list of strings")),
                    },
                };
                let mut kept = Vec::new();
                for item in &items {
                    if let Some(t) = refine(item)? {
                        kept.push(t);
                    }
                }
                let items = kept;
                if items.is_empty() {
                    None
                } else if let Some(sep) = &rule.join {
                    Some(convert(Cow::Owned(items.join(sep)))?)
                } else {
                    Some(Value::Array(
                        items
                            .into_iter()
                            .map(convert)
                            .collect::<Result<Vec<_>, _>>()?,
                    ))
                }
            }
        },
    };
    Ok(result.or_else(|| rule.default.clone().map(Value::String)))
}

/// The type of [`extract`]'s `refine`: a cleaned text borrows from the raw one when
/// trimming and NFC leave it as it is.
fn refiner<F>(f: F) -> F
where
    F: for<'a> Fn(&'a str) -> Result<Option<Cow<'a, str>>, Issue>,
{
    f
}

/// Applies rules to a source object; values go into `element` when given, else into the draft.
fn apply_rules<'r>(
    file: &MappingFile,
    rules: &'r [Rule],
    source: &Value,
    ancestors: &[&Map<String, Value>],
    entry: Option<(&str, usize)>,
    draft: &mut Draft,
    element: Option<&mut Map<String, Value>>,
) {
    let mut walk = Walk {
        root: source,
        steps: Vec::new(),
    };
    let find = |_: usize, r: &'r Rule| {
        if r.up == 0 {
            walk.get(&r.tokens)
        } else {
            r.lookup(source, ancestors)
        }
        .map(Source::Json)
    };
    apply_with(file, rules, find, entry, draft, element);
}

/// Applies rules whose source values `find` gives (called with each rule's index in `rules`):
/// values go into `element` when given, else into the draft.
pub(crate) fn apply_with<'r, 'v>(
    file: &MappingFile,
    rules: &'r [Rule],
    mut find: impl FnMut(usize, &'r Rule) -> Option<Source<'v>>,
    entry: Option<(&str, usize)>,
    draft: &mut Draft,
    element: Option<&mut Map<String, Value>>,
) {
    let Draft { fields, issues, .. } = draft;
    let target: &mut Map<String, Value> = match element {
        Some(el) => el,
        None => fields,
    };
    // The object the last value went into, with its steps: the next rule with the same parent
    // (`client.address.street`, then `client.address.postal_code`) puts its value there without
    // walking from the top. Between two values nothing else changes the map, so that object is
    // still where its steps lead.
    let mut open: Option<(&[String], &mut Map<String, Value>)> = None;
    for (i, r) in rules.iter().enumerate() {
        let field = FieldPath {
            entry,
            target: &r.target,
        };
        let found = find(i, r);
        match extract(file, r, &field, found) {
            Ok(Some(v)) => {
                let parents = r.place.parents();
                let parent = match open.take() {
                    Some((steps, parent)) if steps == parents => parent,
                    _ => r.place.parent(target),
                };
                r.place.put(parent, v);
                open = Some((parents, parent));
            }
            Ok(None) => {}
            Err(mut issue) => {
                issue.field = Some(field.to_string());
                issues.push(issue);
            }
        }
    }
}

/// Source values of consecutive rules, looked up along the path the previous rule took: rules
/// that read members of one object (`/klient/adresse/plz`, then `/klient/adresse/ags`) find that
/// object once, not from the top each time. Each step is a SipHash lookup in the record's tree.
struct Walk<'r, 'v> {
    root: &'v Value,
    /// The previous rule's tokens and the values they led to, as far as they led.
    steps: Vec<(&'r str, &'v Value)>,
}

impl<'r, 'v> Walk<'r, 'v> {
    /// What [`get`] finds at `tokens` from the root.
    fn get(&mut self, tokens: &'r [String]) -> Option<&'v Value> {
        let same = self
            .steps
            .iter()
            .zip(tokens)
            .take_while(|((had, _), t)| *had == t.as_str())
            .count();
        self.steps.truncate(same);
        let mut v = self.steps.last().map_or(self.root, |&(_, v)| v);
        for t in &tokens[same..] {
            v = step(v, t)?;
            self.steps.push((t, v));
        }
        Some(v)
    }
}

/// Collects (dotted source path, key) of what the known tree does not cover: members no rule
/// reads (`klient.geburtsort`), list elements no rule reads (`adressen[1]`, key `adressen[1]`),
/// and values where the mapping expects members or elements. Paths carry list indices
/// (`leistungen[0].foo`).
pub(crate) fn unknown_fields(
    obj: &Map<String, Value>,
    known: &KnownTree,
    prefix: &str,
    out: &mut Vec<(String, String)>,
) {
    let mut walk = UnknownWalk {
        path: prefix.to_string(),
        name: String::new(),
        index: String::new(),
        out,
    };
    walk.members(obj, &[known]);
}

/// The walk of [`unknown_fields`]. The dotted path and the key of the value at hand are built in
/// buffers that each step extends and cuts back; they are copied only for a finding (`W002`
/// is rare, and the walk runs for every record).
struct UnknownWalk<'o> {
    /// The dotted path of the value at hand (`klient.adressen[1].foo`).
    path: String,
    /// Its key as a finding names it (`adressen[1]` for a list element).
    name: String,
    /// Scratch for a list index as text (children of a known tree are keyed by text).
    index: String,
    out: &'o mut Vec<(String, String)>,
}

impl UnknownWalk<'_> {
    fn found(&mut self) {
        self.out.push((self.path.clone(), self.name.clone()));
    }

    fn members(&mut self, obj: &Map<String, Value>, nodes: &[&KnownTree]) {
        for (key, value) in obj {
            let one: &KnownTree;
            let many: Vec<&KnownTree>;
            let next: &[&KnownTree] = if let [node] = nodes {
                // The usual case: one tree, and most members are leaves the rules read.
                match node.children.get(key) {
                    Some(n) if n.leaf => continue,
                    Some(n) => {
                        one = n;
                        std::slice::from_ref(&one)
                    }
                    None => &[],
                }
            } else {
                many = nodes.iter().filter_map(|n| n.children.get(key)).collect();
                &many
            };
            let (path_len, name_len) = (self.path.len(), self.name.len());
            if !self.path.is_empty() {
                self.path.push('.');
            }
            self.path.push_str(key);
            self.name.clear();
            self.name.push_str(key);
            if next.is_empty() {
                self.found();
            } else {
                self.value(value, next);
            }
            self.path.truncate(path_len);
            self.name.truncate(name_len);
        }
    }

    fn value(&mut self, value: &Value, nodes: &[&KnownTree]) {
        if nodes.iter().any(|n| n.leaf) {
            return;
        }
        match value {
            Value::Object(m) => {
                // An object where a list is read counts as a list of one.
                let mut all: Vec<&KnownTree> = nodes.to_vec();
                for n in nodes {
                    if let Some(e) = &n.element {
                        all.push(e);
                        all.extend(n.children.get("0"));
                    }
                }
                if all.iter().any(|n| n.leaf) {
                    return;
                }
                // The members' keys replace this value's key; it comes back afterwards.
                let name = std::mem::take(&mut self.name);
                self.members(m, &all);
                self.name = name;
            }
            Value::Array(a) => {
                let by_index = nodes.iter().any(|n| !n.children.is_empty());
                for (i, item) in a.iter().enumerate() {
                    if item.is_null() {
                        continue;
                    }
                    if by_index {
                        self.index.clear();
                        let _ = write!(self.index, "{i}");
                    }
                    let next: Vec<&KnownTree> = nodes
                        .iter()
                        .flat_map(|n| {
                            by_index
                                .then(|| n.children.get(&self.index))
                                .flatten()
                                .into_iter()
                                .chain(n.element.as_deref())
                        })
                        .collect();
                    let (path_len, name_len) = (self.path.len(), self.name.len());
                    let _ = write!(self.path, "[{i}]");
                    let _ = write!(self.name, "[{i}]");
                    if next.is_empty() {
                        self.found();
                    } else {
                        self.value(item, &next);
                    }
                    self.path.truncate(path_len);
                    self.name.truncate(name_len);
                }
            }
            Value::Null => {}
            Value::String(s) if s.trim().is_empty() => {}
            // A value where rules read members or elements (a node that only names the path, as
            // `once` does, expects nothing below it).
            _ if nodes
                .iter()
                .any(|n| !n.children.is_empty() || n.element.is_some()) =>
            {
                self.found()
            }
            _ => {}
        }
    }
}

/// `L003` for nesting deeper than [`MAX_DEPTH`] (counting the value as level `depth`), `L004` for
/// any string or key longer than 4 KiB.
pub(crate) fn check_limits(value: &Value, depth: usize) -> Result<(), AdaptError> {
    match value {
        Value::String(s) if s.len() > MAX_VALUE_BYTES => Err(AdaptError::too_long()),
        Value::Array(a) => {
            if depth > MAX_DEPTH {
                return Err(AdaptError::too_deep(MAX_DEPTH));
            }
            a.iter().try_for_each(|v| check_limits(v, depth + 1))
        }
        Value::Object(m) => {
            if depth > MAX_DEPTH {
                return Err(AdaptError::too_deep(MAX_DEPTH));
            }
            for (k, v) in m {
                if k.len() > MAX_VALUE_BYTES {
                    return Err(AdaptError::too_long());
                }
                check_limits(v, depth + 1)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    #[test]
    fn iso_dates_are_written_as_format_writes_them() {
        for y in [0, 7, 42, 999, 1000, 1991, 2026, 9999] {
            assert_eq!(iso_date(y, None, None), format!("{y:04}"));
            for m in 0..=99 {
                assert_eq!(iso_date(y, Some(m), None), format!("{y:04}-{m:02}"));
                for d in 0..=99 {
                    assert_eq!(
                        iso_date(y, Some(m), Some(d)),
                        format!("{y:04}-{m:02}-{d:02}")
                    );
                }
            }
        }
    }

    #[test]
    fn date_patterns() {
        let p = DatePattern::parse("TT.MM.JJJJ").unwrap();
        assert_eq!(p.apply("17.02.1991", true).as_deref(), Some("1991-02-17"));
        assert_eq!(p.apply("00.02.1991", true).as_deref(), Some("1991-02"));
        assert_eq!(p.apply("00.00.1991", true).as_deref(), Some("1991"));
        assert_eq!(p.apply("00.02.1991", false), None);
        assert_eq!(p.apply("31.04.1990", true), None);
        assert_eq!(p.apply("1.2.1991", true), None);
        assert_eq!(p.apply("17.02.1991x", true), None);
        let m = DatePattern::parse("MM/JJJJ").unwrap();
        assert_eq!(m.apply("10/2026", false).as_deref(), Some("2026-10"));
        assert_eq!(m.apply("13/2026", false), None);
        assert!(DatePattern::parse("TT.JJJJ").is_none());
        assert!(DatePattern::parse("QQ").is_none());
    }

    #[test]
    fn date_pattern_problems_never_quote_the_value() {
        let p = DatePattern::parse("TT.MM.JJJJ").unwrap();
        assert_eq!(p.problem("31.04.1990"), "a date with day 31 in April");
        assert_eq!(p.problem("30.02.1990"), "a date with day 30 in February");
        assert_eq!(p.problem("01.13.1990"), "month 13 does not exist");
        assert_eq!(
            p.problem("1.2.1991"),
            "a value of another form (8 characters: digits and '.')"
        );
        let m = DatePattern::parse("MM/JJJJ").unwrap();
        assert_eq!(m.problem("13/2026"), "month 13 does not exist");
    }

    #[test]
    fn decimal_numbers() {
        assert_eq!(number("19,5", Decimal::Comma), Some(Value::from(19.5)));
        assert_eq!(number("39", Decimal::Comma), Some(Value::from(39)));
        assert_eq!(number("19.5", Decimal::Comma), None);
        assert_eq!(number("1.000,5", Decimal::Comma), None);
        assert_eq!(number("19.5", Decimal::Dot), Some(Value::from(19.5)));
        assert_eq!(number("19,", Decimal::Comma), None);
        assert_eq!(number("abc", Decimal::Dot), None);
        assert_eq!(number(".5", Decimal::Dot), Some(Value::from(0.5)));
        assert_eq!(number("19.", Decimal::Dot), Some(Value::from(19)));
        assert_eq!(number(".", Decimal::Dot), None);
        assert_eq!(number(",5", Decimal::Comma), None);
    }

    proptest! {
        /// Looking paths up one after another along the previous one finds what a lookup from
        /// the top finds: in objects, in arrays by index, and where a path leads nowhere.
        #[test]
        fn a_walk_finds_what_get_finds(
            paths in proptest::collection::vec(
                proptest::collection::vec("[abx01]", 0..4), 1..12)
        ) {
            let root = serde_json::json!({
                "a": {"a": {"b": 1}, "b": [10, {"a": 2}], "0": "zero"},
                "b": [{"a": 3}, [4, 5]],
                "x": null,
                "0": {"1": "one"}
            });
            let paths: Vec<Vec<String>> = paths;
            let mut walk = Walk { root: &root, steps: Vec::new() };
            for tokens in &paths {
                prop_assert_eq!(walk.get(tokens), get(&root, tokens), "{:?}", tokens);
            }
        }

        /// Values set at compiled places give the draft [`super::super::set_path`] gives, keys in
        /// the same order, whichever of the rules' values are present and in whatever order the
        /// targets come (a later rule may go back into an object an earlier one made).
        #[test]
        fn places_set_what_set_path_sets(
            targets in proptest::collection::vec(
                proptest::collection::vec("[abc]", 1..4), 1..10),
            present in proptest::collection::vec(any::<bool>(), 10)
        ) {
            let targets: Vec<String> = targets.iter().map(|t| t.join(".")).collect();
            // Targets as a mapping could give them: none is a prefix of another.
            let targets: Vec<String> = targets
                .iter()
                .filter(|t| {
                    !targets.iter().any(|o| o != *t
                        && (o.starts_with(&format!("{t}.")) || t.starts_with(&format!("{o}."))))
                })
                .cloned()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let mut rules: Vec<Rule> = targets
                .iter()
                .map(|t| Rule {
                    target: t.clone(),
                    place: Place::new(t),
                    up: 0,
                    tokens: Vec::new(),
                    source: String::new(),
                    date: None,
                    pattern: None,
                    absent: Vec::new(),
                    folded: None,
                    rule: serde_json::from_value(serde_json::json!({"from": "x"}))
                        .expect("a field rule"),
                })
                .collect();
            let top = make_room(&mut rules);
            let texts: Vec<String> = (0..rules.len()).map(|i| i.to_string()).collect();
            let mut plain = Map::new();
            for (i, r) in rules.iter().enumerate() {
                if present[i] {
                    super::super::set_path(&mut plain, &r.target, Value::from(texts[i].clone()));
                }
            }
            // One value at a time, and as the rules put them (keeping the last object open).
            let mut one_by_one = Map::with_capacity(top);
            for (i, r) in rules.iter().enumerate() {
                if present[i] {
                    r.place.set(&mut one_by_one, Value::from(texts[i].clone()));
                }
            }
            let file = MappingFile::parse(
                "fallwerk-csv.toml",
                include_str!("../../mappings/fallwerk-csv.toml"),
            )
            .expect("the shipped mapping");
            let mut draft = Draft::new(1);
            draft.fields = Map::with_capacity(top);
            apply_with(
                &file,
                &rules,
                |i, _| present[i].then(|| Source::Text(&texts[i])),
                None,
                &mut draft,
                None,
            );
            let plain = serde_json::to_string(&plain).unwrap();
            prop_assert_eq!(&serde_json::to_string(&one_by_one).unwrap(), &plain);
            prop_assert_eq!(&serde_json::to_string(&draft.fields).unwrap(), &plain);
        }
    }
}
