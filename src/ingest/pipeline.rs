//! The synchronous heart of a delivery: engine → drafts → validation → routing, producing the
//! receipt. It runs on a blocking thread over a streaming reader and hands each accepted record
//! to a callback as soon as it is ready, so neither the body nor the records are held whole.
//! `weiche convert` and the server share it.

use super::receipt::{Entry, Receipt, Status};
use crate::adapt::{AdaptError, AdaptSink, DeliveryHeader, Draft, Issue, Mapping, Mode, Unmapped};
use crate::catalogue::Code;
use crate::model::{CanonicalRecord, SCHEMA_VERSION};
use crate::route::{RouteContext, Routed, RoutedItem, Router};
use crate::validate::Validator;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::time::{Duration, Instant};

/// Lowers the calling thread's CPU priority to nice 10 (Linux; elsewhere a no-op). A thread
/// cannot raise it again, so only threads made for one delivery call it.
fn yield_to_store() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority(2) with this thread's id changes only this thread's nice value; it
    // reads no memory of ours. A failure leaves the priority as it was, which is harmless.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}

/// Spawns a pipeline thread named `name`, at a lower CPU priority for a background job.
fn spawn_stage<'scope, T: Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    name: &str,
    background: bool,
    f: impl FnOnce() -> T + Send + 'scope,
) -> std::io::Result<std::thread::ScopedJoinHandle<'scope, T>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn_scoped(scope, move || {
            if background {
                yield_to_store();
            }
            f()
        })
}

/// Takes every message until the sender is gone or `take` fails; the failure. Returning drops
/// the receiver, which stops the sending thread at its next hand-over.
fn drain<M>(
    rx: std::sync::mpsc::Receiver<M>,
    mut take: impl FnMut(M) -> Result<(), AdaptError>,
) -> Option<AdaptError> {
    rx.iter().find_map(|message| take(message).err())
}

/// Sends `message` to the next pipeline thread, adding the time it waited to `waited`; fails
/// when that thread has stopped (or the sender is gone).
fn hand_over<M>(
    tx: &Option<std::sync::mpsc::SyncSender<M>>,
    message: M,
    waited: &mut Duration,
) -> Result<(), AdaptError> {
    let started = Instant::now();
    let sent = tx.as_ref().map(|tx| tx.send(message));
    *waited += started.elapsed();
    match sent {
        Some(Ok(())) => Ok(()),
        _ => Err(AdaptError::Aborted("the store stopped".into())),
    }
}

/// What one delivery is processed with.
pub struct Job<'a> {
    /// Weiche's delivery id.
    pub delivery_id: &'a str,
    /// Sending vendor (from authentication, never from the payload).
    pub vendor: &'a str,
    /// The mapping.
    pub mapping: &'a Mapping,
    /// The request's `mode` parameter (used when the format does not declare a mode).
    pub mode_param: Option<Mode>,
    /// `L002` above this many records.
    pub max_records: u64,
    /// The request's `Content-Type` charset, if any.
    pub charset: Option<&'a str>,
    /// Canonical schema and code lists.
    pub validator: &'a Validator,
    /// Recipients; `None` routes nothing (conversion without a server).
    pub router: Option<&'a Router>,
    /// Hand records of test deliveries to the callback too (conversion shows them).
    pub emit_test_records: bool,
    /// The processing day D (Europe/Berlin) for consent checks.
    pub today: chrono::NaiveDate,
    /// RFC 3339 time of processing (audit events).
    pub at: &'a str,
    /// Recorded withdrawals of the vendor: (client id, consent id) → withdrawn on.
    pub withdrawals: &'a HashMap<(String, String), String>,
    /// Subject key of the audit trail (`None`: no audit events, e.g. conversion).
    pub audit_key: Option<&'a crate::audit::AuditKey>,
    /// Run the pipeline's threads at a lower CPU priority ([`yield_to_store`]): the server sets
    /// it, so that the store's writer, which every delivery waits for, is never starved by the
    /// pipelines of the deliveries behind it.
    pub background: bool,
}

impl Job<'_> {
    /// No recorded withdrawals.
    pub fn no_withdrawals() -> &'static HashMap<(String, String), String> {
        static EMPTY: std::sync::OnceLock<HashMap<(String, String), String>> =
            std::sync::OnceLock::new();
        EMPTY.get_or_init(HashMap::new)
    }
}

/// One accepted record, ready to store.
pub struct Accepted {
    /// The canonical record.
    pub record: CanonicalRecord,
    /// Its canonical JSON (keys in canonical-model.md order).
    pub json: String,
    /// Its output items, one per recipient that gets it.
    pub items: Vec<RoutedItem>,
    /// Audit events of its routing decisions.
    pub audit: Vec<crate::store::NewAuditEvent>,
    /// Consent ids of the record withdrawn as of today (their holders get revocations).
    pub withdrawn: Vec<String>,
}

/// The result of processing one delivery.
#[derive(Debug)]
pub struct Outcome {
    /// The receipt (`duplicate` false).
    pub receipt: Receipt,
    /// The idempotency key the payload declared, if any.
    pub payload_key: Option<String>,
    /// Set when the delivery could not be read to its end (client gone, store failed): no receipt
    /// is due, nothing may be stored.
    pub aborted: Option<String>,
    /// The (program, reporting period) pairs of the accepted records (the scope of a full delivery).
    pub scopes: BTreeSet<(String, String)>,
    /// Record ids present in the delivery but rejected (a full delivery does not cancel them).
    pub rejected_ids: Vec<String>,
    /// The client (subject pseudonym) of each record the receipt has an entry about, when the
    /// job has an audit key: what lets an erasure find those entries.
    pub subjects: Vec<crate::store::ReceiptSubject>,
}

impl Outcome {
    /// A delivery that could not be read or stored to its end: no receipt is due.
    fn aborted(job: &Job, why: String) -> Outcome {
        let mode = job.mode_param.unwrap_or(Mode::Partial).as_str();
        Outcome {
            receipt: Receipt::rejected(job.delivery_id, job.mapping.id(), mode, Code::U001, &why),
            payload_key: None,
            aborted: Some(why),
            scopes: BTreeSet::new(),
            rejected_ids: Vec::new(),
            subjects: Vec::new(),
        }
    }
}

/// Records handed from one pipeline thread to the next in one message.
const BATCH: usize = 16;
/// Messages in flight between two pipeline threads.
const IN_FLIGHT: usize = 4;

/// Processes one delivery on scoped threads, keeping the record order: the **engine** runs the
/// mapping engine over `reader`, the **front** validates each draft and keeps the receipt's
/// counts and entries, the **back** routes each accepted record and hands it to `out`. The front
/// runs in the engine's thread when the back routes, on a thread of its own when it does not, so
/// a delivery's records keep both cores busy in `weiche convert` (which routes nothing) as in the
/// server.
pub fn run(
    job: &Job,
    reader: &mut (dyn Read + Send),
    out: &mut (dyn FnMut(Accepted) -> Result<(), AdaptError> + Send),
) -> Outcome {
    // Per-delivery aggregate spans: `validate` and `route` are entered around each record's
    // stage; each gets the stage's cumulative time (`adapt`: the engine's time without waiting
    // for the front, plus the front's time mapping records handed over unmapped) as
    // `weiche.stage_seconds`.
    let adapt_span = tracing::info_span!(
        "adapt",
        weiche.delivery_id = job.delivery_id,
        weiche.format = job.mapping.id(),
        weiche.stage_seconds = tracing::field::Empty,
    );
    let validate_span = tracing::info_span!(
        "validate",
        weiche.delivery_id = job.delivery_id,
        weiche.records = tracing::field::Empty,
        weiche.stage_seconds = tracing::field::Empty,
    );
    let mut back = Back {
        route_span: tracing::info_span!(
            "route",
            weiche.delivery_id = job.delivery_id,
            weiche.records = tracing::field::Empty,
            weiche.stage_seconds = tracing::field::Empty,
        ),
        job,
        out,
        routed: BTreeMap::new(),
        notes: Vec::new(),
        route_time: Duration::ZERO,
        routed_records: 0,
        failed: None,
        subjects: Vec::new(),
    };
    // Where the front runs: in the engine's thread when the back routes (the server: there the
    // back is the longer stage, and drafts handed to a thread of their own cost 6–7 % more
    // CPU a record, being freed where they were not allocated), on a thread of its own when it
    // does not (`weiche convert`: the back would idle and the engine's thread do everything).
    let split = job.router.is_none();
    let (to_back, back_rx) = std::sync::mpsc::sync_channel::<Vec<Checked>>(IN_FLIGHT);
    let (to_front, front_rx) = std::sync::mpsc::sync_channel::<ToFront>(IN_FLIGHT);
    let front = Front {
        validate_span,
        job,
        tx: Some(to_back),
        batch: Vec::with_capacity(BATCH),
        validate_time: Duration::ZERO,
        map_time: Duration::ZERO,
        validated: 0,
        waited: Duration::ZERO,
        header: DeliveryHeader::default(),
        accepted: 0,
        rejected: 0,
        errors: Vec::new(),
        warnings: Vec::new(),
        periods: BTreeSet::new(),
        seen: SeenIds::default(),
        scopes: BTreeSet::new(),
        rejected_ids: Vec::new(),
        subjects: Vec::new(),
        failed: None,
        json: Vec::with_capacity(4096),
    };
    let (inline, threaded) = if split {
        (None, Some(front))
    } else {
        (Some(front), None)
    };
    let adapt_in = &adapt_span;
    let joined = std::thread::scope(|scope| {
        let engine = spawn_stage(scope, "weiche-adapt", job.background, move || {
            let mut e = Engine {
                job,
                tx: split.then_some(to_front),
                front: inline,
                batch: Vec::with_capacity(BATCH),
                received: 0,
                waited: Duration::ZERO,
            };
            let started = Instant::now();
            let mut result = adapt_in.in_scope(|| job.mapping.run(reader, job.charset, &mut e));
            if result.is_ok() {
                result = e.finish();
            }
            // The next thread stops once its sender is gone.
            e.tx = None;
            let mut waited = e.waited;
            if let Some(front) = &mut e.front {
                front.tx = None;
                waited += front.validate_time + front.waited;
            }
            let adapt = started.elapsed().saturating_sub(waited);
            (result, e.received, adapt, e.front)
        });
        let checking = threaded.map(|mut front| {
            spawn_stage(scope, "weiche-validate", job.background, move || {
                front.failed = drain(front_rx, |message| front.take(message));
                if front.failed.is_none()
                    && let Err(e) = front.flush()
                {
                    front.failed = Some(e);
                }
                // The back stops once the sender is gone.
                front.tx = None;
                front
            })
        });
        let back = &mut back;
        let routing = spawn_stage(scope, "weiche-route", job.background, move || {
            back.failed = drain(back_rx, |batch| back.take(batch));
        });
        let routed = routing.map(|t| t.join());
        let front = checking.map(|t| t.map(|t| t.join()));
        let engine = engine.map(|t| t.join());
        match (routed, front, engine) {
            (Ok(Ok(())), None, Ok(Ok((result, received, adapt, Some(front))))) => {
                Some((front, (result, received, adapt)))
            }
            (Ok(Ok(())), Some(Ok(Ok(front))), Ok(Ok((result, received, adapt, None)))) => {
                Some((front, (result, received, adapt)))
            }
            _ => None,
        }
    });
    let Some((mut c, (result, received, adapt))) = joined else {
        return Outcome::aborted(job, "the pipeline thread failed".into());
    };
    // The back's failure (the store stopped) is the cause when several threads stopped; then
    // the front's (a record that could not be serialised).
    let result = match (back.failed.take(), c.failed.take()) {
        (Some(e), _) | (None, Some(e)) => Err(e),
        (None, None) => result,
    };
    for (span, stage, took, records) in [
        (&adapt_span, "adapt", adapt + c.map_time, None),
        (
            &c.validate_span,
            "validate",
            c.validate_time,
            Some(c.validated),
        ),
        (
            &back.route_span,
            "route",
            back.route_time,
            Some(back.routed_records),
        ),
    ] {
        span.record("weiche.stage_seconds", took.as_secs_f64());
        if let Some(n) = records {
            span.record("weiche.records", n);
        }
        crate::telemetry::metrics::stage(stage, took);
    }
    let Back {
        routed,
        notes,
        subjects,
        ..
    } = back;
    // Entries about one record may come from both threads (errors and warnings from the front,
    // routing notes from the back): each record's client once, in record order.
    c.subjects.extend(subjects);
    c.subjects.sort_by_key(|s| s.record);
    c.subjects.dedup_by_key(|s| s.record);
    let mode = c
        .header
        .mode
        .or(job.mode_param)
        .unwrap_or(Mode::Partial)
        .as_str();
    let format = job.mapping.id();
    let mut receipt = match result {
        Err(AdaptError::Aborted(why)) => return Outcome::aborted(job, why),
        Err(AdaptError::Rejected { code, message }) => {
            // The receipt holds no record entries, so no record's client is noted.
            c.subjects.clear();
            Receipt::rejected(job.delivery_id, format, mode, code, &message)
        }
        Ok(()) => {
            let mut errors = c.errors;
            let status = if received > 0 && c.accepted == 0 {
                errors.push(Entry::delivery(Code::S020, "every record was rejected"));
                Status::E4
            } else if c.rejected > 0 {
                Status::E3
            } else if !c.warnings.is_empty() {
                Status::E2
            } else {
                Status::E1
            };
            Receipt {
                delivery_id: job.delivery_id.to_string(),
                status,
                duplicate: false,
                test: c.header.test,
                format: format.to_string(),
                mode: mode.to_string(),
                reporting_periods: if status == Status::E4 {
                    Vec::new()
                } else {
                    c.periods.into_iter().collect()
                },
                received,
                accepted: c.accepted,
                rejected: c.rejected,
                cancelled: 0,
                routed: if status == Status::E4 || c.header.test {
                    BTreeMap::new()
                } else {
                    routed
                },
                errors,
                warnings: c.warnings,
                notes: if status == Status::E4 || c.header.test {
                    Vec::new()
                } else {
                    notes
                },
                mapping_version: None,
            }
        }
    };
    receipt.test = c.header.test;
    receipt.mapping_version = Some(job.mapping.hash.clone());
    Outcome {
        receipt,
        payload_key: c.header.idempotency_key,
        aborted: None,
        scopes: c.scopes,
        rejected_ids: c.rejected_ids,
        subjects: c.subjects,
    }
}

/// A validated record on its way from the front to the back.
struct Checked {
    /// 1-based position in the delivery.
    position: usize,
    /// The canonical record.
    record: CanonicalRecord,
    /// Its canonical JSON.
    json: String,
    /// Whether the delivery is a test delivery (known from the header before any record).
    test: bool,
}

/// What the engine hands to the front, in the order the engine reported it.
enum ToFront {
    /// The delivery's header (before any record).
    Header(DeliveryHeader),
    /// A warning about the delivery, not about one record.
    Warning(Issue),
    /// Records, in order.
    Drafts(Vec<Incoming>),
}

/// One record from the engine: mapped, or to be mapped by the front (records of the JSON and
/// XML engines, so that reading and mapping use two cores).
enum Incoming {
    Mapped(Draft),
    Unmapped(Unmapped),
}

/// The engine's side of the pipeline: counts the records (`L002`) and hands the engine's events
/// to the front in batches.
struct Engine<'j> {
    job: &'j Job<'j>,
    /// To the front on its own thread; `None` once the engine is done, or when the front runs
    /// in the engine's thread.
    tx: Option<std::sync::mpsc::SyncSender<ToFront>>,
    /// The front, when it runs in the engine's thread.
    front: Option<Front<'j>>,
    batch: Vec<Incoming>,
    received: u64,
    /// Time spent waiting for the front to take a message.
    waited: Duration,
}

impl Engine<'_> {
    fn send(&mut self, message: ToFront) -> Result<(), AdaptError> {
        if let Some(front) = &mut self.front {
            return front.take(message);
        }
        hand_over(&self.tx, message, &mut self.waited)
    }

    /// Hands the collected drafts to the front.
    fn flush(&mut self) -> Result<(), AdaptError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        self.send(ToFront::Drafts(batch))
    }

    /// The engine is done: the last drafts to the front and, when the front runs in this
    /// thread, its last records to the back.
    fn finish(&mut self) -> Result<(), AdaptError> {
        self.flush()?;
        match &mut self.front {
            Some(front) => front.flush(),
            None => Ok(()),
        }
    }
}

impl AdaptSink for Engine<'_> {
    fn header(&mut self, header: &DeliveryHeader) -> Result<(), AdaptError> {
        self.flush()?;
        self.send(ToFront::Header(header.clone()))
    }

    fn warning(&mut self, issue: Issue) {
        // After the drafts before it, so that the receipt lists entries in the engine's order.
        // A failed hand-over stops the engine at its next record.
        if self.flush().is_ok() {
            let _ = self.send(ToFront::Warning(issue));
        }
    }

    fn record(&mut self, draft: Draft) -> Result<(), AdaptError> {
        self.count()?;
        if let Some(front) = &mut self.front {
            return front.record(draft);
        }
        self.push(Incoming::Mapped(draft))
    }

    fn takes_unmapped(&self) -> bool {
        // Only to a front on its own thread: the mapping then runs there.
        self.front.is_none()
    }

    fn unmapped(&mut self, record: Unmapped) -> Result<(), AdaptError> {
        self.count()?;
        self.push(Incoming::Unmapped(record))
    }
}

impl Engine<'_> {
    /// Counts a record (`L002` beyond the job's limit).
    fn count(&mut self) -> Result<(), AdaptError> {
        self.received += 1;
        if self.received > self.job.max_records {
            return Err(AdaptError::rejected(
                Code::L002,
                format!("more than {} records in one delivery", self.job.max_records),
            ));
        }
        Ok(())
    }

    /// Adds a record to the batch for the front.
    fn push(&mut self, record: Incoming) -> Result<(), AdaptError> {
        self.batch.push(record);
        if self.batch.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }
}

/// The front of the pipeline: drafts → `F005`, validation, the receipt's counts, errors and
/// warnings; accepted records go to the back in batches.
struct Front<'j> {
    validate_span: tracing::Span,
    job: &'j Job<'j>,
    /// To the back; `None` once the front is done.
    tx: Option<std::sync::mpsc::SyncSender<Vec<Checked>>>,
    batch: Vec<Checked>,
    validate_time: Duration,
    /// Time spent mapping records the engine handed over unmapped (part of the `adapt` stage).
    map_time: Duration,
    validated: u64,
    /// Time spent waiting for the back to take a batch.
    waited: Duration,
    header: DeliveryHeader,
    accepted: u64,
    rejected: u64,
    errors: Vec<Entry>,
    warnings: Vec<Entry>,
    periods: BTreeSet<String>,
    /// The record ids seen so far (`F005`).
    seen: SeenIds,
    scopes: BTreeSet<(String, String)>,
    rejected_ids: Vec<String>,
    /// Clients of records with receipt entries from the front (see [`Outcome::subjects`]).
    subjects: Vec<crate::store::ReceiptSubject>,
    /// Why the front stopped (handing over to the back failed, or serialising a record).
    failed: Option<AdaptError>,
    /// Where a record's canonical JSON is written before it is copied out at its size: a new
    /// `String` grew four times on the way to a record's 1.1 KB.
    json: Vec<u8>,
}

impl Front<'_> {
    /// Takes one message from the engine.
    fn take(&mut self, message: ToFront) -> Result<(), AdaptError> {
        match message {
            ToFront::Header(header) => self.header = header,
            ToFront::Warning(issue) => self.warnings.push(Entry::from_issue(None, None, issue)),
            ToFront::Drafts(records) => {
                for record in records {
                    let draft = match record {
                        Incoming::Mapped(draft) => draft,
                        Incoming::Unmapped(record) => {
                            let started = Instant::now();
                            let draft = self.job.mapping.map_unmapped(record);
                            self.map_time += started.elapsed();
                            draft
                        }
                    };
                    self.record(draft)?;
                }
            }
        }
        Ok(())
    }

    /// Notes the client of the record at `position` when entries about it were added since
    /// `before` (lengths of errors and warnings) and the job keeps an audit trail.
    fn note_subject(&mut self, position: usize, client_id: Option<&str>, before: (usize, usize)) {
        let added = (self.errors.len(), self.warnings.len()) != before;
        if let (true, Some(key), Some(client_id)) = (added, self.job.audit_key, client_id) {
            self.subjects.push(crate::store::ReceiptSubject {
                record: position as i64,
                subject: key.subject(self.job.vendor, client_id),
            });
        }
    }

    /// Hands the collected records to the back.
    fn flush(&mut self) -> Result<(), AdaptError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        hand_over(&self.tx, batch, &mut self.waited)
    }
}

impl Front<'_> {
    fn record(&mut self, mut draft: Draft) -> Result<(), AdaptError> {
        let position = draft.position;
        let record_id = draft.record_id.clone();
        if let Some(id) = &record_id
            && !self.seen.insert(id)
        {
            draft.issues.push(Issue::new(
                Code::F005,
                "source.record_id",
                "the record id occurs twice in the delivery (this record is the second)",
            ));
        }
        draft
            .fields
            .insert("schema_version".into(), SCHEMA_VERSION.into());
        let source = draft
            .fields
            .entry("source")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Value::Object(s) = source {
            s.insert("vendor".into(), self.job.vendor.into());
            s.insert("format".into(), self.job.mapping.id().into());
            s.insert("delivery_id".into(), self.job.delivery_id.into());
        }
        let mapping = self.job.mapping;
        let entry = |issue: Issue| {
            let source = (issue.code != Code::W002)
                .then(|| issue.field.as_deref().and_then(|f| mapping.source_of(f)))
                .flatten()
                .map(str::to_string);
            let mut entry = Entry::from_issue(Some(position), record_id.as_deref(), issue);
            entry.source = source;
            entry
        };
        // The client of a rejected record is known only from its draft.
        let client_id = self
            .job
            .audit_key
            .and_then(|_| draft.text("client", "client_id").map(str::to_string));
        let before = (self.errors.len(), self.warnings.len());
        let started = Instant::now();
        let checked = self
            .validate_span
            .in_scope(|| self.job.validator.check(draft));
        self.validate_time += started.elapsed();
        self.validated += 1;
        for w in checked.warnings {
            self.warnings.push(entry(w));
        }
        let record = match checked.record {
            Some(r) if checked.errors.is_empty() => r,
            _ => {
                self.rejected += 1;
                for e in checked.errors {
                    self.errors.push(entry(e));
                }
                if let Some(id) = record_id {
                    self.rejected_ids.push(id);
                }
                self.note_subject(position, client_id.as_deref(), before);
                return Ok(());
            }
        };
        self.accepted += 1;
        self.periods.insert(record.reporting_period.clone());
        self.scopes
            .insert((record.program.clone(), record.reporting_period.clone()));
        self.note_subject(position, client_id.as_deref(), before);
        if self.header.test && !self.job.emit_test_records {
            return Ok(());
        }
        self.json.clear();
        serde_json::to_writer(&mut self.json, &record)
            .map_err(|e| AdaptError::Aborted(format!("serialising a record failed: {e}")))?;
        let json = std::str::from_utf8(&self.json)
            .map_err(|e| AdaptError::Aborted(format!("serialising a record failed: {e}")))?
            .to_owned();
        self.batch.push(Checked {
            position,
            record,
            json,
            test: self.header.test,
        });
        if self.batch.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }
}

/// The back of the pipeline: routes each accepted record and hands it to the caller.
struct Back<'j, 'o> {
    route_span: tracing::Span,
    job: &'j Job<'j>,
    out: &'o mut (dyn FnMut(Accepted) -> Result<(), AdaptError> + Send),
    routed: BTreeMap<String, u64>,
    notes: Vec<super::receipt::Note>,
    route_time: Duration,
    routed_records: u64,
    /// Why the back stopped (the caller's hand-over failed).
    failed: Option<AdaptError>,
    /// Clients of records with routing notes (see [`Outcome::subjects`]).
    subjects: Vec<crate::store::ReceiptSubject>,
}

impl Back<'_, '_> {
    /// Routes and hands over a batch of records, in order.
    fn take(&mut self, batch: Vec<Checked>) -> Result<(), AdaptError> {
        for checked in batch {
            self.one(checked)?;
        }
        Ok(())
    }

    fn one(&mut self, checked: Checked) -> Result<(), AdaptError> {
        let Checked {
            position,
            record,
            json,
            test,
        } = checked;
        let routed = match (self.job.router, test) {
            (Some(router), false) => {
                let started = Instant::now();
                let routed = self.route_span.in_scope(|| {
                    router.route(
                        &record,
                        &RouteContext {
                            today: self.job.today,
                            withdrawals: self.job.withdrawals,
                            delivery_id: self.job.delivery_id,
                            at: self.job.at,
                            audit_key: self.job.audit_key,
                        },
                    )
                });
                self.route_time += started.elapsed();
                self.routed_records += 1;
                routed
            }
            _ => Routed::default(),
        };
        for item in &routed.items {
            *self.routed.entry(item.recipient.clone()).or_default() += 1;
        }
        if let (false, Some(key)) = (routed.notes.is_empty(), self.job.audit_key) {
            self.subjects.push(crate::store::ReceiptSubject {
                record: position as i64,
                subject: key.subject(self.job.vendor, record.client.client_id.expose()),
            });
        }
        for n in routed.notes {
            self.notes.push(super::receipt::Note {
                record: position,
                record_id: record.source.record_id.clone(),
                recipient: n.recipient,
                code: n.code,
                message: n.message,
            });
        }
        (self.out)(Accepted {
            record,
            json,
            items: routed.items,
            audit: if self.job.audit_key.is_some() {
                routed.audit
            } else {
                Vec::new()
            },
            withdrawn: routed.withdrawn,
        })
    }
}

/// The record ids seen so far in a delivery (`F005`), as 64-bit keyed hashes: 9 bytes an id
/// in the table instead of the id itself (a delivery of millions of records stays within the
/// memory bar). The SipHash key is random per delivery, so no one can craft ids that collide;
/// a false `F005` needs a chance collision among the ids of one delivery: about 1 in 2.7 × 10⁷
/// deliveries of a million records, 1 in 2.7 × 10⁶ of 3.7 million.
#[derive(Default)]
struct SeenIds {
    key: std::collections::hash_map::RandomState,
    hashes: HashSet<u64, std::hash::BuildHasherDefault<Prehashed>>,
}

impl SeenIds {
    /// Adds an id; false when it was seen before.
    fn insert(&mut self, id: &str) -> bool {
        use std::hash::BuildHasher;
        self.hashes.insert(self.key.hash_one(id))
    }
}

/// A hasher for values that are hashes already: passes them through.
#[derive(Default)]
struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::SeenIds;

    #[test]
    fn seen_ids_find_repeats_and_only_repeats() {
        let mut seen = SeenIds::default();
        for i in 0..100_000 {
            assert!(seen.insert(&format!("F-{i}")), "F-{i} is new");
        }
        assert!(!seen.insert("F-0"));
        assert!(!seen.insert("F-99999"));
        assert!(seen.insert("F-100000"));
        // Another delivery hashes with another key.
        let other = SeenIds::default();
        use std::hash::BuildHasher;
        assert_ne!(seen.key.hash_one("F-1"), other.key.hash_one("F-1"));
    }
}
