//! Routing: which accepted record goes to which recipient, and in what shape.
//!
//! Each recipient has a policy ([`crate::consent::Policy`]) whose route filter selects records by
//! program, vendor and municipality-key prefix; a selected record becomes one output item, the
//! recipient's view of it ([`crate::consent::apply`]).

use crate::consent::{self, Policy, PseudonymKey};
use crate::model::CanonicalRecord;
use std::sync::Arc;

/// A recipient as the router knows it: its policy and its current pseudonym key.
#[derive(Debug, Clone)]
pub struct Recipient {
    /// The recipient's policy.
    pub policy: Arc<Policy>,
    /// Current pseudonym key.
    pub key: PseudonymKey,
}

impl Recipient {
    /// The recipient id.
    pub fn id(&self) -> &str {
        self.policy.id()
    }

    /// Whether the route filter selects a record.
    pub fn selects(&self, record: &CanonicalRecord) -> bool {
        let route = &self.policy.file.route;
        if !route.programs.contains(&record.program) {
            return false;
        }
        if !route.vendors.is_empty() && !route.vendors.contains(&record.source.vendor) {
            return false;
        }
        if !route.municipality_prefixes.is_empty() {
            let key = record
                .client
                .address
                .as_ref()
                .and_then(|a| a.municipality_key.as_ref())
                .map(|k| k.expose().as_str());
            match key {
                Some(k)
                    if route
                        .municipality_prefixes
                        .iter()
                        .any(|p| k.starts_with(p.as_str())) => {}
                _ => return false,
            }
        }
        true
    }
}

/// One output item for one recipient.
#[derive(Clone)]
pub struct RoutedItem {
    /// Recipient id.
    pub recipient: String,
    /// The recipient's pseudonym of the record id.
    pub record_ref: String,
    /// The item as JSON text.
    pub body: String,
}

impl std::fmt::Debug for RoutedItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutedItem")
            .field("recipient", &self.recipient)
            .field("record_ref", &self.record_ref)
            .finish_non_exhaustive()
    }
}

/// The recipients of one configuration.
#[derive(Debug, Clone, Default)]
pub struct Router {
    recipients: Vec<Recipient>,
}

impl Router {
    /// A router over recipients.
    pub fn new(recipients: Vec<Recipient>) -> Self {
        Router { recipients }
    }

    /// The recipients.
    pub fn recipients(&self) -> &[Recipient] {
        &self.recipients
    }

    /// A recipient by id.
    pub fn recipient(&self, id: &str) -> Option<&Recipient> {
        self.recipients.iter().find(|r| r.id() == id)
    }

    /// The items one accepted record produces, one per selecting recipient.
    pub fn route(&self, record: &CanonicalRecord) -> Vec<RoutedItem> {
        self.recipients
            .iter()
            .filter(|r| r.selects(record))
            .map(|r| {
                let view = consent::apply(&r.policy, &r.key, record);
                let record_ref = view
                    .get("record_ref")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string();
                RoutedItem {
                    recipient: r.id().to_string(),
                    record_ref,
                    body: serde_json::Value::Object(view).to_string(),
                }
            })
            .collect()
    }
}
