//! The canonical client-data model (`canonical-model.md`, version 1.0) as Rust types.
//!
//! Values of these types are only ever produced by parsers: [`crate::validate`] builds them from a
//! mapping's [`crate::adapt::Draft`], and the store reads them back from canonical JSON it wrote
//! itself. Field order is the order of canonical-model.md, so serialising a record gives the key
//! order `weiche convert` promises. Personal data sits in [`Personal`], whose `Debug` never shows
//! the value: a record can be logged by accident without leaking anything but its ids.

use serde::{Deserialize, Serialize};

/// Schema version of the canonical model.
pub const SCHEMA_VERSION: &str = "1.0";

/// A value that is personal data. Serialises transparently; `Debug` prints `[redacted]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Personal<T>(pub T);

impl<T> Personal<T> {
    /// Borrows the protected value; callers must not log it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> std::fmt::Debug for Personal<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Hours per week: an `xs:decimal` written without a fraction when it is whole (`20`, not `20.0`).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Hours(pub f64);

impl Serialize for Hours {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.fract() == 0.0 && self.0.abs() < 1e15 {
            s.serialize_i64(self.0 as i64)
        } else {
            s.serialize_f64(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Hours {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        f64::deserialize(d).map(Hours)
    }
}

/// One canonical record: one client case in one reporting month.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanonicalRecord {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: String,
    /// Where the record came from.
    pub source: Source,
    /// `YYYY-MM`.
    pub reporting_period: String,
    /// Code list `program`.
    pub program: String,
    /// The client.
    pub client: Client,
    /// The case.
    pub case: Case,
    /// Services in source order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
    /// Special categories (health, child protection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensitive: Option<Sensitive>,
    /// The client's consent declarations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consents: Vec<Consent>,
}

/// `source.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Sending vendor's id (from authentication).
    pub vendor: String,
    /// Mapping id.
    pub format: String,
    /// The vendor's id of this case record.
    pub record_id: String,
    /// Weiche's delivery id.
    pub delivery_id: String,
}

/// `client.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Client {
    /// Vendor-scoped client number.
    pub client_id: Personal<String>,
    /// Family name.
    pub family_name: Personal<String>,
    /// Given names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_names: Option<Personal<String>>,
    /// `YYYY-MM-DD`, `YYYY-MM` or `YYYY`.
    pub birth_date: Personal<String>,
    /// Code list `sex`.
    pub sex: Personal<String>,
    /// Code list `nationality`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nationality: Option<Personal<String>>,
    /// Benefit household id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub household_id: Option<Personal<String>>,
    /// Code list `household_role`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub household_role: Option<Personal<String>>,
    /// Address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    /// Contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<Contact>,
    /// Code list `school_qualification`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub school_qualification: Option<Personal<String>>,
    /// Code list `employment_status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employment_status: Option<Personal<String>>,
}

/// `client.address.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    /// Street.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub street: Option<Personal<String>>,
    /// House number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub house_number: Option<Personal<String>>,
    /// Five digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<Personal<String>>,
    /// Eight digits (AGS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub municipality_key: Option<Personal<String>>,
    /// District or social area.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub district: Option<Personal<String>>,
}

/// `client.contact.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    /// Phone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<Personal<String>>,
    /// E-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Personal<String>>,
}

/// `case.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Vendor's case number.
    pub case_id: String,
    /// `YYYY-MM-DD`.
    pub opened_on: String,
    /// `YYYY-MM-DD`, not before `opened_on`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_on: Option<String>,
    /// Responsible team or office.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// `services[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Code list `service_kind`.
    pub kind: String,
    /// Free text such as `SGB II § 16`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legal_basis: Option<String>,
    /// `YYYY-MM-DD`.
    pub start: String,
    /// `YYYY-MM-DD`, not before `start`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// 0–80.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours_per_week: Option<Hours>,
}

/// `sensitive.*` (special categories of personal data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sensitive {
    /// Code list `risk_level`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_protection_risk: Option<Personal<String>>,
    /// Code list `substance`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_substance: Option<Personal<String>>,
}

/// `consents[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consent {
    /// Vendor's id of the declaration.
    pub consent_id: String,
    /// Code list `purpose`.
    pub purpose: String,
    /// Recipient id or `*`.
    pub recipient: String,
    /// Field groups agreed to.
    pub fields: Vec<String>,
    /// `YYYY-MM-DD`.
    pub granted_on: String,
    /// Inclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
    /// From this day on the consent no longer holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withdrawn_on: Option<String>,
}

/// Every canonical leaf path (array entries as `[]`), plus the derived `client.linkage_key`.
pub const LEAF_PATHS: &[&str] = &[
    "client.client_id",
    "client.family_name",
    "client.given_names",
    "client.birth_date",
    "client.sex",
    "client.nationality",
    "client.household_id",
    "client.household_role",
    "client.address.street",
    "client.address.house_number",
    "client.address.postal_code",
    "client.address.municipality_key",
    "client.address.district",
    "client.contact.phone",
    "client.contact.email",
    "client.school_qualification",
    "client.employment_status",
    "case.case_id",
    "case.opened_on",
    "case.closed_on",
    "case.unit",
    "services[].kind",
    "services[].legal_basis",
    "services[].start",
    "services[].end",
    "services[].hours_per_week",
    "sensitive.child_protection_risk",
    "sensitive.primary_substance",
    "consents[].consent_id",
    "consents[].purpose",
    "consents[].recipient",
    "consents[].fields",
    "consents[].granted_on",
    "consents[].valid_until",
    "consents[].withdrawn_on",
    "client.linkage_key",
];

/// The canonical field groups of canonical-model.md, in its order.
pub const FIELD_GROUPS: [&str; 7] = [
    "client.identity",
    "client.address",
    "client.contact",
    "client.education",
    "case",
    "services",
    "sensitive",
];

/// The field group a canonical path (without array indices, e.g. `services[].kind`) belongs to.
pub fn field_group(path: &str) -> Option<&'static str> {
    let identity = [
        "client.client_id",
        "client.family_name",
        "client.given_names",
        "client.birth_date",
        "client.sex",
        "client.nationality",
        "client.household_id",
        "client.household_role",
    ];
    if identity.contains(&path) {
        Some("client.identity")
    } else if path.starts_with("client.address.") {
        Some("client.address")
    } else if path.starts_with("client.contact.") {
        Some("client.contact")
    } else if path == "client.school_qualification" || path == "client.employment_status" {
        Some("client.education")
    } else if path.starts_with("case.") {
        Some("case")
    } else if path.starts_with("services[]") {
        Some("services")
    } else if path.starts_with("sensitive.") {
        Some("sensitive")
    } else {
        None
    }
}
