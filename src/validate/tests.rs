//! Unit tests of the validation stage: every record-level code, W001, the birth-date window, the
//! loaders and their error messages.

use super::*;
use crate::adapt::Draft;
use serde_json::{Map, Value, json};
use std::sync::OnceLock;

fn validator() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| Validator::embedded().expect("embedded schema loads"))
}

/// A complete, valid record (the first record of the xsozial-lieferung basic example).
fn good() -> Value {
    json!({
        "schema_version": "1.0",
        "source": {"vendor": "demo-vendor", "format": "xsozial-lieferung", "record_id": "F-2026-0101",
                   "delivery_id": "00000000-0000-0000-0000-000000000000"},
        "reporting_period": "2026-10",
        "program": "sgb2",
        "client": {"client_id": "K-100234", "family_name": "Yılmaz", "given_names": "Ayşe",
                   "birth_date": "1988-04-12", "sex": "w", "nationality": "TUR",
                   "household_id": "BG-40227-0815", "household_role": "antragsteller",
                   "address": {"street": "Kölner Straße", "house_number": "212", "postal_code": "40227",
                               "municipality_key": "05111000", "district": "Oberbilk"},
                   "contact": {"phone": "0211 5550147", "email": "ayse.yilmaz@example.org"},
                   "school_qualification": "realschule", "employment_status": "arbeitslos"},
        "case": {"case_id": "F-2026-0101", "opened_on": "2025-11-03", "unit": "Team Oberbilk"},
        "services": [
            {"kind": "beratung", "legal_basis": "SGB II § 16a", "start": "2025-11-10", "hours_per_week": 2},
            {"kind": "aktivierung", "legal_basis": "SGB II § 16 Abs. 1 i. V. m. § 45 SGB III",
             "start": "2026-09-01", "end": "2026-12-18", "hours_per_week": 19.5}
        ],
        "sensitive": {"child_protection_risk": "gelb"},
        "consents": [{"consent_id": "EW-0101-1", "purpose": "eingliederung", "recipient": "jobcenter-duesseldorf",
                      "fields": ["client.identity", "client.contact", "services"],
                      "granted_on": "2025-11-03", "valid_until": "2027-11-02"}]
    })
}

fn draft(v: Value) -> Draft {
    let mut d = Draft::new(1);
    let Value::Object(fields) = v else {
        panic!("not an object")
    };
    d.fields = fields;
    d
}

fn check(v: Value) -> Checked {
    validator().check(draft(v))
}

/// Sets (or with `Value::Null`, removes) a member by dotted path; `services.1.end` indexes arrays.
fn with(mut v: Value, path: &str, value: Value) -> Value {
    let parts: Vec<&str> = path.split('.').collect();
    let (last, parents) = parts.split_last().unwrap();
    let mut cur = &mut v;
    for p in parents {
        cur = match p.parse::<usize>() {
            Ok(i) => &mut cur[i],
            Err(_) => cur.as_object_mut().unwrap().entry(*p).or_insert(json!({})),
        };
    }
    let obj = cur.as_object_mut().unwrap();
    if value.is_null() {
        obj.remove(*last);
    } else {
        obj.insert(last.to_string(), value);
    }
    v
}

fn codes(c: &Checked) -> Vec<(String, String)> {
    c.errors
        .iter()
        .map(|e| (e.code.to_string(), e.field.clone().unwrap_or_default()))
        .collect()
}

/// Asserts exactly one error, with this code, field and (when given) message.
fn only_error(c: &Checked, code: Code, field: &str, message: Option<&str>) {
    assert_eq!(
        codes(c),
        vec![(code.to_string(), field.to_string())],
        "{:?}",
        c.errors.iter().map(|e| &e.message).collect::<Vec<_>>()
    );
    assert!(c.record.is_none());
    if let Some(m) = message {
        assert_eq!(c.errors[0].message, m);
    }
}

#[test]
fn validator_is_send_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Validator>();
    assert_send_sync::<Checked>();
}

#[test]
fn embedded_loads_all_code_lists() {
    let v = validator();
    let ids = v.codelist_ids();
    let names: Vec<&str> = ids.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "employment_status",
            "household_role",
            "nationality",
            "program",
            "purpose",
            "risk_level",
            "school_qualification",
            "service_kind",
            "sex",
            "substance"
        ]
    );
    for (name, uri, version) in &ids {
        assert_eq!(uri, &format!("urn:weiche:codeliste:{name}"));
        assert_eq!(version, "1");
    }
    let nationality = v.list("nationality").unwrap();
    assert_eq!(nationality.codes.len(), 250);
    for c in [
        "TUR", "MAR", "UKR", "DEU", "POL", "ROU", "SYR", "AFG", "IRQ", "ITA", "LBN", "XXX",
    ] {
        assert!(v.has_code("nationality", c), "{c}");
    }
    assert!(!v.has_code("nationality", "deu"));
    assert!(!v.has_code("nationality", "DDR"));
    assert!(v.has_code("sex", "d"));
    assert!(!v.has_code("sex", "f"));
    assert!(!v.has_code("no-such-list", "d"));
    let lens: Vec<usize> = [
        "program",
        "sex",
        "household_role",
        "school_qualification",
        "employment_status",
        "service_kind",
        "risk_level",
        "substance",
        "purpose",
    ]
    .iter()
    .map(|n| v.list(n).unwrap().codes.len())
    .collect();
    assert_eq!(lens, [6, 4, 4, 8, 7, 12, 3, 9, 5]);
}

#[test]
fn code_list_paths_come_from_the_schema() {
    let v = validator();
    let mut paths: Vec<(String, &str)> = v
        .codelist_fields
        .iter()
        .map(|f| (f.path.pattern(), v.lists[f.list].name.as_str()))
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        vec![
            ("client.employment_status".to_string(), "employment_status"),
            ("client.household_role".to_string(), "household_role"),
            ("client.nationality".to_string(), "nationality"),
            (
                "client.school_qualification".to_string(),
                "school_qualification"
            ),
            ("client.sex".to_string(), "sex"),
            ("consents[].purpose".to_string(), "purpose"),
            ("program".to_string(), "program"),
            ("sensitive.child_protection_risk".to_string(), "risk_level"),
            ("sensitive.primary_substance".to_string(), "substance"),
            ("services[].kind".to_string(), "service_kind"),
        ]
    );
    let mut dates: Vec<String> = v.date_fields.iter().map(FieldPath::pattern).collect();
    dates.sort();
    assert_eq!(
        dates,
        [
            "case.closed_on",
            "case.opened_on",
            "consents[].granted_on",
            "consents[].valid_until",
            "consents[].withdrawn_on",
            "services[].end",
            "services[].start"
        ]
    );
}

#[test]
fn load_dir_reads_the_repository_schemas() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let v = Validator::load_dir(&dir).unwrap();
    assert_eq!(v.codelist_ids(), validator().codelist_ids());
    // The repository root is accepted as well.
    let v = Validator::load_dir(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
    assert_eq!(v.codelist_ids().len(), 10);
}

#[test]
fn a_good_record_passes_and_round_trips() {
    let c = check(good());
    assert!(c.errors.is_empty(), "{:?}", codes(&c));
    assert!(c.warnings.is_empty());
    let record = c.record.unwrap();
    assert_eq!(serde_json::to_value(&record).unwrap(), good());
    assert_eq!(
        serde_json::to_string(&record).unwrap(),
        serde_json::to_string(&good()).unwrap(),
        "key order is the model's"
    );
}

#[test]
fn minimal_record_passes() {
    let v = json!({
        "schema_version": "1.0",
        "source": {"vendor": "v", "format": "f", "record_id": "r", "delivery_id": "d"},
        "reporting_period": "2026-10",
        "program": "sucht",
        "client": {"client_id": "c", "family_name": "Li", "birth_date": "2026-10-31", "sex": "x"},
        "case": {"case_id": "r", "opened_on": "2026-10-01"}
    });
    let c = check(v);
    assert!(c.errors.is_empty(), "{:?}", codes(&c));
    assert!(c.record.is_some());
}

#[test]
fn f001_required_field_missing() {
    let c = check(with(good(), "client.family_name", Value::Null));
    only_error(
        &c,
        Code::F001,
        "client.family_name",
        Some("required field client.family_name is missing"),
    );

    let c = check(with(good(), "services.1.start", Value::Null));
    only_error(&c, Code::F001, "services[1].start", None);

    let c = check(with(good(), "consents.0.fields", Value::Null));
    only_error(&c, Code::F001, "consents[0].fields", None);
}

#[test]
fn f001_missing_case_number_is_one_error_on_record_id() {
    let v = with(good(), "source.record_id", Value::Null);
    let v = with(v, "case.case_id", Value::Null);
    let c = check(v);
    only_error(
        &c,
        Code::F001,
        "source.record_id",
        Some("required field source.record_id is missing"),
    );
    // With the record id present, a missing case id is reported on its own.
    let c = check(with(good(), "case.case_id", Value::Null));
    only_error(&c, Code::F001, "case.case_id", None);
}

#[test]
fn f001_missing_object_names_its_required_members() {
    let c = check(with(good(), "client", Value::Null));
    let fields: Vec<String> = codes(&c).into_iter().map(|(_, f)| f).collect();
    assert_eq!(
        fields,
        [
            "client.client_id",
            "client.family_name",
            "client.birth_date",
            "client.sex"
        ]
    );
    assert!(c.errors.iter().all(|e| e.code == Code::F001));
}

#[test]
fn f002_dates() {
    let c = check(with(good(), "client.birth_date", json!("1990-02-30")));
    only_error(
        &c,
        Code::F002,
        "client.birth_date",
        Some("not a date YYYY-MM-DD, YYYY-MM or YYYY: a date with day 30 in February"),
    );
    let c = check(with(good(), "case.opened_on", json!("1990-02-30")));
    only_error(
        &c,
        Code::F002,
        "case.opened_on",
        Some("not a date YYYY-MM-DD: a date with day 30 in February"),
    );
    let c = check(with(good(), "services.1.end", json!("2026-6-1")));
    only_error(
        &c,
        Code::F002,
        "services[1].end",
        Some("not a date YYYY-MM-DD: a value of another form (8 characters: digits and '-')"),
    );
    let c = check(with(good(), "consents.0.valid_until", json!("2027-02-29")));
    only_error(
        &c,
        Code::F002,
        "consents[0].valid_until",
        Some(
            "not a date YYYY-MM-DD: a date with day 29 in February of a year that is not a leap year",
        ),
    );
    let c = check(with(good(), "case.opened_on", json!("2026-04-31")));
    only_error(
        &c,
        Code::F002,
        "case.opened_on",
        Some("not a date YYYY-MM-DD: a date with day 31 in April"),
    );
    let c = check(with(good(), "case.opened_on", json!("2026-13-01")));
    only_error(
        &c,
        Code::F002,
        "case.opened_on",
        Some("not a date YYYY-MM-DD: month 13 does not exist"),
    );
    let c = check(with(good(), "reporting_period", json!("2026-13")));
    only_error(
        &c,
        Code::F002,
        "reporting_period",
        Some("'2026-13' is not a month YYYY-MM"),
    );
    let c = check(with(good(), "client.birth_date", json!("12.04.1988")));
    only_error(
        &c,
        Code::F002,
        "client.birth_date",
        Some(
            "not a date YYYY-MM-DD, YYYY-MM or YYYY: a value of another form (10 characters: digits and '.')",
        ),
    );
}

#[test]
fn f002_formats() {
    let c = check(with(good(), "client.address.postal_code", json!("4022")));
    only_error(
        &c,
        Code::F002,
        "client.address.postal_code",
        Some("postal code: 5 digits expected, got 4"),
    );
    let c = check(with(
        good(),
        "client.address.municipality_key",
        json!("5111000"),
    ));
    only_error(&c, Code::F002, "client.address.municipality_key", None);
    for bad in ["a.example.org", "a@b@example.org"] {
        let c = check(with(good(), "client.contact.email", json!(bad)));
        only_error(&c, Code::F002, "client.contact.email", None);
    }
    let c = check(with(good(), "client.client_id", json!("k".repeat(65))));
    only_error(
        &c,
        Code::F002,
        "client.client_id",
        Some("client.client_id has 65 characters, more than 64"),
    );
    let c = check(with(good(), "client.household_id", json!("h".repeat(65))));
    only_error(&c, Code::F002, "client.household_id", None);
    let c = check(with(good(), "client.client_id", json!("k".repeat(64))));
    assert!(c.errors.is_empty());
}

#[test]
fn f002_names() {
    let c = check(with(good(), "client.family_name", json!("Müller2")));
    only_error(&c, Code::F002, "client.family_name", None);
    assert!(
        c.errors[0].message.contains("'2'"),
        "{}",
        c.errors[0].message
    );
    let c = check(with(good(), "client.given_names", json!("a".repeat(101))));
    only_error(&c, Code::F002, "client.given_names", None);
    for ok in [
        "Nguyễn Thị",
        "O'Neill-Smith",
        "St. John",
        "Κωνσταντίνος",
        "Çağlar",
    ] {
        let c = check(with(good(), "client.given_names", json!(ok)));
        assert!(c.errors.is_empty(), "{ok}: {:?}", codes(&c));
    }
}

#[test]
fn f002_wrong_json_type_and_unknown_field() {
    let c = check(with(good(), "services.0.hours_per_week", json!("20")));
    only_error(
        &c,
        Code::F002,
        "services[0].hours_per_week",
        Some("services[0].hours_per_week must be a number, not a string"),
    );
    let c = check(with(good(), "client.sex", json!(1)));
    only_error(&c, Code::F002, "client.sex", None);
    let c = check(with(good(), "client.birthplace", json!("Köln")));
    only_error(&c, Code::F002, "client.birthplace", None);
    let c = check(with(good(), "schema_version", json!("2.0")));
    only_error(&c, Code::F002, "schema_version", None);
}

#[test]
fn f003_code_lists() {
    let c = check(with(good(), "client.sex", json!("f")));
    only_error(
        &c,
        Code::F003,
        "client.sex",
        Some("the value (1 character: letters) is not in code list sex"),
    );
    let c = check(with(good(), "services.1.kind", json!("115")));
    only_error(
        &c,
        Code::F003,
        "services[1].kind",
        Some("'115' is not in code list service_kind"),
    );
    let c = check(with(good(), "program", json!("SGB XII")));
    only_error(&c, Code::F003, "program", None);
    let c = check(with(good(), "consents.0.purpose", json!("werbung")));
    only_error(&c, Code::F003, "consents[0].purpose", None);
    let c = check(with(
        good(),
        "sensitive.child_protection_risk",
        json!("grün"),
    ));
    only_error(&c, Code::F003, "sensitive.child_protection_risk", None);
}

#[test]
fn f003_nationality_is_upper_case_alpha3_or_xxx() {
    for ok in ["DEU", "XXX", "UKR", "SYR"] {
        let c = check(with(good(), "client.nationality", json!(ok)));
        assert!(c.errors.is_empty(), "{ok}");
    }
    for bad in ["deu", "DE", "DDR", "ZZZ", "Deu"] {
        let c = check(with(good(), "client.nationality", json!(bad)));
        only_error(&c, Code::F003, "client.nationality", None);
    }
}

#[test]
fn f003_consent_field_groups() {
    let v = with(
        good(),
        "consents.0.fields",
        json!(["client.identity", "client.name", "services"]),
    );
    let c = check(v);
    only_error(&c, Code::F003, "consents[0].fields[1]", None);
}

#[test]
fn f004_inconsistent_values() {
    let c = check(with(good(), "case.closed_on", json!("2025-11-02")));
    only_error(
        &c,
        Code::F004,
        "case.closed_on",
        Some("case closed before it was opened"),
    );
    let c = check(with(good(), "case.closed_on", json!("2025-11-03")));
    assert!(c.errors.is_empty(), "same day is fine");

    let c = check(with(good(), "services.1.end", json!("2026-08-31")));
    only_error(
        &c,
        Code::F004,
        "services[1].end",
        Some("service ends before it starts"),
    );

    let c = check(with(good(), "client.household_id", Value::Null));
    only_error(&c, Code::F004, "client.household_role", None);
}

#[test]
fn f004_birth_date_window() {
    let at = |birth: &str| check(with(good(), "client.birth_date", json!(birth)));
    // Reporting month 2026-10: its last day is 2026-10-31, minus 120 years 1906-10-31.
    for ok in [
        "2026-10-31",
        "2026-10",
        "2026",
        "1906-10-31",
        "1906-10",
        "1906",
    ] {
        let c = at(ok);
        assert!(c.errors.is_empty(), "{ok}: {:?}", codes(&c));
    }
    for bad in [
        "2026-11-01",
        "2026-11",
        "2027",
        "1906-10-30",
        "1906-09",
        "1905",
    ] {
        only_error(&at(bad), Code::F004, "client.birth_date", None);
    }
    // Partial dates warn even when the record is rejected.
    let c = at("2027");
    assert_eq!(c.warnings.len(), 1);
    assert_eq!(c.warnings[0].code, Code::W001);
}

#[test]
fn f006_out_of_range() {
    let c = check(with(good(), "services.0.hours_per_week", json!(120)));
    only_error(
        &c,
        Code::F006,
        "services[0].hours_per_week",
        Some("hours per week outside 0-80 (above the maximum)"),
    );
    let c = check(with(good(), "services.1.hours_per_week", json!(82.5)));
    only_error(
        &c,
        Code::F006,
        "services[1].hours_per_week",
        Some("hours per week outside 0-80 (above the maximum)"),
    );
    let c = check(with(good(), "services.0.hours_per_week", json!(-1)));
    only_error(
        &c,
        Code::F006,
        "services[0].hours_per_week",
        Some("hours per week outside 0-80 (below the minimum)"),
    );
    for ok in [json!(0), json!(80), json!(80.0), json!(0.5)] {
        let c = check(with(good(), "services.0.hours_per_week", ok.clone()));
        assert!(c.errors.is_empty(), "{ok}");
    }
}

#[test]
fn w001_partial_birth_date() {
    let c = check(with(good(), "client.birth_date", json!("1983")));
    assert!(c.errors.is_empty());
    assert!(c.record.is_some());
    assert_eq!(c.warnings.len(), 1);
    assert_eq!(c.warnings[0].code, Code::W001);
    assert_eq!(c.warnings[0].field.as_deref(), Some("client.birth_date"));
    assert_eq!(c.warnings[0].message, "partial birth date: the year only");

    let c = check(with(good(), "client.birth_date", json!("1992-07")));
    assert_eq!(
        c.warnings[0].message,
        "partial birth date: the year and month only"
    );
    assert_eq!(
        c.record.unwrap().client.birth_date.expose().as_str(),
        "1992-07"
    );

    // Also on a rejected record, and not twice when the mapping gave it already.
    let mut d = draft(with(
        with(good(), "client.birth_date", json!("1983")),
        "client.sex",
        json!("f"),
    ));
    d.issues.push(Issue::new(
        Code::W001,
        "client.birth_date",
        "partial birth date '00.00.1983'",
    ));
    let c = validator().check(d);
    assert_eq!(codes(&c), [("F003".to_string(), "client.sex".to_string())]);
    assert_eq!(c.warnings.len(), 1);
}

#[test]
fn mapping_issues_are_carried_over_and_not_repeated() {
    let mut d = draft(with(good(), "program", Value::Null));
    d.issues.push(Issue::new(
        Code::F003,
        "program",
        "division value 'SGB XII' is not in the mapping's value map",
    ));
    d.issues.push(Issue::new(
        Code::W002,
        "person.birthplace",
        "unknown field 'birthplace' ignored",
    ));
    let c = validator().check(d);
    only_error(
        &c,
        Code::F003,
        "program",
        Some("division value 'SGB XII' is not in the mapping's value map"),
    );
    assert_eq!(c.warnings.len(), 1);
    assert_eq!(c.warnings[0].code, Code::W002);

    // A mapping error on a field hides the rules' and the schema's errors on it.
    let mut d = draft(with(good(), "client.birth_date", json!("31.04.1990")));
    d.issues.push(Issue::new(
        Code::F002,
        "client.birth_date",
        "Geburtsdatum (10 characters: digits and '.') is not a valid date TT.MM.JJJJ",
    ));
    let c = validator().check(d);
    only_error(&c, Code::F002, "client.birth_date", None);
    assert!(c.errors[0].message.starts_with("Geburtsdatum"));

    // A mapping error on a service hides the missing-member error inside it.
    let mut d = draft(with(good(), "services.0.kind", Value::Null));
    d.issues.push(Issue::new(
        Code::F003,
        "services[0].kind",
        "Massnahme value '115' …",
    ));
    let c = validator().check(d);
    only_error(&c, Code::F003, "services[0].kind", None);

    // A mapping warning alone keeps the record.
    let mut d = draft(good());
    d.issues
        .push(Issue::new(Code::W002, "Faxnummer", "unknown column"));
    let c = validator().check(d);
    assert!(c.record.is_some());
    assert_eq!(c.warnings.len(), 1);
}

#[test]
fn every_error_of_a_record_is_listed_once_per_field_and_code() {
    let mut v = good();
    v = with(v, "client.family_name", Value::Null);
    v = with(v, "client.sex", json!("f"));
    v = with(v, "client.address.postal_code", json!("4022"));
    v = with(v, "case.closed_on", json!("2025-01-01"));
    v = with(v, "services.0.hours_per_week", json!(85));
    v = with(v, "services.1.end", json!("2026-02-30"));
    v = with(v, "client.nationality", json!("deu"));
    let c = check(v);
    let mut got = codes(&c);
    got.sort();
    let want: Vec<(String, String)> = [
        ("F001", "client.family_name"),
        ("F002", "client.address.postal_code"),
        ("F002", "services[1].end"),
        ("F003", "client.nationality"),
        ("F003", "client.sex"),
        ("F004", "case.closed_on"),
        ("F006", "services[0].hours_per_week"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn household_role_gets_both_code_list_and_consistency_errors() {
    let v = with(good(), "client.household_id", Value::Null);
    let c = check(with(v, "client.household_role", json!("chef")));
    let mut got = codes(&c);
    got.sort();
    assert_eq!(
        got,
        [
            ("F003".to_string(), "client.household_role".to_string()),
            ("F004".to_string(), "client.household_role".to_string())
        ]
    );
}

#[test]
fn empty_containers_are_errors_not_silent_output() {
    let c = check(with(good(), "client.contact", json!({})));
    only_error(&c, Code::F002, "client.contact", None);
}

#[test]
fn load_error_names_file_and_line() {
    let bad_json = "{\n  \"type\": \"object\",\n  \"properties\": {,}\n}\n";
    let e = Validator::from_sources(("my.schema.json", bad_json), &[]).unwrap_err();
    assert!(matches!(e, ValidateError::Json { line: 3, .. }), "{e:?}");
    assert!(e.to_string().starts_with("my.schema.json:3:"), "{e}");
    assert!(!e.to_string().contains("at line"), "{e}");

    // A code list that is not well-formed.
    let (name, text) = EMBEDDED_CODELISTS[8];
    assert!(name.ends_with("sex.gc"));
    let broken = text.replacen(
        "<SimpleValue>w</SimpleValue>",
        "<SimpleValue>w</SimpleValu>",
        1,
    );
    let line = 1 + text[..text.find("<SimpleValue>w<").unwrap()]
        .matches('\n')
        .count();
    let e = Validator::from_sources(EMBEDDED_SCHEMA, &[("lists/sex.gc", &broken)]).unwrap_err();
    assert!(
        e.to_string().starts_with(&format!("lists/sex.gc:{line}:")),
        "{e}"
    );

    // A schema annotation naming a list that is not loaded.
    let e = Validator::from_sources(EMBEDDED_SCHEMA, &EMBEDDED_CODELISTS[..8]).unwrap_err();
    let line = 1 + EMBEDDED_SCHEMA.1[..EMBEDDED_SCHEMA.1.find("\"x-codelist\": \"sex\"").unwrap()]
        .matches('\n')
        .count();
    assert!(
        e.to_string()
            .starts_with(&format!("schemas/canonical-record.schema.json:{line}:")),
        "{e}"
    );
    assert!(e.to_string().contains("x-codelist 'sex'"), "{e}");

    // Not a schema.
    let e = Validator::from_sources(
        (
            "s.json",
            "{\n  \"properties\": {\n    \"a\": {\"type\": 5}\n  }\n}",
        ),
        &[],
    )
    .unwrap_err();
    assert!(matches!(e, ValidateError::Schema { .. }), "{e:?}");
    assert!(e.to_string().starts_with("s.json:3: "), "{e}");
}

#[test]
fn load_dir_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let e = Validator::load_dir(dir.path()).unwrap_err();
    assert!(matches!(e, ValidateError::Io { .. }));
    assert!(e.to_string().contains(SCHEMA_FILE), "{e}");

    std::fs::write(dir.path().join(SCHEMA_FILE), EMBEDDED_SCHEMA.1).unwrap();
    std::fs::create_dir(dir.path().join(CODELIST_DIR)).unwrap();
    for (name, text) in EMBEDDED_CODELISTS {
        let file = name.rsplit('/').next().unwrap();
        std::fs::write(dir.path().join(CODELIST_DIR).join(file), text).unwrap();
    }
    assert!(Validator::load_dir(dir.path()).is_ok());
    let bad = dir.path().join(CODELIST_DIR).join("purpose.gc");
    std::fs::write(
        &bad,
        "<?xml version=\"1.0\"?>\n<CodeList>\n  <Identification>\n</CodeList>\n",
    )
    .unwrap();
    let e = Validator::load_dir(dir.path()).unwrap_err();
    assert!(
        e.to_string().starts_with(&format!("{}:4:", bad.display())),
        "{e}"
    );
}

#[test]
fn debug_output_shows_no_personal_data() {
    let c = check(with(good(), "client.sex", json!("f")));
    let shown = format!("{c:?} {:?}", validator());
    assert!(!shown.contains("Yılmaz"), "{shown}");
    assert!(!shown.contains("'f'"), "{shown}");
    let ok = check(good());
    let shown = format!("{ok:?}");
    assert!(
        !shown.contains("Yılmaz") && !shown.contains("1988-04-12"),
        "{shown}"
    );
}

#[test]
fn serde_failure_is_reported_not_panicked() {
    // A schema that lets through what the model does not know.
    let loose = r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"}"#;
    let v = Validator::from_sources(("loose.json", loose), &[]).unwrap();
    let mut fields = Map::new();
    fields.insert("surprise".into(), json!(1));
    let mut d = Draft::new(1);
    d.fields = fields;
    let c = v.check(d);
    assert!(c.record.is_none());
    assert_eq!(c.errors.len(), 1);
    assert_eq!(c.errors[0].code, Code::F002);
    assert_eq!(c.errors[0].field, None);
}

/// Throughput on good records (run with `cargo test --release -- --ignored --nocapture`).
#[test]
#[ignore]
fn throughput() {
    let v = validator();
    let n = 200_000;
    // Streaming, as the pipeline does: build a draft, check it, drop the result.
    let t = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(draft(good()));
    }
    let build = t.elapsed().as_secs_f64();
    let t = std::time::Instant::now();
    for _ in 0..n {
        assert!(v.check(draft(good())).record.is_some());
    }
    let s = t.elapsed().as_secs_f64() - build;
    println!("{n} records in {s:.3}s: {:.0} records/s", n as f64 / s);
}

#[test]
fn messages_quote_no_personal_value() {
    let cases = [
        ("client.family_name", json!("Kowalczyk, Anna")),
        ("client.given_names", json!("Zbigniew2")),
        ("client.birth_date", json!("1990-02-30")),
        ("client.birth_date", json!("2031-05-04")),
        ("client.address.postal_code", json!("4022x")),
        ("client.address.municipality_key", json!("0511100")),
        ("client.contact.email", json!("anna.kowalczyk.example.org")),
        ("client.sex", json!("weiblich")),
        ("client.nationality", json!("Polen")),
        ("sensitive.primary_substance", json!("Alkoholabhängigkeit")),
        ("case.opened_on", json!("16.02.2026")),
        ("client.client_id", json!("K".repeat(70))),
    ];
    for (field, value) in cases {
        let c = check(with(good(), field, value.clone()));
        assert!(!c.errors.is_empty(), "{field}: no error");
        let text = value.as_str().unwrap();
        for e in &c.errors {
            assert!(!e.message.contains(text), "{field}: {}", e.message);
        }
    }
    // Not personal: quoted as before.
    let c = check(with(good(), "program", json!("sgb12")));
    assert!(
        c.errors[0].message.contains("'sgb12'"),
        "{}",
        c.errors[0].message
    );
}
