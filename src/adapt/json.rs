//! The JSON and JSON Lines engines: read a JSON document (or one JSON value a line) as a
//! stream, one record at a time, and apply a mapping's JSON pointers and value maps. They know no
//! vendor field names; the mapping file does.
//!
//! JSON: the top-level object is walked member by member. The records (the mapping's
//! `delivery.records`, through every list on the way: `/faelle`, `/klienten/faelle`) are never
//! held whole: each record is parsed, mapped and handed to the sink before the next one is read;
//! an enclosing element (a client) is walked member by member too, holding only its own members
//! ([`super::nest`]). Other top-level members form the header. Should the records come before the
//! header members they need, the drafts wait until the header is complete.
//!
//! JSON Lines: every non-empty line is one JSON object, parsed as a stream of its own (a line is
//! never held whole either); with `[jsonl] header_line = true` the first one is the header.
//! Errors name the line.

use super::mapping::{JsonlSpec, MappingFile, Syntax, pointer_tokens};
use super::nest::Nest;
use super::rules::{
    Assembler, HeaderPlan, MAX_DEPTH, RecordPlan, Repeat, check_limits, unknown_issue,
};
use super::{AdaptError, AdaptSink, MAX_VALUE_BYTES};
use crate::catalogue::{Code, echo};
use serde::Deserialize as _;
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::io::{self, BufRead, Read};

/// A mapping compiled for the JSON (or JSON Lines) engine.
#[derive(Debug)]
pub(crate) struct JsonPlan {
    /// The member names from the top down to the records; for JSON Lines the first is the line
    /// itself (an empty name).
    steps: Vec<String>,
    /// JSON Lines settings (JSON Lines only).
    lines: Option<JsonlSpec>,
    header: HeaderPlan,
    record: RecordPlan,
}

impl JsonPlan {
    /// The record part of the plan.
    pub(crate) fn record(&self) -> &RecordPlan {
        &self.record
    }

    /// Compiles a checked mapping file.
    pub(crate) fn compile(file: &MappingFile) -> JsonPlan {
        let records = file
            .delivery
            .records
            .as_deref()
            .and_then(pointer_tokens)
            .unwrap_or_default();
        let (steps, lines) = if file.syntax == Syntax::Jsonl {
            let mut steps = vec![String::new()];
            steps.extend(records);
            (steps, Some(file.jsonl.clone().unwrap_or_default()))
        } else {
            (records, None)
        };
        JsonPlan {
            steps,
            lines,
            header: HeaderPlan::compile(file),
            record: RecordPlan::compile(file),
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
    if plan.lines.is_some() {
        return run_lines(file, plan, reader, sink);
    }
    let reader = io::BufReader::with_capacity(64 * 1024, Utf8Reader::new(reader));
    let mut de = serde_json::Deserializer::from_reader(reader);
    let mut state = State {
        plan,
        asm: Assembler::new(file, &plan.header, &plan.record, sink),
        nest: Nest::new(&plan.record, plan.steps.len()),
        records_seen: false,
        failure: None,
        base: 3,
        line: None,
    };
    let parsed = TopSeed { state: &mut state }.deserialize(&mut de);
    let parsed = parsed.and_then(|()| de.end());
    if let Some(failure) = state.failure.take() {
        return Err(failure);
    }
    if let Err(e) = parsed {
        let trailing = e.to_string().contains("trailing characters");
        let mut err = classify(e, None);
        if trailing && let AdaptError::Rejected { message, .. } = &mut err {
            message.push_str(
                " (one JSON document expected; an export of one JSON object a line needs a mapping with syntax = \"jsonl\")",
            );
        }
        return Err(err);
    }
    if !state.records_seen {
        return Err(AdaptError::rejected(
            Code::X001,
            format!("member '{}' (the records) is missing", plan.steps[0]),
        ));
    }
    state.nest.finish(&mut state.asm)?;
    state.asm.finish()
}

/// Runs the JSON Lines engine over a body.
fn run_lines(
    file: &MappingFile,
    plan: &JsonPlan,
    reader: &mut dyn Read,
    sink: &mut dyn AdaptSink,
) -> Result<(), AdaptError> {
    let header_line = plan.lines.as_ref().is_some_and(|l| l.header_line);
    let mut reader = io::BufReader::with_capacity(64 * 1024, Utf8Reader::new(reader));
    let mut state = State {
        plan,
        asm: Assembler::new(file, &plan.header, &plan.record, sink),
        nest: Nest::new(&plan.record, plan.steps.len()),
        records_seen: true,
        failure: None,
        base: 1,
        line: None,
    };
    let mut line_no: u64 = 0;
    let mut header_done = !header_line;
    if !header_line {
        state.asm.finish()?;
    }
    let mut index = 0usize;
    loop {
        // Skip blank lines; stop at the end.
        loop {
            let buf = reader.fill_buf().map_err(AdaptError::from_io)?;
            let Some(&b) = buf.first() else {
                if !header_done {
                    return Err(AdaptError::rejected(
                        Code::X001,
                        "the header line (the first line) is missing",
                    ));
                }
                state.nest.finish(&mut state.asm)?;
                return state.asm.finish();
            };
            match b {
                b'\n' => {
                    line_no += 1;
                    reader.consume(1);
                }
                b' ' | b'\t' | b'\r' => reader.consume(1),
                _ => break,
            }
        }
        line_no += 1;
        state.line = Some(line_no);
        let at_line = |e: AdaptError| match e {
            AdaptError::Rejected { code, message } if !message.starts_with("line ") => {
                AdaptError::Rejected {
                    code,
                    message: format!("line {line_no}: {message}"),
                }
            }
            other => other,
        };
        let mut de = serde_json::Deserializer::from_reader(OneLine {
            inner: &mut reader,
            done: false,
        });
        let parsed = if !header_done {
            header_done = true;
            match Value::deserialize(&mut de) {
                Ok(value) => {
                    check_limits(&value, 1).map_err(at_line)?;
                    let Value::Object(members) = value else {
                        return Err(at_line(AdaptError::rejected(
                            Code::X001,
                            "the header line must be a JSON object",
                        )));
                    };
                    for (k, v) in members {
                        state
                            .asm
                            .header_member(k, v, Repeat::Replace)
                            .map_err(at_line)?;
                    }
                    state.asm.finish().map_err(at_line)?;
                    Ok(())
                }
                Err(e) => Err(e),
            }
        } else {
            let seed = ElementSeed {
                state: &mut state,
                level: 0,
                index,
            };
            index += 1;
            seed.deserialize(&mut de)
        };
        let parsed = parsed.and_then(|()| de.end());
        if let Some(failure) = state.failure.take() {
            return Err(at_line(failure));
        }
        if let Err(e) = parsed {
            return Err(classify(e, Some(line_no)));
        }
    }
}

/// A reader of one line of a buffered reader: ends before the line's `\n` (which it consumes).
struct OneLine<'r, R> {
    inner: &'r mut R,
    done: bool,
}

impl<R: BufRead> Read for OneLine<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.done || out.is_empty() {
            return Ok(0);
        }
        let buf = self.inner.fill_buf()?;
        if buf.is_empty() {
            self.done = true;
            return Ok(0);
        }
        let avail = buf.len().min(out.len());
        match buf[..avail].iter().position(|b| *b == b'\n') {
            Some(0) => {
                self.inner.consume(1);
                self.done = true;
                Ok(0)
            }
            Some(n) => {
                out[..n].copy_from_slice(&buf[..n]);
                self.inner.consume(n);
                Ok(n)
            }
            None => {
                out[..avail].copy_from_slice(&buf[..avail]);
                self.inner.consume(avail);
                Ok(avail)
            }
        }
    }
}

/// Maps a serde_json error to the delivery-level code it stands for (naming the line of a JSON
/// Lines body).
fn classify(e: serde_json::Error, line: Option<u64>) -> AdaptError {
    use serde_json::error::Category;
    let at = |m: String| match line {
        Some(n) => {
            // serde_json counts lines of the line alone: give the body's line and the column.
            let text = m
                .rsplit_once(" at line ")
                .map(|(head, _)| head.to_string())
                .unwrap_or(m.clone());
            format!("line {n}, column {}: {text}", e.column())
        }
        None => m,
    };
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
            AdaptError::rejected(Code::X000, at(format!("not well-formed JSON: {e}")))
        }
        Category::Data => AdaptError::rejected(
            Code::X001,
            at(format!("the document does not fit the format: {e}")),
        ),
    }
}

struct State<'a> {
    plan: &'a JsonPlan,
    asm: Assembler<'a>,
    nest: Nest<'a>,
    records_seen: bool,
    failure: Option<AdaptError>,
    /// Nesting level of an element of the first list (3 in a JSON document: the top object, the
    /// array, the element; 1 for a JSON Lines line).
    base: usize,
    /// The line being read (JSON Lines).
    line: Option<u64>,
}

impl State<'_> {
    fn fail<E: serde::de::Error>(&mut self, err: AdaptError) -> E {
        let msg = err.to_string();
        self.failure = Some(err);
        E::custom(msg)
    }

    fn header_member(&mut self, key: String, value: Value) -> Result<(), AdaptError> {
        check_limits(&value, 2)?;
        // Duplicate keys: the last wins.
        self.asm.header_member(key, value, Repeat::Replace)
    }

    /// The name of list `level` for messages.
    fn list_name(&self, level: usize) -> String {
        match (&self.plan.lines, level) {
            (Some(_), 0) => "the lines".to_string(),
            _ => format!("'{}'", self.plan.steps[level]),
        }
    }

    fn record(&mut self, value: Value) -> Result<(), AdaptError> {
        let level = self.plan.steps.len() - 1;
        check_limits(&value, self.base + 2 * level)?;
        if !value.is_object() {
            return Err(AdaptError::rejected(
                Code::X001,
                match (&self.plan.lines, level) {
                    (Some(_), 0) => "each line must be a JSON object".to_string(),
                    _ => format!("each entry of {} must be an object", self.list_name(level)),
                },
            ));
        }
        self.nest.record(&mut self.asm, value, Vec::new())
    }

    /// A member of an open enclosing element (not its list).
    fn element_member(
        &mut self,
        level: usize,
        key: String,
        value: Value,
    ) -> Result<(), AdaptError> {
        check_limits(&value, self.base + 2 * level + 1)?;
        if self.nest.knows(&key) {
            return self.nest.member(&mut self.asm, key, value, Repeat::Replace);
        }
        if value.is_null() {
            return Ok(());
        }
        let (path, note) = self.nest.path();
        let path = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        let mut issue = unknown_issue(path, &key);
        issue.message = format!("{note}{}", issue.message);
        self.asm.sink.warning(issue);
        Ok(())
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
            if key == self.state.plan.steps[0] {
                if self.state.records_seen {
                    let msg = format!("member '{key}' given twice");
                    return Err(self.state.fail(AdaptError::rejected(Code::X001, msg)));
                }
                self.state.records_seen = true;
                map.next_value_seed(ListSeed {
                    state: &mut *self.state,
                    level: 0,
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

/// List `level` of the records path (the records themselves at the last level).
struct ListSeed<'s, 'a> {
    state: &'s mut State<'a>,
    level: usize,
}

impl<'de> DeserializeSeed<'de> for ListSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let visitor = ListVisitor {
            state: self.state,
            level: self.level,
        };
        // `any`, so that another type is named by the visitor, never quoted by serde_json.
        // Inside an enclosing element, `null` is an empty list.
        d.deserialize_any(visitor)
    }
}

struct ListVisitor<'s, 'a> {
    state: &'s mut State<'a>,
    level: usize,
}

impl ListVisitor<'_, '_> {
    fn not_a_list(&self, found: &str) -> String {
        format!(
            "'{}' must be an array, not {found}",
            self.state.plan.steps[self.level]
        )
    }
}

impl<'de> Visitor<'de> for ListVisitor<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        if self.level == 0 {
            f.write_str("an array of records")
        } else {
            write!(f, "an array ('{}')", self.state.plan.steps[self.level])
        }
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        if self.level == 0 {
            return Err(E::invalid_type(serde::de::Unexpected::Unit, &self));
        }
        Ok(())
    }
    // Another type: named without quoting the value (it may be personal).
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(self.not_a_list("a text")))
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(self.not_a_list("true or false")))
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(self.not_a_list("a number")))
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(self.not_a_list("a number")))
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(self.not_a_list("a number")))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(serde::de::Error::custom(self.not_a_list("an object")))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let last = self.state.plan.steps.len() - 1;
        let mut index = 0;
        if self.level == last {
            while let Some(value) = seq.next_element::<Value>()? {
                if let Err(e) = self.state.record(value) {
                    return Err(self.state.fail(e));
                }
            }
            return Ok(());
        }
        loop {
            let seed = ElementSeed {
                state: &mut *self.state,
                level: self.level,
                index,
            };
            if seq.next_element_seed(seed)?.is_none() {
                break;
            }
            index += 1;
        }
        Ok(())
    }
}

/// One element of list `level` that encloses records (a client of `/klienten/faelle`), or a
/// JSON Lines line.
struct ElementSeed<'s, 'a> {
    state: &'s mut State<'a>,
    level: usize,
    index: usize,
}

impl<'de> DeserializeSeed<'de> for ElementSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let last = self.state.plan.steps.len() - 1;
        if self.level == last {
            // A JSON Lines line that is the record.
            let value = Value::deserialize(d)?;
            if let Err(e) = self.state.record(value) {
                return Err(self.state.fail(e));
            }
            return Ok(());
        }
        d.deserialize_any(ElementVisitor {
            state: self.state,
            level: self.level,
            index: self.index,
        })
    }
}

struct ElementVisitor<'s, 'a> {
    state: &'s mut State<'a>,
    level: usize,
    index: usize,
}

impl ElementVisitor<'_, '_> {
    fn not_an_object(&self) -> String {
        if self.state.plan.lines.is_some() && self.level == 0 {
            "each line must be a JSON object".to_string()
        } else {
            format!(
                "each entry of '{}' must be an object",
                self.state.plan.steps[self.level]
            )
        }
    }
}

impl<'de> Visitor<'de> for ElementVisitor<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        if self.state.plan.lines.is_some() && self.level == 0 {
            f.write_str("a JSON object (each line)")
        } else {
            write!(
                f,
                "a JSON object (each entry of '{}')",
                self.state.plan.steps[self.level]
            )
        }
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom(self.not_an_object()))
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom(self.not_an_object()))
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom(self.not_an_object()))
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom(self.not_an_object()))
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom(self.not_an_object()))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let state = self.state;
        let level = self.level;
        let child = state.plan.steps[level + 1].clone();
        let (parent, _) = state.nest.path();
        let (path, note) = match (&state.plan.lines, level) {
            (Some(_), 0) => (String::new(), format!("line {}: ", state.line.unwrap_or(0))),
            _ => {
                let here = format!("{}[{}]", state.plan.steps[level], self.index);
                (
                    if parent.is_empty() {
                        here
                    } else {
                        format!("{parent}.{here}")
                    },
                    state
                        .line
                        .map(|n| format!("line {n}: "))
                        .unwrap_or_default(),
                )
            }
        };
        state.nest.open(path, note, &child);
        let mut seen = false;
        while let Some(key) = map.next_key::<String>()? {
            if key.len() > MAX_VALUE_BYTES {
                return Err(state.fail(AdaptError::too_long()));
            }
            if key == child {
                if seen {
                    let msg = format!("member '{}' given twice in one element", echo(&key));
                    return Err(state.fail(AdaptError::rejected(Code::X001, msg)));
                }
                seen = true;
                map.next_value_seed(ListSeed {
                    state: &mut *state,
                    level: level + 1,
                })?;
            } else {
                let value: Value = map.next_value()?;
                if let Err(e) = state.element_member(level, key, value) {
                    return Err(state.fail(e));
                }
            }
        }
        if let Err(e) = state.nest.close(&mut state.asm) {
            return Err(state.fail(e));
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
