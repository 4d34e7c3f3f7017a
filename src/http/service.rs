//! Post-sales endpoints: tickets (create, edit, status, replies), contracts (create, edit,
//! renewed / lapsed) and expansion rules run for one account. Generic reads
//! (`GET /v1/tickets/{id}`, timelines, audit trails, lists) are the records API's.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, patch, post, web};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::AppState;
use super::auth::Principal;
use super::caller::Caller;
use super::error::ApiError;
use super::request::{read_body, require_json};
use crate::access::{Action, Reach};
use crate::domain::RecordKind;
use crate::service::ServiceError;
use crate::service::tickets::{self, Direction, NewTicket, Reply, Status};
use crate::store::Change;
use crate::store::write::Journal;

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        match error {
            ServiceError::Store(error) => error.into(),
            ServiceError::Invalid(why) => ApiError::Unprocessable(why),
            ServiceError::State(why) => ApiError::Conflict(why),
            ServiceError::NotFound(_) => ApiError::NotFound,
        }
    }
}

/// Ticket fields the service keeps: set by status changes, replies and the SLA evaluator,
/// never by hand.
const TICKET_MANAGED: &[&str] = &[
    "status",
    "number",
    "first_response_due",
    "resolution_due",
    "first_responded_at",
    "resolved_at",
    "closed_at",
    "sla_paused_at",
    "sla_paused_seconds",
    "first_response_breached_at",
    "resolution_breached_at",
    "reopened_count",
    "follow_up_of",
    "thread_key",
    "assignment_rule",
];

/// Contract fields set by the renewal evaluator and the status endpoint.
const CONTRACT_MANAGED: &[&str] = &[
    "status",
    "renewal_opportunity_id",
    "reminded_at",
    "successor_id",
];

async fn json_object(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<Map<String, Value>, ApiError> {
    require_json(req)?;
    let body = read_body(req, payload, state.config.max_body_bytes).await?;
    match serde_json::from_slice(&body) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(ApiError::BadRequest("expected a JSON object".into())),
        Err(e) => Err(ApiError::BadRequest(format!("malformed JSON: {e}"))),
    }
}

fn refuse_managed(
    kind: RecordKind,
    fields: &Map<String, Value>,
    managed: &[&str],
    hint: &str,
) -> Result<(), ApiError> {
    if let Some(name) = fields.keys().find(|name| managed.contains(&name.as_str())) {
        return Err(ApiError::Unprocessable(format!(
            "{}.{name} is kept by the service{hint}",
            kind.path()
        )));
    }
    Ok(())
}

/// The owner a caller whose reach is their own records must give (or gets).
fn owner_within_reach(caller: &Caller, fields: &mut Map<String, Value>) -> Result<(), ApiError> {
    if let Reach::Owners(_) = &caller.reach {
        match fields.get("owner_id").and_then(Value::as_str) {
            None => {
                if let Principal::User { id, .. } = &caller.principal {
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
    Ok(())
}

async fn answer(
    state: &AppState,
    caller: &Caller,
    kind: RecordKind,
    id: &str,
    created: bool,
) -> Result<HttpResponse, ApiError> {
    let record = state.store.get(kind, id).await?.ok_or(ApiError::NotFound)?;
    let record = caller.redact(record);
    let mut response = if created {
        let mut response = HttpResponse::Created();
        response.insert_header((header::LOCATION, format!("/v1/{}/{id}", kind.path())));
        response
    } else {
        HttpResponse::Ok()
    };
    Ok(response
        .insert_header((header::ETAG, format!("\"{}\"", record.version)))
        .json(record))
}

fn if_match(req: &HttpRequest) -> Result<Option<i64>, ApiError> {
    req.headers()
        .get(header::IF_MATCH)
        .map(|value| {
            value
                .to_str()
                .ok()
                .map(|v| v.trim().trim_matches('"'))
                .and_then(|v| v.parse::<i64>().ok())
                .ok_or_else(|| ApiError::BadRequest("If-Match must be a version ETag".into()))
        })
        .transpose()
}

/// A new ticket.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTicketBody {
    pub subject: String,
    pub description: Option<String>,
    /// A priority of `service.sla.targets` (default `service.default_priority`).
    pub priority: Option<String>,
    /// Where it came from (default `api`).
    pub channel: Option<String>,
    pub account_id: Option<String>,
    /// The account follows from the contact when not given.
    pub contact_id: Option<String>,
    pub lead_id: Option<String>,
    /// Unset: `service.ticket_assignment_rules` route it.
    pub owner_id: Option<String>,
    #[schema(value_type = Object)]
    pub custom: Option<Map<String, Value>>,
    /// Only `new`, where every ticket starts (accepted for clients that send it).
    pub status: Option<String>,
}

/// Open a ticket: numbered (`T-<n>`), SLA due times from its priority and the business
/// hours, routed by `service.ticket_assignment_rules`, on the account's timeline.
#[utoipa::path(
    tag = "service",
    request_body = NewTicketBody,
    responses(
        (status = 201, body = crate::store::read::Record),
        (status = 403, body = super::error::Problem),
        (status = 422, description = "no subject, unknown priority, contact or account", body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[post("/v1/tickets")]
pub async fn create_ticket(
    body: web::Json<NewTicketBody>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller
        .require(RecordKind::Ticket.path(), Action::Create)
        .await?;
    let body = body.into_inner();
    if let Some(status) = body
        .status
        .as_deref()
        .filter(|s| *s != Status::New.as_str())
    {
        return Err(ApiError::Unprocessable(format!(
            "a ticket starts new, not {status}; POST /v1/tickets/{{id}}/status moves it"
        )));
    }
    let mut check = Map::new();
    if let Some(owner) = &body.owner_id {
        check.insert("owner_id".into(), Value::from(owner.clone()));
    }
    owner_within_reach(&caller, &mut check)?;
    caller
        .check_writable(RecordKind::Ticket, "", &check)
        .await?;
    let new = NewTicket {
        subject: body.subject,
        description: body.description,
        priority: body.priority,
        channel: body.channel.unwrap_or_else(|| "api".to_owned()),
        account_id: body.account_id,
        contact_id: body.contact_id,
        lead_id: body.lead_id,
        owner_id: check
            .get("owner_id")
            .and_then(Value::as_str)
            .map(str::to_owned),
        custom: body.custom,
        ..NewTicket::default()
    };
    let ctx = Arc::new(caller.context("api"));
    let mut tx = state.store.begin_write().await?;
    let mut journal = Journal::default();
    let created =
        tickets::create(&mut tx, &mut journal, &ctx, &state.service, new, Utc::now()).await?;
    journal.flush(&mut tx).await?;
    tx.commit().await?;
    answer(&state, &caller, RecordKind::Ticket, &created.id, true).await
}

/// Edit a ticket's own fields (subject, description, priority, owner …). A new priority
/// recomputes the SLA due times; status and timers move only through their endpoints.
#[utoipa::path(
    tag = "service",
    params(("id" = String, Path)),
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 200, body = crate::store::read::Record),
        (status = 404, body = super::error::Problem),
        (status = 409, body = super::error::Problem),
        (status = 422, body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[patch("/v1/tickets/{id}")]
pub async fn patch_ticket(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    caller
        .reachable(RecordKind::Ticket, &id, Action::Update)
        .await?;
    let mut fields = json_object(&req, payload, &state).await?;
    refuse_managed(
        RecordKind::Ticket,
        &fields,
        TICKET_MANAGED,
        "; status moves through POST /v1/tickets/{id}/status",
    )?;
    caller
        .check_writable(RecordKind::Ticket, &id, &fields)
        .await?;
    let expected_version = if_match(&req)?;
    let mut tx = state.store.begin_write().await?;
    if let Some(priority) = fields.get("priority").cloned() {
        let priority = priority
            .as_str()
            .ok_or_else(|| ApiError::Unprocessable("priority is text".into()))?;
        let ticket = tickets::load(&mut tx, &id).await?;
        fields.extend(tickets::reprioritised(&state.service, &ticket, priority)?);
    }
    crate::store::write::apply(
        &mut tx,
        &caller.context("api"),
        vec![Change::Update {
            kind: RecordKind::Ticket,
            id: id.clone(),
            fields,
            expected_version,
        }],
    )
    .await?;
    tx.commit().await?;
    answer(&state, &caller, RecordKind::Ticket, &id, false).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    /// new, open, pending_customer, resolved, closed (for tickets); renewed, lapsed (for
    /// contracts).
    pub status: String,
}

/// Move a ticket: new → open | pending_customer | resolved | closed; open ↔
/// pending_customer; → resolved → closed; resolved → open. Pending the customer,
/// resolved and closed stop the SLA clock; back to open resumes it with the paused
/// business time credited. Illegal moves answer 409.
#[utoipa::path(
    tag = "service",
    params(("id" = String, Path)),
    request_body = StatusChange,
    responses(
        (status = 200, body = crate::store::read::Record),
        (status = 409, description = "illegal transition", body = super::error::Problem),
        (status = 422, description = "unknown status", body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[post("/v1/tickets/{id}/status")]
pub async fn ticket_status(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Json<StatusChange>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    caller
        .reachable(RecordKind::Ticket, &id, Action::Update)
        .await?;
    let to = Status::parse(&body.status).ok_or_else(|| {
        ApiError::Unprocessable(format!(
            "status `{}`: one of new, open, pending_customer, resolved, closed",
            body.status
        ))
    })?;
    let expected_version = if_match(&req)?;
    let ctx = Arc::new(caller.context("api"));
    let mut tx = state.store.begin_write().await?;
    let mut journal = Journal::default();
    tickets::change_status(
        &mut tx,
        &mut journal,
        &ctx,
        &state.service,
        &id,
        tickets::Move {
            to,
            expected_version,
        },
        Utc::now(),
    )
    .await?;
    journal.flush(&mut tx).await?;
    tx.commit().await?;
    answer(&state, &caller, RecordKind::Ticket, &id, false).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyBody {
    pub body: Option<String>,
    pub subject: Option<String>,
    /// `outbound` (an agent, the default) or `inbound` (the customer).
    pub direction: Option<String>,
    /// Default `api`.
    pub channel: Option<String>,
    /// The message's id on its channel (an email's Message-ID), so later replies that
    /// reference it thread onto this ticket.
    pub message_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplyReceipt {
    /// The ticket the reply is on: a new follow-up when it answered a closed ticket and
    /// `service.closed_reply = "follow_up"`.
    pub ticket_id: String,
    /// `appended`, `resumed` (was pending the customer), `reopened` or `follow_up`.
    pub action: String,
}

/// Add a reply to a ticket. An agent's first reply is the first response; a customer's
/// reply resumes, reopens, or opens a follow-up, as configured.
#[utoipa::path(
    tag = "service",
    params(("id" = String, Path)),
    request_body = ReplyBody,
    responses(
        (status = 201, body = ReplyReceipt),
        (status = 409, description = "an agent reply to a closed ticket", body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[post("/v1/tickets/{id}/replies")]
pub async fn ticket_reply(
    path: web::Path<String>,
    body: web::Json<ReplyBody>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    caller
        .reachable(RecordKind::Ticket, &id, Action::Update)
        .await?;
    let body = body.into_inner();
    let direction = match body.direction.as_deref() {
        None | Some("outbound") => Direction::Outbound,
        Some("inbound") => Direction::Inbound,
        Some(other) => {
            return Err(ApiError::Unprocessable(format!(
                "direction `{other}`: inbound or outbound"
            )));
        }
    };
    let ctx = Arc::new(caller.context("api"));
    let mut tx = state.store.begin_write().await?;
    let mut journal = Journal::default();
    let outcome = tickets::reply(
        &mut tx,
        &mut journal,
        &ctx,
        &state.service,
        &id,
        Reply {
            direction,
            subject: body.subject,
            body: body.body,
            channel: body.channel.unwrap_or_else(|| "api".to_owned()),
            external_id: body.message_id,
            inbound_id: None,
            contact_id: None,
        },
        Utc::now(),
    )
    .await?;
    journal.flush(&mut tx).await?;
    tx.commit().await?;
    Ok(HttpResponse::Created().json(ReplyReceipt {
        ticket_id: outcome.ticket_id,
        action: outcome.action.to_owned(),
    }))
}

/// Create a contract: `start_date`, `end_date` (not before the start: 422), `value`,
/// `renewal_terms`, `amc_visits_per_year` (visits scheduled on the account's timeline).
#[utoipa::path(
    tag = "service",
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 201, body = crate::store::read::Record),
        (status = 422, description = "end before start, missing dates or account", body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[post("/v1/renewals")]
pub async fn create_contract(
    req: HttpRequest,
    payload: web::Payload,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller
        .require(RecordKind::Renewal.path(), Action::Create)
        .await?;
    let mut fields = json_object(&req, payload, &state).await?;
    refuse_managed(RecordKind::Renewal, &fields, CONTRACT_MANAGED, "")?;
    caller
        .check_writable(RecordKind::Renewal, "", &fields)
        .await?;
    owner_within_reach(&caller, &mut fields)?;
    if let Some(account) = fields.get("account_id").and_then(Value::as_str) {
        caller
            .reachable(RecordKind::Account, account, Action::Read)
            .await
            .map_err(|_| ApiError::Unprocessable(format!("no account {account}")))?;
    }
    let ctx = Arc::new(caller.context("api"));
    let mut tx = state.store.begin_write().await?;
    let mut journal = Journal::default();
    let id = crate::service::renewals::create(&mut tx, &mut journal, &ctx, fields).await?;
    journal.flush(&mut tx).await?;
    tx.commit().await?;
    answer(&state, &caller, RecordKind::Renewal, &id, true).await
}

/// Edit a contract; its dates are checked as they will be (end not before start).
#[utoipa::path(
    tag = "service",
    params(("id" = String, Path)),
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 200, body = crate::store::read::Record),
        (status = 422, body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[patch("/v1/renewals/{id}")]
pub async fn patch_contract(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let current = caller
        .reachable(RecordKind::Renewal, &id, Action::Update)
        .await?;
    let fields = json_object(&req, payload, &state).await?;
    refuse_managed(
        RecordKind::Renewal,
        &fields,
        CONTRACT_MANAGED,
        "; POST /v1/renewals/{id}/status marks it renewed or lapsed",
    )?;
    caller
        .check_writable(RecordKind::Renewal, &id, &fields)
        .await?;
    crate::service::renewals::check_dates(&current.fields, &fields)?;
    let expected_version = if_match(&req)?;
    state
        .store
        .write(
            &caller.context("api"),
            vec![Change::Update {
                kind: RecordKind::Renewal,
                id: id.clone(),
                fields,
                expected_version,
            }],
        )
        .await?;
    answer(&state, &caller, RecordKind::Renewal, &id, false).await
}

/// Mark an active contract `renewed` or `lapsed`; its renewal opportunity is won or lost.
#[utoipa::path(
    tag = "service",
    params(("id" = String, Path)),
    request_body = StatusChange,
    responses(
        (status = 200, body = crate::store::read::Record),
        (status = 409, description = "not active", body = super::error::Problem),
        (status = 422, body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[post("/v1/renewals/{id}/status")]
pub async fn contract_status(
    path: web::Path<String>,
    body: web::Json<StatusChange>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    caller
        .reachable(RecordKind::Renewal, &id, Action::Update)
        .await?;
    let ctx = Arc::new(caller.context("api"));
    let mut tx = state.store.begin_write().await?;
    let mut journal = Journal::default();
    crate::service::renewals::set_status(
        &mut tx,
        &mut journal,
        &ctx,
        &id,
        &body.status,
        Utc::now(),
    )
    .await?;
    journal.flush(&mut tx).await?;
    tx.commit().await?;
    answer(&state, &caller, RecordKind::Renewal, &id, false).await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExpansionResult {
    /// Opportunities this run opened (a rule opens one per account, ever).
    pub opened: Vec<String>,
}

/// Run the expansion rules for one account now (the evaluator also runs them every
/// `service.expansion_every_secs`).
#[utoipa::path(
    tag = "service",
    params(("id" = String, Path)),
    responses((status = 200, body = ExpansionResult), (status = 404, body = super::error::Problem)),
    security(("bearer" = []))
)]
#[post("/v1/accounts/{id}/expansion")]
pub async fn evaluate_expansion(
    path: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    caller
        .reachable(RecordKind::Account, &id, Action::Read)
        .await?;
    caller
        .require(RecordKind::Opportunity.path(), Action::Create)
        .await?;
    let ctx = Arc::new(caller.context("api"));
    let mut tx = state.store.begin_write().await?;
    let mut journal = Journal::default();
    let opened = crate::service::expansion::evaluate_account(
        &mut tx,
        &mut journal,
        &ctx,
        &state.service,
        &id,
        Utc::now(),
    )
    .await?;
    journal.flush(&mut tx).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(ExpansionResult { opened }))
}
