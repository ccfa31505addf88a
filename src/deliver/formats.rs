//! Pull batch formats other than JSON: XML and CSV renderings of a batch's items.
//!
//! `GET /api/v1/batches/{batch_id}` serves a batch as JSON (default), NDJSON, XML or CSV, chosen
//! by the `Accept` header ([`BatchFormat::negotiate`]). This module holds the pure parts: content
//! negotiation, the XML message head and foot and the item-to-XML conversion ([`xml_head`],
//! [`xml_item`], [`xml_foot`]), and the CSV columns and rows ([`CsvColumns`], [`flatten`],
//! [`guard_formula`]). [`super::fetch`] pages through the store with them and the endpoint
//! (`src/api/batches.rs`) streams what it gives; nothing here does I/O. `docs/batch-formats.md` describes the
//! formats for recipients.
//!
//! Every rendering depends only on the stored items and the batch's fixed metadata (id,
//! recipient, sealing time, item count, periods; not its mutable `state`), so fetching a batch
//! again gives the same bytes.
//!
//! **XML** (`application/xml`): an XSozial-style message with an XÖV header. Each item becomes
//! one `<item>` element; its JSON is converted generically and losslessly:
//!
//! | JSON | XML |
//! |---|---|
//! | member `k` holding an object | `<k>` with one child element per member, in member order |
//! | member `k` holding an array | `<k typ="array">` with one `<entry>` child per element, in order |
//! | string | the escaped text; `<k></k>` when empty |
//! | number | `<k typ="number">` with the JSON number text |
//! | `true` / `false` | `<k typ="boolean">true</k>` |
//! | `null` | `<k typ="null"/>` |
//! | empty object | `<k typ="object"/>` (it would read as an empty string otherwise) |
//!
//! So an element without `typ` is a string when it holds text and an object when it holds
//! elements. Array entries follow the same rules (`<entry typ="number">3</entry>`, nested arrays
//! are `<entry typ="array">`). A key that is not a plain XML name (`[A-Za-z_][A-Za-z0-9_.-]*`,
//! not starting with `xml` in any case) is written as `<member name="…">` with the key in the
//! attribute. Text is escaped (`&`, `<`, `>`; in attributes also `"`, `'`, tab and line feed);
//! carriage returns are written as `&#xD;` so that they survive XML line-end normalisation;
//! characters XML 1.0 cannot carry at all (C0 controls other than tab, line feed and carriage
//! return, U+FFFE, U+FFFF) are replaced by U+FFFD.
//!
//! **CSV** (`text/csv; charset=utf-8; header=present`): UTF-8 without byte-order mark, `;` as
//! separator, `"` quoting where needed, CRLF line ends, one header row and one row per item. Each
//! item is flattened to dot paths with array indices ([`flatten`]: `client.birth_date`,
//! `services.0.kind`). The columns are the union of all items' paths in a stable order
//! ([`CsvColumns::add_item`]): the order of the first item's fields, and a path first seen in a
//! later item is placed after the path that precedes it in that item and that path's group (so
//! `services.1.kind` follows every `services.0.*` column). A cell is empty when the item has no
//! such path; `null`, empty arrays
//! and empty objects give no path. String cells that a spreadsheet would take for a formula
//! (first character `=`, `+`, `-`, `@`, tab or carriage return) get a leading `'`
//! ([`guard_formula`], after OWASP "CSV injection"); JSON numbers are written as they are.

use serde_json::Value;
use std::borrow::Cow;
use std::collections::HashMap;

/// The message type (`nachrichtentyp/code`) and root element local name of the XML rendering.
pub const XML_MESSAGE_TYPE: &str = "statistik.batch.0001";

/// The namespace of the XML rendering's root element (prefix `weiche`).
pub const XML_NAMESPACE: &str = "urn:weiche:batch:1";

/// The code list of message types named in the XML header.
const XML_MESSAGE_TYPE_LIST: &str = "urn:weiche:codeliste:nachrichtentyp";

/// Content type of the CSV rendering.
pub const CSV_CONTENT_TYPE: &str = "text/csv; charset=utf-8; header=present";

/// A rendering of a batch, chosen by the `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchFormat {
    /// `application/json`: one document with the batch's metadata and an `items` array.
    Json,
    /// `application/x-ndjson`: one item per line.
    Ndjson,
    /// `application/xml`: an XSozial-style message, one `<item>` element per item.
    Xml,
    /// `text/csv`: a header row and one row per item.
    Csv,
}

impl BatchFormat {
    /// Picks the format for an `Accept` header value (`None` when the request has none, or one
    /// that is not visible ASCII).
    ///
    /// The media ranges are weighed by their `q` parameter (default 1; `q=0` excludes); among
    /// equal weights the one listed first wins. `application/json`, `application/*` and `*/*`
    /// mean JSON; `application/x-ndjson` NDJSON; `application/xml` and `text/xml` XML;
    /// `text/csv` and `text/*` CSV. A missing or empty header means JSON. `None` when nothing
    /// listed is served (the endpoint answers `400 R400` then, as before XML and CSV existed).
    pub fn negotiate(accept: Option<&str>) -> Option<BatchFormat> {
        let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
            return Some(BatchFormat::Json);
        };
        let mut best: Option<(u16, BatchFormat)> = None;
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let Some(format) = Self::for_media_range(&media) else {
                continue;
            };
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(1000, |(_, v)| parse_q(v.trim()));
            if q > 0 && best.is_none_or(|(b, _)| q > b) {
                best = Some((q, format));
            }
        }
        best.map(|(_, f)| f)
    }

    fn for_media_range(media: &str) -> Option<BatchFormat> {
        match media {
            "application/json" | "application/*" | "*/*" => Some(BatchFormat::Json),
            "application/x-ndjson" => Some(BatchFormat::Ndjson),
            "application/xml" | "text/xml" => Some(BatchFormat::Xml),
            "text/csv" | "text/*" => Some(BatchFormat::Csv),
            _ => None,
        }
    }

    /// The `Content-Type` of the answer.
    pub fn content_type(self) -> &'static str {
        match self {
            BatchFormat::Json => "application/json",
            BatchFormat::Ndjson => "application/x-ndjson",
            BatchFormat::Xml => "application/xml; charset=utf-8",
            BatchFormat::Csv => CSV_CONTENT_TYPE,
        }
    }

    /// A short name for log lines.
    pub fn name(self) -> &'static str {
        match self {
            BatchFormat::Json => "json",
            BatchFormat::Ndjson => "ndjson",
            BatchFormat::Xml => "xml",
            BatchFormat::Csv => "csv",
        }
    }
}

/// A `q` value in thousandths; anything unreadable counts as 0 (excluded).
fn parse_q(v: &str) -> u16 {
    match v.parse::<f64>() {
        // In range 0..=1, so the product fits.
        Ok(q) if (0.0..=1.0).contains(&q) => (q * 1000.0).round() as u16,
        _ => 0,
    }
}

/// An item that cannot be rendered: the stored body is not JSON (never written so by Weiche),
/// or the CSV writer failed. The message names no content of the item.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The stored item is not valid JSON.
    #[error("stored item is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Writing CSV failed.
    #[error("cannot write CSV: {0}")]
    Csv(#[from] csv::Error),
}

/// The batch metadata the XML header names. All of it is fixed when the batch is sealed.
#[derive(Debug, Clone, Copy)]
pub struct BatchHead<'a> {
    /// Batch id (UUID text): the message UUID.
    pub batch_id: &'a str,
    /// The recipient (reader of the message).
    pub recipient: &'a str,
    /// Sealing time, RFC 3339 UTC.
    pub created_at: &'a str,
    /// Number of items.
    pub items: i64,
    /// Sorted distinct reporting periods.
    pub periods: &'a [String],
}

// ---------------------------------------------------------------------------------------------
// XML

/// Appends `s` escaped for XML text (`attr = false`) or a double-quoted attribute value.
fn escape_into(out: &mut String, s: &str, attr: bool) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attr => out.push_str("&quot;"),
            '\'' if attr => out.push_str("&apos;"),
            '\n' if attr => out.push_str("&#xA;"),
            '\t' if attr => out.push_str("&#x9;"),
            '\r' => out.push_str("&#xD;"),
            '\t' | '\n' => out.push(c),
            '\u{0}'..='\u{1F}' | '\u{FFFE}' | '\u{FFFF}' => out.push('\u{FFFD}'),
            _ => out.push(c),
        }
    }
}

/// `s` escaped for XML text.
pub fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(&mut out, s, false);
    out
}

/// Whether `key` is used as an element name as it is: an ASCII XML name without colon
/// (`[A-Za-z_][A-Za-z0-9_.-]*`) that does not start with the reserved `xml`.
pub fn is_plain_name(key: &str) -> bool {
    let mut chars = key.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !key.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("xml"))
}

/// Writes `<name …>` (or `<member name="key" …>`), with `typ` when given, self-closed when
/// `empty`. Returns the element name to close with.
fn open<'k>(out: &mut String, key: &'k str, typ: Option<&str>, empty: bool) -> &'k str {
    let name = if is_plain_name(key) {
        out.push('<');
        out.push_str(key);
        key
    } else {
        out.push_str("<member name=\"");
        escape_into(out, key, true);
        out.push('"');
        "member"
    };
    if let Some(t) = typ {
        out.push_str(" typ=\"");
        out.push_str(t);
        out.push('"');
    }
    out.push_str(if empty { "/>" } else { ">" });
    name
}

fn close(out: &mut String, name: &str) {
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// Appends one JSON value as the element `key` (the conversion rules are in the module docs).
fn value_into(out: &mut String, key: &str, v: &Value) {
    match v {
        Value::Null => {
            open(out, key, Some("null"), true);
        }
        Value::Bool(b) => {
            let name = open(out, key, Some("boolean"), false);
            out.push_str(if *b { "true" } else { "false" });
            close(out, name);
        }
        Value::Number(n) => {
            let name = open(out, key, Some("number"), false);
            out.push_str(&n.to_string());
            close(out, name);
        }
        Value::String(s) => {
            let name = open(out, key, None, false);
            escape_into(out, s, false);
            close(out, name);
        }
        Value::Array(a) if a.is_empty() => {
            open(out, key, Some("array"), true);
        }
        Value::Array(a) => {
            let name = open(out, key, Some("array"), false);
            for entry in a {
                value_into(out, "entry", entry);
            }
            close(out, name);
        }
        Value::Object(m) if m.is_empty() => {
            open(out, key, Some("object"), true);
        }
        Value::Object(m) => {
            let name = open(out, key, None, false);
            for (k, v) in m {
                value_into(out, k, v);
            }
            close(out, name);
        }
    }
}

/// The JSON value `v` as the XML element `name` (the conversion rules are in the module docs).
pub fn json_to_xml(name: &str, v: &Value) -> String {
    let mut out = String::new();
    value_into(&mut out, name, v);
    out
}

/// The XML declaration, the root start tag and the message header (`nachrichtenkopf`, then
/// `anzahlItems` and `berichtsmonate`), each on its own line.
pub fn xml_head(head: &BatchHead<'_>) -> String {
    let mut out = String::with_capacity(1024);
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str("<weiche:");
    out.push_str(XML_MESSAGE_TYPE);
    out.push_str(" xmlns:weiche=\"");
    out.push_str(XML_NAMESPACE);
    out.push_str("\" produkt=\"Weiche\" produkthersteller=\"Weiche\" produktversion=\"");
    escape_into(&mut out, env!("CARGO_PKG_VERSION"), true);
    out.push_str("\" standard=\"Weiche-Batch\" version=\"1.0\">\n");
    out.push_str("<nachrichtenkopf>\n<identifikation.nachricht>\n<nachrichtenUUID>");
    escape_into(&mut out, head.batch_id, false);
    out.push_str("</nachrichtenUUID>\n<nachrichtentyp listURI=\"");
    out.push_str(XML_MESSAGE_TYPE_LIST);
    out.push_str("\" listVersionID=\"1\"><code>");
    out.push_str(XML_MESSAGE_TYPE);
    out.push_str("</code></nachrichtentyp>\n<erstellungszeitpunkt>");
    escape_into(&mut out, head.created_at, false);
    out.push_str("</erstellungszeitpunkt>\n</identifikation.nachricht>\n");
    out.push_str("<autor><kennung>weiche</kennung><name>Weiche</name></autor>\n<leser><kennung>");
    escape_into(&mut out, head.recipient, false);
    out.push_str("</kennung></leser>\n</nachrichtenkopf>\n<anzahlItems>");
    out.push_str(&head.items.to_string());
    out.push_str("</anzahlItems>\n<berichtsmonate>");
    for p in head.periods {
        out.push_str("<berichtsmonat>");
        escape_into(&mut out, p, false);
        out.push_str("</berichtsmonat>");
    }
    out.push_str("</berichtsmonate>\n");
    out
}

/// One stored item (JSON text) as an `<item>` element followed by a line feed.
pub fn xml_item(item_json: &str) -> Result<String, FormatError> {
    let v: Value = serde_json::from_str(item_json)?;
    let mut out = json_to_xml("item", &v);
    out.push('\n');
    Ok(out)
}

/// The root end tag and a final line feed.
pub fn xml_foot() -> String {
    format!("</weiche:{XML_MESSAGE_TYPE}>\n")
}

// ---------------------------------------------------------------------------------------------
// CSV

/// `s` with a leading `'` when a spreadsheet would read it as a formula or strip it: its first
/// character is `=`, `+`, `-`, `@`, tab or carriage return.
pub fn guard_formula(s: &str) -> Cow<'_, str> {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{s}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// The leaves of a JSON value as `(dot path, cell)` in document order: object members add
/// `.key`, array elements `.index`; strings are cells after [`guard_formula`], numbers their
/// JSON text, booleans `true`/`false`. `null`, empty arrays and empty objects give nothing. A
/// scalar at the top (never a stored item) has the path `value`.
pub fn flatten(v: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match v {
        Value::Object(_) | Value::Array(_) => flatten_into(&mut out, &mut String::new(), v),
        _ => flatten_into(&mut out, &mut String::from("value"), v),
    }
    out
}

fn flatten_into(out: &mut Vec<(String, String)>, path: &mut String, v: &Value) {
    let len = path.len();
    let mut child = |path: &mut String, seg: &str, v: &Value| {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(seg);
        flatten_into(out, path, v);
        path.truncate(len);
    };
    match v {
        Value::Null => {}
        Value::Bool(b) => out.push((path.clone(), b.to_string())),
        Value::Number(n) => out.push((path.clone(), n.to_string())),
        Value::String(s) => out.push((path.clone(), guard_formula(s).into_owned())),
        Value::Array(a) => {
            for (i, e) in a.iter().enumerate() {
                child(path, &i.to_string(), e);
            }
        }
        Value::Object(m) => {
            for (k, e) in m {
                child(path, k, e);
            }
        }
    }
}

/// The columns of a CSV rendering: the union of the items' paths (pass 1), then the header and
/// the rows (pass 2). Holds paths only, never values.
#[derive(Debug, Default, Clone)]
pub struct CsvColumns {
    columns: Vec<String>,
    index: HashMap<String, usize>,
}

/// A CSV writer to a byte buffer: `;`, quoting where needed, CRLF.
fn csv_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .delimiter(b';')
        .quote_style(csv::QuoteStyle::Necessary)
        .terminator(csv::Terminator::CRLF)
        .buffer_capacity(16 * 1024)
        .from_writer(Vec::new())
}

fn finish(w: csv::Writer<Vec<u8>>) -> Result<Vec<u8>, FormatError> {
    w.into_inner()
        .map_err(|e| FormatError::Csv(csv::Error::from(e.into_error())))
}

/// How many leading dot segments two paths share.
fn segments_in_common(a: &str, b: &str) -> usize {
    a.split('.')
        .zip(b.split('.'))
        .take_while(|(x, y)| x == y)
        .count()
}

impl CsvColumns {
    /// No columns yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the paths of one stored item (JSON text). The first item fixes the order; a path
    /// not seen before goes right after the path that precedes it in this item, past the
    /// columns of that path's own group below their common parent (so `services.1.kind` follows
    /// every `services.0.*` column and a new `services.*` column does not split the `client.*`
    /// ones); the first path of an item goes to the front when it is new.
    pub fn add_item(&mut self, item_json: &str) -> Result<(), FormatError> {
        let v: Value = serde_json::from_str(item_json)?;
        let mut prev: Option<usize> = None;
        for (path, _) in flatten(&v) {
            if let Some(&i) = self.index.get(&path) {
                prev = Some(i);
                continue;
            }
            let at = match prev {
                None => 0,
                Some(p) => {
                    let pred = &self.columns[p];
                    let group = segments_in_common(pred, &path) + 1;
                    let mut at = p + 1;
                    while self
                        .columns
                        .get(at)
                        .is_some_and(|c| segments_in_common(c, pred) >= group)
                    {
                        at += 1;
                    }
                    at
                }
            };
            self.columns.insert(at, path);
            for (i, p) in self.columns.iter().enumerate().skip(at) {
                self.index.insert(p.clone(), i);
            }
            prev = Some(at);
        }
        Ok(())
    }

    /// The column paths in order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The header row (the paths, formula-guarded like any string cell).
    pub fn header(&self) -> Result<Vec<u8>, FormatError> {
        let mut w = csv_writer();
        w.write_record(self.columns.iter().map(|c| guard_formula(c).into_owned()))?;
        finish(w)
    }

    /// One row per stored item (JSON text), in the column order. A path of an item that is not
    /// a column (only possible when the item changed after pass 1, i.e. an erasure blanked it
    /// in between) is left out.
    pub fn rows<'a>(
        &self,
        items: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<u8>, FormatError> {
        let mut w = csv_writer();
        let mut cells = vec![String::new(); self.columns.len()];
        for item in items {
            let v: Value = serde_json::from_str(item)?;
            cells.iter_mut().for_each(String::clear);
            for (path, cell) in flatten(&v) {
                if let Some(&i) = self.index.get(&path)
                    && let Some(slot) = cells.get_mut(i)
                {
                    *slot = cell;
                }
            }
            w.write_record(&cells)?;
        }
        finish(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quick_xml::events::Event;
    use serde_json::json;

    /// A parsed element: name, attributes, text, children.
    #[derive(Debug, Default)]
    struct El {
        name: String,
        attrs: Vec<(String, String)>,
        text: String,
        children: Vec<El>,
    }

    impl El {
        fn child(&self, name: &str) -> &El {
            self.children
                .iter()
                .find(|c| c.name == name)
                .unwrap_or_else(|| panic!("no <{name}> in <{}>", self.name))
        }
        fn attr(&self, name: &str) -> Option<&str> {
            self.attrs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        }
    }

    /// Parses a document with quick-xml (strictly: end names checked) into a tree.
    fn parse(xml: &str) -> El {
        let mut r = quick_xml::Reader::from_str(xml);
        r.config_mut().check_end_names = true;
        r.config_mut().expand_empty_elements = true;
        let mut stack = vec![El::default()];
        loop {
            match r.read_event().expect("well-formed") {
                Event::Start(e) => {
                    let mut el = El {
                        name: String::from_utf8(e.name().as_ref().to_vec()).unwrap(),
                        ..El::default()
                    };
                    for a in e.attributes() {
                        let a = a.expect("attribute");
                        el.attrs.push((
                            String::from_utf8(a.key.as_ref().to_vec()).unwrap(),
                            a.unescape_value().expect("value").into_owned(),
                        ));
                    }
                    stack.push(el);
                }
                Event::End(_) => {
                    let el = stack.pop().unwrap();
                    stack.last_mut().unwrap().children.push(el);
                }
                Event::Text(t) => stack
                    .last_mut()
                    .unwrap()
                    .text
                    .push_str(&t.xml_content().expect("text")),
                Event::GeneralRef(g) => {
                    let s = if g.is_char_ref() {
                        g.resolve_char_ref().unwrap().unwrap().to_string()
                    } else {
                        match g.decode().unwrap().as_ref() {
                            "amp" => "&",
                            "lt" => "<",
                            "gt" => ">",
                            "quot" => "\"",
                            "apos" => "'",
                            other => panic!("entity {other}"),
                        }
                        .to_string()
                    };
                    stack.last_mut().unwrap().text.push_str(&s);
                }
                Event::Eof => break,
                Event::Decl(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(stack.len(), 1, "unclosed elements");
        let mut doc = stack.pop().unwrap();
        assert_eq!(doc.children.len(), 1, "one root");
        doc.children.pop().unwrap()
    }

    /// Reads an element back into JSON by the documented rules.
    fn back(el: &El) -> Value {
        match el.attr("typ") {
            Some("null") => Value::Null,
            Some("boolean") => Value::Bool(el.text == "true"),
            Some("number") => serde_json::from_str(&el.text).unwrap(),
            Some("object") => json!({}),
            Some("array") => Value::Array(el.children.iter().map(back).collect()),
            None if el.children.is_empty() => Value::String(el.text.clone()),
            None => Value::Object(
                el.children
                    .iter()
                    .map(|c| {
                        let key = if c.name == "member" {
                            c.attr("name").unwrap().to_string()
                        } else {
                            c.name.clone()
                        };
                        (key, back(c))
                    })
                    .collect(),
            ),
            Some(other) => panic!("typ {other}"),
        }
    }

    fn sample() -> Value {
        json!({
            "type": "record",
            "record_ref": "p1.t1.00ff",
            "source": {"vendor": "demo-vendor", "delivery_id": "d-1"},
            "client": {"family_name": "Müller <&\"> 'Ø'", "birth_date": "1990-06", "note": "a\r\nb\tc"},
            "services": [{"kind": "beratung", "hours_per_week": 3}, {"kind": "=SUM(A1)", "hours_per_week": -2.5}],
            "flags": [true, false, null, [1, 2], [], {}],
            "empty": "",
            "nothing": null,
            "obj": {},
            "1bad key": "x",
            "xmlish": "y",
            "a:b": "z",
        })
    }

    fn wrap(inner: &str) -> String {
        format!("<root>{inner}</root>")
    }

    #[test]
    fn xml_item_round_trips_losslessly() {
        let v = sample();
        let xml = xml_item(&v.to_string()).unwrap();
        assert!(xml.ends_with("</item>\n"));
        let el = parse(&xml);
        assert_eq!(el.name, "item");
        assert_eq!(back(&el), v);
    }

    #[test]
    fn xml_escapes_markup_and_keeps_unicode() {
        let xml = json_to_xml("item", &json!({"name": "Müller <&\"> ]]>"}));
        assert_eq!(
            xml,
            "<item><name>Müller &lt;&amp;\"&gt; ]]&gt;</name></item>"
        );
        assert_eq!(parse(&xml).child("name").text, "Müller <&\"> ]]>");
    }

    #[test]
    fn xml_names_are_guarded() {
        assert!(is_plain_name("birth_date"));
        assert!(is_plain_name("_x.y-z9"));
        for bad in [
            "", "1a", "a b", "a:b", "<x>", "xml", "XMLfoo", "Müller", "a&b", "-a", ".a",
        ] {
            assert!(!is_plain_name(bad), "{bad:?}");
        }
        let xml = json_to_xml("item", &json!({"a \"<b>\"": 1, "xmlns": "u"}));
        assert_eq!(
            xml,
            "<item><member name=\"a &quot;&lt;b&gt;&quot;\" typ=\"number\">1</member>\
             <member name=\"xmlns\">u</member></item>"
        );
        let el = parse(&wrap(&xml));
        assert_eq!(el.child("item").children[0].attr("name"), Some("a \"<b>\""));
    }

    #[test]
    fn xml_replaces_characters_xml_cannot_carry() {
        let xml = json_to_xml("t", &json!("a\u{1}b\u{FFFF}c\rd"));
        assert_eq!(xml, "<t>a\u{FFFD}b\u{FFFD}c&#xD;d</t>");
        assert_eq!(parse(&xml).text, "a\u{FFFD}b\u{FFFD}c\rd");
    }

    #[test]
    fn xml_scalars_and_empties() {
        assert_eq!(
            json_to_xml(
                "i",
                &json!({"n": 3, "f": 0.5, "b": true, "z": null, "a": [], "o": {}, "s": ""})
            ),
            "<i><n typ=\"number\">3</n><f typ=\"number\">0.5</f><b typ=\"boolean\">true</b>\
             <z typ=\"null\"/><a typ=\"array\"/><o typ=\"object\"/><s></s></i>"
        );
        assert_eq!(
            json_to_xml("s", &json!(["x", ["y"]])),
            "<s typ=\"array\"><entry>x</entry><entry typ=\"array\"><entry>y</entry></entry></s>"
        );
    }

    #[test]
    fn xml_document_is_well_formed_with_header() {
        let periods = vec!["2026-09".to_string(), "2026-10".to_string()];
        let head = BatchHead {
            batch_id: "01a213b6-da24-7609-b46d-3586d14e0599",
            recipient: "statistik-nrw",
            created_at: "2026-11-25T17:18:00.227Z",
            items: 2,
            periods: &periods,
        };
        let mut doc = xml_head(&head);
        doc.push_str(&xml_item(&sample().to_string()).unwrap());
        doc.push_str(&xml_item(r#"{"type":"erasure","record_ref":"p1.x","erased":true}"#).unwrap());
        doc.push_str(&xml_foot());
        assert!(doc.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<weiche:statistik.batch.0001 xmlns:weiche=\"urn:weiche:batch:1\" produkt=\"Weiche\""));
        let root = parse(&doc);
        assert_eq!(root.name, "weiche:statistik.batch.0001");
        assert_eq!(root.attr("xmlns:weiche"), Some(XML_NAMESPACE));
        assert_eq!(root.attr("produktversion"), Some(env!("CARGO_PKG_VERSION")));
        assert_eq!(root.attr("version"), Some("1.0"));
        let kopf = root.child("nachrichtenkopf");
        let id = kopf.child("identifikation.nachricht");
        assert_eq!(id.child("nachrichtenUUID").text, head.batch_id);
        assert_eq!(
            id.child("nachrichtentyp").child("code").text,
            XML_MESSAGE_TYPE
        );
        assert_eq!(id.child("erstellungszeitpunkt").text, head.created_at);
        assert_eq!(kopf.child("leser").child("kennung").text, "statistik-nrw");
        assert_eq!(kopf.child("autor").child("name").text, "Weiche");
        assert_eq!(root.child("anzahlItems").text, "2");
        let months: Vec<_> = root
            .child("berichtsmonate")
            .children
            .iter()
            .map(|c| c.text.as_str())
            .collect();
        assert_eq!(months, ["2026-09", "2026-10"]);
        let items: Vec<_> = root.children.iter().filter(|c| c.name == "item").collect();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].child("record_ref").text, "p1.t1.00ff");
        assert_eq!(
            back(items[1]),
            json!({"type":"erasure","record_ref":"p1.x","erased":true})
        );
    }

    #[test]
    fn xml_item_rejects_invalid_json_without_echoing_it() {
        let e = xml_item("{\"family_name\": \"Müller\"").unwrap_err();
        assert!(!e.to_string().contains("Müller"), "{e}");
    }

    #[test]
    fn formula_guard() {
        for (raw, want) in [
            ("=1+1", "'=1+1"),
            ("+49 221", "'+49 221"),
            ("-3", "'-3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("Müller", "Müller"),
            ("a=b", "a=b"),
            ("", ""),
            ("'quoted", "'quoted"),
        ] {
            assert_eq!(guard_formula(raw), want, "{raw:?}");
        }
    }

    #[test]
    fn flatten_paths_and_cells() {
        let v = json!({
            "type": "record",
            "client": {"birth_date": "1990-06", "sex": "w"},
            "services": [{"kind": "beratung", "hours_per_week": -2}, {"kind": "=cmd"}],
            "ok": true,
            "gone": null,
            "none": [],
            "nil": {},
        });
        let flat = flatten(&v);
        let want: Vec<(String, String)> = [
            ("type", "record"),
            ("client.birth_date", "1990-06"),
            ("client.sex", "w"),
            ("services.0.kind", "beratung"),
            ("services.0.hours_per_week", "-2"),
            ("services.1.kind", "'=cmd"),
            ("ok", "true"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(flat, want);
        assert_eq!(
            flatten(&json!("x")),
            [("value".to_string(), "x".to_string())]
        );
    }

    #[test]
    fn csv_columns_merge_in_a_stable_order() {
        let mut cols = CsvColumns::new();
        cols.add_item(r#"{"type":"cancellation","record_ref":"r1","reporting_period":"2026-10","source":{"vendor":"v","delivery_id":"d"}}"#).unwrap();
        cols.add_item(r#"{"type":"record","record_ref":"r2","reporting_period":"2026-10","program":"sgb2","source":{"vendor":"v","format":"f","delivery_id":"d"},"services":[{"kind":"a"}]}"#).unwrap();
        cols.add_item(r#"{"type":"record","record_ref":"r3","services":[{"kind":"a","start":"2026-01"},{"kind":"b"}]}"#).unwrap();
        assert_eq!(
            cols.columns(),
            [
                "type",
                "record_ref",
                "reporting_period",
                "program",
                "source.vendor",
                "source.format",
                "source.delivery_id",
                "services.0.kind",
                "services.0.start",
                "services.1.kind",
            ]
        );
        // A new path stays in its group.
        cols.add_item(r#"{"services":[{"kind":"a","end":"2026-02"}]}"#)
            .unwrap();
        assert_eq!(
            cols.columns()[7..],
            [
                "services.0.kind",
                "services.0.end",
                "services.0.start",
                "services.1.kind"
            ]
        );
        // New paths before all known ones go to the front.
        cols.add_item(r#"{"first":1,"type":"x"}"#).unwrap();
        assert_eq!(cols.columns()[..2], ["first", "type"]);
        // The index follows the insertions.
        for (i, c) in cols.columns().iter().enumerate() {
            assert_eq!(cols.index[c], i);
        }
    }

    #[test]
    fn csv_quotes_separators_newlines_and_keeps_unicode() {
        let items = [
            r#"{"record_ref":"r1","client":{"family_name":"Müller; \"Jr.\"","note":"line1\nline2"},"n":-5}"#,
            r#"{"record_ref":"r2","client":{"family_name":"-Ötztürk"},"services":[{"kind":"@x"}]}"#,
        ];
        let mut cols = CsvColumns::new();
        for i in items {
            cols.add_item(i).unwrap();
        }
        let mut out = cols.header().unwrap();
        out.extend(cols.rows(items).unwrap());
        let text = String::from_utf8(out.clone()).unwrap();
        assert_eq!(
            text,
            "record_ref;client.family_name;client.note;services.0.kind;n\r\n\
             r1;\"Müller; \"\"Jr.\"\"\";\"line1\nline2\";;-5\r\n\
             r2;'-Ötztürk;;'@x;\r\n"
        );
        let mut r = csv::ReaderBuilder::new()
            .delimiter(b';')
            .from_reader(out.as_slice());
        assert_eq!(
            r.headers().unwrap().iter().collect::<Vec<_>>(),
            cols.columns()
        );
        let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(&rows[0][1], "Müller; \"Jr.\"");
        assert_eq!(&rows[0][2], "line1\nline2");
        assert_eq!(&rows[0][4], "-5");
        assert_eq!(&rows[1][1], "'-Ötztürk");
        assert_eq!(&rows[1][3], "'@x");
    }

    #[test]
    fn csv_rows_ignore_paths_not_in_the_columns() {
        let mut cols = CsvColumns::new();
        cols.add_item(r#"{"type":"record","record_ref":"r1","client":{"sex":"w"}}"#)
            .unwrap();
        let row = cols
            .rows([r#"{"type":"record","record_ref":"r1","erased":true}"#])
            .unwrap();
        assert_eq!(row, b"record;r1;\r\n");
        assert!(cols.rows(["not json"]).is_err());
    }

    #[test]
    fn negotiation() {
        use BatchFormat::*;
        for (accept, want) in [
            (None, Some(Json)),
            (Some(""), Some(Json)),
            (Some("*/*"), Some(Json)),
            (Some("application/json"), Some(Json)),
            (Some("application/x-ndjson"), Some(Ndjson)),
            (Some("application/xml"), Some(Xml)),
            (Some("text/xml; charset=utf-8"), Some(Xml)),
            (Some("text/csv"), Some(Csv)),
            (Some("Text/CSV;header=present"), Some(Csv)),
            (Some("application/pdf"), None),
            (Some("text/html"), None),
            (Some("application/xml;q=0"), None),
            (Some("application/xml;q=0.5, text/csv"), Some(Csv)),
            (Some("text/csv, application/xml"), Some(Csv)),
            (
                Some("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
                Some(Xml),
            ),
            (Some("application/pdf, */*;q=0.1"), Some(Json)),
            (Some("application/xml;q=nonsense"), None),
        ] {
            assert_eq!(BatchFormat::negotiate(accept), want, "{accept:?}");
        }
        assert_eq!(
            Csv.content_type(),
            "text/csv; charset=utf-8; header=present"
        );
    }
}
