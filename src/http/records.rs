//! Records, their timelines and audit trails; edits through the audited write path.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, delete, get, patch, post, web};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::caller::Caller;
use super::error::ApiError;
use super::request::{optional_json, read_body, require_json};
use crate::access::{AUDIT, Action, Reach};
use crate::domain::RecordKind;
use crate::lifecycle::{Conversion, ConvertError, Converted, convert};
use crate::store::Change;
use crate::store::read::{AuditEntry, Record};

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
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    let (kind, id) = path.into_inner();
    let record = caller
        .reachable(public_kind(&kind)?, &id, Action::Read)
        .await?;
    let record = caller.redact(record);
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
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (kind, id) = path.into_inner();
    let kind = public_kind(&kind)?;
    let current = caller.reachable(kind, &id, Action::Update).await?;
    let fields = read_fields(&req, payload, &state).await?;
    // One refused field refuses the whole update: nothing is written.
    caller.check_writable(kind, &id, &fields).await?;
    // Amounts, numbers and states of orders, invoices and payments move only through the
    // billing operations; an issued invoice not at all.
    crate::billing::guard_generic_write(kind, Some(&current.fields), Some(&fields))?;
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
    let ctx = caller.context("api");
    let mut fields = fields;
    let mut changes = Vec::new();
    // The lead as it will be: its qualification may change, and new identifying values
    // join the dedup index.
    let mut edited_lead = None;
    if kind == RecordKind::Lead {
        // A person's edit is source `api` for survivorship: list it first in
        // `survivorship_priority` and later arrivals will not overwrite it.
        if !state.config.survivorship_priority.is_empty() {
            let mut sources = current
                .fields
                .get("field_sources")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            for name in fields.keys().filter(|n| kind.field(n).is_some()) {
                sources.insert(name.clone(), Value::from("api"));
            }
            fields.insert("field_sources".into(), Value::Object(sources));
        }
        let mut view = current.fields.clone();
        view.extend(fields.clone());
        if fields
            .keys()
            .any(|f| crate::pipeline::dedup::Dedup::compares(f))
        {
            edited_lead = Some(view.clone());
        }
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
    let mut tx = state.store.begin_write().await?;
    crate::store::write::apply(&mut tx, &ctx, changes).await?;
    if let Some(view) = edited_lead {
        state
            .pipeline
            .remember_written(&mut tx, kind, &id, &view)
            .await?;
    }
    tx.commit().await?;
    let record = state
        .store
        .get(kind, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let record = caller.redact(record);
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, format!("\"{}\"", record.version)))
        .json(record))
}

/// A JSON object of fields from the request body.
async fn read_fields(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<serde_json::Map<String, Value>, ApiError> {
    require_json(req)?;
    let body = read_body(req, payload, state.config.max_body_bytes).await?;
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
    Ok(fields)
}

/// Create a record. A caller whose reach is their own records owns what they create
/// unless they name an owner within their reach.
#[utoipa::path(
    tag = "records",
    params(("kind" = String, Path)),
    request_body(content = Object, description = "fields", content_type = "application/json"),
    responses(
        (status = 201, body = Record),
        (status = 403, body = super::error::Problem),
        (status = 422, description = "unknown field or invalid value", body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[post("/v1/{kind}")]
pub async fn create_record(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let kind = public_kind(&path)?;
    if matches!(caller.principal, super::auth::Principal::Partner { .. }) {
        // A partner's leads go through the partner API, its mapping and the pipeline.
        return Err(ApiError::Forbidden(
            "partners submit leads through POST /v1/partner/leads".into(),
        ));
    }
    caller.require(kind.path(), Action::Create).await?;
    crate::billing::guard_generic_write(kind, None, None)?;
    let mut fields = read_fields(&req, payload, &state).await?;
    caller.check_writable(kind, "", &fields).await?;
    if let (Reach::Owners(_), Some(_)) = (&caller.reach, kind.field("owner_id")) {
        match fields.get("owner_id").and_then(Value::as_str) {
            None => {
                if let super::auth::Principal::User { id, .. } = &caller.principal {
                    fields.insert("owner_id".into(), Value::from(id.clone()));
                }
            }
            Some(owner) if caller.reach.allows(Some(owner)) => {}
            Some(owner) => {
                return Err(ApiError::Forbidden(format!(
                    "owner `{owner}` is outside the caller's reach"
                )));
            }
        }
    }
    // The insert and its place in the dedup index commit together, so a later arrival
    // of the same person merges into it.
    let mut tx = state.store.begin_write().await?;
    let written = crate::store::write::apply(
        &mut tx,
        &caller.context("api"),
        vec![Change::Insert {
            kind,
            id: None,
            fields: fields.clone(),
        }],
    )
    .await?;
    state
        .pipeline
        .remember_written(&mut tx, kind, &written[0].id, &fields)
        .await?;
    tx.commit().await?;
    let record = state
        .store
        .get(kind, &written[0].id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let record = caller.redact(record);
    Ok(HttpResponse::Created()
        .insert_header((
            header::LOCATION,
            format!("/v1/{}/{}", kind.path(), record.id),
        ))
        .insert_header((header::ETAG, format!("\"{}\"", record.version)))
        .json(record))
}

/// Delete a record; its full snapshot stays in the audit trail.
#[utoipa::path(
    tag = "records",
    params(("kind" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 403, body = super::error::Problem), (status = 404, body = super::error::Problem)),
    security(("bearer" = []))
)]
#[delete("/v1/{kind}/{id}")]
pub async fn delete_record(
    path: web::Path<(String, String)>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (kind, id) = path.into_inner();
    let kind = public_kind(&kind)?;
    caller.reachable(kind, &id, Action::Delete).await?;
    // Invoice numbers stay gapless and payments stay on the books.
    crate::billing::guard_generic_write(kind, None, None)?;
    state
        .store
        .write(&caller.context("api"), vec![Change::Delete { kind, id }])
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The record's timeline: its activities, newest first, without fields the caller's
/// role may not see.
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
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (kind, id) = path.into_inner();
    let kind = public_kind(&kind)?;
    caller.reachable(kind, &id, Action::Read).await?;
    caller
        .require(RecordKind::Activity.path(), Action::Read)
        .await?;
    let items = state
        .store
        .timeline(kind, &id, query.value())
        .await?
        .into_iter()
        .map(|activity| caller.redact(activity))
        .collect();
    Ok(HttpResponse::Ok().json(Timeline { items }))
}

/// Query of `GET /v1/{kind}`: paging, sorting, the answer's format; any other parameter
/// is an equality filter on the field it names.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ListParams {
    /// At most this many records (default 50, at most 1000; 100,000 for CSV).
    pub limit: Option<i64>,
    pub offset: Option<i64>,
    /// A field or `updated_at` / `created_at`; `-` first for descending (default
    /// `-updated_at`).
    pub sort: Option<String>,
    /// `json` (default) or `csv` (needs the export permission).
    pub format: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecordList {
    pub items: Vec<Record>,
}

/// Records of a kind within the caller's reach, filtered by field values; as CSV with
/// `format=csv`. Fields the caller may not see are absent, and may not be filtered or
/// sorted on.
#[utoipa::path(
    tag = "records",
    params(("kind" = String, Path), ListParams),
    responses(
        (status = 200, body = RecordList),
        (status = 400, body = super::error::Problem),
        (status = 403, body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[get("/v1/{kind}")]
pub async fn list_records(
    path: web::Path<String>,
    params: web::Query<ListParams>,
    all_params: web::Query<std::collections::BTreeMap<String, String>>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let kind = public_kind(&path)?;
    caller.require(kind.path(), Action::Read).await?;
    let csv = match params.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "format `{other}`: expected json or csv"
            )));
        }
    };
    if csv {
        caller.require(kind.path(), Action::Export).await?;
    }
    let mut filters = Vec::new();
    for (name, value) in all_params.iter() {
        if ["limit", "offset", "sort", "format"].contains(&name.as_str()) {
            continue;
        }
        let def = kind.field(name).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "{} has no field `{name}` to filter on",
                kind.path()
            ))
        })?;
        if def.secret || def.ty == crate::domain::FieldType::Json {
            return Err(ApiError::BadRequest(format!(
                "`{name}` cannot be filtered on"
            )));
        }
        caller.check_readable(kind, name).await?;
        filters.push((def, value.clone()));
    }
    let sort_text = params.sort.as_deref().unwrap_or("-updated_at");
    let (descending, sort_name) = match sort_text.strip_prefix('-') {
        Some(name) => (true, name),
        None => (false, sort_text),
    };
    let sort: &'static str = match sort_name {
        "updated_at" => "updated_at",
        "created_at" => "created_at",
        "id" => "id",
        name => match kind.field(name) {
            Some(def) if !def.secret && def.ty != crate::domain::FieldType::Json => {
                caller.check_readable(kind, name).await?;
                def.name
            }
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "{} cannot be sorted by `{name}`",
                    kind.path()
                )));
            }
        },
    };
    let max = if csv { 100_000 } else { 1000 };
    let query = crate::store::read::ListQuery {
        filters,
        owners: match kind.field("owner_id") {
            Some(_) => caller.reach.owner_ids(),
            // Kinds without an owner are listed only to callers who reach everything.
            None if caller.reach == Reach::All => None,
            None => Some(Vec::new()),
        },
        sort,
        descending,
        limit: params.limit.unwrap_or(50).clamp(1, max),
        offset: params.offset.unwrap_or(0).max(0),
    };
    let items: Vec<Record> = state
        .store
        .list(kind, &query)
        .await?
        .into_iter()
        .map(|record| caller.redact(record))
        .collect();
    if !csv {
        return Ok(HttpResponse::Ok().json(RecordList { items }));
    }
    let columns: Vec<&str> = kind
        .fields()
        .iter()
        .filter(|def| !def.secret && !caller.role.is_hidden(kind.path(), def.name))
        .map(|def| def.name)
        .collect();
    let mut out = csv::Writer::from_writer(Vec::new());
    let header = ["id", "created_at", "updated_at"]
        .into_iter()
        .chain(columns.iter().copied());
    out.write_record(header)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    for record in &items {
        let mut row = vec![
            record.id.clone(),
            record.created_at.clone(),
            record.updated_at.clone(),
        ];
        row.extend(columns.iter().map(|name| match record.fields.get(*name) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
        }));
        out.write_record(&row)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    }
    let body = out
        .into_inner()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    state
        .store
        .record_event(
            &caller.context("api"),
            "export",
            kind.path(),
            "",
            None,
            Some(format!("{} rows", items.len())),
        )
        .await?;
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{}.csv\"", kind.path()),
        ))
        .body(body))
}

/// Every change of the record: who, which field, old and new value, when, from where.
/// For admins and auditors; deleted and merged records keep their trail.
#[utoipa::path(
    tag = "audit",
    params(("kind" = String, Path), ("id" = String, Path), Limit),
    responses((status = 200, body = AuditTrail), (status = 403, body = super::error::Problem)),
    security(("bearer" = []))
)]
#[get("/v1/{kind}/{id}/audit")]
pub async fn get_audit(
    path: web::Path<(String, String)>,
    query: web::Query<Limit>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(AUDIT, Action::Read).await?;
    let (kind, id) = path.into_inner();
    let kind = public_kind(&kind)?;
    if caller.reach != Reach::All {
        caller.reachable(kind, &id, Action::Read).await?;
    }
    let items = state.store.audit_of(kind, &id, query.value()).await?;
    Ok(HttpResponse::Ok().json(AuditTrail {
        items: caller.redact_audit(items),
    }))
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
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller
        .reachable(RecordKind::Lead, &id, Action::Update)
        .await?;
    caller
        .require(RecordKind::Opportunity.path(), Action::Create)
        .await?;
    let body = read_body(&req, payload, state.config.max_body_bytes).await?;
    if !body.iter().all(u8::is_ascii_whitespace) {
        require_json(&req)?;
    }
    let request: Conversion = optional_json(&body)?;
    let ctx = caller.context("api");
    let converted = convert(&state.store, &ctx, &id, &request).await?;
    Ok(HttpResponse::Created().json(converted))
}
