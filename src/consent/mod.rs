//! Recipient policies, field actions and pseudonyms: nothing leaves Weiche unless a rule allows it.
//!
//! [`policy`] loads one policy per recipient; [`apply`] turns a canonical record into that
//! recipient's view (every field the policy does not name is dropped); [`pseudonym`] holds the
//! exact pseudonym and linkage-key algorithms.

pub mod aggregates;
pub mod policy;
pub mod projection;
pub mod pseudonym;

pub use policy::{Action, Policy, PolicyError};
pub use projection::Projection;
pub use pseudonym::PseudonymKey;

use crate::model::{CanonicalRecord, Consent};
use chrono::{Datelike, NaiveDate};
use serde_json::{Map, Value};

/// A recipient's view of one record: the envelope plus the fields its policy lets through.
///
/// This is the reference definition, a filter over the record's JSON tree. The router writes
/// views with the policy's compiled [`Projection`] instead, which tests prove equal to it byte
/// for byte (on every golden record and on generated records and policies).
///
/// Under a consent only the fields whose field group the consent lists go out (`consent`
/// `Some`); the envelope then names the consent.
pub fn apply(
    policy: &Policy,
    key: &PseudonymKey,
    record: &CanonicalRecord,
    consent: Option<&Consent>,
) -> Map<String, Value> {
    let tree = match serde_json::to_value(record) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let record_ref = key.field(
        "source.record_id",
        &record.source.vendor,
        &record.source.record_id,
    );
    apply_to(policy, key, record, &tree, consent, record_ref)
}

/// [`apply`] with what does not depend on the recipient made once by the caller: `tree`, the
/// record as a JSON object (`serde_json::to_value(record)`), and `record_ref`, the recipient's
/// pseudonym of the record id.
pub fn apply_to(
    policy: &Policy,
    key: &PseudonymKey,
    record: &CanonicalRecord,
    tree: &Map<String, Value>,
    consent: Option<&Consent>,
    record_ref: String,
) -> Map<String, Value> {
    let vendor = record.source.vendor.as_str();
    let mut out = Map::new();
    out.insert("type".into(), "record".into());
    out.insert("record_ref".into(), record_ref.into());
    out.insert("policy_version".into(), policy.version.clone().into());
    out.insert(
        "schema_version".into(),
        record.schema_version.clone().into(),
    );
    out.insert(
        "reporting_period".into(),
        record.reporting_period.clone().into(),
    );
    out.insert("program".into(), record.program.clone().into());
    let mut source = Map::new();
    source.insert("vendor".into(), vendor.into());
    source.insert("format".into(), record.source.format.clone().into());
    source.insert(
        "delivery_id".into(),
        record.source.delivery_id.clone().into(),
    );
    out.insert("source".into(), Value::Object(source));

    if let Some(c) = consent {
        out.insert("consent_id".into(), c.consent_id.clone().into());
    }
    let ctx = Ctx {
        consent,
        policy,
        key,
        vendor,
        period_end: period_end(&record.reporting_period),
    };
    let mut path = String::with_capacity(64);
    for section in ["client", "case", "services", "sensitive", "consents"] {
        if let Some(v) = tree.get(section) {
            path.clear();
            path.push_str(section);
            if let Some(filtered) = ctx.filter(&mut path, v) {
                out.insert(section.into(), filtered);
            }
        }
    }
    if effective_action(policy, consent, "client.linkage_key") == Action::Pseudonymise {
        let c = &record.client;
        let lk = key.linkage_key(
            c.family_name.expose(),
            c.given_names.as_ref().map(|g| g.expose().as_str()),
            c.birth_date.expose(),
        );
        let client = out
            .entry("client")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = client {
            m.insert("linkage_key".into(), lk.into());
        }
    }
    out
}

struct Ctx<'a> {
    consent: Option<&'a Consent>,
    policy: &'a Policy,
    key: &'a PseudonymKey,
    vendor: &'a str,
    period_end: Option<NaiveDate>,
}

impl Ctx<'_> {
    /// Filters a value at a canonical path (`path`, a buffer the walk extends and restores);
    /// `None` when nothing of it may go out.
    fn filter(&self, path: &mut String, value: &Value) -> Option<Value> {
        match value {
            Value::Object(m) => {
                let mut out = Map::new();
                let len = path.len();
                for (k, v) in m {
                    path.push('.');
                    path.push_str(k);
                    let f = self.filter(path, v);
                    path.truncate(len);
                    if let Some(f) = f {
                        out.insert(k.clone(), f);
                    }
                }
                (!out.is_empty()).then_some(Value::Object(out))
            }
            Value::Array(items) if path == "services" || path == "consents" => {
                let len = path.len();
                path.push_str("[]");
                let out: Vec<Value> = items.iter().filter_map(|v| self.filter(path, v)).collect();
                path.truncate(len);
                (!out.is_empty()).then_some(Value::Array(out))
            }
            leaf => self.leaf(path, leaf),
        }
    }

    fn leaf(&self, path: &str, value: &Value) -> Option<Value> {
        let text = || match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match effective_action(self.policy, self.consent, path) {
            Action::Drop => None,
            Action::Keep => Some(value.clone()),
            Action::Pseudonymise => Some(self.key.field(path, self.vendor, &text()).into()),
            Action::Year => Some(text().chars().take(4).collect::<String>().into()),
            Action::YearMonth => Some(text().chars().take(7).collect::<String>().into()),
            Action::Prefix(n) => Some(text().chars().take(n).collect::<String>().into()),
            Action::AgeBand => self
                .period_end
                .and_then(|end| age_band(&text(), end))
                .map(Value::from),
        }
    }
}

/// The field group a path counts in for consent (the linkage key is derived from identity).
fn consent_group(path: &str) -> Option<&'static str> {
    if path == "client.linkage_key" {
        Some("client.identity")
    } else {
        crate::model::field_group(path)
    }
}

/// The policy's action on a path, narrowed by a consent: under a consent a field goes out only
/// if its field group is among the consent's `fields`.
pub fn effective_action(policy: &Policy, consent: Option<&Consent>, path: &str) -> Action {
    let action = policy.action(path);
    match consent {
        None => action,
        Some(c) => match consent_group(path) {
            Some(g) if c.fields.iter().any(|f| f == g) => action,
            _ => Action::Drop,
        },
    }
}

/// Each field the recipient gets with its action (for the audit trail).
pub fn delivered_fields(policy: &Policy, consent: Option<&Consent>) -> Vec<(&'static str, Action)> {
    policy
        .actions
        .keys()
        .filter_map(|p| {
            let a = effective_action(policy, consent, p);
            (a != Action::Drop).then_some((*p, a))
        })
        .collect()
}

/// The audit field set of what the recipient gets under `consent` ([`delivered_fields`] with
/// their actions), made once per policy and consent scope with its [`Projection`].
pub fn delivered_field_set(
    policy: &Policy,
    consent: Option<&Consent>,
) -> std::sync::Arc<crate::store::FieldSet> {
    policy.projection(consent).field_set()
}

/// [`delivered_fields`] as the audit trail lists them.
pub(crate) fn delivered_field_actions(
    policy: &Policy,
    consent: Option<&Consent>,
) -> Vec<crate::audit::FieldAction> {
    delivered_fields(policy, consent)
        .into_iter()
        .map(|(path, a)| crate::audit::FieldAction {
            path: path.to_string(),
            action: a.name(),
        })
        .collect()
}

/// Field groups the policy would let through but the consent does not cover, among those the
/// record has data in (`C002`).
pub fn uncovered_groups(
    policy: &Policy,
    consent: &Consent,
    record: &CanonicalRecord,
) -> Vec<&'static str> {
    let c = &record.client;
    let present = |g: &str| match g {
        "client.identity" | "case" => true,
        "client.address" => c.address.is_some(),
        "client.contact" => c.contact.is_some(),
        "client.education" => c.school_qualification.is_some() || c.employment_status.is_some(),
        "services" => !record.services.is_empty(),
        "sensitive" => record.sensitive.is_some(),
        _ => false,
    };
    let mut groups: Vec<&'static str> = policy
        .actions
        .keys()
        .filter_map(|p| consent_group(p))
        .filter(|g| present(g) && !consent.fields.iter().any(|f| f == g))
        .collect();
    groups.dedup();
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// Whether a consent holds for a recipient on day `today` (consent-and-pseudonyms.md): purpose
/// and recipient (or `*`) match, granted on or before the day, not expired, not withdrawn on or
/// before the day — neither in the record nor by a recorded withdrawal (`withdrawn`).
pub fn consent_holds(
    consent: &Consent,
    policy: &Policy,
    today: NaiveDate,
    withdrawn: Option<&str>,
) -> bool {
    let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
    let granted = day(&consent.granted_on).is_some_and(|g| g <= today);
    let valid = consent
        .valid_until
        .as_deref()
        .is_none_or(|v| day(v).is_some_and(|v| v >= today));
    let not_withdrawn = |w: Option<&str>| w.is_none_or(|w| day(w).is_some_and(|w| w > today));
    consent.purpose == policy.file.purpose
        && (consent.recipient == policy.file.id || consent.recipient == "*")
        && granted
        && valid
        && not_withdrawn(consent.withdrawn_on.as_deref())
        && not_withdrawn(withdrawn)
}

/// Last day of a `YYYY-MM` month.
pub fn period_end(period: &str) -> Option<NaiveDate> {
    let (y, m) = period.split_once('-')?;
    let (y, m): (i32, u32) = (y.parse().ok()?, m.parse().ok()?);
    let first_next = if m == 12 {
        NaiveDate::from_ymd_opt(y + 1, 1, 1)?
    } else {
        NaiveDate::from_ymd_opt(y, m + 1, 1)?
    };
    first_next.pred_opt()
}

/// The age band of a (possibly partial) birth date on a day: completed years; a partial date
/// counts as 1 July of its year, or the 1st of its month.
pub fn age_band(birth_date: &str, on: NaiveDate) -> Option<&'static str> {
    let parts: Vec<&str> = birth_date.split('-').collect();
    let y: i32 = parts.first()?.parse().ok()?;
    let born = match parts.len() {
        1 => NaiveDate::from_ymd_opt(y, 7, 1)?,
        2 => NaiveDate::from_ymd_opt(y, parts[1].parse().ok()?, 1)?,
        _ => NaiveDate::from_ymd_opt(y, parts[1].parse().ok()?, parts[2].parse().ok()?)?,
    };
    let mut age = on.year() - born.year();
    if (on.month(), on.day()) < (born.month(), born.day()) {
        age -= 1;
    }
    Some(match age {
        i32::MIN..=-1 => return None,
        0..=2 => "0-2",
        3..=5 => "3-5",
        6..=9 => "6-9",
        10..=14 => "10-14",
        15..=17 => "15-17",
        18..=24 => "18-24",
        25..=34 => "25-34",
        35..=44 => "35-44",
        45..=54 => "45-54",
        55..=64 => "55-64",
        _ => "65+",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_bands() {
        let end = period_end("2026-10").unwrap();
        assert_eq!(end, NaiveDate::from_ymd_opt(2026, 10, 31).unwrap());
        assert_eq!(age_band("2008-10-31", end), Some("18-24"));
        assert_eq!(age_band("2008-11-01", end), Some("15-17"));
        assert_eq!(age_band("1961", end), Some("65+"));
        assert_eq!(age_band("2026-10", end), Some("0-2"));
        assert_eq!(period_end("2026-12").unwrap().to_string(), "2026-12-31");
    }

    /// The cached field set of every consent scope is the set of [`delivered_fields`] of that
    /// consent, made once.
    #[test]
    fn field_sets_per_consent_scope() {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/statistik-nrw.toml"),
        )
        .unwrap();
        let policy = Policy::from_text("statistik-nrw.toml", &text).unwrap();
        let direct = |consent: Option<&Consent>| {
            crate::audit::field_set(&delivered_field_actions(&policy, consent))
        };
        let mut distinct = std::collections::BTreeSet::new();
        for bits in 0u16..=128 {
            let consent = (bits < 128).then(|| Consent {
                consent_id: format!("c{bits}"),
                purpose: "statistik".into(),
                recipient: "*".into(),
                // Groups in another order, and a name that is no group, change nothing.
                fields: crate::model::FIELD_GROUPS
                    .iter()
                    .enumerate()
                    .rev()
                    .filter(|(i, _)| bits & (1 << i) != 0)
                    .map(|(_, g)| g.to_string())
                    .chain(["no.such.group".to_string()])
                    .collect(),
                granted_on: "2026-01-01".into(),
                valid_until: None,
                withdrawn_on: None,
            });
            let cached = delivered_field_set(&policy, consent.as_ref());
            assert_eq!(*cached, direct(consent.as_ref()), "scope {bits}");
            assert!(std::sync::Arc::ptr_eq(
                &cached,
                &delivered_field_set(&policy, consent.as_ref())
            ));
            distinct.insert(cached.sha256.clone());
        }
        assert!(distinct.len() > 2, "scopes give different sets");
    }
}
