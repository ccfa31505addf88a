//! Property tests of disclosure control (consent-and-pseudonyms.md): random canonical records,
//! random recipient policies and random consents are routed, and the outputs are searched for
//! every field value the policy and consent do not let through.
//!
//! Every generated personal value carries a marker of its field (`⟦family_name⟧…⟧`), and the
//! numeric and date fields come from value ranges that no other field uses (postal codes only
//! use the digits 0–4, municipality keys 5–9, each date path has its own years), so finding a
//! raw value in an output body means that very field leaked. The oracle of what may go out is
//! written here from the spec, independently of `Policy::actions`:
//! exact path over field group, unnamed → drop; under a consent only the consent's field groups.
//!
//! Failure persistence is off (no `proptest-regressions/` file next to this one); a failing
//! case is printed, shrunk, in the test output.

use chrono::{Days, NaiveDate};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{Index, select, subsequence};
use proptest::test_runner::Config;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use weiche::catalogue::Code;
use weiche::consent::policy::LEAF_PATHS;
use weiche::consent::{Action, Policy, PseudonymKey};
use weiche::model::{
    Address, CanonicalRecord, Case, Client, Consent, Contact, FIELD_GROUPS, Hours, Personal,
    SCHEMA_VERSION, Sensitive, Service, Source, field_group,
};
use weiche::route::{Recipient, RouteContext, Routed, Router};

/// The processing day D of every test.
fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 2).unwrap()
}

/// `YYYY-MM-DD` of D + `off` days.
fn day(off: i64) -> String {
    let d = if off >= 0 {
        today().checked_add_days(Days::new(off as u64))
    } else {
        today().checked_sub_days(Days::new(off.unsigned_abs()))
    };
    d.unwrap().format("%Y-%m-%d").to_string()
}

fn parse_day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

const PERIOD: &str = "2026-10";
const PROGRAM: &str = "sgb2";
const VENDOR: &str = "vendor-prop";
const FORMAT: &str = "klidas-json";
const DELIVERY: &str = "dlv-prop";
const AT: &str = "2026-11-02T10:00:00+01:00";
const PURPOSE: &str = "eingliederung";
const RECIPIENT: &str = "jobcenter-prop";
const OTHER_RECIPIENT: &str = "traeger-nord";
const KID: &str = "pk";

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------------

/// A value that names its field: `⟦tag⟧random⟧`.
fn marked(tag: &'static str) -> impl Strategy<Value = String> {
    "[a-z]{3,8}".prop_map(move |s| format!("⟦{tag}⟧{s}⟧"))
}

fn personal(s: Option<String>) -> Option<Personal<String>> {
    s.map(Personal)
}

/// A full date with a year of `years` (every date path has its own years).
fn date_in(years: std::ops::RangeInclusive<i32>) -> impl Strategy<Value = String> {
    (years, 1u32..=12, 1u32..=28).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}"))
}

/// A birth date as delivered: `YYYY-MM-DD`, `YYYY-MM` or `YYYY`.
fn birth_date() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => date_in(1940..=1999),
        1 => (1940..=1999i32, 1u32..=12).prop_map(|(y, m)| format!("{y:04}-{m:02}")),
        1 => (1940..=1999i32).prop_map(|y| format!("{y:04}")),
    ]
}

fn client() -> impl Strategy<Value = Client> {
    let identity = (
        marked("client_id"),
        marked("family_name"),
        option::of(marked("given_names")),
        birth_date(),
        marked("sex"),
        option::of(marked("nationality")),
        option::of(marked("household_id")),
        option::of(marked("household_role")),
    );
    let address = option::of(
        (
            option::of(marked("street")),
            option::of(marked("house_number")),
            option::of("[0-4]{5}"),
            option::of("[5-9]{8}"),
            option::of(marked("district")),
        )
            .prop_map(|(street, house, postal, municipality, district)| Address {
                street: personal(street),
                house_number: personal(house),
                postal_code: personal(postal),
                municipality_key: personal(municipality),
                district: personal(district),
            }),
    );
    let contact = option::of(
        (option::of(marked("phone")), option::of(marked("email"))).prop_map(|(phone, email)| {
            Contact {
                phone: personal(phone),
                email: personal(email),
            }
        }),
    );
    let education = (
        option::of(marked("school_qualification")),
        option::of(marked("employment_status")),
    );
    (identity, address, contact, education).prop_map(
        |((id, family, given, birth, sex, nat, hh, role), address, contact, (school, emp))| {
            Client {
                client_id: Personal(id),
                family_name: Personal(family),
                given_names: personal(given),
                birth_date: Personal(birth),
                sex: Personal(sex),
                nationality: personal(nat),
                household_id: personal(hh),
                household_role: personal(role),
                address,
                contact,
                school_qualification: personal(school),
                employment_status: personal(emp),
            }
        },
    )
}

fn case() -> impl Strategy<Value = Case> {
    (
        marked("case_id"),
        date_in(2000..=2004),
        option::of(date_in(2005..=2009)),
        option::of(marked("unit")),
    )
        .prop_map(|(case_id, opened_on, closed_on, unit)| Case {
            case_id,
            opened_on,
            closed_on,
            unit,
        })
}

/// Hours such as `37.25`: a shape no other field has.
fn hours() -> impl Strategy<Value = Hours> {
    (10u32..80, prop_oneof![Just(0.25), Just(0.75)]).prop_map(|(h, f)| Hours(h as f64 + f))
}

fn service() -> impl Strategy<Value = Service> {
    (
        marked("kind"),
        option::of(marked("legal_basis")),
        date_in(2010..=2014),
        option::of(date_in(2015..=2019)),
        option::of(hours()),
    )
        .prop_map(|(kind, legal_basis, start, end, hours_per_week)| Service {
            kind,
            legal_basis,
            start,
            end,
            hours_per_week,
        })
}

fn sensitive() -> impl Strategy<Value = Option<Sensitive>> {
    option::of(
        (
            option::of(marked("child_protection_risk")),
            option::of(marked("primary_substance")),
        )
            .prop_map(|(risk, substance)| Sensitive {
                child_protection_risk: personal(risk),
                primary_substance: personal(substance),
            }),
    )
}

/// One consent declaration around D, and the day (as an offset) of a recorded withdrawal of it.
fn consent(recipients: &'static [&'static str]) -> impl Strategy<Value = (Consent, Option<i64>)> {
    (
        "[a-z]{3,6}",
        prop_oneof![6 => Just(PURPOSE), 1 => Just("hilfeplanung"), 1 => Just("statistik")],
        prop_oneof![3 => select(recipients), 2 => Just("*"), 1 => Just(OTHER_RECIPIENT)],
        subsequence(FIELD_GROUPS.to_vec(), 0..=FIELD_GROUPS.len()),
        -30i64..=3,
        option::weighted(0.5, -3i64..=30),
        option::weighted(0.25, -3i64..=3),
        option::weighted(0.2, -3i64..=3),
    )
        .prop_map(
            |(id, purpose, recipient, fields, granted, until, withdrawn, recorded)| {
                let c = Consent {
                    consent_id: id,
                    purpose: purpose.into(),
                    recipient: recipient.into(),
                    fields: fields.into_iter().map(String::from).collect(),
                    granted_on: day(granted),
                    valid_until: until.map(day),
                    withdrawn_on: withdrawn.map(day),
                };
                (c, recorded)
            },
        )
}

/// A record and the recorded withdrawals of its consents (`withdrawals` map of the route
/// context).
#[derive(Clone)]
struct Input {
    record: CanonicalRecord,
    withdrawals: HashMap<(String, String), String>,
}

/// Shows the (synthetic) values, which `Personal`'s `Debug` hides, so that a shrunk failing
/// input can be read.
impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let withdrawals: BTreeMap<_, _> = self.withdrawals.iter().collect();
        f.debug_struct("Input")
            .field("record", &serde_json::to_string(&self.record).unwrap())
            .field("withdrawals", &withdrawals)
            .finish()
    }
}

fn input(recipients: &'static [&'static str]) -> impl Strategy<Value = Input> {
    (
        marked("record_id"),
        client(),
        case(),
        vec(service(), 0..=3),
        sensitive(),
        vec(consent(recipients), 0..=4),
    )
        .prop_map(|(record_id, client, case, services, sensitive, consents)| {
            let mut withdrawals = HashMap::new();
            let mut list = Vec::new();
            for (i, (mut c, recorded)) in consents.into_iter().enumerate() {
                // Unique ids: the last letter differs.
                c.consent_id = format!("⟦consent_id⟧{}{}⟧", c.consent_id, (b'a' + i as u8) as char);
                if let Some(off) = recorded {
                    withdrawals
                        .insert((client.client_id.0.clone(), c.consent_id.clone()), day(off));
                }
                list.push(c);
            }
            let record = CanonicalRecord {
                schema_version: SCHEMA_VERSION.into(),
                source: Source {
                    vendor: VENDOR.into(),
                    format: FORMAT.into(),
                    record_id,
                    delivery_id: DELIVERY.into(),
                },
                reporting_period: PERIOD.into(),
                program: PROGRAM.into(),
                client,
                case,
                services,
                sensitive,
                consents: list,
            };
            Input {
                record,
                withdrawals,
            }
        })
}

// ---------------------------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------------------------

const DATE_PATHS: &[&str] = &[
    "client.birth_date",
    "case.opened_on",
    "case.closed_on",
    "services[].start",
    "services[].end",
    "consents[].granted_on",
    "consents[].valid_until",
    "consents[].withdrawn_on",
];

/// Every action spelling the generator may write (`Prefix(0)` is never acceptable).
fn all_actions() -> Vec<Action> {
    let mut v = vec![
        Action::Keep,
        Action::Drop,
        Action::Pseudonymise,
        Action::Year,
        Action::YearMonth,
        Action::AgeBand,
    ];
    v.extend((0..=9).map(Action::Prefix));
    v
}

fn spell(a: Action) -> String {
    match a {
        Action::Keep => "keep".into(),
        Action::Drop => "drop".into(),
        Action::Pseudonymise => "pseudonymise".into(),
        Action::Year => "generalise:year".into(),
        Action::YearMonth => "generalise:year_month".into(),
        Action::AgeBand => "generalise:age_band".into(),
        Action::Prefix(n) => format!("generalise:prefix:{n}"),
    }
}

/// Whether the spec allows action `a` on leaf `path`.
fn applies(path: &str, a: Action) -> bool {
    let linkage = path == "client.linkage_key";
    match a {
        Action::Drop | Action::Pseudonymise => true,
        Action::Keep => !linkage,
        Action::Year | Action::YearMonth => DATE_PATHS.contains(&path),
        Action::AgeBand => path == "client.birth_date",
        Action::Prefix(n) => {
            n > 0
                && matches!(
                    path,
                    "client.address.postal_code" | "client.address.municipality_key"
                )
        }
    }
}

/// The leaves a policy key (leaf path or field group) stands for.
fn leaves_of(target: &str) -> Vec<&'static str> {
    if FIELD_GROUPS.contains(&target) {
        LEAF_PATHS
            .iter()
            .copied()
            .filter(|p| field_group(p) == Some(target))
            .collect()
    } else {
        LEAF_PATHS
            .iter()
            .copied()
            .filter(|p| *p == target)
            .collect()
    }
}

fn targets() -> Vec<&'static str> {
    LEAF_PATHS.iter().copied().chain(FIELD_GROUPS).collect()
}

/// A generated policy, kept as data so the oracle does not depend on the loader.
#[derive(Debug, Clone)]
struct PolicySpec {
    id: &'static str,
    statute: bool,
    citation: bool,
    special: bool,
    entries: BTreeMap<&'static str, Action>,
}

impl PolicySpec {
    fn text(&self) -> String {
        let mut t = format!(
            "id = \"{}\"\npurpose = \"{PURPOSE}\"\nlegal_basis = \"{}\"\n",
            self.id,
            if self.statute { "statute" } else { "consent" }
        );
        if self.citation {
            t.push_str("citation = \"§ 51b SGB II; Art. 9 Abs. 2 lit. h DSGVO\"\n");
        }
        if self.special {
            t.push_str("special_categories = true\n");
        }
        t.push_str(&format!(
            "[delivery]\nkind = \"pull\"\n[route]\nprograms = [\"{PROGRAM}\"]\n[fields]\n"
        ));
        for (k, a) in &self.entries {
            t.push_str(&format!("\"{k}\" = \"{}\"\n", spell(*a)));
        }
        t
    }

    /// The policy's action on a leaf: exact path over field group; unnamed → drop.
    fn resolved(&self, path: &str) -> Action {
        if let Some(a) = self.entries.get(path) {
            return *a;
        }
        field_group(path)
            .and_then(|g| self.entries.get(g))
            .copied()
            .unwrap_or(Action::Drop)
    }

    /// Whether the loader must accept the policy.
    fn acceptable(&self) -> bool {
        let applicable = self
            .entries
            .iter()
            .all(|(k, a)| leaves_of(k).iter().all(|p| applies(p, *a)));
        let sensitive = LEAF_PATHS
            .iter()
            .any(|p| p.starts_with("sensitive.") && self.resolved(p) != Action::Drop);
        applicable
            && (!self.statute || self.citation)
            && (!sensitive || (self.special && self.citation))
    }
}

/// A random policy: a random subset of leaf paths and field groups, each with an action that
/// applies to it (rarely, one that does not, which the loader must refuse).
fn policy_spec(id: &'static str) -> impl Strategy<Value = PolicySpec> {
    let targets = targets();
    let n = targets.len();
    (
        proptest::bool::weighted(0.5),
        proptest::bool::weighted(0.97),
        proptest::bool::weighted(0.85),
        vec(
            (
                proptest::bool::weighted(0.35),
                any::<Index>(),
                proptest::bool::weighted(0.01),
            ),
            n,
        ),
    )
        .prop_map(move |(statute, cited, special, picks)| {
            let mut entries = BTreeMap::new();
            for (target, (include, pick, wild)) in targets.iter().zip(picks) {
                if !include {
                    continue;
                }
                let all = all_actions();
                let choices: Vec<Action> = if wild {
                    all
                } else {
                    all.into_iter()
                        .filter(|a| leaves_of(target).iter().all(|p| applies(p, *a)))
                        .collect()
                };
                entries.insert(*target, *pick.get(&choices));
            }
            PolicySpec {
                id,
                statute,
                citation: if statute { cited } else { special && cited },
                special,
                entries,
            }
        })
}

/// Loads a generated policy and checks that the loader accepts exactly the acceptable ones and
/// resolves them as the spec says.
fn load(spec: &PolicySpec) -> Result<Option<Arc<Policy>>, TestCaseError> {
    let text = spec.text();
    match Policy::from_text(&format!("{}.toml", spec.id), &text) {
        Ok(p) => {
            prop_assert!(
                spec.acceptable(),
                "accepted a policy it must refuse:\n{text}"
            );
            for path in LEAF_PATHS {
                prop_assert_eq!(p.action(path), spec.resolved(path), "{} in\n{}", path, text);
            }
            Ok(Some(Arc::new(p)))
        }
        Err(e) => {
            prop_assert!(
                !spec.acceptable(),
                "refused an acceptable policy ({e}):\n{text}"
            );
            Ok(None)
        }
    }
}

fn key_for(kid: &str, seed: u8) -> PseudonymKey {
    PseudonymKey::new(kid, (0..32u8).map(|i| i.wrapping_mul(7) ^ seed).collect())
}

// ---------------------------------------------------------------------------------------------
// The oracle
// ---------------------------------------------------------------------------------------------

/// The consent check of the spec, written out.
fn holds(c: &Consent, recorded: Option<&str>, id: &str) -> bool {
    let t = today();
    c.purpose == PURPOSE
        && (c.recipient == id || c.recipient == "*")
        && parse_day(&c.granted_on) <= t
        && c.valid_until.as_deref().is_none_or(|v| parse_day(v) >= t)
        && c.withdrawn_on.as_deref().is_none_or(|w| parse_day(w) > t)
        && recorded.is_none_or(|w| parse_day(w) > t)
}

fn recorded<'a>(input: &'a Input, c: &Consent) -> Option<&'a str> {
    input
        .withdrawals
        .get(&(
            input.record.client.client_id.0.clone(),
            c.consent_id.clone(),
        ))
        .map(String::as_str)
}

/// The first consent of the record that holds for the recipient.
fn chosen<'a>(input: &'a Input, id: &str) -> Option<&'a Consent> {
    input
        .record
        .consents
        .iter()
        .find(|c| holds(c, recorded(input, c), id))
}

/// The action on a leaf for a recipient, narrowed by the consent it goes out under.
fn effective(spec: &PolicySpec, consent: Option<&Consent>, path: &str) -> Action {
    let a = spec.resolved(path);
    match consent {
        None => a,
        Some(c) => {
            let group = if path == "client.linkage_key" {
                Some("client.identity")
            } else {
                field_group(path)
            };
            if group.is_some_and(|g| c.fields.iter().any(|f| f == g)) {
                a
            } else {
                Action::Drop
            }
        }
    }
}

/// Leaf paths (array entries as `[]`) and values under the data sections of a record or item.
fn leaves(doc: &Value) -> Vec<(String, Value)> {
    fn walk(path: String, v: &Value, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    walk(format!("{path}.{k}"), x, out);
                }
            }
            Value::Array(items) if path == "services" || path == "consents" => {
                for x in items {
                    walk(format!("{path}[]"), x, out);
                }
            }
            leaf => out.push((path, leaf.clone())),
        }
    }
    let mut out = Vec::new();
    for section in ["client", "case", "services", "sensitive", "consents"] {
        if let Some(v) = doc.get(section) {
            walk(section.to_string(), v, &mut out);
        }
    }
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A value as it appears inside JSON text.
fn needle(v: &Value) -> String {
    match v {
        Value::String(_) => {
            let s = v.to_string();
            s[1..s.len() - 1].to_string()
        }
        other => other.to_string(),
    }
}

/// The body with the policy version and every pseudonym blanked out (their hex digits could
/// contain a short digit string by chance); also returns the pseudonyms, checked for shape.
fn mask(body: &str, version: &str, kids: &[&str]) -> Result<(String, Vec<String>), TestCaseError> {
    let body = body.replace(version, "«version»");
    let mut out = String::new();
    let mut found = Vec::new();
    let mut rest = body.as_str();
    while let Some(i) = rest.find("p1.") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 3..];
        let dot = after.find('.');
        prop_assert!(dot.is_some(), "malformed pseudonym in {body}");
        let dot = dot.unwrap();
        let kid = &after[..dot];
        let hex = after.get(dot + 1..dot + 33).unwrap_or_default();
        prop_assert!(kids.contains(&kid), "pseudonym with kid {kid:?} in {body}");
        prop_assert!(
            hex.len() == 32
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "pseudonym hex {hex:?} in {body}"
        );
        prop_assert!(
            after[dot + 33..].starts_with('"'),
            "pseudonym longer than 32 hex digits in {body}"
        );
        found.push(format!("p1.{kid}.{hex}"));
        out.push_str("«p»");
        rest = &after[dot + 33..];
    }
    out.push_str(rest);
    Ok((out, found))
}

fn route(router: &Router, input: &Input) -> Routed {
    router.route(
        &input.record,
        &RouteContext {
            today: today(),
            withdrawals: &input.withdrawals,
            delivery_id: DELIVERY,
            at: AT,
            audit_key: None,
        },
    )
}

const ENVELOPE: &[&str] = &[
    "type",
    "record_ref",
    "policy_version",
    "schema_version",
    "reporting_period",
    "program",
    "source",
    "consent_id",
    "client",
    "case",
    "services",
    "sensitive",
    "consents",
];

/// Property 1 for one recipient: the routed outputs hold nothing the policy and the consent do
/// not allow.
fn check_disclosure(spec: &PolicySpec, input: &Input) -> Result<(), TestCaseError> {
    let Some(policy) = load(spec)? else {
        return Ok(());
    };
    let key = key_for(KID, 0x5a);
    let router = Router::new(vec![Recipient {
        policy: policy.clone(),
        key: key.clone(),
    }]);
    let routed = route(&router, input);
    let record = &input.record;
    let full = serde_json::to_value(record).unwrap();
    let raw = leaves(&full);
    for (p, _) in &raw {
        prop_assert!(LEAF_PATHS.contains(&p.as_str()), "unknown path {p}");
    }
    let c001 = routed
        .notes
        .iter()
        .filter(|n| n.code == Code::C001 && n.recipient == RECIPIENT)
        .count();

    // The consent it may go out under.
    let consent = if spec.statute {
        None
    } else {
        match chosen(input, RECIPIENT) {
            Some(c) => Some(c),
            None => {
                prop_assert!(routed.items.is_empty(), "routed without a valid consent");
                prop_assert_eq!(c001, 1, "no C001 note without a valid consent");
                return Ok(());
            }
        }
    };
    prop_assert_eq!(routed.items.len(), 1);
    prop_assert_eq!(c001, 0);
    let item = &routed.items[0];
    prop_assert_eq!(&item.recipient, RECIPIENT);
    prop_assert_eq!(
        item.consent_id.as_deref(),
        consent.map(|c| c.consent_id.as_str())
    );
    let body = &item.body;
    let doc: Value = serde_json::from_str(body).unwrap();

    // Structure: only envelope keys, only non-dropped leaf paths.
    for k in doc.as_object().unwrap().keys() {
        prop_assert!(
            ENVELOPE.contains(&k.as_str()),
            "unexpected key {k} in {body}"
        );
    }
    let source: BTreeSet<&str> = doc["source"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    prop_assert_eq!(
        source,
        BTreeSet::from(["vendor", "format", "delivery_id"]),
        "source of {}",
        body
    );
    for (p, _) in leaves(&doc) {
        prop_assert!(
            LEAF_PATHS.contains(&p.as_str()),
            "unknown path {p} in {body}"
        );
        prop_assert_ne!(
            effective(spec, consent, &p),
            Action::Drop,
            "{} went out though it is dropped",
            p
        );
    }

    // What may legitimately appear in the body text.
    let mut allowed: Vec<String> = vec![
        SCHEMA_VERSION.into(),
        PERIOD.into(),
        PROGRAM.into(),
        VENDOR.into(),
        FORMAT.into(),
        DELIVERY.into(),
    ];
    if let Some(c) = consent {
        allowed.push(needle(&Value::from(c.consent_id.clone())));
    }
    let mut forbidden = Vec::new();
    for (path, value) in &raw {
        let t = text(value);
        let shown = match effective(spec, consent, path) {
            Action::Drop | Action::Pseudonymise | Action::AgeBand => None,
            Action::Keep => Some(t.clone()),
            Action::Year => Some(t.chars().take(4).collect()),
            Action::YearMonth => Some(t.chars().take(7).collect()),
            Action::Prefix(n) => Some(t.chars().take(n).collect()),
        };
        match shown {
            Some(s) if s == t => allowed.push(needle(value)),
            Some(s) => {
                allowed.push(needle(&Value::from(s)));
                forbidden.push((path, value));
            }
            None => forbidden.push((path, value)),
        }
    }

    // Leaks: a raw value that must not go out found anywhere in the body.
    let (masked, _) = mask(body, &policy.version, &[KID])?;
    for (path, value) in forbidden {
        if value.is_array() {
            continue; // consents[].fields: group names, also JSON keys; covered structurally
        }
        let n = needle(value);
        if allowed.iter().any(|a| a.contains(&n)) {
            continue; // the same text also goes out legitimately
        }
        prop_assert!(
            !masked.contains(&n),
            "{} = {:?} leaked (action {:?}) in {}",
            path,
            n,
            effective(spec, consent, path),
            body
        );
    }
    let rid = needle(&Value::from(record.source.record_id.clone()));
    prop_assert!(!masked.contains(&rid), "raw record id in {body}");

    // And what must go out does (the properties above are not vacuous).
    prop_assert_eq!(
        item.record_ref.clone(),
        key.field("source.record_id", VENDOR, &record.source.record_id)
    );
    for (path, value) in &raw {
        if value.is_array() {
            continue;
        }
        let t = text(value);
        let expect = match effective(spec, consent, path) {
            Action::Keep => needle(value),
            Action::Pseudonymise => key.field(path, VENDOR, &t),
            Action::Year => t.chars().take(4).collect(),
            Action::YearMonth => t.chars().take(7).collect(),
            Action::Prefix(n) => t.chars().take(n).collect(),
            Action::Drop | Action::AgeBand => continue,
        };
        prop_assert!(
            body.contains(&expect),
            "{path}: {expect:?} missing in {body}"
        );
    }
    let c = &record.client;
    let linkage = key.linkage_key(
        &c.family_name.0,
        c.given_names.as_ref().map(|g| g.0.as_str()),
        &c.birth_date.0,
    );
    prop_assert_eq!(
        body.contains(&linkage),
        effective(spec, consent, "client.linkage_key") == Action::Pseudonymise,
        "linkage key in {}",
        body
    );

    // The audit trail is pseudonymous: no marked personal value in it.
    for event in &routed.audit {
        for (path, value) in &raw {
            let n = needle(value);
            if path == "consents[].consent_id" || !n.contains('⟦') {
                continue;
            }
            prop_assert!(!event.body.contains(&n), "{path} in audit {}", event.body);
        }
        prop_assert!(
            !event.body.contains(&rid),
            "record id in audit {}",
            event.body
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Property 2: consents that do not hold
// ---------------------------------------------------------------------------------------------

/// Why a consent does not hold (offsets in days from D).
#[derive(Debug, Clone, Copy)]
enum Defect {
    /// `withdrawn_on` ≤ D in the record.
    WithdrawnInRecord(i64),
    /// A recorded withdrawal ≤ D.
    WithdrawnRecorded(i64),
    /// `valid_until` < D.
    Expired(i64),
    /// `granted_on` > D.
    NotYetGranted(i64),
    /// Another purpose.
    WrongPurpose,
    /// Another recipient.
    WrongRecipient,
}

fn defect() -> impl Strategy<Value = Defect> {
    prop_oneof![
        3 => (-20i64..=0).prop_map(Defect::WithdrawnInRecord),
        3 => (-20i64..=0).prop_map(Defect::WithdrawnRecorded),
        3 => (-20i64..=-1).prop_map(Defect::Expired),
        3 => (1i64..=20).prop_map(Defect::NotYetGranted),
        1 => Just(Defect::WrongPurpose),
        1 => Just(Defect::WrongRecipient),
    ]
}

/// A consent that would hold but for its defect.
#[derive(Debug, Clone)]
struct FlawedConsent {
    star: bool,
    fields: Vec<&'static str>,
    granted: i64,
    until: Option<i64>,
    /// A withdrawal in the future (does not matter today).
    later_withdrawal: Option<i64>,
    /// A recorded withdrawal in the future.
    later_recorded: Option<i64>,
    defect: Defect,
}

fn flawed_consent() -> impl Strategy<Value = FlawedConsent> {
    (
        any::<bool>(),
        subsequence(FIELD_GROUPS.to_vec(), 0..=FIELD_GROUPS.len()),
        -100i64..=0,
        option::of(0i64..=50),
        option::weighted(0.3, 1i64..=20),
        option::weighted(0.3, 1i64..=20),
        defect(),
    )
        .prop_map(
            |(star, fields, granted, until, later_withdrawal, later_recorded, defect)| {
                FlawedConsent {
                    star,
                    fields,
                    granted,
                    until,
                    later_withdrawal,
                    later_recorded,
                    defect,
                }
            },
        )
}

/// Puts the consents into the record (with their defects unless `repair_first`, which leaves
/// the first one without its defect).
fn with_consents(base: &Input, flawed: &[FlawedConsent], repair_first: bool) -> Input {
    let mut input = base.clone();
    input.withdrawals.clear();
    input.record.consents.clear();
    let client = input.record.client.client_id.0.clone();
    for (i, f) in flawed.iter().enumerate() {
        let mut c = Consent {
            consent_id: format!("⟦consent_id⟧flawed{}⟧", (b'a' + i as u8) as char),
            purpose: PURPOSE.into(),
            recipient: if f.star { "*".into() } else { RECIPIENT.into() },
            fields: f.fields.iter().map(|s| s.to_string()).collect(),
            granted_on: day(f.granted),
            valid_until: f.until.map(day),
            withdrawn_on: f.later_withdrawal.map(day),
        };
        let mut recorded = f.later_recorded.map(day);
        if !(repair_first && i == 0) {
            match f.defect {
                Defect::WithdrawnInRecord(o) => c.withdrawn_on = Some(day(o)),
                Defect::WithdrawnRecorded(o) => recorded = Some(day(o)),
                Defect::Expired(o) => c.valid_until = Some(day(o)),
                Defect::NotYetGranted(o) => c.granted_on = day(o),
                Defect::WrongPurpose => c.purpose = "statistik".into(),
                Defect::WrongRecipient => c.recipient = OTHER_RECIPIENT.into(),
            }
        }
        if let Some(r) = recorded {
            input
                .withdrawals
                .insert((client.clone(), c.consent_id.clone()), r);
        }
        input.record.consents.push(c);
    }
    input
}

const CONSENT_POLICY: &str = r#"
id = "jobcenter-prop"
purpose = "eingliederung"
legal_basis = "consent"
[delivery]
kind = "pull"
[route]
programs = ["sgb2"]
[fields]
"client.identity" = "keep"
"client.address" = "keep"
"case" = "keep"
"services" = "keep"
"#;

const STATUTE_POLICY: &str = r#"
id = "statistik-prop"
purpose = "statistik"
legal_basis = "statute"
citation = "§ 51b SGB II"
[delivery]
kind = "pull"
[route]
programs = ["sgb2"]
[fields]
"client.birth_date" = "generalise:age_band"
"client.sex" = "keep"
"#;

fn check_no_valid_consent(base: &Input, flawed: &[FlawedConsent]) -> Result<(), TestCaseError> {
    let consent_policy = Arc::new(Policy::from_text("jc.toml", CONSENT_POLICY).unwrap());
    let statute_policy = Arc::new(Policy::from_text("st.toml", STATUTE_POLICY).unwrap());
    let router = Router::new(vec![
        Recipient {
            policy: consent_policy,
            key: key_for("jc", 1),
        },
        Recipient {
            policy: statute_policy,
            key: key_for("st", 2),
        },
    ]);

    let input = with_consents(base, flawed, false);
    let routed = route(&router, &input);
    let to_jc: Vec<_> = routed
        .items
        .iter()
        .filter(|i| i.recipient == RECIPIENT)
        .collect();
    prop_assert!(
        to_jc.is_empty(),
        "routed under {:?} though no consent holds: {:?}",
        to_jc[0].consent_id,
        input.record.consents
    );
    let c001: Vec<_> = routed
        .notes
        .iter()
        .filter(|n| n.code == Code::C001)
        .map(|n| n.recipient.as_str())
        .collect();
    prop_assert_eq!(c001, vec![RECIPIENT]);
    // The statute recipient does not care.
    prop_assert_eq!(
        routed
            .items
            .iter()
            .filter(|i| i.recipient == "statistik-prop")
            .count(),
        1
    );
    // Withdrawn consents (record or recorded, on or before D) are reported for revocation.
    let t = today();
    let expect: BTreeSet<String> = input
        .record
        .consents
        .iter()
        .filter(|c| {
            [c.withdrawn_on.as_deref(), recorded(&input, c)]
                .into_iter()
                .flatten()
                .any(|w| parse_day(w) <= t)
        })
        .map(|c| c.consent_id.clone())
        .collect();
    let got: BTreeSet<String> = routed.withdrawn.iter().cloned().collect();
    prop_assert_eq!(got, expect);

    // Control: without the first consent's defect the record does go out, under that consent.
    let repaired = with_consents(base, flawed, true);
    let routed = route(&router, &repaired);
    let ids: Vec<_> = routed
        .items
        .iter()
        .filter(|i| i.recipient == RECIPIENT)
        .map(|i| i.consent_id.clone())
        .collect();
    prop_assert_eq!(
        ids,
        vec![Some(repaired.record.consents[0].consent_id.clone())],
        "the repaired consent {:?} does not route",
        &repaired.record.consents[0]
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Properties 3 and 4
// ---------------------------------------------------------------------------------------------

fn secret() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 32..=64)
}

const EVERYTHING_PSEUDONYMISED: &str = r#"
purpose = "statistik"
legal_basis = "statute"
citation = "§ 51b SGB II; Art. 9 Abs. 2 lit. h DSGVO"
special_categories = true
[delivery]
kind = "pull"
[route]
programs = ["sgb2"]
[fields]
"client.identity" = "pseudonymise"
"client.address" = "pseudonymise"
"client.contact" = "pseudonymise"
"client.education" = "pseudonymise"
"case" = "pseudonymise"
"services" = "pseudonymise"
"sensitive" = "pseudonymise"
"client.linkage_key" = "pseudonymise"
"consents[].consent_id" = "pseudonymise"
"consents[].granted_on" = "pseudonymise"
"#;

const MULTI: &[&str] = &["rcpt-a", "rcpt-b", "rcpt-c"];

proptest! {
    #![proptest_config(config(1000))]

    /// 1. No output holds a field value that the policy and consent do not allow; under
    /// consent without a valid one nothing goes out and the receipt says `C001`.
    #[test]
    fn nothing_leaves_without_a_rule(spec in policy_spec(RECIPIENT), input in input(&[RECIPIENT])) {
        check_disclosure(&spec, &input)?;
    }
}

proptest! {
    #![proptest_config(config(500))]

    /// 1b. The compiled projection the router writes is byte for byte the reference view
    /// (`consent::apply`, a filter over the record's JSON tree), under no consent and under each
    /// of the record's consents.
    #[test]
    fn projections_equal_the_reference_view(spec in policy_spec(RECIPIENT), input in input(&[RECIPIENT])) {
        if let Some(policy) = load(&spec)? {
            let key = key_for(KID, 3);
            let record = &input.record;
            let scopes = std::iter::once(None).chain(record.consents.iter().map(Some));
            for consent in scopes {
                let reference = serde_json::Value::Object(weiche::consent::apply(&policy, &key, record, consent)).to_string();
                let record_ref = key.field("source.record_id", VENDOR, &record.source.record_id);
                let mut out = Vec::new();
                policy.projection(consent).write(&mut out, record, &key, &policy.version, consent, &record_ref);
                prop_assert_eq!(String::from_utf8(out).unwrap(), reference);
            }
        }
    }

    /// 2. Withdrawn (in the record or recorded), expired, not yet granted (or otherwise
    /// non-matching) consents never let a record through to a consent-based recipient.
    #[test]
    fn invalid_consents_never_route(base in input(&[RECIPIENT]), flawed in vec(flawed_consent(), 1..=4)) {
        check_no_valid_consent(&base, &flawed)?;
    }

    /// 3a. Same key, same pseudonym; different secrets (even under the same kid) never give
    /// the same pseudonym for the same (path, value).
    #[test]
    fn pseudonyms_are_keyed(
        s1 in secret(),
        s2 in secret(),
        path in select(LEAF_PATHS.iter().copied().chain(["source.record_id"]).collect::<Vec<_>>()),
        vendor in "[a-z-]{1,12}",
        value in "\\PC{0,24}",
    ) {
        prop_assume!(s1 != s2);
        let k1 = PseudonymKey::new("ka", s1.clone());
        let k1_again = PseudonymKey::new("ka", s1);
        let k2_same_kid = PseudonymKey::new("ka", s2.clone());
        let k2 = PseudonymKey::new("kb", s2);
        let p1 = k1.field(path, &vendor, &value);
        prop_assert_eq!(&p1, &k1.field(path, &vendor, &value));
        prop_assert_eq!(&p1, &k1_again.field(path, &vendor, &value));
        prop_assert!(p1.starts_with("p1.ka.") && p1.len() == "p1.ka.".len() + 32, "{}", p1);
        prop_assert_ne!(&p1, &k2_same_kid.field(path, &vendor, &value));
        prop_assert_ne!(&p1[6..], &k2.field(path, &vendor, &value)[6..]);
    }
}

proptest! {
    #![proptest_config(config(128))]

    /// 3b. Two recipients with different keys: no pseudonym in one's output occurs in the
    /// other's, while each recipient's own pseudonyms are reproducible.
    #[test]
    fn recipients_cannot_join(input in input(&["rcpt-a"]), s1 in secret(), s2 in secret()) {
        prop_assume!(s1 != s2);
        let policy = |id: &str| {
            Arc::new(Policy::from_text("p.toml", &format!("id = \"{id}\"\n{EVERYTHING_PSEUDONYMISED}")).unwrap())
        };
        let (pa, pb) = (policy("rcpt-a"), policy("rcpt-b"));
        let router = Router::new(vec![
            Recipient { policy: pa.clone(), key: PseudonymKey::new(KID, s1.clone()) },
            Recipient { policy: pb.clone(), key: PseudonymKey::new(KID, s2) },
        ]);
        let routed = route(&router, &input);
        prop_assert_eq!(routed.items.len(), 2);
        let (_, a) = mask(&routed.items[0].body, &pa.version, &[KID])?;
        let (_, b) = mask(&routed.items[1].body, &pb.version, &[KID])?;
        prop_assert!(a.len() >= 8, "too few pseudonyms: {}", routed.items[0].body);
        let a: BTreeSet<_> = a.into_iter().collect();
        let b: BTreeSet<_> = b.into_iter().collect();
        prop_assert!(a.is_disjoint(&b), "shared pseudonyms {:?}", a.intersection(&b).collect::<Vec<_>>());
        prop_assert_ne!(&routed.items[0].record_ref, &routed.items[1].record_ref);
        // Determinism of the same key: a fresh router with the same secret gives the same.
        let again = Router::new(vec![Recipient { policy: pa, key: PseudonymKey::new(KID, s1) }]);
        prop_assert_eq!(&route(&again, &input).items[0].body, &routed.items[0].body);
    }
}

proptest! {
    #![proptest_config(config(300))]

    /// 4. Routing is deterministic: the same input gives byte-identical items, notes and audit
    /// events, also from a router built afresh from the same policy texts and keys.
    #[test]
    fn routing_is_deterministic(
        specs in vec((0usize..3).prop_flat_map(|i| policy_spec(MULTI[i])), 1..=3),
        input in input(MULTI),
    ) {
        let mut seen = BTreeSet::new();
        let specs: Vec<_> = specs.into_iter().filter(|s| seen.insert(s.id)).collect();
        let build = |specs: &[PolicySpec]| -> Router {
            Router::new(
                specs
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| {
                        Policy::from_text("p.toml", &s.text()).ok().map(|p| Recipient {
                            policy: Arc::new(p),
                            key: key_for(KID, i as u8),
                        })
                    })
                    .collect(),
            )
        };
        let router = build(&specs);
        prop_assume!(!router.recipients().is_empty());
        let first = route(&router, &input);
        let mut copy = input.clone();
        // A map with another hash seed and insertion order.
        let mut entries: Vec<_> = input.withdrawals.clone().into_iter().collect();
        entries.sort();
        entries.reverse();
        copy.withdrawals = entries.into_iter().collect();
        for other in [route(&router, &input), route(&build(&specs), &copy)] {
            let items = |r: &Routed| r.items.iter().map(|i| (i.recipient.clone(), i.record_ref.clone(), i.consent_id.clone(), i.body.clone())).collect::<Vec<_>>();
            prop_assert_eq!(items(&first), items(&other));
            let notes = |r: &Routed| r.notes.iter().map(|n| (n.recipient.clone(), n.code, n.message.clone())).collect::<Vec<_>>();
            prop_assert_eq!(notes(&first), notes(&other));
            let audit = |r: &Routed| r.audit.iter().map(|e| (e.kind.clone(), e.at_ms, e.body.clone())).collect::<Vec<_>>();
            prop_assert_eq!(audit(&first), audit(&other));
            prop_assert_eq!(&first.withdrawn, &other.withdrawn);
        }
    }
}
