//! Spreadsheet imports: `POST /v1/imports` (multipart upload, dry run or real import),
//! `GET /v1/imports/{id}` (progress) and `GET /v1/imports/{id}/errors.csv`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use actix_multipart::Multipart;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use futures_util::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::AppState;
use super::caller::Caller;
use super::error::ApiError;
use crate::access::{Action, INBOX};
use crate::import::job::{self, DryRun, ImportSettings};
use crate::store::imports::{ImportProcessing, ImportRow, NewImport, RowError};

/// Rejected rows shown in `GET /v1/imports/{id}`; `errors.csv` has them all.
const ERRORS_SHOWN: i64 = 20;
/// Largest text part (`sheet`, `mapping`, `dry_run`) of the upload.
const MAX_TEXT_PART: usize = 64 * 1024;

/// The answer to a real upload.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportAccepted {
    pub id: String,
    pub status: String,
    /// True when this content had been uploaded before: its import is answered.
    pub existing: bool,
    pub location: String,
}

/// An import's progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImportStatus {
    #[serde(flatten)]
    pub import: ImportRow,
    /// Inbox rows of this import by how the pipeline handled them.
    pub processed: ImportProcessing,
    pub processed_total: i64,
    /// Share of read rows that are settled (processed or rejected at read).
    pub percent: f64,
    /// The first rejected rows (at read and in the pipeline), by row number.
    pub errors: Vec<RowError>,
}

struct Upload {
    path: PathBuf,
    file_name: String,
    sha256: String,
    sheet: Option<String>,
    mapping: Option<String>,
    dry_run: bool,
}

/// Removes the temporary upload when dropped.
struct TempUpload(PathBuf);

impl Drop for TempUpload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Upload a spreadsheet (xlsx, xlsm, xlsb, xls, ods, csv, tsv) to import its rows as
/// leads. Multipart fields: `file` (required), `sheet`, `mapping` (JSON object: header →
/// field, `custom` or `ignore`; or the name of a mapping such as `zoom_attendees` for a
/// Zoom attendee report), `dry_run=true`. A dry run answers the proposed mapping,
/// the first 20 rows as they would be written and the first errors, and writes nothing.
/// A real import answers 202 and reads in the background; re-uploading the same content
/// answers the existing import.
#[utoipa::path(
    tag = "imports",
    request_body(content = String, description = "multipart/form-data: file, sheet, mapping, dry_run", content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "dry run: what the import would do", body = DryRun),
        (status = 202, description = "import started (or the existing import of this content)", body = ImportAccepted),
        (status = 400, description = "no file part, bad mapping JSON, unknown sheet", body = super::error::Problem),
        (status = 401, description = "missing or invalid token", body = super::error::Problem),
        (status = 403, description = "not an admin token", body = super::error::Problem),
        (status = 413, description = "upload larger than max_import_bytes, or a zip bomb", body = super::error::Problem),
        (status = 415, description = "not a supported spreadsheet type", body = super::error::Problem),
        (status = 422, description = "corrupt, password-protected, empty or header-only file; `row`/`column` say where", body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[post("/v1/imports")]
pub async fn create_import(
    req: HttpRequest,
    payload: Multipart,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(INBOX, Action::Create).await?;
    let meta = caller.meta.clone();
    let limit = state.config.max_import_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Multipart framing adds a little; refuse what cannot fit before reading any of it.
    if declared.is_some_and(|n| n > limit + MAX_TEXT_PART as u64 * 4) {
        return Err(too_large(limit));
    }
    let dir = state.config.data_dir.join("imports-tmp");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::Internal(format!("creating {}: {e}", dir.display())))?;
    let upload = receive(payload, &dir, limit).await?;
    let temp = TempUpload(upload.path.clone());
    // `mapping` is either column choices (a JSON object) or the name of a mapping in
    // mappings/ that the rows are for (`zoom_attendees`), which may unpack the file's layout.
    let named = upload
        .mapping
        .as_deref()
        .map(str::trim)
        .filter(|text| !text.starts_with('{'));
    let (profile, layout) = match named {
        None => (None, None),
        Some(name) => {
            let mapping = state.pipeline.mapping(name).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "mapping `{name}` is neither a JSON object of header → field nor the name of a mapping"
                ))
            })?;
            (Some(name.to_owned()), mapping.import_layout.clone())
        }
    };
    let mapping: BTreeMap<String, String> =
        match upload.mapping.as_deref().filter(|_| named.is_none()) {
            None => BTreeMap::new(),
            Some(text) => serde_json::from_str(text).map_err(|e| {
                ApiError::BadRequest(format!(
                    "mapping must be a JSON object of header → field, `custom` or `ignore`: {e}"
                ))
            })?,
        };
    let settings = ImportSettings {
        sheet: upload.sheet.clone(),
        mapping,
        profile,
        layout,
        ..ImportSettings::default()
    };
    if upload.dry_run {
        let answer = job::dry_run(upload.path.clone(), upload.file_name.clone(), settings).await?;
        drop(temp);
        return Ok(HttpResponse::Ok().json(answer));
    }
    // Refuse what cannot be read before creating the import (type, password, bomb…).
    job::dry_run(
        upload.path.clone(),
        upload.file_name.clone(),
        settings.clone(),
    )
    .await?;
    let (import, created) = state
        .store
        .create_import(&NewImport {
            file_name: &upload.file_name,
            content_sha256: &upload.sha256,
            sheet: upload.sheet.as_deref(),
            mapping: upload.mapping.as_deref(),
            created_by: &caller.actor(),
        })
        .await?;
    if created {
        let state = state.clone();
        let id = import.id.clone();
        let file_name = upload.file_name.clone();
        tokio::spawn(async move {
            let temp = temp;
            let outcome = job::run(
                &state.store,
                &state.accepter,
                &id,
                &temp.0,
                &file_name,
                &settings,
                meta,
                &|_| {},
            )
            .await;
            match outcome {
                Ok(read) => tracing::info!(import = %id, ?read, "import read"),
                Err(error) => tracing::warn!(import = %id, %error, "import failed"),
            }
            drop(temp);
        });
    }
    let location = format!("/v1/imports/{}", import.id);
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, location.clone()))
        .json(ImportAccepted {
            status: if created {
                "queued".into()
            } else {
                import.status
            },
            id: import.id,
            existing: !created,
            location,
        }))
}

fn too_large(limit: u64) -> ApiError {
    ApiError::Import {
        status: actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
        code: "payload-too-large",
        detail: format!(
            "the upload is larger than the {limit}-byte limit (max_import_bytes); split the file"
        ),
        row: None,
        column: None,
    }
}

/// Streams the `file` part to a temporary file (hashing it on the way) and collects the
/// small text parts.
async fn receive(mut payload: Multipart, dir: &Path, limit: u64) -> Result<Upload, ApiError> {
    let mut upload = Upload {
        path: dir.join(format!("{}.upload", uuid::Uuid::now_v7())),
        file_name: String::new(),
        sha256: String::new(),
        sheet: None,
        mapping: None,
        dry_run: false,
    };
    let mut have_file = false;
    let malformed = |e: actix_multipart::MultipartError| {
        ApiError::BadRequest(format!("malformed multipart body: {e}"))
    };
    while let Some(field) = payload.next().await {
        let mut field = field.map_err(malformed)?;
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            if have_file {
                return Err(ApiError::BadRequest("send one `file` part".into()));
            }
            have_file = true;
            upload.file_name = field
                .content_disposition()
                .and_then(|cd| cd.get_filename())
                .map(|n| n.rsplit(['/', '\\']).next().unwrap_or(n).to_owned())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "upload".into());
            let mut file = std::fs::File::create(&upload.path)
                .map_err(|e| ApiError::Internal(format!("temporary upload: {e}")))?;
            let guard = TempUpload(upload.path.clone());
            let mut hasher = Sha256::new();
            let mut size: u64 = 0;
            while let Some(chunk) = field.next().await {
                let chunk = chunk.map_err(malformed)?;
                size += chunk.len() as u64;
                if size > limit {
                    return Err(too_large(limit));
                }
                hasher.update(&chunk);
                file.write_all(&chunk)
                    .map_err(|e| ApiError::Internal(format!("temporary upload: {e}")))?;
            }
            file.sync_all()
                .map_err(|e| ApiError::Internal(format!("temporary upload: {e}")))?;
            std::mem::forget(guard);
            upload.sha256 = hex::encode(hasher.finalize());
            continue;
        }
        let mut text = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(malformed)?;
            if text.len() + chunk.len() > MAX_TEXT_PART {
                return Err(ApiError::BadRequest(format!(
                    "part `{name}` is larger than {MAX_TEXT_PART} bytes"
                )));
            }
            text.extend_from_slice(&chunk);
        }
        let text = String::from_utf8(text)
            .map_err(|_| ApiError::BadRequest(format!("part `{name}` is not UTF-8")))?;
        let text = text.trim().to_owned();
        match name.as_str() {
            "sheet" if !text.is_empty() => upload.sheet = Some(text),
            "mapping" if !text.is_empty() => upload.mapping = Some(text),
            "dry_run" => upload.dry_run = matches!(text.as_str(), "true" | "1" | "yes"),
            _ => {}
        }
    }
    if !have_file {
        let _ = std::fs::remove_file(&upload.path);
        return Err(ApiError::BadRequest(
            "no `file` part: send the spreadsheet as multipart/form-data field `file`".into(),
        ));
    }
    Ok(upload)
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
pub struct ImportListQuery {
    /// At most this many imports (default 50, at most 500).
    limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImportList {
    pub items: Vec<ImportRow>,
}

/// Past imports, newest first.
#[utoipa::path(
    tag = "imports",
    params(ImportListQuery),
    responses((status = 200, body = ImportList)),
    security(("bearer" = []))
)]
#[get("/v1/imports")]
pub async fn list_imports(
    query: web::Query<ImportListQuery>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(INBOX, Action::Read).await?;
    let items = state
        .store
        .list_imports(query.limit.unwrap_or(50).clamp(1, 500))
        .await?;
    Ok(HttpResponse::Ok().json(ImportList { items }))
}

/// An import's progress: rows read, accepted, processed by outcome, and the first
/// rejected rows.
#[utoipa::path(
    tag = "imports",
    params(("id" = String, Path, description = "import id")),
    responses(
        (status = 200, description = "the import", body = ImportStatus),
        (status = 404, description = "no such import", body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[get("/v1/imports/{id}")]
pub async fn get_import(
    id: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(INBOX, Action::Read).await?;
    let import = state.store.import(&id).await?.ok_or(ApiError::NotFound)?;
    let processed = state.store.import_processing(&id).await?;
    let errors = state
        .store
        .import_row_errors(&id, Some(ERRORS_SHOWN))
        .await?;
    let settled = processed.processed() + import.rows_rejected_at_read;
    let percent = if import.rows_read == 0 {
        0.0
    } else {
        let p = 100.0 * settled as f64 / import.rows_read as f64;
        let p = (p * 10.0).round() / 10.0;
        if import.status == "reading" {
            p.min(99.9)
        } else {
            p
        }
    };
    Ok(HttpResponse::Ok().json(ImportStatus {
        processed_total: processed.processed(),
        import,
        processed,
        percent,
        errors,
    }))
}

/// Every rejected row (at read time and in the pipeline) as CSV: row, column, reason.
#[utoipa::path(
    tag = "imports",
    params(("id" = String, Path, description = "import id")),
    responses(
        (status = 200, description = "text/csv: row,column,reason", body = String, content_type = "text/csv"),
        (status = 404, description = "no such import", body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[get("/v1/imports/{id}/errors.csv")]
pub async fn import_errors_csv(
    id: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(INBOX, Action::Read).await?;
    state.store.import(&id).await?.ok_or(ApiError::NotFound)?;
    let errors = state.store.import_row_errors(&id, None).await?;
    let mut writer = csv::Writer::from_writer(Vec::new());
    let csv_error = |e: csv::Error| ApiError::Internal(e.to_string());
    writer
        .write_record(["row", "column", "reason"])
        .map_err(csv_error)?;
    for error in errors {
        writer
            .write_record([
                error.row.to_string(),
                error.column.unwrap_or_default(),
                error.reason,
            ])
            .map_err(csv_error)?;
    }
    let body = writer
        .into_inner()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"import-{id}-errors.csv\""),
        ))
        .body(body))
}

impl From<crate::import::undo::UndoError> for ApiError {
    fn from(error: crate::import::undo::UndoError) -> Self {
        use crate::import::undo::UndoError;
        match error {
            UndoError::NotFound => ApiError::NotFound,
            UndoError::Conflict(detail) => ApiError::Conflict(detail),
            UndoError::Store(store) => store.into(),
        }
    }
}

/// Undo a finished import: records it created are removed and fields it changed are
/// restored from the audit trail, except fields someone changed since (counted as kept).
#[utoipa::path(
    tag = "imports",
    params(("id" = String, Path, description = "import id")),
    responses(
        (status = 200, body = crate::import::undo::UndoReport),
        (status = 404, description = "no such import", body = super::error::Problem),
        (status = 409, description = "still running, or undone already", body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[post("/v1/imports/{id}/undo")]
pub async fn undo_import(
    id: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(INBOX, Action::Update).await?;
    caller.require("leads", Action::Delete).await?;
    let report =
        crate::import::undo::undo_import(&state.store, &caller.context("import-undo"), &id).await?;
    Ok(HttpResponse::Ok().json(report))
}
