//! The audit hash chain as the store keeps it: the genesis, how an event is linked to its
//! predecessor, how appended events are numbered and linked, how a run of stored rows is
//! checked, and how far a purge of the oldest events may cut. Both backends use it; the audit
//! trail's events, its verification over a store and the disclosure report live in
//! [`crate::audit`].

use super::codec::{StoredBody, UnpackError, Unpacker};
use super::{AuditAnchor, AuditRow, NewAuditEvent};
use sha2::{Digest, Sha256};
use std::borrow::Borrow;

/// The `prev_hash` of the first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of an event linked to its predecessor: `hex(SHA-256(prev_hash ‖ body))`, where
/// `prev_hash` is the predecessor's hash as lowercase hex text and `body` the event's canonical
/// JSON.
pub fn link_hash(prev_hash: &str, body: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(body.as_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod link_tests {
    use super::*;

    #[test]
    fn links_depend_on_predecessor_and_body() {
        let a = link_hash(GENESIS, r#"{"a":1}"#);
        assert_eq!(a.len(), 64);
        assert_ne!(a, link_hash(GENESIS, r#"{"a":2}"#));
        assert_ne!(a, link_hash(&a, r#"{"a":1}"#));
    }
}

/// The first place where the hash chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct BrokenLink {
    /// `seq` of the stored event at which the break was found (as stored, so for a missing
    /// event this is the first event after the gap).
    pub seq: i64,
    /// What does not hold, for a person.
    pub reason: String,
}

/// The result of checking the audit hash chain.
///
/// Serialises as `{"events", "intact", "first_broken": {"seq","reason"} | null, "last_hash",
/// "anchor": {"seq","hash"} | null}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Verification {
    /// Number of events read (the whole trail, also past a break).
    pub events: u64,
    /// `true` when every event links to its predecessor.
    pub intact: bool,
    /// The first broken link (`None` when intact).
    pub first_broken: Option<BrokenLink>,
    /// Hash of the last event read ([`GENESIS`] for an empty trail). Removing events from the end
    /// of the trail leaves the chain intact; comparing this with a hash noted earlier (e.g. in an
    /// external log) detects that.
    pub last_hash: String,
    /// Where the kept chain starts when its oldest events were purged (retention): the last
    /// purged event's `seq` and hash, which the first kept event links to. `None`: the chain
    /// starts at the genesis. Each purge logs the new anchor, so it can be compared too.
    pub anchor: Option<AuditAnchor>,
}

/// Where a check of the chain stands between pages of events; feed pages in order of `seq` to
/// [`check_chain`], then read the result with [`ChainState::verification`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainState {
    /// `seq` the next event must have.
    expected_seq: i64,
    /// Stored hash of the last event read (the next event's expected `prev_hash`).
    last_hash: String,
    /// `seq` of the last event read (0 before the first).
    last_seq: i64,
    /// Events read.
    events: u64,
    /// First break found.
    first_broken: Option<BrokenLink>,
    /// Where the chain starts (`None`: the genesis).
    anchor: Option<AuditAnchor>,
}

impl Default for ChainState {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainState {
    /// The state before the first event: the next event must be `seq` 1 linked to [`GENESIS`].
    pub fn new() -> Self {
        ChainState {
            expected_seq: 1,
            last_hash: GENESIS.to_string(),
            last_seq: 0,
            events: 0,
            first_broken: None,
            anchor: None,
        }
    }

    /// The state before the first kept event of a purged chain: the next event must be
    /// `anchor.seq + 1` linked to `anchor.hash`.
    pub fn after(anchor: &AuditAnchor) -> Self {
        ChainState {
            expected_seq: anchor.seq.saturating_add(1),
            last_hash: anchor.hash.clone(),
            last_seq: anchor.seq,
            events: 0,
            first_broken: None,
            anchor: Some(anchor.clone()),
        }
    }

    /// `seq` of the last event read (0 before the first): where the next page starts.
    pub fn last_seq(&self) -> i64 {
        self.last_seq
    }

    /// Whether no break has been found so far.
    pub fn intact(&self) -> bool {
        self.first_broken.is_none()
    }

    /// The result for everything read so far.
    pub fn verification(&self) -> Verification {
        Verification {
            events: self.events,
            intact: self.first_broken.is_none(),
            first_broken: self.first_broken.clone(),
            last_hash: self.last_hash.clone(),
            anchor: self.anchor.clone(),
        }
    }

    /// Checks one event against the state and advances it.
    fn check(&mut self, row: &AuditRow) {
        if self.first_broken.is_none() {
            let reason = if row.seq != self.expected_seq {
                Some(format!(
                    "expected event {}, found event {}: an event is missing, duplicated or out of \
                     order",
                    self.expected_seq, row.seq
                ))
            } else if row.prev_hash != self.last_hash {
                Some(if self.last_seq == 0 {
                    "prev_hash of the first event is not the genesis hash".to_string()
                } else if self.events == 0 && self.anchor.is_some() {
                    format!(
                        "prev_hash does not match the anchor (the hash of purged event {})",
                        self.last_seq
                    )
                } else {
                    format!(
                        "prev_hash does not match the hash of event {}",
                        self.last_seq
                    )
                })
            } else if row.hash != link_hash(&row.prev_hash, &row.body) {
                Some(
                    "hash does not match SHA-256(prev_hash ‖ body): the event or its hash was \
                     altered"
                        .to_string(),
                )
            } else {
                None
            };
            if let Some(reason) = reason {
                self.first_broken = Some(BrokenLink {
                    seq: row.seq,
                    reason,
                });
            }
        }
        self.events += 1;
        self.last_seq = row.seq;
        self.expected_seq = row.seq.saturating_add(1);
        self.last_hash = row.hash.clone();
    }
}

/// Checks events, in the order given, against the chain state: each event's `seq` is the
/// previous one's plus 1 (the first is 1), its `prev_hash` is the previous event's stored hash
/// ([`GENESIS`] for the first), and its `hash` is [`link_hash`]`(prev_hash, body)`. The first
/// break is kept; later events are only counted. Call it once per page, with the same state.
pub fn check_chain<R: Borrow<AuditRow>>(rows: impl IntoIterator<Item = R>, state: &mut ChainState) {
    for row in rows {
        state.check(row.borrow());
    }
}

/// How far a purge of audit events may delete from the start of the chain, for one page of the
/// oldest events ([`purge_prefix`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgePrefix {
    /// The last event of the page that may be purged — with everything before it — as the new
    /// anchor (its `seq` and stored hash); `None`: none of the page.
    pub through: Option<AuditAnchor>,
    /// Number of events of the page up to and including `through`.
    pub events: u64,
    /// The page holds an event that must stay (written at or after the cut-off, or at a break):
    /// nothing after this page may go either.
    pub stop: bool,
    /// The first broken link in the page, if any.
    pub broken: Option<BrokenLink>,
}

/// Of a page of the oldest kept events (in chain order, following `anchor` or the genesis), the
/// prefix a purge of events written before `before_ms` may delete: the events before the first
/// one written at or after the cut-off, as far as the chain verifies. At a broken link the two
/// events on either side of it stay (and so does everything after them), so a purge never hides
/// a break: [`crate::audit::verify`] still reports it afterwards.
pub fn purge_prefix(
    anchor: Option<&AuditAnchor>,
    rows: &[AuditRow],
    before_ms: i64,
) -> PurgePrefix {
    let mut state = anchor.map_or_else(ChainState::new, ChainState::after);
    check_chain(rows, &mut state);
    let broken = state.first_broken.clone();
    // Index of the row at which the chain breaks: it and its predecessor stay.
    let limit = match &broken {
        Some(b) => rows
            .iter()
            .position(|r| r.seq == b.seq)
            .unwrap_or(0)
            .saturating_sub(1),
        None => rows.len(),
    };
    let old = rows.iter().take_while(|r| r.at_ms < before_ms).count();
    let n = old.min(limit);
    PurgePrefix {
        through: n.checked_sub(1).map(|i| AuditAnchor {
            seq: rows[i].seq,
            hash: rows[i].hash.clone(),
        }),
        events: n as u64,
        stop: n < rows.len() || broken.is_some(),
        broken,
    }
}

/// An audit row as read: seq, at, kind, subject, body (text or packed), prev hash, hash.
pub(super) type AuditTuple = (i64, i64, String, Option<String>, StoredBody, String, String);

/// Columns of an audit row, in [`AuditTuple`]'s order.
pub(super) const AUDIT_SELECT: &str = "seq, at_ms, kind, subject, body, prev_hash, hash";

/// Decodes an audit row, unpacking its body.
pub(super) fn audit_row(
    unpacker: &mut Unpacker<'_>,
    (seq, at_ms, kind, subject, body, prev_hash, hash): &AuditTuple,
) -> Result<AuditRow, UnpackError> {
    Ok(AuditRow {
        seq: *seq,
        at_ms: *at_ms,
        kind: kind.clone(),
        subject: subject.clone(),
        body: unpacker.text(body)?,
        prev_hash: prev_hash.clone(),
        hash: hash.clone(),
    })
}

/// The runs of consecutive events about the same subject among `(seq, subject)` pairs in order
/// of `seq`, as `(subject, first seq, last seq)`: what `audit_subject_runs` indexes (one entry
/// per run instead of per event; a record's routing decisions are one run).
pub(crate) fn subject_runs<'a>(
    events: impl IntoIterator<Item = (i64, Option<&'a str>)>,
) -> Vec<(&'a str, i64, i64)> {
    let mut runs: Vec<(&'a str, i64, i64)> = Vec::new();
    for (seq, subject) in events {
        let Some(subject) = subject else {
            continue;
        };
        match runs.last_mut() {
            Some((s, _, last)) if *s == subject && *last + 1 == seq => *last = seq,
            _ => runs.push((subject, seq, seq)),
        }
    }
    runs
}

#[cfg(test)]
mod run_tests {
    use super::*;

    #[test]
    fn consecutive_events_about_one_subject_are_one_run() {
        let events = [
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("a")),
            (4, Some("b")),
            (5, None),
            (6, Some("b")),
            (7, Some("a")),
            (9, Some("a")),
        ];
        assert_eq!(
            subject_runs(events),
            vec![
                ("a", 1, 3),
                ("b", 4, 4),
                ("b", 6, 6),
                ("a", 7, 7),
                ("a", 9, 9)
            ]
        );
        assert!(subject_runs([(1, None)]).is_empty());
    }
}

/// What linking adds to an appended event: its `seq`, its predecessor's hash and its own.
pub(crate) struct Link {
    /// The event's `seq`.
    pub(crate) seq: i64,
    /// The predecessor's hash.
    pub(crate) prev_hash: String,
    /// `link_hash(prev_hash, body)`.
    pub(crate) hash: String,
}

/// Links events, in order, to the chain whose last row is `last` (`None`: empty chain): one
/// [`Link`] an event; the rest of each row is the event's own.
pub(crate) fn link(last: Option<(i64, String)>, events: &[NewAuditEvent]) -> Vec<Link> {
    let (mut seq, mut prev) = last.unwrap_or_else(|| (0, GENESIS.to_string()));
    events
        .iter()
        .map(|e| {
            seq += 1;
            let hash = link_hash(&prev, &e.body);
            Link {
                seq,
                prev_hash: std::mem::replace(&mut prev, hash.clone()),
                hash,
            }
        })
        .collect()
}
