//! `GET /v1/audit`: the audit trail across records, by actor and time, as JSON or CSV.
//! Admins and auditors only; rows about fields the caller may not see are left out.

use actix_web::http::header;
use actix_web::{HttpResponse, get, web};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::caller::Caller;
use super::error::ApiError;
use crate::access::{AUDIT, Action, Reach};
use crate::store::audit::{AUDIT_COLUMNS, AuditFilter};
use crate::store::read::AuditEntry;

#[derive(Debug, Deserialize, IntoParams)]
pub struct AuditQuery {
    /// `user:<id>`, `partner:<name>`, `connector:<name>`, `pipeline:<stage>` …
    pub actor: Option<String>,
    /// A record kind's plural (`leads`) or an event's subject (`users` for sign-ins).
    pub kind: Option<String>,
    pub record_id: Option<String>,
    /// insert, update, merge, delete, sign_in, sign_in_failed, denied, export …
    pub action: Option<String>,
    /// RFC 3339; rows at or after.
    pub from: Option<String>,
    /// RFC 3339; rows before.
    pub to: Option<String>,
    /// Cursor: rows after this `seq` (the last `seq` of the previous page).
    pub after: Option<i64>,
    /// Default 100, at most 1000 (100,000 for CSV).
    pub limit: Option<i64>,
    /// `json` (default) or `csv` (needs audit export).
    pub format: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<i64>,
}

fn timestamp(name: &str, value: &Option<String>) -> Result<Option<String>, ApiError> {
    value
        .as_deref()
        .map(|text| {
            chrono::DateTime::parse_from_rfc3339(text)
                .map(|at| crate::domain::value::format_timestamp(at.to_utc()))
                .map_err(|e| ApiError::BadRequest(format!("{name}: not an RFC 3339 time: {e}")))
        })
        .transpose()
}

/// The audit trail filtered by actor, kind, record, action and time.
#[utoipa::path(
    tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, body = AuditPage),
        (status = 400, body = super::error::Problem),
        (status = 403, body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[get("/v1/audit")]
pub async fn search_audit(
    query: web::Query<AuditQuery>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(AUDIT, Action::Read).await?;
    let csv = match query.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "format `{other}`: expected json or csv"
            )));
        }
    };
    if csv {
        caller.require(AUDIT, Action::Export).await?;
    }
    // Rows across records cannot be narrowed to a reach cheaply: whole trail or none.
    if caller.reach != Reach::All {
        return Err(ApiError::Forbidden(
            "the audit trail across records needs a role that reaches every record".into(),
        ));
    }
    let filter = AuditFilter {
        actor: query.actor.clone(),
        kind: query.kind.clone(),
        record_id: query.record_id.clone(),
        action: query.action.clone(),
        from: timestamp("from", &query.from)?,
        to: timestamp("to", &query.to)?,
        after_seq: query.after,
        limit: query
            .limit
            .unwrap_or(100)
            .clamp(1, if csv { 100_000 } else { 1000 }),
    };
    let items = state.store.audit_search(&filter).await?;
    let next_after = (items.len() as i64 == filter.limit)
        .then(|| items.last().map(|e| e.seq))
        .flatten();
    let items = caller.redact_audit(items);
    if !csv {
        return Ok(HttpResponse::Ok().json(AuditPage { items, next_after }));
    }
    let mut out = csv::Writer::from_writer(Vec::new());
    let csv_error = |e: csv::Error| ApiError::Internal(e.to_string());
    out.write_record(std::iter::once("seq").chain(AUDIT_COLUMNS))
        .map_err(csv_error)?;
    let text = |value: &Value| match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for entry in &items {
        out.write_record([
            entry.seq.to_string(),
            entry.at.clone(),
            entry.actor.clone(),
            entry.channel.clone(),
            entry.action.clone(),
            entry.record_kind.clone(),
            entry.record_id.clone(),
            entry.field.clone().unwrap_or_default(),
            text(&entry.old_value),
            text(&entry.new_value),
            entry.ip.clone().unwrap_or_default(),
            entry.user_agent.clone().unwrap_or_default(),
            entry.request_id.clone().unwrap_or_default(),
        ])
        .map_err(csv_error)?;
    }
    let body = out
        .into_inner()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"audit.csv\"",
        ))
        .body(body))
}
