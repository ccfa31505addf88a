//! The XML engine: reads one message with quick-xml's streaming `NsReader`, one record element at
//! a time. Each record element becomes a small tree (child elements by local name, repeated ones
//! as arrays, attributes as `@name`, text as strings) to which the mapping's rules apply; the
//! other children of the root form the header. Records may sit inside enclosing elements
//! (`records = "/klient/fall"`): an enclosing element's own attributes and children are held for
//! `../` rules ([`super::nest`]), its record elements are mapped one by one. DTDs and entity declarations are refused (`X000`);
//! the encoding comes from the byte-order mark, else the XML declaration, else UTF-8, and is
//! decoded strictly (`S001`). It knows no element names; the mapping file does.

use super::decode::{ByteCharset, ByteGuard, ByteReader, DecodingReader, Guarded, Peeked, Step};
use super::mapping::{MappingFile, XmlSpec, pointer_tokens};
use super::nest::Nest;
use super::rules::{Assembler, HeaderPlan, MAX_DEPTH, RecordPlan, Repeat};
use super::{AdaptError, AdaptSink, Issue, MAX_VALUE_BYTES, refused};
use crate::catalogue::{Code, echo};
use quick_xml::NsReader;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use serde_json::{Map, Value};
use std::io::{BufReader, Read};

/// A mapping compiled for the XML engine.
#[derive(Debug)]
pub(crate) struct XmlPlan {
    spec: XmlSpec,
    /// Element names from below the root down to the record element (`["klient", "fall"]`).
    steps: Vec<String>,
    header: HeaderPlan,
    record: RecordPlan,
}

impl XmlPlan {
    /// The record part of the plan.
    pub(crate) fn record(&self) -> &RecordPlan {
        &self.record
    }

    /// Compiles a checked mapping file.
    pub(crate) fn compile(file: &MappingFile) -> XmlPlan {
        XmlPlan {
            spec: file.xml.clone().expect("checked: xml section present"),
            steps: file
                .delivery
                .records
                .as_deref()
                .and_then(pointer_tokens)
                .unwrap_or_default(),
            header: HeaderPlan::compile(file),
            record: RecordPlan::compile(file),
        }
    }
}

/// How an XML body is decoded.
enum Charset {
    /// Through encoding_rs.
    Rs(&'static encoding_rs::Encoding),
    /// Exactly, byte by byte.
    Byte(ByteCharset),
}

/// The encoding of an XML body: byte-order mark, else the declaration, else UTF-8.
fn detect_encoding(head: &[u8]) -> Result<Charset, AdaptError> {
    if let Some((enc, _)) = encoding_rs::Encoding::for_bom(head) {
        return Ok(Charset::Rs(enc));
    }
    let text = String::from_utf8_lossy(head);
    if let Some(rest) = text.strip_prefix("<?xml")
        && let Some(end) = rest.find("?>")
    {
        let decl = &rest[..end];
        if let Some(pos) = decl.find("encoding") {
            let after = decl[pos + "encoding".len()..].trim_start();
            if let Some(after) = after.strip_prefix('=') {
                let after = after.trim_start();
                let quote = after.chars().next().unwrap_or('"');
                let label: String = after.chars().skip(1).take_while(|c| *c != quote).collect();
                if let Some(byte) = ByteCharset::for_label(&label) {
                    return Ok(Charset::Byte(byte));
                }
                return encoding_rs::Encoding::for_label(label.as_bytes())
                    .map(Charset::Rs)
                    .ok_or_else(|| {
                        AdaptError::rejected(
                            Code::S001,
                            format!("encoding '{}' is not one Weiche knows", echo(&label)),
                        )
                    });
            }
        }
    }
    Ok(Charset::Rs(encoding_rs::UTF_8))
}

/// One open element.
struct Frame {
    name: String,
    map: Map<String, Value>,
    text: String,
    has_children: bool,
    /// Inside another namespace (skipped) or a code parent's XÖV `name`.
    skip: bool,
    /// A code-list parent: its `name` child is dropped.
    code_parent: bool,
    /// More than [`MAX_VALUE_BYTES`] of white space came before any child (not kept in `text`).
    blank_over: bool,
}

/// Adds a child value; a repeated name becomes an array (XML values are never arrays otherwise).
fn insert(map: &mut Map<String, Value>, key: String, value: Value) {
    match map.get_mut(&key) {
        None => {
            map.insert(key, value);
        }
        Some(Value::Array(a)) => a.push(value),
        Some(existing) => {
            let prev = existing.take();
            *existing = Value::Array(vec![prev, value]);
        }
    }
}

fn x000(message: impl Into<String>) -> AdaptError {
    AdaptError::rejected(Code::X000, message)
}

fn xml_error(e: quick_xml::Error) -> AdaptError {
    match e {
        quick_xml::Error::Io(io) => {
            let io = std::sync::Arc::try_unwrap(io)
                .unwrap_or_else(|a| std::io::Error::new(a.kind(), a.to_string()));
            AdaptError::from_io(io)
        }
        other => x000(format!("not well-formed XML: {other}")),
    }
}

/// Runs the XML engine over a body.
pub(crate) fn run(
    file: &MappingFile,
    plan: &XmlPlan,
    reader: &mut dyn Read,
    sink: &mut dyn AdaptSink,
) -> Result<(), AdaptError> {
    let peeked = Peeked::new(reader, 1024).map_err(AdaptError::from_io)?;
    let decoded: Box<dyn Read + '_> = match detect_encoding(peeked.head())? {
        Charset::Rs(encoding) => Box::new(DecodingReader::new(peeked, encoding)),
        Charset::Byte(charset) => Box::new(ByteReader::new(peeked, charset)),
    };
    let guarded = Guarded::new(decoded, XmlGuard::new());
    let mut xml = NsReader::from_reader(BufReader::with_capacity(64 * 1024, guarded));
    {
        let c = xml.config_mut();
        c.expand_empty_elements = true;
        c.check_end_names = true;
        c.trim_text(false);
    }
    let ns = plan.spec.namespace.as_bytes().to_vec();
    let mut asm = Assembler::new(file, &plan.header, &plan.record, sink);
    let mut nest = Nest::new(&plan.record, plan.steps.len());
    // Stack indices of the open elements of the records path (enclosing elements, then the
    // record), and how many of each name their parent has had so far.
    let mut level_frames: Vec<usize> = Vec::new();
    let mut counts: Vec<usize> = vec![0; plan.steps.len()];
    // W002 issues of the record being read.
    let mut record_issues: Vec<Issue> = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut root_seen = false;
    let mut root_closed = false;
    let mut in_record = false;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let (resolved, event) = xml.read_resolved_event_into(&mut buf).map_err(xml_error)?;
        let in_ns = if ns.is_empty() {
            matches!(&resolved, ResolveResult::Unbound)
        } else {
            matches!(&resolved, ResolveResult::Bound(n) if n.as_ref() == ns.as_slice())
        };
        match event {
            Event::DocType(_) => return Err(x000("DTDs and entity declarations are refused")),
            Event::Start(e) => {
                if root_closed {
                    return Err(x000("content after the root element"));
                }
                let local = String::from_utf8_lossy(e.local_name().as_ref()).to_string();
                if !root_seen {
                    if !in_ns || local != plan.spec.root {
                        return Err(AdaptError::rejected(
                            Code::X001,
                            format!(
                                "the root element must be '{}' in namespace {}",
                                plan.spec.root, plan.spec.namespace
                            ),
                        ));
                    }
                    root_seen = true;
                    let mut frame = Frame {
                        name: local,
                        map: Map::new(),
                        text: String::new(),
                        has_children: false,
                        skip: false,
                        code_parent: false,
                        blank_over: false,
                    };
                    attributes(&xml, &e, plan, &mut frame)?;
                    for (k, v) in std::mem::take(&mut frame.map) {
                        asm.header_member(k, v, Repeat::Collect)?;
                    }
                    asm.root_attributes_done()?;
                    stack.push(frame);
                    continue;
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(AdaptError::too_deep(MAX_DEPTH));
                }
                let parent_skip = stack.last().is_some_and(|f| f.skip);
                let parent_code = stack.last().is_some_and(|f| f.code_parent);
                if let Some(parent) = stack.last_mut() {
                    parent.has_children = true;
                    parent.text.clear();
                    parent.blank_over = false;
                }
                let foreign = !in_ns;
                let xoev_name = parent_code && local == "name";
                if foreign && !parent_skip {
                    let path = dotted(&stack, &local, &level_frames, in_record, nest.path().0);
                    let issue = Issue::new(
                        Code::W002,
                        path,
                        format!("element '{}' of another namespace ignored", echo(&local)),
                    );
                    if in_record {
                        record_issues.push(issue);
                    } else {
                        asm.sink.warning(issue);
                    }
                }
                let mut frame = Frame {
                    code_parent: in_ns
                        && (plan.spec.codelists.contains_key(&local)
                            || plan.spec.code_parents.contains(&local)),
                    name: local,
                    map: Map::new(),
                    text: String::new(),
                    has_children: false,
                    skip: parent_skip || foreign || xoev_name,
                    blank_over: false,
                };
                if !frame.skip {
                    attributes(&xml, &e, plan, &mut frame)?;
                }
                let d = level_frames.len();
                let is_step = !frame.skip
                    && !in_record
                    && d < plan.steps.len()
                    && stack.len() == level_frames.last().map_or(1, |i| i + 1)
                    && frame.name == plan.steps[d];
                if is_step {
                    let index = counts[d];
                    counts[d] += 1;
                    if let Some(c) = counts.get_mut(d + 1) {
                        *c = 0;
                    }
                    level_frames.push(stack.len());
                    if d + 1 == plan.steps.len() {
                        in_record = true;
                    } else {
                        let parent = nest.path().0;
                        let here = format!("{}[{index}]", frame.name);
                        let path = if parent.is_empty() {
                            here
                        } else {
                            format!("{parent}.{here}")
                        };
                        nest.open(path, String::new(), &plan.steps[d + 1]);
                        for (k, v) in std::mem::take(&mut frame.map) {
                            nest.member(&mut asm, k, v, Repeat::Collect)?;
                        }
                    }
                }
                stack.push(frame);
            }
            Event::End(_) => {
                let Some(frame) = stack.pop() else {
                    return Err(x000("unexpected end tag"));
                };
                if stack.is_empty() {
                    root_closed = true;
                    continue;
                }
                if frame.skip {
                    continue;
                }
                if frame.blank_over && !frame.has_children {
                    return Err(AdaptError::too_long());
                }
                let value = if frame.has_children || !frame.map.is_empty() {
                    let mut map = frame.map;
                    if !frame.has_children && !frame.text.trim().is_empty() {
                        map.insert("#text".into(), Value::String(frame.text));
                    }
                    Value::Object(map)
                } else {
                    Value::String(frame.text)
                };
                if level_frames.last() == Some(&stack.len()) {
                    level_frames.pop();
                    if in_record {
                        in_record = false;
                        nest.record(&mut asm, value, std::mem::take(&mut record_issues))?;
                    } else {
                        nest.close(&mut asm)?;
                    }
                } else if stack.len() == 1 {
                    asm.header_member(frame.name, value, Repeat::Collect)?;
                } else if !in_record && level_frames.last() == Some(&(stack.len() - 1)) {
                    nest.member(&mut asm, frame.name, value, Repeat::Collect)?;
                } else if let Some(parent) = stack.last_mut() {
                    insert(&mut parent.map, frame.name, value);
                }
            }
            Event::Text(t) => {
                let text = t
                    .xml_content()
                    .map_err(|e| x000(format!("text is not valid: {e}")))?;
                push_text(&mut stack, &text, root_seen, root_closed)?;
            }
            Event::CData(t) => {
                let text = t
                    .decode()
                    .map_err(|e| x000(format!("CDATA is not valid: {e}")))?;
                push_text(&mut stack, &text, root_seen, root_closed)?;
            }
            Event::GeneralRef(r) => {
                let c = if r.is_char_ref() {
                    match r.resolve_char_ref() {
                        Ok(Some(c)) if !forbidden_char(c) => c.to_string(),
                        Ok(Some(c)) => {
                            return Err(x000(format!(
                                "character reference to U+{:04X}, which XML 1.0 does not allow",
                                u32::from(c)
                            )));
                        }
                        _ => return Err(x000("invalid character reference")),
                    }
                } else {
                    match r.decode().map_err(|e| x000(e.to_string()))?.as_ref() {
                        "amp" => "&".into(),
                        "lt" => "<".into(),
                        "gt" => ">".into(),
                        "apos" => "'".into(),
                        "quot" => "\"".into(),
                        other => {
                            return Err(x000(format!("undeclared entity '&{};'", echo(other))));
                        }
                    }
                };
                push_text(&mut stack, &c, root_seen, root_closed)?;
            }
            Event::Empty(_) => return Err(x000("unexpected empty element")),
            Event::Comment(_) | Event::PI(_) | Event::Decl(_) => {}
            Event::Eof => break,
        }
    }
    if !root_seen {
        return Err(x000("the document has no root element"));
    }
    if !stack.is_empty() {
        return Err(x000("the document ends before the root element is closed"));
    }
    nest.finish(&mut asm)?;
    asm.finish()
}

/// The dotted source path of a child about to open (for `W002` messages): from the record
/// inside a record, from the innermost enclosing element (whose path is `outer`) inside one,
/// else from the root.
fn dotted(
    stack: &[Frame],
    local: &str,
    level_frames: &[usize],
    in_record: bool,
    outer: &str,
) -> String {
    let skip = level_frames.last().map_or(1, |i| i + 1);
    let mut parts: Vec<&str> = Vec::new();
    if !in_record && !outer.is_empty() {
        parts.push(outer);
    }
    parts.extend(stack.iter().skip(skip).map(|f| f.name.as_str()));
    parts.push(local);
    parts.join(".")
}

fn push_text(
    stack: &mut [Frame],
    text: &str,
    root_seen: bool,
    root_closed: bool,
) -> Result<(), AdaptError> {
    match stack.last_mut() {
        Some(frame) => {
            // Text of an element that holds elements is not a value (white space between
            // records, mixed content): it is neither kept nor counted against the value limit.
            if !frame.skip && !frame.has_children {
                let blank = text.trim().is_empty();
                if frame.text.len() + text.len() > MAX_VALUE_BYTES || frame.blank_over {
                    // White space over the limit is only remembered, not kept: it is a value
                    // over the limit if the element stays a leaf (checked at its end), and
                    // nothing if a child follows (indentation before the first child).
                    if blank && frame.text.trim().is_empty() {
                        frame.blank_over = true;
                        return Ok(());
                    }
                    return Err(AdaptError::too_long());
                }
                frame.text.push_str(text);
            }
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None if !root_seen || root_closed => Err(x000("text outside the root element")),
        None => Ok(()),
    }
}

/// Reads an element's attributes into its frame (`@name`), checking code-list ids (`S010`).
fn attributes<R>(
    xml: &NsReader<R>,
    e: &BytesStart,
    plan: &XmlPlan,
    frame: &mut Frame,
) -> Result<(), AdaptError> {
    let list = plan.spec.codelists.get(&frame.name);
    for attr in e.attributes() {
        let attr = attr.map_err(|e| x000(format!("attribute is not well-formed: {e}")))?;
        let key = attr.key;
        if key.as_ref().starts_with(b"xmlns") {
            continue;
        }
        let (resolved, local) = xml.resolve_attribute(key);
        if !matches!(resolved, ResolveResult::Unbound) {
            continue;
        }
        let local = String::from_utf8_lossy(local.as_ref()).to_string();
        let value = attr
            .unescape_value()
            .map_err(|e| x000(format!("attribute value is not valid: {e}")))?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(AdaptError::too_long());
        }
        if list.is_none()
            && plan.spec.code_parents.contains(&frame.name)
            && (local == "listURI" || local == "listVersionID")
        {
            // Another body's code list: named, not checked.
            continue;
        }
        if let Some(list) = list {
            let expected = match local.as_str() {
                "listURI" => Some(format!("urn:weiche:codeliste:{list}")),
                "listVersionID" => Some("1".to_string()),
                _ => None,
            };
            if let Some(expected) = expected {
                if value.trim() != expected {
                    return Err(AdaptError::rejected(
                        Code::S010,
                        format!(
                            "{} of '{}' is '{}', expected '{expected}'",
                            local,
                            frame.name,
                            echo(&value)
                        ),
                    ));
                }
                continue;
            }
        }
        frame
            .map
            .insert(format!("@{local}"), Value::String(value.into_owned()));
    }
    Ok(())
}

/// Runs of XML white space longer than this are shortened to it by [`XmlGuard`]. Any run this
/// long makes a value longer than [`MAX_VALUE_BYTES`] (even after `\r\n` → `\n`), so no outcome
/// changes, and quick-xml never holds more of it.
const SPACE_KEEP: usize = 4 * MAX_VALUE_BYTES;

/// The most bytes (after white space is shortened) [`XmlGuard`] passes without a `<` or `>`:
/// beyond it no value can be short enough (`L004`), and quick-xml would hold the whole token.
pub(crate) const TOKEN_MAX: usize = 1 << 20;

/// Characters XML 1.0 does not allow (its `Char` production): the C0 controls other than tab,
/// LF and CR, and U+FFFE, U+FFFF. (Surrogates cannot occur in decoded text.)
fn forbidden_char(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}')
}

/// Sits between the decoded (UTF-8) text and quick-xml, which holds each token whole before it
/// reports it: refuses the characters XML 1.0 does not allow anywhere in a document (`X000`),
/// shortens runs of white space to [`SPACE_KEEP`] bytes, and refuses more than [`TOKEN_MAX`]
/// bytes between two `<`/`>` (`L004`). So a body of endless white space (a gzip bomb) streams
/// through in bounded memory until the body limit (`L001`) ends it.
///
/// Bytes before a refused character are passed on first ([`Guarded`]).
pub(crate) struct XmlGuard {
    /// 1-based line of the next byte (for messages).
    line: u64,
    /// Length of the current run of white space.
    space_run: usize,
    /// Bytes passed since the last `<` or `>`.
    token: usize,
    /// The two bytes before the current one (to find U+FFFE and U+FFFF).
    last2: [u8; 2],
}

impl XmlGuard {
    pub(crate) fn new() -> Self {
        XmlGuard {
            line: 1,
            space_run: 0,
            token: 0,
            last2: [0, 0],
        }
    }
}

impl ByteGuard for XmlGuard {
    /// Every byte [`Self::step`] would keep, counted as it would count it: markup, text and
    /// white space up to [`SPACE_KEEP`] in a row, within the token limit. It stops before a
    /// control character, a byte that could end U+FFFE/U+FFFF, white space to drop, and the
    /// byte past the token limit.
    fn plain_run(&mut self, bytes: &[u8]) -> usize {
        let (mut token, mut space_run, mut line) = (self.token, self.space_run, self.line);
        let mut run = 0;
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                b'<' | b'>' => {
                    token = 0;
                    space_run = 0;
                    run = i + 1;
                    continue;
                }
                b' ' | b'\t' | b'\n' | b'\r' => {
                    if space_run >= SPACE_KEEP {
                        run = i;
                        break;
                    }
                    space_run += 1;
                    if b == b'\n' {
                        line += 1;
                    }
                }
                0x00..=0x1f | 0xbe | 0xbf => {
                    run = i;
                    break;
                }
                _ => space_run = 0,
            }
            if token >= TOKEN_MAX {
                run = i;
                break;
            }
            token += 1;
            run = i + 1;
        }
        if run > 0 {
            (self.token, self.space_run, self.line) = (token, space_run, line);
            self.last2 = match run {
                1 => [self.last2[1], bytes[0]],
                _ => [bytes[run - 2], bytes[run - 1]],
            };
        }
        run
    }

    fn step(&mut self, b: u8) -> Step {
        let bad = match b {
            b'\t' | b'\n' | b'\r' => None,
            0x00..=0x1f => Some(u32::from(b)),
            0xbe | 0xbf if self.last2 == [0xef, 0xbf] => Some(0xff00 | (u32::from(b) + 0x40)),
            _ => None,
        };
        if let Some(c) = bad {
            return Step::Fault(refused(
                Code::X000,
                format!(
                    "line {}: character U+{c:04X} is not allowed in XML 1.0",
                    self.line
                ),
            ));
        }
        self.last2 = [self.last2[1], b];
        if b == b'\n' {
            self.line += 1;
        }
        if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            self.space_run += 1;
            if self.space_run > SPACE_KEEP {
                return Step::Drop;
            }
        } else {
            self.space_run = 0;
        }
        if b == b'<' || b == b'>' {
            self.token = 0;
        } else {
            self.token += 1;
            if self.token > TOKEN_MAX {
                return Step::Fault(refused(
                    Code::L004,
                    format!(
                        "line {}: more than {TOKEN_MAX} bytes of text or markup without '<' or '>' (no value may be longer than {MAX_VALUE_BYTES} bytes)",
                        self.line
                    ),
                ));
            }
        }
        Step::Keep
    }
}

#[cfg(test)]
mod guard_tests {
    use super::*;
    use crate::adapt::decode::{ByteGuard, Guarded, Step};
    use proptest::prelude::*;
    use std::io::Read;

    /// What the guard passes on and whether it refused, with its counters at the end.
    fn through_guard(input: &[u8], read_size: usize) -> (Vec<u8>, bool, (u64, usize, usize)) {
        let mut guarded = Guarded::new(input, XmlGuard::new());
        let (mut out, mut buf) = (Vec::new(), vec![0u8; read_size]);
        let refused = loop {
            match guarded.read(&mut buf) {
                Ok(0) => break false,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) => break true,
            }
        };
        let g = guarded.guard();
        (out, refused, (g.line, g.token, g.space_run))
    }

    /// The same, one `step` a byte (no plain runs): the reference.
    fn byte_by_byte(input: &[u8]) -> (Vec<u8>, bool, (u64, usize, usize)) {
        let mut g = XmlGuard::new();
        let mut out = Vec::new();
        for &b in input {
            match g.step(b) {
                Step::Keep => out.push(b),
                Step::Drop => {}
                Step::Fault(_) => return (out, true, (g.line, g.token, g.space_run)),
            }
        }
        (out, false, (g.line, g.token, g.space_run))
    }

    proptest! {
        /// Plain runs count and pass exactly what a `step` a byte would: markup, text, white
        /// space, line breaks, control characters and the bytes of U+FFFE/U+FFFF.
        #[test]
        fn plain_runs_agree_with_steps(
            input in proptest::collection::vec(
                prop::sample::select(vec![b'<', b'>', b' ', b'\n', b'\t', b'\r', b'a', b'=', 0xef, 0xbf, 0xbe, 0xc3, 0xa4, 0x01]),
                0..400,
            ),
            read_size in 1usize..64,
        ) {
            let (out, refused, counters) = through_guard(&input, read_size);
            let (expected, expected_refused, expected_counters) = byte_by_byte(&input);
            prop_assert_eq!(out, expected);
            prop_assert_eq!(refused, expected_refused);
            if !refused {
                prop_assert_eq!(counters, expected_counters);
            }
        }
    }
}
