//! Recipient endpoints: list, fetch (streamed) and acknowledge batches.

use super::{ApiError, authenticate};
use crate::catalogue::Code;
use crate::config::Role;
use crate::gateway::Gateway;
use crate::store::{BatchInfo, BatchState};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use serde::Deserialize;
use std::sync::Arc;

/// Items fetched from the store per page while streaming a batch.
const PAGE: i64 = 1000;

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn info_json(b: &BatchInfo) -> serde_json::Value {
    serde_json::json!({
        "batch_id": b.batch_id,
        "created_at": rfc3339(b.created_at),
        "items": b.items,
        "periods": b.periods,
        "state": b.state.as_str(),
    })
}

/// Query of `GET /batches`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    state: Option<String>,
}

pub(super) async fn list(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ApiError> {
    let me = authenticate(&req, &gw, Role::Recipient)?;
    let query: ListQuery = super::query(&req)?;
    let state = match query.state.as_deref() {
        None => None,
        Some(s) => Some(
            BatchState::parse(s)
                .ok_or_else(|| ApiError::new(Code::R400, "state must be ready or acknowledged"))?,
        ),
    };
    crate::deliver::seal(&gw, &me.id)
        .await
        .map_err(ApiError::unavailable)?;
    let batches = gw
        .store
        .batches(&me.id, state)
        .await
        .map_err(ApiError::unavailable)?;
    let list: Vec<_> = batches.iter().map(info_json).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "batches": list })))
}

#[derive(Clone, Copy, PartialEq)]
enum Form {
    Json,
    Ndjson,
}

pub(super) async fn one(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let me = authenticate(&req, &gw, Role::Recipient)?;
    let batch = gw
        .store
        .batch(&me.id, &path.into_inner())
        .await
        .map_err(ApiError::unavailable)?
        .ok_or_else(ApiError::not_found)?;
    let accept = req
        .headers()
        .get(actix_web::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let form = if accept.contains("application/x-ndjson") {
        Form::Ndjson
    } else if accept.contains("application/json") || accept.contains("*/*") || accept.is_empty() {
        Form::Json
    } else {
        return Err(ApiError::new(
            Code::R400,
            "this version serves batches as application/json or application/x-ndjson",
        ));
    };
    let store = gw.store.clone();
    let head = if form == Form::Json {
        let mut info = info_json(&batch);
        if let Some(m) = info.as_object_mut() {
            m.remove("items");
            m.insert("recipient".into(), batch.recipient.clone().into());
        }
        let text = info.to_string();
        // Open the object again to append the items array.
        format!("{},\"items\":[", &text[..text.len() - 1])
    } else {
        String::new()
    };
    let batch_id = Arc::new(batch.batch_id.clone());
    struct Cursor {
        after: i64,
        first: bool,
        done: bool,
        head: Option<String>,
    }
    let start = Cursor {
        after: 0,
        first: true,
        done: false,
        head: Some(head),
    };
    let stream = futures::stream::unfold(start, move |mut cur| {
        let store = store.clone();
        let batch_id = batch_id.clone();
        async move {
            if let Some(h) = cur.head.take()
                && !h.is_empty()
            {
                return Some((Ok::<_, ApiError>(Bytes::from(h)), cur));
            }
            if cur.done {
                return None;
            }
            let page = match store.batch_items(&batch_id, cur.after, PAGE).await {
                Ok(p) => p,
                Err(e) => {
                    cur.done = true;
                    return Some((Err(ApiError::unavailable(e)), cur));
                }
            };
            let mut out = String::new();
            for item in &page {
                match form {
                    Form::Json => {
                        if !cur.first {
                            out.push(',');
                        }
                        out.push_str(&item.body);
                    }
                    Form::Ndjson => {
                        out.push_str(&item.body);
                        out.push('\n');
                    }
                }
                cur.first = false;
            }
            if let Some(last) = page.last() {
                cur.after = last.seq;
            }
            if (page.len() as i64) < PAGE {
                cur.done = true;
                if form == Form::Json {
                    out.push_str("]}");
                }
            }
            Some((Ok(Bytes::from(out)), cur))
        }
    });
    let content_type = match form {
        Form::Json => "application/json",
        Form::Ndjson => "application/x-ndjson",
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .streaming(stream))
}

/// Body of an acknowledgement.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    #[serde(default)]
    findings: Vec<Finding>,
}

/// One finding about a record of the batch.
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    record_ref: String,
    code: String,
    #[serde(default)]
    message: String,
}

pub(super) async fn ack(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let me = authenticate(&req, &gw, Role::Recipient)?;
    // An empty body acknowledges without findings; anything else must be a valid Ack.
    let findings = if body.iter().all(u8::is_ascii_whitespace) {
        Vec::new()
    } else {
        serde_json::from_slice::<Ack>(&body)
            .map_err(|e| {
                ApiError::new(
                    Code::R400,
                    format!("acknowledgement body is not valid: {e}"),
                )
            })?
            .findings
    };
    let findings =
        serde_json::to_string(&findings).map_err(|e| ApiError::new(Code::R400, e.to_string()))?;
    let batch = gw
        .store
        .ack_batch(&me.id, &path.into_inner(), &findings, gw.clock.now_ms())
        .await
        .map_err(ApiError::unavailable)?
        .ok_or_else(ApiError::not_found)?;
    Ok(HttpResponse::Ok().json(info_json(&batch)))
}
