//! The canonical JSON Schema as Weiche reads it: the `x-codelist` and `format: "date"` annotations
//! collected at load time (so the checked paths come from the schema file), canonical field paths
//! over a record, and the translation of `jsonschema` errors into catalogue codes and messages.

use crate::catalogue::{Code, echo, quotable, value_for};
use jsonschema::ValidationError;
use jsonschema::error::ValidationErrorKind;
use jsonschema::paths::LocationSegment;
use serde_json::Value;

/// One step of a canonical field path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    /// An object member.
    Key(String),
    /// Every element of an array (`[]`).
    Each,
}

/// A canonical field path pattern such as `services[].kind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldPath {
    segs: Vec<Seg>,
}

impl FieldPath {
    /// The pattern as text (`services[].kind`).
    pub(crate) fn pattern(&self) -> String {
        self.display(&[])
    }

    /// The concrete path for the given array indices (`services[1].kind`); missing indices print
    /// as `[]`.
    pub(crate) fn display(&self, indices: &[usize]) -> String {
        let mut out = String::new();
        let mut next = indices.iter();
        for seg in &self.segs {
            match seg {
                Seg::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Seg::Each => match next.next() {
                    Some(i) => {
                        out.push('[');
                        out.push_str(&i.to_string());
                        out.push(']');
                    }
                    None => out.push_str("[]"),
                },
            }
        }
        out
    }

    /// Calls `f` with every value the pattern reaches in `root` and the array indices on the way.
    pub(crate) fn for_each<'v>(
        &self,
        root: &'v Value,
        indices: &mut Vec<usize>,
        f: &mut dyn FnMut(&'v Value, &[usize]),
    ) {
        indices.clear();
        visit(root, &self.segs, indices, f);
    }
}

fn visit<'v>(
    value: &'v Value,
    segs: &[Seg],
    indices: &mut Vec<usize>,
    f: &mut dyn FnMut(&'v Value, &[usize]),
) {
    let Some((first, rest)) = segs.split_first() else {
        f(value, indices);
        return;
    };
    match first {
        Seg::Key(k) => {
            if let Some(v) = value.as_object().and_then(|o| o.get(k.as_str())) {
                visit(v, rest, indices, f);
            }
        }
        Seg::Each => {
            if let Some(items) = value.as_array() {
                for (i, v) in items.iter().enumerate() {
                    indices.push(i);
                    visit(v, rest, indices, f);
                    indices.pop();
                }
            }
        }
    }
}

/// A code-list annotation found in the schema.
#[derive(Debug, Clone)]
pub(crate) struct CodeListAnnotation {
    /// Where the code sits in a record.
    pub(crate) path: FieldPath,
    /// The list's name (`x-codelist`).
    pub(crate) list: String,
    /// JSON pointer of the annotation in the schema document (for error messages).
    pub(crate) pointer: String,
}

/// What the schema's annotations ask Weiche to check in code.
#[derive(Debug, Default)]
pub(crate) struct Annotations {
    /// `x-codelist` fields.
    pub(crate) codelists: Vec<CodeListAnnotation>,
    /// `format: "date"` fields (strict calendar days).
    pub(crate) dates: Vec<FieldPath>,
}

const MAX_DEPTH: usize = 64;

/// Walks the schema (`properties`, `items`, `allOf`/`anyOf`/`oneOf` and local `$ref`s) and
/// collects the annotations. An error is `(JSON pointer of the bad place, message naming it)`.
pub(crate) fn collect_annotations(doc: &Value) -> Result<Annotations, (String, String)> {
    let mut out = Annotations::default();
    let mut path = Vec::new();
    walk(doc, doc, "", &mut path, &mut out, 0).map_err(|m| {
        let pointer = m.split(':').next().unwrap_or_default().to_string();
        (pointer, m)
    })?;
    Ok(out)
}

fn walk(
    doc: &Value,
    node: &Value,
    pointer: &str,
    path: &mut Vec<Seg>,
    out: &mut Annotations,
    depth: usize,
) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "{pointer}: schema nested deeper than {MAX_DEPTH} levels or a $ref cycle"
        ));
    }
    let Some(obj) = node.as_object() else {
        return Ok(());
    };
    if let Some(r) = obj.get("$ref") {
        let target = r
            .as_str()
            .and_then(|r| resolve_ref(doc, r))
            .ok_or_else(|| {
                format!("{pointer}/$ref: only local references (#/...) are supported")
            })?;
        let target_pointer = r.as_str().unwrap_or_default().trim_start_matches('#');
        walk(doc, target, target_pointer, path, out, depth + 1)?;
    }
    if let Some(list) = obj.get("x-codelist") {
        let list = list
            .as_str()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| format!("{pointer}/x-codelist: must be a code list name"))?;
        let fp = FieldPath { segs: path.clone() };
        if !out.codelists.iter().any(|a| a.path == fp && a.list == list) {
            out.codelists.push(CodeListAnnotation {
                path: fp,
                list: list.to_string(),
                pointer: format!("{pointer}/x-codelist"),
            });
        }
    }
    if obj.get("format").and_then(Value::as_str) == Some("date") {
        let fp = FieldPath { segs: path.clone() };
        if !out.dates.contains(&fp) {
            out.dates.push(fp);
        }
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, sub) in props {
            path.push(Seg::Key(k.clone()));
            let p = format!("{pointer}/properties/{}", escape_pointer(k));
            walk(doc, sub, &p, path, out, depth + 1)?;
            path.pop();
        }
    }
    if let Some(items) = obj.get("items") {
        path.push(Seg::Each);
        walk(
            doc,
            items,
            &format!("{pointer}/items"),
            path,
            out,
            depth + 1,
        )?;
        path.pop();
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(subs) = obj.get(key).and_then(Value::as_array) {
            for (i, sub) in subs.iter().enumerate() {
                walk(
                    doc,
                    sub,
                    &format!("{pointer}/{key}/{i}"),
                    path,
                    out,
                    depth + 1,
                )?;
            }
        }
    }
    Ok(())
}

/// Best-effort 1-based line of a JSON pointer in the schema text: each member name of the pointer
/// is searched for as `"name"` after the previous one (array indices are skipped). Good enough to
/// point an administrator at the place; `None` when a name is not found.
pub(crate) fn line_of_pointer(text: &str, pointer: &str) -> Option<usize> {
    let mut pos = 0usize;
    let mut found = false;
    for seg in pointer.split('/').skip(1) {
        if seg.is_empty() || seg.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let name = seg.replace("~1", "/").replace("~0", "~");
        let needle = serde_json::to_string(&name).ok()?;
        pos += text[pos..].find(&needle)?;
        found = true;
    }
    found.then(|| 1 + text[..pos].bytes().filter(|&b| b == b'\n').count())
}

fn escape_pointer(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Resolves a local `$ref` (`#/$defs/date`).
fn resolve_ref<'d>(doc: &'d Value, r: &str) -> Option<&'d Value> {
    let p = r.strip_prefix('#')?;
    if p.is_empty() {
        Some(doc)
    } else {
        doc.pointer(p)
    }
}

/// Follows `$ref` chains from a node.
fn deref<'d>(doc: &'d Value, mut node: &'d Value) -> &'d Value {
    for _ in 0..MAX_DEPTH {
        match node.get("$ref").and_then(Value::as_str) {
            Some(r) => match resolve_ref(doc, r) {
                Some(t) => node = t,
                None => break,
            },
            None => break,
        }
    }
    node
}

/// The schema node that holds the keyword of an error: the error's schema path without its last
/// segment, following `$ref` segments.
fn keyword_parent<'d>(doc: &'d Value, err: &ValidationError<'_>) -> Option<&'d Value> {
    let segs: Vec<LocationSegment<'_>> = err.schema_path().iter().collect();
    let (_, parents) = segs.split_last()?;
    let mut node = doc;
    for seg in parents {
        node = match seg {
            LocationSegment::Property(p) if p == "$ref" => deref(doc, node),
            LocationSegment::Property(p) => node.get(p.as_ref())?,
            LocationSegment::Index(i) => node.get(*i)?,
        };
    }
    Some(node)
}

/// The canonical path of an error's instance location (`services[1].end`; empty for the root).
fn instance_field(err: &ValidationError<'_>) -> String {
    let mut out = String::new();
    for seg in err.instance_path().iter() {
        match seg {
            LocationSegment::Property(p) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&p);
            }
            LocationSegment::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

fn join(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_string()
    } else {
        format!("{base}.{key}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn with_article(t: &str) -> String {
    if t.starts_with(['a', 'e', 'i', 'o', 'u']) {
        format!("an {t}")
    } else {
        format!("a {t}")
    }
}

/// The instance value of `field` for a message: quoted (shortened) when the field is not
/// personal ([`crate::catalogue::quotable`]), else only its type and shape.
fn quoted(field: &str, v: &Value) -> String {
    match v {
        Value::String(s) => value_for(field, s),
        other if quotable(field) => echo(&other.to_string()),
        other => with_article(type_name(other)),
    }
}

/// The label of a field for messages: its last member name with `_` as space
/// (`hours_per_week` → `hours per week`).
fn label(field: &str) -> String {
    let last = field.rsplit('.').next().unwrap_or(field);
    let last = last.split('[').next().unwrap_or(last);
    last.replace('_', " ")
}

/// Translates one schema error into `(code, field, message)` findings (usually one; a missing
/// object with required members gives one `F001` per required leaf, an unknown-members error one
/// `F002` per member).
pub(crate) fn map_error(
    doc: &Value,
    err: &ValidationError<'_>,
    emit: &mut dyn FnMut(Code, String, String),
) {
    let field = instance_field(err);
    let instance = err.instance();
    match err.kind() {
        ValidationErrorKind::Required { property } => {
            let Some(name) = property.as_str() else {
                return;
            };
            let sub = keyword_parent(doc, err)
                .and_then(|parent| parent.get("properties"))
                .and_then(|props| props.get(name))
                .map(|s| deref(doc, s));
            expand_required(doc, sub, join(&field, name), emit, 0);
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            for name in unexpected {
                let f = join(&field, name);
                let msg = format!("unknown field {f}");
                emit(Code::F002, f, msg);
            }
        }
        ValidationErrorKind::Type { .. } => {
            let expected = keyword_parent(doc, err)
                .and_then(|n| n.get("type"))
                .map(|t| match t {
                    Value::String(s) => with_article(s),
                    other => format!("one of {other}"),
                })
                .unwrap_or_else(|| "another type".into());
            let msg = format!(
                "{field} must be {expected}, not {}",
                with_article(type_name(instance))
            );
            emit(Code::F002, field, msg);
        }
        ValidationErrorKind::Pattern { .. } | ValidationErrorKind::Format { .. } => {
            let msg = format!("{} is not a valid {field}", quoted(&field, instance));
            emit(Code::F002, field, msg);
        }
        ValidationErrorKind::MinLength { .. } | ValidationErrorKind::MaxLength { .. } => {
            let node = keyword_parent(doc, err);
            let min = node
                .and_then(|n| n.get("minLength"))
                .and_then(Value::as_u64);
            let max = node
                .and_then(|n| n.get("maxLength"))
                .and_then(Value::as_u64);
            let n = instance.as_str().map_or(0, |s| s.chars().count());
            let msg = match (min, max) {
                (_, Some(max)) if n as u64 > max => {
                    format!("{field} has {n} characters, more than {max}")
                }
                _ if n == 0 => format!("{field} is empty"),
                (Some(min), _) if (n as u64) < min => {
                    format!("{field} has {n} characters, fewer than {min}")
                }
                _ => format!("{field} has {n} characters"),
            };
            emit(Code::F002, field, msg);
        }
        ValidationErrorKind::Minimum { .. }
        | ValidationErrorKind::Maximum { .. }
        | ValidationErrorKind::ExclusiveMinimum { .. }
        | ValidationErrorKind::ExclusiveMaximum { .. } => {
            let node = keyword_parent(doc, err);
            let bound = |k: &str| node.and_then(|n| n.get(k)).filter(|b| b.is_number());
            let lo = bound("minimum").or_else(|| bound("exclusiveMinimum"));
            let hi = bound("maximum").or_else(|| bound("exclusiveMaximum"));
            let what = label(&field);
            // The number itself is not quoted: it may be personal (hours a client works).
            let side = match (instance.as_f64(), lo.and_then(Value::as_f64)) {
                (Some(v), Some(l)) if v <= l => "below the minimum",
                _ => "above the maximum",
            };
            let msg = match (lo, hi) {
                (Some(lo), Some(hi)) => format!("{what} outside {lo}-{hi} ({side})"),
                (Some(lo), None) => format!("{what} below {lo}"),
                (None, Some(hi)) => format!("{what} above {hi}"),
                (None, None) => format!("{what} out of range"),
            };
            emit(Code::F006, field, msg);
        }
        ValidationErrorKind::Enum { .. } => {
            let msg = format!(
                "{} is not an allowed value of {field}",
                quoted(&field, instance)
            );
            emit(Code::F003, field, msg);
        }
        ValidationErrorKind::Constant { expected_value } => {
            let msg = format!(
                "{field} must be {expected_value}, not {}",
                quoted(&field, instance)
            );
            emit(Code::F002, field, msg);
        }
        ValidationErrorKind::MinItems { .. } | ValidationErrorKind::MinProperties { .. } => {
            let msg = format!("{field} is empty");
            emit(Code::F002, field, msg);
        }
        // Other keywords: named, without the validator's text (it quotes the value).
        other => {
            let rule = other.keyword();
            let msg = if field.is_empty() {
                format!("the record breaks the schema's rule {rule}")
            } else {
                format!("{field} breaks the schema's rule {rule}")
            };
            emit(Code::F002, field, msg);
        }
    }
}

/// A missing member: one `F001` for it, or, when it is an object with required members of its
/// own, one for each of those (recursively), so the receipt names the fields a person must fill.
fn expand_required(
    doc: &Value,
    sub: Option<&Value>,
    field: String,
    emit: &mut dyn FnMut(Code, String, String),
    depth: usize,
) {
    let nested = sub.filter(|_| depth < 8).and_then(|s| {
        let is_object = s.get("type").and_then(Value::as_str) == Some("object");
        let required = s.get("required")?.as_array()?;
        (is_object && !required.is_empty()).then_some((s, required))
    });
    match nested {
        Some((s, required)) => {
            for name in required.iter().filter_map(Value::as_str) {
                let child = s
                    .get("properties")
                    .and_then(|p| p.get(name))
                    .map(|c| deref(doc, c));
                expand_required(doc, child, format!("{field}.{name}"), emit, depth + 1);
            }
        }
        None => {
            let msg = format!("required field {field} is missing");
            emit(Code::F001, field, msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn annotations_follow_properties_items_and_refs() {
        let doc = json!({
            "$defs": {"d": {"type": "string", "format": "date"}},
            "properties": {
                "a": {"x-codelist": "one"},
                "list": {"items": {"properties": {
                    "c": {"x-codelist": "two"},
                    "when": {"$ref": "#/$defs/d"}
                }}}
            }
        });
        let a = collect_annotations(&doc).unwrap();
        let lists: Vec<(String, &str)> = a
            .codelists
            .iter()
            .map(|c| (c.path.pattern(), c.list.as_str()))
            .collect();
        assert_eq!(
            lists,
            vec![("a".to_string(), "one"), ("list[].c".to_string(), "two")]
        );
        let dates: Vec<String> = a.dates.iter().map(FieldPath::pattern).collect();
        assert_eq!(dates, vec!["list[].when".to_string()]);
        assert_eq!(a.codelists[1].path.display(&[3]), "list[3].c");
    }

    #[test]
    fn bad_annotations_name_the_pointer() {
        let doc = json!({"properties": {"a": {"x-codelist": 5}}});
        let (pointer, e) = collect_annotations(&doc).unwrap_err();
        assert_eq!(pointer, "/properties/a/x-codelist");
        assert!(e.starts_with("/properties/a/x-codelist: "), "{e}");
        let doc = json!({"properties": {"a": {"$ref": "other.json#/x"}}});
        assert!(collect_annotations(&doc).is_err());
        let doc = json!({"$defs": {"l": {"items": {"$ref": "#/$defs/l"}}}, "$ref": "#/$defs/l"});
        assert!(collect_annotations(&doc).is_err());
    }

    #[test]
    fn for_each_visits_every_element() {
        let doc =
            json!({"properties": {"s": {"items": {"properties": {"k": {"x-codelist": "l"}}}}}});
        let a = collect_annotations(&doc).unwrap();
        let rec = json!({"s": [{"k": "a"}, {"x": 1}, {"k": "c"}]});
        let mut seen = Vec::new();
        let mut idx = Vec::new();
        a.codelists[0].path.for_each(&rec, &mut idx, &mut |v, ix| {
            seen.push((a.codelists[0].path.display(ix), v.clone()));
        });
        assert_eq!(
            seen,
            vec![
                ("s[0].k".to_string(), json!("a")),
                ("s[2].k".to_string(), json!("c"))
            ]
        );
    }

    #[test]
    fn pointer_lines() {
        let text = "{\n \"a\": {\"type\": 1},\n \"b\": {\n  \"type\": 2}}";
        assert_eq!(line_of_pointer(text, "/b/type"), Some(4));
        assert_eq!(line_of_pointer(text, "/a/type"), Some(2));
        assert_eq!(line_of_pointer(text, "/c"), None);
        assert_eq!(line_of_pointer(text, ""), None);
    }

    #[test]
    fn labels() {
        assert_eq!(label("services[0].hours_per_week"), "hours per week");
        assert_eq!(label("x"), "x");
    }
}
