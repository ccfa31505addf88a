//! Admin endpoints: the loaded mappings and their failures, and the mapping preview (receipt,
//! canonical records and each recipient's view of a sample; nothing stored or sent).

use super::{ApiError, authenticate};
use crate::adapt::Mode;
use crate::catalogue::Code;
use crate::config::Role;
use crate::gateway::Gateway;
use crate::ingest::pipeline::{self, Job};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Largest sample a preview takes (it is held in memory).
pub const PREVIEW_LIMIT: usize = 10 << 20;

pub(super) async fn mappings(
    req: HttpRequest,
    gw: web::Data<Gateway>,
) -> Result<HttpResponse, ApiError> {
    authenticate(&req, &gw, Role::Admin)?;
    let set = gw.mappings.load();
    let loaded: Vec<Value> = set
        .mappings
        .values()
        .map(|m| {
            json!({
                "format": m.id(),
                "syntax": format!("{:?}", m.file.syntax).to_lowercase(),
                "description": m.file.description,
                "file": m.origin,
                "version": m.hash,
                "vendors": m.file.vendors,
            })
        })
        .collect();
    let failures: Vec<Value> = set
        .failures
        .iter()
        .map(|f| {
            let p = crate::config::Problem::from_text(&f.to_string());
            json!({"file": p.file, "line": if p.line > 0 { Some(p.line) } else { None }, "error": p.message})
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "directory": gw.mappings_dir.as_ref().map(|d| d.display().to_string()),
        "mappings": loaded,
        "failures": failures,
    })))
}

/// Query of the preview.
#[derive(Debug, Deserialize)]
pub struct PreviewQuery {
    vendor: Option<String>,
    mode: Option<String>,
}

pub(super) async fn preview(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    authenticate(&req, &gw, Role::Admin)?;
    let query: PreviewQuery = super::query(&req)?;
    let format = path.into_inner();
    let mapping = gw.mappings.load().get(&format).ok_or_else(|| {
        ApiError::new(
            Code::V000,
            format!(
                "no mapping loaded for format '{}'",
                crate::catalogue::echo(&format)
            ),
        )
    })?;
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
