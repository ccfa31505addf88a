//! Compiled projections: a recipient's policy, narrowed by one consent scope, as one action per
//! canonical leaf, written straight from the typed record into the item's JSON text.
//!
//! A [`Projection`] is made once per policy (and so per policy version) and consent scope (the
//! set of [`crate::model::FIELD_GROUPS`] a consent covers, or none under a statute) and kept in
//! the policy. Applying it walks the typed [`CanonicalRecord`] in canonical field order and
//! writes only what the actions let through: no JSON tree of the record, no path strings, no
//! per-field lookups. Its output is byte for byte the view that [`super::apply`] describes (a test
//! compares both on every golden case and on generated records).

use super::policy::{Action, LEAF_PATHS, Policy};
use super::{PseudonymKey, age_band, effective_action};
use crate::model::{CanonicalRecord, Consent, Hours};
use crate::store::FieldSet;
use chrono::NaiveDate;
use std::sync::Arc;

/// A canonical leaf, by its position in [`LEAF_PATHS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
enum Leaf {
    ClientId,
    FamilyName,
    GivenNames,
    BirthDate,
    Sex,
    Nationality,
    HouseholdId,
    HouseholdRole,
    Street,
    HouseNumber,
    PostalCode,
    MunicipalityKey,
    District,
    Phone,
    Email,
    SchoolQualification,
    EmploymentStatus,
    CaseId,
    OpenedOn,
    ClosedOn,
    Unit,
    ServiceKind,
    ServiceLegalBasis,
    ServiceStart,
    ServiceEnd,
    ServiceHours,
    ChildProtectionRisk,
    PrimarySubstance,
    ConsentId,
    ConsentPurpose,
    ConsentRecipient,
    ConsentFields,
    ConsentGrantedOn,
    ConsentValidUntil,
    ConsentWithdrawnOn,
    LinkageKey,
}

/// Every leaf, in the order of [`LEAF_PATHS`].
const LEAVES: [Leaf; 36] = [
    Leaf::ClientId,
    Leaf::FamilyName,
    Leaf::GivenNames,
    Leaf::BirthDate,
    Leaf::Sex,
    Leaf::Nationality,
    Leaf::HouseholdId,
    Leaf::HouseholdRole,
    Leaf::Street,
    Leaf::HouseNumber,
    Leaf::PostalCode,
    Leaf::MunicipalityKey,
    Leaf::District,
    Leaf::Phone,
    Leaf::Email,
    Leaf::SchoolQualification,
    Leaf::EmploymentStatus,
    Leaf::CaseId,
    Leaf::OpenedOn,
    Leaf::ClosedOn,
    Leaf::Unit,
    Leaf::ServiceKind,
    Leaf::ServiceLegalBasis,
    Leaf::ServiceStart,
    Leaf::ServiceEnd,
    Leaf::ServiceHours,
    Leaf::ChildProtectionRisk,
    Leaf::PrimarySubstance,
    Leaf::ConsentId,
    Leaf::ConsentPurpose,
    Leaf::ConsentRecipient,
    Leaf::ConsentFields,
    Leaf::ConsentGrantedOn,
    Leaf::ConsentValidUntil,
    Leaf::ConsentWithdrawnOn,
    Leaf::LinkageKey,
];

impl Leaf {
    fn path(self) -> &'static str {
        LEAF_PATHS[self as usize]
    }
}

/// A consent scope: `None` without a consent, else the bit set of the
/// [`crate::model::FIELD_GROUPS`] the consent lists.
pub fn scope(consent: Option<&Consent>) -> Option<u8> {
    consent.map(|c| {
        crate::model::FIELD_GROUPS
            .iter()
            .enumerate()
            .filter(|(_, g)| c.fields.iter().any(|f| f == *g))
            .fold(0u8, |bits, (i, _)| bits | (1 << i))
    })
}

/// Index of a scope in a policy's projection cache: 0 for none, 1 + bits otherwise.
pub(crate) fn scope_index(scope: Option<u8>) -> usize {
    scope.map_or(0, |bits| 1 + bits as usize)
}

/// Number of distinct scopes (none, and every subset of the seven field groups).
pub(crate) const SCOPES: usize = 1 + (1 << crate::model::FIELD_GROUPS.len());

/// A policy narrowed by one consent scope: the action on every canonical leaf, and the audit
/// field set that lists what goes out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    actions: [Action; LEAVES.len()],
    field_set: Arc<FieldSet>,
}

impl Projection {
    /// Compiles `policy` under `consent` (its scope is all that counts).
    pub fn compile(policy: &Policy, consent: Option<&Consent>) -> Projection {
        Projection {
            actions: LEAVES.map(|l| effective_action(policy, consent, l.path())),
            field_set: Arc::new(crate::audit::field_set(&super::delivered_field_actions(
                policy, consent,
            ))),
        }
    }

    /// The audit field set of this projection (shared: routing events refer to it).
    pub fn field_set(&self) -> Arc<FieldSet> {
        Arc::clone(&self.field_set)
    }

    fn action(&self, leaf: Leaf) -> Action {
        self.actions[leaf as usize]
    }

    /// Appends the recipient's view of `record` as JSON text to `out`: the envelope (`type`,
    /// `record_ref`, `policy_version`, `schema_version`, `reporting_period`, `program`, `source`,
    /// the consent's id under a consent) and every field the actions let through; objects and
    /// lists left empty are left out.
    pub fn write(
        &self,
        out: &mut Vec<u8>,
        record: &CanonicalRecord,
        key: &PseudonymKey,
        policy_version: &str,
        consent: Option<&Consent>,
        record_ref: &str,
    ) {
        let w = &mut Writer {
            out,
            p: self,
            key,
            vendor: &record.source.vendor,
            period_end: super::period_end(&record.reporting_period),
        };
        w.out.push(b'{');
        let mut top = Obj {
            mark: 0,
            parent_any: false,
            any: false,
            close: b'}',
        };
        w.str(&mut top, "type", "record");
        w.str(&mut top, "record_ref", record_ref);
        w.str(&mut top, "policy_version", policy_version);
        w.str(&mut top, "schema_version", &record.schema_version);
        w.str(&mut top, "reporting_period", &record.reporting_period);
        w.str(&mut top, "program", &record.program);
        let mut source = w.open(&mut top, "source");
        w.str(&mut source, "vendor", &record.source.vendor);
        w.str(&mut source, "format", &record.source.format);
        w.str(&mut source, "delivery_id", &record.source.delivery_id);
        w.close(&mut top, source);
        if let Some(c) = consent {
            w.str(&mut top, "consent_id", &c.consent_id);
        }

        let linkage = self.action(Leaf::LinkageKey) == Action::Pseudonymise;
        let c = &record.client;
        let mut client = w.open(&mut top, "client");
        w.leaf(
            &mut client,
            "client_id",
            Leaf::ClientId,
            c.client_id.expose(),
        );
        w.leaf(
            &mut client,
            "family_name",
            Leaf::FamilyName,
            c.family_name.expose(),
        );
        if let Some(v) = &c.given_names {
            w.leaf(&mut client, "given_names", Leaf::GivenNames, v.expose());
        }
        w.leaf(
            &mut client,
            "birth_date",
            Leaf::BirthDate,
            c.birth_date.expose(),
        );
        w.leaf(&mut client, "sex", Leaf::Sex, c.sex.expose());
        let optional = [
            ("nationality", Leaf::Nationality, &c.nationality),
            ("household_id", Leaf::HouseholdId, &c.household_id),
            ("household_role", Leaf::HouseholdRole, &c.household_role),
        ];
        for (name, leaf, v) in optional {
            if let Some(v) = v {
                w.leaf(&mut client, name, leaf, v.expose());
            }
        }
        if let Some(a) = &c.address {
            let mut address = w.open(&mut client, "address");
            let fields = [
                ("street", Leaf::Street, &a.street),
                ("house_number", Leaf::HouseNumber, &a.house_number),
                ("postal_code", Leaf::PostalCode, &a.postal_code),
                (
                    "municipality_key",
                    Leaf::MunicipalityKey,
                    &a.municipality_key,
                ),
                ("district", Leaf::District, &a.district),
            ];
            for (name, leaf, v) in fields {
                if let Some(v) = v {
                    w.leaf(&mut address, name, leaf, v.expose());
                }
            }
            w.close(&mut client, address);
        }
        if let Some(k) = &c.contact {
            let mut contact = w.open(&mut client, "contact");
            for (name, leaf, v) in [
                ("phone", Leaf::Phone, &k.phone),
                ("email", Leaf::Email, &k.email),
            ] {
                if let Some(v) = v {
                    w.leaf(&mut contact, name, leaf, v.expose());
                }
            }
            w.close(&mut client, contact);
        }
        for (name, leaf, v) in [
            (
                "school_qualification",
                Leaf::SchoolQualification,
                &c.school_qualification,
            ),
            (
                "employment_status",
                Leaf::EmploymentStatus,
                &c.employment_status,
            ),
        ] {
            if let Some(v) = v {
                w.leaf(&mut client, name, leaf, v.expose());
            }
        }
        // The linkage key goes at the end of the client object, or, when nothing else of the
        // client goes out, into a client object after every other section.
        let client_written = client.any;
        if linkage && client_written {
            w.linkage_key(&mut client, record);
        }
        w.close(&mut top, client);

        let k = &record.case;
        let mut case = w.open(&mut top, "case");
        w.leaf(&mut case, "case_id", Leaf::CaseId, &k.case_id);
        w.leaf(&mut case, "opened_on", Leaf::OpenedOn, &k.opened_on);
        for (name, leaf, v) in [
            ("closed_on", Leaf::ClosedOn, &k.closed_on),
            ("unit", Leaf::Unit, &k.unit),
        ] {
            if let Some(v) = v {
                w.leaf(&mut case, name, leaf, v);
            }
        }
        w.close(&mut top, case);

        if !record.services.is_empty() {
            let mut list = w.open_list(&mut top, "services");
            for s in &record.services {
                let mut item = w.open_item(&mut list);
                w.leaf(&mut item, "kind", Leaf::ServiceKind, &s.kind);
                if let Some(v) = &s.legal_basis {
                    w.leaf(&mut item, "legal_basis", Leaf::ServiceLegalBasis, v);
                }
                w.leaf(&mut item, "start", Leaf::ServiceStart, &s.start);
                if let Some(v) = &s.end {
                    w.leaf(&mut item, "end", Leaf::ServiceEnd, v);
                }
                if let Some(h) = s.hours_per_week {
                    w.hours(&mut item, "hours_per_week", Leaf::ServiceHours, h);
                }
                w.close(&mut list, item);
            }
            w.close(&mut top, list);
        }

        if let Some(s) = &record.sensitive {
            let mut sensitive = w.open(&mut top, "sensitive");
            for (name, leaf, v) in [
                (
                    "child_protection_risk",
                    Leaf::ChildProtectionRisk,
                    &s.child_protection_risk,
                ),
                (
                    "primary_substance",
                    Leaf::PrimarySubstance,
                    &s.primary_substance,
                ),
            ] {
                if let Some(v) = v {
                    w.leaf(&mut sensitive, name, leaf, v.expose());
                }
            }
            w.close(&mut top, sensitive);
        }

        if !record.consents.is_empty() {
            let mut list = w.open_list(&mut top, "consents");
            for c in &record.consents {
                let mut item = w.open_item(&mut list);
                w.leaf(&mut item, "consent_id", Leaf::ConsentId, &c.consent_id);
                w.leaf(&mut item, "purpose", Leaf::ConsentPurpose, &c.purpose);
                w.leaf(&mut item, "recipient", Leaf::ConsentRecipient, &c.recipient);
                w.list_leaf(&mut item, "fields", Leaf::ConsentFields, &c.fields);
                w.leaf(
                    &mut item,
                    "granted_on",
                    Leaf::ConsentGrantedOn,
                    &c.granted_on,
                );
                if let Some(v) = &c.valid_until {
                    w.leaf(&mut item, "valid_until", Leaf::ConsentValidUntil, v);
                }
                if let Some(v) = &c.withdrawn_on {
                    w.leaf(&mut item, "withdrawn_on", Leaf::ConsentWithdrawnOn, v);
                }
                w.close(&mut list, item);
            }
            w.close(&mut top, list);
        }

        if linkage && !client_written {
            let mut client = w.open(&mut top, "client");
            w.linkage_key(&mut client, record);
            w.close(&mut top, client);
        }
        w.out.push(b'}');
    }
}

/// An object being written: where it began (to take it back when nothing went in) and whether
/// a member has been written.
struct Obj {
    /// Length of the output before the member's key (and its comma).
    mark: usize,
    /// Whether the parent had a member before this one.
    parent_any: bool,
    /// Whether this object has a member.
    any: bool,
    /// The byte that closes it (`}` or `]`).
    close: u8,
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
    p: &'a Projection,
    key: &'a PseudonymKey,
    vendor: &'a str,
    period_end: Option<NaiveDate>,
}

impl Writer<'_> {
    /// Writes `"name":` as the next member of `obj`.
    fn key(&mut self, obj: &mut Obj, name: &str) {
        if obj.any {
            self.out.push(b',');
        }
        obj.any = true;
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    fn json_str(&mut self, s: &str) {
        serde_json::to_writer(&mut *self.out, s).expect("writing to a Vec cannot fail");
    }

    fn str(&mut self, obj: &mut Obj, name: &str, value: &str) {
        self.key(obj, name);
        self.json_str(value);
    }

    /// Opens a member object; [`Writer::close`] takes it back if nothing went in.
    fn open(&mut self, parent: &mut Obj, name: &str) -> Obj {
        self.open_as(parent, Some(name), b'{', b'}')
    }

    /// Opens a member list; [`Writer::close`] takes it back if nothing went in.
    fn open_list(&mut self, parent: &mut Obj, name: &str) -> Obj {
        self.open_as(parent, Some(name), b'[', b']')
    }

    /// Opens an object as the next element of a list.
    fn open_item(&mut self, list: &mut Obj) -> Obj {
        self.open_as(list, None, b'{', b'}')
    }

    /// Opens a container (`open` … `close`), as the member `name` of `parent`, or as its next
    /// element when `name` is `None`.
    fn open_as(&mut self, parent: &mut Obj, name: Option<&str>, open: u8, close: u8) -> Obj {
        let mark = self.out.len();
        let parent_any = parent.any;
        match name {
            Some(name) => self.key(parent, name),
            None => {
                if parent.any {
                    self.out.push(b',');
                }
                parent.any = true;
            }
        }
        self.out.push(open);
        Obj {
            mark,
            parent_any,
            any: false,
            close,
        }
    }

    /// Closes a container, or takes it back (its key and comma too) when nothing went in.
    fn close(&mut self, parent: &mut Obj, obj: Obj) {
        if obj.any {
            self.out.push(obj.close);
        } else {
            self.out.truncate(obj.mark);
            parent.any = obj.parent_any;
        }
    }

    /// A text leaf under its action.
    fn leaf(&mut self, obj: &mut Obj, name: &str, leaf: Leaf, value: &str) {
        let action = self.p.action(leaf);
        self.generalised(obj, name, leaf, action, value, |w| w.json_str(value));
    }

    /// A number leaf (hours per week) under its action: kept as a number, otherwise as the
    /// text of that number.
    fn hours(&mut self, obj: &mut Obj, name: &str, leaf: Leaf, value: Hours) {
        let action = self.p.action(leaf);
        if action == Action::Drop {
            return;
        }
        let text = serde_json::to_string(&value).expect("a number serialises");
        self.generalised(obj, name, leaf, action, &text, |w| {
            w.out.extend_from_slice(text.as_bytes())
        });
    }

    /// A list-of-text leaf (a consent's field groups): kept as a list, otherwise as its JSON
    /// text.
    fn list_leaf(&mut self, obj: &mut Obj, name: &str, leaf: Leaf, value: &[String]) {
        let action = self.p.action(leaf);
        if action == Action::Drop {
            return;
        }
        let text = serde_json::to_string(value).expect("a list of text serialises");
        self.generalised(obj, name, leaf, action, &text, |w| {
            w.out.extend_from_slice(text.as_bytes())
        });
    }

    /// Writes a leaf whose text is `text`: as is (`keep`, by `raw`), or generalised or
    /// pseudonymised as a JSON string; nothing when dropped or when no age band follows.
    fn generalised(
        &mut self,
        obj: &mut Obj,
        name: &str,
        leaf: Leaf,
        action: Action,
        text: &str,
        raw: impl FnOnce(&mut Self),
    ) {
        let head = |n: usize| &text[..text.char_indices().nth(n).map_or(text.len(), |(i, _)| i)];
        match action {
            Action::Drop => {}
            Action::Keep => {
                self.key(obj, name);
                raw(self);
            }
            Action::Pseudonymise => {
                let p = self.key.field(leaf.path(), self.vendor, text);
                self.str(obj, name, &p);
            }
            Action::Year => self.str(obj, name, head(4)),
            Action::YearMonth => self.str(obj, name, head(7)),
            Action::Prefix(n) => self.str(obj, name, head(n)),
            Action::AgeBand => {
                if let Some(band) = self.period_end.and_then(|end| age_band(text, end)) {
                    self.str(obj, name, band);
                }
            }
        }
    }

    fn linkage_key(&mut self, client: &mut Obj, record: &CanonicalRecord) {
        let c = &record.client;
        let lk = self.key.linkage_key(
            c.family_name.expose(),
            c.given_names.as_ref().map(|g| g.expose().as_str()),
            c.birth_date.expose(),
        );
        self.str(client, "linkage_key", &lk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_follow_the_leaf_paths() {
        assert_eq!(LEAVES.len(), LEAF_PATHS.len());
        for (i, leaf) in LEAVES.iter().enumerate() {
            assert_eq!(*leaf as usize, i, "{leaf:?}");
        }
        assert_eq!(Leaf::ServiceHours.path(), "services[].hours_per_week");
        assert_eq!(Leaf::ConsentFields.path(), "consents[].fields");
        assert_eq!(Leaf::LinkageKey.path(), "client.linkage_key");
        assert_eq!(Leaf::District.path(), "client.address.district");
    }

    /// A policy of one action on every leaf that takes it (`fields` left empty: drop all).
    fn policy_of(action: &str) -> Policy {
        let text = |fields: &str| {
            format!(
                "id = \"r\"\npurpose = \"statistik\"\nlegal_basis = \"statute\"\n\
                 citation = \"§ 1\"\nspecial_categories = true\n\
                 [delivery]\nkind = \"pull\"\n[route]\nprograms = [\"sgb2\"]\n[fields]\n{fields}"
            )
        };
        let fields: String = LEAF_PATHS
            .iter()
            .map(|p| format!("\"{p}\" = \"{action}\"\n"))
            .filter(|line| Policy::from_text("p.toml", &text(line)).is_ok())
            .collect();
        Policy::from_text("p.toml", &text(&fields)).unwrap()
    }

    /// Every canonical record of the examples and golden cases, through policies of every
    /// action and the shipped statistics policy, under no consent, each record's own consents
    /// and consents of several scopes: the projection writes exactly the reference view.
    #[test]
    fn projection_equals_the_reference_view_on_every_golden_record() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        for dir in [
            root.join("../shared/examples"),
            root.join("conformance-tests/cases"),
        ] {
            let mut stack = vec![dir];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).unwrap() {
                    let p = e.unwrap().path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if p.file_name().is_some_and(|n| n == "expected.ndjson") {
                        files.push(p);
                    }
                }
            }
        }
        assert!(files.len() > 20, "golden files found: {}", files.len());
        let mut policies: Vec<Policy> = [
            "keep",
            "pseudonymise",
            "generalise:year",
            "generalise:year_month",
            "generalise:age_band",
            "generalise:prefix:3",
            "drop",
        ]
        .iter()
        .map(|a| policy_of(a))
        .collect();
        policies.push(
            Policy::from_text(
                "statistik-nrw.toml",
                &std::fs::read_to_string(root.join("policies/statistik-nrw.toml")).unwrap(),
            )
            .unwrap(),
        );
        let key = PseudonymKey::new("k1", vec![7; 32]);
        let scoped = |bits: u8| Consent {
            consent_id: format!("s{bits}"),
            purpose: "statistik".into(),
            recipient: "*".into(),
            fields: crate::model::FIELD_GROUPS
                .iter()
                .enumerate()
                .filter(|(i, _)| bits & (1 << i) != 0)
                .map(|(_, g)| g.to_string())
                .collect(),
            granted_on: "2026-01-01".into(),
            valid_until: None,
            withdrawn_on: None,
        };
        let mut compared = 0;
        for file in &files {
            for line in std::fs::read_to_string(file).unwrap().lines() {
                let Ok(record) = serde_json::from_str::<CanonicalRecord>(line) else {
                    continue;
                };
                let mut consents: Vec<Option<Consent>> =
                    record.consents.iter().cloned().map(Some).collect();
                consents.extend([None, Some(scoped(0)), Some(scoped(0x7f))]);
                consents.extend([0b0101010u8, 0b1010101, 0b0000001].map(|b| Some(scoped(b))));
                for policy in &policies {
                    for consent in &consents {
                        let record_ref = "ref";
                        let reference = serde_json::Value::Object(super::super::apply_to(
                            policy,
                            &key,
                            &record,
                            &match serde_json::to_value(&record).unwrap() {
                                serde_json::Value::Object(m) => m,
                                _ => unreachable!(),
                            },
                            consent.as_ref(),
                            record_ref.into(),
                        ))
                        .to_string();
                        let mut out = Vec::new();
                        policy.projection(consent.as_ref()).write(
                            &mut out,
                            &record,
                            &key,
                            &policy.version,
                            consent.as_ref(),
                            record_ref,
                        );
                        assert_eq!(
                            String::from_utf8(out).unwrap(),
                            reference,
                            "{} under {:?}",
                            file.display(),
                            consent.as_ref().map(|c| &c.fields)
                        );
                        compared += 1;
                    }
                }
            }
        }
        assert!(compared > 1_000, "views compared: {compared}");
    }

    #[test]
    fn scope_indices_cover_every_scope() {
        assert_eq!(scope_index(None), 0);
        assert_eq!(scope_index(Some(0)), 1);
        assert_eq!(scope_index(Some(127)), SCOPES - 1);
    }
}
