//! The administrator's console, read side (admin-console.md): all vendors' deliveries and their
//! receipts, one record with what each recipient received of it (an audited read), recipients
//! with their batches and push lanes, pausing and resuming a push lane, counts for the dashboard,
//! and the audit events without client data.

use super::{ApiError, authenticate};
use crate::catalogue::Code;
use crate::clock::rfc3339_ms;
use crate::config::Role;
use crate::gateway::Gateway;
use crate::store::{BatchState, DeliveryFilter, DeliverySummary, NewAuditEvent, PushState};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Errors of the console's read side (answered as API errors).
#[derive(Debug, thiserror::Error)]
pub enum BrowseError {
    /// A query parameter is malformed.
    #[error("{0}")]
    Query(String),
}

impl From<BrowseError> for ApiError {
    fn from(e: BrowseError) -> Self {
        ApiError::new(Code::R400, e.to_string())
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/me",
    operation_id = "admin_me",
    tag = "admin",
    summary = "Who is signed in",
    description = "Role: **admin**.\n\nThe administrator the token belongs to (the console shows \
        it; every change made with the token names this id in the audit trail).",
    responses(
        (status = 200, description = "The administrator.", body = super::console_schemas::Me),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 429, response = super::openapi::TooManyRequests),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn me(req: HttpRequest, gw: web::Data<Gateway>) -> Result<HttpResponse, ApiError> {
    let admin = authenticate(&req, &gw, Role::Admin)?;
    Ok(HttpResponse::Ok().json(json!({"id": admin.id, "role": "admin"})))
}

/// An RFC 3339 time parameter as unix ms.
fn time_param(name: &str, v: Option<&str>) -> Result<Option<i64>, BrowseError> {
    v.map(|s| {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_millis())
            .map_err(|_| BrowseError::Query(format!("{name} must be an RFC 3339 time")))
    })
    .transpose()
}

fn encode_cursor(received_at: i64, id: &str) -> String {
    hex::encode(format!("{received_at}.{id}"))
}

fn decode_cursor(c: &str) -> Result<(i64, String), BrowseError> {
    let bad = || BrowseError::Query("invalid cursor".into());
    let text = String::from_utf8(hex::decode(c).map_err(|_| bad())?).map_err(|_| bad())?;
    let (at, id) = text.split_once('.').ok_or_else(bad)?;
    Ok((at.parse().map_err(|_| bad())?, id.to_string()))
}

/// Query of `GET /admin/deliveries`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// Only this vendor's deliveries.
    vendor: Option<String>,
    /// Only this format (mapping id).
    format: Option<String>,
    /// Only this status (`E1`–`E4`).
    status: Option<String>,
    /// Only `full` or `partial` deliveries.
    mode: Option<String>,
    /// Only the delivery with this id.
    id: Option<String>,
    /// RFC 3339 time: received at or after it.
    #[param(format = DateTime)]
    since: Option<String>,
    /// RFC 3339 time: received before it.
    #[param(format = DateTime)]
    until: Option<String>,
    /// Page size, 1–200 (clamped), default 50.
    #[param(default = 50)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A delivery in the administrator's list: its row and the receipt's counts (no entries).
fn summary_json(d: &DeliverySummary) -> Value {
    let receipt: Value = serde_json::from_str(&d.receipt).unwrap_or(Value::Null);
    let count = |k: &str| receipt.get(k).and_then(Value::as_u64).unwrap_or(0);
    let len = |k: &str| receipt.get(k).and_then(Value::as_array).map_or(0, Vec::len);
    json!({
        "delivery_id": d.id,
        "vendor": d.vendor,
        "format": d.format,
        "mode": d.mode,
        "status": d.status,
        "test": d.test,
        "received_at": rfc3339_ms(d.received_at),
        "received": count("received"),
        "accepted": count("accepted"),
        "rejected": count("rejected"),
        "errors": len("errors"),
        "warnings": len("warnings"),
        "mapping_version": receipt.get("mapping_version"),
    })
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/deliveries",
    operation_id = "admin_list_deliveries",
    tag = "admin",
    summary = "All vendors' deliveries, newest first, filtered and paged",
    description = "Role: **admin**.\n\n\
        Every vendor's deliveries (test and `E4` ones included), newest first, with the counts \
        of their receipts; filtered by vendor, format, status, mode, id and receive time; \
        `next_cursor` is `null` on the last page.",
    params(DeliveriesQuery),
    responses(
        (status = 200, description = "One page of deliveries.", body = super::console_schemas::AdminDeliveryList),
        (status = 400, description = "`R400`: a malformed or unknown parameter.", body = crate::catalogue::ErrorBody),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 429, response = super::openapi::TooManyRequests),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn deliveries(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ApiError> {
    authenticate(&req, &gw, Role::Admin)?;
    let q: DeliveriesQuery = super::query(&req)?;
    let filter = DeliveryFilter {
        vendor: q.vendor,
        format: q.format,
        status: q.status,
        mode: q.mode,
        id: q.id,
        since: time_param("since", q.since.as_deref())?,
        until: time_param("until", q.until.as_deref())?,
    };
    let after = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let limit = q.limit.unwrap_or(50).clamp(1, 200);
    let rows = gw.store.admin_deliveries(&filter, after, limit + 1).await?;
    let page = &rows[..rows.len().min(limit as usize)];
    let next = (rows.len() as i64 > limit)
        .then(|| page.last().map(|d| encode_cursor(d.received_at, &d.id)))
        .flatten();
    let list: Vec<Value> = page.iter().map(summary_json).collect();
    Ok(HttpResponse::Ok().json(json!({"deliveries": list, "next_cursor": next})))
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/deliveries/{id}",
    operation_id = "admin_get_delivery",
    tag = "admin",
    summary = "One delivery of any vendor and its receipt",
    description = "Role: **admin**.\n\n\
        The delivery's row (vendor, format, mode, status, receive time) and its receipt exactly \
        as the vendor got it.",
    params(("id" = String, Path, description = "The delivery id.")),
    responses(
        (status = 200, description = "The delivery.", body = super::console_schemas::AdminDelivery),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 429, response = super::openapi::TooManyRequests),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn delivery(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authenticate(&req, &gw, Role::Admin)?;
    let filter = DeliveryFilter {
        id: Some(path.into_inner()),
        ..DeliveryFilter::default()
    };
    let d = gw
        .store
        .admin_deliveries(&filter, None, 1)
        .await?
        .into_iter()
        .next()
        .ok_or_else(ApiError::not_found)?;
    let mut body = summary_json(&d);
    body["receipt"] = serde_json::from_str(&d.receipt).unwrap_or(Value::Null);
    Ok(HttpResponse::Ok().json(body))
}

/// An audit event naming an administrator's action (no client data: the subject pseudonym is
/// kept beside the event, never in it).
pub(crate) fn admin_event(
    kind: &str,
    admin: &str,
    vendor: &str,
    recipient: Option<&str>,
    subject: Option<String>,
    note: Value,
    now: i64,
) -> NewAuditEvent {
    let mut note = note;
    note["admin"] = json!(admin);
    let event = crate::audit::Event {
        at: rfc3339_ms(now),
        kind: kind.into(),
        delivery_id: None,
        vendor: vendor.to_string(),
        record_ref: None,
        reporting_period: None,
        recipient: recipient.map(str::to_string),
        legal_basis: None,
        citation: None,
        consent_id: None,
        policy_version: None,
        fields: Vec::new(),
        fields_sha256: None,
        note: Some(note.to_string()),
    };
    NewAuditEvent {
        packed: None,
        at_ms: now,
        kind: kind.into(),
        subject,
        body: event.to_json(),
        field_set: None,
    }
}

/// Appends one audit event in its own transaction.
pub(crate) async fn audit_one(gw: &Gateway, event: NewAuditEvent) -> Result<(), ApiError> {
    let mut tx = gw.store.begin_delivery().await?;
    if let Err(e) = tx.audit(&[event]).await {
        let _ = tx.rollback().await;
        return Err(e.into());
    }
    tx.commit_plain().await?;
    Ok(())
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/records/{vendor}/{record_id}",
    operation_id = "admin_get_record",
    tag = "admin",
    summary = "A stored record and what each recipient received of it (audited)",
    description = "Role: **admin**.\n\n\
        The current canonical record of every reporting period of the vendor's record id and, \
        per recipient, each item it received (or will receive) about it, with the policy \
        version, the legal basis and each field's action from the audit trail. Reading it \
        writes an audit event `admin_record_view` naming the administrator.",
    params(
        ("vendor" = String, Path, description = "The vendor id."),
        ("record_id" = String, Path, description = "The vendor's record id."),
    ),
    responses(
        (status = 200, description = "The record and the recipients' views.", body = super::console_schemas::AdminRecord),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 429, response = super::openapi::TooManyRequests),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn record(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let admin = authenticate(&req, &gw, Role::Admin)?;
    let (vendor, record_id) = path.into_inner();
    let records = gw.store.records_by_id(&vendor, &record_id).await?;
    let items = gw.store.record_items(&vendor, &record_id).await?;
    if records.is_empty() && items.is_empty() {
        return Err(ApiError::not_found());
    }
    // The routing events of the records' refs, with their field actions.
    let mut events: Vec<Value> = Vec::new();
    let mut clients: Vec<&str> = records.iter().map(|r| r.client_id.as_str()).collect();
    clients.sort_unstable();
    clients.dedup();
    for client in &clients {
        events.extend(crate::audit::disclosure(&*gw.store, &gw.audit_key, &vendor, client).await?);
    }
    let refs: Vec<&str> = items.iter().map(|i| i.record_ref.as_str()).collect();
    let mut recipients: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for item in &items {
        let event = events.iter().rev().find(|e| {
            e["recipient"] == json!(item.recipient)
                && e["record_ref"] == json!(item.record_ref)
                && e["reporting_period"] == json!(item.reporting_period)
        });
        recipients
            .entry(item.recipient.clone())
            .or_default()
            .push(json!({
                "seq": item.seq,
                "kind": item.kind,
                "reporting_period": item.reporting_period,
                "record_ref": item.record_ref,
                "created_at": rfc3339_ms(item.created_at),
                "batch_id": item.batch_id,
                "body": serde_json::from_str::<Value>(&item.body).unwrap_or(Value::Null),
                "policy_version": event.map(|e| e["policy_version"].clone()),
                "legal_basis": event.map(|e| e["legal_basis"].clone()),
                "consent_id": event.map(|e| e["consent_id"].clone()),
                "fields": event.map_or(json!([]), |e| e["fields"].clone()),
            }));
    }
    // Recipients the record was not routed to, and why (from the audit trail).
    let not_routed: Vec<Value> = events
        .iter()
        .filter(|e| e["kind"] == "not_routed" && !refs.contains(&e["record_ref"].as_str().unwrap_or("")))
        .map(|e| json!({"recipient": e["recipient"], "reporting_period": e["reporting_period"], "note": e["note"]}))
        .collect();
    let now = gw.clock.now_ms();
    let subject = clients.first().map(|c| gw.audit_key.subject(&vendor, c));
    audit_one(
        &gw,
        admin_event(
            "admin_record_view",
            &admin.id,
            &vendor,
            None,
            subject,
            json!({"records": records.len(), "items": items.len()}),
            now,
        ),
    )
    .await?;
    tracing::info!(admin = %admin.id, vendor = %vendor, "record viewed in the console");
    let records: Vec<Value> = records
        .iter()
        .map(|r| {
            json!({
                "reporting_period": r.reporting_period,
                "updated_at": rfc3339_ms(r.updated_at),
                "record": serde_json::from_str::<Value>(&r.body).unwrap_or(Value::Null),
            })
        })
        .collect();
    let recipients: Vec<Value> = recipients
        .into_iter()
        .map(|(id, items)| json!({"recipient": id, "items": items}))
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "vendor": vendor,
        "record_id": record_id,
        "records": records,
        "recipients": recipients,
        "not_routed": not_routed,
    })))
}

/// A recipient as the console shows it: policy summary, and batches (pull) or the push lane.
async fn recipient_json(
    gw: &Gateway,
    r: &crate::route::Recipient,
    detail: bool,
) -> Result<Value, ApiError> {
    let p = &r.policy.file;
    let kind = format!("{:?}", p.delivery.kind).to_lowercase();
    let mut v = json!({
        "id": r.id(),
        "description": p.description,
        "kind": kind,
        "purpose": p.purpose,
        "legal_basis": format!("{:?}", p.legal_basis).to_lowercase(),
        "citation": p.citation,
        "policy_version": r.policy.version,
        "route": {
            "programs": p.route.programs,
            "vendors": p.route.vendors,
            "municipality_prefixes": p.route.municipality_prefixes,
        },
    });
    if detail {
        v["fields"] = json!(p.fields);
    }
    let id = r.id();
    if kind == "push" {
        let pending = gw.store.push_groups(PushState::Pending, Some(id)).await?;
        let dead = gw.store.push_groups(PushState::Dead, Some(id)).await?;
        let head = pending.first();
        v["push"] = json!({
            "paused": gw.store.lane_paused(id).await?,
            "waiting_items": gw.store.push_backlog(id).await?,
            "pending_groups": pending.len(),
            "in_flight": head.map(|g| g.attempts > 0),
            "next_attempt_at": head.map(|g| rfc3339_ms(g.next_at)),
            "last_error": head.and_then(|g| g.last_error.clone()),
            "oldest_waiting_at": head.map(|g| rfc3339_ms(g.updated_at)),
            "dead_letters": dead.len(),
        });
        if detail {
            v["push"]["groups"] = json!(
                pending
                    .iter()
                    .take(50)
                    .map(|g| json!(super::dead_letters::group_view(g)))
                    .collect::<Vec<_>>()
            );
            let mut letters = Vec::with_capacity(dead.len());
            for g in &dead {
                let mut letter = json!(super::dead_letters::group_view(g));
                // The records it holds, by the recipient's refs (never a value of a field).
                let refs: Vec<String> = gw
                    .store
                    .batch_items(&g.batch_id, 0, DEAD_LETTER_REFS)
                    .await?
                    .iter()
                    .filter_map(|i| {
                        let item: Value = serde_json::from_str(&i.body).ok()?;
                        item["record_ref"].as_str().map(str::to_string)
                    })
                    .collect();
                letter["record_refs"] = json!(refs);
                letters.push(letter);
            }
            v["push"]["dead"] = json!(letters);
            // Dead letters given up, newest first (replayed ones went back to the line).
            let discarded = gw.store.push_groups(PushState::Discarded, Some(id)).await?;
            v["push"]["discarded"] = json!(
                discarded
                    .iter()
                    .rev()
                    .take(50)
                    .map(|g| json!(super::dead_letters::group_view(g)))
                    .collect::<Vec<_>>()
            );
        }
    } else {
        let batches = gw.store.batches(id, None).await?;
        let ready: Vec<_> = batches
            .iter()
            .filter(|b| b.state == BatchState::Ready)
            .collect();
        v["pull"] = json!({
            "open_items": gw.store.open_items(id).await?,
            "ready_batches": ready.len(),
            "acknowledged_batches": batches.len() - ready.len(),
            "oldest_ready_at": ready.first().map(|b| rfc3339_ms(b.created_at)),
            "last_batch_at": batches.last().map(|b| rfc3339_ms(b.created_at)),
        });
        if detail {
            v["pull"]["batches"] = json!(
                batches
                    .iter()
                    .rev()
                    .take(50)
                    .map(|b| json!({
                        "batch_id": b.batch_id,
                        "created_at": rfc3339_ms(b.created_at),
                        "items": b.items,
                        "periods": b.periods,
                        "state": b.state.as_str(),
                    }))
                    .collect::<Vec<_>>()
            );
        }
    }
    Ok(v)
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/recipients",
    operation_id = "admin_list_recipients",
    tag = "admin",
    summary = "Recipients with policy summary, batches and push lanes",
    description = "Role: **admin**.\n\n\
        Every configured recipient: purpose, legal basis, route filter, policy version, kind; \
        for pull recipients the open items and batches by state, for push recipients the items \
        waiting, the lane's head (next attempt, last error), whether the lane is paused and the \
        number of dead letters.",
    responses(
        (status = 200, description = "The recipients.", body = super::console_schemas::AdminRecipientList),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 429, response = super::openapi::TooManyRequests),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn recipients(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ApiError> {
    authenticate(&req, &gw, Role::Admin)?;
    let mut list = Vec::new();
    for r in gw.router.recipients() {
        list.push(recipient_json(&gw, r, false).await?);
    }
    Ok(HttpResponse::Ok().json(json!({"recipients": list})))
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/recipients/{id}",
    operation_id = "admin_get_recipient",
    tag = "admin",
    summary = "One recipient with its policy, batches or push lane and dead letters",
    description = "Role: **admin**.\n\n\
        As in the list, plus the policy's fields and actions, the latest 50 batches (pull) or \
        pending groups, all dead letters with the record refs they hold (at most 200 per dead \
        letter) and the latest 50 discarded ones (push).",
    params(("id" = String, Path, description = "The recipient id.")),
    responses(
        (status = 200, description = "The recipient.", body = super::console_schemas::AdminRecipient),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 429, response = super::openapi::TooManyRequests),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn recipient(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authenticate(&req, &gw, Role::Admin)?;
    let r = gw.router.recipient(&path).ok_or_else(ApiError::not_found)?;
    Ok(HttpResponse::Ok().json(recipient_json(&gw, r, true).await?))
}

/// Most record refs shown per dead letter.
const DEAD_LETTER_REFS: i64 = 200;

/// Pause or resume: the push recipient, or `404`/`400`.
async fn set_paused(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    id: String,
    paused: bool,
) -> Result<HttpResponse, ApiError> {
    let admin = authenticate(&req, &gw, Role::Admin)?;
    let r = gw.router.recipient(&id).ok_or_else(ApiError::not_found)?;
    if r.policy.file.delivery.kind != crate::consent::policy::DeliveryKind::Push {
        return Err(ApiError::new(
            Code::R400,
            "this recipient pulls its batches; only push lanes can be paused",
        ));
    }
    gw.store.set_lane_paused(&id, paused).await?;
    let kind = if paused {
        "lane_paused"
    } else {
        "lane_resumed"
    };
    audit_one(
        &gw,
        admin_event(
            kind,
            &admin.id,
            "",
            Some(&id),
            None,
            json!({}),
            gw.clock.now_ms(),
        ),
    )
    .await?;
    tracing::info!(admin = %admin.id, recipient = %id, paused, "push lane {}", if paused { "paused" } else { "resumed" });
    Ok(HttpResponse::Ok().json(json!({"recipient": id, "paused": paused})))
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/recipients/{id}/pause",
    operation_id = "pause_push_lane",
    tag = "admin",
    summary = "Stop a push lane (audited)",
    description = "Role: **admin**.\n\n\
        No group of the recipient is sent until the lane is resumed (an attempt on the wire \
        finishes; its outcome is recorded again later). Idempotent. Writes an audit event \
        `lane_paused` naming the administrator.",
    params(("id" = String, Path, description = "The push recipient's id.")),
    responses(
        (status = 200, description = "Paused.", body = super::console_schemas::LaneState),
        (status = 400, description = "`R400`: the recipient pulls its batches.", body = crate::catalogue::ErrorBody),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 429, response = super::openapi::TooManyRequests),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn pause(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_paused(req, gw, path.into_inner(), true).await
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/recipients/{id}/resume",
    operation_id = "resume_push_lane",
    tag = "admin",
    summary = "Restart a paused push lane (audited)",
    description = "Role: **admin**.\n\n\
        The lane is free again and the next process to claim it sends on. Idempotent. Writes \
        an audit event `lane_resumed` naming the administrator.",
    params(("id" = String, Path, description = "The push recipient's id.")),
    responses(
        (status = 200, description = "Resumed.", body = super::console_schemas::LaneState),
        (status = 400, description = "`R400`: the recipient pulls its batches.", body = crate::catalogue::ErrorBody),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 429, response = super::openapi::TooManyRequests),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn resume(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_paused(req, gw, path.into_inner(), false).await
}

/// Query of `GET /admin/stats`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// `24h` (hourly buckets, default) or `30d` (daily buckets).
    #[param(pattern = "^(24h|30d)$")]
    window: Option<String>,
    /// The grouping of `groups`: `vendor`, `format`, `status` (default) or `code`.
    #[param(pattern = "^(vendor|format|status|code)$")]
    by: Option<String>,
}

/// Most deliveries the dashboard counts per window.
const STATS_LIMIT: i64 = 20_000;

#[utoipa::path(
    get,
    path = "/api/v1/admin/stats",
    operation_id = "admin_stats",
    tag = "admin",
    summary = "Counts for the dashboard",
    description = "Role: **admin**.\n\n\
        Deliveries of the window (the last 24 hours in hourly buckets, or the last 30 days in \
        daily buckets) by status per bucket (`series`), grouped by `by` (`groups`: key and \
        count), records received / accepted / rejected, the most frequent error codes, and per \
        recipient the items waiting, the oldest waiting, the last batch or push and dead \
        letters. Counts at most the newest 20,000 deliveries of the window (`truncated`).",
    params(StatsQuery),
    responses(
        (status = 200, description = "The counts.", body = super::console_schemas::AdminStats),
        (status = 400, description = "`R400`: an unknown `window` or `by`.", body = crate::catalogue::ErrorBody),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 429, response = super::openapi::TooManyRequests),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn stats(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ApiError> {
    authenticate(&req, &gw, Role::Admin)?;
    let q: StatsQuery = super::query(&req)?;
    let (window, bucket_ms, buckets) = match q.window.as_deref().unwrap_or("24h") {
        "24h" => ("24h", 3_600_000_i64, 24_i64),
        "30d" => ("30d", 86_400_000, 30),
        _ => return Err(BrowseError::Query("window must be 24h or 30d".into()).into()),
    };
    let by = q.by.as_deref().unwrap_or("status");
    if !["vendor", "format", "status", "code"].contains(&by) {
        return Err(BrowseError::Query("by must be vendor, format, status or code".into()).into());
    }
    let now = gw.clock.now_ms();
    let end = (now / bucket_ms + 1) * bucket_ms;
    let start = end - bucket_ms * buckets;
    let filter = DeliveryFilter {
        since: Some(start),
        ..DeliveryFilter::default()
    };
    let rows = gw
        .store
        .admin_deliveries(&filter, None, STATS_LIMIT + 1)
        .await?;
    let truncated = rows.len() as i64 > STATS_LIMIT;
    let mut series: Vec<BTreeMap<&str, u64>> = vec![BTreeMap::new(); buckets as usize];
    let mut groups: BTreeMap<String, u64> = BTreeMap::new();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    let (mut received, mut accepted, mut rejected) = (0u64, 0u64, 0u64);
    for d in rows.iter().take(STATS_LIMIT as usize) {
        let i = ((d.received_at - start) / bucket_ms).clamp(0, buckets - 1) as usize;
        let status: &str = match d.status.as_str() {
            "E1" => "E1",
            "E2" => "E2",
            "E3" => "E3",
            _ => "E4",
        };
        *series[i].entry(status).or_default() += 1;
        *statuses.entry(d.status.clone()).or_default() += 1;
        let receipt: Value = serde_json::from_str(&d.receipt).unwrap_or(Value::Null);
        let n = |k: &str| receipt.get(k).and_then(Value::as_u64).unwrap_or(0);
        received += n("received");
        accepted += n("accepted");
        rejected += n("rejected");
        let mut own_codes = Vec::new();
        for list in ["errors", "warnings"] {
            for e in receipt
                .get(list)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(code) = e.get("code").and_then(Value::as_str) {
                    *codes.entry(code.to_string()).or_default() += 1;
                    own_codes.push(code.to_string());
                }
            }
        }
        match by {
            "vendor" => *groups.entry(d.vendor.clone()).or_default() += 1,
            "format" => *groups.entry(d.format.clone()).or_default() += 1,
            "status" => *groups.entry(d.status.clone()).or_default() += 1,
            _ => {
                for c in own_codes {
                    *groups.entry(c).or_default() += 1;
                }
            }
        }
    }
    let series: Vec<Value> = series
        .iter()
        .enumerate()
        .map(|(i, counts)| {
            json!({
                "start": rfc3339_ms(start + i as i64 * bucket_ms),
                "E1": counts.get("E1").copied().unwrap_or(0),
                "E2": counts.get("E2").copied().unwrap_or(0),
                "E3": counts.get("E3").copied().unwrap_or(0),
                "E4": counts.get("E4").copied().unwrap_or(0),
            })
        })
        .collect();
    let mut groups: Vec<(String, u64)> = groups.into_iter().collect();
    groups.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut codes: Vec<(String, u64)> = codes.into_iter().collect();
    codes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    codes.truncate(10);
    let mut recipients = Vec::new();
    for r in gw.router.recipients() {
        let v = recipient_json(&gw, r, false).await?;
        let (waiting, oldest, last, dead) = if let Some(p) = v.get("push") {
            (
                p["waiting_items"].clone(),
                p["oldest_waiting_at"].clone(),
                Value::Null,
                p["dead_letters"].clone(),
            )
        } else {
            let p = &v["pull"];
            (
                p["open_items"].clone(),
                p["oldest_ready_at"].clone(),
                p["last_batch_at"].clone(),
                json!(0),
            )
        };
        recipients.push(json!({"id": r.id(), "kind": v["kind"], "waiting": waiting, "oldest_waiting_at": oldest, "last_batch_at": last, "dead_letters": dead}));
    }
    Ok(HttpResponse::Ok().json(json!({
        "window": window,
        "since": rfc3339_ms(start),
        "deliveries": rows.len().min(STATS_LIMIT as usize),
        "truncated": truncated,
        "by_status": statuses,
        "records": {"received": received, "accepted": accepted, "rejected": rejected},
        "series": series,
        "by": by,
        "groups": groups.into_iter().map(|(key, count)| json!({"key": key, "count": count})).collect::<Vec<_>>(),
        "codes": codes.into_iter().map(|(code, count)| json!({"code": code, "count": count})).collect::<Vec<_>>(),
        "recipients": recipients,
    })))
}

/// Query of `GET /admin/audit/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only events of this kind (`routing`, `not_routed`, `erasure`, `lane_paused`, …).
    kind: Option<String>,
    /// Only events about this recipient.
    recipient: Option<String>,
    /// RFC 3339 time: at or after it.
    #[param(format = DateTime)]
    since: Option<String>,
    /// RFC 3339 time: before it.
    #[param(format = DateTime)]
    until: Option<String>,
    /// `next_cursor` of the previous page (the last `seq` seen).
    cursor: Option<String>,
    /// Page size, 1–500 (clamped), default 100.
    #[param(default = 100)]
    limit: Option<i64>,
}

/// Events read from the store per step while filtering.
const AUDIT_PAGE: i64 = 2_000;

#[utoipa::path(
    get,
    path = "/api/v1/admin/audit/events",
    operation_id = "admin_audit_events",
    tag = "admin",
    summary = "Audit events, oldest first, filtered, without client data",
    description = "Role: **admin**.\n\n\
        The audit trail in chain order: seq, time, kind, vendor, recipient, delivery id, legal \
        basis, policy version, the number of fields delivered and the note. Subject pseudonyms, \
        record refs and consent ids are left out. `next_cursor` is `null` at the end.",
    params(AuditQuery),
    responses(
        (status = 200, description = "One page of events.", body = super::console_schemas::AdminAuditEvents),
        (status = 400, description = "`R400`: a malformed or unknown parameter.", body = crate::catalogue::ErrorBody),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 429, response = super::openapi::TooManyRequests),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn audit_events(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ApiError> {
    authenticate(&req, &gw, Role::Admin)?;
    let q: AuditQuery = super::query(&req)?;
    let since = time_param("since", q.since.as_deref())?;
    let until = time_param("until", q.until.as_deref())?;
    let mut after: i64 = match &q.cursor {
        None => 0,
        Some(c) => c
            .parse()
            .map_err(|_| BrowseError::Query("invalid cursor".into()))?,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 500) as usize;
    let mut out = Vec::new();
    let mut next: Option<String> = None;
    // At most 50 store pages per request, so a rare filter cannot hold the server long.
    'pages: for round in 0..50 {
        let rows = gw.store.audit_events(after, AUDIT_PAGE).await?;
        let n = rows.len();
        for row in rows {
            if out.len() == limit {
                next = Some(after.to_string());
                break 'pages;
            }
            after = row.seq;
            if since.is_some_and(|s| row.at_ms < s) || until.is_some_and(|u| row.at_ms >= u) {
                continue;
            }
            if q.kind.as_deref().is_some_and(|k| k != row.kind) {
                continue;
            }
            let e: Value = serde_json::from_str(&row.body).unwrap_or(Value::Null);
            if let Some(r) = &q.recipient
                && e["recipient"].as_str() != Some(r)
            {
                continue;
            }
            let fields = e["fields"].as_array().map(Vec::len);
            out.push(json!({
                "seq": row.seq,
                "at": rfc3339_ms(row.at_ms),
                "kind": row.kind,
                "vendor": e["vendor"],
                "recipient": e["recipient"],
                "delivery_id": e["delivery_id"],
                "reporting_period": e["reporting_period"],
                "legal_basis": e["legal_basis"],
                "policy_version": e["policy_version"],
                "fields": fields,
                "note": e["note"],
            }));
        }
        if (n as i64) < AUDIT_PAGE {
            break;
        }
        if round == 49 {
            next = Some(after.to_string());
        }
    }
    Ok(HttpResponse::Ok().json(json!({"events": out, "next_cursor": next})))
}
