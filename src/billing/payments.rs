//! Payments: recorded by the API, a spreadsheet import or Stripe; allocated across
//! invoices of the same currency (explicitly, to one invoice, or oldest due first), the
//! rest held as the account's credit; refunds take from that credit first, then from the
//! latest allocations.

use chrono::Utc;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use super::invoices::{self, CREDIT_NOTE};
use super::{
    BillingError, ids_where, load, load_for_update, money, referenced, text, timeline_entry,
};
use crate::domain::RecordKind;
use crate::domain::value::{SqlValue, now_timestamp};
use crate::store::write::{apply, new_id};
use crate::store::{Change, WriteContext};

/// `POST /v1/payments`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPayment {
    pub account_id: Option<String>,
    #[schema(value_type = String, example = "100.00")]
    pub amount: Value,
    pub currency: String,
    /// `bank_transfer`, `card`, `cash` … (free text).
    pub method: Option<String>,
    /// RFC 3339; default now.
    pub received_at: Option<String>,
    /// The bank's or provider's reference.
    pub provider_ref: Option<String>,
    /// Pay this invoice; what is left is held as credit.
    pub invoice_id: Option<String>,
    /// Split across invoices explicitly; what is left is held as credit.
    pub allocations: Option<Vec<AllocationInput>>,
    pub owner_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub custom: Option<Value>,
    #[serde(skip)]
    pub provider: Option<String>,
}

/// One allocation: an invoice and, optionally, how much (default: as much as it owes,
/// up to what is left of the payment).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllocationInput {
    pub invoice_id: String,
    #[schema(value_type = Option<String>)]
    pub amount: Option<Value>,
}

/// `POST /v1/payments/{id}/refunds`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRefund {
    #[schema(value_type = String, example = "25.00")]
    pub amount: Value,
    pub reason: Option<String>,
}

/// Allocations planned for a payment, with the changes they make.
struct Plan {
    changes: Vec<Change>,
    remaining: Decimal,
    summary: Vec<String>,
}

/// Plans allocating up to `remaining` of a payment to `targets`.
async fn allocate(
    conn: &mut AnyConnection,
    payment_id: &str,
    account_id: Option<&str>,
    currency: &str,
    mut remaining: Decimal,
    targets: Vec<(String, Option<Decimal>)>,
    explicit: bool,
) -> Result<Plan, BillingError> {
    let today = Utc::now().date_naive();
    let mut plan = Plan {
        changes: Vec::new(),
        remaining,
        summary: Vec::new(),
    };
    for (invoice_id, wanted) in targets {
        let mut invoice = referenced(conn, RecordKind::Invoice, &invoice_id, true).await?;
        let number = text(&invoice, "number").unwrap_or(&invoice_id).to_owned();
        let status = text(&invoice, "status").unwrap_or("draft");
        if text(&invoice, "invoice_type") == Some(CREDIT_NOTE) || status == "draft" {
            return Err(BillingError::Conflict(format!(
                "invoice {number} is {}; payments go to issued invoices",
                if status == "draft" {
                    "a draft"
                } else {
                    "a credit note"
                }
            )));
        }
        let invoice_currency = text(&invoice, "currency").unwrap_or_default();
        if invoice_currency != currency {
            return Err(BillingError::Invalid(format!(
                "currency mismatch: the payment is in {currency}, invoice {number} in {invoice_currency}"
            )));
        }
        if let (Some(payer), Some(billed)) = (account_id, text(&invoice, "account_id"))
            && payer != billed
        {
            return Err(BillingError::Invalid(format!(
                "invoice {number} is billed to account {billed}, not to the payment's account {payer}"
            )));
        }
        let owed = invoices::balance(&invoice);
        let amount = match wanted {
            Some(amount) if amount <= Decimal::ZERO => {
                return Err(BillingError::Invalid(format!(
                    "the allocation to invoice {number} must be more than zero"
                )));
            }
            Some(amount) if amount > owed => {
                return Err(BillingError::Invalid(format!(
                    "invoice {number} owes {} {currency}; {amount} cannot be allocated to it",
                    money::text(owed, currency)
                )));
            }
            Some(amount) if amount > remaining => {
                return Err(BillingError::Invalid(format!(
                    "only {} {currency} of the payment is left to allocate, not {amount}",
                    money::text(remaining, currency)
                )));
            }
            Some(amount) => amount,
            None => owed.min(remaining),
        };
        if amount <= Decimal::ZERO {
            if explicit && owed <= Decimal::ZERO {
                return Err(BillingError::Conflict(format!(
                    "invoice {number} owes nothing"
                )));
            }
            continue;
        }
        remaining -= amount;
        let paid = money::field(&invoice, "amount_paid") + amount;
        invoice.insert("amount_paid".into(), money::text(paid, currency).into());
        let next = invoices::status(&invoice, today);
        plan.changes.push(Change::Insert {
            kind: RecordKind::PaymentAllocation,
            id: None,
            fields: Map::from_iter([
                ("payment_id".to_owned(), Value::from(payment_id)),
                ("invoice_id".to_owned(), Value::from(invoice_id.clone())),
                (
                    "amount".to_owned(),
                    Value::from(money::text(amount, currency)),
                ),
            ]),
        });
        plan.changes.push(Change::Update {
            kind: RecordKind::Invoice,
            id: invoice_id.clone(),
            fields: Map::from_iter([
                (
                    "amount_paid".to_owned(),
                    Value::from(money::text(paid, currency)),
                ),
                ("status".to_owned(), Value::from(next)),
            ]),
            expected_version: None,
        });
        plan.summary
            .push(format!("{} to {number}", money::text(amount, currency)));
    }
    plan.remaining = remaining;
    Ok(plan)
}

/// Open invoices of the account in the currency, oldest due first.
async fn open_invoices(
    conn: &mut AnyConnection,
    account_id: &str,
    currency: &str,
) -> Result<Vec<(String, Option<Decimal>)>, BillingError> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM invoices WHERE account_id = $1 AND currency = $2 AND invoice_type = $3 \
         AND status IN ('issued', 'partially_paid', 'overdue') ORDER BY due_date, number",
    )
    .bind(account_id)
    .bind(currency)
    .bind(invoices::INVOICE)
    .fetch_all(&mut *conn)
    .await?;
    Ok(ids.into_iter().map(|id| (id, None)).collect())
}

/// Records a payment and its allocations; answers the payment's id.
pub async fn record(
    conn: &mut AnyConnection,
    ctx: &WriteContext,
    new: NewPayment,
) -> Result<String, BillingError> {
    let currency = money::currency(&new.currency)?;
    let amount = money::parse("amount", &new.amount)?;
    if amount <= Decimal::ZERO {
        return Err(BillingError::Invalid(
            "`amount` must be more than zero".into(),
        ));
    }
    if money::round(amount, &currency) != amount {
        return Err(BillingError::Invalid(format!(
            "`amount` {amount} has more digits than {currency}'s minor unit"
        )));
    }
    let received_at = match &new.received_at {
        None => now_timestamp(),
        Some(text) => {
            let def = RecordKind::Payment
                .field("received_at")
                .ok_or_else(|| BillingError::Invalid("received_at".into()))?;
            match SqlValue::from_json(def, &Value::from(text.clone())) {
                Ok(SqlValue::Text(at)) => at,
                _ => {
                    return Err(BillingError::Invalid(format!(
                        "received_at `{text}`: expected an RFC 3339 timestamp"
                    )));
                }
            }
        }
    };
    let mut account_id = new.account_id.clone();
    if let Some(account) = &account_id {
        referenced(conn, RecordKind::Account, account, false).await?;
    }
    let (targets, explicit) = match (&new.allocations, &new.invoice_id) {
        (Some(_), Some(_)) => {
            return Err(BillingError::Invalid(
                "give `invoice_id` or `allocations`, not both".into(),
            ));
        }
        (Some(list), None) => {
            let mut targets = Vec::new();
            for (n, item) in list.iter().enumerate() {
                let amount =
                    money::parse_opt(&format!("allocations[{n}].amount"), item.amount.as_ref())?;
                targets.push((item.invoice_id.clone(), amount));
            }
            (targets, true)
        }
        (None, Some(invoice_id)) => {
            if account_id.is_none() {
                let invoice = referenced(conn, RecordKind::Invoice, invoice_id, false).await?;
                account_id = text(&invoice, "account_id").map(str::to_owned);
            }
            (vec![(invoice_id.clone(), None)], true)
        }
        (None, None) => match &account_id {
            Some(account) => (open_invoices(conn, account, &currency).await?, false),
            None => (Vec::new(), false),
        },
    };
    let id = new_id();
    let plan = allocate(
        conn,
        &id,
        account_id.as_deref(),
        &currency,
        amount,
        targets,
        explicit,
    )
    .await?;
    let mut fields = Map::new();
    fields.insert("account_id".into(), account_id.clone().into());
    fields.insert("amount".into(), money::text(amount, &currency).into());
    fields.insert("currency".into(), currency.clone().into());
    fields.insert("method".into(), new.method.clone().into());
    fields.insert("provider".into(), new.provider.clone().into());
    fields.insert("provider_ref".into(), new.provider_ref.clone().into());
    fields.insert("received_at".into(), received_at.into());
    fields.insert("status".into(), "received".into());
    fields.insert(
        "refunded_amount".into(),
        money::text(Decimal::ZERO, &currency).into(),
    );
    fields.insert(
        "unallocated".into(),
        money::text(plan.remaining, &currency).into(),
    );
    fields.insert("owner_id".into(), new.owner_id.clone().into());
    if let Some(custom) = new.custom {
        fields.insert("custom".into(), custom);
    }
    let mut changes = vec![Change::Insert {
        kind: RecordKind::Payment,
        id: Some(id.clone()),
        fields,
    }];
    changes.extend(plan.changes);
    let mut summary = plan.summary;
    if plan.remaining > Decimal::ZERO {
        summary.push(format!(
            "{} held as credit",
            money::text(plan.remaining, &currency)
        ));
    }
    changes.extend(timeline_entry(
        account_id.as_deref(),
        new.owner_id.as_deref(),
        "payment",
        format!(
            "Payment of {} {currency} received: {}",
            money::text(amount, &currency),
            summary.join(", ")
        ),
        json!({"payment_id": id}),
    ));
    apply(conn, ctx, changes).await?;
    Ok(id)
}

/// Allocates credit a payment still holds to an invoice.
pub async fn allocate_credit(
    conn: &mut AnyConnection,
    ctx: &WriteContext,
    payment_id: &str,
    request: AllocationInput,
) -> Result<(), BillingError> {
    let payment = load_for_update(conn, RecordKind::Payment, payment_id).await?;
    let currency = text(&payment, "currency").unwrap_or_default().to_owned();
    let unallocated = money::field(&payment, "unallocated");
    let amount = money::parse_opt("amount", request.amount.as_ref())?;
    if unallocated <= Decimal::ZERO {
        return Err(BillingError::Conflict(
            "the payment holds no credit to allocate".into(),
        ));
    }
    let plan = allocate(
        conn,
        payment_id,
        text(&payment, "account_id"),
        &currency,
        unallocated,
        vec![(request.invoice_id, amount)],
        true,
    )
    .await?;
    let mut changes = plan.changes;
    changes.push(Change::Update {
        kind: RecordKind::Payment,
        id: payment_id.to_owned(),
        fields: Map::from_iter([(
            "unallocated".to_owned(),
            Value::from(money::text(plan.remaining, &currency)),
        )]),
        expected_version: None,
    });
    changes.extend(timeline_entry(
        text(&payment, "account_id"),
        text(&payment, "owner_id"),
        "payment",
        format!("Credit allocated: {} {currency}", plan.summary.join(", ")),
        json!({"payment_id": payment_id}),
    ));
    apply(conn, ctx, changes).await?;
    Ok(())
}

/// Refunds part or all of a payment: first from its unallocated credit, then from its
/// latest allocations (those invoices owe again). More than is left is refused.
pub async fn refund(
    conn: &mut AnyConnection,
    ctx: &WriteContext,
    payment_id: &str,
    request: NewRefund,
) -> Result<Decimal, BillingError> {
    let payment = load_for_update(conn, RecordKind::Payment, payment_id).await?;
    let currency = text(&payment, "currency").unwrap_or_default().to_owned();
    let amount = money::parse("amount", &request.amount)?;
    if amount <= Decimal::ZERO {
        return Err(BillingError::Invalid(
            "a refund must be more than zero".into(),
        ));
    }
    let paid = money::field(&payment, "amount");
    let refunded = money::field(&payment, "refunded_amount");
    let refundable = paid - refunded;
    if amount > refundable {
        return Err(BillingError::Invalid(format!(
            "a refund of {amount} {currency} is larger than the {} {currency} left of the payment",
            money::text(refundable, &currency)
        )));
    }
    let unallocated = money::field(&payment, "unallocated");
    let from_credit = amount.min(unallocated);
    let mut rest = amount - from_credit;
    let mut changes = Vec::new();
    let today = Utc::now().date_naive();
    let allocations = ids_where(
        conn,
        RecordKind::PaymentAllocation,
        "payment_id",
        payment_id,
        "id DESC",
    )
    .await?;
    for allocation_id in allocations {
        if rest <= Decimal::ZERO {
            break;
        }
        let allocation = load(conn, RecordKind::PaymentAllocation, &allocation_id).await?;
        let allocated = money::field(&allocation, "amount");
        let take = allocated.min(rest);
        rest -= take;
        let left = allocated - take;
        changes.push(if left.is_zero() {
            Change::Delete {
                kind: RecordKind::PaymentAllocation,
                id: allocation_id.clone(),
            }
        } else {
            Change::Update {
                kind: RecordKind::PaymentAllocation,
                id: allocation_id.clone(),
                fields: Map::from_iter([(
                    "amount".to_owned(),
                    Value::from(money::text(left, &currency)),
                )]),
                expected_version: None,
            }
        });
        if let Some(invoice_id) = text(&allocation, "invoice_id") {
            let mut invoice = load_for_update(conn, RecordKind::Invoice, invoice_id).await?;
            let paid = money::field(&invoice, "amount_paid") - take;
            invoice.insert("amount_paid".into(), money::text(paid, &currency).into());
            let next = invoices::status(&invoice, today);
            changes.push(Change::Update {
                kind: RecordKind::Invoice,
                id: invoice_id.to_owned(),
                fields: Map::from_iter([
                    (
                        "amount_paid".to_owned(),
                        Value::from(money::text(paid, &currency)),
                    ),
                    ("status".to_owned(), Value::from(next)),
                ]),
                expected_version: None,
            });
        }
    }
    let refunded = refunded + amount;
    changes.push(Change::Update {
        kind: RecordKind::Payment,
        id: payment_id.to_owned(),
        fields: Map::from_iter([
            (
                "refunded_amount".to_owned(),
                Value::from(money::text(refunded, &currency)),
            ),
            (
                "unallocated".to_owned(),
                Value::from(money::text(unallocated - from_credit, &currency)),
            ),
            (
                "status".to_owned(),
                Value::from(if refunded == paid {
                    "refunded"
                } else {
                    "partially_refunded"
                }),
            ),
        ]),
        expected_version: None,
    });
    changes.extend(timeline_entry(
        text(&payment, "account_id"),
        text(&payment, "owner_id"),
        "refund",
        format!(
            "Refund of {} {currency}{}",
            money::text(amount, &currency),
            request
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
        json!({"payment_id": payment_id, "amount": money::text(amount, &currency)}),
    ));
    apply(conn, ctx, changes).await?;
    Ok(amount)
}

/// Credit an account holds, by currency: what its payments left unallocated.
pub async fn account_credit(
    conn: &mut AnyConnection,
    account_id: &str,
) -> Result<Vec<(String, String)>, BillingError> {
    let rows: Vec<(Option<String>, Option<String>)> =
        sqlx::query_as("SELECT currency, unallocated FROM payments WHERE account_id = $1")
            .bind(account_id)
            .fetch_all(&mut *conn)
            .await?;
    let mut by_currency: std::collections::BTreeMap<String, Decimal> = Default::default();
    for (currency, unallocated) in rows {
        let (Some(currency), Some(unallocated)) = (currency, unallocated) else {
            continue;
        };
        *by_currency.entry(currency).or_default() +=
            Decimal::from_str_exact(&unallocated).unwrap_or_default();
    }
    Ok(by_currency
        .into_iter()
        .filter(|(_, credit)| !credit.is_zero())
        .map(|(currency, credit)| {
            let text = money::text(credit, &currency);
            (currency, text)
        })
        .collect())
}

/// An inbound row the pipeline mapped to a payment (a Stripe event, a spreadsheet row):
/// a payment, or for `charge.refunded` the refund of the payment it refers to. Answers
/// the row's lineage.
pub async fn persist_inbound(
    conn: &mut AnyConnection,
    ctx: &WriteContext,
    source: &str,
    fields: &Map<String, Value>,
    custom: &Map<String, Value>,
) -> Result<Value, BillingError> {
    let provider = fields
        .get("provider")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| (source == "stripe").then(|| "stripe".to_owned()));
    let provider_ref = text(fields, "provider_ref").map(str::to_owned);
    let event = custom.get("event_type").and_then(Value::as_str);
    let existing = match (&provider, &provider_ref) {
        (Some(provider), Some(reference)) => {
            sqlx::query_scalar::<_, String>(
                "SELECT id FROM payments WHERE provider = $1 AND provider_ref = $2 ORDER BY id",
            )
            .bind(provider)
            .bind(reference)
            .fetch_optional(&mut *conn)
            .await?
        }
        _ => None,
    };
    if event == Some("charge.refunded") {
        let Some(payment_id) = existing else {
            return Err(BillingError::Invalid(format!(
                "no payment with reference {} to refund",
                provider_ref.unwrap_or_default()
            )));
        };
        let payment = load(conn, RecordKind::Payment, &payment_id).await?;
        let total_refunded = custom
            .get("amount_refunded")
            .map(|v| money::parse("amount_refunded", v))
            .transpose()?
            .unwrap_or_default();
        let delta = total_refunded - money::field(&payment, "refunded_amount");
        if delta <= Decimal::ZERO {
            return Ok(
                json!({"action": "skipped", "reason": "refund already recorded",
                             "kind": "payments", "id": payment_id}),
            );
        }
        refund(
            conn,
            ctx,
            &payment_id,
            NewRefund {
                amount: Value::from(delta.to_string()),
                reason: Some(format!("{source} charge.refunded")),
            },
        )
        .await?;
        return Ok(
            json!({"action": "refunded", "kind": "payments", "id": payment_id,
                         "amount": delta.to_string()}),
        );
    }
    if let Some(payment_id) = existing {
        return Ok(
            json!({"action": "skipped", "reason": "payment already recorded",
                         "kind": "payments", "id": payment_id}),
        );
    }
    let mut invoice_id = custom
        .get("invoice_id")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .map(str::to_owned);
    if invoice_id.is_none()
        && let Some(number) = custom
            .get("invoice_number")
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
    {
        let found = ids_where(conn, RecordKind::Invoice, "number", number.trim(), "id").await?;
        invoice_id = Some(
            found
                .into_iter()
                .next()
                .ok_or_else(|| BillingError::Invalid(format!("no invoice numbered {number}")))?,
        );
    }
    // A spreadsheet names the payer by account id or by the account's exact name (the
    // import's column matcher reads an `account` or `company` column as the company).
    let mut account_id = text(fields, "account_id").map(str::to_owned);
    if account_id.is_none()
        && let Some(named) = custom
            .get("account")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    {
        let by_id = ids_where(conn, RecordKind::Account, "id", named, "id").await?;
        let found = match by_id.into_iter().next() {
            Some(id) => Some(id),
            None => ids_where(conn, RecordKind::Account, "name", named, "id")
                .await?
                .into_iter()
                .next(),
        };
        account_id = Some(found.ok_or_else(|| {
            BillingError::Invalid(format!("no account with id or name `{named}`"))
        })?);
    }
    let mut rest = custom.clone();
    for key in [
        "invoice_id",
        "invoice_number",
        "event_type",
        "amount_refunded",
        "account",
    ] {
        rest.remove(key);
    }
    let new = NewPayment {
        account_id,
        amount: fields.get("amount").cloned().unwrap_or(Value::Null),
        currency: text(fields, "currency").unwrap_or_default().to_owned(),
        method: text(fields, "method").map(str::to_owned),
        received_at: text(fields, "received_at").map(str::to_owned),
        provider_ref,
        invoice_id,
        allocations: None,
        owner_id: text(fields, "owner_id").map(str::to_owned),
        custom: (!rest.is_empty()).then_some(Value::Object(rest)),
        provider,
    };
    let id = record(conn, ctx, new).await?;
    Ok(json!({"action": "created", "kind": "payments", "id": id}))
}
