//! Records, their timelines and audit trails; edits through the audited write path.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, get, patch, post, web};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::Principal;
use super::error::ApiError;
use super::request::{read_body, require_json};
use crate::domain::RecordKind;
use crate::lifecycle::{Conversion, ConvertError, Converted, convert};
use crate::store::read::{AuditEntry, Record};
use crate::store::{Change, RequestMeta, WriteContext};

/// Kinds reachable through `/v1/{kind}/…`; users, teams, roles and tokens have their own
/// admin surface.
fn public_kind(path: &str) -> Result<RecordKind, ApiError> {
    let kind: RecordKind = path.parse().map_err(|_| ApiError::NotFound)?;
    match kind {
        RecordKind::User | RecordKind::Team | RecordKind::Role | RecordKind::ApiToken => {
            Err(ApiError::NotFound)
        }
        kind => Ok(kind),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct Limit {
    /// At most this many entries (default 100, at most 1000).
    limit: Option<i64>,
}

impl Limit {
    fn value(&self) -> i64 {
        self.limit.unwrap_or(100).clamp(1, 1000)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Timeline {
    pub items: Vec<Record>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditTrail {
    pub items: Vec<AuditEntry>,
}

/// One record by kind and id.
#[utoipa::path(
    tag = "records",
    params(("kind" = String, Path, description = "leads, accounts, contacts, opportunities, activities, tickets, orders, invoices, payments, renewals …"), ("id" = String, Path)),
    responses((status = 200, body = Record), (status = 404, body = super::error::Problem)),
    security(("bearer" = []))
)]
#[get("/v1/{kind}/{id}")]
pub async fn get_record(
    path: web::Path<(String, String)>,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    principal.require_admin()?;
    let (kind, id) = path.into_inner();
    let record = state
        .store
        .get(public_kind(&kind)?, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, format!("\"{}\"", record.version)))
        .json(record))
}

/// Change fields of a record. `If-Match: "<version>"` refuses the change (409) when the
/// record changed since it was read. Every changed field becomes an audit row.
#[utoipa::path(
    tag = "records",
    params(("kind" = String, Path), ("id" = String, Path)),
    request_body(content = Object, description = "fields to set", content_type = "application/json"),
    responses(
        (status = 200, body = Record),
        (status = 404, body = super::error::Problem),
        (status = 409, body = super::error::Problem),
        (status = 422, description = "unknown field or invalid value", body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[patch("/v1/{kind}/{id}")]
pub async fn patch_record(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
    principal: Principal,
    meta: RequestMeta,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    principal.require_admin()?;
    let (kind, id) = path.into_inner();
    let kind = public_kind(&kind)?;
    require_json(&req)?;
    let body = read_body(&req, payload, state.config.max_body_bytes).await?;
    let Value::Object(fields) = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "malformed JSON at line {}, column {}: {e}",
            e.line(),
            e.column()
        ))
    })?
    else {
        return Err(ApiError::BadRequest(
            "expected a JSON object of fields".into(),
        ));
    };
    let expected_version = match req.headers().get(header::IF_MATCH) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .map(|v| v.trim().trim_matches('"'))
                .and_then(|v| v.parse::<i64>().ok())
                .ok_or_else(|| ApiError::BadRequest("If-Match must be a version ETag".into()))?,
        ),
    };
    let ctx = WriteContext::new(principal.actor(), "api", meta);
    let mut fields = fields;
    let mut changes = Vec::new();
    if kind == RecordKind::Lead
        && let Some(current) = state.store.get(kind, &id).await?
    {
        // The lead as it will be, to see whether its qualification changes with this edit.
        let mut view = current.fields.clone();
        view.extend(fields.clone());
        if let Some(qualified) = state.config.qualification.evaluate(&view) {
            let now_qualified = qualified.get("qualified").and_then(Value::as_bool);
            fields.extend(qualified);
            changes.push(Change::Insert {
                kind: RecordKind::Activity,
                id: None,
                fields: serde_json::Map::from_iter([
                    ("activity_type".to_owned(), Value::from("qualification")),
                    ("channel".to_owned(), Value::from("api")),
                    ("lead_id".to_owned(), Value::from(id.clone())),
                    (
                        "subject".to_owned(),
                        Value::from(if now_qualified == Some(true) {
                            "Qualified"
                        } else {
                            "No longer qualified"
                        }),
                    ),
                    (
                        "occurred_at".to_owned(),
                        Value::from(crate::domain::value::now_timestamp()),
                    ),
                ]),
            });
        }
    }
    changes.insert(
        0,
        Change::Update {
            kind,
            id: id.clone(),
            fields,
            expected_version,
        },
    );
    state.store.write(&ctx, changes).await?;
    let record = state
        .store
        .get(kind, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, format!("\"{}\"", record.version)))
        .json(record))
}

/// The record's timeline: its activities, newest first.
#[utoipa::path(
    tag = "records",
    params(("kind" = String, Path), ("id" = String, Path), Limit),
    responses((status = 200, body = Timeline), (status = 404, body = super::error::Problem)),
    security(("bearer" = []))
)]
#[get("/v1/{kind}/{id}/timeline")]
pub async fn get_timeline(
    path: web::Path<(String, String)>,
    query: web::Query<Limit>,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    principal.require_admin()?;
    let (kind, id) = path.into_inner();
    let kind = public_kind(&kind)?;
    state
        .store
        .get(kind, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let items = state.store.timeline(kind, &id, query.value()).await?;
    Ok(HttpResponse::Ok().json(Timeline { items }))
}

/// Every change of the record: who, which field, old and new value, when, from where.
#[utoipa::path(
    tag = "records",
    params(("kind" = String, Path), ("id" = String, Path), Limit),
    responses((status = 200, body = AuditTrail)),
    security(("bearer" = []))
)]
#[get("/v1/{kind}/{id}/audit")]
pub async fn get_audit(
    path: web::Path<(String, String)>,
    query: web::Query<Limit>,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    principal.require_admin()?;
    let (kind, id) = path.into_inner();
    // Deleted and merged records keep their trail, so no existence check here.
    let items = state
        .store
        .audit_of(public_kind(&kind)?, &id, query.value())
        .await?;
    Ok(HttpResponse::Ok().json(AuditTrail { items }))
}

impl From<ConvertError> for ApiError {
    fn from(error: ConvertError) -> Self {
        match error {
            ConvertError::NotFound => ApiError::NotFound,
            ConvertError::AlreadyConverted(_) => ApiError::Conflict(error.to_string()),
            ConvertError::Store(store) => store.into(),
        }
    }
}

/// Convert a lead: its account (linked or created), contact (linked by email or created)
/// and, unless told otherwise, an opportunity — in one transaction, audited, with the
/// conversion on the lead's timeline. A converted lead cannot be converted again (409).
#[utoipa::path(
    tag = "records",
    params(("id" = String, Path)),
    request_body(content = Conversion, description = "optional details of the opportunity"),
    responses(
        (status = 201, body = Converted),
        (status = 404, body = super::error::Problem),
        (status = 409, body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[post("/v1/leads/{id}/convert")]
pub async fn convert_lead(
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
    principal: Principal,
    meta: RequestMeta,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    principal.require_admin()?;
    let body = read_body(&req, payload, state.config.max_body_bytes).await?;
    let request: Conversion = if body.iter().all(u8::is_ascii_whitespace) {
        Conversion::default()
    } else {
        require_json(&req)?;
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::BadRequest(format!("line {}, column {}: {e}", e.line(), e.column()))
        })?
    };
    let ctx = WriteContext::new(principal.actor(), "api", meta);
    let converted = convert(&state.store, &ctx, &id, &request).await?;
    Ok(HttpResponse::Created().json(converted))
}
