//! Property test: receipts quote no personal values (issue 17). Random invalid klidas-json
//! records — every one broken in at least one field, most in several — go through the whole
//! pipeline (engine, mapping, validation, routing; `ingest::pipeline::run`, as
//! `POST /api/v1/deliveries` runs it), and no message of the receipt (errors, warnings, notes)
//! may contain any string value of the delivery longer than 3 characters, except the values of
//! fields that are not personal: the reporting month, the program (`fachbereich`), service
//! kinds (`leistungen[].code`), consent purposes (`einwilligungen[].zweck`) and field groups
//! (`einwilligungen[].datengruppen`).
//!
//! Generated text values always hold a letter outside ASCII (`ł`, `ß`, …), which no message
//! template contains, so a match is a quoted value and not a word of the template; dates and
//! numbers-as-text are built from digits and separators only, which templates never spell in a
//! run longer than 3.
//!
//! Failure persistence is off; a failing case is printed, shrunk, in the test output.

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Value, json};
use std::sync::{Arc, OnceLock};
use weiche::adapt::Mapping;
use weiche::ingest::pipeline::{self, Job};
use weiche::route::{Recipient, Router};
use weiche::validate::Validator;

struct Engines {
    mapping: Arc<Mapping>,
    validator: Validator,
    router: Router,
    audit_key: weiche::audit::AuditKey,
}

fn engines() -> &'static Engines {
    static ENGINES: OnceLock<Engines> = OnceLock::new();
    ENGINES.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(root.join("mappings/klidas-json.toml")).unwrap();
        let mapping = Arc::new(Mapping::from_text("klidas-json.toml", &text).unwrap());
        // A consent recipient too, so that notes (C001, C002) occur.
        let consent_policy = r#"
id = "jobcenter-prop"
purpose = "eingliederung"
legal_basis = "consent"
[delivery]
kind = "pull"
[route]
programs = ["sgb2", "sgb3", "sgb8", "sucht", "fruehe_hilfen", "bildung"]
[fields]
"client.identity" = "keep"
"client.contact" = "keep"
"case" = "keep"
"#;
        let stats = std::fs::read_to_string(root.join("policies/statistik-nrw.toml")).unwrap();
        let recipients = [
            ("statistik-nrw.toml", stats.as_str()),
            ("jobcenter-prop.toml", consent_policy),
        ]
        .into_iter()
        .map(|(name, text)| Recipient {
            policy: Arc::new(weiche::consent::Policy::from_text(name, text).unwrap()),
            key: weiche::consent::PseudonymKey::new("p", vec![0x11; 32]),
        })
        .collect();
        Engines {
            mapping,
            validator: Validator::embedded().unwrap(),
            router: Router::new(recipients),
            audit_key: weiche::audit::AuditKey::new(vec![0x22; 32]),
        }
    })
}

/// A word with at least one letter outside ASCII, e.g. `Mełnik` or `Strąß`.
fn word() -> impl Strategy<Value = String> {
    "[A-Z][a-z]{1,6}[äöüßłęąśćńğıó][a-z]{0,6}"
}

/// A name, valid or broken by a character the name rule refuses.
fn name() -> impl Strategy<Value = String> {
    (
        word(),
        prop::option::of(prop::sample::select(vec![",", "1", "/", "@", "_"])),
        word(),
    )
        .prop_map(|(a, bad, b)| match bad {
            Some(c) => format!("{a}{c} {b}"),
            None => format!("{a} {b}"),
        })
}

/// A day as text: valid, impossible (30 February, 31 April, month 13, day 0), in another form
/// (`14.03.1987`, `1987-3-4`), or partial.
fn date(years: std::ops::Range<u32>) -> impl Strategy<Value = String> {
    (years, 1u32..=12, 1u32..=28, 0usize..9).prop_map(|(y, m, d, form)| match form {
        0 | 1 => format!("{y:04}-{m:02}-{d:02}"),
        2 => format!("{y:04}-02-30"),
        3 => format!("{y:04}-04-31"),
        4 => format!("{y:04}-13-{d:02}"),
        5 => format!("{y:04}-{m:02}-00"),
        6 => format!("{d:02}.{m:02}.{y:04}"),
        7 => format!("{y}-{m}-{d}"),
        _ => format!("{y:04}-{m:02}"),
    })
}

/// Digits as text, `n` of them (postal code 5, AGS 8; other lengths are wrong).
fn digits(lengths: Vec<usize>) -> impl Strategy<Value = String> {
    (prop::sample::select(lengths), any::<u64>())
        .prop_map(|(n, seed)| format!("{:020}", seed).chars().take(n).collect())
}

/// A vendor code: one the mapping knows, or an unknown word.
fn code(known: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![prop::sample::select(known).prop_map(str::to_string), word(),]
}

/// One of the ways a record is certainly broken (so that it is rejected).
#[derive(Debug, Clone, Copy)]
enum Break {
    BirthDate,
    Name,
    PostalCode,
    Email,
    Sex,
    Nationality,
    Employment,
    Substance,
}

fn case() -> impl Strategy<Value = (Value, Break)> {
    let client = (
        word(),
        name(),
        prop::collection::vec(name(), 0..3),
        date(1900..2030),
        code(&["maennlich", "weiblich", "divers", "unbekannt"]),
        prop_oneof![Just("POL".to_string()), Just("DEU".to_string()), word()],
        (
            word(),
            word(),
            digits(vec![5, 4, 6]),
            digits(vec![8, 7]),
            word(),
        ),
        (
            word(),
            prop_oneof![word(), word().prop_map(|w| format!("{w}@x@y"))],
        ),
        (word(), code(&["Kind", "Partner"])),
        (code(&["Abitur", "unbekannt"]), word()),
    );
    let rest = (
        word(),
        code(&["SGB II", "SGB VIII", "Suchthilfe"]),
        date(2020..2027),
        prop::option::of(date(2020..2027)),
        word(),
        prop::collection::vec(
            (
                code(&["BER", "WB", "AGH"]),
                word(),
                date(2020..2027),
                -5i32..100,
            ),
            0..3,
        ),
        prop::collection::vec(
            (
                word(),
                code(&["Eingliederung", "Statistik"]),
                word(),
                date(2020..2027),
            ),
            0..3,
        ),
        (code(&["rot", "gelb"]), word()),
        prop::sample::select(vec![
            Break::BirthDate,
            Break::Name,
            Break::PostalCode,
            Break::Email,
            Break::Sex,
            Break::Nationality,
            Break::Employment,
            Break::Substance,
        ]),
    );
    (client, rest).prop_map(
        |(
            (id, family, given, birth, sex, nat, (street, house, plz, ags, district), (phone, email), (household, role), (school, work)),
            (fall, program, opened, closed, team, services, consents, (risk, substance), brk),
        )| {
            let mut klient = json!({
                "id": format!("K-{id}"),
                "name": {"familienname": family, "vornamen": given},
                "geburtsdatum": birth,
                "geschlecht": sex,
                "staatsangehoerigkeit": nat,
                "adresse": {"strasse": street, "hausnummer": house, "plz": plz, "ags": ags,
                            "sozialraum": district},
                "kontakt": {"telefon": phone, "email": email},
                "bedarfsgemeinschaft": {"nummer": household, "rolle": role},
                "schulabschluss": school,
                "erwerb": work,
            });
            let mut schutz = json!({"kinderschutzampel": risk, "hauptsubstanz": substance});
            // The certain break.
            match brk {
                Break::BirthDate => klient["geburtsdatum"] = json!(format!("{}-02-30", 1950)),
                Break::Name => {
                    klient["name"]["familienname"] = json!(format!("{}, {}", family_of(&klient), "Złota"))
                }
                Break::PostalCode => klient["adresse"]["plz"] = json!("1234"),
                Break::Email => klient["kontakt"]["email"] = json!(format!("{}.example.org", id)),
                Break::Sex => klient["geschlecht"] = json!(format!("{id}ł")),
                Break::Nationality => klient["staatsangehoerigkeit"] = json!(format!("{id}ś")),
                Break::Employment => klient["erwerb"] = json!(format!("{id}ń")),
                Break::Substance => schutz["hauptsubstanz"] = json!(format!("{id}ğ")),
            }
            let leistungen: Vec<Value> = services
                .into_iter()
                .map(|(code, basis, von, hours)| {
                    json!({"code": code, "rechtsgrundlage": basis, "von": von, "stundenProWoche": hours})
                })
                .collect();
            let einwilligungen: Vec<Value> = consents
                .into_iter()
                .map(|(cid, zweck, group, erteilt)| {
                    json!({"id": format!("EW-{cid}"), "zweck": zweck, "empfaenger": "jobcenter-prop",
                           "datengruppen": ["client.identity", group], "erteilt": erteilt})
                })
                .collect();
            let case = json!({
                "fallId": format!("F-{fall}"),
                "fachbereich": program,
                "eroeffnet": opened,
                "abgeschlossen": closed,
                "team": team,
                "klient": klient,
                "leistungen": leistungen,
                "schutzbedarf": schutz,
                "einwilligungen": einwilligungen,
            });
            (case, brk)
        },
    )
}

fn family_of(klient: &Value) -> String {
    klient["name"]["familienname"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Every string value of `v` longer than 3 characters into `personal`, except at the allowed
/// (not personal) paths, whose values go into `allowed`; `path` is the member path with `[]`
/// for array elements.
fn strings(v: &Value, path: &str, personal: &mut Vec<String>, allowed: &mut Vec<String>) {
    const ALLOWED: [&str; 5] = [
        "uebermittlung.berichtsmonat",
        "faelle[].fachbereich",
        "faelle[].leistungen[].code",
        "faelle[].einwilligungen[].zweck",
        "faelle[].einwilligungen[].datengruppen[]",
    ];
    match v {
        Value::String(s) if ALLOWED.contains(&path) => allowed.push(s.clone()),
        Value::String(s) if s.chars().count() > 3 => personal.push(s.clone()),
        Value::Array(a) => {
            for x in a {
                strings(x, &format!("{path}[]"), personal, allowed);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                strings(x, &p, personal, allowed);
            }
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(Config { cases: 256, failure_persistence: None, ..Config::default() })]

    #[test]
    fn receipt_messages_quote_no_personal_value(cases in prop::collection::vec(case(), 1..4)) {
        let e = engines();
        let faelle: Vec<Value> = cases.iter().map(|(c, _)| c.clone()).collect();
        let doc = json!({
            "klidas": "1.0",
            "uebermittlung": {"id": "0d9f6c1e-2b3a-4c5d-8e7f-9a0b1c2d3e4f", "erstellt": "2026-11-02T10:00:00+01:00",
                              "absender": "Prop", "lieferart": "ergaenzung", "berichtsmonat": "2026-10"},
            "faelle": faelle,
        });
        let body = doc.to_string();
        let job = Job {
            delivery_id: "00000000-0000-0000-0000-000000000000",
            vendor: "prop-vendor",
            mapping: &e.mapping,
            mode_param: None,
            max_records: 100,
            charset: None,
            validator: &e.validator,
            router: Some(&e.router),
            emit_test_records: true,
            today: weiche::clock::berlin_date(1_793_617_200_000),
            at: "2026-11-02T12:00:00Z",
            withdrawals: Job::no_withdrawals(),
            audit_key: Some(&e.audit_key),
            background: false,
        };
        let mut reader = body.as_bytes();
        let outcome = pipeline::run(&job, &mut reader, &mut |_| Ok(()));
        let r = &outcome.receipt;
        // Every record is broken, so every one is rejected, with at least one error.
        prop_assert_eq!(r.received, cases.len() as u64, "{:?}", r);
        prop_assert_eq!(r.rejected, cases.len() as u64, "{:?}", r);
        let (mut values, mut allowed) = (Vec::new(), Vec::new());
        strings(&doc, "", &mut values, &mut allowed);
        // An allowed value may hold or equal a personal one by chance ('Agelbı' holds 'gelb',
        // a service started in '2026-10' equals the reporting month): allowed values are taken
        // out of the messages where they are quoted, or named as the reporting month, before
        // the messages are searched.
        allowed.sort_by_key(|a| std::cmp::Reverse(a.len()));
        let messages: Vec<&str> = r
            .errors
            .iter()
            .chain(&r.warnings)
            .map(|e| e.message.as_str())
            .chain(r.notes.iter().map(|n| n.message.as_str()))
            .collect();
        prop_assert!(!messages.is_empty());
        for m in &messages {
            let mut rest = m.to_string();
            for a in &allowed {
                rest = rest
                    .replace(&format!("'{a}'"), "''")
                    .replace(&format!("reporting month {a}"), "reporting month");
            }
            for v in &values {
                prop_assert!(!rest.contains(v.as_str()), "message {:?} quotes {:?}", m, v);
            }
        }
        // The receipt knows the client of each rejected record (for erasure).
        prop_assert!(outcome.subjects.len() >= cases.len());
    }
}
