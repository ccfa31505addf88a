//! Admin endpoints: the loaded mappings and their failures, and the mapping preview (receipt,
//! canonical records and each recipient's view of a sample; nothing stored or sent).

use super::{ApiError, authenticate};
use crate::adapt::{Mapping, Mode};
use crate::catalogue::Code;
use crate::config::Role;
use crate::gateway::Gateway;
use crate::ingest::pipeline::{self, Job};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// `DELETE /api/v1/admin/clients/{vendor}/{client_id}`: the erasure done.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct Erasure {
    /// Id of the erasure: `source.delivery_id` of the `erasure` items and of the `erasure`
    /// audit event.
    erasure_id: String,
    /// Whether anything of the client was found (`false`: nothing; the erasure is recorded
    /// all the same).
    found: bool,
    /// What was done, for a person.
    message: String,
    /// Records of the client deleted (the same as `erased.records`).
    erased_records: u64,
    /// Recipients' records told about the erasure (`erasure` items).
    notified: u64,
    /// What was found of the client, by kind.
    erased: crate::store::Erased,
}

/// A loaded mapping.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct LoadedMapping {
    /// The mapping id (`?format=`).
    format: String,
    /// `json`, `jsonl`, `xml` or `csv`.
    syntax: String,
    /// The mapping's description.
    description: String,
    /// The file it was loaded from (or the built-in name).
    file: String,
    /// SHA-256 of the file (the receipts' `mapping_version`).
    version: String,
    /// Vendors the mapping names.
    vendors: Vec<String>,
    /// Vendors whose configured `formats` include the mapping.
    used_by: Vec<String>,
}

/// A mapping file that failed to load.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct MappingFailure {
    /// The file.
    file: String,
    /// 1-based line (TOML syntax errors only), else `null`.
    #[schema(required = true)]
    line: Option<u64>,
    /// What is wrong.
    error: String,
}

/// `GET /api/v1/admin/mappings`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(super) struct MappingsReport {
    /// The mappings directory; `null` when the built-in mappings are used.
    #[schema(required = true)]
    directory: Option<String>,
    /// The mappings loaded now, by id.
    mappings: Vec<LoadedMapping>,
    /// Files that failed to load (a failed edit keeps the previous version in `mappings`).
    failures: Vec<MappingFailure>,
}

/// Largest sample a preview takes (it is held in memory).
pub const PREVIEW_LIMIT: usize = 10 << 20;

#[utoipa::path(
    get,
    path = "/api/v1/admin/mappings",
    operation_id = "list_mappings",
    tag = "admin",
    summary = "Loaded mappings and files that failed to load",
    description = "Role: **admin**.\n\n\
        The mappings loaded now, with version (SHA-256 of the file), and every file that failed \
        to load with its error. A mapping that fails to load never replaces a working one.",
    responses(
        (status = 200, description = "The mappings.", body = MappingsReport),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 429, response = super::openapi::TooManyRequests),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn mappings(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ApiError> {
    authenticate(&req, &gw, Role::Admin)?;
    let set = gw.mappings.load();
    let mappings: Vec<LoadedMapping> = set
        .mappings
        .values()
        .map(|m| LoadedMapping {
            format: m.id().to_string(),
            syntax: format!("{:?}", m.file.syntax).to_lowercase(),
            description: m.file.description.clone(),
            file: m.origin.clone(),
            version: m.hash.clone(),
            vendors: m.file.vendors.clone(),
            used_by: gw
                .vendors
                .iter()
                .filter(|(_, v)| v.formats.iter().any(|f| f == m.id()))
                .map(|(id, _)| id.clone())
                .collect(),
        })
        .collect();
    let failures: Vec<MappingFailure> = set
        .failures
        .iter()
        .map(|f| {
            let p = crate::config::Problem::from_text(&f.to_string());
            MappingFailure {
                file: p.file,
                line: (p.line > 0).then_some(p.line as u64),
                error: p.message,
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(MappingsReport {
        directory: gw.mappings_dir.as_ref().map(|d| d.display().to_string()),
        mappings,
        failures,
    }))
}

/// Query of the preview.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PreviewQuery {
    /// The vendor to preview as (default: the mapping's `default_vendor`, else `preview`).
    vendor: Option<String>,
    /// `full` or `partial` (`400 V000` otherwise).
    #[param(pattern = "^(full|partial)$")]
    mode: Option<String>,
    /// `true`: the body is `{"mapping": TEXT, "sample": TEXT}` and the sample runs through the
    /// draft mapping text instead of the version in service.
    draft: Option<bool>,
}

/// The body of a draft preview.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DraftPreview {
    /// The draft mapping text (TOML).
    mapping: String,
    /// The sample export, as text.
    sample: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/mappings/{format}/preview",
    operation_id = "preview_mapping",
    tag = "admin",
    summary = "Run a sample through a mapping and the policies; nothing stored",
    description = "Role: **admin**.\n\n\
        Answers the receipt, the canonical records and each recipient's view of them, as a \
        delivery of the sample would give. With `?draft=true` the body is \
        `{\"mapping\": TEXT, \"sample\": TEXT}` and the sample runs through the draft mapping \
        (checked first: `400 V000` with the first problem's line) instead of the version in \
        service. Nothing is stored, routed, sent or audited; \
        `cancelled` is always `0` and recorded withdrawals are not taken into account. The body \
        is held in memory, at most 10 MiB, and must not be compressed; the `charset` of \
        `Content-Type` is used as for deliveries.",
    params(
        ("format" = String, Path, description = "The mapping id."),
        PreviewQuery,
    ),
    request_body(
        description = "A sample export, unchanged; with `?draft=true` a `DraftPreview` \
            (`{\"mapping\": TEXT, \"sample\": TEXT}`).",
        content(
            (serde_json::Value = "application/json"),
            (String = "application/xml"),
            (String = "text/csv"),
        ),
    ),
    responses(
        (status = 200, description = "What a delivery of the sample would give.", body = super::openapi::Preview),
        (status = 400, description = "`V000`: no mapping loaded for `format`, the draft mapping has problems, or `mode` is neither `full` nor `partial`; `R400`: the body could not be read (or is not a draft preview's body).", body = crate::catalogue::ErrorBody),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 413, description = "`L001`: the sample is larger than 10 MiB.", body = crate::catalogue::ErrorBody),
        (status = 415, response = super::openapi::UnsupportedEncoding),
        (status = 429, response = super::openapi::TooManyRequests),
        (status = 500, description = "`I500`: the preview failed.", body = crate::catalogue::ErrorBody),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn preview(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    authenticate(&req, &gw, Role::Admin)?;
    let body = super::read_body(payload, PREVIEW_LIMIT).await?;
    let query: PreviewQuery = super::query(&req)?;
    let format = path.into_inner();
    let (mapping, body) = if query.draft == Some(true) {
        let draft: DraftPreview = serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                Code::R400,
                format!("a draft preview's body is {{\"mapping\", \"sample\"}}: {e}"),
            )
        })?;
        let mapping = Mapping::from_text("draft.toml", &draft.mapping).map_err(|e| {
            ApiError::new(
                Code::V000,
                format!(
                    "the draft mapping has problems: line {}: {}",
                    e.line(),
                    e.message()
                ),
            )
        })?;
        (
            Arc::new(mapping),
            bytes::Bytes::from(draft.sample.into_bytes()),
        )
    } else {
        let mapping = gw.mappings.load().get(&format).ok_or_else(|| {
            ApiError::new(
                Code::V000,
                format!(
                    "no mapping loaded for format '{}'",
                    crate::catalogue::echo(&format)
                ),
            )
        })?;
        (mapping, body)
    };
    let mode = match query.mode.as_deref() {
        None => None,
        Some(m) => Some(
            Mode::parse(m)
                .ok_or_else(|| ApiError::new(Code::V000, "mode must be full or partial"))?,
        ),
    };
    let vendor = query
        .vendor
        .clone()
        .or_else(|| mapping.file.default_vendor.clone())
        .unwrap_or_else(|| "preview".into());
    let charset = super::deliveries::charset_of(&req);
    let gw = gw.into_inner();
    let result = tokio::task::spawn_blocking(move || {
        let job = Job {
            delivery_id: "00000000-0000-0000-0000-000000000000",
            vendor: &vendor,
            mapping: &mapping,
            mode_param: mode,
            max_records: gw.limits.max_records,
            charset: charset.as_deref(),
            validator: &gw.validator,
            router: Some(&gw.router),
            emit_test_records: true,
            today: crate::clock::berlin_date(gw.clock.now_ms()),
            at: "",
            withdrawals: Job::no_withdrawals(),
            audit_key: None,
            background: false,
        };
        let mut records = Vec::new();
        let mut views: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        let mut reader: &[u8] = &body;
        let outcome = pipeline::run(&job, &mut reader, &mut |acc| {
            for item in acc.items {
                views
                    .entry(item.recipient)
                    .or_default()
                    .push(serde_json::from_str(&item.body).unwrap_or(Value::Null));
            }
            records.push(serde_json::from_str::<Value>(&acc.json).unwrap_or(Value::Null));
            Ok(())
        });
        json!({"receipt": outcome.receipt, "records": records, "views": views})
    })
    .await
    .map_err(|e| ApiError::new(Code::I500, format!("preview failed: {e}")))?;
    Ok(HttpResponse::Ok().json(result))
}

/// `DELETE /api/v1/admin/clients/{vendor}/{client_id}`: erasure (GDPR Art. 17). Finds the
/// client's data wherever it is — records, outbox and lifecycle items, receipt entries, recorded
/// withdrawals, feedback — and removes or scrubs it, tells every recipient holding one of its
/// records (`erasure` items, Art. 19), writes pseudonymous audit events (always one `erasure`
/// event with the counts, also when nothing was found), and compacts the database so the data is
/// gone from its files.
#[utoipa::path(
    delete,
    path = "/api/v1/admin/clients/{vendor}/{client_id}",
    operation_id = "erase_client",
    tag = "admin",
    summary = "Erase a client and tell the recipients (GDPR Art. 17, 19)",
    description = "Role: **admin**.\n\n\
        Finds the vendor's client's data wherever it is and counts each kind (`erased`): \
        deletes its records, deletes their items not yet sealed and blanks those already sealed \
        into batches (record items and lifecycle items), scrubs the messages of the receipt \
        entries about its records (errors of rejected records included), deletes its recorded \
        withdrawals and the recipients' feedback on its records. Every recipient whose latest \
        item for one of the records is a `record` item gets an `erasure` item. One audit event \
        `erasure` with the counts is written in any case; then the database is compacted. An \
        unknown client answers `200` with `\"found\": false` and zero counts, and the erasure \
        is still recorded; repeating the request is harmless. Kept: the pseudonymous audit \
        trail.",
    params(
        ("vendor" = String, Path, description = "The vendor id."),
        ("client_id" = String, Path, description = "The vendor's client id."),
    ),
    responses(
        (status = 200, description = "Erased.", body = Erasure),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 429, response = super::openapi::TooManyRequests),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn erase(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let admin = authenticate(&req, &gw, Role::Admin)?;
    let (vendor, client_id) = path.into_inner();
    let crate::lifecycle::ErasureDone {
        erasure_id: cause,
        erased,
        notified,
    } = crate::lifecycle::erase(&gw, &vendor, &client_id).await?;
    let found = !erased.is_empty() || notified > 0;
    tracing::info!(
        admin = %admin.id,
        found,
        records = erased.records,
        items = erased.items,
        lifecycle_items = erased.lifecycle_items,
        receipt_entries = erased.receipt_entries,
        withdrawals = erased.withdrawals,
        notified,
        "client erased"
    );
    Ok(HttpResponse::Ok().json(Erasure {
        erasure_id: cause,
        found,
        message: if found {
            "the client's data was erased"
        } else {
            "nothing of this client was found; the erasure is recorded in the audit trail"
        }
        .to_string(),
        erased_records: erased.records,
        notified: notified as u64,
        erased,
    }))
}
