//! Aggregates with disclosure control (consent-and-pseudonyms.md, "Aggregates with disclosure
//! control"; conformance-rules.md, "Aggregates").
//!
//! Three pure steps, no I/O:
//! 1. [`parse_by`] and [`check_allowed`]: which [`Dimension`]s a query asks for, and whether the
//!    recipient's policy lets each dimension's field through (else `A001`);
//! 2. [`count`]: canonical records (JSON) → [`Cell`]s, one per combination of dimension values that
//!    occurs (no zero cells are invented), in the dimensions' order;
//! 3. [`disclose`]: primary suppression (0 < n < k), secondary suppression per row, row totals and
//!    the grand total → [`Disclosed`].
//!
//! Value order ("code-list order") is the order of the rows of the code lists the
//! [`Validator`] loaded (the configured `schemas_dir`, or the built-in lists); `age_band` goes by
//! band, `nationality_group` is `DEU`, `other`, `unknown`; `municipality_key`, `district` and
//! values not in a list go lexicographically (after the listed codes).

use super::{Action, Policy, age_band, period_end};
use crate::validate::Validator;
use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::collections::HashMap;

/// The most dimensions one aggregate query may ask for.
pub const MAX_DIMENSIONS: usize = 4;

/// The age bands in their order.
pub const AGE_BANDS: [&str; 11] = [
    "0-2", "3-5", "6-9", "10-14", "15-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+",
];

/// The nationality groups in their order.
pub const NATIONALITY_GROUPS: [&str; 3] = ["DEU", "other", "unknown"];

/// A dimension an aggregate can be broken down by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dimension {
    /// `program` (envelope; code list `program`).
    Program,
    /// `client.sex` (code list `sex`).
    Sex,
    /// The age band of `client.birth_date` on the last day of the reporting month.
    AgeBand,
    /// `client.address.municipality_key` (lexicographic).
    MunicipalityKey,
    /// `client.address.district` (lexicographic).
    District,
    /// `client.nationality` as `DEU`, `other` or `unknown` (`XXX` or absent).
    NationalityGroup,
    /// `client.employment_status` (code list `employment_status`).
    EmploymentStatus,
    /// `client.school_qualification` (code list `school_qualification`).
    SchoolQualification,
    /// `services[].kind` (code list `service_kind`); a record counts once in every kind it has.
    ServiceKind,
}

impl Dimension {
    /// Every dimension, in the spec's order.
    pub const ALL: [Dimension; 9] = [
        Dimension::Program,
        Dimension::Sex,
        Dimension::AgeBand,
        Dimension::MunicipalityKey,
        Dimension::District,
        Dimension::NationalityGroup,
        Dimension::EmploymentStatus,
        Dimension::SchoolQualification,
        Dimension::ServiceKind,
    ];

    /// The dimension a query name stands for (exact, case-sensitive).
    pub fn parse(name: &str) -> Option<Dimension> {
        Dimension::ALL.into_iter().find(|d| d.name() == name)
    }

    /// The name as queries and answers spell it.
    pub fn name(self) -> &'static str {
        match self {
            Dimension::Program => "program",
            Dimension::Sex => "sex",
            Dimension::AgeBand => "age_band",
            Dimension::MunicipalityKey => "municipality_key",
            Dimension::District => "district",
            Dimension::NationalityGroup => "nationality_group",
            Dimension::EmploymentStatus => "employment_status",
            Dimension::SchoolQualification => "school_qualification",
            Dimension::ServiceKind => "service_kind",
        }
    }

    /// The canonical leaf path the recipient's policy must give a non-drop action; `None` for
    /// `program`, which is part of every item's envelope.
    pub fn field(self) -> Option<&'static str> {
        match self {
            Dimension::Program => None,
            Dimension::Sex => Some("client.sex"),
            Dimension::AgeBand => Some("client.birth_date"),
            Dimension::MunicipalityKey => Some("client.address.municipality_key"),
            Dimension::District => Some("client.address.district"),
            Dimension::NationalityGroup => Some("client.nationality"),
            Dimension::EmploymentStatus => Some("client.employment_status"),
            Dimension::SchoolQualification => Some("client.school_qualification"),
            Dimension::ServiceKind => Some("services[].kind"),
        }
    }

    /// The code list whose order the dimension's values follow, if any.
    pub fn codelist(self) -> Option<&'static str> {
        match self {
            Dimension::Program => Some("program"),
            Dimension::Sex => Some("sex"),
            Dimension::EmploymentStatus => Some("employment_status"),
            Dimension::SchoolQualification => Some("school_qualification"),
            Dimension::ServiceKind => Some("service_kind"),
            Dimension::AgeBand
            | Dimension::MunicipalityKey
            | Dimension::District
            | Dimension::NationalityGroup => None,
        }
    }

    /// The position of a value in the dimension's fixed order (code list, bands, groups);
    /// `None` for values without one.
    fn rank(self, codes: &Validator, value: &str) -> Option<usize> {
        match self {
            Dimension::AgeBand => AGE_BANDS.iter().position(|b| *b == value),
            Dimension::NationalityGroup => NATIONALITY_GROUPS.iter().position(|g| *g == value),
            _ => self
                .codelist()
                .and_then(|list| codes.code_rank(list, value)),
        }
    }

    /// Orders two values of this dimension: the fixed order first (code lists as `codes` loaded
    /// them), then values outside it lexicographically, then an absent value (`None`) last.
    pub fn compare(self, codes: &Validator, a: Option<&str>, b: Option<&str>) -> Ordering {
        match (a, b) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(a), Some(b)) => match (self.rank(codes, a), self.rank(codes, b)) {
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => a.cmp(b),
            },
        }
    }
}

/// Why a `by` parameter is not acceptable (answered `R400`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ByError {
    /// No dimension, or an empty entry between commas.
    #[error("by must name 1 to {MAX_DIMENSIONS} dimensions, separated by commas")]
    Empty,
    /// More than [`MAX_DIMENSIONS`].
    #[error("by names more than {MAX_DIMENSIONS} dimensions")]
    TooMany,
    /// A name that is no dimension (shortened for the echo).
    #[error(
        "unknown dimension '{0}' (known: program, sex, age_band, municipality_key, district, nationality_group, employment_status, school_qualification, service_kind)"
    )]
    Unknown(String),
    /// The same dimension twice.
    #[error("dimension '{0}' is named twice")]
    Repeated(&'static str),
}

/// Parses `by=d1,d2,…`: 1 to [`MAX_DIMENSIONS`] distinct, known dimension names.
pub fn parse_by(by: &str) -> Result<Vec<Dimension>, ByError> {
    let mut out: Vec<Dimension> = Vec::new();
    for name in by.split(',') {
        let name = name.trim();
        if name.is_empty() {
            return Err(ByError::Empty);
        }
        let d =
            Dimension::parse(name).ok_or_else(|| ByError::Unknown(crate::catalogue::echo(name)))?;
        if out.contains(&d) {
            return Err(ByError::Repeated(d.name()));
        }
        out.push(d);
        if out.len() > MAX_DIMENSIONS {
            return Err(ByError::TooMany);
        }
    }
    Ok(out)
}

/// True for a reporting month `YYYY-MM` (four digits, a dash, a month `01`–`12`).
pub fn valid_period(period: &str) -> bool {
    let b = period.as_bytes();
    b.len() == 7
        && b[4] == b'-'
        && b[..4].iter().chain(&b[5..]).all(u8::is_ascii_digit)
        && period[5..]
            .parse::<u32>()
            .is_ok_and(|m| (1..=12).contains(&m))
        && period_end(period).is_some()
}

/// The first dimension the policy does not allow (its field's action is drop), if any.
pub fn check_allowed(policy: &Policy, by: &[Dimension]) -> Result<(), Dimension> {
    match by
        .iter()
        .find(|d| d.field().is_some_and(|f| policy.action(f) == Action::Drop))
    {
        Some(d) => Err(*d),
        None => Ok(()),
    }
}

/// One cell of an aggregate: a combination of dimension values and how many records have it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// One value per dimension, in the order of `by`; `None` when the record has no value
    /// (published as JSON `null`).
    pub key: Vec<Option<String>>,
    /// Number of records.
    pub count: u64,
}

/// Counts canonical records (JSON of [`crate::model::CanonicalRecord`]) of reporting month
/// `period` into cells, ordered by the dimensions' orders (first dimension first).
///
/// A record counts once in its cell; for `service_kind` once in every distinct kind it has, and
/// not at all when it has no services. An absent optional value (address, employment status,
/// school qualification) counts under `None`. Where the policy generalises a field to a prefix
/// (`generalise:prefix:N`, e.g. on `municipality_key`), the value is cut the same way, so an
/// aggregate never shows more than the recipient's records would.
pub fn count(
    by: &[Dimension],
    period: &str,
    policy: &Policy,
    records: &[Value],
    codes: &Validator,
) -> Vec<Cell> {
    let end = period_end(period);
    let mut counts: HashMap<Vec<Option<String>>, u64> = HashMap::new();
    for record in records {
        let values: Vec<Vec<Option<String>>> = by
            .iter()
            .map(|d| {
                let mut vs = values_of(*d, record, end);
                if let Some(Action::Prefix(n)) = d.field().map(|f| policy.action(f)) {
                    for v in vs.iter_mut().flatten() {
                        *v = v.chars().take(n).collect();
                    }
                }
                vs
            })
            .collect();
        // Every combination (only service_kind can have more than one value).
        let mut keys: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(by.len())];
        for vs in &values {
            keys = keys
                .iter()
                .flat_map(|k| {
                    vs.iter().map(move |v| {
                        let mut k = k.clone();
                        k.push(v.clone());
                        k
                    })
                })
                .collect();
        }
        for key in keys {
            *counts.entry(key).or_insert(0) += 1;
        }
    }
    let mut cells: Vec<Cell> = counts
        .into_iter()
        .map(|(key, count)| Cell { key, count })
        .collect();
    cells.sort_by(|a, b| compare_keys(by, codes, &a.key, &b.key));
    cells
}

/// Orders two cell keys dimension by dimension.
fn compare_keys(
    by: &[Dimension],
    codes: &Validator,
    a: &[Option<String>],
    b: &[Option<String>],
) -> Ordering {
    by.iter()
        .zip(a.iter().zip(b))
        .map(|(d, (x, y))| d.compare(codes, x.as_deref(), y.as_deref()))
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

/// A record's values for one dimension: exactly one, except for `service_kind` (its distinct
/// kinds, possibly none).
fn values_of(d: Dimension, record: &Value, end: Option<chrono::NaiveDate>) -> Vec<Option<String>> {
    let text = |path: &[&str]| -> Option<String> {
        let mut v = record;
        for p in path {
            v = v.get(p)?;
        }
        v.as_str().map(str::to_string)
    };
    let one = match d {
        Dimension::Program => text(&["program"]),
        Dimension::Sex => text(&["client", "sex"]),
        Dimension::AgeBand => text(&["client", "birth_date"])
            .zip(end)
            .and_then(|(b, end)| age_band(&b, end))
            .map(str::to_string),
        Dimension::MunicipalityKey => text(&["client", "address", "municipality_key"]),
        Dimension::District => text(&["client", "address", "district"]),
        Dimension::NationalityGroup => Some(
            match text(&["client", "nationality"]).as_deref() {
                Some("DEU") => "DEU",
                None | Some("XXX") => "unknown",
                Some(_) => "other",
            }
            .to_string(),
        ),
        Dimension::EmploymentStatus => text(&["client", "employment_status"]),
        Dimension::SchoolQualification => text(&["client", "school_qualification"]),
        Dimension::ServiceKind => {
            let mut kinds: Vec<Option<String>> = Vec::new();
            for s in record
                .get("services")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(kind) = s.get("kind").and_then(Value::as_str) {
                    let kind = Some(kind.to_string());
                    if !kinds.contains(&kind) {
                        kinds.push(kind);
                    }
                }
            }
            return kinds;
        }
    };
    vec![one]
}

/// A published cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedCell {
    /// One value per dimension, in the order of `by`.
    pub key: Vec<Option<String>>,
    /// The count; `None` when suppressed.
    pub count: Option<u64>,
    /// Whether the count is suppressed.
    pub suppressed: bool,
}

/// A row: the cells that share every dimension but the last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The values of every dimension but the last (empty with one dimension).
    pub key: Vec<Option<String>>,
    /// The sum of the row's cells; `None` when suppressed.
    pub total: Option<u64>,
    /// Whether the total is suppressed.
    pub suppressed: bool,
}

/// The grand total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Total {
    /// The sum of all cells; `None` when suppressed.
    pub total: Option<u64>,
    /// Whether the total is suppressed.
    pub suppressed: bool,
}

/// An aggregate after disclosure control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disclosed {
    /// The dimensions, in the order asked for.
    pub by: Vec<Dimension>,
    /// k (`min_cell`).
    pub k: u32,
    /// The cells, in the order they were given.
    pub cells: Vec<PublishedCell>,
    /// The rows, in order of first appearance.
    pub rows: Vec<Row>,
    /// The grand total.
    pub grand_total: Total,
}

impl Disclosed {
    /// `{"cells": [{key, count, suppressed}], "rows": [{key, total, suppressed}],
    /// "grand_total": {total, suppressed}}`, keys as objects `{dimension: value}`.
    pub fn to_json(&self) -> Value {
        let key = |values: &[Option<String>]| -> Value {
            let mut m = Map::new();
            for (d, v) in self.by.iter().zip(values) {
                m.insert(d.name().into(), v.clone().map_or(Value::Null, Value::from));
            }
            Value::Object(m)
        };
        let cells: Vec<Value> = self
            .cells
            .iter()
            .map(|c| serde_json::json!({"key": key(&c.key), "count": c.count, "suppressed": c.suppressed}))
            .collect();
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|r| serde_json::json!({"key": key(&r.key), "total": r.total, "suppressed": r.suppressed}))
            .collect();
        serde_json::json!({
            "cells": cells,
            "rows": rows,
            "grand_total": {"total": self.grand_total.total, "suppressed": self.grand_total.suppressed},
        })
    }
}

/// Disclosure control with k = `min_cell`, ties in the secondary suppression going by the last
/// dimension's order ([`Dimension::compare`]). See [`disclose_with`].
pub fn disclose(by: &[Dimension], k: u32, cells: Vec<Cell>, codes: &Validator) -> Disclosed {
    let last = by.last().copied();
    disclose_with(by, k, cells, |a, b| match last {
        Some(d) => d.compare(codes, a, b),
        None => Ordering::Equal,
    })
}

/// Disclosure control (conformance-rules.md, "Aggregates"), ties going by `tie_order` on the
/// last dimension's values:
/// 1. a cell with 0 < n < k is suppressed;
/// 2. once per row (the cells sharing every dimension but the last), if exactly one of its cells
///    is suppressed, the smallest non-zero, not yet suppressed other cell is suppressed too
///    (equal counts: the first in `tie_order`, then the first given);
/// 3. a row total is published if it is ≥ k and its row has no or at least two suppressed cells;
/// 4. zero cells are published as 0; the grand total is published if ≥ k.
///
/// Cells keep the order they are given in; rows are in order of first appearance. Cells are
/// never invented.
pub fn disclose_with(
    by: &[Dimension],
    k: u32,
    cells: Vec<Cell>,
    tie_order: impl Fn(Option<&str>, Option<&str>) -> Ordering,
) -> Disclosed {
    let min_cell = k;
    let k = u64::from(k);
    let prefix_len = by.len().saturating_sub(1);
    let prefix = |c: &Cell| c.key[..prefix_len.min(c.key.len())].to_vec();
    let last = |c: &Cell| -> Option<String> {
        if by.is_empty() {
            None
        } else {
            c.key.get(prefix_len).cloned().flatten()
        }
    };

    // Rows in order of first appearance, each with its cells' indices.
    let mut row_index: HashMap<Vec<Option<String>>, usize> = HashMap::new();
    let mut rows: Vec<(Vec<Option<String>>, Vec<usize>)> = Vec::new();
    for (i, c) in cells.iter().enumerate() {
        let key = prefix(c);
        let r = *row_index.entry(key.clone()).or_insert_with(|| {
            rows.push((key, Vec::new()));
            rows.len() - 1
        });
        rows[r].1.push(i);
    }

    // Step 1: primary suppression.
    let mut suppressed: Vec<bool> = cells.iter().map(|c| c.count > 0 && c.count < k).collect();

    // Step 2: secondary suppression, once per row.
    for (_, members) in &rows {
        if members.iter().filter(|&&i| suppressed[i]).count() != 1 {
            continue;
        }
        let pick = members
            .iter()
            .copied()
            .filter(|&i| !suppressed[i] && cells[i].count > 0)
            .min_by(|&a, &b| {
                cells[a]
                    .count
                    .cmp(&cells[b].count)
                    .then_with(|| tie_order(last(&cells[a]).as_deref(), last(&cells[b]).as_deref()))
            });
        if let Some(i) = pick {
            suppressed[i] = true;
        }
    }

    // Step 3: row totals.
    let rows: Vec<Row> = rows
        .into_iter()
        .map(|(key, members)| {
            let total: u64 = members.iter().map(|&i| cells[i].count).sum();
            let hidden = members.iter().filter(|&&i| suppressed[i]).count();
            let publish = total >= k && hidden != 1;
            Row {
                key,
                total: publish.then_some(total),
                suppressed: !publish,
            }
        })
        .collect();

    // Step 4: the grand total.
    let grand: u64 = cells.iter().map(|c| c.count).sum();
    let grand_total = Total {
        total: (grand >= k).then_some(grand),
        suppressed: grand < k,
    };

    let cells = cells
        .into_iter()
        .zip(suppressed)
        .map(|(c, s)| PublishedCell {
            key: c.key,
            count: (!s).then_some(c.count),
            suppressed: s,
        })
        .collect();
    Disclosed {
        by: by.to_vec(),
        k: min_cell,
        cells,
        rows,
        grand_total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The built-in code lists.
    fn codes() -> &'static Validator {
        static CODES: std::sync::OnceLock<Validator> = std::sync::OnceLock::new();
        CODES.get_or_init(|| Validator::embedded().unwrap())
    }

    /// The test vectors: the shared examples when present, and the repository's copy (which
    /// must exist).
    fn vectors() -> Vec<(String, Value)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let shared = root.join("../shared/examples/aggregates.json");
        let local = root.join("conformance-tests/vectors/aggregates.json");
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p)
                .ok()
                .map(|t| (p.display().to_string(), serde_json::from_str(&t).unwrap()))
        };
        let mut out: Vec<(String, Value)> = read(&shared).into_iter().collect();
        out.push(read(&local).expect("conformance-tests/vectors/aggregates.json"));
        out
    }

    fn cells_of(by: &[Dimension], cells: &Value) -> Vec<Cell> {
        cells
            .as_array()
            .unwrap()
            .iter()
            .map(|c| Cell {
                key: by
                    .iter()
                    .map(|d| c["key"][d.name()].as_str().map(str::to_string))
                    .collect(),
                count: c["count"].as_u64().unwrap(),
            })
            .collect()
    }

    #[test]
    fn every_vector_case() {
        for (file, doc) in vectors() {
            let cases = doc["cases"].as_array().unwrap();
            assert!(!cases.is_empty(), "{file} has no cases");
            for case in cases {
                let name = case["name"].as_str().unwrap_or("?");
                let by: Vec<&str> = case["by"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| b.as_str().unwrap())
                    .collect();
                let by = parse_by(&by.join(",")).unwrap();
                let k = case["k"].as_u64().unwrap() as u32;
                let out = disclose(&by, k, cells_of(&by, &case["cells"]), codes());
                assert_eq!(out.to_json(), case["expected"], "{file}: case '{name}'");
            }
        }
    }

    fn policy(fields: &str) -> Policy {
        let text = format!(
            r#"
id = "stat"
purpose = "statistik"
legal_basis = "statute"
citation = "§ 51b SGB II"
min_cell = 5
[delivery]
kind = "pull"
[route]
programs = ["sgb2"]
[fields]
{fields}
"#
        );
        Policy::from_text("test.toml", &text).unwrap()
    }

    fn record(
        program: &str,
        sex: &str,
        birth: &str,
        nationality: Option<&str>,
        kinds: &[&str],
    ) -> Value {
        let mut client = json!({"sex": sex, "birth_date": birth,
            "address": {"municipality_key": "05111000", "district": "Bilk"}});
        if let Some(n) = nationality {
            client["nationality"] = n.into();
        }
        let services: Vec<Value> = kinds
            .iter()
            .map(|k| json!({"kind": k, "start": "2026-01-01"}))
            .collect();
        json!({"program": program, "reporting_period": "2026-10", "client": client,
            "services": services})
    }

    #[test]
    fn parse_by_rules() {
        assert_eq!(
            parse_by("program,sex").unwrap(),
            vec![Dimension::Program, Dimension::Sex]
        );
        assert_eq!(parse_by(""), Err(ByError::Empty));
        assert_eq!(parse_by("sex,"), Err(ByError::Empty));
        assert_eq!(parse_by("sex,sex"), Err(ByError::Repeated("sex")));
        assert!(matches!(parse_by("sex,colour"), Err(ByError::Unknown(n)) if n == "colour"));
        assert_eq!(
            parse_by("program,sex,age_band,district,service_kind"),
            Err(ByError::TooMany)
        );
        assert_eq!(parse_by("program,sex,age_band,district").unwrap().len(), 4);
        let long = "x".repeat(500);
        let e = parse_by(&long).unwrap_err().to_string();
        assert!(e.len() < 400, "{e}");
    }

    #[test]
    fn periods() {
        assert!(valid_period("2026-10"));
        assert!(valid_period("2026-01"));
        assert!(!valid_period("2026-13"));
        assert!(!valid_period("2026-00"));
        assert!(!valid_period("2026-1"));
        assert!(!valid_period("26-10"));
        assert!(!valid_period("2026-10-01"));
        assert!(!valid_period("+026-10"));
    }

    #[test]
    fn allowed_dimensions_follow_the_policy() {
        let p = policy(
            r#""client.sex" = "keep"
"client.birth_date" = "generalise:age_band""#,
        );
        assert_eq!(
            check_allowed(
                &p,
                &[Dimension::Program, Dimension::Sex, Dimension::AgeBand]
            ),
            Ok(())
        );
        assert_eq!(
            check_allowed(&p, &[Dimension::Sex, Dimension::ServiceKind]),
            Err(Dimension::ServiceKind)
        );
        assert_eq!(
            check_allowed(&p, &[Dimension::NationalityGroup]),
            Err(Dimension::NationalityGroup)
        );
        let p = policy(r#""client.sex" = "drop""#);
        assert_eq!(check_allowed(&p, &[Dimension::Sex]), Err(Dimension::Sex));
        // Field groups count: client.education covers both education fields.
        let p = policy(r#""client.education" = "keep""#);
        assert_eq!(
            check_allowed(
                &p,
                &[Dimension::EmploymentStatus, Dimension::SchoolQualification]
            ),
            Ok(())
        );
    }

    #[test]
    fn counting_records() {
        let p = policy(r#""client.sex" = "keep""#);
        let records = vec![
            record("sgb8", "w", "2008-10-31", Some("DEU"), &["beratung"]),
            record("sgb2", "m", "2008-11-01", Some("XXX"), &[]),
            record(
                "sgb2",
                "w",
                "1961-05-05",
                None,
                &["aktivierung", "beratung", "beratung"],
            ),
            record("sgb2", "w", "1990", Some("TUR"), &["vermittlung"]),
        ];
        let cells = count(
            &[Dimension::Program, Dimension::Sex],
            "2026-10",
            &p,
            &records,
            codes(),
        );
        let got: Vec<(Vec<Option<&str>>, u64)> = cells
            .iter()
            .map(|c| (c.key.iter().map(|v| v.as_deref()).collect(), c.count))
            .collect();
        assert_eq!(
            got,
            vec![
                (vec![Some("sgb2"), Some("m")], 1),
                (vec![Some("sgb2"), Some("w")], 2),
                (vec![Some("sgb8"), Some("w")], 1),
            ]
        );

        let cells = count(&[Dimension::AgeBand], "2026-10", &p, &records, codes());
        let got: Vec<(Option<&str>, u64)> = cells
            .iter()
            .map(|c| (c.key[0].as_deref(), c.count))
            .collect();
        assert_eq!(
            got,
            vec![
                (Some("15-17"), 1),
                (Some("18-24"), 1),
                (Some("35-44"), 1),
                (Some("65+"), 1)
            ]
        );

        let cells = count(
            &[Dimension::NationalityGroup],
            "2026-10",
            &p,
            &records,
            codes(),
        );
        let got: Vec<(Option<&str>, u64)> = cells
            .iter()
            .map(|c| (c.key[0].as_deref(), c.count))
            .collect();
        assert_eq!(
            got,
            vec![(Some("DEU"), 1), (Some("other"), 1), (Some("unknown"), 2)]
        );

        // Once per distinct kind, code-list order; no services → no cell.
        let cells = count(
            &[Dimension::ServiceKind, Dimension::Sex],
            "2026-10",
            &p,
            &records,
            codes(),
        );
        let got: Vec<(Vec<Option<&str>>, u64)> = cells
            .iter()
            .map(|c| (c.key.iter().map(|v| v.as_deref()).collect(), c.count))
            .collect();
        assert_eq!(
            got,
            vec![
                (vec![Some("beratung"), Some("w")], 2),
                (vec![Some("vermittlung"), Some("w")], 1),
                (vec![Some("aktivierung"), Some("w")], 1),
            ]
        );
    }

    #[test]
    fn absent_values_and_prefixes() {
        let p = policy(
            r#""client.address.municipality_key" = "generalise:prefix:5"
"client.address.district" = "keep""#,
        );
        let mut no_address = record("sgb2", "w", "1990-01-01", None, &[]);
        no_address["client"]
            .as_object_mut()
            .unwrap()
            .remove("address");
        let records = vec![no_address, record("sgb2", "m", "1990-01-01", None, &[])];
        let cells = count(
            &[Dimension::MunicipalityKey],
            "2026-10",
            &p,
            &records,
            codes(),
        );
        let got: Vec<(Option<&str>, u64)> = cells
            .iter()
            .map(|c| (c.key[0].as_deref(), c.count))
            .collect();
        assert_eq!(got, vec![(Some("05111"), 1), (None, 1)]);
        let out = disclose(
            &[Dimension::District],
            1,
            count(&[Dimension::District], "2026-10", &p, &records, codes()),
            codes(),
        );
        assert_eq!(
            out.to_json()["cells"],
            json!([
                {"key": {"district": "Bilk"}, "count": 1, "suppressed": false},
                {"key": {"district": null}, "count": 1, "suppressed": false},
            ])
        );
    }

    #[test]
    fn code_list_order_comes_from_the_genericode_files() {
        // The ordered lists are the validator's, every row of each file in file order.
        for d in [
            Dimension::Program,
            Dimension::Sex,
            Dimension::EmploymentStatus,
            Dimension::SchoolQualification,
            Dimension::ServiceKind,
        ] {
            let list = d.codelist().unwrap();
            let text = std::fs::read_to_string(format!(
                "{}/schemas/codelists/{list}.gc",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap();
            let ordered = codes().codes_in_order(list).unwrap();
            assert_eq!(ordered.len(), text.matches("<Row>").count(), "{list}");
            for (i, code) in ordered.iter().enumerate() {
                assert_eq!(codes().code_rank(list, code), Some(i), "{list}: {code}");
            }
        }
        assert_eq!(codes().codes_in_order("sex").unwrap(), ["m", "w", "d", "x"]);
        let d = Dimension::ServiceKind;
        assert_eq!(
            d.compare(codes(), Some("vermittlung"), Some("aktivierung")),
            Ordering::Less
        );
        assert_eq!(
            d.compare(codes(), Some("sonstige"), Some("zzz")),
            Ordering::Less
        );
        assert_eq!(d.compare(codes(), Some("zzz"), None), Ordering::Less);
        let a = Dimension::AgeBand;
        assert_eq!(
            a.compare(codes(), Some("6-9"), Some("10-14")),
            Ordering::Less
        );
        let n = Dimension::NationalityGroup;
        assert_eq!(
            n.compare(codes(), Some("unknown"), Some("other")),
            Ordering::Greater
        );
        let m = Dimension::MunicipalityKey;
        assert_eq!(
            m.compare(codes(), Some("05111000"), Some("05113000")),
            Ordering::Less
        );
    }

    #[test]
    fn secondary_ties_go_by_code_list_then_lexicographic() {
        let by = [Dimension::District];
        let cell = |d: &str, n| Cell {
            key: vec![Some(d.to_string())],
            count: n,
        };
        let out = disclose(
            &by,
            5,
            vec![cell("c", 9), cell("b", 6), cell("a", 6), cell("z", 2)],
            codes(),
        );
        let hidden: Vec<bool> = out.cells.iter().map(|c| c.suppressed).collect();
        assert_eq!(hidden, [false, false, true, true]);
        assert_eq!(out.rows[0].total, Some(23));
        // Nothing below k: everything published, zero cells as 0.
        let out = disclose(&by, 5, vec![cell("a", 5), cell("b", 0)], codes());
        assert_eq!(out.cells[1].count, Some(0));
        assert_eq!(out.grand_total.total, Some(5));
        // Nothing at all.
        let out = disclose(&by, 5, Vec::new(), codes());
        assert!(out.cells.is_empty() && out.rows.is_empty());
        assert_eq!(
            out.grand_total,
            Total {
                total: None,
                suppressed: true
            }
        );
    }

    #[test]
    fn rows_are_per_prefix_and_secondary_runs_once_per_row() {
        let by = [Dimension::Program, Dimension::Sex];
        let cell = |p: &str, s: &str, n| Cell {
            key: vec![Some(p.to_string()), Some(s.to_string())],
            count: n,
        };
        let out = disclose(
            &by,
            3,
            vec![
                cell("sgb2", "m", 1),
                cell("sgb2", "w", 4),
                cell("sgb2", "d", 3),
                cell("sgb3", "m", 10),
            ],
            codes(),
        );
        let counts: Vec<Option<u64>> = out.cells.iter().map(|c| c.count).collect();
        // sgb2: m=1 primary; smallest other non-zero is d=3 (not w=4).
        assert_eq!(counts, [None, Some(4), None, Some(10)]);
        assert_eq!(out.rows.len(), 2);
        assert_eq!(out.rows[0].total, Some(8));
        assert_eq!(out.rows[1].total, Some(10));
        assert_eq!(
            out.to_json()["rows"][1],
            json!({"key": {"program": "sgb3"}, "total": 10, "suppressed": false})
        );
    }
}
