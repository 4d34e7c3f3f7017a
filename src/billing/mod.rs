//! Post-sales billing: sales orders, invoices (gapless numbering, credit notes, PDF),
//! payments (allocation, account credit, refunds, Stripe) and the ageing report.
//!
//! Every change goes through the audited write path ([`crate::store::write::apply`]) in
//! one transaction per operation, and leaves an activity on the account's timeline.

pub mod ageing;
pub mod invoices;
pub mod lines;
pub mod money;
pub mod orders;
pub mod payments;
pub mod pdf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::AnyConnection;

use crate::domain::RecordKind;
use crate::domain::value::now_timestamp;
use crate::store::StoreError;
use crate::store::read::fields_in;

/// `[billing]` in leadgate.toml.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingConfig {
    /// Series of invoices (`INV-2026-000001`).
    pub invoice_series: String,
    /// Series of credit notes (`CN-2026-000001`).
    pub credit_note_series: String,
    /// Days from issue date to due date when an invoice names no terms.
    pub payment_terms_days: i64,
    /// The Stripe webhook connector (`POST /v1/webhooks/stripe`).
    pub stripe: StripeConfig,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            invoice_series: "INV".to_owned(),
            credit_note_series: "CN".to_owned(),
            payment_terms_days: 30,
            stripe: StripeConfig::default(),
        }
    }
}

/// `[billing.stripe]`: unset `webhook_secret` leaves the endpoint answering 404.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StripeConfig {
    /// The endpoint's signing secret (`whsec_…`).
    pub webhook_secret: String,
    /// How far the signature's `t=` may be from our clock.
    pub timestamp_tolerance_seconds: u32,
}

impl Default for StripeConfig {
    fn default() -> Self {
        Self {
            webhook_secret: String::new(),
            timestamp_tolerance_seconds: 300,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    /// Input that can never be right (422).
    #[error("{0}")]
    Invalid(String),
    /// Not allowed in the record's current state (409).
    #[error("{0}")]
    Conflict(String),
    #[error("{kind} {id} not found")]
    NotFound { kind: RecordKind, id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for BillingError {
    fn from(error: sqlx::Error) -> Self {
        BillingError::Store(error.into())
    }
}

/// A record's fields read inside the operation's transaction; missing is `NotFound`.
pub(crate) async fn load(
    conn: &mut AnyConnection,
    kind: RecordKind,
    id: &str,
) -> Result<Map<String, Value>, BillingError> {
    fields_in(conn, kind, id)
        .await?
        .ok_or_else(|| BillingError::NotFound {
            kind,
            id: id.to_owned(),
        })
}

/// A record the request body refers to (an account, an invoice to pay): missing is
/// invalid input (422), not a missing resource.
pub(crate) async fn referenced(
    conn: &mut AnyConnection,
    kind: RecordKind,
    id: &str,
    lock: bool,
) -> Result<Map<String, Value>, BillingError> {
    let found = if lock {
        load_for_update(conn, kind, id).await
    } else {
        load(conn, kind, id).await
    };
    found.map_err(|error| match error {
        BillingError::NotFound { kind, id } => {
            BillingError::Invalid(format!("there is no {} with id {id}", kind.path()))
        }
        other => other,
    })
}

/// As [`load`], for a record the operation will change: on PostgreSQL the row is locked
/// first (`SELECT … FOR UPDATE`), so two payments to one invoice queue instead of one
/// overwriting the other's `amount_paid`; SQLite's single writer already serialises them.
pub(crate) async fn load_for_update(
    conn: &mut AnyConnection,
    kind: RecordKind,
    id: &str,
) -> Result<Map<String, Value>, BillingError> {
    if conn.backend_name() == "PostgreSQL" {
        let sql = format!("SELECT id FROM {} WHERE id = $1 FOR UPDATE", kind.table());
        sqlx::query(&sql).bind(id).execute(&mut *conn).await?;
    }
    load(conn, kind, id).await
}

/// Ids of `kind` whose `column` equals `value`, in `order` (static column names only).
pub(crate) async fn ids_where(
    conn: &mut AnyConnection,
    kind: RecordKind,
    column: &'static str,
    value: &str,
    order: &'static str,
) -> Result<Vec<String>, BillingError> {
    let sql = format!(
        "SELECT id FROM {} WHERE {column} = $1 ORDER BY {order}",
        kind.table()
    );
    Ok(sqlx::query_scalar(&sql)
        .bind(value)
        .fetch_all(&mut *conn)
        .await?)
}

pub(crate) fn text<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    fields.get(name).and_then(Value::as_str)
}

/// An activity on the account's timeline (and the order's/invoice's context in `data`).
pub(crate) fn timeline_entry(
    account_id: Option<&str>,
    owner_id: Option<&str>,
    activity_type: &str,
    subject: String,
    data: Value,
) -> Option<crate::store::Change> {
    let account_id = account_id?;
    let mut fields = Map::new();
    fields.insert("activity_type".into(), Value::from(activity_type));
    fields.insert("subject".into(), Value::from(subject));
    fields.insert("channel".into(), Value::from("billing"));
    fields.insert("direction".into(), Value::from("internal"));
    fields.insert("occurred_at".into(), Value::from(now_timestamp()));
    fields.insert("account_id".into(), Value::from(account_id));
    if let Some(owner) = owner_id {
        fields.insert("owner_id".into(), Value::from(owner));
    }
    fields.insert("data".into(), data);
    Some(crate::store::Change::Insert {
        kind: RecordKind::Activity,
        id: None,
        fields,
    })
}

/// Kinds whose records only the billing operations write: the generic record routes may
/// read them and set a few descriptive fields, never amounts, numbers or states.
pub fn guard_generic_write(
    kind: RecordKind,
    current: Option<&Map<String, Value>>,
    fields: Option<&Map<String, Value>>,
) -> Result<(), BillingError> {
    let editable: &[&str] = match kind {
        RecordKind::SalesOrder => &["custom", "owner_id", "contact_id"],
        RecordKind::Invoice => &["custom", "owner_id"],
        RecordKind::Payment => &["custom", "owner_id", "method"],
        RecordKind::SalesOrderLine | RecordKind::InvoiceLine | RecordKind::PaymentAllocation => &[],
        _ => return Ok(()),
    };
    let (Some(current), Some(fields)) = (current, fields) else {
        return Err(BillingError::Conflict(format!(
            "{kind} are written by the billing operations (see /v1/orders, /v1/invoices, \
             /v1/payments), not created or deleted directly"
        )));
    };
    if kind == RecordKind::Invoice && text(current, "status") != Some("draft") {
        return Err(BillingError::Conflict(
            "an issued invoice is immutable; correct it with a credit note \
             (POST /v1/invoices/{id}/credit-notes)"
                .into(),
        ));
    }
    if let Some(name) = fields
        .keys()
        .find(|name| !editable.contains(&name.as_str()))
    {
        return Err(BillingError::Conflict(format!(
            "{kind}.{name} is kept by the billing operations and cannot be set directly"
        )));
    }
    Ok(())
}
