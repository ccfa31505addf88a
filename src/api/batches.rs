//! Recipient endpoints: list, fetch (streamed) and acknowledge batches.

use super::{ApiError, authenticate};
use crate::catalogue::Code;
use crate::config::Role;
use crate::deliver::formats::{self, BatchFormat, BatchHead, CsvColumns, FormatError};
use crate::gateway::Gateway;
use crate::store::{BatchInfo, BatchItem, BatchState};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use serde::Deserialize;
use std::sync::Arc;

/// Items fetched from the store per page while streaming a batch.
const PAGE: i64 = 1000;

pub(super) fn info_json(b: &BatchInfo) -> serde_json::Value {
    serde_json::json!({
        "batch_id": b.batch_id,
        "created_at": crate::clock::rfc3339_ms(b.created_at),
        "items": b.items,
        "periods": b.periods,
        "state": b.state.as_str(),
    })
}

/// Query of `GET /batches`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// `ready` or `acknowledged`; without it, both (anything else is `400 R400`).
    #[param(pattern = "^(ready|acknowledged)$")]
    state: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/batches",
    operation_id = "list_batches",
    tag = "recipient",
    summary = "Own batches",
    description = "Role: **recipient**.\n\n\
        The caller's batches, oldest first (in sealing order). Before answering, whatever is due \
        for the caller is sealed (open items reaching `batch_max_items`, or the oldest open item \
        reaching `batch_max_age_secs`). A sealed batch never changes.",
    params(ListQuery),
    responses(
        (status = 200, description = "The batches.", body = super::openapi::BatchList),
        (status = 400, description = "`R400`: `state` is neither `ready` nor `acknowledged`.", body = crate::catalogue::ErrorBody),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 429, response = super::openapi::TooManyRequests),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("bearer" = [])),
)]
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
    crate::deliver::seal(&gw, &me.id).await?;
    let batches = gw.store.batches(&me.id, state).await?;
    let list: Vec<_> = batches.iter().map(info_json).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "batches": list })))
}

/// Pass 1 of a CSV rendering: the union of the items' column paths (values are not kept).
async fn csv_columns(gw: &Gateway, batch_id: &str) -> Result<CsvColumns, ApiError> {
    let mut columns = CsvColumns::new();
    let mut after = 0;
    loop {
        let page = gw.store.batch_items(batch_id, after, PAGE).await?;
        for item in &page {
            columns
                .add_item(&item.body)
                .map_err(|e| unrenderable(batch_id, item.seq, BatchFormat::Csv, &e))?;
        }
        match page.last() {
            Some(last) if page.len() as i64 >= PAGE => after = last.seq,
            _ => return Ok(columns),
        }
    }
}

/// `500 I500` for a stored item that cannot be rendered (never written so by Weiche). The log
/// line names the batch and the item's position, never its content.
fn unrenderable(batch_id: &str, seq: i64, form: BatchFormat, e: &FormatError) -> ApiError {
    tracing::error!(
        "batch {batch_id}: item {seq} cannot be rendered as {}: {e}",
        form.name()
    );
    ApiError::new(Code::I500, "a stored item of this batch cannot be rendered")
}

#[utoipa::path(
    get,
    path = "/api/v1/batches/{id}",
    operation_id = "get_batch",
    tag = "recipient",
    summary = "One batch's items, JSON, NDJSON, XML or CSV, streamed",
    description = "Role: **recipient**.\n\n\
        The batch's items (`record`, `cancellation`, `revocation`, `erasure`) in the order they \
        arose, streamed (chunked). The format follows `Accept` (the highest `q` wins; on a tie \
        the first listed): missing, `application/json`, `application/*` or `*/*` → \
        `application/json`; `application/x-ndjson` → one item per line; `application/xml` or \
        `text/xml` → `application/xml; charset=utf-8`, an XÖV-style statistics message; \
        `text/csv` or `text/*` → `text/csv; charset=utf-8; header=present`, `;`-separated, one \
        row per item. A batch can be fetched any number of times, also after it was \
        acknowledged.",
    params(("id" = String, Path, description = "The `batch_id`.")),
    responses(
        (status = 200, description = "The batch in the negotiated format.", content(
            (super::openapi::BatchDocument = "application/json"),
            (String = "application/x-ndjson"),
            (String = "application/xml"),
            (String = "text/csv"),
        )),
        (status = 400, description = "`R400`: `Accept` names no format this version serves.", body = crate::catalogue::ErrorBody),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 429, response = super::openapi::TooManyRequests),
        (status = 500, description = "`I500`: a stored item cannot be rendered in the asked format.", body = crate::catalogue::ErrorBody),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn one(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let me = authenticate(&req, &gw, Role::Recipient)?;
    let batch = gw
        .store
        .batch(&me.id, &path.into_inner())
        .await?
        .ok_or_else(ApiError::not_found)?;
    let accept = req
        .headers()
        .get(actix_web::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let form = BatchFormat::negotiate(accept).ok_or_else(|| {
        ApiError::new(
            Code::R400,
            "this version serves batches as application/json, application/x-ndjson, \
             application/xml or text/csv",
        )
    })?;
    // What comes before the first item, and for CSV the columns found in pass 1.
    let mut csv = None;
    let head = match form {
        BatchFormat::Json => {
            let mut info = info_json(&batch);
            if let Some(m) = info.as_object_mut() {
                m.remove("items");
                m.insert("recipient".into(), batch.recipient.clone().into());
            }
            let text = info.to_string();
            // Open the object again to append the items array.
            format!("{},\"items\":[", &text[..text.len() - 1]).into_bytes()
        }
        BatchFormat::Ndjson => Vec::new(),
        BatchFormat::Xml => formats::xml_head(&BatchHead {
            batch_id: &batch.batch_id,
            recipient: &batch.recipient,
            created_at: &crate::clock::rfc3339_ms(batch.created_at),
            items: batch.items,
            periods: &batch.periods,
        })
        .into_bytes(),
        BatchFormat::Csv => {
            let columns = csv_columns(&gw, &batch.batch_id).await?;
            let header = columns
                .header()
                .map_err(|e| unrenderable(&batch.batch_id, 0, form, &e))?;
            csv = Some(Arc::new(columns));
            header
        }
    };
    let store = gw.store.clone();
    let batch_id = Arc::new(batch.batch_id.clone());
    struct Cursor {
        after: i64,
        first: bool,
        done: bool,
        head: Option<Vec<u8>>,
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
        let csv = csv.clone();
        async move {
            if let Some(h) = cur.head.take()
                && !h.is_empty()
            {
                return Some((Ok::<_, ApiError>(Bytes::from(h)), cur));
            }
            if cur.done {
                return None;
            }
            if let Some(separator) = joined_separator(form) {
                // JSON and NDJSON: the items as stored, joined by the database.
                let page = match store
                    .batch_items_joined(&batch_id, cur.after, PAGE, separator)
                    .await
                {
                    Ok(p) => p,
                    Err(e) => {
                        cur.done = true;
                        return Some((Err(ApiError::from(e)), cur));
                    }
                };
                let mut out = Vec::new();
                let count = match page {
                    Some(page) => {
                        if form == BatchFormat::Json && !cur.first {
                            out.push(b',');
                        }
                        out.extend_from_slice(page.text.as_bytes());
                        if form == BatchFormat::Ndjson {
                            out.push(b'\n');
                        }
                        cur.first = false;
                        cur.after = page.last_seq;
                        page.count
                    }
                    None => 0,
                };
                if count < PAGE {
                    cur.done = true;
                    if form == BatchFormat::Json {
                        out.extend_from_slice(b"]}");
                    }
                }
                return Some((Ok(Bytes::from(out)), cur));
            }
            let page = match store.batch_items(&batch_id, cur.after, PAGE).await {
                Ok(p) => p,
                Err(e) => {
                    cur.done = true;
                    return Some((Err(ApiError::from(e)), cur));
                }
            };
            let rendered = match &csv {
                Some(columns) => columns
                    .rows(page.iter().map(|i| i.body.as_str()))
                    .map_err(|e| unrenderable(&batch_id, cur.after, form, &e)),
                None => render_xml_page(&page, &batch_id),
            };
            let mut out = match rendered {
                Ok(out) => out,
                Err(e) => {
                    cur.done = true;
                    return Some((Err(e), cur));
                }
            };
            if let Some(last) = page.last() {
                cur.after = last.seq;
            }
            if (page.len() as i64) < PAGE {
                cur.done = true;
                if form == BatchFormat::Xml {
                    out.extend_from_slice(formats::xml_foot().as_bytes());
                }
            }
            Some((Ok(Bytes::from(out)), cur))
        }
    });
    Ok(HttpResponse::Ok()
        .content_type(form.content_type())
        .streaming(stream))
}

/// The separator between stored items when a format sends them as they are (JSON, NDJSON).
fn joined_separator(form: BatchFormat) -> Option<&'static str> {
    match form {
        BatchFormat::Json => Some(","),
        BatchFormat::Ndjson => Some("\n"),
        BatchFormat::Xml | BatchFormat::Csv => None,
    }
}

/// One page of items as XML `<item>` elements (CSV rows need the columns of pass 1, see
/// [`CsvColumns::rows`]).
fn render_xml_page(page: &[BatchItem], batch_id: &str) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    for item in page {
        let xml = formats::xml_item(&item.body)
            .map_err(|e| unrenderable(batch_id, item.seq, BatchFormat::Xml, &e))?;
        out.extend_from_slice(xml.as_bytes());
    }
    Ok(out)
}
