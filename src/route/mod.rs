//! Routing: which accepted record goes to which recipient, and in what shape.
//!
//! Each recipient has a policy ([`crate::consent::Policy`]) whose route filter selects records by
//! program, vendor and municipality-key prefix; a selected record becomes one output item, the
//! recipient's view of it, written by the policy's compiled [`crate::consent::Projection`].

use crate::audit::{AuditKey, Event};
use crate::catalogue::Code;
use crate::consent::policy::LegalBasis;
use crate::consent::{self, Policy, PseudonymKey};
use crate::model::{CanonicalRecord, Consent};
use crate::store::NewAuditEvent;
use chrono::NaiveDate;
use std::collections::HashMap;
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

    /// The recipient's pseudonym of a record's id (the items' `record_ref`).
    pub fn record_ref(&self, record: &CanonicalRecord) -> String {
        self.key.field(
            "source.record_id",
            &record.source.vendor,
            &record.source.record_id,
        )
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

/// What routing needs besides the record: the processing day and recorded withdrawals.
pub struct RouteContext<'a> {
    /// The processing day D (Europe/Berlin).
    pub today: NaiveDate,
    /// Recorded withdrawals of the vendor: (client id, consent id) → withdrawn on.
    pub withdrawals: &'a HashMap<(String, String), String>,
    /// The delivery id (for audit events).
    pub delivery_id: &'a str,
    /// RFC 3339 time of the decision (for audit events).
    pub at: &'a str,
    /// Subject key of the audit trail.
    pub audit_key: Option<&'a AuditKey>,
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
    /// The consent it goes out under.
    pub consent_id: Option<String>,
}

impl std::fmt::Debug for RoutedItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutedItem")
            .field("recipient", &self.recipient)
            .field("record_ref", &self.record_ref)
            .finish_non_exhaustive()
    }
}

/// A routing remark for the receipt (`C001`, `C002`).
#[derive(Debug, Clone)]
pub struct RouteNote {
    /// Recipient.
    pub recipient: String,
    /// Code.
    pub code: Code,
    /// Text for a person.
    pub message: String,
}

/// Everything routing decided for one record.
#[derive(Debug, Default)]
pub struct Routed {
    /// Items to store.
    pub items: Vec<RoutedItem>,
    /// Receipt notes.
    pub notes: Vec<RouteNote>,
    /// Audit events.
    pub audit: Vec<NewAuditEvent>,
    /// Consent ids of the record that are withdrawn as of today: their holders get revocations.
    pub withdrawn: Vec<String>,
}

/// What routing decided for one recipient, as its audit event records it.
enum Decision {
    /// An item went out; the field set lists its fields with their actions.
    Routed(std::sync::Arc<crate::store::FieldSet>),
    /// Nothing went out, for the reason given.
    NotRouted(&'static str),
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

    /// Routes one accepted record: one item per selecting recipient whose legal basis holds.
    pub fn route(&self, record: &CanonicalRecord, ctx: &RouteContext) -> Routed {
        let mut out = Routed::default();
        let client_id = record.client.client_id.expose().as_str();
        let withdrawn_on = |c: &Consent| {
            ctx.withdrawals
                .get(&(client_id.to_string(), c.consent_id.clone()))
                .map(String::as_str)
        };
        for c in &record.consents {
            let day = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
            let gone = [c.withdrawn_on.as_deref(), withdrawn_on(c)]
                .into_iter()
                .flatten()
                .any(|w| day(w).is_some_and(|w| w <= ctx.today));
            if gone && !out.withdrawn.contains(&c.consent_id) {
                out.withdrawn.push(c.consent_id.clone());
            }
        }
        let at_ms = chrono::DateTime::parse_from_rfc3339(ctx.at)
            .map(|t| t.timestamp_millis())
            .unwrap_or_default();
        let subject = ctx
            .audit_key
            .map(|k| k.subject(&record.source.vendor, client_id));
        for r in self.recipients.iter().filter(|r| r.selects(record)) {
            let policy = &r.policy;
            let consent = match policy.file.legal_basis {
                LegalBasis::Statute => None,
                LegalBasis::Consent => {
                    let found = record
                        .consents
                        .iter()
                        .find(|c| consent::consent_holds(c, policy, ctx.today, withdrawn_on(c)));
                    match found {
                        Some(c) => Some(c),
                        None => {
                            out.notes.push(RouteNote {
                                recipient: r.id().to_string(),
                                code: Code::C001,
                                message: "no valid consent".into(),
                            });
                            out.audit.push(self.event(
                                ctx,
                                r,
                                record,
                                None,
                                Decision::NotRouted("C001: no valid consent"),
                                subject.clone(),
                                &r.record_ref(record),
                                at_ms,
                            ));
                            continue;
                        }
                    }
                }
            };
            if let Some(c) = consent {
                for g in consent::uncovered_groups(policy, c, record) {
                    out.notes.push(RouteNote {
                        recipient: r.id().to_string(),
                        code: Code::C002,
                        // The consent by its position: its id is the vendor's, about the client.
                        message: format!(
                            "fields of group {g} dropped: consents[{}] does not cover them",
                            record
                                .consents
                                .iter()
                                .position(|x| std::ptr::eq(x, c))
                                .unwrap_or_default()
                        ),
                    });
                }
            }
            let record_ref = r.record_ref(record);
            let mut body = Vec::with_capacity(1024);
            let projection = policy.projection(consent);
            projection.write(
                &mut body,
                record,
                &r.key,
                &policy.version,
                consent,
                &record_ref,
            );
            out.audit.push(self.event(
                ctx,
                r,
                record,
                consent,
                Decision::Routed(projection.field_set()),
                subject.clone(),
                &record_ref,
                at_ms,
            ));
            out.items.push(RoutedItem {
                recipient: r.id().to_string(),
                record_ref,
                body: String::from_utf8(body).expect("a projection writes UTF-8"),
                consent_id: consent.map(|c| c.consent_id.clone()),
            });
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &self,
        ctx: &RouteContext,
        r: &Recipient,
        record: &CanonicalRecord,
        consent: Option<&Consent>,
        decision: Decision,
        subject: Option<String>,
        record_ref: &str,
        at_ms: i64,
    ) -> NewAuditEvent {
        let policy = &r.policy;
        let (kind, note, field_set) = match decision {
            Decision::Routed(set) => ("routing", None, Some(set)),
            Decision::NotRouted(note) => ("not_routed", Some(note), None),
        };
        let event = Event::<&str> {
            at: ctx.at,
            kind,
            delivery_id: Some(ctx.delivery_id),
            vendor: &record.source.vendor,
            record_ref: Some(record_ref),
            reporting_period: Some(&record.reporting_period),
            recipient: Some(r.id()),
            legal_basis: Some(match policy.file.legal_basis {
                LegalBasis::Statute => "statute",
                LegalBasis::Consent => "consent",
            }),
            citation: policy.file.citation.as_deref(),
            consent_id: consent.map(|c| c.consent_id.as_str()),
            policy_version: Some(&policy.version),
            fields: Vec::new(),
            fields_sha256: field_set.as_ref().map(|f| f.sha256.as_str()),
            note,
        };
        NewAuditEvent {
            packed: None,
            at_ms,
            kind: kind.to_string(),
            subject,
            body: event.to_json(),
            field_set,
        }
    }
}
