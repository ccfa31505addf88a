//! The JSON engine: reads one JSON document as a stream, one record at a time, and applies a
//! mapping's JSON pointers and value maps. It knows no vendor field names; the mapping file does.
//!
//! The top-level object is walked member by member. The records array (the mapping's
//! `delivery.records`) is never held whole: each element is parsed, mapped and handed to the sink
//! before the next one is read. Other top-level members form the header. Should the records come
//! before the header members they need, the drafts wait until the header is complete.

use super::mapping::{FieldRule, KnownTree, MappingFile, ValueKind, pointer_tokens};
use super::{AdaptError, AdaptSink, DeliveryHeader, Draft, Issue, MAX_VALUE_BYTES, normalize};
use crate::catalogue::Code;
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::io::{self, Read};

/// Nesting deeper than this is `L003`.
const MAX_DEPTH: usize = 32;

/// A mapping rule with its pointer pre-split.
#[derive(Debug)]
pub(crate) struct Rule {
    target: String,
    tokens: Vec<String>,
    source: String,
    rule: FieldRule,
}

/// A list rule with its pointers pre-split.
#[derive(Debug)]
pub(crate) struct ListRule {
    target: String,
    tokens: Vec<String>,
    fields: Vec<Rule>,
}

/// A mapping compiled for the JSON engine.
#[derive(Debug)]
pub(crate) struct JsonPlan {
    records_member: String,
    header_members: Vec<String>,
    record_fields: Vec<Rule>,
    delivery_fields: Vec<Rule>,
    lists: Vec<ListRule>,
    known_root: KnownTree,
    known_record: KnownTree,
}

fn rule(target: &str, r: &FieldRule) -> Rule {
    Rule {
        target: target.to_string(),
        tokens: pointer_tokens(&r.from).unwrap_or_default(),
        source: MappingFile::source_name(&r.from).to_string(),
        rule: r.clone(),
    }
}

impl JsonPlan {
    /// Compiles a checked mapping file.
    pub(crate) fn compile(file: &MappingFile) -> JsonPlan {
        let d = &file.delivery;
        let records_member = pointer_tokens(&d.records)
            .and_then(|t| t.into_iter().next())
            .unwrap_or_default();
        let mut known_root = KnownTree::default();
        known_root.insert(&d.records).leaf = true;
        let mut header_pointers: Vec<&str> = Vec::new();
        header_pointers.extend(d.version.iter().map(|v| v.from.as_str()));
        header_pointers.extend(d.idempotency_key.iter().map(String::as_str));
        header_pointers.extend(d.mode.iter().map(|m| m.from.as_str()));
        header_pointers.extend(d.objects.iter().map(String::as_str));
        header_pointers.extend(d.fields.values().map(|r| r.from.as_str()));
        let mut header_members: Vec<String> = Vec::new();
        for p in &header_pointers {
            known_root.insert(p).leaf = true;
            if let Some(first) = pointer_tokens(p).and_then(|t| t.into_iter().next())
                && !header_members.contains(&first)
            {
                header_members.push(first);
            }
        }
        for p in &d.objects {
            known_root.insert(p).leaf = false;
        }
        for p in &d.informational {
            known_root.insert(p).leaf = true;
        }
        let mut known_record = KnownTree::default();
        for r in file.record.fields.values() {
            known_record.insert(&r.from).leaf = true;
        }
        for p in &file.record.informational {
            known_record.insert(p).leaf = true;
        }
        let mut lists = Vec::new();
        for (name, list) in &file.record.lists {
            let mut element = KnownTree::default();
            for r in list.fields.values() {
                element.insert(&r.from).leaf = true;
            }
            known_record.insert(&list.from).element = Some(Box::new(element));
            lists.push(ListRule {
                target: name.clone(),
                tokens: pointer_tokens(&list.from).unwrap_or_default(),
                fields: list.fields.iter().map(|(t, r)| rule(t, r)).collect(),
            });
        }
        JsonPlan {
            records_member,
            header_members,
            record_fields: file.record.fields.iter().map(|(t, r)| rule(t, r)).collect(),
            delivery_fields: d.fields.iter().map(|(t, r)| rule(t, r)).collect(),
            lists,
            known_root,
            known_record,
        }
    }
}

/// Runs the JSON engine over a body.
pub(crate) fn run(
    file: &MappingFile,
    plan: &JsonPlan,
    reader: &mut dyn Read,
    sink: &mut dyn AdaptSink,
) -> Result<(), AdaptError> {
    let reader = io::BufReader::with_capacity(64 * 1024, Utf8Reader::new(reader));
    let mut de = serde_json::Deserializer::from_reader(reader);
    let mut state = State {
        file,
        plan,
        sink,
        header: Map::new(),
        header_done: false,
        header_values: Vec::new(),
        pending: Vec::new(),
        position: 0,
        records_seen: false,
        failure: None,
    };
    let parsed = TopSeed { state: &mut state }.deserialize(&mut de);
    let parsed = parsed.and_then(|()| de.end());
    if let Some(failure) = state.failure.take() {
        return Err(failure);
    }
    if let Err(e) = parsed {
        return Err(classify(e));
    }
    if !state.records_seen {
        return Err(AdaptError::rejected(
            Code::X001,
            format!("member '{}' (the records) is missing", plan.records_member),
        ));
    }
    state.finish_header()?;
    let pending = std::mem::take(&mut state.pending);
    for draft in pending {
        state.emit(draft)?;
    }
    Ok(())
}

/// Maps a serde_json error to the delivery-level code it stands for.
fn classify(e: serde_json::Error) -> AdaptError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Io => {
            let io: io::Error = e.into();
            AdaptError::from_io(io)
        }
        Category::Syntax if e.to_string().contains("recursion limit") => AdaptError::rejected(
            Code::L003,
            format!("nesting deeper than {MAX_DEPTH} levels"),
        ),
        Category::Syntax | Category::Eof => {
            AdaptError::rejected(Code::X000, format!("not well-formed JSON: {e}"))
        }
        Category::Data => AdaptError::rejected(
            Code::X001,
            format!("the document does not fit the format: {e}"),
        ),
    }
}

struct State<'a> {
    file: &'a MappingFile,
    plan: &'a JsonPlan,
    sink: &'a mut dyn AdaptSink,
    header: Map<String, Value>,
    header_done: bool,
    header_values: Vec<(String, Value)>,
    pending: Vec<Draft>,
    position: usize,
    records_seen: bool,
    failure: Option<AdaptError>,
}

impl State<'_> {
    fn fail<E: serde::de::Error>(&mut self, err: AdaptError) -> E {
        let msg = err.to_string();
        self.failure = Some(err);
        E::custom(msg)
    }

    fn header_member(&mut self, key: String, value: Value) -> Result<(), AdaptError> {
        check_limits(&value, 2)?;
        let mut unknown = Vec::new();
        let mut one = Map::new();
        one.insert(key.clone(), value);
        unknown_fields(&one, &self.plan.known_root, "", &mut unknown);
        for (path, name) in unknown {
            self.sink.warning(Issue::new(
                Code::W002,
                path,
                format!("unknown field '{}' ignored", crate::catalogue::echo(&name)),
            ));
        }
        if self.header_done {
            return Ok(());
        }
        let value = one.remove(&key).unwrap_or(Value::Null);
        self.header.insert(key, value);
        if !self.header_done
            && self
                .plan
                .header_members
                .iter()
                .all(|m| self.header.contains_key(m))
        {
            self.finish_header()?;
        }
        Ok(())
    }

    /// Checks the header, tells the sink, and releases waiting drafts.
    fn finish_header(&mut self) -> Result<(), AdaptError> {
        if self.header_done {
            return Ok(());
        }
        self.header_done = true;
        let doc = Value::Object(std::mem::take(&mut self.header));
        let d = &self.file.delivery;
        if let Some(v) = &d.version {
            match doc.pointer(&v.from) {
                Some(Value::String(s)) => {
                    if !v.accept.iter().any(|a| a == s) {
                        return Err(AdaptError::rejected(
                            Code::V000,
                            format!(
                                "format version '{}' is not supported (supported: {})",
                                crate::catalogue::echo(s),
                                v.accept.join(", ")
                            ),
                        ));
                    }
                }
                _ => {
                    return Err(AdaptError::rejected(
                        Code::X001,
                        format!("'{}' must be a string with the format version", v.from),
                    ));
                }
            }
        }
        for p in &d.objects {
            if !doc.pointer(p).is_some_and(Value::is_object) {
                return Err(AdaptError::rejected(
                    Code::X001,
                    format!("'{p}' must be an object"),
                ));
            }
        }
        let mut header = DeliveryHeader::default();
        if let Some(p) = &d.idempotency_key {
            match doc.pointer(p).and_then(Value::as_str).map(normalize) {
                Some(id) if !id.is_empty() => header.idempotency_key = Some(id),
                _ => {
                    return Err(AdaptError::rejected(
                        Code::X001,
                        format!("'{p}' (the message id) must be a non-empty string"),
                    ));
                }
            }
        }
        if let Some(m) = &d.mode {
            let raw = doc.pointer(&m.from).and_then(Value::as_str).map(normalize);
            match raw.as_deref().and_then(|r| m.map.get(r)) {
                Some(mode) => header.mode = Some(*mode),
                None => {
                    return Err(AdaptError::rejected(
                        Code::X001,
                        format!(
                            "'{}' must be one of: {}",
                            m.from,
                            m.map.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
            }
        }
        for r in &self.plan.delivery_fields {
            match extract(self.file, &r.rule, &r.source, get(&doc, &r.tokens)) {
                Ok(Some(v)) => self.header_values.push((r.target.clone(), v)),
                Ok(None) if r.rule.required => {
                    return Err(AdaptError::rejected(
                        Code::X001,
                        format!("'{}' is required", r.rule.from),
                    ));
                }
                Ok(None) => {}
                Err(issue) => {
                    return Err(AdaptError::rejected(
                        Code::X001,
                        format!("'{}': {}", r.rule.from, issue.message),
                    ));
                }
            }
        }
        self.sink.header(&header)
    }

    fn record(&mut self, value: Value) -> Result<(), AdaptError> {
        check_limits(&value, 3)?;
        let Value::Object(obj) = value else {
            return Err(AdaptError::rejected(
                Code::X001,
                format!(
                    "each entry of '{}' must be an object",
                    self.plan.records_member
                ),
            ));
        };
        self.position += 1;
        let draft = map_record(self.file, self.plan, self.position, &obj);
        if self.header_done {
            self.emit(draft)
        } else {
            self.pending.push(draft);
            Ok(())
        }
    }

    fn emit(&mut self, mut draft: Draft) -> Result<(), AdaptError> {
        for (target, value) in &self.header_values {
            draft.set(target, value.clone());
        }
        self.sink.record(draft)
    }
}

/// Looks a pre-split pointer up.
fn get<'v>(mut v: &'v Value, tokens: &[String]) -> Option<&'v Value> {
    for t in tokens {
        v = match v {
            Value::Object(m) => m.get(t)?,
            Value::Array(a) => a.get(t.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// Applies one rule to a source value: `Ok(None)` when absent.
fn extract(
    file: &MappingFile,
    rule: &FieldRule,
    source: &str,
    value: Option<&Value>,
) -> Result<Option<Value>, Issue> {
    let bad_type = |what: &str| Issue {
        code: Code::F002,
        field: None,
        message: format!("{source} must be {what}"),
    };
    let map_value = |s: String| -> Result<Value, Issue> {
        match &rule.map {
            None => Ok(Value::String(s)),
            Some(name) => match file.value_map(name).and_then(|m| m.get(&s)) {
                Some(code) => Ok(Value::String(code.clone())),
                None => Err(Issue {
                    code: Code::F003,
                    field: None,
                    message: format!(
                        "{source} value '{}' is not in the mapping's value map",
                        crate::catalogue::echo(&s)
                    ),
                }),
            },
        }
    };
    let Some(value) = value else { return Ok(None) };
    if value.is_null() {
        return Ok(None);
    }
    match rule.kind {
        ValueKind::String => match value {
            Value::String(s) => {
                let t = normalize(s);
                if t.is_empty() {
                    Ok(None)
                } else {
                    map_value(t).map(Some)
                }
            }
            _ => Err(bad_type("a string")),
        },
        ValueKind::Number => match value {
            Value::Number(_) => Ok(Some(value.clone())),
            _ => Err(bad_type("a number")),
        },
        ValueKind::StringList => {
            let items: Vec<&Value> = match value {
                Value::Array(a) => a.iter().collect(),
                Value::String(_) if rule.join.is_some() => vec![value],
                _ => return Err(bad_type("a list of strings")),
            };
            let mut out = Vec::new();
            for item in items {
                match item {
                    Value::Null => {}
                    Value::String(s) => {
                        let t = normalize(s);
                        if !t.is_empty() {
                            out.push(t);
                        }
                    }
                    _ => return Err(bad_type("a list of strings")),
                }
            }
            if out.is_empty() {
                return Ok(None);
            }
            if let Some(sep) = &rule.join {
                return map_value(out.join(sep)).map(Some);
            }
            out.into_iter()
                .map(map_value)
                .collect::<Result<Vec<_>, _>>()
                .map(|v| Some(Value::Array(v)))
        }
    }
}

/// Builds the draft of one record object.
fn map_record(
    file: &MappingFile,
    plan: &JsonPlan,
    position: usize,
    obj: &Map<String, Value>,
) -> Draft {
    let mut draft = Draft::new(position);
    let root = Value::Object(obj.clone());
    apply_rules(file, &plan.record_fields, &root, "", &mut draft, None);
    for list in &plan.lists {
        match get(&root, &list.tokens) {
            None | Some(Value::Null) => {}
            Some(Value::Array(entries)) => {
                let mut out = Vec::new();
                for entry in entries.iter().filter(|e| !e.is_null()) {
                    let index = out.len();
                    let prefix = format!("{}[{index}].", list.target);
                    if !entry.is_object() {
                        draft.issues.push(Issue::new(
                            Code::F002,
                            format!("{}[{index}]", list.target),
                            format!("entries of {} must be objects", list.target),
                        ));
                        out.push(Value::Object(Map::new()));
                        continue;
                    }
                    let mut element = Map::new();
                    apply_rules(
                        file,
                        &list.fields,
                        entry,
                        &prefix,
                        &mut draft,
                        Some(&mut element),
                    );
                    out.push(Value::Object(element));
                }
                if !out.is_empty() {
                    draft.fields.insert(list.target.clone(), Value::Array(out));
                }
            }
            Some(_) => draft.issues.push(Issue::new(
                Code::F002,
                list.target.clone(),
                format!(
                    "{} must be a list",
                    MappingFile::source_name(&file_list_from(file, &list.target))
                ),
            )),
        }
    }
    draft.record_id = draft
        .fields
        .get("source")
        .and_then(|s| s.get("record_id"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut unknown = Vec::new();
    unknown_fields(obj, &plan.known_record, "", &mut unknown);
    for (path, key) in unknown {
        draft.issues.push(Issue::new(
            Code::W002,
            path,
            format!("unknown field '{}' ignored", crate::catalogue::echo(&key)),
        ));
    }
    draft
}

fn file_list_from(file: &MappingFile, target: &str) -> String {
    file.record
        .lists
        .get(target)
        .map(|l| l.from.clone())
        .unwrap_or_default()
}

/// Applies rules to a source object; values go into `element` when given, else into the draft.
fn apply_rules(
    file: &MappingFile,
    rules: &[Rule],
    source: &Value,
    prefix: &str,
    draft: &mut Draft,
    mut element: Option<&mut Map<String, Value>>,
) {
    for r in rules {
        let target = format!("{prefix}{}", r.target);
        match extract(file, &r.rule, &r.source, get(source, &r.tokens)) {
            Ok(Some(v)) => {
                match element.as_deref_mut() {
                    Some(el) => super::set_path(el, &r.target, v),
                    None => draft.set(&r.target, v),
                }
                draft.sources.push((target, r.rule.from.clone()));
            }
            Ok(None) => {}
            Err(mut issue) => {
                issue.field = Some(target);
                draft.issues.push(issue);
            }
        }
    }
}

/// Collects (dotted source path, key) of members the known tree does not cover.
fn unknown_fields(
    obj: &Map<String, Value>,
    known: &KnownTree,
    prefix: &str,
    out: &mut Vec<(String, String)>,
) {
    for (key, value) in obj {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match known.children.get(key) {
            None => out.push((path, key.clone())),
            Some(node) if node.leaf => {}
            Some(node) => match value {
                Value::Object(m) => unknown_fields(m, node, &path, out),
                Value::Array(a) => {
                    if let Some(el) = &node.element {
                        for item in a {
                            if let Value::Object(m) = item {
                                unknown_fields(m, el, &path, out);
                            }
                        }
                    }
                }
                _ => {}
            },
        }
    }
}

/// `L003` for nesting deeper than [`MAX_DEPTH`] (counting the value as level `depth`), `L004` for
/// any string or key longer than 4 KiB.
fn check_limits(value: &Value, depth: usize) -> Result<(), AdaptError> {
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

struct TopSeed<'s, 'a> {
    state: &'s mut State<'a>,
}

impl<'de> DeserializeSeed<'de> for TopSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(TopVisitor { state: self.state })
    }
}

struct TopVisitor<'s, 'a> {
    state: &'s mut State<'a>,
}

impl<'de> Visitor<'de> for TopVisitor<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key.len() > MAX_VALUE_BYTES {
                return Err(self.state.fail(AdaptError::too_long()));
            }
            if key == self.state.plan.records_member {
                if self.state.records_seen {
                    let msg = format!("member '{key}' given twice");
                    return Err(self.state.fail(AdaptError::rejected(Code::X001, msg)));
                }
                self.state.records_seen = true;
                map.next_value_seed(RecordsSeed {
                    state: &mut *self.state,
                })?;
            } else {
                let value: Value = map.next_value()?;
                if let Err(e) = self.state.header_member(key, value) {
                    return Err(self.state.fail(e));
                }
            }
        }
        Ok(())
    }
}

struct RecordsSeed<'s, 'a> {
    state: &'s mut State<'a>,
}

impl<'de> DeserializeSeed<'de> for RecordsSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(RecordsVisitor { state: self.state })
    }
}

struct RecordsVisitor<'s, 'a> {
    state: &'s mut State<'a>,
}

impl<'de> Visitor<'de> for RecordsVisitor<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of records")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(value) = seq.next_element::<Value>()? {
            if let Err(e) = self.state.record(value) {
                return Err(self.state.fail(e));
            }
        }
        Ok(())
    }
}

/// Checks that the bytes are UTF-8 as they stream by (invalid bytes are `S001`, not `X000`), and
/// drops a leading byte-order mark.
pub(crate) struct Utf8Reader<R> {
    inner: R,
    carry: [u8; 4],
    carry_len: usize,
    started: bool,
}

impl<R: Read> Utf8Reader<R> {
    /// Wraps a reader.
    pub(crate) fn new(inner: R) -> Self {
        Utf8Reader {
            inner,
            carry: [0; 4],
            carry_len: 0,
            started: false,
        }
    }
}

impl<R: Read> Read for Utf8Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.len() < 8 {
            // Every caller reads through a large BufReader; a tiny buffer could split a carry.
            return Err(io::Error::other("read buffer smaller than 8 bytes"));
        }
        loop {
            let c = self.carry_len;
            buf[..c].copy_from_slice(&self.carry[..c]);
            let n = self.inner.read(&mut buf[c..])?;
            let mut total = c + n;
            if n == 0 {
                if c > 0 {
                    return Err(super::invalid_encoding("UTF-8"));
                }
                return Ok(0);
            }
            let mut start = 0;
            if !self.started {
                if total < 3 && buf[..total].starts_with(&[0xEF, 0xBB][..total.min(2)]) {
                    // Not enough bytes to decide about a BOM yet.
                    self.carry[..total].copy_from_slice(&buf[..total]);
                    self.carry_len = total;
                    continue;
                }
                self.started = true;
                if buf[..total].starts_with(&[0xEF, 0xBB, 0xBF]) {
                    start = 3;
                }
            }
            match std::str::from_utf8(&buf[start..total]) {
                Ok(_) => self.carry_len = 0,
                Err(e) => {
                    if e.error_len().is_some() {
                        return Err(super::invalid_encoding("UTF-8"));
                    }
                    let valid = start + e.valid_up_to();
                    let rest = total - valid;
                    self.carry[..rest].copy_from_slice(&buf[valid..total]);
                    self.carry_len = rest;
                    total = valid;
                }
            }
            if start > 0 {
                buf.copy_within(start..total, 0);
                total -= start;
            }
            if total == 0 {
                continue;
            }
            return Ok(total);
        }
    }
}
