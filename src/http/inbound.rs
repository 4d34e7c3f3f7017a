//! Inbox lineage and operations: what an inbound record became, failures, retries.

use actix_web::{HttpResponse, get, post, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::caller::Caller;
use super::error::ApiError;
use crate::access::{Action, INBOX};
use crate::store::inbox::{ChannelDepth, InboxDepth, InboxRow};

#[derive(Debug, Deserialize, IntoParams)]
pub struct InboxQuery {
    /// pending, processing, done or failed (default failed).
    status: Option<String>,
    limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InboxList {
    pub items: Vec<InboxRow>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InboxChannels {
    /// All rows by state.
    pub depth: InboxDepth,
    /// Rows by channel (the inbound source; spreadsheet imports as `import`) and state.
    pub channels: Vec<ChannelDepth>,
}

/// The inbox's depth, in total and per channel.
#[utoipa::path(
    tag = "inbox",
    responses((status = 200, body = InboxChannels)),
    security(("bearer" = []))
)]
#[get("/v1/inbound/channels")]
pub async fn inbound_channels(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(INBOX, Action::Read).await?;
    let depth = state.store.inbox_depth().await?;
    let channels = state.store.inbox_channels().await?;
    Ok(HttpResponse::Ok().json(InboxChannels { depth, channels }))
}

/// One inbound record: its state, attempts, error and the records it became.
#[utoipa::path(
    tag = "inbox",
    params(("id" = String, Path)),
    responses((status = 200, body = InboxRow), (status = 404, body = super::error::Problem)),
    security(("bearer" = []))
)]
#[get("/v1/inbound/{id}")]
pub async fn get_inbound(
    id: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(INBOX, Action::Read).await?;
    let row = state
        .store
        .inbox_row(&id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(row))
}

/// Inbound records by state, oldest first.
#[utoipa::path(
    tag = "inbox",
    params(InboxQuery),
    responses((status = 200, body = InboxList)),
    security(("bearer" = []))
)]
#[get("/v1/inbound")]
pub async fn list_inbound(
    query: web::Query<InboxQuery>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(INBOX, Action::Read).await?;
    let status = query.status.as_deref().unwrap_or("failed");
    if !["pending", "processing", "done", "failed"].contains(&status) {
        return Err(ApiError::BadRequest(format!("unknown status `{status}`")));
    }
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let items = state.store.inbox_rows(status, limit).await?;
    Ok(HttpResponse::Ok().json(InboxList { items }))
}

/// Queue a failed inbound record again.
#[utoipa::path(
    tag = "inbox",
    params(("id" = String, Path)),
    responses(
        (status = 202, body = InboxRow),
        (status = 404, body = super::error::Problem),
        (status = 409, description = "the row is not failed", body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[post("/v1/inbound/{id}/retry")]
pub async fn retry_inbound(
    id: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller.require(INBOX, Action::Update).await?;
    if !state.store.retry_inbox(&id).await? {
        let row = state
            .store
            .inbox_row(&id)
            .await?
            .ok_or(ApiError::NotFound)?;
        return Err(ApiError::Conflict(format!(
            "inbound {} is {}, only failed rows are retried",
            row.id, row.status
        )));
    }
    state.appended.notify_one();
    let row = state
        .store
        .inbox_row(&id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Accepted().json(row))
}
