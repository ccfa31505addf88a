//! Ingest: one delivery from the request body to the receipt.
//!
//! The body streams through a channel bounded by [`READ_AHEAD`] bytes into a blocking thread
//! that runs the [`pipeline`] (mapping engine → validation → routing). Accepted records come
//! back in chunks, staged until the body has ended, and are written into one transaction: after
//! the pipeline, or while it still runs when the writer is free once the body has ended
//! ([`Early`]); the delivery row with its receipt is added at the end and everything is
//! committed together, or nothing is. Idempotency: the
//! payload's message id, else the `Idempotency-Key` header, is registered with the delivery; a
//! repeat with the same content answers the first receipt (`S100`), with other content `409`
//! (`S101`).

pub mod pipeline;
pub mod receipt;
pub mod staging;

pub use receipt::{Entry, Receipt, Status};

use crate::adapt::{InputFault, Mode};
use crate::catalogue::Code;
use crate::gateway::Gateway;
use crate::store::{
    BodyPacker, CommitOutcome, DeliveryTx, ItemKind, NewDelivery, NewItem, NewRecord, StoreError,
};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use staging::{Chunk, Staging};
use std::io::{self, Read};
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::Instrument;

/// Records per staged chunk (and per store write).
const CHUNK: usize = 500;

/// Records per chunk handed to an early write ([`Early`]): small, so that the write keeps up
/// with the pipeline and little is left to write when the pipeline ends.
const EARLY_CHUNK: usize = 100;

/// How far the server reads a body ahead of its pipeline. Once the body has ended, at most this
/// much of it is left to map, which bounds how long an early write transaction ([`Early`]) can
/// be held; and it is what lets a small delivery's body end before its pipeline has begun.
const READ_AHEAD: usize = 1 << 20;

/// Chunks waiting in memory for an early write transaction at most; past this, the rest of the
/// delivery is staged and written after its pipeline, as when there is no early write.
const HANDOFF_BYTES: usize = staging::MEMORY_BYTES;

/// Audit events held back before they are appended early.
const AUDIT_BUFFER: usize = 2_000;

/// A delivery request after authentication.
#[derive(Debug, Clone)]
pub struct DeliveryRequest {
    /// The authenticated vendor.
    pub vendor: String,
    /// `?format=`.
    pub format: Option<String>,
    /// `?mode=`.
    pub mode: Option<String>,
    /// `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
    /// The `charset` of the request's `Content-Type`.
    pub charset: Option<String>,
}

/// What the API answers (it decides the HTTP status).
#[derive(Debug)]
pub enum Answer {
    /// A receipt (a repeated delivery's is the first one's, with `duplicate`).
    Receipt {
        /// The receipt.
        receipt: Box<Receipt>,
    },
    /// An error body.
    Error {
        /// Catalogue code.
        code: Code,
        /// Text for a person.
        message: String,
    },
}

/// `U001`: the store failed, nothing of the delivery was kept, and the vendor may send it again.
fn storage_unavailable() -> Answer {
    Answer::Error {
        code: Code::U001,
        message: "storage unavailable; nothing was stored, retry later".into(),
    }
}

/// What a full delivery cancels by: the (program, period) scopes it covers and the ids of its
/// rejected records (which it does not cancel).
type FullScope = (Vec<(String, String)>, Vec<String>);

/// A delivery's staged output: records, items and revocations in one staging, the audit events
/// of its routing decisions in another, so that the audit chain is appended to only after every
/// record and item is written.
struct Staged {
    /// Chunks of records, items and revocations (their `audit` empty).
    output: Staging,
    /// Chunks holding only audit events, in decision order.
    audit: Staging,
}

/// Between a delivery's pipeline thread and its store side. Once the body has ended, the store
/// side may take the write transaction while the pipeline still runs ([`Early`]); from then on
/// the pipeline hands each chunk over here instead of staging it.
#[derive(Default)]
struct Handoff {
    state: std::sync::Mutex<HandoffState>,
    /// Whether chunks are handed over or may soon be (the body has ended or the transaction is
    /// open, and handing over has not closed), for the pipeline's look at every record.
    taking: std::sync::atomic::AtomicBool,
    /// Woken at every chunk the pipeline hands over or stages.
    ready: tokio::sync::Notify,
}

#[derive(Default)]
struct HandoffState {
    /// The body has ended: the store side tries to take the transaction at every chunk.
    body_ended: bool,
    /// The store side holds the transaction and takes chunks.
    open: bool,
    /// Handing over has ended for good (the queue was full, or output had spilled to the
    /// staging file before the transaction was there): the rest is staged, written after the
    /// pipeline.
    closed: bool,
    /// Chunks handed over, in order, not yet written.
    queue: std::collections::VecDeque<Chunk>,
    /// Their bytes ([`Chunk::bytes`]).
    queued_bytes: usize,
}

impl Handoff {
    fn lock(&self) -> std::sync::MutexGuard<'_, HandoffState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The pipeline's side: hands `chunk` (its bodies packed) to the open transaction, after
    /// whatever `staged` still holds; else stages it (its audit events apart).
    fn put(&self, staged: &mut Staged, mut chunk: Chunk) -> Result<(), staging::StagingError> {
        {
            let mut state = self.lock();
            if state.open && !state.closed {
                let bytes = chunk.bytes();
                if state.queued_bytes + bytes <= HANDOFF_BYTES {
                    // Nothing has spilled (the transaction opens only before that), so the
                    // staged chunks are all in memory: records first, then their events.
                    let earlier = staged.output.take_memory();
                    let events = staged.audit.take_memory();
                    for c in earlier.into_iter().chain(events).chain([chunk]) {
                        state.queued_bytes += c.bytes();
                        state.queue.push_back(c);
                    }
                    drop(state);
                    self.ready.notify_one();
                    return Ok(());
                }
                state.closed = true;
                self.set_taking(&state);
            }
        }
        let events = std::mem::take(&mut chunk.audit);
        staged.output.push(chunk)?;
        if !events.is_empty() {
            staged.audit.push(Chunk {
                audit: events,
                ..Chunk::default()
            })?;
        }
        if staged.output.spilled() || staged.audit.spilled() {
            let mut state = self.lock();
            state.closed = true;
            self.set_taking(&state);
        }
        self.ready.notify_one();
        Ok(())
    }

    /// Records per chunk now: [`EARLY_CHUNK`] while chunks are or may soon be handed over (a
    /// chunk boundary is when the store side tries again to take the transaction), else
    /// [`CHUNK`].
    fn chunk_records(&self) -> usize {
        if self.taking.load(std::sync::atomic::Ordering::Relaxed) {
            EARLY_CHUNK
        } else {
            CHUNK
        }
    }

    /// Sets whether chunks are or may soon be handed over.
    fn set_taking(&self, state: &HandoffState) {
        self.taking.store(
            (state.open || state.body_ended) && !state.closed,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The store side: the chunks handed over so far.
    fn take(&self) -> Vec<Chunk> {
        let mut state = self.lock();
        state.queued_bytes = 0;
        state.queue.drain(..).collect()
    }
}

/// What an early write leaves to the write after the pipeline: its transaction, and the audit
/// events it held back.
type EarlyWrite = (
    Option<Box<dyn DeliveryTx>>,
    Vec<crate::store::NewAuditEvent>,
);

/// What a delivery's pipeline leaves for its store half.
struct Output {
    /// The staged chunks not written early.
    staged: Staged,
    /// What an early write left.
    early: EarlyWrite,
    /// The delivery's `store` stage time (an early write's part included).
    clock: crate::telemetry::StageClock,
}

/// Why a delivery's staged output could not be written.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The staging file could not be read back.
    #[error(transparent)]
    Staging(#[from] staging::StagingError),
}

/// The store half of a delivery: once its body has ended and its pipeline is done, writes the
/// staged output in one transaction — so a slow client never holds a transaction open. The
/// transaction may have begun earlier, after the body ended ([`Early`]).
struct Written<'a> {
    gw: &'a Gateway,
    vendor: &'a str,
    delivery_id: &'a str,
    received_at: i64,
    /// The delivery's `store` stage time.
    clock: &'a crate::telemetry::StageClock,
}

impl Written<'_> {
    /// Writes the staged chunks, then their audit events and, for a full delivery (`full` = its
    /// scopes and the ids of its rejected records), cancels the records it omits. `early` is
    /// what an early write left: its transaction and the audit events it held back. Returns
    /// the open transaction (`None` when nothing was written) and the number of cancelled
    /// records.
    async fn write(
        &self,
        staged: Staged,
        full: Option<FullScope>,
        early: EarlyWrite,
    ) -> Result<(Option<Box<dyn DeliveryTx>>, u64), WriteError> {
        let _timed = self.clock.start();
        let (mut tx, held) = early;
        if tx.is_none() && !staged.output.is_empty() {
            let asked = std::time::Instant::now();
            tx = Some(self.gw.store.begin_delivery().await?);
            // The wait for the write transaction (on SQLite, for the one writer that seals and
            // other deliveries hold in turn): the share of `store` that is queueing.
            crate::telemetry::metrics::stage("store_wait", asked.elapsed());
        }
        if let Some(mut t) = tx.take() {
            // Staged chunks may be small (see `EARLY_CHUNK`): they are written [`CHUNK`] records
            // at a time, so that the multi-row statements stay long.
            let mut pending = Chunk::default();
            for_each_chunk(staged.output, async |chunk| {
                pending.append(chunk);
                if pending.records.len() >= CHUNK {
                    self.chunk(&mut t, std::mem::take(&mut pending)).await?;
                }
                Ok(())
            })
            .await?;
            if !pending.only_audit() {
                self.chunk(&mut t, pending).await?;
            }
            // Audit events come last: appending takes the chain's lock until commit
            // (serialising deliveries on PostgreSQL), so it is held only for the appends, the
            // cancellations of a full delivery and the commit, never while records are written.
            let mut audit = held;
            for_each_chunk(staged.audit, async |chunk| {
                audit.extend(chunk.audit);
                if audit.len() >= AUDIT_BUFFER {
                    t.audit(&audit).await?;
                    audit.clear();
                }
                Ok(())
            })
            .await?;
            if !audit.is_empty() {
                t.audit(&audit).await?;
            }
            tx = Some(t);
        }
        let mut cancelled = 0;
        if let Some((scopes, rejected_ids)) = full {
            // A full delivery cancels the vendor's records it omits in the (program, month)
            // pairs it covers; every recipient holding one is told.
            let mut t = match tx.take() {
                Some(t) => t,
                None => self.gw.store.begin_delivery().await?,
            };
            cancelled = crate::lifecycle::cancel_omitted(
                self.gw,
                &mut t,
                self.delivery_id,
                self.vendor,
                &scopes,
                &rejected_ids,
                self.received_at,
            )
            .await?;
            tx = Some(t);
        }
        Ok((tx, cancelled))
    }

    /// Writes one chunk: revocations for its withdrawn consents, its records and items.
    async fn chunk(&self, tx: &mut Box<dyn DeliveryTx>, chunk: Chunk) -> Result<(), WriteError> {
        crate::lifecycle::revoke(
            self.gw,
            tx,
            self.vendor,
            self.delivery_id,
            &chunk.revocations,
            self.received_at,
        )
        .await?;
        tx.put(&chunk.records, &chunk.items).await?;
        Ok(())
    }
}

/// The early write of a delivery. Once its body has ended — so at most [`READ_AHEAD`] of it is
/// left to map, which bounds the transaction's time — and when the store can begin a write
/// transaction without waiting (no other delivery, seal or checkpoint holds the writer), the
/// delivery's chunks are written as its pipeline hands them over ([`Handoff`]), instead of all
/// after it: the write overlaps the pipeline, and the receipt comes sooner. Nothing is visible
/// before the commit, as before; a delivery that ends rejected or aborted rolls back. A
/// delivery whose output spilled to its staging file before that point is written after its
/// pipeline, as before.
struct Early<'a> {
    w: Written<'a>,
    handoff: &'a Handoff,
    tx: Option<Box<dyn DeliveryTx>>,
    /// Audit events held back for the end (a store that appends them only then).
    audit: Vec<crate::store::NewAuditEvent>,
    /// Why writing failed (the delivery is then answered `U001`).
    failed: Option<WriteError>,
}

impl Early<'_> {
    /// Runs beside the delivery's pipeline (`worker`) until it is done: takes the transaction
    /// when it can, then writes what the pipeline hands over. Returns the pipeline's result.
    async fn beside<T>(
        &mut self,
        worker: tokio::task::JoinHandle<T>,
    ) -> Result<T, tokio::task::JoinError> {
        tokio::pin!(worker);
        {
            let mut state = self.handoff.lock();
            state.body_ended = true;
            self.handoff.set_taking(&state);
        }
        loop {
            if self.failed.is_none() {
                if self.tx.is_none() {
                    self.open().await;
                }
                if let Err(e) = self.write_handed().await {
                    self.failed = Some(e);
                }
            }
            tokio::select! {
                biased;
                done = &mut worker => {
                    // The last chunks the pipeline handed over before it ended.
                    if self.failed.is_none()
                        && let Err(e) = self.write_handed().await
                    {
                        self.failed = Some(e);
                    }
                    return done;
                }
                () = self.handoff.ready.notified() => {}
            }
        }
    }

    /// Takes the write transaction if the store has it free now, and tells the pipeline.
    async fn open(&mut self) {
        if self.handoff.lock().closed {
            return;
        }
        match self.w.gw.store.try_begin_delivery().await {
            Ok(Some(tx)) => {
                let closed = {
                    let mut state = self.handoff.lock();
                    state.open = !state.closed;
                    self.handoff.set_taking(&state);
                    state.closed
                };
                if closed {
                    // The output spilled meanwhile: it is written after the pipeline.
                    let _ = tx.rollback().await;
                } else {
                    crate::telemetry::metrics::early_write();
                    // It did not wait (`store_wait` counts every delivery that wrote).
                    crate::telemetry::metrics::stage("store_wait", std::time::Duration::ZERO);
                    self.tx = Some(tx);
                }
            }
            Ok(None) => {}
            Err(e) => {
                // No early write then; the delivery's write after its pipeline decides.
                tracing::debug!(delivery_id = %self.w.delivery_id, "no early write: {e}");
                let mut state = self.handoff.lock();
                state.closed = true;
                self.handoff.set_taking(&state);
            }
        }
    }

    /// Writes the chunks handed over so far: records, items and revocations, and their audit
    /// events when the store appends them early (else they are held for the end).
    async fn write_handed(&mut self) -> Result<(), WriteError> {
        let Some(tx) = self.tx.as_mut() else {
            return Ok(());
        };
        loop {
            let chunks = self.handoff.take();
            if chunks.is_empty() {
                return Ok(());
            }
            let _timed = self.w.clock.start();
            // Whatever waits is written together, in longer statements.
            let mut all = Chunk::default();
            for chunk in chunks {
                all.append(chunk);
            }
            let mut events = std::mem::take(&mut all.audit);
            if !all.only_audit() {
                self.w.chunk(tx, all).await?;
            }
            if !self.w.gw.store.appends_audit_early() {
                self.audit.append(&mut events);
            } else if !events.is_empty() {
                tx.audit(&events).await?;
            }
        }
    }

    /// What the write after the pipeline continues with: the transaction and the held-back
    /// audit events; an early write that failed is rolled back and its error returned.
    async fn finish(mut self) -> Result<EarlyWrite, WriteError> {
        match self.failed.take() {
            None => Ok((self.tx.take(), std::mem::take(&mut self.audit))),
            Some(e) => {
                self.abandon().await;
                Err(e)
            }
        }
    }

    /// Rolls back what was written early (the delivery stores nothing, or not this way).
    async fn abandon(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.rollback().await;
        }
    }
}

/// Hands every staged chunk to `write`, in order; spilled chunks are read back on a blocking
/// thread, one ahead of the writes.
async fn for_each_chunk(
    staged: Staging,
    mut write: impl AsyncFnMut(Chunk) -> Result<(), WriteError>,
) -> Result<(), WriteError> {
    let chunks = staged.into_chunks()?;
    if chunks.in_memory() {
        for chunk in chunks {
            write(chunk?).await?;
        }
        return Ok(());
    }
    let (chunk_tx, mut chunk_rx) = mpsc::channel(1);
    let reader = tokio::task::spawn_blocking(move || {
        for chunk in chunks {
            if chunk_tx.blocking_send(chunk).is_err() {
                break;
            }
        }
    });
    while let Some(chunk) = chunk_rx.recv().await {
        write(chunk?).await?;
    }
    let _ = reader.await;
    Ok(())
}

/// Receives one delivery, in an `ingest` span, and counts it in the metrics.
pub async fn receive<S, E>(gw: Arc<Gateway>, req: DeliveryRequest, body: S) -> Answer
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let span = tracing::info_span!(
        "ingest",
        weiche.delivery_id = tracing::field::Empty,
        weiche.vendor = %req.vendor,
        weiche.format = tracing::field::Empty,
    );
    let answer = crate::telemetry::StageClock::new("ingest")
        .time(receive_in_span(gw, req, body))
        .instrument(span)
        .await;
    match &answer {
        Answer::Receipt { receipt, .. } if receipt.duplicate => {
            crate::telemetry::metrics::delivery_duplicate()
        }
        Answer::Receipt { receipt, .. } => crate::telemetry::metrics::delivery(&receipt.counts()),
        Answer::Error { code, .. } => crate::telemetry::metrics::delivery_failed(*code),
    }
    answer
}

/// One delivery, in four steps: [`admit`] (vendor, format, mapping, mode), the body forwarded
/// ([`forward_body`]) to the pipeline on a blocking thread ([`run_and_stage`]), and the store
/// ([`store_and_commit`]).
async fn receive_in_span<S, E>(gw: Arc<Gateway>, req: DeliveryRequest, body: S) -> Answer
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let error = |code, message: String| Answer::Error { code, message };
    let (mapping, format, mode_param) = match admit(&gw, &req) {
        Ok(admitted) => admitted,
        Err(answer) => return answer,
    };

    let delivery_id = uuid::Uuid::now_v7().to_string();
    let span = tracing::Span::current();
    span.record("weiche.delivery_id", delivery_id.as_str());
    span.record("weiche.format", format.as_str());
    let received_at = gw.clock.now_ms();
    // The channel's bound is the read-ahead window's bytes, not its chunk count.
    let (body_tx, body_rx) = mpsc::channel::<Result<Bytes, String>>(1024);
    let window = Arc::new(tokio::sync::Semaphore::new(READ_AHEAD));
    let handoff = Arc::new(Handoff::default());
    let withdrawals: std::collections::HashMap<(String, String), String> =
        match gw.store.withdrawals(&req.vendor).await {
            Ok(list) => list
                .into_iter()
                .map(|w| ((w.client_id, w.consent_id), w.withdrawn_on))
                .collect(),
            Err(e) => {
                tracing::warn!(delivery_id = %delivery_id, "store unavailable: {e}");
                return storage_unavailable();
            }
        };
    let today = crate::clock::berlin_date(received_at);
    let at = crate::clock::rfc3339_ms(received_at);

    let worker = {
        let gw = gw.clone();
        let window = window.clone();
        let handoff = handoff.clone();
        let delivery_id = delivery_id.clone();
        let vendor_id = req.vendor.clone();
        let charset = req.charset.clone();
        tokio::task::spawn_blocking(move || {
            // The pipeline's spans are children of the delivery's.
            let _ingest = span.enter();
            let job = pipeline::Job {
                delivery_id: &delivery_id,
                vendor: &vendor_id,
                mapping: &mapping,
                mode_param,
                max_records: gw.limits.max_records,
                charset: charset.as_deref(),
                validator: &gw.validator,
                router: Some(&gw.router),
                emit_test_records: false,
                today,
                at: &at,
                withdrawals: &withdrawals,
                audit_key: Some(&gw.audit_key),
                background: true,
            };
            let reader = ChannelReader::new(body_rx, gw.limits.max_body_bytes).window(window);
            run_and_stage(&gw, &job, reader, &handoff)
        })
    };

    let idle = std::time::Duration::from_secs(gw.limits.body_idle_timeout_secs.max(1));
    let body_end = forward_body(body, body_tx, idle, &window).await;
    let stalled = body_end == BodyEnd::Stalled;

    let store_clock = crate::telemetry::StageClock::new("store");
    let mut early = Early {
        w: Written {
            gw: &gw,
            vendor: &req.vendor,
            delivery_id: &delivery_id,
            received_at,
            clock: &store_clock,
        },
        handoff: &handoff,
        tx: None,
        audit: Vec::new(),
        failed: None,
    };
    let joined = match body_end {
        BodyEnd::Complete => early.beside(worker).await,
        BodyEnd::Failed | BodyEnd::Stalled => worker.await,
    };
    let (outcome, content_hash, staged) = match joined {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(delivery_id = %delivery_id, "delivery worker failed: {e}");
            early.abandon().await;
            return error(
                Code::I500,
                "internal error while processing the delivery".into(),
            );
        }
    };
    let staged = match staged {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(delivery_id = %delivery_id, "staging failed: {e}");
            early.abandon().await;
            return storage_unavailable();
        }
    };
    if let Some(why) = outcome.aborted {
        early.abandon().await;
        tracing::info!(delivery_id = %delivery_id, "delivery aborted: {why}");
        let message = if stalled {
            format!(
                "the body stalled: no data for {} s; nothing was stored",
                idle.as_secs()
            )
        } else {
            "the body could not be read to its end; nothing was stored".to_string()
        };
        return error(Code::X000, message);
    }
    let early = match early.finish().await {
        Ok(early) => early,
        Err(e) => {
            tracing::warn!(delivery_id = %delivery_id, "store failed during delivery: {e}");
            return storage_unavailable();
        }
    };
    store_and_commit(
        &gw,
        &req,
        &delivery_id,
        received_at,
        outcome,
        content_hash,
        Output {
            staged,
            early,
            clock: store_clock,
        },
    )
    .await
}

/// Who may post what: the vendor, its format (`?format=` or its default), the loaded mapping
/// of that format and the vendor's right to it, and `?mode=` (ignored where the payload
/// declares its mode). An error answer when any of them does not hold.
fn admit(
    gw: &Gateway,
    req: &DeliveryRequest,
) -> Result<(Arc<crate::adapt::Mapping>, String, Option<Mode>), Answer> {
    let error = |code, message: String| Err(Answer::Error { code, message });
    let Some(vendor) = gw.vendors.get(&req.vendor) else {
        return error(Code::T071, "only vendors post deliveries".into());
    };
    let Some(format) = req.format.clone().or_else(|| vendor.default_format.clone()) else {
        return error(
            Code::V000,
            "no format given (?format=…) and the vendor has no default format".into(),
        );
    };
    let Some(mapping) = gw.mappings.load().get(&format) else {
        return error(
            Code::V000,
            format!(
                "no mapping loaded for format '{}'",
                crate::catalogue::echo(&format)
            ),
        );
    };
    let allowed = vendor.formats.iter().any(|f| *f == format || f == "*")
        || mapping.file.vendors.contains(&req.vendor);
    if !allowed {
        return error(
            Code::V000,
            format!(
                "format '{}' is not configured for this vendor",
                crate::catalogue::echo(&format)
            ),
        );
    }
    // Formats that declare their mode in the payload ignore the parameter (conformance-rules.md).
    let mode_param = match req.mode.as_deref() {
        _ if mapping.file.delivery.mode.is_some() => None,
        None => None,
        Some(m) => match Mode::parse(m) {
            Some(m) => Some(m),
            None => return error(Code::V000, "mode must be full or partial".into()),
        },
    };
    Ok((mapping, format, mode_param))
}

/// How a request body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyEnd {
    /// Every byte was forwarded.
    Complete,
    /// The transport failed, or the pipeline stopped reading.
    Failed,
    /// Nothing came for the idle time.
    Stalled,
}

/// Forwards the request body into the pipeline's channel until it ends, fails, or sends
/// nothing for `idle`, at most [`READ_AHEAD`] bytes ahead of the pipeline (`window`: the
/// reader gives the bytes back as it takes them).
async fn forward_body<S, E>(
    mut body: S,
    body_tx: mpsc::Sender<Result<Bytes, String>>,
    idle: std::time::Duration,
    window: &tokio::sync::Semaphore,
) -> BodyEnd
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    loop {
        let (next, end) = match tokio::time::timeout(idle, body.next()).await {
            Ok(Some(Ok(bytes))) => (Ok(bytes), None),
            Ok(Some(Err(e))) => (Err(e.to_string()), Some(BodyEnd::Failed)),
            Ok(None) => return BodyEnd::Complete,
            Err(_) => (
                Err(format!("no data for {} s", idle.as_secs())),
                Some(BodyEnd::Stalled),
            ),
        };
        if let Ok(bytes) = &next {
            match window.acquire_many(window_permits(bytes.len())).await {
                Ok(permits) => permits.forget(),
                Err(_) => return BodyEnd::Failed,
            }
        }
        if body_tx.send(next).await.is_err() {
            return end.unwrap_or(BodyEnd::Failed);
        }
        if let Some(end) = end {
            return end;
        }
    }
}

/// The read-ahead window's permits a body chunk of `len` bytes takes (all of the window for a
/// chunk larger than it).
fn window_permits(len: usize) -> u32 {
    u32::try_from(len.min(READ_AHEAD)).unwrap_or(u32::MAX)
}

/// The blocking half of a delivery: runs the pipeline over the body and stages its output in
/// chunks of [`CHUNK`] records ([`EARLY_CHUNK`] while they are written early); returns the pipeline's outcome, the body's SHA-256 and the
/// staged output (or why staging failed, which stopped the pipeline).
fn run_and_stage(
    gw: &Gateway,
    job: &pipeline::Job,
    mut reader: ChannelReader,
    handoff: &Handoff,
) -> (
    pipeline::Outcome,
    String,
    Result<Staged, staging::StagingError>,
) {
    let mut chunk = Chunk::default();
    // Bodies are packed here, on the pipeline's thread, not in the store writer's turn.
    let packer = gw.store.body_packer();
    let mut staged = Staged {
        output: Staging::new(&gw.staging_dir),
        audit: Staging::new(&gw.staging_dir),
    };
    // A staging failure stops the pipeline; the delivery is answered U001.
    let mut failed: Option<staging::StagingError> = None;
    let mut outcome = pipeline::run(job, &mut reader, &mut |acc| {
        let period = acc.record.reporting_period.clone();
        let record_id = acc.record.source.record_id.clone();
        for item in acc.items {
            chunk.items.push(NewItem {
                recipient: item.recipient,
                kind: ItemKind::Record,
                vendor: job.vendor.to_string(),
                record_id: record_id.clone(),
                reporting_period: period.clone(),
                record_ref: item.record_ref,
                body: item.body,
                packed: None,
                consent_id: item.consent_id,
            });
        }
        chunk.audit.extend(acc.audit);
        if !acc.withdrawn.is_empty() {
            let subject = gw
                .audit_key
                .subject(job.vendor, acc.record.client.client_id.expose());
            chunk.revocations.push((
                record_id.clone(),
                period.clone(),
                acc.withdrawn,
                Some(subject),
            ));
        }
        chunk.records.push(NewRecord {
            vendor: job.vendor.to_string(),
            record_id,
            reporting_period: period,
            program: acc.record.program.clone(),
            client_id: acc.record.client.client_id.expose().clone(),
            body: acc.json,
            packed: None,
            delivery_id: job.delivery_id.to_string(),
        });
        if chunk.records.len() >= handoff.chunk_records()
            && let Err(e) = {
                let next = Chunk::with_room_like(&chunk, handoff.chunk_records());
                stage_chunk(
                    &mut staged,
                    handoff,
                    packer.as_deref(),
                    std::mem::replace(&mut chunk, next),
                )
            }
        {
            let why = e.to_string();
            failed = Some(e);
            return Err(crate::adapt::AdaptError::Aborted(why));
        }
        Ok(())
    });
    if outcome.aborted.is_none()
        && !chunk.records.is_empty()
        && let Err(e) = stage_chunk(&mut staged, handoff, packer.as_deref(), chunk)
    {
        outcome.aborted = Some(e.to_string());
        failed = Some(e);
    }
    let staged = match failed {
        None => Ok(staged),
        Some(e) => Err(e),
    };
    (outcome, reader.finish(), staged)
}

/// Packs a chunk's bodies (when the store packs bodies) and hands it over to an early write
/// transaction or stages it ([`Handoff::put`]).
fn stage_chunk(
    staged: &mut Staged,
    handoff: &Handoff,
    packer: Option<&BodyPacker>,
    mut chunk: Chunk,
) -> Result<(), staging::StagingError> {
    if let Some(packer) = packer {
        packer.pack(&mut chunk.records, &mut chunk.items, &mut chunk.audit)?;
    }
    handoff.put(staged, chunk)
}

/// The store half of a delivery, once its body has ended and its pipeline is done: writes the
/// staged output (records, items, revocations, cancellations of a full delivery, audit events)
/// and the delivery row with its receipt in one transaction, or nothing; a repeated delivery is
/// found at commit and answered with the first receipt (`S100`) or `S101`.
async fn store_and_commit(
    gw: &Gateway,
    req: &DeliveryRequest,
    delivery_id: &str,
    received_at: i64,
    outcome: pipeline::Outcome,
    content_hash: String,
    Output {
        staged,
        early,
        clock: store_clock,
    }: Output,
) -> Answer {
    let error = |code, message: String| Answer::Error { code, message };
    let store_span = tracing::info_span!("store", weiche.delivery_id = %delivery_id);
    let mut receipt = outcome.receipt;
    // Deliveries rejected whole and test deliveries store nothing but their receipt.
    let stores_records = receipt.status != Status::E4 && !receipt.test;
    // The body has ended and the pipeline is done: only now does the store transaction begin,
    // unless it began early, when the body had ended.
    let written = if stores_records {
        let w = Written {
            gw,
            vendor: &req.vendor,
            delivery_id,
            received_at,
            clock: &store_clock,
        };
        let full = (receipt.mode == Mode::Full.as_str()).then(|| {
            (
                outcome.scopes.iter().cloned().collect(),
                outcome.rejected_ids,
            )
        });
        w.write(staged, full, early)
            .instrument(store_span.clone())
            .await
    } else {
        // What an early write wrote goes: a delivery rejected whole stores no record.
        if let (Some(tx), _) = early {
            let _ = tx.rollback().await;
        }
        Ok((None, 0))
    };
    let tx = match written {
        Ok((tx, cancelled)) => {
            receipt.cancelled = cancelled;
            tx
        }
        Err(e) => {
            tracing::warn!(delivery_id = %delivery_id, "store failed during delivery: {e}");
            return storage_unavailable();
        }
    };
    let key = if stores_records {
        outcome.payload_key.or(req.idempotency_key.clone())
    } else {
        None
    };
    let receipt_json = match serde_json::to_string(&receipt) {
        Ok(j) => j,
        Err(e) => return error(Code::I500, format!("receipt could not be serialised: {e}")),
    };
    let row = NewDelivery {
        id: delivery_id.to_string(),
        vendor: req.vendor.clone(),
        idempotency_key: key,
        content_hash: content_hash.clone(),
        format: receipt.format.clone(),
        mode: receipt.mode.clone(),
        status: receipt.status.as_str().to_string(),
        test: receipt.test,
        received_at,
        receipt: receipt_json,
        subjects: outcome.subjects,
    };
    let tx = match tx {
        Some(tx) => tx,
        None => match gw.store.begin_delivery().await {
            Ok(tx) => tx,
            Err(e) => {
                tracing::warn!(delivery_id = %delivery_id, "store unavailable: {e}");
                return storage_unavailable();
            }
        },
    };
    let committed = store_clock
        .time(tx.commit(&row))
        .instrument(store_span)
        .await;
    drop(store_clock);
    match committed {
        Ok(CommitOutcome::Committed) => {
            tracing::info!(
                delivery_id = %delivery_id,
                vendor = %req.vendor,
                format = %receipt.format,
                status = receipt.status.as_str(),
                received = receipt.received,
                accepted = receipt.accepted,
                rejected = receipt.rejected,
                "delivery processed"
            );
            Answer::Receipt {
                receipt: Box::new(receipt),
            }
        }
        Ok(CommitOutcome::Duplicate {
            content_hash: first_hash,
            receipt: first,
        }) => {
            if first_hash != content_hash {
                return error(
                    Code::S101,
                    "this idempotency key was used for a delivery with other content".into(),
                );
            }
            match serde_json::from_str::<Receipt>(&first) {
                Ok(mut r) => {
                    r.duplicate = true;
                    tracing::info!(delivery_id = %r.delivery_id, "duplicate delivery answered");
                    Answer::Receipt {
                        receipt: Box::new(r),
                    }
                }
                Err(e) => error(Code::I500, format!("stored receipt unreadable: {e}")),
            }
        }
        Err(e) => {
            tracing::warn!(delivery_id = %delivery_id, "commit failed: {e}");
            storage_unavailable()
        }
    }
}

/// A blocking `Read` over the body chunks the async side forwards; enforces the size limit and
/// hashes the bytes it hands out.
pub struct ChannelReader {
    rx: mpsc::Receiver<Result<Bytes, String>>,
    /// The sender's read-ahead window, given back chunk by chunk as they are taken.
    window: Option<Arc<tokio::sync::Semaphore>>,
    current: Bytes,
    limit: u64,
    total: u64,
    hasher: Sha256,
}

impl ChannelReader {
    /// A reader over a channel with a byte limit.
    pub fn new(rx: mpsc::Receiver<Result<Bytes, String>>, limit: u64) -> Self {
        ChannelReader {
            rx,
            window: None,
            current: Bytes::new(),
            limit,
            total: 0,
            hasher: Sha256::new(),
        }
    }

    /// Gives each chunk's bytes back to the sender's read-ahead `window` as it is taken.
    pub fn window(mut self, window: Arc<tokio::sync::Semaphore>) -> Self {
        self.window = Some(window);
        self
    }

    /// Lowercase hex SHA-256 of everything read.
    pub fn finish(mut self) -> String {
        hex::encode(std::mem::take(&mut self.hasher).finalize())
    }
}

impl Drop for ChannelReader {
    /// A sender still waiting for room in the window learns that no one reads any more.
    fn drop(&mut self) {
        if let Some(window) = &self.window {
            window.close();
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Err(e)) => {
                    return Err(io::Error::other(InputFault::Transport(e)));
                }
                Some(Ok(b)) => {
                    if let Some(window) = &self.window {
                        window.add_permits(window_permits(b.len()) as usize);
                    }
                    self.total += b.len() as u64;
                    if self.total > self.limit {
                        return Err(io::Error::other(InputFault::TooLarge { limit: self.limit }));
                    }
                    self.current = b;
                }
            }
        }
        let n = buf.len().min(self.current.len());
        let part = self.current.split_to(n);
        self.hasher.update(&part);
        buf[..n].copy_from_slice(&part);
        Ok(n)
    }
}
