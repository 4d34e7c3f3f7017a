//! Invoices and credit notes: gapless numbers per series and year, due dates from payment
//! terms, the issue step after which an invoice is immutable, and the status that follows
//! from what was paid and credited (issued, partially_paid, paid, credited, overdue).

use chrono::{Datelike, NaiveDate, TimeDelta, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use super::lines::{LineInput, Priced, PricedLine, price, total};
use super::{
    BillingConfig, BillingError, ids_where, load, load_for_update, money, referenced, text,
    timeline_entry,
};
use crate::domain::RecordKind;
use crate::domain::value::now_timestamp;
use crate::store::write::{apply, new_id};
use crate::store::{Change, Store, WriteContext};

pub const INVOICE: &str = "invoice";
pub const CREDIT_NOTE: &str = "credit_note";

/// `POST /v1/invoices`: a standalone invoice.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInvoice {
    pub account_id: Option<String>,
    pub currency: String,
    pub lines: Vec<LineInput>,
    /// Default `billing.invoice_series`.
    pub series: Option<String>,
    /// `YYYY-MM-DD`, default today; its year numbers the invoice.
    pub issue_date: Option<String>,
    /// Default `billing.payment_terms_days`.
    pub payment_terms_days: Option<i64>,
    pub owner_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub custom: Option<Value>,
    /// Issue at once (immutable from then on).
    #[serde(default)]
    pub issue: bool,
}

/// `POST /v1/orders/{id}/invoice`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvoiceFromOrder {
    pub series: Option<String>,
    pub issue_date: Option<String>,
    pub payment_terms_days: Option<i64>,
    #[serde(default)]
    pub issue: bool,
}

/// `POST /v1/invoices/{id}/credit-notes`: lines to credit, or none for the whole invoice.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCreditNote {
    pub lines: Option<Vec<LineInput>>,
    pub reason: Option<String>,
}

struct Header {
    account_id: Option<String>,
    order_id: Option<String>,
    owner_id: Option<String>,
    series: String,
    issue_date: NaiveDate,
    terms: i64,
    invoice_type: &'static str,
    corrects: Option<String>,
    custom: Option<Value>,
}

fn series(text: Option<String>, default: &str) -> Result<String, BillingError> {
    let series = text.unwrap_or_else(|| default.to_owned());
    if series.is_empty()
        || series.len() > 12
        || !series
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return Err(BillingError::Invalid(format!(
            "series `{series}`: expected 1–12 upper-case letters or digits"
        )));
    }
    Ok(series)
}

fn date(text: Option<&str>) -> Result<NaiveDate, BillingError> {
    match text {
        None => Ok(Utc::now().date_naive()),
        Some(text) => NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
            .map_err(|_| BillingError::Invalid(format!("date `{text}`: expected YYYY-MM-DD"))),
    }
}

fn terms(days: Option<i64>, config: &BillingConfig) -> Result<i64, BillingError> {
    let days = days.unwrap_or(config.payment_terms_days);
    if !(0..=3650).contains(&days) {
        return Err(BillingError::Invalid(format!(
            "payment_terms_days {days}: expected 0 to 3650"
        )));
    }
    Ok(days)
}

/// The next number of a series and year. The counter row is updated in the caller's
/// transaction: PostgreSQL holds its row lock until commit (concurrent creators queue
/// behind it), SQLite has one writer; a rollback returns the number, so none is skipped.
pub async fn next_sequence(
    conn: &mut AnyConnection,
    series: &str,
    year: i64,
) -> Result<i64, BillingError> {
    sqlx::query(
        "INSERT INTO invoice_counters (series, year, last_value) VALUES ($1, $2, 0) \
         ON CONFLICT (series, year) DO NOTHING",
    )
    .bind(series)
    .bind(year)
    .execute(&mut *conn)
    .await?;
    let next: i64 = sqlx::query_scalar(
        "UPDATE invoice_counters SET last_value = last_value + 1 \
         WHERE series = $1 AND year = $2 RETURNING last_value",
    )
    .bind(series)
    .bind(year)
    .fetch_one(&mut *conn)
    .await?;
    Ok(next)
}

pub fn format_number(series: &str, year: i64, sequence: i64) -> String {
    format!("{series}-{year}-{sequence:06}")
}

/// Numbers and inserts an invoice (or credit note) with its lines; the changes are applied
/// by the caller together with whatever else the operation writes.
async fn insert(
    conn: &mut AnyConnection,
    header: Header,
    priced: &Priced,
    changes: &mut Vec<Change>,
) -> Result<(String, String), BillingError> {
    let id = new_id();
    let currency = &priced.currency;
    let year = i64::from(header.issue_date.year());
    let sequence = next_sequence(conn, &header.series, year).await?;
    let number = format_number(&header.series, year, sequence);
    let due = header.issue_date + TimeDelta::days(header.terms);
    let net: Decimal = priced.lines.iter().map(|l| l.net).sum();
    let mut fields = Map::new();
    fields.insert("series".into(), header.series.into());
    fields.insert("year".into(), year.into());
    fields.insert("sequence".into(), sequence.into());
    fields.insert("number".into(), number.clone().into());
    fields.insert("invoice_type".into(), header.invoice_type.into());
    fields.insert("corrects_invoice_id".into(), header.corrects.into());
    fields.insert("order_id".into(), header.order_id.into());
    fields.insert("account_id".into(), header.account_id.into());
    fields.insert("status".into(), "draft".into());
    fields.insert("currency".into(), currency.clone().into());
    fields.insert(
        "issue_date".into(),
        header.issue_date.format("%Y-%m-%d").to_string().into(),
    );
    fields.insert("due_date".into(), due.format("%Y-%m-%d").to_string().into());
    fields.insert("subtotal".into(), money::text(net, currency).into());
    fields.insert(
        "tax_total".into(),
        money::text(priced.tax_total, currency).into(),
    );
    fields.insert("total".into(), money::text(priced.total, currency).into());
    fields.insert(
        "amount_paid".into(),
        money::text(Decimal::ZERO, currency).into(),
    );
    fields.insert(
        "amount_credited".into(),
        money::text(Decimal::ZERO, currency).into(),
    );
    fields.insert("payment_terms_days".into(), header.terms.into());
    fields.insert("owner_id".into(), header.owner_id.into());
    if let Some(custom) = header.custom {
        fields.insert("custom".into(), custom);
    }
    changes.push(Change::Insert {
        kind: RecordKind::Invoice,
        id: Some(id.clone()),
        fields,
    });
    for (position, line) in priced.lines.iter().enumerate() {
        let mut fields = line.fields(currency, true);
        fields.insert("invoice_id".into(), id.clone().into());
        fields.insert("position".into(), (position as i64 + 1).into());
        changes.push(Change::Insert {
            kind: RecordKind::InvoiceLine,
            id: None,
            fields,
        });
    }
    Ok((id, number))
}

/// The fields that make an invoice issued.
fn issued_fields(invoice: &Map<String, Value>) -> Map<String, Value> {
    let mut view = invoice.clone();
    view.insert("status".into(), "issued".into());
    let mut fields = Map::new();
    fields.insert("issued_at".into(), now_timestamp().into());
    fields.insert(
        "status".into(),
        status(&view, Utc::now().date_naive()).into(),
    );
    fields
}

/// What an issued invoice's status is, given what was paid and credited and the date.
pub fn status(invoice: &Map<String, Value>, today: NaiveDate) -> String {
    let current = text(invoice, "status").unwrap_or("draft");
    if current == "draft" || text(invoice, "invoice_type") == Some(CREDIT_NOTE) {
        return current.to_owned();
    }
    let total = money::field(invoice, "total");
    let paid = money::field(invoice, "amount_paid");
    let credited = money::field(invoice, "amount_credited");
    let balance = total - paid - credited;
    if balance <= Decimal::ZERO {
        return if paid.is_zero() { "credited" } else { "paid" }.to_owned();
    }
    let due = text(invoice, "due_date").and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
    if due.is_some_and(|due| due < today) {
        return "overdue".to_owned();
    }
    if paid.is_zero() && credited.is_zero() {
        "issued".to_owned()
    } else {
        "partially_paid".to_owned()
    }
}

/// What is still owed on an invoice.
pub fn balance(invoice: &Map<String, Value>) -> Decimal {
    money::field(invoice, "total")
        - money::field(invoice, "amount_paid")
        - money::field(invoice, "amount_credited")
}

/// A standalone invoice; answers its id.
pub async fn create(
    conn: &mut AnyConnection,
    ctx: &WriteContext,
    config: &BillingConfig,
    new: NewInvoice,
) -> Result<String, BillingError> {
    let priced = price(&new.currency, &new.lines)?;
    if let Some(account) = &new.account_id {
        referenced(conn, RecordKind::Account, account, false).await?;
    }
    let header = Header {
        account_id: new.account_id,
        order_id: None,
        owner_id: new.owner_id,
        series: series(new.series, &config.invoice_series)?,
        issue_date: date(new.issue_date.as_deref())?,
        terms: terms(new.payment_terms_days, config)?,
        invoice_type: INVOICE,
        corrects: None,
        custom: new.custom,
    };
    finish_create(conn, ctx, header, &priced, new.issue).await
}

async fn finish_create(
    conn: &mut AnyConnection,
    ctx: &WriteContext,
    header: Header,
    priced: &Priced,
    issue_now: bool,
) -> Result<String, BillingError> {
    let account = header.account_id.clone();
    let owner = header.owner_id.clone();
    let mut changes = Vec::new();
    let (id, number) = insert(conn, header, priced, &mut changes).await?;
    changes.extend(timeline_entry(
        account.as_deref(),
        owner.as_deref(),
        "invoice",
        format!(
            "Invoice {number} created: {} {}",
            money::text(priced.total, &priced.currency),
            priced.currency
        ),
        json!({"invoice_id": id, "number": number}),
    ));
    apply(conn, ctx, changes).await?;
    if issue_now {
        issue(conn, ctx, &id).await?;
    }
    Ok(id)
}

/// An invoice of a confirmed, fulfilled or closed order, with the order's lines.
pub async fn from_order(
    conn: &mut AnyConnection,
    ctx: &WriteContext,
    config: &BillingConfig,
    order_id: &str,
    request: InvoiceFromOrder,
) -> Result<String, BillingError> {
    let order = load(conn, RecordKind::SalesOrder, order_id).await?;
    let status = text(&order, "status").unwrap_or("draft");
    if !matches!(status, "confirmed" | "fulfilled" | "closed") {
        return Err(BillingError::Conflict(format!(
            "order {order_id} is {status}; only a confirmed, fulfilled or closed order is invoiced"
        )));
    }
    let currency = text(&order, "currency").unwrap_or_default().to_owned();
    let mut lines = Vec::new();
    for id in ids_where(
        conn,
        RecordKind::SalesOrderLine,
        "order_id",
        order_id,
        "position",
    )
    .await?
    {
        let line = load(conn, RecordKind::SalesOrderLine, &id).await?;
        lines.push(PricedLine::from_stored(&line, &currency));
    }
    let priced = total(money::currency(&currency)?, lines);
    let header = Header {
        account_id: text(&order, "account_id").map(str::to_owned),
        order_id: Some(order_id.to_owned()),
        owner_id: text(&order, "owner_id").map(str::to_owned),
        series: series(request.series, &config.invoice_series)?,
        issue_date: date(request.issue_date.as_deref())?,
        terms: terms(request.payment_terms_days, config)?,
        invoice_type: INVOICE,
        corrects: None,
        custom: None,
    };
    finish_create(conn, ctx, header, &priced, request.issue).await
}

/// Issues a draft invoice: from now on it is immutable.
pub async fn issue(
    conn: &mut AnyConnection,
    ctx: &WriteContext,
    id: &str,
) -> Result<(), BillingError> {
    let invoice = load_for_update(conn, RecordKind::Invoice, id).await?;
    let current = text(&invoice, "status").unwrap_or("draft");
    if current != "draft" {
        return Err(BillingError::Conflict(format!(
            "invoice {} is {current}, not a draft; it was issued already",
            text(&invoice, "number").unwrap_or(id)
        )));
    }
    let mut changes = vec![Change::Update {
        kind: RecordKind::Invoice,
        id: id.to_owned(),
        fields: issued_fields(&invoice),
        expected_version: None,
    }];
    changes.extend(timeline_entry(
        text(&invoice, "account_id"),
        text(&invoice, "owner_id"),
        "invoice",
        format!(
            "Invoice {} issued, due {}",
            text(&invoice, "number").unwrap_or(id),
            text(&invoice, "due_date").unwrap_or("-")
        ),
        json!({"invoice_id": id, "status": "issued"}),
    ));
    apply(conn, ctx, changes).await?;
    Ok(())
}

/// A credit note correcting an issued invoice: issued at once, it lowers what the
/// invoice is owed. Credits beyond the invoice's total are refused.
pub async fn credit_note(
    conn: &mut AnyConnection,
    ctx: &WriteContext,
    config: &BillingConfig,
    invoice_id: &str,
    request: NewCreditNote,
) -> Result<String, BillingError> {
    let invoice = load_for_update(conn, RecordKind::Invoice, invoice_id).await?;
    if text(&invoice, "invoice_type") == Some(CREDIT_NOTE) {
        return Err(BillingError::Conflict(
            "a credit note corrects an invoice, not another credit note".into(),
        ));
    }
    if text(&invoice, "status") == Some("draft") {
        return Err(BillingError::Conflict(
            "a draft invoice is still editable; credit notes correct issued invoices".into(),
        ));
    }
    let currency = money::currency(text(&invoice, "currency").unwrap_or_default())?;
    let priced = match request.lines {
        Some(lines) => price(&currency, &lines)?,
        None => {
            let mut lines = Vec::new();
            for id in ids_where(
                conn,
                RecordKind::InvoiceLine,
                "invoice_id",
                invoice_id,
                "position",
            )
            .await?
            {
                let line = load(conn, RecordKind::InvoiceLine, &id).await?;
                lines.push(PricedLine::from_stored(&line, &currency));
            }
            total(currency.clone(), lines)
        }
    };
    let creditable = money::field(&invoice, "total") - money::field(&invoice, "amount_credited");
    if priced.total > creditable {
        return Err(BillingError::Invalid(format!(
            "the credit note's total {} is more than the {} {currency} still creditable on the invoice",
            money::text(priced.total, &currency),
            money::text(creditable, &currency)
        )));
    }
    let number = text(&invoice, "number").unwrap_or(invoice_id).to_owned();
    let header = Header {
        account_id: text(&invoice, "account_id").map(str::to_owned),
        order_id: text(&invoice, "order_id").map(str::to_owned),
        owner_id: text(&invoice, "owner_id").map(str::to_owned),
        series: config.credit_note_series.clone(),
        issue_date: Utc::now().date_naive(),
        terms: 0,
        invoice_type: CREDIT_NOTE,
        corrects: Some(invoice_id.to_owned()),
        custom: request
            .reason
            .as_ref()
            .map(|reason| json!({"reason": reason})),
    };
    let mut changes = Vec::new();
    let (id, cn_number) = insert(conn, header, &priced, &mut changes).await?;
    changes.push(Change::Update {
        kind: RecordKind::Invoice,
        id: id.clone(),
        fields: Map::from_iter([
            ("status".to_owned(), Value::from("issued")),
            ("issued_at".to_owned(), Value::from(now_timestamp())),
        ]),
        expected_version: None,
    });
    let mut corrected = invoice.clone();
    let credited = money::field(&invoice, "amount_credited") + priced.total;
    corrected.insert(
        "amount_credited".into(),
        money::text(credited, &currency).into(),
    );
    let new_status = status(&corrected, Utc::now().date_naive());
    changes.push(Change::Update {
        kind: RecordKind::Invoice,
        id: invoice_id.to_owned(),
        fields: Map::from_iter([
            (
                "amount_credited".to_owned(),
                Value::from(money::text(credited, &currency)),
            ),
            ("status".to_owned(), Value::from(new_status)),
        ]),
        expected_version: None,
    });
    changes.extend(timeline_entry(
        text(&invoice, "account_id"),
        text(&invoice, "owner_id"),
        "credit_note",
        format!(
            "Credit note {cn_number} for invoice {number}: {} {currency}",
            money::text(priced.total, &currency)
        ),
        json!({"invoice_id": id, "corrects_invoice_id": invoice_id}),
    ));
    apply(conn, ctx, changes).await?;
    Ok(id)
}

/// Issued and partially paid invoices past their due date become `overdue`; answers how
/// many changed. Run before the ageing report and periodically.
pub async fn mark_overdue(store: &Store, today: NaiveDate) -> Result<usize, BillingError> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM invoices WHERE status IN ('issued', 'partially_paid') \
         AND invoice_type = $1 AND due_date < $2",
    )
    .bind(INVOICE)
    .bind(today.format("%Y-%m-%d").to_string())
    .fetch_all(store.pool())
    .await?;
    if ids.is_empty() {
        return Ok(0);
    }
    let ctx = WriteContext::new("system:billing", "billing", Default::default());
    let mut tx = store.begin_write().await?;
    let mut changes = Vec::new();
    for id in &ids {
        let invoice = load_for_update(&mut tx, RecordKind::Invoice, id).await?;
        let next = status(&invoice, today);
        if Some(next.as_str()) != text(&invoice, "status") {
            changes.push(Change::Update {
                kind: RecordKind::Invoice,
                id: id.clone(),
                fields: Map::from_iter([("status".to_owned(), Value::from(next))]),
                expected_version: None,
            });
        }
    }
    let changed = changes.len();
    apply(&mut tx, &ctx, changes).await?;
    tx.commit().await?;
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invoice(
        status: &str,
        total: &str,
        paid: &str,
        credited: &str,
        due: &str,
    ) -> Map<String, Value> {
        serde_json::from_value(json!({
            "status": status, "invoice_type": "invoice", "total": total,
            "amount_paid": paid, "amount_credited": credited, "due_date": due,
        }))
        .unwrap()
    }

    #[test]
    fn status_follows_payments_credits_and_the_due_date() {
        let today = NaiveDate::from_ymd_opt(2026, 5, 1).unwrap();
        let s = |i| status(&i, today);
        assert_eq!(
            s(invoice("issued", "100.00", "0.00", "0.00", "2026-05-31")),
            "issued"
        );
        assert_eq!(
            s(invoice("issued", "100.00", "40.00", "0.00", "2026-05-31")),
            "partially_paid"
        );
        assert_eq!(
            s(invoice("issued", "100.00", "100.00", "0.00", "2026-05-31")),
            "paid"
        );
        assert_eq!(
            s(invoice("issued", "100.00", "0.00", "100.00", "2026-05-31")),
            "credited"
        );
        assert_eq!(
            s(invoice(
                "partially_paid",
                "100.00",
                "40.00",
                "0.00",
                "2026-04-30"
            )),
            "overdue"
        );
        assert_eq!(
            s(invoice("draft", "100.00", "0.00", "0.00", "2026-04-30")),
            "draft"
        );
    }

    #[test]
    fn numbers_carry_series_year_and_six_digits() {
        assert_eq!(format_number("INV", 2026, 1), "INV-2026-000001");
    }
}
