//! The mapping language of issue 16 through the engines: records at any depth with `../`,
//! parts of values (`pattern`, `split` + `part`), `absent` and `fold`, JSON Lines, `W002` with
//! indexed paths, and the rules the loader refuses (with their line).

use super::{AdaptError, AdaptSink, DeliveryHeader, Draft, Issue, Mapping, Unmapped};
use crate::catalogue::Code;
use serde_json::{Value, json};

/// Collects what an engine hands on.
#[derive(Default)]
struct Collect {
    header: Option<DeliveryHeader>,
    drafts: Vec<Draft>,
    warnings: Vec<Issue>,
}

impl AdaptSink for Collect {
    fn header(&mut self, header: &DeliveryHeader) -> Result<(), AdaptError> {
        self.header = Some(header.clone());
        Ok(())
    }
    fn record(&mut self, draft: Draft) -> Result<(), AdaptError> {
        self.drafts.push(draft);
        Ok(())
    }
    fn warning(&mut self, issue: Issue) {
        self.warnings.push(issue);
    }
}

/// Collects like [`Collect`], but takes records unmapped where the engine can hand them over
/// so (as `weiche convert`'s pipeline does) and maps them afterwards.
#[derive(Default)]
struct Deferring {
    header: Option<DeliveryHeader>,
    records: Vec<Result<Draft, Unmapped>>,
    warnings: Vec<Issue>,
}

impl AdaptSink for Deferring {
    fn header(&mut self, header: &DeliveryHeader) -> Result<(), AdaptError> {
        self.header = Some(header.clone());
        Ok(())
    }
    fn record(&mut self, draft: Draft) -> Result<(), AdaptError> {
        self.records.push(Ok(draft));
        Ok(())
    }
    fn takes_unmapped(&self) -> bool {
        true
    }
    fn unmapped(&mut self, record: Unmapped) -> Result<(), AdaptError> {
        self.records.push(Err(record));
        Ok(())
    }
    fn warning(&mut self, issue: Issue) {
        self.warnings.push(issue);
    }
}

/// What a draft holds, for comparing two.
fn contents(d: &Draft) -> (usize, Option<String>, Value, Vec<Issue>) {
    (
        d.position,
        d.record_id.clone(),
        Value::Object(d.fields.clone()),
        d.issues.clone(),
    )
}

fn load(text: &str) -> Mapping {
    Mapping::from_text("test.toml", text).unwrap_or_else(|e| panic!("{e}"))
}

fn refused(text: &str) -> (usize, String) {
    match Mapping::from_text("test.toml", text) {
        Ok(_) => panic!("the loader accepted:\n{text}"),
        Err(e) => (e.line(), e.message()),
    }
}

/// Runs the engine, and runs it again with records taken unmapped and mapped afterwards: both
/// must give the same.
fn run(m: &Mapping, body: &str) -> Result<Collect, (Code, String)> {
    let outcome = |r: Result<(), AdaptError>| match r {
        Ok(()) => Ok(()),
        Err(AdaptError::Rejected { code, message }) => Err((code, message)),
        Err(e) => panic!("{e}"),
    };
    let mut sink = Collect::default();
    let direct = outcome(m.run(&mut body.as_bytes(), None, &mut sink));
    let mut deferring = Deferring::default();
    let deferred = outcome(m.run(&mut body.as_bytes(), None, &mut deferring));
    assert_eq!(
        direct, deferred,
        "the outcome differs with records taken unmapped"
    );
    if direct.is_ok() {
        let mapped: Vec<Draft> = deferring
            .records
            .into_iter()
            .map(|r| r.unwrap_or_else(|u| m.map_unmapped(u)))
            .collect();
        assert_eq!(
            sink.drafts.iter().map(contents).collect::<Vec<_>>(),
            mapped.iter().map(contents).collect::<Vec<_>>(),
            "drafts differ with records taken unmapped"
        );
        assert_eq!(sink.warnings, deferring.warnings);
        assert_eq!(
            sink.header.as_ref().map(|h| format!("{h:?}")),
            deferring.header.as_ref().map(|h| format!("{h:?}"))
        );
    }
    direct.map(|()| sink)
}

fn field<'a>(d: &'a Draft, path: &str) -> Option<&'a Value> {
    let mut v = d.fields.get(path.split('.').next()?)?;
    for p in path.split('.').skip(1) {
        v = v.get(p)?;
    }
    Some(v)
}

fn issues(d: &Draft) -> Vec<(String, String)> {
    d.issues
        .iter()
        .map(|i| {
            (
                i.code.as_str().to_string(),
                i.field.clone().unwrap_or_default(),
            )
        })
        .collect()
}

fn warnings(c: &Collect) -> Vec<String> {
    c.warnings
        .iter()
        .map(|i| i.field.clone().unwrap_or_default())
        .collect()
}

const NESTED: &str = r#"
id = "nested"
syntax = "json"
[delivery]
records = "/traeger/klienten/faelle"
[record.fields]
"source.record_id" = { from = "/az" }
"case.unit" = { from = "../../name" }
"client.client_id" = { from = "../nr" }
"client.family_name" = { from = "../name", pattern = '(?P<n>[^,]+),\s*(?P<v>.*)', group = "n" }
"client.given_names" = { from = "../name", pattern = '(?P<n>[^,]+),\s*(?P<v>.*)', group = "v" }
"client.contact.phone" = { from = "../telefon/0" }
"#;

#[test]
fn records_at_any_depth_in_document_order_with_their_ancestors() {
    let m = load(NESTED);
    let body = json!({
        "traeger": [
            {"name": "Nord", "klienten": [
                {"nr": "K1", "name": "Yılmaz, Ayşe Nur", "telefon": ["1", "2"],
                 "faelle": [{"az": "A"}, {"az": "B"}]},
                // Members after the list: the case waits for them.
                {"faelle": [{"az": "C"}], "nr": "K2", "name": "Berg, Jan"}
            ]},
            {"klienten": [{"nr": "K3", "name": "Roth, Eva", "faelle": [{"az": "D"}]}],
             "name": "Süd"}
        ]
    })
    .to_string();
    let c = run(&m, &body).unwrap();
    let got: Vec<(String, String, String, String)> = c
        .drafts
        .iter()
        .map(|d| {
            let s = |p: &str| {
                field(d, p)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string()
            };
            (
                s("source.record_id"),
                s("client.client_id"),
                s("client.given_names"),
                s("case.unit"),
            )
        })
        .collect();
    let want = [
        ("A", "K1", "Ayşe Nur", "Nord"),
        ("B", "K1", "Ayşe Nur", "Nord"),
        ("C", "K2", "Jan", "Nord"),
        ("D", "K3", "Eva", "Süd"),
    ];
    assert_eq!(
        got,
        want.map(|(a, b, c, d)| (a.into(), b.into(), c.into(), d.into()))
    );
    assert_eq!(
        c.drafts.iter().map(|d| d.position).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    // The second phone number is read by no rule.
    assert_eq!(warnings(&c), ["traeger[0].klienten[0].telefon[1]"]);
}

#[test]
fn nested_xml_records_read_their_enclosing_element() {
    let m = load(
        r#"
id = "nx"
syntax = "xml"
[xml]
namespace = "urn:x"
root = "export"
[delivery]
records = "/klient/fall"
[record.fields]
"source.record_id" = { from = "/@az" }
"client.client_id" = { from = "../@nr" }
"client.family_name" = { from = "../name" }
"#,
    );
    let body = r#"<export xmlns="urn:x"><klient nr="1"><fall az="a"/><name>Kern</name><ort>X</ort></klient><klient nr="2"><name>Lutz</name></klient><fall az="z"/></export>"#;
    let c = run(&m, body).unwrap();
    assert_eq!(c.drafts.len(), 1);
    assert_eq!(
        field(&c.drafts[0], "client.family_name"),
        Some(&json!("Kern"))
    );
    assert_eq!(field(&c.drafts[0], "client.client_id"), Some(&json!("1")));
    // The unread child of the first client, the client without cases, and a <fall> that is not
    // inside a <klient> (a header element no rule reads).
    let mut w = warnings(&c);
    w.sort();
    assert_eq!(w, ["fall", "klient[0].ort", "klient[1]"]);
}

#[test]
fn parts_of_values_and_absent_values() {
    let m = load(
        r#"
id = "parts"
syntax = "json"
[delivery]
records = "/f"
[record.fields]
"source.record_id" = { from = "/id" }
"client.family_name" = { from = "/name", split = ",", part = 1 }
"client.given_names" = { from = "/name", split = ",", part = -1 }
"client.address.postal_code" = { from = "/ort", pattern = '(?P<plz>\d{5})\s+.+' }
"case.opened_on" = { from = "/beginn", pattern = '(?P<d>\d\d\.\d\d\.\d{4})( \d\d:\d\d)?', date = "TT.MM.JJJJ" }
"client.nationality" = { from = "/sa", absent = ["unbekannt", "k.A.", "-"], default = "XXX" }
"client.sex" = { from = "/g", map = "g", fold = true, absent = ["K.A."] }
[maps.g]
"männlich" = "m"
"#,
    );
    let body = json!({"f": [
        {"id": "1", "name": "Weiß, Anna", "ort": "50667 Köln", "beginn": "03.02.2026 09:30",
         "sa": "k.A.", "g": "MAENNLICH"},
        {"id": "2", "name": "Weiß", "ort": "Köln", "beginn": "3.2.2026", "g": "k.a."}
    ]})
    .to_string();
    let c = run(&m, &body).unwrap();
    let d = &c.drafts[0];
    assert_eq!(issues(d), Vec::<(String, String)>::new());
    assert_eq!(field(d, "client.family_name"), Some(&json!("Weiß")));
    assert_eq!(field(d, "client.given_names"), Some(&json!("Anna")));
    assert_eq!(
        field(d, "client.address.postal_code"),
        Some(&json!("50667"))
    );
    assert_eq!(field(d, "case.opened_on"), Some(&json!("2026-02-03")));
    assert_eq!(field(d, "client.nationality"), Some(&json!("XXX")));
    assert_eq!(field(d, "client.sex"), Some(&json!("m")));
    // A name without a comma has one part: part -1 is that part, part 1 too. A value that does not
    // match its pattern is F002 naming the source field, never the whole value.
    let d = &c.drafts[1];
    assert_eq!(field(d, "client.given_names"), Some(&json!("Weiß")));
    assert_eq!(field(d, "client.sex"), None);
    let mut got = issues(d);
    got.sort();
    assert_eq!(
        got,
        [
            ("F002".to_string(), "case.opened_on".to_string()),
            ("F002".to_string(), "client.address.postal_code".to_string()),
        ]
    );
    assert!(
        d.issues.iter().all(
            |i| i.message.contains("does not match the pattern") && !i.message.contains("Köln")
        )
    );
}

#[test]
fn a_missing_part_is_a_record_error() {
    let m = load(
        r#"
id = "parts"
syntax = "csv"
[csv]
group_by = "Fall"
[record.fields]
"source.record_id" = { from = "Fall" }
"client.given_names" = { from = "Name", split = ",", part = 2 }
"#,
    );
    let c = run(&m, "Fall;Name\n1;Weiß\n").unwrap();
    assert_eq!(
        issues(&c.drafts[0]),
        [("F002".to_string(), "client.given_names".to_string())]
    );
    assert!(c.drafts[0].issues[0].message.starts_with("Name ("));
}

#[test]
fn values_read_through_an_index_are_not_reported_and_extra_elements_are() {
    let m = load(
        r#"
id = "idx"
syntax = "json"
[delivery]
records = "/klienten"
informational = ["/meta/*/note"]
[record]
informational = ["/notizen/0", "/akten/*/intern"]
[record.fields]
"source.record_id" = { from = "/faelle/0/aktenzeichen" }
[record.lists.services]
from = "/leistungen"
[record.lists.services.fields]
"kind" = { from = "/art" }
"#,
    );
    let body = json!({
        "meta": [{"note": "a"}, {"note": "b", "x": 1}],
        "klienten": [{
            "faelle": [{"aktenzeichen": "A-1"}, {"aktenzeichen": "A-2"}],
            "notizen": ["x", "y"],
            "akten": [{"intern": 1, "offen": 2}],
            "leistungen": [{"art": "B"}, {"art": "V", "extra": 1}],
            "name": {"familie": "X"}
        }]
    })
    .to_string();
    let c = run(&m, &body).unwrap();
    assert_eq!(warnings(&c), ["meta[1].x"]);
    let mut got: Vec<String> = c.drafts[0]
        .issues
        .iter()
        .map(|i| i.field.clone().unwrap())
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "akten[0].offen",
            "faelle[1]",
            "leistungen[1].extra",
            "name",
            "notizen[1]"
        ]
    );
    let extra = c.drafts[0]
        .issues
        .iter()
        .find(|i| i.field.as_deref() == Some("faelle[1]"))
        .unwrap();
    assert!(extra.message.contains("list element"), "{}", extra.message);
}

const JSONL: &str = r#"
id = "lines"
syntax = "jsonl"
[jsonl]
header_line = true
[delivery]
idempotency_key = "/id"
mode = { from = "/modus", map = { voll = "full" } }
[delivery.fields]
reporting_period = { from = "/monat" }
[record.fields]
"source.record_id" = { from = "/fall" }
"#;

#[test]
fn json_lines_with_a_header_line() {
    let m = load(JSONL);
    let c = run(
        &m,
        "{\"id\": \"k1\", \"modus\": \"voll\", \"monat\": \"2026-10\"}\r\n\n{\"fall\": \"1\"}\n  \n{\"fall\": \"2\", \"x\": 1}",
    )
    .unwrap();
    let h = c.header.unwrap();
    assert_eq!(h.idempotency_key.as_deref(), Some("k1"));
    assert_eq!(h.mode, Some(super::Mode::Full));
    assert_eq!(c.drafts.len(), 2);
    assert_eq!(
        field(&c.drafts[1], "reporting_period"),
        Some(&json!("2026-10"))
    );
    assert_eq!(
        issues(&c.drafts[1]),
        [("W002".to_string(), "x".to_string())]
    );

    let (code, message) = run(
        &m,
        "{\"id\": \"k1\", \"modus\": \"voll\"}\n{\"fall\": \"1\"}\n\n[1]\n",
    )
    .err()
    .unwrap();
    assert_eq!(code, Code::X001);
    assert!(message.starts_with("line 4"), "{message}");
    let (code, message) = run(
        &m,
        "{\"id\": \"k1\", \"modus\": \"voll\"}\n{\"fall\": \"1\"} {\"fall\": \"2\"}\n",
    )
    .err()
    .unwrap();
    assert_eq!(code, Code::X000);
    assert!(message.starts_with("line 2"), "{message}");
    assert_eq!(run(&m, "\n\n").err().unwrap().0, Code::X001);
}

#[test]
fn json_lines_without_a_header_and_with_nested_records() {
    let m = load(
        r#"
id = "lines"
syntax = "jsonl"
[delivery]
records = "/faelle"
[record.fields]
"source.record_id" = { from = "/az" }
"client.client_id" = { from = "../nr" }
"#,
    );
    let c = run(&m, "{\"nr\": \"K1\", \"faelle\": [{\"az\": \"1\"}, {\"az\": \"2\"}]}\n{\"nr\": \"K2\", \"faelle\": []}\n").unwrap();
    assert!(c.header.is_some());
    assert_eq!(c.drafts.len(), 2);
    assert_eq!(field(&c.drafts[1], "client.client_id"), Some(&json!("K1")));
    assert_eq!(warnings(&c), ["faelle"]);
    assert!(c.warnings[0].message.starts_with("line 2: "));
}

#[test]
fn a_json_lines_body_under_a_json_mapping_says_what_to_do() {
    let m = load(
        r#"
id = "plain"
syntax = "json"
[delivery]
records = "/f"
[record.fields]
"source.record_id" = { from = "/id" }
"#,
    );
    let (code, message) = run(&m, "{\"f\": []}\n{\"f\": []}\n").err().unwrap();
    assert_eq!(code, Code::X000);
    assert!(message.contains("syntax = \"jsonl\""), "{message}");
}

#[test]
fn the_loader_refuses_rules_that_cannot_give_their_target_type() {
    let base = "id = \"t\"\nsyntax = \"json\"\n[delivery]\nrecords = \"/f\"\n[record.fields]\n";
    for (rule, line, says) in [
        (
            "\"client.family_name\" = { from = \"/n\", type = \"string_list\", split = \",\" }",
            6,
            "holds one text",
        ),
        (
            "\"client.family_name\" = { from = \"/n\", type = \"number\" }",
            6,
            "holds text",
        ),
        (
            "\"client.family_name\" = { from = \"/n\", part = 2 }",
            6,
            "part needs split",
        ),
        (
            "\"client.family_name\" = { from = \"/n\", split = \",\", part = 0 }",
            6,
            "counts from 1",
        ),
        (
            "\"client.family_name\" = { from = \"/n\", pattern = '(a' }",
            6,
            "does not compile",
        ),
        (
            "\"client.family_name\" = { from = \"/n\", pattern = 'a+' }",
            6,
            "needs a named group",
        ),
        (
            "\"client.family_name\" = { from = \"/n\", pattern = '(?P<a>x)(?P<b>y)' }",
            6,
            "several named groups",
        ),
        (
            "\"client.family_name\" = { from = \"/n\", pattern = '(?P<a>x)', group = \"b\" }",
            6,
            "no group named 'b'",
        ),
        (
            "\"client.family_name\" = { from = \"/n\", pattern = '(?P<a>\\w{1000}){1000}' }",
            6,
            "more than",
        ),
        (
            "\"client.family_name\" = { from = \"/n\", date = \"TT.MM.JJJJ\" }",
            6,
            "not a date",
        ),
        (
            "\"client.family_name\" = { from = \"../n\" }",
            6,
            "no enclosing element",
        ),
        (
            "\"client.family_name\" = { from = \"/n/*\" }",
            6,
            "informational only",
        ),
    ] {
        let (l, message) = refused(&format!("{base}{rule}\n"));
        assert_eq!(l, line, "{rule}: {message}");
        assert!(message.contains(says), "{rule}: {message}");
    }
    let (l, message) = refused(
        "id = \"t\"\nsyntax = \"json\"\n[delivery]\nrecords = \"/f\"\n[record.lists.consents]\nfrom = \"/e\"\n[record.lists.consents.fields]\n\"fields\" = { from = \"/g\", split = \",\", part = 1 }\n",
    );
    assert_eq!(l, 8);
    assert!(message.contains("list of texts"), "{message}");
    let (l, message) = refused(
        "id = \"t\"\nsyntax = \"json\"\n[delivery]\nrecords = \"/f\"\ninformational = [\"/f/0\"]\n[record.fields]\n",
    );
    assert_eq!(l, 5);
    assert!(message.contains("inside the records"), "{message}");
    let (l, message) = refused(
        "id = \"t\"\nsyntax = \"jsonl\"\n[delivery]\nidempotency_key = \"/id\"\n[record.fields]\n",
    );
    assert_eq!(l, 3);
    assert!(message.contains("header_line"), "{message}");
    let (_, message) =
        refused("id = \"t\"\nsyntax = \"json\"\n[delivery]\nrecords = \"/f/0\"\n[record.fields]\n");
    assert!(message.contains("through every list"), "{message}");
}

#[test]
fn an_xml_export_without_a_namespace() {
    let m = load(
        r#"
id = "nons"
syntax = "xml"
[xml]
namespace = ""
root = "export"
[delivery]
records = "/fall"
[record.fields]
"source.record_id" = { from = "/@nr" }
"#,
    );
    let c = run(&m, r#"<export><fall nr="1"/><fall nr="2"/></export>"#).unwrap();
    assert_eq!(c.drafts.len(), 2);
    assert_eq!(
        run(&m, r#"<export xmlns="urn:x"><fall nr="1"/></export>"#)
            .err()
            .unwrap()
            .0,
        Code::X001
    );
}

#[test]
fn a_list_or_entry_of_another_type_is_named_not_quoted() {
    let m = load(NESTED);
    for body in [
        r#"{"traeger": "Geheim Name"}"#,
        r#"{"traeger": [{"klienten": "Geheim Name"}]}"#,
        r#"{"traeger": [{"klienten": ["Geheim Name"]}]}"#,
        r#"{"traeger": [{"klienten": {"nr": "Geheim Name"}}]}"#,
    ] {
        let (code, message) = run(&m, body).err().unwrap();
        assert_eq!(code, Code::X001, "{body}: {message}");
        assert!(!message.contains("Geheim"), "{body}: {message}");
    }
}
