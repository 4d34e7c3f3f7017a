//! The review queue for data stewards.

use actix_web::{HttpResponse, get, post, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::caller::Caller;
use super::error::ApiError;
use crate::access::Action;
use crate::pipeline::review::{self, Decision, ReviewError, ReviewPair};
use crate::pipeline::unmerge::{UnmergeError, UnmergeRequest, Unmerged, unmerge};
use crate::store::read::Record;

#[derive(Debug, Deserialize, IntoParams)]
pub struct ReviewQuery {
    limit: Option<i64>,
}

/// A pair with both records, side by side.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewItem {
    #[serde(flatten)]
    pub pair: ReviewPair,
    pub a: Option<Record>,
    pub b: Option<Record>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewList {
    pub items: Vec<ReviewItem>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ReviewDecision {
    pub decision: Decision,
}

impl From<ReviewError> for ApiError {
    fn from(error: ReviewError) -> Self {
        match error {
            ReviewError::NotFound => ApiError::NotFound,
            ReviewError::AlreadyResolved(_) | ReviewError::Gone(_) => {
                ApiError::Conflict(error.to_string())
            }
            ReviewError::Store(store) => store.into(),
        }
    }
}

/// Open candidate duplicate pairs, oldest first, with each field's comparison.
#[utoipa::path(tag = "review", params(ReviewQuery), responses((status = 200, body = ReviewList)), security(("bearer" = [])))]
#[get("/v1/review")]
pub async fn list_review(
    query: web::Query<ReviewQuery>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require("leads", Action::Merge).await?;
    let pairs = review::open_pairs(&state.store, query.limit.unwrap_or(50).clamp(1, 500)).await?;
    let mut items = Vec::with_capacity(pairs.len());
    for pair in pairs {
        let kind = pair
            .kind
            .parse()
            .map_err(|_| ApiError::Internal("bad kind".into()))?;
        // Both records as any read answers them: without the fields the role does not see.
        let a = state
            .store
            .get(kind, &pair.record_a)
            .await?
            .map(|r| caller.redact(r));
        let b = state
            .store
            .get(kind, &pair.record_b)
            .await?
            .map(|r| caller.redact(r));
        items.push(ReviewItem { pair, a, b });
    }
    Ok(HttpResponse::Ok().json(ReviewList { items }))
}

/// Decide a pair: `merge` (b into a, audited and reversible) or `not_a_duplicate`
/// (remembered). A pair already decided, or whose record is gone, is 409.
#[utoipa::path(
    tag = "review",
    params(("id" = String, Path)),
    request_body = ReviewDecision,
    responses((status = 200, body = ReviewPair), (status = 404, body = super::error::Problem), (status = 409, body = super::error::Problem)),
    security(("bearer" = []))
)]
#[post("/v1/review/{id}")]
pub async fn decide_review(
    id: web::Path<String>,
    body: web::Json<ReviewDecision>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require("leads", Action::Merge).await?;
    let ctx = caller.context("review");
    let pair = review::decide(&state.store, &ctx, &id, body.decision).await?;
    Ok(HttpResponse::Ok().json(pair))
}

impl From<UnmergeError> for ApiError {
    fn from(error: UnmergeError) -> Self {
        match error {
            UnmergeError::Ambiguous => ApiError::BadRequest(error.to_string()),
            UnmergeError::NotMerged(_) => ApiError::Conflict(error.to_string()),
            UnmergeError::Store(store) => store.into(),
        }
    }
}

/// Undo a merge into this lead: `{"merged_id": …}` for a steward's merge, `{"inbound_id": …}`
/// for an arrival that merged automatically. Fields the merge changed are put back where
/// nobody changed them since; the other lead returns with its activities; the pair is
/// remembered as two people.
#[utoipa::path(
    tag = "review",
    params(("id" = String, Path)),
    request_body = UnmergeRequest,
    responses((status = 200, body = Unmerged), (status = 400, body = super::error::Problem), (status = 409, body = super::error::Problem)),
    security(("bearer" = []))
)]
#[post("/v1/leads/{id}/unmerge")]
pub async fn unmerge_lead(
    id: web::Path<String>,
    body: web::Json<UnmergeRequest>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require("leads", Action::Merge).await?;
    let ctx = caller.context("review");
    let unmerged = unmerge(&state.store, &state.pipeline, &ctx, &id, &body).await?;
    Ok(HttpResponse::Ok().json(unmerged))
}
