//! The layering rule of docs/architecture.md, checked: lower layers never import higher ones.
//!
//! The test reads every file below `src/`, strips comments and string literals, collects the
//! top-level modules each one names through `crate::` (in `use` lines, grouped `use crate::{…}`
//! and paths in code), and fails when a module names one its row of [`ALLOWED`] does not list,
//! when a module is missing from the table, or when the modules import each other in a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Which top-level module may import which, lowest layer first (docs/architecture.md,
/// "Layers"). Inside one module (one folder) anything goes.
const ALLOWED: &[(&str, &[&str])] = &[
    // Shared vocabulary.
    ("catalogue", &[]),
    ("model", &["catalogue"]),
    ("clock", &["catalogue"]),
    // Storage and the hash chain it keeps.
    ("store", &["catalogue", "clock", "model"]),
    ("audit", &["catalogue", "clock", "model", "store"]),
    // The core: adapt → validate → consent/route.
    ("adapt", &["catalogue", "clock", "model"]),
    ("validate", &["adapt", "catalogue", "clock", "model"]),
    (
        "consent",
        &[
            "adapt",
            "audit",
            "catalogue",
            "clock",
            "model",
            "store",
            "validate",
        ],
    ),
    (
        "route",
        &["audit", "catalogue", "clock", "consent", "model", "store"],
    ),
    // Settings: no runtime module.
    (
        "config",
        &[
            "adapt",
            "audit",
            "catalogue",
            "consent",
            "model",
            "route",
            "validate",
        ],
    ),
    // Shared runtime helpers.
    ("telemetry", &["catalogue", "model"]),
    ("tls", &["config"]),
    // The assembled stages.
    (
        "gateway",
        &[
            "adapt", "audit", "clock", "config", "model", "route", "store", "validate",
        ],
    ),
    (
        "lifecycle",
        &[
            "audit",
            "catalogue",
            "clock",
            "consent",
            "gateway",
            "model",
            "store",
        ],
    ),
    (
        "ingest",
        &[
            "adapt",
            "audit",
            "catalogue",
            "clock",
            "gateway",
            "lifecycle",
            "model",
            "route",
            "store",
            "telemetry",
            "validate",
        ],
    ),
    (
        "deliver",
        &[
            "audit",
            "catalogue",
            "clock",
            "config",
            "consent",
            "gateway",
            "model",
            "store",
            "telemetry",
            "tls",
        ],
    ),
    (
        "retention",
        &["audit", "clock", "config", "gateway", "store", "telemetry"],
    ),
    // The HTTP surface.
    (
        "api",
        &[
            "adapt",
            "audit",
            "catalogue",
            "clock",
            "config",
            "consent",
            "deliver",
            "gateway",
            "ingest",
            "lifecycle",
            "model",
            "retention",
            "route",
            "store",
            "telemetry",
            "tls",
            "validate",
        ],
    ),
    // The composition root and the command line.
    (
        "app",
        &[
            "adapt",
            "api",
            "audit",
            "config",
            "deliver",
            "gateway",
            "retention",
            "store",
            "telemetry",
            "tls",
        ],
    ),
    (
        "cli",
        &[
            "adapt",
            "app",
            "audit",
            "catalogue",
            "clock",
            "config",
            "consent",
            "gateway",
            "ingest",
            "model",
            "retention",
            "route",
            "store",
            "telemetry",
            "validate",
        ],
    ),
    // This test.
    ("layering", &[]),
];

/// `text` with comments, string and character literals blanked out, so that only code remains.
fn code_of(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    while i < b.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            // Block comments nest in Rust.
            let mut depth = 0;
            let mut j = i;
            while j < b.len() {
                if text[j..].starts_with("/*") {
                    depth += 1;
                    j += 2;
                } else if text[j..].starts_with("*/") {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            i = j;
        } else if (rest.starts_with("r\"") || rest.starts_with("r#") || rest.starts_with("br"))
            && (i == 0 || !ident(b[i - 1]))
            && let Some(open) = rest.find('"').filter(|&o| {
                rest[..o]
                    .trim_start_matches('b')
                    .trim_start_matches('r')
                    .bytes()
                    .all(|c| c == b'#')
            })
        {
            let hashes = &rest[..open].trim_start_matches('b').trim_start_matches('r');
            let close = format!("\"{hashes}");
            let end = rest[open + 1..]
                .find(&close)
                .map_or(rest.len(), |e| open + 1 + e + close.len());
            out.push_str("\"\"");
            i += end;
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            out.push_str("\"\"");
            i = j + 1;
        } else if b[i] == b'\'' {
            // A character literal ('x', '\n', '\u{..}'); otherwise a lifetime or label.
            let lit = rest[1..]
                .char_indices()
                .find(|&(k, c)| c == '\'' && k > 0)
                .map(|(k, _)| k + 2)
                .filter(|&len| {
                    let inner = &rest[1..len - 1];
                    inner.chars().count() == 1 || inner.starts_with('\\')
                });
            match lit {
                Some(len) => {
                    out.push_str("' '");
                    i += len;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            let c = rest.chars().next().expect("not at the end");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The top-level modules a piece of code names through `crate::`.
fn crate_imports(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate") {
        let before_ok = code.len() - rest.len() == 0 || {
            let prev = code.as_bytes()[code.len() - rest.len() + at - 1];
            !(prev.is_ascii_alphanumeric() || prev == b'_')
        };
        rest = &rest[at + "crate".len()..];
        let after = rest.trim_start();
        if !before_ok || !after.starts_with("::") {
            continue;
        }
        let after = after[2..].trim_start();
        if let Some(group) = after.strip_prefix('{') {
            // `crate::{a, b::c, d::{e, f}}`: the first name of each item at depth 1.
            let mut depth = 1;
            let mut item_start = true;
            let mut name = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => {
                        item_start = true;
                        continue;
                    }
                    _ => {}
                }
                if depth == 1 && item_start {
                    if c.is_alphanumeric() || c == '_' {
                        name.push(c);
                    } else if !name.is_empty() {
                        found.insert(std::mem::take(&mut name));
                        item_start = false;
                    }
                }
            }
            if !name.is_empty() {
                found.insert(name);
            }
        } else {
            let name: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found.remove("self");
    found
}

/// Every `.rs` file below `dir`.
fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module graph of `src/`: module → module it imports → files that do.
fn module_graph() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("below src/");
        let first = rel
            .components()
            .next()
            .expect("a path")
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("source is UTF-8");
        let imports = graph.entry(module.clone()).or_default();
        for target in crate_imports(&code_of(&text)) {
            if target != module {
                imports
                    .entry(target)
                    .or_default()
                    .insert(rel.display().to_string());
            }
        }
    }
    graph
}

/// A circle among the modules of `graph`, if there is one.
fn circle<'a>(graph: &'a BTreeMap<String, BTreeSet<&'a str>>) -> Option<Vec<&'a str>> {
    fn visit<'a>(
        node: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<&'a str>>,
        done: &mut BTreeSet<&'a str>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<&'a str>> {
        if let Some(at) = path.iter().position(|n| *n == node) {
            let mut found = path[at..].to_vec();
            found.push(node);
            return Some(found);
        }
        if !done.insert(node) {
            return None;
        }
        path.push(node);
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, done, path) {
                return Some(found);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut done, &mut Vec::new()))
}

#[test]
fn lower_layers_never_import_higher_ones() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for (module, imports) in module_graph() {
        let Some(may) = allowed.get(module.as_str()) else {
            wrong.push(format!(
                "module `{module}` is not in the layering table (src/layering.rs, \
                 docs/architecture.md)"
            ));
            continue;
        };
        for (target, files) in imports {
            if !may.contains(&target.as_str()) {
                wrong.push(format!(
                    "`{module}` imports `{target}` (in {}), which its layer may not",
                    files.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn modules_import_each_other_in_no_circle() {
    let graph = module_graph();
    let edges: BTreeMap<String, BTreeSet<&str>> = graph
        .iter()
        .map(|(m, imports)| (m.clone(), imports.keys().map(String::as_str).collect()))
        .collect();
    if let Some(found) = circle(&edges) {
        panic!("import circle across folders: {}", found.join(" → "));
    }
    // The table itself is a layering: no circle either.
    let table: BTreeMap<String, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(m, may)| (m.to_string(), may.iter().copied().collect()))
        .collect();
    assert_eq!(circle(&table), None, "the layering table has a circle");
}

#[test]
fn the_reader_sees_imports_and_skips_comments_and_strings() {
    let code = code_of(
        "use crate::{adapt::Draft, store::{self, Store}};\n\
         // crate::api in a comment\n\
         /* crate::cli /* nested */ crate::app */\n\
         let s = \"crate::deliver\"; let r = r#\"crate::ingest\"#; let c = '\"';\n\
         fn f<'a>(x: &'a str) { crate::config::load(None); }\n",
    );
    let found: Vec<String> = crate_imports(&code).into_iter().collect();
    assert_eq!(found, ["adapt", "config", "store"]);
}
