//! The receipt ("Quittung") a vendor gets for every delivery, exactly as http-api.md shows it.

use crate::adapt::Issue;
use crate::catalogue::Code;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Receipt status after the German social-insurance convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Status {
    /// All accepted.
    E1,
    /// All accepted, with warnings.
    E2,
    /// Some records rejected.
    E3,
    /// Rejected whole; nothing stored.
    E4,
}

impl Status {
    /// Spelling in receipts.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::E1 => "E1",
            Status::E2 => "E2",
            Status::E3 => "E3",
            Status::E4 => "E4",
        }
    }

    /// Exit status of `weiche convert`: 0 for `E1`/`E2`, 1 for `E3`, 2 for `E4`.
    pub fn exit_code(self) -> i32 {
        match self {
            Status::E1 | Status::E2 => 0,
            Status::E3 => 1,
            Status::E4 => 2,
        }
    }
}

/// One entry of `errors` or `warnings`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Entry {
    /// 1-based record position, `null` for delivery-level entries.
    pub record: Option<usize>,
    /// The vendor's record id, when known.
    pub record_id: Option<String>,
    /// Canonical path (or source field for `W002`).
    pub field: Option<String>,
    /// Catalogue code.
    pub code: Code,
    /// Text for a person.
    pub message: String,
    /// The source field or column the value came from, as the mapping names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl Entry {
    /// A delivery-level entry.
    pub fn delivery(code: Code, message: impl Into<String>) -> Self {
        Entry {
            record: None,
            record_id: None,
            field: None,
            code,
            message: message.into(),
            source: None,
        }
    }

    /// An entry for an issue of a record (or of the delivery when `record` is `None`).
    pub fn from_issue(record: Option<usize>, record_id: Option<&str>, issue: Issue) -> Self {
        Entry {
            record,
            record_id: record_id.map(str::to_string),
            field: issue.field,
            code: issue.code,
            message: issue.message,
            source: None,
        }
    }
}

/// One entry of `notes`: routing remarks per record and recipient (`C001`, `C002`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Note {
    /// 1-based record position.
    pub record: usize,
    /// The vendor's record id.
    pub record_id: String,
    /// Recipient id.
    pub recipient: String,
    /// Catalogue code.
    pub code: Code,
    /// Text for a person.
    pub message: String,
}

/// The receipt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Receipt {
    /// Weiche's delivery id.
    pub delivery_id: String,
    /// Status.
    pub status: Status,
    /// A repeated delivery answered with the first one's receipt.
    pub duplicate: bool,
    /// A test delivery (validated, not stored).
    pub test: bool,
    /// Mapping id.
    pub format: String,
    /// `full` or `partial`.
    pub mode: String,
    /// Sorted distinct months of the accepted records.
    pub reporting_periods: Vec<String>,
    /// Records received.
    pub received: u64,
    /// Records accepted.
    pub accepted: u64,
    /// Records rejected.
    pub rejected: u64,
    /// Earlier records cancelled by this (full) delivery.
    pub cancelled: u64,
    /// Records routed per recipient.
    pub routed: BTreeMap<String, u64>,
    /// Errors.
    pub errors: Vec<Entry>,
    /// Warnings.
    pub warnings: Vec<Entry>,
    /// Routing notes.
    pub notes: Vec<Note>,
    /// Version (file hash) of the mapping used; absent when no mapping was used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapping_version: Option<String>,
}

impl Receipt {
    /// A receipt for a delivery rejected whole before or while reading it.
    pub fn rejected(
        delivery_id: &str,
        format: &str,
        mode: &str,
        code: Code,
        message: &str,
    ) -> Self {
        Receipt {
            delivery_id: delivery_id.to_string(),
            status: Status::E4,
            duplicate: false,
            test: false,
            format: format.to_string(),
            mode: mode.to_string(),
            reporting_periods: Vec::new(),
            received: 0,
            accepted: 0,
            rejected: 0,
            cancelled: 0,
            routed: BTreeMap::new(),
            errors: vec![Entry::delivery(code, message)],
            warnings: Vec::new(),
            notes: Vec::new(),
            mapping_version: None,
        }
    }

    /// What the receipt adds to the metrics: the rejected records counted under the code of
    /// their first error.
    pub fn counts(&self) -> crate::telemetry::metrics::DeliveryCounts<'_> {
        let mut first: BTreeMap<usize, Code> = BTreeMap::new();
        for e in &self.errors {
            if let Some(position) = e.record {
                first.entry(position).or_insert(e.code);
            }
        }
        let mut rejected: BTreeMap<String, u64> = BTreeMap::new();
        for code in first.values() {
            *rejected.entry(code.as_str().to_string()).or_default() += 1;
        }
        let counted: u64 = rejected.values().sum();
        if self.rejected > counted {
            // Cannot happen with the current receipts; keeps the sum honest if it ever does.
            *rejected.entry("unknown".to_string()).or_default() += self.rejected - counted;
        }
        crate::telemetry::metrics::DeliveryCounts {
            status: self.status.as_str(),
            received: self.received,
            accepted: self.accepted,
            rejected,
            routed: Some(&self.routed),
        }
    }

    /// The delivery-level code that rejected the delivery, if it was rejected whole.
    pub fn rejection_code(&self) -> Option<Code> {
        if self.status != Status::E4 {
            return None;
        }
        self.errors
            .iter()
            .find(|e| e.record.is_none() && e.code.is_delivery_level())
            .map(|e| e.code)
    }
}
