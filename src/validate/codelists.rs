//! The code lists: reading Genericode 1.0 files (`schemas/codelists/<name>.gc`) into [`CodeList`]s.
//!
//! Genericode is simple XML, so this file owns a small, strict XML scanner instead of pulling in an
//! XML crate: elements, attributes, text, CDATA, comments, processing instructions, the five
//! predefined entities and character references. A DOCTYPE (and with it every entity declaration)
//! is refused. Every error names the file and the line.

use super::ValidateError;
use std::collections::HashMap;

/// One loaded code list.
#[derive(Debug, Clone)]
pub(crate) struct CodeList {
    /// The list's name: the file name without `.gc` (what `x-codelist` in the schema refers to).
    pub(crate) name: String,
    /// `Identification/CanonicalUri` (the XÖV `listURI`).
    pub(crate) uri: String,
    /// `Identification/Version` (the XÖV `listVersionID`).
    pub(crate) version: String,
    /// The values of the code column, each with its position in the file (the list's order).
    pub(crate) codes: HashMap<String, usize>,
}

impl CodeList {
    /// True if `code` is in the list (exact, case-sensitive).
    pub(crate) fn contains(&self, code: &str) -> bool {
        self.codes.contains_key(code)
    }

    /// The position of `code` in the list's order (the order of its rows in the file).
    pub(crate) fn rank(&self, code: &str) -> Option<usize> {
        self.codes.get(code).copied()
    }
}

/// The list name a code-list file stands for: its file name without directories and `.gc`.
pub(crate) fn list_name(file: &str) -> &str {
    let base = file.rsplit(['/', '\\']).next().unwrap_or(file);
    base.strip_suffix(".gc").unwrap_or(base)
}

/// Parses one Genericode 1.0 code list. `file` is used for the list name and in errors.
pub(crate) fn parse_genericode(file: &str, text: &str) -> Result<CodeList, ValidateError> {
    let root = parse_xml(file, text)?;
    let err = |line: usize, message: String| ValidateError::CodeList {
        file: file.to_string(),
        line: Some(line),
        message,
    };
    if root.local() != "CodeList" {
        return Err(err(
            root.line,
            format!(
                "root element is <{}>, expected a Genericode <CodeList>",
                root.qname
            ),
        ));
    }
    let ident = root
        .child("Identification")
        .ok_or_else(|| err(root.line, "<Identification> is missing".into()))?;
    let required_text = |name: &str| -> Result<String, ValidateError> {
        let el = ident
            .child(name)
            .ok_or_else(|| err(ident.line, format!("<Identification> has no <{name}>")))?;
        let value = el.text.trim();
        if value.is_empty() {
            return Err(err(el.line, format!("<{name}> is empty")));
        }
        Ok(value.to_string())
    };
    // ShortName is required by Genericode even though the list is named after its file.
    required_text("ShortName")?;
    let version = required_text("Version")?;
    let uri = required_text("CanonicalUri")?;

    let column_set = root
        .child("ColumnSet")
        .ok_or_else(|| err(root.line, "<ColumnSet> is missing".into()))?;
    let columns: Vec<&str> = column_set
        .children_named("Column")
        .map(|c| c.attr("Id").unwrap_or(""))
        .collect();
    // The code column: the first column of the first key, else the column with Id "code".
    let code_column = column_set
        .child("Key")
        .and_then(|k| k.child("ColumnRef"))
        .and_then(|r| r.attr("Ref"))
        .unwrap_or("code");
    let Some(code_index) = columns.iter().position(|c| *c == code_column) else {
        return Err(err(
            column_set.line,
            format!("<ColumnSet> has no <Column Id=\"{code_column}\">"),
        ));
    };

    let list = root
        .child("SimpleCodeList")
        .ok_or_else(|| err(root.line, "<SimpleCodeList> is missing".into()))?;
    let mut codes = HashMap::new();
    for row in list.children_named("Row") {
        let mut code = None;
        // A Value without ColumnRef stands for the column after the previous Value's column.
        let mut next = 0usize;
        for value in row.children_named("Value") {
            let index = match value.attr("ColumnRef") {
                Some(id) => columns.iter().position(|c| *c == id).ok_or_else(|| {
                    err(
                        value.line,
                        format!("<Value> refers to unknown column '{id}'"),
                    )
                })?,
                None => next,
            };
            next = index + 1;
            if index == code_index {
                let simple = value.child("SimpleValue").ok_or_else(|| {
                    err(
                        value.line,
                        "<Value> of the code column has no <SimpleValue>".into(),
                    )
                })?;
                code = Some((simple.text.trim(), simple.line));
            }
        }
        let Some((code, line)) = code else {
            return Err(err(
                row.line,
                format!("<Row> has no value in column '{code_column}'"),
            ));
        };
        if code.is_empty() {
            return Err(err(line, "empty code".into()));
        }
        let position = codes.len();
        if codes.insert(code.to_string(), position).is_some() {
            return Err(err(line, format!("code '{code}' occurs twice")));
        }
    }
    if codes.is_empty() {
        return Err(err(list.line, "the code list has no rows".into()));
    }
    Ok(CodeList {
        name: list_name(file).to_string(),
        uri,
        version,
        codes,
    })
}

/// One element of the minimal XML tree.
#[derive(Debug)]
struct Element {
    /// Qualified name as written (`gc:CodeList`).
    qname: String,
    /// Attributes as written (qualified names), values decoded.
    attrs: Vec<(String, String)>,
    /// Child elements in document order.
    children: Vec<Element>,
    /// All direct text content (text and CDATA), decoded and concatenated.
    text: String,
    /// Line of the start tag (1-based).
    line: usize,
}

impl Element {
    fn local(&self) -> &str {
        local_name(&self.qname)
    }

    fn child(&self, local: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.local() == local)
    }

    fn children_named<'a>(&'a self, local: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.local() == local)
    }

    fn attr(&self, local: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| local_name(n) == local && !n.starts_with("xmlns"))
            .map(|(_, v)| v.as_str())
    }
}

fn local_name(qname: &str) -> &str {
    qname.rsplit(':').next().unwrap_or(qname)
}

/// Parses a whole XML document into its root element.
fn parse_xml(file: &str, text: &str) -> Result<Element, ValidateError> {
    let s = text.strip_prefix('\u{feff}').unwrap_or(text);
    let b = s.as_bytes();
    let line_at = |pos: usize| {
        1 + b[..pos.min(b.len())]
            .iter()
            .filter(|&&c| c == b'\n')
            .count()
    };
    let err = |pos: usize, message: String| ValidateError::CodeList {
        file: file.to_string(),
        line: Some(line_at(pos)),
        message,
    };
    let find = |from: usize, needle: &str, what: &str| -> Result<usize, ValidateError> {
        s[from..]
            .find(needle)
            .map(|i| from + i)
            .ok_or_else(|| err(from, format!("unterminated {what}")))
    };

    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut pos = 0usize;
    while pos < b.len() {
        if b[pos] != b'<' {
            let end = s[pos..].find('<').map_or(b.len(), |i| pos + i);
            let raw = &s[pos..end];
            match stack.last_mut() {
                Some(top) => {
                    let decoded = decode_entities(raw).map_err(|m| err(pos, m))?;
                    top.text.push_str(&decoded);
                }
                None => {
                    if !raw.trim().is_empty() {
                        return Err(err(pos, "text outside the root element".into()));
                    }
                }
            }
            pos = end;
            continue;
        }
        let rest = &s[pos..];
        if rest.starts_with("<?") {
            pos = find(pos + 2, "?>", "processing instruction")? + 2;
        } else if rest.starts_with("<!--") {
            pos = find(pos + 4, "-->", "comment")? + 3;
        } else if rest.starts_with("<![CDATA[") {
            let end = find(pos + 9, "]]>", "CDATA section")?;
            match stack.last_mut() {
                Some(top) => top.text.push_str(&s[pos + 9..end]),
                None => return Err(err(pos, "CDATA outside the root element".into())),
            }
            pos = end + 3;
        } else if rest.starts_with("<!") {
            return Err(err(
                pos,
                "DOCTYPE and entity declarations are not allowed".into(),
            ));
        } else if rest.starts_with("</") {
            let start = pos;
            let (name, after) = scan_name(s, pos + 2);
            if name.is_empty() {
                return Err(err(start, "end tag without a name".into()));
            }
            let after = skip_ws(s, after);
            if b.get(after) != Some(&b'>') {
                return Err(err(after, format!("'>' expected in </{name}")));
            }
            pos = after + 1;
            let Some(el) = stack.pop() else {
                return Err(err(start, format!("</{name}> without a start tag")));
            };
            if el.qname != name {
                return Err(err(
                    start,
                    format!("</{name}> closes <{}> of line {}", el.qname, el.line),
                ));
            }
            close(&mut stack, &mut root, el).map_err(|m| err(start, m))?;
        } else {
            let start = pos;
            let (name, mut p) = scan_name(s, pos + 1);
            if name.is_empty() {
                return Err(err(start, "'<' not followed by an element name".into()));
            }
            let mut el = Element {
                qname: name.to_string(),
                attrs: Vec::new(),
                children: Vec::new(),
                text: String::new(),
                line: line_at(start),
            };
            let self_closing = loop {
                p = skip_ws(s, p);
                match b.get(p) {
                    None => return Err(err(start, format!("unterminated start tag <{name}"))),
                    Some(b'>') => {
                        p += 1;
                        break false;
                    }
                    Some(b'/') if b.get(p + 1) == Some(&b'>') => {
                        p += 2;
                        break true;
                    }
                    Some(_) => {
                        let (attr, q) = scan_name(s, p);
                        if attr.is_empty() {
                            return Err(err(p, format!("bad character in start tag <{name}")));
                        }
                        let q = skip_ws(s, q);
                        if b.get(q) != Some(&b'=') {
                            return Err(err(q, format!("'=' expected after attribute {attr}")));
                        }
                        let q = skip_ws(s, q + 1);
                        let quote = match b.get(q) {
                            Some(&c @ (b'"' | b'\'')) => c,
                            _ => return Err(err(q, format!("quoted value expected for {attr}"))),
                        };
                        let end = s[q + 1..]
                            .find(quote as char)
                            .map(|i| q + 1 + i)
                            .ok_or_else(|| err(q, format!("unterminated value of {attr}")))?;
                        let raw = &s[q + 1..end];
                        if raw.contains('<') {
                            return Err(err(q, format!("'<' in the value of {attr}")));
                        }
                        if el.attrs.iter().any(|(n, _)| n == attr) {
                            return Err(err(p, format!("attribute {attr} given twice")));
                        }
                        let value = decode_entities(raw).map_err(|m| err(q, m))?;
                        el.attrs.push((attr.to_string(), value));
                        p = end + 1;
                    }
                }
            };
            pos = p;
            if self_closing {
                close(&mut stack, &mut root, el).map_err(|m| err(start, m))?;
            } else {
                if stack.is_empty() && root.is_some() {
                    return Err(err(start, "more than one root element".into()));
                }
                stack.push(el);
            }
        }
    }
    if let Some(open) = stack.last() {
        return Err(ValidateError::CodeList {
            file: file.to_string(),
            line: Some(open.line),
            message: format!("<{}> is never closed", open.qname),
        });
    }
    root.ok_or_else(|| ValidateError::CodeList {
        file: file.to_string(),
        line: Some(1),
        message: "no root element".into(),
    })
}

/// Attaches a finished element to its parent, or makes it the root.
fn close(stack: &mut [Element], root: &mut Option<Element>, el: Element) -> Result<(), String> {
    match stack.last_mut() {
        Some(parent) => parent.children.push(el),
        None if root.is_some() => return Err("more than one root element".into()),
        None => *root = Some(el),
    }
    Ok(())
}

fn skip_ws(s: &str, mut p: usize) -> usize {
    let b = s.as_bytes();
    while p < b.len() && matches!(b[p], b' ' | b'\t' | b'\r' | b'\n') {
        p += 1;
    }
    p
}

/// Scans an XML name starting at `p`; returns it (possibly empty) and the position after it.
fn scan_name(s: &str, p: usize) -> (&str, usize) {
    let end = s[p..]
        .find(|c: char| c.is_whitespace() || matches!(c, '/' | '>' | '=' | '<' | '"' | '\'' | '&'))
        .map_or(s.len(), |i| p + i);
    (&s[p..end], end)
}

/// Replaces the predefined entities and character references.
fn decode_entities(raw: &str) -> Result<String, String> {
    if !raw.contains('&') {
        return Ok(raw.to_string());
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let end = after
            .find(';')
            .filter(|&e| e <= 10)
            .ok_or_else(|| "'&' not followed by an entity reference".to_string())?;
        let name = &after[..end];
        let c = match name {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let num = if let Some(hex) = name.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = name.strip_prefix('#') {
                    dec.parse::<u32>().ok()
                } else {
                    return Err(format!("unknown entity &{name};"));
                };
                num.and_then(char::from_u32)
                    .filter(|&c| c != '\0')
                    .ok_or_else(|| format!("bad character reference &{name};"))?
            }
        };
        out.push(c);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- a comment -->
<gc:CodeList xmlns:gc="http://docs.oasis-open.org/codelist/ns/genericode/1.0/">
  <Identification>
    <ShortName>demo</ShortName>
    <Version>7</Version>
    <CanonicalUri>urn:demo</CanonicalUri>
  </Identification>
  <ColumnSet>
    <Column Id="name"><ShortName>name</ShortName><Data Type="string"/></Column>
    <Column Id="code"><ShortName>code</ShortName><Data Type="string"/></Column>
    <Key Id="k"><ShortName>k</ShortName><ColumnRef Ref="code"/></Key>
  </ColumnSet>
  <SimpleCodeList>
    <Row><Value ColumnRef="code"><SimpleValue> a&amp;b </SimpleValue></Value></Row>
    <Row><Value><SimpleValue>Name</SimpleValue></Value><Value><SimpleValue><![CDATA[c<d]]></SimpleValue></Value></Row>
    <Row><Value ColumnRef='code'><SimpleValue>&#x41;&#66;</SimpleValue></Value></Row>
  </SimpleCodeList>
</gc:CodeList>
"#;

    #[test]
    fn parses_keys_positional_values_entities_and_cdata() {
        let list = parse_genericode("dir/demo.gc", SMALL).unwrap();
        assert_eq!(list.name, "demo");
        assert_eq!(list.uri, "urn:demo");
        assert_eq!(list.version, "7");
        assert!(list.contains("a&b"));
        assert!(list.contains("c<d"));
        assert!(list.contains("AB"));
        assert!(!list.contains("Name"));
        assert_eq!(list.codes.len(), 3);
    }

    fn line_of(e: ValidateError) -> Option<usize> {
        match e {
            ValidateError::CodeList { line, .. } => line,
            other => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn errors_name_the_line() {
        let dup = SMALL.replace("&#x41;&#66;", "a&amp;b");
        let e = parse_genericode("demo.gc", &dup).unwrap_err();
        assert!(e.to_string().starts_with("demo.gc:17:"), "{e}");
        assert_eq!(line_of(e), Some(17));

        let unclosed = SMALL.replace("</Identification>", "");
        let e = parse_genericode("demo.gc", &unclosed).unwrap_err();
        assert!(e.to_string().contains("demo.gc:"), "{e}");

        let doctype = format!("<!DOCTYPE x [<!ENTITY a \"b\">]>\n{SMALL}");
        let e = parse_genericode("demo.gc", &doctype).unwrap_err();
        assert_eq!(line_of(e), Some(1));

        let entity = SMALL.replace("a&amp;b", "a&foo;b");
        let e = parse_genericode("demo.gc", &entity).unwrap_err();
        assert_eq!(line_of(e), Some(15));

        let mismatch = SMALL.replace("</Version>", "</Versio>");
        let e = parse_genericode("demo.gc", &mismatch).unwrap_err();
        assert_eq!(line_of(e), Some(6));

        let no_uri = SMALL.replace("<CanonicalUri>urn:demo</CanonicalUri>", "");
        let e = parse_genericode("demo.gc", &no_uri).unwrap_err();
        assert!(e.to_string().contains("CanonicalUri"), "{e}");
    }

    #[test]
    fn list_name_strips_directories_and_extension() {
        assert_eq!(list_name("schemas/codelists/sex.gc"), "sex");
        assert_eq!(list_name("C:\\x\\purpose.gc"), "purpose");
        assert_eq!(list_name("plain"), "plain");
    }
}
