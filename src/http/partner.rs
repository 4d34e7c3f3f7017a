//! `POST /v1/partner/leads`: partners push one lead or a batch, with an Idempotency-Key.

use actix_web::http::header::HeaderName;
use actix_web::{HttpRequest, HttpResponse, get, post, web};
use chrono::Utc;
use connectors::Inbound;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::AppState;
use super::auth::Principal;
use super::error::ApiError;
use super::request::{read_body, require_json};
use crate::store::RequestMeta;
use crate::store::inbox::{Accepted, IdempotencyKey, InboxRow, Receipt, Submission};

/// Longest `?wait=true` holds the answer for the pipeline.
pub const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Largest batch one request may carry.
pub const MAX_BATCH: usize = 1000;

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// The answer to a batch: one receipt per item, in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchReceipt {
    pub items: Vec<Receipt>,
}

/// What the pipeline made of one submitted lead.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ItemResult {
    /// The inbound id (`GET /v1/partner/leads/{id}`).
    pub id: String,
    pub external_id: Option<String>,
    /// `created`, `merged` (into an existing lead), `review` (created, and paired with a
    /// possible duplicate for a person to decide), `rejected` (see `reason`; fix and
    /// resubmit), or `pending` (not processed yet).
    pub outcome: String,
    /// The lead it became or merged into.
    pub record_id: Option<String>,
    pub reason: Option<String>,
}

/// The answer to `?wait=true`: one result per item, in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResults {
    pub items: Vec<ItemResult>,
    /// False when some items were still `pending` when the wait ran out.
    pub complete: bool,
}

/// `(outcome, record id, reason)` of an inbox row, from its state and lineage.
fn outcome_of(row: &InboxRow) -> (String, Option<String>, Option<String>) {
    let text = |key: &str| {
        row.result
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    match row.status.as_str() {
        "done" => {
            let action = text("action").unwrap_or_else(|| "done".into());
            let reason = text("reason");
            (action, text("id"), reason)
        }
        "failed" => ("rejected".into(), None, row.error.clone()),
        _ => ("pending".into(), None, None),
    }
}

fn item_result(receipt: &Receipt, row: Option<&InboxRow>) -> ItemResult {
    let (outcome, record_id, reason) = row.map_or(("pending".into(), None, None), outcome_of);
    ItemResult {
        id: receipt.id.clone(),
        external_id: receipt.external_id.clone(),
        outcome,
        record_id,
        reason,
    }
}

/// Waits (at most [`MAX_WAIT`]) until every receipt's row has left the queue; answers each
/// item's result, pending ones included when the time ran out.
async fn wait_for_results(
    state: &AppState,
    receipts: &[Receipt],
) -> Result<(Vec<ItemResult>, bool), ApiError> {
    let ids: Vec<String> = receipts.iter().map(|r| r.id.clone()).collect();
    let deadline = tokio::time::Instant::now() + MAX_WAIT;
    let mut pause = std::time::Duration::from_millis(10);
    loop {
        let rows = state.store.inbox_rows_by_id(&ids).await?;
        let by_id: std::collections::HashMap<&str, &InboxRow> =
            rows.iter().map(|row| (row.id.as_str(), row)).collect();
        let results: Vec<ItemResult> = receipts
            .iter()
            .map(|receipt| item_result(receipt, by_id.get(receipt.id.as_str()).copied()))
            .collect();
        let complete = results.iter().all(|r| r.outcome != "pending");
        if complete || tokio::time::Instant::now() + pause > deadline {
            return Ok((results, complete));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(200));
    }
}

/// `?wait=true|false` (absent: false).
fn wait_requested(req: &HttpRequest) -> Result<bool, ApiError> {
    let mut wait = false;
    for (key, value) in form_urlencoded::parse(req.query_string().as_bytes()) {
        if key == "wait" {
            wait = match value.as_ref() {
                "true" | "1" => true,
                "false" | "0" => false,
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "wait must be true or false, not {other:?}"
                    )));
                }
            };
        }
    }
    Ok(wait)
}

/// Accept leads from a partner: one JSON object or an array of up to 1,000.
///
/// Each lead is durable in the inbox before the answer. A lead's `external_id` field, or
/// the request's `Idempotency-Key`, makes a replay answer as the first request did.
///
/// With `?wait=true` the answer waits (at most 10 s) for the pipeline and reports each
/// item's outcome (`created`, `merged`, `review`, `rejected` with a reason) and record id:
/// `200` when every item is processed, `202` with `pending` items when the wait ran out.
/// Without it the answer is `202` with the inbound ids at once; `GET /v1/partner/leads/{id}`
/// reports the same outcome later.
#[utoipa::path(
    tag = "partner",
    request_body(content = Object, description = "a lead object, or an array of lead objects", content_type = "application/json"),
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "replays with the same key and body get the first answer; a different body gets 409"),
        ("wait" = Option<bool>, Query, description = "wait (at most 10 s) for the pipeline and answer each item's outcome"),
    ),
    responses(
        (status = 200, description = "?wait=true and every item processed: an ItemResult (single lead) or BatchResults", body = BatchResults),
        (status = 202, description = "accepted (single lead); with ?wait=true, an ItemResult or BatchResults with pending items", body = Receipt),
        (status = 400, description = "malformed JSON or not lead objects", body = super::error::Problem),
        (status = 401, description = "missing or invalid partner key", body = super::error::Problem),
        (status = 409, description = "Idempotency-Key reused with a different body", body = super::error::Problem),
        (status = 413, description = "body too large", body = super::error::Problem),
        (status = 415, description = "not JSON", body = super::error::Problem),
        (status = 503, description = "store unavailable; retry after Retry-After", body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[post("/v1/partner/leads")]
pub async fn submit_leads(
    req: HttpRequest,
    payload: web::Payload,
    principal: Principal,
    meta: RequestMeta,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let Principal::Partner { name, .. } = &principal else {
        return Err(ApiError::Forbidden("this needs a partner key".into()));
    };
    partner_allowed(&state, name, "submit")?;
    require_json(&req)?;
    let wait = wait_requested(&req)?;
    let body = read_body(&req, payload, state.config.max_body_bytes).await?;
    let idempotency = idempotency_key(&req, &principal, &body)?;
    let parsed: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "malformed JSON at line {}, column {}: {e}",
            e.line(),
            e.column()
        ))
    })?;
    let (leads, single) = match parsed {
        Value::Object(lead) => (vec![lead], true),
        Value::Array(items) => {
            if items.is_empty() || items.len() > MAX_BATCH {
                return Err(ApiError::Unprocessable(format!(
                    "a batch holds 1 to {MAX_BATCH} leads, this one has {}",
                    items.len()
                )));
            }
            let leads = items
                .into_iter()
                .enumerate()
                .map(|(index, item)| match item {
                    Value::Object(lead) => Ok(lead),
                    _ => Err(ApiError::BadRequest(format!(
                        "item {index} is not a JSON object"
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            (leads, false)
        }
        _ => {
            return Err(ApiError::BadRequest(
                "expected a lead object or an array of lead objects".into(),
            ));
        }
    };
    let source = format!("partner:{name}");
    let received_at = Utc::now();
    let mut items = Vec::with_capacity(leads.len());
    for (index, lead) in leads.into_iter().enumerate() {
        if lead.is_empty() {
            return Err(ApiError::Unprocessable(format!(
                "lead {index} has no fields"
            )));
        }
        let external_id = match lead.get("external_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 255 => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(_) => {
                return Err(ApiError::Unprocessable(format!(
                    "lead {index}: external_id must be a string of 1 to 255 characters or a number"
                )));
            }
        };
        let raw = serde_json::to_vec(&lead).unwrap_or_default();
        items.push(Inbound {
            source: source.clone(),
            external_id,
            received_at,
            fields: lead,
            raw,
        });
    }
    let count = items.len() as u64;
    let accepted = state
        .accepter
        .accept(Submission {
            items,
            meta,
            idempotency,
        })
        .await?;
    let (receipts, replayed) = match accepted {
        Accepted::New(receipts) => (receipts, false),
        Accepted::Replayed(receipts) => (receipts, true),
        Accepted::KeyReused => {
            return Err(ApiError::Conflict(
                "this Idempotency-Key was used with a different request body".into(),
            ));
        }
    };
    let duplicates = receipts.iter().filter(|r| r.duplicate).count() as u64;
    if replayed {
        state
            .metrics
            .inbound_replayed
            .with_label_values(&["partner"])
            .inc_by(count);
    } else {
        state
            .metrics
            .inbound_accepted
            .with_label_values(&["partner"])
            .inc_by(count - duplicates);
        state
            .metrics
            .inbound_replayed
            .with_label_values(&["partner"])
            .inc_by(duplicates);
    }
    if wait {
        let (results, complete) = wait_for_results(&state, &receipts).await?;
        let mut response = if complete {
            HttpResponse::Ok()
        } else {
            HttpResponse::Accepted()
        };
        if replayed || duplicates == count {
            response.insert_header((REPLAYED, "true"));
        }
        return Ok(if single {
            response.json(&results[0])
        } else {
            response.json(BatchResults {
                items: results,
                complete,
            })
        });
    }
    let mut response = HttpResponse::Accepted();
    if replayed || duplicates == count {
        response.insert_header((REPLAYED, "true"));
    }
    Ok(if single {
        response.json(&receipts[0])
    } else {
        response.json(BatchReceipt { items: receipts })
    })
}

fn idempotency_key(
    req: &HttpRequest,
    principal: &Principal,
    body: &[u8],
) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = req.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| {
            ApiError::BadRequest("Idempotency-Key must be 1 to 255 visible characters".into())
        })?;
    Ok(Some(IdempotencyKey {
        scope: principal.actor(),
        key: key.to_owned(),
        request_sha256: hex::encode(Sha256::digest(body)),
    }))
}

/// Where a partner's submission stands: the inbox row's state, attempts, error and what it
/// became.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubmissionStatus {
    pub id: String,
    /// `pending`, `processing`, `done` or `failed`.
    pub status: String,
    pub attempts: i64,
    pub error: Option<String>,
    #[schema(value_type = Object)]
    pub result: Value,
    /// `created`, `merged`, `review`, `rejected` or `pending`, as `?wait=true` answers.
    pub outcome: String,
    pub record_id: Option<String>,
    pub reason: Option<String>,
}

/// The status of one of the calling partner's own submissions; anyone else's is `404`.
#[utoipa::path(
    tag = "partner",
    params(("id" = String, Path, description = "the id a `POST /v1/partner/leads` answered")),
    responses(
        (status = 200, body = SubmissionStatus),
        (status = 401, description = "missing or invalid partner key", body = super::error::Problem),
        (status = 404, description = "no such submission of this partner", body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[get("/v1/partner/leads/{id}")]
pub async fn submission_status(
    id: web::Path<String>,
    principal: Principal,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let Principal::Partner { name, .. } = &principal else {
        return Err(ApiError::Forbidden("this needs a partner key".into()));
    };
    partner_allowed(&state, name, "status")?;
    let row = state
        .store
        .inbox_row(&id)
        .await?
        .filter(|row| row.source == format!("partner:{name}"))
        .ok_or(ApiError::NotFound)?;
    let (outcome, record_id, reason) = outcome_of(&row);
    Ok(HttpResponse::Ok().json(SubmissionStatus {
        outcome,
        record_id,
        reason,
        id: row.id,
        status: row.status,
        attempts: row.attempts,
        error: row.error,
        result: row.result,
    }))
}

/// The partner's scope and rate limit (`[partners.<name>]`, else the defaults).
fn partner_allowed(state: &AppState, name: &str, scope: &str) -> Result<(), ApiError> {
    let configured = state.config.partners.get(name);
    let default = crate::config::PartnerSection::default();
    let partner = configured.unwrap_or(&default);
    if !partner.scopes.iter().any(|s| s == scope) {
        return Err(ApiError::Forbidden(format!(
            "partner `{name}` does not have the `{scope}` scope"
        )));
    }
    state
        .partner_limiter
        .check_rate(name.to_owned(), partner.rate_limit_per_minute)
        .map_err(|retry_after_secs| {
            state
                .metrics
                .inbound_rejected
                .with_label_values(&["partner", "rate_limited"])
                .inc();
            ApiError::TooManyRequests { retry_after_secs }
        })
}
