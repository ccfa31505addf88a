//! The console's mapping editor (admin-console.md, "Mappings"): the text of the mapping in
//! service, checking a draft (problems with line and column), deploying a text with `If-Match`
//! (written atomically into the mappings directory, taken up at once as by hot reload, audited
//! with the administrator's name), the version history and rollback.
//!
//! Every deployed text is kept in `<mappings dir>/.history/<format>/<version>.toml`, and each
//! deployment is a line of `<mappings dir>/.history/<format>/log.jsonl` (version, time,
//! administrator, action). The loader reads only `*.toml` files directly in the directory, so
//! the history is never loaded as a mapping.

use super::browse::{admin_event, audit_one};
use super::{ApiError, authenticate};
use crate::adapt::{EMBEDDED_MAPPINGS, Mapping};
use crate::catalogue::Code;
use crate::clock::rfc3339_ms;
use crate::config::Role;
use crate::gateway::Gateway;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Largest mapping text the editor takes.
pub const MAPPING_LIMIT: usize = 1 << 20;

/// Errors of the mapping editor.
#[derive(Debug, thiserror::Error)]
pub enum EditorError {
    /// No mapping is loaded for the format.
    #[error("no mapping loaded for format '{0}'")]
    UnknownFormat(String),
    /// The mappings are built into the binary (no directory to write to).
    #[error("the mappings are built in; configure a mappings directory to deploy")]
    BuiltIn,
    /// `If-Match` is missing or names another version than the one in service.
    #[error("If-Match must name the version in service ({0})")]
    VersionMismatch(String),
    /// The text does not load.
    #[error("the mapping has problems: {0}")]
    Invalid(String),
    /// No such version in the history.
    #[error("no such version of this mapping")]
    NoSuchVersion,
    /// Reading or writing the mappings directory failed.
    #[error("mappings directory: {0}")]
    Io(#[from] std::io::Error),
}

impl From<EditorError> for ApiError {
    fn from(e: EditorError) -> Self {
        let code = match &e {
            EditorError::UnknownFormat(_) | EditorError::NoSuchVersion => Code::N404,
            EditorError::BuiltIn | EditorError::Invalid(_) => Code::V000,
            EditorError::VersionMismatch(_) => Code::R409,
            EditorError::Io(_) => Code::I500,
        };
        if let EditorError::Io(err) = &e {
            tracing::error!(error = %err, "mapping editor could not use the mappings directory");
        }
        ApiError::new(code, e.to_string())
    }
}

/// One problem of a mapping text.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TextProblem {
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// 1-based column (0 when unknown).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// Line and column (1-based) of a byte offset.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Checks a mapping text meant for `format`: the problems (empty when it loads).
pub fn check_text(format: &str, text: &str) -> (Option<Mapping>, Vec<TextProblem>) {
    // TOML syntax first, for an exact column.
    if let Err(e) = text.parse::<toml::Table>() {
        let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
        return (
            None,
            vec![TextProblem {
                line,
                column,
                message: e.message().to_string(),
            }],
        );
    }
    match Mapping::from_text("draft.toml", text) {
        Ok(m) if m.id() != format => {
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with("id"))
                .map_or(0, |i| i + 1);
            (
                Some(m),
                vec![TextProblem {
                    line,
                    column: usize::from(line > 0),
                    message: format!("the mapping's id must stay '{format}'"),
                }],
            )
        }
        Ok(m) => (Some(m), Vec::new()),
        Err(e) => {
            let line = e.line();
            let column = text
                .lines()
                .nth(line.saturating_sub(1))
                .filter(|_| line > 0)
                .map_or(0, |l| l.len() - l.trim_start().len() + 1);
            (
                None,
                vec![TextProblem {
                    line,
                    column,
                    message: e.message(),
                }],
            )
        }
    }
}

/// The problems as one line of text.
fn problems_text(problems: &[TextProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("line {}, column {}: {}", p.line, p.column, p.message))
        .collect::<Vec<_>>()
        .join("; ")
}

fn version_of(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn history_dir(dir: &Path, format: &str) -> PathBuf {
    // Format ids are plain names (checked by the mapping loader); this keeps a path anyway.
    let safe: String = format
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(".history").join(safe)
}

/// Writes `text` to `path` atomically: a temporary file beside it (not `*.toml`, so never
/// loaded), flushed to disk, then renamed over it.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().to_string());
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Keeps a text in the history (once per version) and appends a line to the log.
fn remember(dir: &Path, format: &str, text: &str, entry: &Value) -> std::io::Result<()> {
    let h = history_dir(dir, format);
    std::fs::create_dir_all(&h)?;
    let file = h.join(format!("{}.toml", version_of(text)));
    if !file.exists() {
        write_atomically(&file, text)?;
    }
    if !entry.is_null() {
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(h.join("log.jsonl"))?;
        writeln!(log, "{entry}")?;
        log.sync_all()?;
    }
    Ok(())
}

/// The history log of a format, oldest first.
fn history(dir: &Path, format: &str) -> Vec<Value> {
    std::fs::read_to_string(history_dir(dir, format).join("log.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The text of the mapping in service for `format`: (file, version, text). From the file when
/// it holds the version in service, else from the history or the built-in mappings.
fn source_in_service(
    gw: &Gateway,
    format: &str,
) -> Result<(String, String, Option<String>), EditorError> {
    let m = gw
        .mappings
        .load()
        .get(format)
        .ok_or_else(|| EditorError::UnknownFormat(crate::catalogue::echo(format)))?;
    let on_disk = std::fs::read_to_string(&m.origin).ok();
    let text = on_disk
        .filter(|t| version_of(t) == m.hash)
        .or_else(|| {
            let dir = gw.mappings_dir.as_ref()?;
            std::fs::read_to_string(history_dir(dir, format).join(format!("{}.toml", m.hash))).ok()
        })
        .or_else(|| {
            EMBEDDED_MAPPINGS
                .iter()
                .find(|(name, text)| *name == m.origin && version_of(text) == m.hash)
                .map(|(_, text)| (*text).to_string())
        });
    Ok((m.origin.clone(), m.hash.clone(), text))
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/mappings/{format}/source",
    operation_id = "mapping_source",
    tag = "admin",
    summary = "The text of the mapping in service and its version",
    description = "Role: **admin**.\n\n\
        The mapping file's text as it is in service (also while an edited file on disk fails to \
        load), its version (SHA-256 of the text, the receipts' `mapping_version`; the `If-Match` \
        of a deployment), the file, and whether it can be deployed to (`editable`: a mappings \
        directory is configured).",
    params(("format" = String, Path, description = "The mapping id.")),
    responses(
        (status = 200, description = "The mapping's text.", body = super::console_schemas::MappingSource,
            headers(("ETag" = String, description = "The version, quoted."))),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 429, response = super::openapi::TooManyRequests),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn source(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authenticate(&req, &gw, Role::Admin)?;
    let format = path.into_inner();
    let (file, version, text) = source_in_service(&gw, &format)?;
    let broken = gw.mappings.load().failures.iter().any(|f| f.file() == file);
    Ok(HttpResponse::Ok()
        .insert_header((actix_web::http::header::ETAG, format!("\"{version}\"")))
        .json(json!({
            "format": format,
            "file": file,
            "version": version,
            "text": text,
            "editable": gw.mappings_dir.is_some(),
            "file_fails_to_load": broken,
        })))
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/mappings/{format}/check",
    operation_id = "check_mapping",
    tag = "admin",
    summary = "Check a mapping text: problems with line and column",
    description = "Role: **admin**.\n\n\
        Parses and checks the text as the loader would (nothing is stored) and answers its \
        problems, each with 1-based line and column (`0` when unknown). A text whose `id` is \
        not `format` is a problem too. At most 1 MiB.",
    params(("format" = String, Path, description = "The mapping id the text is meant for.")),
    request_body(description = "The mapping text (TOML).", content((String = "text/plain"))),
    responses(
        (status = 200, description = "The problems (none: the text loads).", body = super::console_schemas::MappingCheck),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 413, description = "`L001`: the text is larger than 1 MiB.", body = crate::catalogue::ErrorBody),
        (status = 429, response = super::openapi::TooManyRequests),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn check(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    authenticate(&req, &gw, Role::Admin)?;
    let body = super::read_body(payload, MAPPING_LIMIT).await?;
    let text = String::from_utf8_lossy(&body);
    let format = path.into_inner();
    let (mapping, problems) = check_text(&format, &text);
    let in_service = gw.mappings.load().get(&format).map(|m| m.hash.clone());
    Ok(HttpResponse::Ok().json(json!({
        "format": format,
        "ok": problems.is_empty(),
        "version": version_of(&text),
        "syntax": mapping.map(|m| format!("{:?}", m.file.syntax).to_lowercase()),
        "in_service": in_service,
        "problems": problems,
    })))
}

/// Serialises deployments, so two never interleave their writes and history.
static DEPLOY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Deploys `text` for `format` by `admin`: written over the file in service, reloaded, kept in
/// the history, audited. `expected`: the version that must be in service (`None`: any).
async fn deploy_text(
    gw: &Gateway,
    admin: &str,
    format: &str,
    text: &str,
    expected: Option<&str>,
    action: &str,
) -> Result<Value, ApiError> {
    let dir = gw.mappings_dir.clone().ok_or(EditorError::BuiltIn)?;
    let _guard = DEPLOY.lock().await;
    let (file, current, current_text) = source_in_service(gw, format)?;
    if let Some(expected) = expected
        && expected != current
    {
        return Err(EditorError::VersionMismatch(current).into());
    }
    let (_, problems) = check_text(format, text);
    if !problems.is_empty() {
        return Err(EditorError::Invalid(problems_text(&problems)).into());
    }
    let version = version_of(text);
    let now = gw.clock.now_ms();
    let path = PathBuf::from(&file);
    if path.parent() != Some(dir.as_path()) && !path.starts_with(&dir) {
        return Err(EditorError::BuiltIn.into());
    }
    {
        let (dir, format, text, current_text) = (
            dir.clone(),
            format.to_string(),
            text.to_string(),
            current_text.clone(),
        );
        let entry = json!({"version": version, "at": rfc3339_ms(now), "admin": admin, "action": action, "previous": current});
        let first = json!({"version": current, "at": Value::Null, "admin": Value::Null, "action": "in service before"});
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if let Some(old) = &current_text {
                let known = history(&dir, &format)
                    .iter()
                    .any(|e| e["version"] == json!(version_of(old)));
                remember(
                    &dir,
                    &format,
                    old,
                    if known { &Value::Null } else { &first },
                )?;
            }
            remember(&dir, &format, &text, &entry)?;
            write_atomically(&path, &text)
        })
        .await
        .map_err(|e| ApiError::new(Code::I500, format!("deployment failed: {e}")))?
        .map_err(EditorError::from)?;
    }
    let set = {
        let (dir, shared) = (dir.clone(), gw.mappings.clone());
        tokio::task::spawn_blocking(move || crate::adapt::watch::reload(&dir, &shared))
            .await
            .map_err(|e| ApiError::new(Code::I500, format!("reload failed: {e}")))?
    };
    let live = set.get(format).is_some_and(|m| m.hash == version);
    audit_one(
        gw,
        admin_event(
            "mapping_deployed",
            admin,
            "",
            None,
            None,
            json!({"format": format, "version": version, "previous": current, "action": action}),
            now,
        ),
    )
    .await?;
    tracing::info!(admin = %admin, format = %format, version = %version, action, "mapping deployed");
    Ok(json!({
        "format": format,
        "file": file,
        "version": version,
        "previous_version": current,
        "in_service": live,
    }))
}

#[utoipa::path(
    put,
    path = "/api/v1/admin/mappings/{format}",
    operation_id = "deploy_mapping",
    tag = "admin",
    summary = "Deploy a mapping text (If-Match: the version in service); audited",
    description = "Role: **admin**.\n\n\
        Checks the text, writes it atomically over the mapping's file in the mappings \
        directory and reloads at once (as hot reload would); the text is kept in the version \
        history with the administrator's name, and an audit event `mapping_deployed` names \
        the administrator. `If-Match` must name the version in service (from \
        `GET …/source`); without it, or with another version, the answer is `409 R409` and \
        nothing changes.",
    params(
        ("format" = String, Path, description = "The mapping id."),
        ("If-Match" = String, Header, description = "The version in service (quoted or not)."),
    ),
    request_body(description = "The mapping text (TOML).", content((String = "text/plain"))),
    responses(
        (status = 200, description = "Deployed.", body = super::console_schemas::Deployment),
        (status = 400, description = "`V000`: the text has problems, or the mappings are built in.", body = crate::catalogue::ErrorBody),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 409, description = "`R409`: `If-Match` is missing or not the version in service.", body = crate::catalogue::ErrorBody),
        (status = 413, description = "`L001`: the text is larger than 1 MiB.", body = crate::catalogue::ErrorBody),
        (status = 429, response = super::openapi::TooManyRequests),
        (status = 500, description = "`I500`: the mappings directory could not be written.", body = crate::catalogue::ErrorBody),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn deploy(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let admin = authenticate(&req, &gw, Role::Admin)?;
    let body = super::read_body(payload, MAPPING_LIMIT).await?;
    let format = path.into_inner();
    let expected = req
        .headers()
        .get(actix_web::http::header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim()
                .trim_start_matches("W/")
                .trim_matches('"')
                .to_string()
        });
    let Some(expected) = expected else {
        let (_, current, _) = source_in_service(&gw, &format)?;
        return Err(EditorError::VersionMismatch(current).into());
    };
    let text = std::str::from_utf8(&body)
        .map_err(|_| EditorError::Invalid("the text is not UTF-8".into()))?;
    let done = deploy_text(&gw, &admin.id, &format, text, Some(&expected), "deploy").await?;
    Ok(HttpResponse::Ok().json(done))
}

#[utoipa::path(
    get,
    path = "/api/v1/admin/mappings/{format}/versions",
    operation_id = "mapping_versions",
    tag = "admin",
    summary = "A mapping's version history",
    description = "Role: **admin**.\n\n\
        Every deployment made through the console, newest first: version, time, administrator, \
        action (`deploy`, `rollback`, or `in service before` for the version the first \
        deployment replaced), and which version is in service.",
    params(("format" = String, Path, description = "The mapping id.")),
    responses(
        (status = 200, description = "The history.", body = super::console_schemas::MappingVersions),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 429, response = super::openapi::TooManyRequests),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn versions(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authenticate(&req, &gw, Role::Admin)?;
    let format = path.into_inner();
    let (_, current, _) = source_in_service(&gw, &format)?;
    let mut list = gw
        .mappings_dir
        .as_ref()
        .map(|d| history(d, &format))
        .unwrap_or_default();
    list.reverse();
    Ok(HttpResponse::Ok().json(json!({"format": format, "in_service": current, "versions": list})))
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/mappings/{format}/versions/{version}/deploy",
    operation_id = "rollback_mapping",
    tag = "admin",
    summary = "Deploy an earlier version again (rollback); audited",
    description = "Role: **admin**.\n\n\
        Deploys a version from the history as `PUT …/mappings/{format}` would (checked, \
        written atomically, reloaded, kept, audited with the administrator's name).",
    params(
        ("format" = String, Path, description = "The mapping id."),
        ("version" = String, Path, description = "A version from the history."),
    ),
    responses(
        (status = 200, description = "Deployed.", body = super::console_schemas::Deployment),
        (status = 400, description = "`V000`: the version does not load any more, or the mappings are built in.", body = crate::catalogue::ErrorBody),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 429, response = super::openapi::TooManyRequests),
        (status = 500, description = "`I500`: the mappings directory could not be written.", body = crate::catalogue::ErrorBody),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("bearer" = [])),
)]
pub(super) async fn rollback(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let admin = authenticate(&req, &gw, Role::Admin)?;
    let (format, version) = path.into_inner();
    let dir = gw.mappings_dir.clone().ok_or(EditorError::BuiltIn)?;
    if version.len() != 64 || !version.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(EditorError::NoSuchVersion.into());
    }
    let text = std::fs::read_to_string(history_dir(&dir, &format).join(format!("{version}.toml")))
        .map_err(|_| EditorError::NoSuchVersion)?;
    let done = deploy_text(&gw, &admin.id, &format, &text, None, "rollback").await?;
    Ok(HttpResponse::Ok().json(done))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_have_line_and_column() {
        let (_, p) = check_text("x", "id = \"x\"\n  syntax = = 1\n");
        assert_eq!((p[0].line, p[0].column), (2, 12), "{p:?}");
        let (_, p) = check_text("x", "");
        assert!(!p.is_empty());
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.toml");
        write_atomically(&f, "one").unwrap();
        write_atomically(&f, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
