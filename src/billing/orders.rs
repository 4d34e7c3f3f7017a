//! Sales orders: created from the API or from a won opportunity; status flow
//! draft → confirmed → fulfilled → closed, or cancelled from draft or confirmed.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use sqlx::AnyConnection;
use utoipa::ToSchema;

use super::lines::{LineInput, Priced, price};
use super::{BillingError, ids_where, load_for_update, money, referenced, text, timeline_entry};
use crate::domain::RecordKind;
use crate::domain::value::now_timestamp;
use crate::store::write::{apply, new_id};
use crate::store::{Change, WriteContext};

/// `POST /v1/orders`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    pub account_id: Option<String>,
    pub contact_id: Option<String>,
    pub opportunity_id: Option<String>,
    pub currency: String,
    pub lines: Vec<LineInput>,
    pub owner_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub custom: Option<Value>,
}

/// `POST /v1/opportunities/{id}/order`: lines default to one line of the opportunity's
/// amount.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderFromOpportunity {
    pub lines: Option<Vec<LineInput>>,
    pub currency: Option<String>,
}

/// The allowed moves of an order's status.
pub fn transition_allowed(from: &str, to: &str) -> bool {
    matches!(
        (from, to),
        ("draft", "confirmed")
            | ("draft", "cancelled")
            | ("confirmed", "fulfilled")
            | ("confirmed", "cancelled")
            | ("fulfilled", "closed")
    )
}

pub const STATUSES: [&str; 5] = ["draft", "confirmed", "fulfilled", "closed", "cancelled"];

/// Stages that count as won.
fn won(stage: &str) -> bool {
    matches!(
        stage.to_ascii_lowercase().replace([' ', '-'], "_").as_str(),
        "won" | "closed_won"
    )
}

/// Inserts the order and its lines; answers the order's id.
pub async fn create(
    conn: &mut AnyConnection,
    ctx: &WriteContext,
    order: NewOrder,
) -> Result<String, BillingError> {
    let priced = price(&order.currency, &order.lines)?;
    if let Some(account) = &order.account_id {
        referenced(conn, RecordKind::Account, account, false).await?;
    }
    insert(conn, ctx, order, priced).await
}

async fn insert(
    conn: &mut AnyConnection,
    ctx: &WriteContext,
    order: NewOrder,
    priced: Priced,
) -> Result<String, BillingError> {
    let id = new_id();
    let currency = priced.currency.clone();
    let mut fields = Map::new();
    // Orders need a reference people can quote, not a gapless one: the id's time-ordered
    // head says when, its random tail keeps orders of the same millisecond apart.
    let number = format!("SO-{}", id.replace('-', "")[..20].to_ascii_uppercase());
    fields.insert("number".into(), number.clone().into());
    fields.insert("account_id".into(), order.account_id.clone().into());
    fields.insert("contact_id".into(), order.contact_id.into());
    fields.insert("opportunity_id".into(), order.opportunity_id.into());
    fields.insert("status".into(), "draft".into());
    fields.insert("currency".into(), currency.clone().into());
    fields.insert(
        "subtotal".into(),
        money::text(priced.subtotal, &currency).into(),
    );
    fields.insert(
        "discount_total".into(),
        money::text(priced.discount_total, &currency).into(),
    );
    fields.insert(
        "tax_total".into(),
        money::text(priced.tax_total, &currency).into(),
    );
    fields.insert("total".into(), money::text(priced.total, &currency).into());
    fields.insert("ordered_at".into(), now_timestamp().into());
    fields.insert("owner_id".into(), order.owner_id.clone().into());
    if let Some(custom) = order.custom {
        fields.insert("custom".into(), custom);
    }
    let mut changes = vec![Change::Insert {
        kind: RecordKind::SalesOrder,
        id: Some(id.clone()),
        fields,
    }];
    for (position, line) in priced.lines.iter().enumerate() {
        let mut fields = line.fields(&currency, true);
        fields.insert("order_id".into(), id.clone().into());
        fields.insert("position".into(), (position as i64 + 1).into());
        changes.push(Change::Insert {
            kind: RecordKind::SalesOrderLine,
            id: None,
            fields,
        });
    }
    changes.extend(timeline_entry(
        order.account_id.as_deref(),
        order.owner_id.as_deref(),
        "order",
        format!(
            "Order {number} created: {} {currency}",
            money::text(priced.total, &currency)
        ),
        json!({"order_id": id, "status": "draft"}),
    ));
    apply(conn, ctx, changes).await?;
    Ok(id)
}

/// An order from a won opportunity, once per opportunity.
pub async fn from_opportunity(
    conn: &mut AnyConnection,
    ctx: &WriteContext,
    opportunity_id: &str,
    request: OrderFromOpportunity,
) -> Result<String, BillingError> {
    let opportunity = load_for_update(conn, RecordKind::Opportunity, opportunity_id).await?;
    let stage = text(&opportunity, "stage").unwrap_or_default();
    if !won(stage) {
        return Err(BillingError::Conflict(format!(
            "opportunity {opportunity_id} is at stage `{stage}`; only a won opportunity \
             (closed_won) becomes an order"
        )));
    }
    let existing = ids_where(
        conn,
        RecordKind::SalesOrder,
        "opportunity_id",
        opportunity_id,
        "id",
    )
    .await?;
    if let Some(order) = existing.first() {
        return Err(BillingError::Conflict(format!(
            "opportunity {opportunity_id} already has order {order}"
        )));
    }
    let currency = request
        .currency
        .or_else(|| text(&opportunity, "currency").map(str::to_owned))
        .ok_or_else(|| BillingError::Invalid("the order needs a currency".into()))?;
    let lines = match request.lines {
        Some(lines) => lines,
        None => {
            let amount = opportunity
                .get("amount")
                .filter(|v| !v.is_null())
                .cloned()
                .ok_or_else(|| {
                    BillingError::Invalid(
                        "the opportunity has no amount: give the order's lines".into(),
                    )
                })?;
            vec![LineInput {
                product: text(&opportunity, "name").map(str::to_owned),
                description: None,
                quantity: Value::from("1"),
                unit_price: amount,
                discount: None,
                tax_rate: None,
            }]
        }
    };
    let priced = price(&currency, &lines)?;
    let order = NewOrder {
        account_id: text(&opportunity, "account_id").map(str::to_owned),
        contact_id: text(&opportunity, "contact_id").map(str::to_owned),
        opportunity_id: Some(opportunity_id.to_owned()),
        currency,
        lines,
        owner_id: text(&opportunity, "owner_id").map(str::to_owned),
        custom: None,
    };
    insert(conn, ctx, order, priced).await
}

/// Moves the order to `to`; an illegal move is a conflict naming the allowed ones.
pub async fn transition(
    conn: &mut AnyConnection,
    ctx: &WriteContext,
    id: &str,
    to: &str,
) -> Result<(), BillingError> {
    if !STATUSES.contains(&to) {
        return Err(BillingError::Invalid(format!(
            "status `{to}`: expected one of {}",
            STATUSES.join(", ")
        )));
    }
    let order = load_for_update(conn, RecordKind::SalesOrder, id).await?;
    let from = text(&order, "status").unwrap_or("draft").to_owned();
    if !transition_allowed(&from, to) {
        let allowed: Vec<&str> = STATUSES
            .iter()
            .copied()
            .filter(|next| transition_allowed(&from, next))
            .collect();
        return Err(BillingError::Conflict(format!(
            "an order cannot go from {from} to {to} (from {from}: {})",
            if allowed.is_empty() {
                "none".to_owned()
            } else {
                allowed.join(", ")
            }
        )));
    }
    let mut changes = vec![Change::Update {
        kind: RecordKind::SalesOrder,
        id: id.to_owned(),
        fields: Map::from_iter([("status".to_owned(), Value::from(to))]),
        expected_version: None,
    }];
    changes.extend(timeline_entry(
        text(&order, "account_id"),
        text(&order, "owner_id"),
        "order",
        format!("Order {} {to}", text(&order, "number").unwrap_or(id)),
        json!({"order_id": id, "from": from, "status": to}),
    ));
    apply(conn, ctx, changes).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flow_moves_forward_only() {
        assert!(transition_allowed("draft", "confirmed"));
        assert!(transition_allowed("confirmed", "cancelled"));
        assert!(!transition_allowed("draft", "fulfilled"));
        assert!(!transition_allowed("closed", "draft"));
        assert!(!transition_allowed("fulfilled", "cancelled"));
        assert!(!transition_allowed("cancelled", "confirmed"));
    }
}
