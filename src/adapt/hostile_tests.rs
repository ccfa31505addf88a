//! Hostile text through the XML and CSV engines: forbidden characters, endless white space,
//! over-long cells and rows (docs/security.md, "Hostile bodies").

use super::{AdaptError, AdaptSink, DeliveryHeader, Draft, Issue, Mapping, MappingSet};
use crate::catalogue::Code;
use std::io::Read;

/// Counts what an engine hands on.
#[derive(Default)]
struct Count {
    records: usize,
}

impl AdaptSink for Count {
    fn header(&mut self, _: &DeliveryHeader) -> Result<(), AdaptError> {
        Ok(())
    }
    fn record(&mut self, _: Draft) -> Result<(), AdaptError> {
        self.records += 1;
        Ok(())
    }
    fn warning(&mut self, _: Issue) {}
}

fn mapping(id: &str) -> std::sync::Arc<Mapping> {
    MappingSet::embedded().get(id).expect("shipped mapping")
}

fn xml_basic() -> String {
    String::from_utf8(
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("conformance-tests/cases/xsozial-lieferung/basic/input.xml"),
        )
        .unwrap(),
    )
    .unwrap()
}

fn csv_basic() -> String {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("conformance-tests/cases/fallwerk-csv/basic/input.csv"),
    )
    .unwrap()
    .iter()
    .map(|&b| char::from(b))
    .collect()
}

/// Runs a body (read in pieces of `piece` bytes) through a mapping: records or the code.
fn run_in(id: &str, body: &[u8], piece: usize) -> Result<usize, (Code, String)> {
    let m = mapping(id);
    let mut sink = Count::default();
    let mut reader = Pieces { data: body, piece };
    match m.run(&mut reader, Some("utf-8"), &mut sink) {
        Ok(()) => Ok(sink.records),
        Err(AdaptError::Rejected { code, message }) => Err((code, message)),
        Err(e) => panic!("{e}"),
    }
}

fn run(id: &str, body: &[u8]) -> Result<usize, (Code, String)> {
    let whole = run_in(id, body, usize::MAX);
    assert_eq!(
        format!("{whole:?}"),
        format!("{:?}", run_in(id, body, 7)),
        "the same in 7-byte reads"
    );
    whole
}

struct Pieces<'a> {
    data: &'a [u8],
    piece: usize,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.piece).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// An endless body: `head`, then `fill` repeated until `limit` bytes, then the body limit.
struct Endless {
    head: Vec<u8>,
    fill: u8,
    sent: u64,
    limit: u64,
}

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.sent >= self.limit {
            return Err(std::io::Error::other(super::InputFault::TooLarge {
                limit: self.limit,
            }));
        }
        let n = buf.len().min(64 * 1024);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            let at = self.sent as usize + i;
            *b = self.head.get(at).copied().unwrap_or(self.fill);
        }
        self.sent += n as u64;
        Ok(n)
    }
}

fn code(r: Result<usize, (Code, String)>) -> Code {
    match r {
        Err((c, _)) => c,
        Ok(n) => panic!("accepted with {n} records"),
    }
}

// --- XML ------------------------------------------------------------------------------------

#[test]
fn xml_basic_is_accepted() {
    assert_eq!(run("xsozial-lieferung", xml_basic().as_bytes()), Ok(4));
}

#[test]
fn xml_forbidden_characters_are_x000() {
    let basic = xml_basic();
    for bad in [
        '\u{0}', '\u{1}', '\u{8}', '\u{b}', '\u{c}', '\u{1f}', '\u{fffe}', '\u{ffff}',
    ] {
        // In a text node, in an attribute, in a comment, between elements.
        for body in [
            basic.replacen("Team Oberbilk", &format!("Team{bad}Hostile"), 1),
            basic.replacen("Fallakte Plus\"", &format!("Fallakte{bad}Plus\""), 1),
            basic.replacen("<fall>", &format!("<!-- a{bad}b --><fall>"), 1),
            basic.replacen("<fall>", &format!("{bad}<fall>"), 1),
        ] {
            let r = run("xsozial-lieferung", body.as_bytes());
            let (c, message) = r.clone().unwrap_err();
            assert_eq!(c, Code::X000, "U+{:04X}: {r:?}", u32::from(bad));
            assert!(
                message.contains(&format!("U+{:04X}", u32::from(bad))),
                "{message}"
            );
        }
        // As a character reference too (XML 1.0: "Legal Character").
        let body = basic.replacen(
            "Team Oberbilk",
            &format!("Team&#{};Hostile", u32::from(bad)),
            1,
        );
        assert_eq!(
            code(run("xsozial-lieferung", body.as_bytes())),
            Code::X000,
            "&#{};",
            u32::from(bad)
        );
    }
    // Tab, CR and LF are allowed; so is a character reference to them.
    let body = basic.replacen("Team Oberbilk", "Team\t&#9;&#13;\r\nOberbilk", 1);
    assert_eq!(run("xsozial-lieferung", body.as_bytes()), Ok(4));
}

#[test]
fn xml_white_space_is_shortened_without_changing_the_outcome() {
    let basic = xml_basic();
    let spaces = " ".repeat(3 << 20);
    // Between elements, before the first child, inside a tag: still accepted.
    for body in [
        basic.replacen("<fall>", &format!("{spaces}<fall>"), 1),
        basic.replacen(
            "<nachrichtenkopf>",
            &format!("{spaces}<nachrichtenkopf>"),
            1,
        ),
        basic.replacen("<fall>", &format!("<fall{spaces}>"), 1),
        basic.replacen("<fall>", &format!("<!--{spaces}--><fall>"), 1),
        basic.replacen("<fall>", &format!("<fall>{}", "\r\n".repeat(1 << 20)), 1),
    ] {
        assert_eq!(
            run_in("xsozial-lieferung", body.as_bytes(), usize::MAX),
            Ok(4)
        );
    }
    // In a value: over the limit, however much white space is dropped.
    for ws in [" ", "\r\n", "\t"] {
        let body = basic.replacen(
            "Team Oberbilk",
            &format!("Team{}Oberbilk", ws.repeat(3 << 20)),
            1,
        );
        assert_eq!(
            code(run_in("xsozial-lieferung", body.as_bytes(), usize::MAX)),
            Code::L004
        );
        let body = basic.replacen("Team Oberbilk", &ws.repeat(3 << 20), 1);
        assert_eq!(
            code(run_in("xsozial-lieferung", body.as_bytes(), usize::MAX)),
            Code::L004
        );
    }
    // Just at the limit: white space only (4,096 bytes) is a value that counts as absent.
    let body = basic.replacen("Team Oberbilk", &" ".repeat(4096), 1);
    assert_eq!(run("xsozial-lieferung", body.as_bytes()), Ok(4));
    let body = basic.replacen("Team Oberbilk", &" ".repeat(4097), 1);
    assert_eq!(code(run("xsozial-lieferung", body.as_bytes())), Code::L004);
}

#[test]
fn xml_a_token_without_end_is_l004() {
    let basic = xml_basic();
    // Mixed content is no value, but more than 1 MiB of it without markup is refused.
    let body = basic.replacen("<fall>", &format!("{}<fall>", "ab ".repeat(400_000)), 1);
    let (c, message) = run_in("xsozial-lieferung", body.as_bytes(), usize::MAX).unwrap_err();
    assert_eq!(c, Code::L004, "{message}");
    let body = basic.replacen(
        "<fall>",
        &format!("<!--{}--><fall>", "x".repeat(2 << 20)),
        1,
    );
    assert_eq!(
        code(run_in("xsozial-lieferung", body.as_bytes(), usize::MAX)),
        Code::L004
    );
    // Just under it: ignored.
    let body = basic.replacen(
        "<fall>",
        &format!("<!--{}--><fall>", "x".repeat(1 << 19)),
        1,
    );
    assert_eq!(
        run_in("xsozial-lieferung", body.as_bytes(), usize::MAX),
        Ok(4)
    );
}

#[test]
fn xml_endless_white_space_ends_at_the_body_limit() {
    let basic = xml_basic();
    let head = basic.as_bytes()[..basic.find("<fall>").unwrap()].to_vec();
    for fill in [b' ', b'\n'] {
        let mut body = Endless {
            head: head.clone(),
            fill,
            sent: 0,
            limit: 64 << 20,
        };
        let mut sink = Count::default();
        let e = mapping("xsozial-lieferung")
            .run(&mut body, None, &mut sink)
            .unwrap_err();
        assert!(
            matches!(
                e,
                AdaptError::Rejected {
                    code: Code::L001,
                    ..
                }
            ),
            "{e}"
        );
    }
}

// --- CSV ------------------------------------------------------------------------------------

#[test]
fn csv_basic_is_accepted() {
    assert_eq!(run("fallwerk-csv", csv_basic().as_bytes()), Ok(4));
}

#[test]
fn csv_control_characters_are_x000() {
    let basic = csv_basic();
    for bad in [
        '\u{0}', '\u{1}', '\u{7}', '\u{b}', '\u{c}', '\u{1b}', '\u{1f}',
    ] {
        for body in [
            // In a cell, a quoted cell, the header row, an unknown column's cell.
            basic.replacen("Team Nordstadt", &format!("Team{bad}Hostile"), 1),
            basic.replacen("Team Nordstadt", &format!("\"Team{bad}Hostile\""), 1),
            basic.replacen("Sozialraum", &format!("Sozial{bad}raum"), 1),
            basic.replacen(";Nordstadt;", &format!(";{bad};"), 1),
        ] {
            let r = run("fallwerk-csv", body.as_bytes());
            let (c, message) = r.clone().unwrap_err();
            assert_eq!(c, Code::X000, "U+{:04X}: {r:?}", u32::from(bad));
            assert!(
                message.contains(&format!("U+{:04X}", u32::from(bad))),
                "{message}"
            );
        }
    }
    // Tab, CR and LF are fine (a line break inside quotes is part of the value).
    let body = basic
        .replacen("Team Nordstadt", "Team\tNordstadt", 1)
        .replacen(";Nordstadt;", ";\"Nord\r\nstadt\";", 1);
    assert_eq!(run("fallwerk-csv", body.as_bytes()), Ok(4));
}

#[test]
fn csv_long_cells_are_still_l004() {
    let basic = csv_basic();
    for cell in [
        " ".repeat(3 << 20),
        "ä".repeat(3 << 19),
        format!("\"{}\"", "ab\"\"".repeat(1 << 19)),
        format!("\"{}\"", "\"\"".repeat(5000)),
        "x".repeat(4097),
    ] {
        let body = basic.replacen("Team Nordstadt", &cell, 1);
        let r = run_in("fallwerk-csv", body.as_bytes(), usize::MAX);
        assert_eq!(code(r.clone()), Code::L004, "{:?}", r);
        let r = run_in("fallwerk-csv", body.as_bytes(), 7);
        assert_eq!(code(r.clone()), Code::L004, "{:?}", r);
    }
    // At the limit: fine.
    for cell in ["x".repeat(4096), format!("\"{}\"", "\"\"".repeat(4096))] {
        let body = basic.replacen("Team Nordstadt", &cell, 1);
        assert_eq!(run("fallwerk-csv", body.as_bytes()), Ok(4));
    }
}

#[test]
fn csv_rows_with_more_fields_than_the_header_are_x000() {
    let basic = csv_basic();
    let header_fields = basic.lines().next().unwrap().split(';').count();
    for extra in [1, 2, 100_000] {
        let body = basic.replacen("Team Nordstadt", &format!("Team{}", ";x".repeat(extra)), 1);
        let (c, message) = run("fallwerk-csv", body.as_bytes()).unwrap_err();
        assert_eq!(c, Code::X000, "{message}");
        assert!(
            message.contains(&format!("the header has {header_fields}")),
            "{message}"
        );
    }
    // A header row of more than 10,000 columns is X001.
    let header: Vec<String> = (0..10_001).map(|i| format!("c{i}")).collect();
    let body = format!("{}\n", header.join(";"));
    let (c, message) = run("fallwerk-csv", body.as_bytes()).unwrap_err();
    assert_eq!(c, Code::X001, "{message}");
}

#[test]
fn csv_endless_cell_ends_at_the_body_limit() {
    let basic = csv_basic();
    let head = basic.lines().take(2).collect::<Vec<_>>().join("\n");
    for (tail, fill) in [(";", b' '), (";\"", b' '), (";", b'x'), (";x", b';')] {
        let mut body = Endless {
            head: format!("{head}\n2026-9999{tail}").into_bytes(),
            fill,
            sent: 0,
            limit: 64 << 20,
        };
        let mut sink = Count::default();
        let e = mapping("fallwerk-csv")
            .run(&mut body, Some("utf-8"), &mut sink)
            .unwrap_err();
        assert!(
            matches!(
                e,
                AdaptError::Rejected {
                    code: Code::L001,
                    ..
                }
            ),
            "{e}"
        );
    }
}
