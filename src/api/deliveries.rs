//! Vendor endpoints: post a delivery, read own receipts. A delivery body may be sent with
//! `Content-Encoding: gzip`; it is decompressed as a stream, so the body limit (`L001`) counts
//! decompressed bytes and memory stays bounded (docs/security.md, "Compressed bodies"). No
//! other endpoint accepts an encoded body ([`refuse_encoded_bodies`]).

use super::{ApiError, authenticate};
use crate::catalogue::Code;
use crate::config::Role;
use crate::gateway::Gateway;
use crate::ingest::{self, Answer, DeliveryRequest, Receipt};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

/// `GET /api/v1/deliveries`: one page of the vendor's receipts, newest first.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct DeliveryList {
    /// The stored receipts (as stored).
    #[schema(value_type = Vec<Receipt>)]
    deliveries: Vec<serde_json::Value>,
    /// The `cursor` of the next page; `null` on the last page.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// Query of `POST /deliveries`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PostQuery {
    /// Mapping id (`klidas-json`, `xsozial-lieferung`, `fallwerk-csv`, `caseflow-xml`, or one
    /// the administrator added). May be left out when the vendor has a default format.
    #[param(example = "klidas-json")]
    format: Option<String>,
    /// `full` or `partial` (default `partial`). Used only by mappings that take no mode from
    /// the payload (`fallwerk-csv`, `caseflow-xml`), where anything else is `400 V000`; ignored
    /// by the others.
    #[param(pattern = "^(full|partial)$")]
    mode: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/deliveries",
    operation_id = "post_delivery",
    tag = "vendor",
    summary = "Post an export; answer: the receipt",
    description = "Role: **vendor**.\n\n\
        The body is the vendor's export as it is, read as a stream up to the configured limit \
        (`limits.max_body_bytes`). The mapping (`format`) decides how the bytes are read; \
        `Content-Type` is not checked, only its `charset` parameter is used (by CSV mappings). \
        A body may be sent with `Content-Encoding: gzip` (or `x-gzip`): it is decompressed as \
        a stream and the limit counts decompressed bytes.\n\n\
        The answer is the receipt (`E1`–`E3`: `200`; `E4`: `400`, `413` or `422`). A repeat with \
        the same idempotency key (the payload's message id, else `Idempotency-Key`) and the same \
        bytes answers the first receipt with `\"duplicate\": true` (`S100`) and changes nothing; \
        other bytes under the same key are `409 S101`.",
    params(
        PostQuery,
        ("Idempotency-Key" = Option<String>, Header, nullable = false, max_length = 200,
            description = "Used when the payload has no message id of its own. At most 200 characters (`400 R400`)."),
        ("Content-Encoding" = Option<String>, Header, nullable = false,
            description = "None, `identity`, `gzip` or `x-gzip`; anything else is `415 R415`."),
    ),
    request_body(
        description = "The export, unchanged (any size up to the limit; optionally gzip-compressed, see `Content-Encoding`).",
        content(
            (serde_json::Value = "application/json"),
            (String = "application/xml"),
            (String = "text/csv"),
        ),
    ),
    responses(
        (status = 200, description = "Processed (`E1`, `E2`, `E3`, also a test delivery), or a repeat of the same bytes (`S100`, `\"duplicate\": true`).", body = Receipt),
        (status = 400, description = "An `E4` receipt with `V000` (format version not supported), or an error body: `R400` (malformed query, `Idempotency-Key` over 200 characters) or `V000` (no format and no default, no mapping loaded, format not allowed for this vendor, bad `mode`).", body = super::openapi::ReceiptOrError),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 409, description = "`S101`: the idempotency key was used for a delivery with other content; nothing stored.", body = crate::catalogue::ErrorBody),
        (status = 413, description = "An `E4` receipt with `L001`: the body (decompressed) is larger than the limit; nothing stored.", body = Receipt),
        (status = 415, response = super::openapi::UnsupportedEncoding),
        (status = 422, description = "An `E4` receipt (`X000`, `X001`, `S001`, `S010`, `L002`, `L003`, `L004`, `S020`), or an error body `X000` when the body broke off in transfer or its gzip is corrupt.", body = super::openapi::ReceiptOrError),
        (status = 429, response = super::openapi::TooManyRequests),
        (status = 500, description = "`I500`: a receipt could not be written or read back.", body = crate::catalogue::ErrorBody),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("bearer" = []), ("mutualTLS" = []), ("bearer" = [], "mutualTLS" = [])),
)]
pub(super) async fn post(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let vendor = authenticate(&req, &gw, Role::Vendor)?;
    let idempotency_key = req
        .headers()
        .get("Idempotency-Key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_string);
    if idempotency_key.as_ref().is_some_and(|k| k.len() > 200) {
        return Err(ApiError::new(
            Code::R400,
            "Idempotency-Key longer than 200 characters",
        ));
    }
    let q: PostQuery = super::query(&req)?;
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > gw.limits.max_body_bytes) {
        let receipt = Receipt::rejected(
            &uuid::Uuid::now_v7().to_string(),
            q.format.as_deref().unwrap_or(""),
            q.mode.as_deref().unwrap_or("partial"),
            Code::L001,
            &format!(
                "body larger than the limit of {} bytes",
                gw.limits.max_body_bytes
            ),
        );
        return Ok(HttpResponse::PayloadTooLarge().json(receipt));
    }
    let charset = charset_of(&req);
    let encoding = content_encoding(&req)?;
    let request = DeliveryRequest {
        vendor: vendor.id,
        format: q.format,
        mode: q.mode,
        idempotency_key,
        charset,
    };
    let answer = match encoding {
        Encoding::Identity => ingest::receive(gw.into_inner(), request, payload).await,
        Encoding::Gzip => ingest::receive(gw.into_inner(), request, Gunzip::new(payload)).await,
    };
    match answer {
        Answer::Receipt { receipt } => {
            Ok(HttpResponse::build(receipt_status(&receipt)).json(receipt))
        }
        Answer::Error { code, message } => Err(ApiError::new(code, message)),
    }
}

/// Query of `GET /deliveries`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// RFC 3339 time: only deliveries received at or after it (`400 R400` if malformed).
    #[param(format = DateTime)]
    since: Option<String>,
    /// Page size, 1–500 (values out of range are clamped), default 50 (`400 R400` if not a number).
    #[param(default = 50)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page (opaque; `400 R400` if malformed).
    cursor: Option<String>,
}

/// The HTTP status of a receipt: `200`, or for a delivery rejected whole (`E4`) the status of its
/// delivery-level code (`V000` 400, `L001` 413, the others 422). A repeated delivery answered
/// with the first receipt is `200`.
fn receipt_status(receipt: &Receipt) -> StatusCode {
    if receipt.duplicate {
        return StatusCode::OK;
    }
    match receipt.rejection_code() {
        None => StatusCode::OK,
        Some(code) => {
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY)
        }
    }
}

fn encode_cursor(received_at: i64, id: &str) -> String {
    hex::encode(format!("{received_at}.{id}"))
}

fn decode_cursor(c: &str) -> Option<(i64, String)> {
    let text = String::from_utf8(hex::decode(c).ok()?).ok()?;
    let (at, id) = text.split_once('.')?;
    Some((at.parse().ok()?, id.to_string()))
}

#[utoipa::path(
    get,
    path = "/api/v1/deliveries",
    operation_id = "list_deliveries",
    tag = "vendor",
    summary = "Own receipts, newest first, paginated",
    description = "Role: **vendor**.\n\n\
        The caller's own stored receipts (`E4` and test ones included), newest first (by receive \
        time, then id). `next_cursor` is `null` on the last page.",
    params(ListQuery),
    responses(
        (status = 200, description = "One page of receipts.", body = DeliveryList),
        (status = 400, description = "`R400`: malformed `since`, `limit` or `cursor`.", body = crate::catalogue::ErrorBody),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 429, response = super::openapi::TooManyRequests),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("bearer" = []), ("mutualTLS" = []), ("bearer" = [], "mutualTLS" = [])),
)]
pub(super) async fn list(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ApiError> {
    let vendor = authenticate(&req, &gw, Role::Vendor)?;
    let query: ListQuery = super::query(&req)?;
    let since = match &query.since {
        None => None,
        Some(s) => Some(
            chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|_| ApiError::new(Code::R400, "since must be an RFC 3339 time"))?
                .timestamp_millis(),
        ),
    };
    let after = match &query.cursor {
        None => None,
        Some(c) => {
            Some(decode_cursor(c).ok_or_else(|| ApiError::new(Code::R400, "invalid cursor"))?)
        }
    };
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    let rows = gw
        .store
        .deliveries(&vendor.id, since, after, limit + 1)
        .await?;
    let more = rows.len() as i64 > limit;
    let page = &rows[..rows.len().min(limit as usize)];
    let next = if more {
        page.last().map(|d| encode_cursor(d.received_at, &d.id))
    } else {
        None
    };
    let receipts: Vec<serde_json::Value> = page
        .iter()
        .filter_map(|d| serde_json::from_str(&d.receipt).ok())
        .collect();
    Ok(HttpResponse::Ok().json(DeliveryList {
        deliveries: receipts,
        next_cursor: next,
    }))
}

#[utoipa::path(
    get,
    path = "/api/v1/deliveries/{id}",
    operation_id = "get_delivery",
    tag = "vendor",
    summary = "One own receipt",
    description = "Role: **vendor**.\n\n\
        The stored receipt (`\"duplicate\": false`). An unknown id and another vendor's delivery \
        answer the same `404 N404`.",
    params(("id" = String, Path, description = "The receipt's `delivery_id`.")),
    responses(
        (status = 200, description = "The stored receipt.", body = Receipt),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 429, response = super::openapi::TooManyRequests),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("bearer" = []), ("mutualTLS" = []), ("bearer" = [], "mutualTLS" = [])),
)]
pub(super) async fn one(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let vendor = authenticate(&req, &gw, Role::Vendor)?;
    let found = gw
        .store
        .delivery(&vendor.id, &path.into_inner())
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(found.receipt))
}

/// The `charset` parameter of the request's `Content-Type`.
pub(super) fn charset_of(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| {
            ct.split(';').skip(1).find_map(|p| {
                let (k, v) = p.split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("charset")
                    .then(|| v.trim().trim_matches('"').to_string())
            })
        })
}

// --- Content-Encoding of request bodies -------------------------------------------------------

/// Largest piece of decompressed output [`Gunzip`] hands on at once.
const GUNZIP_PIECE: usize = 64 * 1024;

/// The content codings a delivery body may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    /// No `Content-Encoding`, or `identity`.
    Identity,
    /// `gzip` (or its alias `x-gzip`).
    Gzip,
}

fn unsupported(what: &str) -> ApiError {
    ApiError::new(
        Code::R415,
        format!(
            "Content-Encoding '{}' is not accepted: send the body uncompressed, or with gzip to POST /api/v1/deliveries",
            crate::catalogue::echo(what)
        ),
    )
}

/// The request's content coding: absent or `identity`, or `gzip` / `x-gzip`. Anything else
/// (other codings, several codings, several headers) is `415 R415`.
pub(super) fn content_encoding(req: &HttpRequest) -> Result<Encoding, ApiError> {
    let mut values = req
        .headers()
        .get_all(actix_web::http::header::CONTENT_ENCODING);
    let Some(first) = values.next() else {
        return Ok(Encoding::Identity);
    };
    let text = first.to_str().map_err(|_| unsupported("(not text)"))?;
    if values.next().is_some() {
        return Err(unsupported(text));
    }
    match text.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => Ok(Encoding::Identity),
        "gzip" | "x-gzip" => Ok(Encoding::Gzip),
        _ => Err(unsupported(text)),
    }
}

/// Middleware: every request except `POST /api/v1/deliveries` must come without a content
/// coding, so that actix-web's extractors (which would inflate a whole network chunk at once)
/// never decompress anything. Runs before the extractors and before authentication.
pub(super) async fn refuse_encoded_bodies(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let delivery_post =
        req.method() == actix_web::http::Method::POST && req.path() == "/api/v1/deliveries";
    if !delivery_post && content_encoding(req.request())? != Encoding::Identity {
        return Err(unsupported("gzip").into());
    }
    next.call(req).await
}

/// A gzip body decompressed as a stream: each item is at most about [`GUNZIP_PIECE`] bytes
/// (plus one inflate step), whatever the compression ratio, and the next compressed chunk is
/// only read once the output of the previous one has been taken. Concatenated gzip members are
/// decoded one after another; a corrupt or truncated stream ends in an error item.
pub(super) struct Gunzip<S> {
    inner: S,
    decoder: flate2::write::MultiGzDecoder<Vec<u8>>,
    /// Compressed bytes not yet fed to the decoder.
    pending: bytes::Bytes,
    /// The compressed stream has ended.
    ended: bool,
    /// The decompressed stream has ended (or failed).
    done: bool,
}

impl<S> Gunzip<S> {
    /// Decompresses `inner`.
    pub(super) fn new(inner: S) -> Self {
        Gunzip {
            inner,
            decoder: flate2::write::MultiGzDecoder::new(Vec::with_capacity(GUNZIP_PIECE)),
            pending: bytes::Bytes::new(),
            ended: false,
            done: false,
        }
    }

    fn take_output(&mut self) -> bytes::Bytes {
        bytes::Bytes::from(std::mem::replace(
            self.decoder.get_mut(),
            Vec::with_capacity(GUNZIP_PIECE),
        ))
    }
}

impl<S, E> futures::Stream for Gunzip<S>
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<bytes::Bytes, String>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::io::Write;
        use std::task::Poll;
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if this.decoder.get_ref().len() >= GUNZIP_PIECE {
                return Poll::Ready(Some(Ok(this.take_output())));
            }
            if !this.pending.is_empty() {
                let before = this.decoder.get_ref().len();
                match this.decoder.write(&this.pending) {
                    Ok(0) if this.decoder.get_ref().len() == before => {
                        this.done = true;
                        return Poll::Ready(Some(Err("the gzip body is corrupt".into())));
                    }
                    Ok(n) => {
                        let _ = this.pending.split_to(n);
                    }
                    Err(_) => {
                        this.done = true;
                        return Poll::Ready(Some(Err("the gzip body is corrupt".into())));
                    }
                }
                continue;
            }
            if this.ended {
                this.done = true;
                if this.decoder.try_finish().is_err() {
                    return Poll::Ready(Some(Err("the gzip body is corrupt or truncated".into())));
                }
                let rest = this.take_output();
                return Poll::Ready((!rest.is_empty()).then_some(Ok(rest)));
            }
            match std::pin::Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Pending => {
                    // Hand on what is decompressed so far rather than wait with it.
                    let _ = this.decoder.flush();
                    if this.decoder.get_ref().is_empty() {
                        return Poll::Pending;
                    }
                    return Poll::Ready(Some(Ok(this.take_output())));
                }
                Poll::Ready(Some(Ok(chunk))) => this.pending = chunk,
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e.to_string())));
                }
                Poll::Ready(None) => this.ended = true,
            }
        }
    }
}

#[cfg(test)]
mod gunzip_tests {
    use super::*;
    use futures::StreamExt;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn chunks(data: Vec<u8>, size: usize) -> Vec<Result<bytes::Bytes, String>> {
        data.chunks(size)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect()
    }

    async fn inflate(items: Vec<Result<bytes::Bytes, String>>) -> (Vec<u8>, usize, Option<String>) {
        let mut s = Gunzip::new(futures::stream::iter(items));
        let (mut out, mut largest, mut err) = (Vec::new(), 0, None);
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => {
                    largest = largest.max(b.len());
                    out.extend_from_slice(&b);
                }
                Err(e) => err = Some(e),
            }
        }
        (out, largest, err)
    }

    #[actix_web::test]
    async fn decompresses_in_bounded_pieces_whatever_the_chunking() {
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for size in [1, 7, 4096, usize::MAX] {
            let (out, largest, err) = inflate(chunks(gzip(&data), size.min(2_000_000))).await;
            assert_eq!(err, None);
            assert!(out == data, "chunk size {size}");
            assert!(largest <= 2 * GUNZIP_PIECE, "{largest}");
        }
        // A bomb: 64 MiB of zeros from one small chunk, handed on in small pieces.
        let bomb = gzip(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 1 << 20);
        let (out, largest, err) = inflate(chunks(bomb, usize::MAX >> 1)).await;
        assert_eq!((out.len(), err), (64 << 20, None));
        assert!(largest <= 2 * GUNZIP_PIECE, "{largest}");
    }

    #[actix_web::test]
    async fn members_concatenate_and_corruption_is_an_error() {
        let mut two = gzip(b"hello ");
        two.extend(gzip(b"world"));
        assert_eq!(inflate(chunks(two, 3)).await.0, b"hello world");
        let whole = gzip(b"some text that is long enough to be cut");
        let (_, _, err) = inflate(chunks(whole[..whole.len() - 5].to_vec(), 4)).await;
        assert!(err.is_some(), "a truncated stream is an error");
        let (_, _, err) = inflate(chunks(b"not gzip at all".to_vec(), 4)).await;
        assert!(err.is_some(), "not gzip is an error");
        let mut bad = gzip(b"some text");
        let n = bad.len();
        bad[n - 6] ^= 0xff;
        let (_, _, err) = inflate(chunks(bad, 100)).await;
        assert!(err.is_some(), "a wrong checksum is an error");
        let (_, _, err) = inflate(vec![
            Ok(bytes::Bytes::from_static(&[0x1f])),
            Err("gone".into()),
        ])
        .await;
        assert_eq!(err.as_deref(), Some("gone"));
    }
}
