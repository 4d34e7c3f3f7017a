//! Orders, invoices and payments: the billing operations over the audited write path,
//! the invoice PDF, the ageing report and the Stripe webhook.

use actix_web::http::header;
use actix_web::{HttpResponse, get, post, web};
use chrono::{NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::Principal;
use super::caller::Caller;
use super::error::ApiError;
use super::request::optional_json;
use crate::access::{Action, Reach};
use crate::billing::BillingError;
use crate::billing::ageing::{self, Ageing};
use crate::billing::invoices::{self, InvoiceFromOrder, NewCreditNote, NewInvoice};
use crate::billing::lines::{PricedLine, TaxLine, total};
use crate::billing::orders::{self, NewOrder, OrderFromOpportunity};
use crate::billing::payments::{self, AllocationInput, NewPayment, NewRefund};
use crate::domain::RecordKind;
use crate::store::read::{ListQuery, Record};

impl From<BillingError> for ApiError {
    fn from(error: BillingError) -> Self {
        match error {
            BillingError::Invalid(why) => ApiError::Unprocessable(why),
            BillingError::Conflict(why) => ApiError::Conflict(why),
            BillingError::NotFound { .. } => ApiError::NotFound,
            BillingError::Store(error) => error.into(),
        }
    }
}

/// An order with its lines.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderView {
    pub order: Record,
    pub lines: Vec<Record>,
}

/// An invoice (or credit note) with its lines and tax lines.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceView {
    pub invoice: Record,
    pub lines: Vec<Record>,
    pub tax_lines: Vec<TaxLine>,
}

/// A payment with its allocations.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentView {
    pub payment: Record,
    pub allocations: Vec<Record>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    /// confirmed, fulfilled, closed or cancelled.
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountCredit {
    pub account_id: String,
    /// Unallocated payments by currency.
    #[schema(value_type = Object)]
    pub credit: Map<String, Value>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct AgeingParams {
    /// `YYYY-MM-DD`, default today.
    pub as_of: Option<String>,
}

/// The owner a caller's new record gets: a caller who reaches only some owners owns what
/// they create unless they name an owner within their reach.
fn owner_for(caller: &Caller, requested: Option<String>) -> Result<Option<String>, ApiError> {
    match (&caller.reach, requested) {
        (Reach::All, requested) => Ok(requested),
        (Reach::Owners(_), Some(owner)) if caller.reach.allows(Some(&owner)) => Ok(Some(owner)),
        (Reach::Owners(_), Some(owner)) => Err(ApiError::Forbidden(format!(
            "owner `{owner}` is outside the caller's reach"
        ))),
        (Reach::Owners(_), None) => Ok(match &caller.principal {
            Principal::User { id, .. } => Some(id.clone()),
            _ => None,
        }),
    }
}

async fn children(
    state: &AppState,
    caller: &Caller,
    kind: RecordKind,
    field: &str,
    parent: &str,
) -> Result<Vec<Record>, ApiError> {
    let def = kind
        .field(field)
        .ok_or_else(|| ApiError::Internal(format!("{kind} has no {field}")))?;
    let query = ListQuery {
        filters: vec![(def, parent.to_owned())],
        owners: None,
        sort: "id",
        descending: false,
        limit: 1000,
        offset: 0,
    };
    let mut items: Vec<Record> = state
        .store
        .list(kind, &query)
        .await?
        .into_iter()
        .map(|record| caller.redact(record))
        .collect();
    items.sort_by_key(|r| r.fields.get("position").and_then(Value::as_i64));
    Ok(items)
}

async fn order_view(state: &AppState, caller: &Caller, id: &str) -> Result<OrderView, ApiError> {
    let order = state
        .store
        .get(RecordKind::SalesOrder, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let lines = children(state, caller, RecordKind::SalesOrderLine, "order_id", id).await?;
    Ok(OrderView {
        order: caller.redact(order),
        lines,
    })
}

pub(crate) async fn invoice_view(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<InvoiceView, ApiError> {
    let invoice = state
        .store
        .get(RecordKind::Invoice, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let lines = children(state, caller, RecordKind::InvoiceLine, "invoice_id", id).await?;
    let currency = invoice
        .fields
        .get("currency")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let priced = total(
        currency.clone(),
        lines
            .iter()
            .map(|line| PricedLine::from_stored(&line.fields, &currency))
            .collect(),
    );
    Ok(InvoiceView {
        invoice: caller.redact(invoice),
        lines,
        tax_lines: priced.tax_lines,
    })
}

async fn payment_view(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<PaymentView, ApiError> {
    let payment = state
        .store
        .get(RecordKind::Payment, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let allocations = children(
        state,
        caller,
        RecordKind::PaymentAllocation,
        "payment_id",
        id,
    )
    .await?;
    Ok(PaymentView {
        payment: caller.redact(payment),
        allocations,
    })
}

/// A JSON body that may be left out: empty means the defaults; anything else must parse
/// (a misspelt field is 400, never silently the defaults — a whole-invoice credit note).
fn created(path: &str, id: &str, body: impl Serialize) -> HttpResponse {
    HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/{path}/{id}")))
        .json(body)
}

/// Create a sales order with its lines; totals are computed exactly (decimal, rounded to
/// the currency's minor unit). A non-positive quantity, a negative price or a discount
/// or tax rate outside 0–100 is 422.
#[utoipa::path(
    tag = "billing",
    request_body = NewOrder,
    responses(
        (status = 201, body = OrderView),
        (status = 422, body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[post("/v1/orders")]
pub async fn create_order(
    body: web::Json<NewOrder>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller
        .require(RecordKind::SalesOrder.path(), Action::Create)
        .await?;
    let mut order = body.into_inner();
    order.owner_id = owner_for(&caller, order.owner_id)?;
    let mut tx = state.store.begin_write().await?;
    let id = orders::create(&mut tx, &caller.context("api"), order).await?;
    tx.commit().await?;
    Ok(created(
        "orders",
        &id,
        order_view(&state, &caller, &id).await?,
    ))
}

/// Make an order from a won opportunity (stage `closed_won`): account, contact, owner and
/// currency come from it; without lines, one line of its amount. Once per opportunity.
#[utoipa::path(
    tag = "billing",
    params(("id" = String, Path)),
    request_body = OrderFromOpportunity,
    responses(
        (status = 201, body = OrderView),
        (status = 409, description = "not won, or already ordered", body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[post("/v1/opportunities/{id}/order")]
pub async fn order_from_opportunity(
    id: web::Path<String>,
    body: web::Bytes,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller
        .reachable(RecordKind::Opportunity, &id, Action::Read)
        .await?;
    caller
        .require(RecordKind::SalesOrder.path(), Action::Create)
        .await?;
    let request = optional_json(&body)?;
    let mut tx = state.store.begin_write().await?;
    let order = orders::from_opportunity(&mut tx, &caller.context("api"), &id, request).await?;
    tx.commit().await?;
    Ok(created(
        "orders",
        &order,
        order_view(&state, &caller, &order).await?,
    ))
}

/// Move an order: draft → confirmed → fulfilled → closed, or cancelled from draft or
/// confirmed. Any other move is 409.
#[utoipa::path(
    tag = "billing",
    params(("id" = String, Path)),
    request_body = StatusChange,
    responses(
        (status = 200, body = OrderView),
        (status = 409, description = "illegal transition", body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[post("/v1/orders/{id}/status")]
pub async fn change_order_status(
    id: web::Path<String>,
    body: web::Json<StatusChange>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller
        .reachable(RecordKind::SalesOrder, &id, Action::Update)
        .await?;
    let mut tx = state.store.begin_write().await?;
    orders::transition(&mut tx, &caller.context("api"), &id, &body.status).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(order_view(&state, &caller, &id).await?))
}

/// An order with its lines.
#[utoipa::path(
    tag = "billing",
    params(("id" = String, Path)),
    responses((status = 200, body = OrderView), (status = 404, body = super::error::Problem)),
    security(("bearer" = []))
)]
#[get("/v1/orders/{id}/lines")]
pub async fn get_order_lines(
    id: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller
        .reachable(RecordKind::SalesOrder, &id, Action::Read)
        .await?;
    Ok(HttpResponse::Ok().json(order_view(&state, &caller, &id).await?))
}

/// Invoice a confirmed, fulfilled or closed order with its lines.
#[utoipa::path(
    tag = "billing",
    params(("id" = String, Path)),
    request_body = InvoiceFromOrder,
    responses(
        (status = 201, body = InvoiceView),
        (status = 409, description = "the order is a draft or cancelled", body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[post("/v1/orders/{id}/invoice")]
pub async fn invoice_order(
    id: web::Path<String>,
    body: web::Bytes,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller
        .reachable(RecordKind::SalesOrder, &id, Action::Read)
        .await?;
    caller
        .require(RecordKind::Invoice.path(), Action::Create)
        .await?;
    let request = optional_json(&body)?;
    let mut tx = state.store.begin_write().await?;
    let invoice = invoices::from_order(
        &mut tx,
        &caller.context("api"),
        &state.config.billing,
        &id,
        request,
    )
    .await?;
    tx.commit().await?;
    Ok(created(
        "invoices",
        &invoice,
        invoice_view(&state, &caller, &invoice).await?,
    ))
}

/// Create a standalone invoice (a draft unless `issue` is true). Its number
/// (`INV-2026-000001`) is the next of its series and year, gapless under concurrency.
#[utoipa::path(
    tag = "billing",
    request_body = NewInvoice,
    responses(
        (status = 201, body = InvoiceView),
        (status = 422, body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[post("/v1/invoices")]
pub async fn create_invoice(
    body: web::Json<NewInvoice>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller
        .require(RecordKind::Invoice.path(), Action::Create)
        .await?;
    let mut invoice = body.into_inner();
    invoice.owner_id = owner_for(&caller, invoice.owner_id)?;
    let mut tx = state.store.begin_write().await?;
    let id = invoices::create(
        &mut tx,
        &caller.context("api"),
        &state.config.billing,
        invoice,
    )
    .await?;
    tx.commit().await?;
    Ok(created(
        "invoices",
        &id,
        invoice_view(&state, &caller, &id).await?,
    ))
}

/// An invoice with its lines and tax lines.
#[utoipa::path(
    tag = "billing",
    params(("id" = String, Path)),
    responses((status = 200, body = InvoiceView), (status = 404, body = super::error::Problem)),
    security(("bearer" = []))
)]
#[get("/v1/invoices/{id}/lines")]
pub async fn get_invoice_lines(
    id: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller
        .reachable(RecordKind::Invoice, &id, Action::Read)
        .await?;
    Ok(HttpResponse::Ok().json(invoice_view(&state, &caller, &id).await?))
}

/// Issue a draft invoice. From then on it is immutable: edits are 409 and corrections
/// are credit notes.
#[utoipa::path(
    tag = "billing",
    params(("id" = String, Path)),
    responses(
        (status = 200, body = InvoiceView),
        (status = 409, description = "issued already", body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[post("/v1/invoices/{id}/issue")]
pub async fn issue_invoice(
    id: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller
        .reachable(RecordKind::Invoice, &id, Action::Update)
        .await?;
    let mut tx = state.store.begin_write().await?;
    invoices::issue(&mut tx, &caller.context("api"), &id).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(invoice_view(&state, &caller, &id).await?))
}

/// A credit note for an issued invoice: the given lines, or the whole invoice. It is
/// numbered in the credit-note series, issued at once, references the invoice
/// (`corrects_invoice_id`) and lowers what the invoice owes.
#[utoipa::path(
    tag = "billing",
    params(("id" = String, Path)),
    request_body = NewCreditNote,
    responses(
        (status = 201, body = InvoiceView),
        (status = 409, body = super::error::Problem),
        (status = 422, description = "more than the invoice's creditable total", body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[post("/v1/invoices/{id}/credit-notes")]
pub async fn create_credit_note(
    id: web::Path<String>,
    body: web::Bytes,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller
        .reachable(RecordKind::Invoice, &id, Action::Update)
        .await?;
    caller
        .require(RecordKind::Invoice.path(), Action::Create)
        .await?;
    let request = optional_json(&body)?;
    let mut tx = state.store.begin_write().await?;
    let note = invoices::credit_note(
        &mut tx,
        &caller.context("api"),
        &state.config.billing,
        &id,
        request,
    )
    .await?;
    tx.commit().await?;
    Ok(created(
        "invoices",
        &note,
        invoice_view(&state, &caller, &note).await?,
    ))
}

/// The invoice as a PDF (A4): number, dates, lines, tax lines, totals, amount due.
#[utoipa::path(
    tag = "billing",
    params(("id" = String, Path)),
    responses(
        (status = 200, content_type = "application/pdf", description = "the invoice"),
        (status = 404, body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[get("/v1/invoices/{id}/pdf")]
pub async fn invoice_pdf(
    id: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller
        .reachable(RecordKind::Invoice, &id, Action::Read)
        .await?;
    let view = invoice_view(&state, &caller, &id).await?;
    let account = match view
        .invoice
        .fields
        .get("account_id")
        .and_then(Value::as_str)
    {
        Some(account) => state
            .store
            .get(RecordKind::Account, account)
            .await?
            .and_then(|a| {
                a.fields
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            }),
        None => None,
    };
    let bytes = crate::billing::pdf::render(
        &view.invoice,
        &view.lines,
        &view.tax_lines,
        account.as_deref(),
    );
    let number = view
        .invoice
        .fields
        .get("number")
        .and_then(Value::as_str)
        .unwrap_or(&id)
        .to_owned();
    Ok(HttpResponse::Ok()
        .content_type("application/pdf")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("inline; filename=\"{number}.pdf\""),
        ))
        .body(bytes))
}

/// Record a payment. With `invoice_id` it pays that invoice, with `allocations` it is split
/// explicitly, otherwise it pays the account's open invoices in its currency, oldest due
/// first. What is left is held as the account's credit. An invoice in another currency is
/// 422.
#[utoipa::path(
    tag = "billing",
    request_body = NewPayment,
    responses(
        (status = 201, body = PaymentView),
        (status = 422, description = "currency mismatch, over-allocation, bad amount", body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[post("/v1/payments")]
pub async fn create_payment(
    body: web::Json<NewPayment>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller
        .require(RecordKind::Payment.path(), Action::Create)
        .await?;
    let mut payment = body.into_inner();
    payment.owner_id = owner_for(&caller, payment.owner_id)?;
    let mut tx = state.store.begin_write().await?;
    let id = payments::record(&mut tx, &caller.context("api"), payment).await?;
    tx.commit().await?;
    Ok(created(
        "payments",
        &id,
        payment_view(&state, &caller, &id).await?,
    ))
}

/// A payment with its allocations.
#[utoipa::path(
    tag = "billing",
    params(("id" = String, Path)),
    responses((status = 200, body = PaymentView), (status = 404, body = super::error::Problem)),
    security(("bearer" = []))
)]
#[get("/v1/payments/{id}/allocations")]
pub async fn get_payment_allocations(
    id: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller
        .reachable(RecordKind::Payment, &id, Action::Read)
        .await?;
    Ok(HttpResponse::Ok().json(payment_view(&state, &caller, &id).await?))
}

/// Allocate credit the payment still holds to an invoice.
#[utoipa::path(
    tag = "billing",
    params(("id" = String, Path)),
    request_body = AllocationInput,
    responses(
        (status = 200, body = PaymentView),
        (status = 409, body = super::error::Problem),
        (status = 422, body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[post("/v1/payments/{id}/allocations")]
pub async fn allocate_payment(
    id: web::Path<String>,
    body: web::Json<AllocationInput>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller
        .reachable(RecordKind::Payment, &id, Action::Update)
        .await?;
    let mut tx = state.store.begin_write().await?;
    payments::allocate_credit(&mut tx, &caller.context("api"), &id, body.into_inner()).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(payment_view(&state, &caller, &id).await?))
}

/// Refund part or all of a payment: from its credit first, then its latest allocations
/// (those invoices owe again). More than is left of the payment is 422.
#[utoipa::path(
    tag = "billing",
    params(("id" = String, Path)),
    request_body = NewRefund,
    responses(
        (status = 200, body = PaymentView),
        (status = 422, description = "larger than the payment", body = super::error::Problem),
    ),
    security(("bearer" = []))
)]
#[post("/v1/payments/{id}/refunds")]
pub async fn refund_payment(
    id: web::Path<String>,
    body: web::Json<NewRefund>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller
        .reachable(RecordKind::Payment, &id, Action::Update)
        .await?;
    let mut tx = state.store.begin_write().await?;
    payments::refund(&mut tx, &caller.context("api"), &id, body.into_inner()).await?;
    tx.commit().await?;
    Ok(HttpResponse::Ok().json(payment_view(&state, &caller, &id).await?))
}

/// The credit an account holds: its payments' unallocated amounts, by currency.
#[utoipa::path(
    tag = "billing",
    params(("id" = String, Path)),
    responses((status = 200, body = AccountCredit), (status = 404, body = super::error::Problem)),
    security(("bearer" = []))
)]
#[get("/v1/accounts/{id}/credit")]
pub async fn account_credit(
    id: web::Path<String>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller
        .reachable(RecordKind::Account, &id, Action::Read)
        .await?;
    caller
        .require(RecordKind::Payment.path(), Action::Read)
        .await?;
    let mut conn = state
        .store
        .pool()
        .acquire()
        .await
        .map_err(crate::store::StoreError::from)?;
    let credit = payments::account_credit(&mut conn, &id).await?;
    Ok(HttpResponse::Ok().json(AccountCredit {
        account_id: id.into_inner(),
        credit: credit
            .into_iter()
            .map(|(currency, amount)| (currency, Value::from(amount)))
            .collect(),
    }))
}

/// What issued invoices still owe, by account and currency, in buckets of days past due:
/// current, 1–30, 31–60, 61–90, 90+. Invoices past due are marked `overdue` first.
#[utoipa::path(
    tag = "billing",
    params(AgeingParams),
    responses((status = 200, body = Ageing), (status = 400, body = super::error::Problem)),
    security(("bearer" = []))
)]
#[get("/v1/reports/ageing")]
pub async fn ageing_report(
    params: web::Query<AgeingParams>,
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    caller
        .require(RecordKind::Invoice.path(), Action::Read)
        .await?;
    let as_of = match &params.as_of {
        None => Utc::now().date_naive(),
        Some(text) => NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map_err(|_| ApiError::BadRequest(format!("as_of `{text}`: expected YYYY-MM-DD")))?,
    };
    invoices::mark_overdue(&state.store, Utc::now().date_naive()).await?;
    let report = ageing::report(&state.store, as_of, &caller.reach).await?;
    Ok(HttpResponse::Ok().json(report))
}
