//! Recipient endpoints: list, fetch (streamed) and acknowledge batches.

use super::{ApiError, authenticate};
use crate::catalogue::Code;
use crate::config::Role;
use crate::deliver::fetch::{BatchPages, FetchError};
use crate::deliver::formats::BatchFormat;
use crate::gateway::Gateway;
use crate::store::{BatchInfo, BatchState};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use serde::Deserialize;

/// `ready` or `acknowledged`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum BatchStateName {
    /// Not acknowledged yet.
    Ready,
    /// Acknowledged.
    Acknowledged,
}

/// A batch: `{batch_id, created_at, items, periods, state}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct BatchSummary {
    /// Batch id (UUID).
    batch_id: String,
    /// Sealing time (RFC 3339, UTC, milliseconds).
    #[schema(format = DateTime)]
    created_at: String,
    /// Number of items.
    items: u64,
    /// Sorted distinct reporting months `YYYY-MM`.
    periods: Vec<String>,
    /// State.
    state: BatchStateName,
}

/// `GET /api/v1/batches`: the recipient's batches, oldest first (in sealing order).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct BatchList {
    /// The batches.
    batches: Vec<BatchSummary>,
}

/// A batch's summary, as listed and as answered to an acknowledgement.
pub(super) fn summary(b: &BatchInfo) -> BatchSummary {
    BatchSummary {
        batch_id: b.batch_id.clone(),
        created_at: crate::clock::rfc3339_ms(b.created_at),
        items: u64::try_from(b.items).unwrap_or(0),
        periods: b.periods.clone(),
        state: match b.state {
            BatchState::Ready => BatchStateName::Ready,
            BatchState::Acknowledged => BatchStateName::Acknowledged,
        },
    }
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
        (status = 200, description = "The batches.", body = BatchList),
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
    let batches: Vec<BatchSummary> = batches.iter().map(summary).collect();
    Ok(HttpResponse::Ok().json(BatchList { batches }))
}

/// A batch that cannot be fetched as an API error: a stored item that cannot be rendered (never
/// written so by Weiche) is `500 I500`, logged with the batch and the item's position, never its
/// content; a store failure as any.
fn fetch_error(e: FetchError) -> ApiError {
    match e {
        FetchError::Store(e) => e.into(),
        e @ FetchError::Unrenderable { .. } => {
            tracing::error!("{e}");
            ApiError::new(Code::I500, "a stored item of this batch cannot be rendered")
        }
    }
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
    let pages = BatchPages::open(gw.store.clone(), &batch, form)
        .await
        .map_err(fetch_error)?;
    let stream = futures::stream::unfold(pages, |mut pages| async move {
        let piece = pages.next().await?;
        Some((piece.map(Bytes::from).map_err(fetch_error), pages))
    });
    Ok(HttpResponse::Ok()
        .content_type(form.content_type())
        .streaming(stream))
}
