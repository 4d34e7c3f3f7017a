//! `GET /v1/search`: typo-tolerant lookup across records.

use std::time::Instant;

use actix_web::{HttpRequest, HttpResponse, get, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::caller::Caller;
use super::error::ApiError;
use crate::domain::RecordKind;
use crate::search::{MAX_LIMIT, SearchError, SearchHit, SearchQuery, spec};

#[derive(Debug, Deserialize, IntoParams)]
pub struct SearchParams {
    /// What to look for: names (typos welcome), an email or part of one, a phone number in
    /// any format, an id or a document number. At most 1,024 bytes.
    q: Option<String>,
    /// Only these kinds, comma-separated: leads, contacts, accounts, opportunities,
    /// tickets, orders, invoices, renewals.
    kind: Option<String>,
    /// Only records owned by this user id.
    owner: Option<String>,
    /// Only records with this status (leads, tickets, orders, invoices, renewals).
    status: Option<String>,
    /// Only opportunities at this stage.
    stage: Option<String>,
    /// At most this many hits (default 20, at most 100).
    limit: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchAnswer {
    /// Best first: relevance, then the most recently updated.
    pub hits: Vec<SearchHit>,
    pub took_ms: f64,
}

impl From<SearchError> for ApiError {
    fn from(error: SearchError) -> Self {
        match error {
            SearchError::EmptyQuery | SearchError::QueryTooLong(_) => {
                ApiError::BadRequest(error.to_string())
            }
            SearchError::Locked(_) | SearchError::Backend(_) => {
                ApiError::Unavailable(error.to_string())
            }
        }
    }
}

fn parse_kinds(text: &str) -> Result<Vec<RecordKind>, ApiError> {
    let mut kinds = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let kind: RecordKind = name
            .parse()
            .map_err(|_| ApiError::BadRequest(format!("unknown kind `{name}` in `kind`")))?;
        if spec(kind).is_none() {
            return Err(ApiError::BadRequest(format!(
                "kind `{name}` is not searchable; searchable kinds: {}",
                crate::search::indexed_kinds()
                    .map(RecordKind::path)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        kinds.push(kind);
    }
    Ok(kinds)
}

/// Finds records by what a rep types: names with typos, as-you-type prefixes, email
/// parts, phone numbers in any format, ids. Matched fields come back highlighted with
/// `<mark>…</mark>` (HTML-escaped).
#[utoipa::path(
    tag = "search",
    params(SearchParams),
    responses(
        (status = 200, body = SearchAnswer),
        (status = 400, description = "empty or oversized query, unknown kind, bad limit", body = super::error::Problem),
        (status = 503, description = "the search index cannot answer now", body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[get("/v1/search")]
pub async fn search_records(
    req: HttpRequest,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let params = web::Query::<SearchParams>::from_query(req.query_string())
        .map_err(|error| ApiError::BadRequest(format!("invalid search parameters: {error}")))?
        .into_inner();
    let q = params
        .q
        .ok_or_else(|| ApiError::BadRequest("`q` is required".into()))?;
    let kinds = match params.kind.as_deref() {
        Some(text) => Some(parse_kinds(text)?),
        None => None,
    };
    let limit = match params.limit.as_deref() {
        None => 20,
        Some(text) => text
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "`limit` must be a whole number from 1 to {MAX_LIMIT}, not `{text}`"
                ))
            })?,
    };
    let query = SearchQuery {
        q,
        kinds,
        owner: params.owner,
        status: params.status,
        stage: params.stage,
        limit,
    };
    query.validate()?;
    // The caller's kinds, reach and hidden fields: one parameter of the query itself, so
    // nothing outside them is matched, counted or highlighted.
    let scope = caller.search_scope();
    if scope.kinds.as_ref().is_some_and(Vec::is_empty) {
        return Err(ApiError::Forbidden(format!(
            "role `{}` may not read any searchable kind",
            caller.role.name
        )));
    }
    let started = Instant::now();
    let hits = state.search.search(&query, &scope).await?;
    Ok(HttpResponse::Ok().json(SearchAnswer {
        hits,
        took_ms: started.elapsed().as_secs_f64() * 1000.0,
    }))
}
