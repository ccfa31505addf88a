//! Generated vendor exports for the benchmarks: a fallwerk-csv export (Windows-1252, CRLF, 1–3
//! rows per case, unique `Fallnr`) and an xsozial-lieferung message (one header, many `<fall>`),
//! both entirely valid, written to files case by case; and a file as a streamed request body.

#![allow(dead_code)]

use bytes::Bytes;
use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Chunk size of a streamed request body.
pub const BODY_CHUNK: usize = 256 * 1024;

// ---------------------------------------------------------------------------------------------
// Test data
// ---------------------------------------------------------------------------------------------

/// splitmix64: small, fast, deterministic.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// A calendar day as (year, month, day); days are kept ≤ 28 so every one exists.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Day(u32, u32, u32);

impl Day {
    /// A day in [from, to] (month-granular spread, days 1–28).
    fn between(rng: &mut Rng, from: Day, to: Day) -> Day {
        let a = from.0 * 12 + from.1 - 1;
        let b = to.0 * 12 + to.1 - 1;
        loop {
            let m = a + rng.below((b - a + 1) as usize) as u32;
            let d = Day(m / 12, m % 12 + 1, 1 + rng.below(28) as u32);
            if d >= from && d <= to {
                return d;
            }
        }
    }
    fn de(self) -> String {
        format!("{:02}.{:02}.{:04}", self.2, self.1, self.0)
    }
    fn iso(self) -> String {
        format!("{:04}-{:02}-{:02}", self.0, self.1, self.2)
    }
}

/// The reporting month of every record, and its last day.
pub const PERIOD_DE: &str = "10/2026";
pub const PERIOD_ISO: &str = "2026-10";
pub const PERIOD_END: Day = Day(2026, 10, 31);

/// Family names: in Windows-1252 (CSV) and any Unicode (XML).
pub const FAMILY_1252: &[&str] = &[
    "Öztürk",
    "Çelik",
    "Weiß",
    "Müller-Lüdenscheidt",
    "Schäfer",
    "Haddad",
    "Nowak",
    "Jäger",
    "Groß",
    "Bäcker",
    "D'Angelo",
    "Kowalczyk",
];
pub const FAMILY_XML: &[&str] = &[
    "Yılmaz",
    "Wiśniewski",
    "Müller-Lüdenscheidt",
    "Al-Hassan",
    "Öztürk",
    "Schäfer",
    "Bondarenko",
    "Groß",
    "Doğan",
    "Kowalczyk",
];
pub const GIVEN_1252: &[&str] = &[
    "Mehmet",
    "Emine",
    "Jürgen",
    "Fatima",
    "Zoë",
    "Björn",
    "Anna Maria",
    "Sören",
    "Agnès",
    "Özlem",
];
pub const GIVEN_XML: &[&str] = &[
    "Ayşe",
    "Łukasz",
    "Sabine Maria",
    "Mohammed",
    "Jürgen",
    "Oksana",
    "Zoë",
    "Ömer",
];
pub const STREETS: &[&str] = &[
    "Mallinckrodtstraße",
    "Münsterstraße",
    "Schleswiger Straße",
    "Kölner Straße",
    "Bürgerstraße",
    "Am Flöz",
];
pub const PLACES: &[(&str, &str, &str)] = &[
    ("44145", "05913000", "Nordstadt"),
    ("40227", "05111000", "Oberbilk"),
    ("50667", "05315000", "Altstadt-Nord"),
    ("45127", "05113000", "Südviertel"),
];
pub const TEAMS: &[&str] = &[
    "Team Nordstadt",
    "ASD Innenstadt-Nord",
    "Team Süd",
    "Team Flöz",
];
/// (Fallwerk `Bereich`, canonical program).
pub const PROGRAMS: &[(&str, &str)] = &[
    ("SGB2", "sgb2"),
    ("SGB3", "sgb3"),
    ("SGB8", "sgb8"),
    ("SUCHT", "sucht"),
    ("FH", "fruehe_hilfen"),
    ("BIL", "bildung"),
];
/// (Fallwerk `Geschlecht`, canonical sex).
pub const SEXES: &[(&str, &str)] = &[("M", "m"), ("W", "w"), ("D", "d"), ("U", "x")];
/// (Fallwerk `Staatsang`, ISO alpha-3).
pub const NATIONS: &[(&str, &str)] = &[
    ("000", "DEU"),
    ("163", "TUR"),
    ("152", "POL"),
    ("475", "SYR"),
    ("166", "UKR"),
    ("137", "ITA"),
];
pub const ROLES: &[(&str, &str)] = &[("AS", "antragsteller"), ("P", "partner"), ("K", "kind")];
pub const SCHOOL: &[(&str, &str)] = &[
    ("2", "hauptschule"),
    ("3", "realschule"),
    ("5", "abitur"),
    ("6", "ausland"),
    ("9", "unbekannt"),
];
pub const WORK: &[(&str, &str)] = &[
    ("AL", "arbeitslos"),
    ("BE", "beschaeftigt"),
    ("SE", "selbstaendig"),
    ("AZ", "ausbildung"),
];
/// (Fallwerk `Massnahme`, canonical service kind, legal basis).
pub const SERVICES: &[(&str, &str, &str)] = &[
    ("110", "beratung", "SGB II § 16a"),
    (
        "120",
        "vermittlung",
        "SGB II § 16 Abs. 1 i. V. m. § 35 SGB III",
    ),
    (
        "130",
        "aktivierung",
        "SGB II § 16 Abs. 1 i. V. m. § 45 SGB III",
    ),
    ("150", "ags", "SGB II § 16d"),
    ("210", "schuldnerberatung", "SGB II § 16a Nr. 2"),
    ("310", "hilfe_zur_erziehung", "SGB VIII § 31"),
];
/// (Fallwerk `Ampel`, canonical risk level).
pub const AMPEL: &[(&str, &str)] = &[("rot", "rot"), ("gelb", "gelb"), ("grün", "gruen")];
/// (Fallwerk / klidas purpose, canonical purpose).
pub const PURPOSES: &[(&str, &str)] = &[
    ("Eingliederung", "eingliederung"),
    ("Statistik", "statistik"),
    ("Hilfeplanung", "hilfeplanung"),
];
pub const GROUPS: &[&str] = &[
    "client.identity,client.contact,services",
    "client.identity,case,services,sensitive",
    "client.identity",
];
pub const FALLWERK_HEADER: &str = "Fallnr;Berichtsmonat;Bereich;Kundennr;Nachname;Vorname;Geburtsdatum;Geschlecht;Staatsang;Strasse;Hausnr;PLZ;AGS;Sozialraum;Telefon;EMail;BG-Nr;BG-Rolle;Schulabschluss;Erwerbsstatus;Fall_eroeffnet;Fall_abgeschlossen;Team;Ampel;Massnahme;Rechtsgrundlage;Massnahme_von;Massnahme_bis;Std_Woche;EW_Nr;EW_Zweck;EW_Empfaenger;EW_Datengruppen;EW_erteilt;EW_widerrufen";

/// A service of a generated case.
pub struct Service {
    code: &'static str,
    kind: &'static str,
    legal_basis: &'static str,
    start: Day,
    end: Option<Day>,
    /// Hours a week, in tenths.
    hours_tenths: Option<u32>,
}

/// One generated case, shared by both formats (the XML uses the Unicode names).
pub struct Case {
    no: u64,
    program: (&'static str, &'static str),
    family: &'static str,
    given: &'static str,
    birth: Day,
    sex: (&'static str, &'static str),
    nation: (&'static str, &'static str),
    street: &'static str,
    house: u32,
    place: (&'static str, &'static str, &'static str),
    phone: Option<u32>,
    email: bool,
    household: Option<(u64, (&'static str, &'static str))>,
    school: (&'static str, &'static str),
    work: (&'static str, &'static str),
    opened: Day,
    closed: Option<Day>,
    team: &'static str,
    ampel: Option<(&'static str, &'static str)>,
    services: Vec<Service>,
    consent: Option<((&'static str, &'static str), &'static str)>,
}

impl Case {
    fn new(rng: &mut Rng, no: u64, xml: bool, max_services: usize) -> Case {
        let opened = Day::between(rng, Day(2024, 1, 1), Day(2026, 10, 28));
        let closed = rng
            .chance(25)
            .then(|| Day::between(rng, opened, PERIOD_END));
        // 1–max services (so as many CSV rows); one case in twenty has none (one row, empty
        // columns).
        let n_services = if rng.chance(5) {
            0
        } else {
            1 + rng.below(max_services)
        };
        let services = (0..n_services)
            .map(|_| {
                let &(code, kind, legal_basis) = rng.pick(SERVICES);
                let start = Day::between(rng, opened, closed.unwrap_or(PERIOD_END));
                let end = rng
                    .chance(40)
                    .then(|| Day::between(rng, start, closed.unwrap_or(Day(2027, 6, 28))));
                let hours_tenths = rng
                    .chance(70)
                    .then(|| 10 * (1 + rng.below(30) as u32) + 5 * rng.below(2) as u32);
                Service {
                    code,
                    kind,
                    legal_basis,
                    start,
                    end,
                    hours_tenths,
                }
            })
            .collect();
        Case {
            no,
            program: *rng.pick(PROGRAMS),
            family: rng.pick::<&str>(if xml { FAMILY_XML } else { FAMILY_1252 }),
            given: rng.pick::<&str>(if xml { GIVEN_XML } else { GIVEN_1252 }),
            birth: Day::between(rng, Day(1950, 1, 1), Day(2008, 12, 28)),
            sex: *rng.pick(SEXES),
            nation: *rng.pick(NATIONS),
            street: rng.pick::<&str>(STREETS),
            house: 1 + rng.below(250) as u32,
            place: *rng.pick(PLACES),
            phone: rng.chance(60).then(|| 5_550_000 + rng.below(10_000) as u32),
            email: rng.chance(40),
            household: rng.chance(50).then(|| (no / 3, *rng.pick(ROLES))),
            school: *rng.pick(SCHOOL),
            work: *rng.pick(WORK),
            opened,
            closed,
            team: rng.pick::<&str>(TEAMS),
            ampel: rng.chance(20).then(|| *rng.pick(AMPEL)),
            services,
            consent: rng
                .chance(50)
                .then(|| (*rng.pick(PURPOSES), *rng.pick(GROUPS))),
        }
    }

    fn hours(tenths: u32, decimal: char) -> String {
        if tenths.is_multiple_of(10) {
            (tenths / 10).to_string()
        } else {
            format!("{}{decimal}{}", tenths / 10, tenths % 10)
        }
    }

    /// The case's CSV rows (UTF-8, encoded by the caller), CRLF-terminated.
    fn csv_rows(&self, out: &mut String) {
        let no = self.no;
        let rows = self.services.len().max(1);
        for r in 0..rows {
            let (place_plz, place_ags, place_district) = self.place;
            write!(
                out,
                "{}-{no:08};{PERIOD_DE};{};4711-{no:08};{};{};{};{};{};{};{};{place_plz};{place_ags};{place_district};",
                2026,
                self.program.0,
                self.family,
                self.given,
                self.birth.de(),
                self.sex.0,
                self.nation.0,
                self.street,
                self.house,
            )
            .unwrap();
            match self.phone {
                Some(p) => write!(out, "0231 {p};").unwrap(),
                None => out.push(';'),
            }
            if self.email {
                write!(out, "fall.{no}@example.org;").unwrap();
            } else {
                out.push(';');
            }
            match self.household {
                Some((h, role)) => write!(out, "BG-{place_plz}-{h:07};{};", role.0).unwrap(),
                None => out.push_str(";;"),
            }
            write!(
                out,
                "{};{};{};{};{};{};",
                self.school.0,
                self.work.0,
                self.opened.de(),
                self.closed.map(Day::de).unwrap_or_default(),
                self.team,
                self.ampel.map(|a| a.0).unwrap_or_default(),
            )
            .unwrap();
            match self.services.get(r) {
                Some(s) => write!(
                    out,
                    "{};{};{};{};{};",
                    s.code,
                    s.legal_basis,
                    s.start.de(),
                    s.end.map(Day::de).unwrap_or_default(),
                    s.hours_tenths
                        .map(|t| Self::hours(t, ','))
                        .unwrap_or_default(),
                )
                .unwrap(),
                None => out.push_str(";;;;;"),
            }
            match (r, self.consent) {
                (0, Some((purpose, groups))) => write!(
                    out,
                    "EW-{no:08};{};jobcenter-dortmund;{groups};{};",
                    purpose.0,
                    self.opened.de()
                )
                .unwrap(),
                _ => out.push_str(";;;;;"),
            }
            out.push_str("\r\n");
        }
    }

    /// The case as one `<fall>` element.
    fn xml(&self, out: &mut String) {
        let no = self.no;
        let code = |out: &mut String, el: &str, list: &str, value: &str| {
            write!(
                out,
                "      <{el} listURI=\"urn:weiche:codeliste:{list}\" listVersionID=\"1\">\n        <code>{value}</code>\n      </{el}>\n"
            )
            .unwrap();
        };
        write!(
            out,
            "  <fall>\n    <fallnummer>F-{no:09}</fallnummer>\n    <eroeffnet>{}</eroeffnet>\n",
            self.opened.iso()
        )
        .unwrap();
        if let Some(c) = self.closed {
            writeln!(out, "    <abgeschlossen>{}</abgeschlossen>", c.iso()).unwrap();
        }
        write!(
            out,
            "    <organisationseinheit>{}</organisationseinheit>\n    <person>\n      <kundennummer>K-{no:09}</kundennummer>\n      <familienname>{}</familienname>\n      <vorname>{}</vorname>\n      <geburtsdatum>{}</geburtsdatum>\n",
            self.team,
            self.family,
            self.given,
            self.birth.iso()
        )
        .unwrap();
        code(out, "geschlecht", "sex", self.sex.1);
        write!(
            out,
            "      <staatsangehoerigkeit>\n        <code>{}</code>\n      </staatsangehoerigkeit>\n",
            self.nation.1
        )
        .unwrap();
        let (plz, ags, district) = self.place;
        write!(
            out,
            "      <anschrift>\n        <strasse>{}</strasse>\n        <hausnummer>{}</hausnummer>\n        <postleitzahl>{plz}</postleitzahl>\n        <gemeindeschluessel>{ags}</gemeindeschluessel>\n        <sozialraum>{district}</sozialraum>\n      </anschrift>\n",
            self.street, self.house
        )
        .unwrap();
        if self.phone.is_some() || self.email {
            out.push_str("      <kontakt>\n");
            if let Some(p) = self.phone {
                writeln!(out, "        <telefon>0211 {p}</telefon>").unwrap();
            }
            if self.email {
                writeln!(out, "        <email>fall.{no}@example.org</email>").unwrap();
            }
            out.push_str("      </kontakt>\n");
        }
        if let Some((h, role)) = self.household {
            writeln!(
                out,
                "      <bedarfsgemeinschaft nummer=\"BG-{plz}-{h:07}\">"
            )
            .unwrap();
            write!(
                out,
                "        <rolle listURI=\"urn:weiche:codeliste:household_role\" listVersionID=\"1\">\n          <code>{}</code>\n        </rolle>\n      </bedarfsgemeinschaft>\n",
                role.1
            )
            .unwrap();
        }
        code(out, "schulabschluss", "school_qualification", self.school.1);
        code(out, "erwerbsstatus", "employment_status", self.work.1);
        out.push_str("    </person>\n");
        for s in &self.services {
            write!(
                out,
                "    <leistung>\n      <art listURI=\"urn:weiche:codeliste:service_kind\" listVersionID=\"1\">\n        <code>{}</code>\n      </art>\n      <rechtsgrundlage>{}</rechtsgrundlage>\n      <beginn>{}</beginn>\n",
                s.kind,
                s.legal_basis,
                s.start.iso()
            )
            .unwrap();
            if let Some(e) = s.end {
                writeln!(out, "      <ende>{}</ende>", e.iso()).unwrap();
            }
            if let Some(t) = s.hours_tenths {
                writeln!(
                    out,
                    "      <wochenstunden>{}</wochenstunden>",
                    Self::hours(t, '.')
                )
                .unwrap();
            }
            out.push_str("    </leistung>\n");
        }
        if let Some(a) = self.ampel {
            write!(
                out,
                "    <schutzbedarf>\n      <kinderschutzampel listURI=\"urn:weiche:codeliste:risk_level\" listVersionID=\"1\">\n        <code>{}</code>\n      </kinderschutzampel>\n    </schutzbedarf>\n",
                a.1
            )
            .unwrap();
        }
        if let Some((purpose, groups)) = self.consent {
            write!(
                out,
                "    <einwilligung>\n      <kennung>EW-{no:09}</kennung>\n      <zweck listURI=\"urn:weiche:codeliste:purpose\" listVersionID=\"1\">\n        <code>{}</code>\n      </zweck>\n      <empfaenger>jobcenter-duesseldorf</empfaenger>\n",
                purpose.1
            )
            .unwrap();
            for g in groups.split(',') {
                writeln!(out, "      <datengruppe>{g}</datengruppe>").unwrap();
            }
            writeln!(out, "      <erteilt>{}</erteilt>", self.opened.iso()).unwrap();
            out.push_str("    </einwilligung>\n");
        }
        out.push_str("  </fall>\n");
    }
}

/// A generated delivery file.
pub struct Generated {
    pub path: PathBuf,
    pub bytes: u64,
    pub cases: u64,
    pub rows: u64,
    pub time: Duration,
}

/// Writes a fallwerk-csv export of about `target` bytes (Windows-1252, CRLF), case by case.
pub fn generate_csv(path: &Path, target: u64, max_rows: usize) -> Generated {
    generate_csv_from(path, target, max_rows, 1)
}

/// Like [`generate_csv`], numbering the cases from `first` (so that two files have distinct
/// case ids).
pub fn generate_csv_from(path: &Path, target: u64, max_rows: usize, first: u64) -> Generated {
    let t = Instant::now();
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut rng = Rng(0x5EED_C5F0);
    let mut line = String::with_capacity(4096);
    let mut bytes = 0u64;
    let write = |out: &mut BufWriter<std::fs::File>, text: &str| {
        let (encoded, _, unmappable) = encoding_rs::WINDOWS_1252.encode(text);
        assert!(
            !unmappable,
            "generated CSV text not in Windows-1252: {text}"
        );
        out.write_all(&encoded).unwrap();
        encoded.len() as u64
    };
    bytes += write(&mut out, &format!("{FALLWERK_HEADER}\r\n"));
    let (mut cases, mut rows) = (0u64, 0u64);
    while bytes < target {
        let case = Case::new(&mut rng, cases + first, false, max_rows);
        line.clear();
        case.csv_rows(&mut line);
        bytes += write(&mut out, &line);
        cases += 1;
        rows += case.services.len().max(1) as u64;
    }
    out.flush().unwrap();
    Generated {
        path: path.to_path_buf(),
        bytes,
        cases,
        rows,
        time: t.elapsed(),
    }
}

/// Writes an xsozial-lieferung message of about `target` bytes, `<fall>` by `<fall>`.
pub fn generate_xml(path: &Path, target: u64, test_attr: Option<&str>, pretty: bool) -> Generated {
    let t = Instant::now();
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut rng = Rng(0x5EED_0A11);
    let test = test_attr
        .map(|v| format!(" test=\"{v}\""))
        .unwrap_or_default();
    let head = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<lieferung xmlns="urn:weiche:xsozial-stil:lieferung:1" version="1.0" produkt="Fallakte Plus" produkthersteller="Muster Software GmbH" produktversion="4.2.1"{test}>
  <nachrichtenkopf>
    <identifikation>
      <nachrichtenUUID>{}</nachrichtenUUID>
      <nachrichtentyp>
        <code>lieferung.ergaenzung</code>
      </nachrichtentyp>
      <erstellungszeitpunkt>2026-11-03T07:45:12+01:00</erstellungszeitpunkt>
    </identifikation>
    <autor>
      <kennung>bvrr-fallakte-01</kennung>
      <name>Beratungsverbund Rhein-Ruhr e. V. – Fallakte Plus</name>
    </autor>
    <leser>
      <kennung>weiche</kennung>
    </leser>
  </nachrichtenkopf>
  <berichtsmonat>{PERIOD_ISO}</berichtsmonat>
  <programm listURI="urn:weiche:codeliste:program" listVersionID="1">
    <code>sgb2</code>
  </programm>
"#,
        uuid::Uuid::new_v4()
    );
    let tail = "</lieferung>\n";
    out.write_all(head.as_bytes()).unwrap();
    let mut bytes = (head.len() + tail.len()) as u64;
    let mut cases = 0u64;
    let mut fall = String::with_capacity(8192);
    while bytes < target {
        let case = Case::new(&mut rng, cases + 1, true, 3);
        fall.clear();
        case.xml(&mut fall);
        // Each <fall> is indented inside; between them, pretty mode only puts white space.
        let text = if pretty { fall.as_str() } else { fall.trim() };
        out.write_all(text.as_bytes()).unwrap();
        bytes += text.len() as u64;
        cases += 1;
    }
    out.write_all(tail.as_bytes()).unwrap();
    out.flush().unwrap();
    Generated {
        path: path.to_path_buf(),
        bytes,
        cases,
        rows: cases,
        time: t.elapsed(),
    }
}

/// The file as a request body, read from disk chunk by chunk; `sent` counts the bytes handed out.
pub async fn file_body(path: &Path, sent: Arc<AtomicU64>) -> reqwest::Body {
    use tokio::io::AsyncReadExt;
    let file = tokio::fs::File::open(path)
        .await
        .expect("open delivery file");
    let stream = futures::stream::try_unfold((file, sent), |(mut file, sent)| async move {
        let mut buf = vec![0u8; BODY_CHUNK];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok::<_, std::io::Error>(None);
        }
        buf.truncate(n);
        sent.fetch_add(n as u64, Ordering::Relaxed);
        Ok(Some((Bytes::from(buf), (file, sent))))
    });
    reqwest::Body::wrap_stream(stream)
}

/// The last pretty-printed JSON object in a text (the receipt after any progress output).
pub fn last_json(text: &str) -> Option<serde_json::Value> {
    let mut end = text.len();
    while let Some(i) = text[..end].rfind('{') {
        let starts_line = i == 0 || matches!(text.as_bytes()[i - 1], b'\n' | b'\r');
        if starts_line
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(text[i..].trim_end())
        {
            return Some(v);
        }
        end = i;
    }
    None
}
