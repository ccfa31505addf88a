//! The JSON engine: reads one JSON document as a stream, one record at a time, and applies a
//! mapping's JSON pointers and value maps. It knows no vendor field names; the mapping file does.
//!
//! The top-level object is walked member by member. The records array (the mapping's
//! `delivery.records`) is never held whole: each element is parsed, mapped and handed to the sink
//! before the next one is read. Other top-level members form the header. Should the records come
//! before the header members they need, the drafts wait until the header is complete.

use super::mapping::{MappingFile, pointer_tokens};
use super::rules::{Assembler, HeaderPlan, MAX_DEPTH, RecordPlan, Repeat, check_limits};
use super::{AdaptError, AdaptSink, MAX_VALUE_BYTES};
use crate::catalogue::Code;
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::io::{self, Read};

/// A mapping compiled for the JSON engine.
#[derive(Debug)]
pub(crate) struct JsonPlan {
    records_member: String,
    header: HeaderPlan,
    record: RecordPlan,
}

impl JsonPlan {
    /// Compiles a checked mapping file.
    pub(crate) fn compile(file: &MappingFile) -> JsonPlan {
        let records_member = file
            .delivery
            .records
            .as_deref()
            .and_then(pointer_tokens)
            .and_then(|t| t.into_iter().next())
            .unwrap_or_default();
        JsonPlan {
            records_member,
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
    let reader = io::BufReader::with_capacity(64 * 1024, Utf8Reader::new(reader));
    let mut de = serde_json::Deserializer::from_reader(reader);
    let mut state = State {
        plan,
        asm: Assembler::new(file, &plan.header, &plan.record, sink),
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
    state.asm.finish()
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
    plan: &'a JsonPlan,
    asm: Assembler<'a>,
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
        // Duplicate keys: the last wins.
        self.asm.header_member(key, value, Repeat::Replace)
    }

    fn record(&mut self, value: Value) -> Result<(), AdaptError> {
        check_limits(&value, 3)?;
        if !value.is_object() {
            return Err(AdaptError::rejected(
                Code::X001,
                format!(
                    "each entry of '{}' must be an object",
                    self.plan.records_member
                ),
            ));
        }
        self.asm.record(&value, Vec::new())
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
