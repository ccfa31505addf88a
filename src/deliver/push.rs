//! Push delivery (http-api.md, "Push recipients"): the outbox workers that POST a push
//! recipient's items to its HTTPS endpoint.
//!
//! The outbox is the store's items table. A push recipient's open items are sealed into groups
//! of at most `batch_size` items ([`crate::store::PushGroup`], one batch each); each group is
//! sent as `{"items": [ … ]}` with `Idempotency-Key: <group id>` (the same on every attempt),
//! `X-Weiche-Timestamp` (unix seconds) and `X-Weiche-Signature: hex(HMAC-SHA512(secret,
//! timestamp + "." + body))`.
//!
//! **One lane per recipient.** A process sends a recipient's groups only while it holds that
//! recipient's lane: a lease in the store (claimed with `FOR UPDATE SKIP LOCKED` on
//! PostgreSQL), renewed while it works and taken over by another process once it expires. A
//! lane sends one group at a time, in seal order, so items for one record arrive in the order
//! they arose, and every group is sent by one process; a result is recorded only while the
//! lane is still held (fencing), so a process that lost its lease cannot overwrite another's
//! work. A lane reads up to 32 pending groups at once, reads the next group's items while one
//! is on the wire, and records the outcomes of such a window in one transaction; so after a
//! crash the next holder sends again, with the same `Idempotency-Key`, every group of the
//! crashed process's last window whose outcome was not yet recorded (at most 32).
//!
//! **Retries.** `2xx` delivers. `408`, `429`, `5xx`, other non-`4xx` answers, timeouts and
//! connection errors are retried after `backoff_base_ms · 2^(n-1)`, capped at
//! `backoff_cap_ms`, with "equal jitter" (half fixed, half random), or after `Retry-After` when
//! the answer asks for longer (at most a day). The lane waits for the head group meanwhile:
//! later groups never overtake it. After `max_attempts` attempts, or at once on any other
//! `4xx`, the group becomes a dead letter (an audit event) and the lane moves on; an
//! administrator replays (the group is then next in line) or discards it.

use crate::config::push::PushEndpoint;
use crate::consent::policy::{DeliveryKind, DeliverySettings};
use crate::gateway::Gateway;
use crate::store::{
    NewAuditEvent, PushGroup, PushOutcome, PushResult, PushState, SealRule, StoreError,
};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::Sha512;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Pending groups a lane reads at once; their outcomes are recorded in one transaction.
const WINDOW: i64 = 32;

/// Longest wait a `Retry-After` answer is granted.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Errors of push delivery.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The store failed.
    #[error("push: {0}")]
    Store(#[from] StoreError),
    /// A stored item is not what the store promised.
    #[error("push group {0}: {1}")]
    Corrupt(String, String),
}

/// A push recipient's endpoint, ready to send: URL, HTTPS client (rustls with the recipient's
/// CA and optional client certificate), signing secret.
pub struct Target {
    recipient: String,
    url: reqwest::Url,
    client: reqwest::Client,
    secret: secrecy::SecretSlice<u8>,
    timeout: Duration,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("recipient", &self.recipient)
            .field("url", &self.url.as_str())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Builds the HTTPS client of an endpoint: TLS 1.2/1.3 with the BSI suites
    /// ([`crate::tls::provider`]), trusting the endpoint's CA file (or the system's roots),
    /// presenting its client certificate if configured. Redirects are not followed.
    pub fn new(recipient: &str, endpoint: &PushEndpoint) -> Result<Target, String> {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject;
        let url = reqwest::Url::parse(&endpoint.url)
            .map_err(|e| format!("url '{}': {e}", endpoint.url))?;
        let mut roots = rustls::RootCertStore::empty();
        match &endpoint.ca_file {
            Some(path) => {
                for cert in crate::tls::load_certs(path)? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    // A system root rustls cannot use is skipped, as browsers do.
                    let _ = roots.add(cert);
                }
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(crate::tls::provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots);
        let tls = match &endpoint.client_identity {
            Some((cert, key)) => {
                let chain = crate::tls::load_certs(cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("{}: {e}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("client certificate {}: {e}", cert.display()))?
            }
            None => builder.with_no_client_auth(),
        };
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(endpoint.timeout)
            .connect_timeout(endpoint.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("weiche/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Target {
            recipient: recipient.to_string(),
            url,
            client,
            secret: endpoint.secret.clone(),
            timeout: endpoint.timeout,
        })
    }

    /// The request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends one signed JSON body once (alerts): `Ok` for a `2xx`, else what was met.
    pub async fn send_once(&self, idempotency_key: &str, body: Bytes) -> Result<(), String> {
        match self.send(idempotency_key, body).await {
            Attempt::Delivered => Ok(()),
            Attempt::Retryable(e, _) | Attempt::Refused(e) => Err(e),
        }
    }

    /// Sends one group's body once.
    async fn send(&self, idempotency_key: &str, body: Bytes) -> Attempt {
        let timestamp = unix_secs().to_string();
        let sig = signature(self.secret.expose_secret(), &timestamp, &body);
        let answer = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", idempotency_key)
            .header("X-Weiche-Timestamp", &timestamp)
            .header("X-Weiche-Signature", sig)
            .body(body)
            .send()
            .await;
        let mut answer = match answer {
            Ok(a) => a,
            Err(e) => return Attempt::Retryable(transport_error(&e), None),
        };
        let status = answer.status().as_u16();
        let retry_after = answer
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, SystemTime::now()));
        // Read a short answer so the connection can be reused; its first [`ANSWER_KEPT`]
        // bytes are kept with the error for administrators (dead letters), never logged.
        let mut read = 0usize;
        let mut kept: Vec<u8> = Vec::new();
        while read < 64 * 1024 {
            match answer.chunk().await {
                Ok(Some(chunk)) => {
                    read += chunk.len();
                    let room = ANSWER_KEPT.saturating_sub(kept.len());
                    kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                _ => break,
            }
        }
        let error = answer_error(status, &kept);
        match classify(status) {
            Class::Delivered => Attempt::Delivered,
            Class::Retry => Attempt::Retryable(error, retry_after),
            Class::Refused => Attempt::Refused(error),
        }
    }
}

/// `hex(HMAC-SHA512(secret, timestamp + "." + body))`, the `X-Weiche-Signature` value.
pub fn signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha512>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// How an HTTP status is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `2xx`.
    Delivered,
    /// `408`, `429`, `5xx`, and anything that is neither `2xx` nor `4xx`.
    Retry,
    /// Any other `4xx`: a dead letter at once.
    Refused,
}

/// Classifies an answer's status.
pub fn classify(status: u16) -> Class {
    match status {
        200..=299 => Class::Delivered,
        408 | 429 => Class::Retry,
        400..=499 => Class::Refused,
        _ => Class::Retry,
    }
}

/// The delay after the `failures`-th failed attempt (1-based): `base · 2^(failures-1)`, capped
/// at `cap`, of which the second half is scaled by `jitter` ∈ [0, 1).
pub fn backoff(failures: u32, base_ms: u64, cap_ms: u64, jitter: f64) -> Duration {
    let exp = base_ms
        .saturating_mul(1u64 << failures.saturating_sub(1).min(40))
        .min(cap_ms);
    let half = exp / 2;
    // `jitter` < 1, so the random part stays below `exp - half`.
    let random = ((exp - half) as f64 * jitter.clamp(0.0, 1.0)) as u64;
    Duration::from_millis(half + random.min(exp - half))
}

/// A `Retry-After` value (delay seconds or an HTTP date) as a delay from `now`, at most a day.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(secs) = value.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
        let at = SystemTime::UNIX_EPOCH
            + Duration::from_millis(u64::try_from(at.timestamp_millis()).ok()?);
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// What one attempt met.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Attempt {
    Delivered,
    Retryable(String, Option<Duration>),
    Refused(String),
}

/// How much of a receiver's answer is kept with a failed attempt's error (admin-console.md:
/// "status and at most 500 bytes of its body, shown as text").
pub const ANSWER_KEPT: usize = 500;

/// `HTTP <status>`, and `: <answer>` when the receiver said something (at most
/// [`ANSWER_KEPT`] bytes, as text, white space folded).
fn answer_error(status: u16, answer: &[u8]) -> String {
    let text = String::from_utf8_lossy(answer);
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if text.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {text}")
    }
}

/// The part of a stored error that may be logged: the status or transport error, without the
/// receiver's answer (which may quote anything).
pub fn loggable(error: &str) -> &str {
    error.split_once(": ").map_or(error, |(status, _)| status)
}

/// A short, personal-data-free description of a transport error.
fn transport_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        "request failed".into()
    }
}

/// The push settings of a recipient's policy (`None` for pull recipients).
fn settings(gw: &Gateway, recipient: &str) -> Option<DeliverySettings> {
    let r = gw.router.recipient(recipient)?;
    let d = &r.policy.file.delivery;
    (d.kind == DeliveryKind::Push).then(|| d.clone())
}

/// The outcome of an attempt that was the `attempts`-th on its group.
fn decide(attempt: Attempt, attempts: i64, s: &DeliverySettings, now_ms: i64) -> PushOutcome {
    match attempt {
        Attempt::Delivered => PushOutcome::Delivered,
        Attempt::Refused(error) => PushOutcome::Dead { error },
        Attempt::Retryable(error, _) if attempts >= i64::from(s.max_attempts) => {
            PushOutcome::Dead {
                error: format!("{error} (attempt {attempts} of {})", s.max_attempts),
            }
        }
        Attempt::Retryable(error, asked) => {
            let failures = u32::try_from(attempts).unwrap_or(u32::MAX);
            let mut delay = backoff(
                failures,
                s.backoff_base_ms,
                s.backoff_cap_ms,
                rand::random::<f64>(),
            );
            if let Some(asked) = asked {
                delay = delay.max(asked);
            }
            let delay = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            PushOutcome::Retry {
                next_at: now_ms.saturating_add(delay),
                error,
            }
        }
    }
}

/// The audit event of a group that became a dead letter.
fn dead_event(group: &PushGroup, reason: &str, now_ms: i64) -> NewAuditEvent {
    event(group, "dead_letter", Some(reason), None, now_ms)
}

/// The audit event of an administrator replaying (`to` = pending) or discarding a dead letter.
pub fn settle_event(group: &PushGroup, to: PushState, admin: &str, now_ms: i64) -> NewAuditEvent {
    let kind = if to == PushState::Pending {
        "dead_letter_replay"
    } else {
        "dead_letter_discard"
    };
    event(group, kind, None, Some(admin), now_ms)
}

fn event(
    group: &PushGroup,
    kind: &str,
    reason: Option<&str>,
    by: Option<&str>,
    now_ms: i64,
) -> NewAuditEvent {
    let body = crate::audit::PushEvent {
        at: crate::clock::rfc3339_ms(now_ms),
        kind: kind.to_string(),
        batch_id: group.batch_id.clone(),
        recipient: group.recipient.clone(),
        items: group.items,
        attempts: group.attempts,
        reason: reason.map(str::to_string),
        by: by.map(str::to_string),
    };
    NewAuditEvent {
        packed: None,
        at_ms: now_ms,
        kind: kind.to_string(),
        subject: None,
        body: body.to_json(),
        field_set: None,
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The body of a group: `{"items":[…]}` with the stored item JSON as is.
async fn body(gw: &Gateway, group: &PushGroup) -> Result<Bytes, PushError> {
    let items = gw
        .store
        .batch_items(&group.batch_id, 0, group.items.max(1))
        .await?;
    if items.is_empty() {
        return Err(PushError::Corrupt(
            group.batch_id.clone(),
            "no items".into(),
        ));
    }
    let size: usize = items.iter().map(|i| i.body.len() + 1).sum();
    let mut out = Vec::with_capacity(size + 12);
    out.extend_from_slice(b"{\"items\":[");
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item.body.as_bytes());
    }
    out.extend_from_slice(b"]}");
    Ok(Bytes::from(out))
}

/// One recipient's lane in this process: its lease and the time it runs out.
struct Lane {
    recipient: String,
    target: Arc<Target>,
    settings: DeliverySettings,
    held_until: i64,
}

impl Lane {
    /// Claims or renews the lane when less than half of the lease is left. Whether it is held.
    async fn hold(&mut self, gw: &Gateway) -> Result<bool, PushError> {
        let lease_ms =
            i64::try_from(gw.push_worker.lease_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let now = now_ms();
        if now.saturating_add(lease_ms / 2) < self.held_until {
            return Ok(true);
        }
        if gw
            .store
            .claim_lane(&self.recipient, &gw.instance, now, lease_ms)
            .await?
        {
            self.held_until = now.saturating_add(lease_ms);
            Ok(true)
        } else {
            self.held_until = 0;
            Ok(false)
        }
    }

    /// Sends due groups while the lane is held and there is work; returns when idle, waiting
    /// for a retry, or the lane was lost.
    ///
    /// Works in windows of up to [`WINDOW`] pending groups read at once: the groups of a window
    /// are sent one after the other in seal order (the next group's items are read while one is
    /// on the wire), and their outcomes are recorded together in one transaction. A retry ends
    /// the window (later groups wait for it); a dead letter does not.
    async fn drain(
        &mut self,
        gw: &Gateway,
        stop: &tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), PushError> {
        let rule = SealRule {
            max_items: i64::from(self.settings.batch_size),
            max_age_ms: 0,
            push: true,
            call_items: crate::store::SEAL_ITEMS_PER_CALL,
        };
        while !*stop.borrow() && self.hold(gw).await? {
            let groups = gw.store.push_heads(&self.recipient, WINDOW).await?;
            if groups.is_empty() {
                // Groups are sealed only when none is pending, so each is as full as the
                // items waiting allow.
                if gw.store.seal(&self.recipient, rule, now_ms()).await? > 0 {
                    continue;
                }
                return Ok(());
            }
            // An administrator may have paused the lane since it was last claimed (its lease
            // is then the pause's): nothing more is sent until it is resumed.
            if gw.store.lane_paused(&self.recipient).await? {
                self.held_until = 0;
                return Ok(());
            }
            let mut results = Vec::with_capacity(groups.len());
            let sent = self.send_window(gw, stop, &groups, &mut results).await;
            // What was sent is recorded even when the window ended with an error.
            let recorded = gw
                .store
                .push_results(&self.recipient, &gw.instance, &results)
                .await?;
            let waiting = sent?;
            if recorded == 0 && !results.is_empty() {
                // Another process holds the lane now; it sends the groups again if needed.
                self.held_until = 0;
                return Ok(());
            }
            if waiting {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Sends the due groups of a window in order, pushing each outcome to `results`. Whether
    /// the lane now waits (the head is not due, or an attempt is to be retried).
    async fn send_window(
        &mut self,
        gw: &Gateway,
        stop: &tokio::sync::watch::Receiver<bool>,
        groups: &[PushGroup],
        results: &mut Vec<PushResult>,
    ) -> Result<bool, PushError> {
        let due = |g: &PushGroup| g.next_at <= now_ms();
        let mut next_body = match groups.first() {
            Some(g) if due(g) => Some(body(gw, g).await?),
            _ => return Ok(true),
        };
        for (n, group) in groups.iter().enumerate() {
            let Some(payload) = next_body.take() else {
                // The next group is not due yet.
                return Ok(true);
            };
            // Read the following group's items while this one is on the wire.
            let following = groups.get(n + 1).filter(|g| due(g));
            let (attempt, read) = tokio::join!(self.target.send(&group.batch_id, payload), async {
                match following {
                    Some(g) => body(gw, g).await.map(Some),
                    None => Ok(None),
                }
            });
            let now = now_ms();
            let outcome = decide(attempt, group.attempts + 1, &self.settings, now);
            self.report(group, &outcome);
            let audit = match &outcome {
                PushOutcome::Dead { error } => vec![dead_event(
                    &PushGroup {
                        attempts: group.attempts + 1,
                        ..group.clone()
                    },
                    error,
                    now,
                )],
                _ => Vec::new(),
            };
            let retry = matches!(outcome, PushOutcome::Retry { .. });
            results.push(PushResult {
                batch_id: group.batch_id.clone(),
                outcome,
                at_ms: now,
                audit,
            });
            if retry {
                return Ok(true);
            }
            // Stop early, keep the lease: the window's results are recorded either way.
            if *stop.borrow() || !self.hold(gw).await? {
                return Ok(false);
            }
            next_body = read?;
            if following.is_none() {
                return Ok(n + 1 < groups.len());
            }
        }
        Ok(false)
    }

    /// Metrics and a log line (ids and counts only) for an attempt's outcome.
    fn report(&self, group: &PushGroup, outcome: &PushOutcome) {
        let label = match outcome {
            PushOutcome::Delivered => "success",
            PushOutcome::Retry { .. } => "retry",
            PushOutcome::Dead { .. } => "failure",
        };
        crate::telemetry::metrics::push_attempt(label);
        match outcome {
            PushOutcome::Delivered => {}
            PushOutcome::Retry { error, .. } => tracing::info!(
                recipient = %self.recipient,
                batch_id = %group.batch_id,
                attempt = group.attempts + 1,
                "push attempt failed, will retry: {}",
                loggable(error)
            ),
            PushOutcome::Dead { error } => tracing::warn!(
                recipient = %self.recipient,
                batch_id = %group.batch_id,
                items = group.items,
                "push group is a dead letter: {}",
                loggable(error)
            ),
        }
    }
}

/// Runs one task per push recipient (its endpoint in `targets`) until `stop` resolves, then
/// gives the lanes up.
pub async fn run_pusher(
    gw: Arc<Gateway>,
    targets: BTreeMap<String, Arc<Target>>,
    stop: impl std::future::Future<Output = ()>,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for (recipient, target) in &targets {
        let Some(settings) = settings(&gw, recipient) else {
            continue;
        };
        let lane = Lane {
            recipient: recipient.clone(),
            target: target.clone(),
            settings,
            held_until: 0,
        };
        tasks.push(tokio::spawn(run_lane(gw.clone(), lane, stop_rx.clone())));
    }
    stop.await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
}

async fn run_lane(gw: Arc<Gateway>, mut lane: Lane, mut stop: tokio::sync::watch::Receiver<bool>) {
    let poll = Duration::from_millis(gw.push_worker.poll_ms.max(10));
    loop {
        if let Err(e) = lane.drain(&gw, &stop).await {
            tracing::warn!(recipient = %lane.recipient, "push delivery: {e}");
        }
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(poll) => {}
        }
        if *stop.borrow() {
            break;
        }
    }
    if lane.held_until > 0
        && let Err(e) = gw.store.release_lane(&lane.recipient, &gw.instance).await
    {
        tracing::warn!(recipient = %lane.recipient, "cannot release push lane: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_as_the_spec_says() {
        for s in [200, 201, 202, 204, 299] {
            assert_eq!(classify(s), Class::Delivered, "{s}");
        }
        for s in [408, 429, 500, 502, 503, 504, 599, 301, 302, 100] {
            assert_eq!(classify(s), Class::Retry, "{s}");
        }
        for s in [400, 401, 403, 404, 409, 410, 413, 422] {
            assert_eq!(classify(s), Class::Refused, "{s}");
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        assert_eq!(backoff(1, 1000, 60_000, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(1, 1000, 60_000, 0.999), Duration::from_millis(999));
        assert_eq!(backoff(2, 1000, 60_000, 0.0), Duration::from_millis(1000));
        assert_eq!(backoff(3, 1000, 60_000, 0.5), Duration::from_millis(3000));
        assert_eq!(
            backoff(30, 1000, 60_000, 0.0),
            Duration::from_millis(30_000)
        );
        assert!(backoff(30, 1000, 60_000, 0.999) < Duration::from_millis(60_000));
        assert!(backoff(u32::MAX, u64::MAX, u64::MAX, 0.5) > Duration::ZERO);
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        // 2015-10-21T07:28:00Z is 1,445,412,480.
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:30:00 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("9999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn the_receivers_answer_is_kept_as_text_but_not_logged() {
        assert_eq!(answer_error(400, b""), "HTTP 400");
        assert_eq!(
            answer_error(422, b"{\"error\":\n \"bad\tfield\"}"),
            "HTTP 422: {\"error\": \"bad field\"}"
        );
        assert_eq!(loggable("HTTP 422: {\"error\"}"), "HTTP 422");
        assert_eq!(loggable("timeout"), "timeout");
    }

    #[test]
    fn signature_is_hmac_sha512_of_timestamp_dot_body() {
        let sig = signature(b"key", "1700000000", b"{\"items\":[]}");
        let mut mac = Hmac::<Sha512>::new_from_slice(b"key").unwrap();
        mac.update(b"1700000000.{\"items\":[]}");
        assert_eq!(sig, hex::encode(mac.finalize().into_bytes()));
        assert_eq!(sig.len(), 128);
    }

    fn settings() -> DeliverySettings {
        DeliverySettings {
            kind: DeliveryKind::Push,
            batch_max_items: 1,
            batch_max_age_secs: 1,
            batch_size: 100,
            max_attempts: 3,
            backoff_base_ms: 1000,
            backoff_cap_ms: 10_000,
        }
    }

    #[test]
    fn outcomes_follow_attempts_and_retry_after() {
        let s = settings();
        assert_eq!(decide(Attempt::Delivered, 1, &s, 0), PushOutcome::Delivered);
        assert!(matches!(
            decide(Attempt::Refused("HTTP 400".into()), 1, &s, 0),
            PushOutcome::Dead { .. }
        ));
        match decide(Attempt::Retryable("HTTP 503".into(), None), 1, &s, 10) {
            PushOutcome::Retry { next_at, .. } => assert!((510..=1010).contains(&next_at)),
            o => panic!("{o:?}"),
        }
        match decide(
            Attempt::Retryable("HTTP 429".into(), Some(Duration::from_secs(30))),
            1,
            &s,
            0,
        ) {
            PushOutcome::Retry { next_at, .. } => assert_eq!(next_at, 30_000),
            o => panic!("{o:?}"),
        }
        match decide(Attempt::Retryable("timeout".into(), None), 3, &s, 0) {
            PushOutcome::Dead { error } => assert_eq!(error, "timeout (attempt 3 of 3)"),
            o => panic!("{o:?}"),
        }
    }
}
