//! Upsell / cross-sell: declarative rules over an account's products, usage fields and
//! tickets. A rule that holds opens one expansion opportunity per account, ever, owned by
//! the account's owner and naming the rule.
//!
//! An account's products are the union of `custom.products` on the account (names, or
//! objects with a `name`), the `product` of its active contracts, and the products on
//! its sales orders' lines (orders not cancelled). Usage fields are looked up in
//! `custom.usage`, then `custom`, then the account's own fields (`employees`).

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sqlx::{AnyConnection, Row};

use super::{Service, ServiceError};
use crate::domain::RecordKind;
use crate::domain::value::format_timestamp;
use crate::store::read::fields_in;
use crate::store::write::{Journal, apply_journaled, new_id};
use crate::store::{Change, RequestMeta, Store, WriteContext};

/// One `[[service.expansion_rules]]`; every given condition must hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpansionRule {
    pub name: String,
    /// The account has every one of these products (names compare case-insensitively).
    #[serde(default)]
    pub has_products: Vec<String>,
    /// … and none of these.
    #[serde(default)]
    pub lacks_products: Vec<String>,
    /// Usage conditions such as `{ field = "seats", op = ">", value = 50 }`.
    #[serde(default)]
    pub usage: Vec<UsageCondition>,
    /// Open (not closed) tickets of the account, at least / at most.
    #[serde(default)]
    pub min_open_tickets: Option<i64>,
    #[serde(default)]
    pub max_open_tickets: Option<i64>,
    /// What the opportunity offers (its name says it); default the rule's name.
    #[serde(default)]
    pub offer: Option<String>,
    /// The opportunity's amount, an exact decimal.
    #[serde(default)]
    pub amount: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageCondition {
    pub field: String,
    /// `>`, `>=`, `<`, `<=`, `=`, `!=`.
    pub op: String,
    pub value: f64,
}

const OPS: [&str; 6] = [">", ">=", "<", "<=", "=", "!="];

impl ExpansionRule {
    pub fn check(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("expansion_rules: a rule needs a name".into());
        }
        for condition in &self.usage {
            if !OPS.contains(&condition.op.as_str()) {
                return Err(format!(
                    "expansion_rules.{}: op `{}` is not one of {}",
                    self.name,
                    condition.op,
                    OPS.join(" ")
                ));
            }
        }
        if let Some(amount) = &self.amount
            && amount.parse::<f64>().is_err()
        {
            return Err(format!(
                "expansion_rules.{}: amount `{amount}` is not a number",
                self.name
            ));
        }
        Ok(())
    }

    /// Whether the rule holds for this view of an account.
    pub fn holds(&self, account: &AccountView) -> bool {
        let has = |product: &String| account.products.contains(&product.to_lowercase());
        self.has_products.iter().all(has)
            && !self.lacks_products.iter().any(has)
            && self.usage.iter().all(|c| {
                account
                    .usage(&c.field)
                    .is_some_and(|v| match c.op.as_str() {
                        ">" => v > c.value,
                        ">=" => v >= c.value,
                        "<" => v < c.value,
                        "<=" => v <= c.value,
                        "=" => v == c.value,
                        "!=" => v != c.value,
                        _ => false,
                    })
            })
            && self
                .min_open_tickets
                .is_none_or(|min| account.open_tickets >= min)
            && self
                .max_open_tickets
                .is_none_or(|max| account.open_tickets <= max)
    }
}

/// What the rules see of one account.
#[derive(Debug, Clone, Default)]
pub struct AccountView {
    pub fields: Map<String, Value>,
    /// Lower-cased product names.
    pub products: BTreeSet<String>,
    pub open_tickets: i64,
}

impl AccountView {
    fn usage(&self, field: &str) -> Option<f64> {
        let custom = self.fields.get("custom").and_then(Value::as_object);
        let number = |v: &Value| match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        custom
            .and_then(|c| c.get("usage"))
            .and_then(Value::as_object)
            .and_then(|u| u.get(field))
            .and_then(number)
            .or_else(|| custom.and_then(|c| c.get(field)).and_then(number))
            .or_else(|| self.fields.get(field).and_then(number))
    }
}

/// Reads what the rules look at for one account.
pub async fn view(
    conn: &mut AnyConnection,
    account_id: &str,
) -> Result<Option<AccountView>, ServiceError> {
    let Some(fields) = fields_in(conn, RecordKind::Account, account_id).await? else {
        return Ok(None);
    };
    let mut products = BTreeSet::new();
    if let Some(list) = fields
        .get("custom")
        .and_then(|c| c.get("products"))
        .and_then(Value::as_array)
    {
        for item in list {
            let name = item
                .as_str()
                .or_else(|| item.get("name").and_then(Value::as_str));
            if let Some(name) = name {
                products.insert(name.trim().to_lowercase());
            }
        }
    }
    let contracts: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT product FROM renewals WHERE account_id = $1 AND status = 'active'",
    )
    .bind(account_id)
    .fetch_all(&mut *conn)
    .await?;
    let ordered: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT l.product FROM sales_order_lines l JOIN sales_orders o ON o.id = l.order_id \
         WHERE o.account_id = $1 AND (o.status IS NULL OR o.status <> 'cancelled')",
    )
    .bind(account_id)
    .fetch_all(&mut *conn)
    .await?;
    products.extend(
        contracts
            .into_iter()
            .chain(ordered)
            .flatten()
            .map(|p| p.trim().to_lowercase()),
    );
    let open_tickets: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM tickets WHERE account_id = $1 AND status <> 'closed'",
    )
    .bind(account_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Some(AccountView {
        fields,
        products,
        open_tickets,
    }))
}

/// Applies every rule to one account inside the caller's transaction; answers the
/// opportunities opened. A rule that already fired for the account does nothing.
pub async fn evaluate_account(
    conn: &mut AnyConnection,
    journal: &mut Journal,
    ctx: &Arc<WriteContext>,
    service: &Service,
    account_id: &str,
    now: DateTime<Utc>,
) -> Result<Vec<String>, ServiceError> {
    if service.config.expansion_rules.is_empty() {
        return Ok(Vec::new());
    }
    journal.settle_inserts(conn).await?;
    let Some(account) = view(conn, account_id).await? else {
        return Ok(Vec::new());
    };
    let mut opened = Vec::new();
    for rule in &service.config.expansion_rules {
        if !rule.holds(&account) {
            continue;
        }
        let opportunity = new_id();
        // The match row is the "once": a second pass (or a second worker) finds it.
        let claimed = sqlx::query(
            "INSERT INTO expansion_matches (rule, account_id, opportunity_id, matched_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (rule, account_id) DO NOTHING",
        )
        .bind(&rule.name)
        .bind(account_id)
        .bind(&opportunity)
        .bind(format_timestamp(now))
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if claimed == 0 {
            continue;
        }
        let owner = account
            .fields
            .get("owner_id")
            .cloned()
            .unwrap_or(Value::Null);
        let account_name = account
            .fields
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or(account_id);
        let offer = rule.offer.clone().unwrap_or_else(|| rule.name.clone());
        let mut fields = Map::from_iter([
            (
                "name".to_owned(),
                json!(format!("Expansion: {offer} for {account_name}")),
            ),
            ("stage".to_owned(), json!("prospecting")),
            ("account_id".to_owned(), json!(account_id)),
            ("owner_id".to_owned(), owner.clone()),
            (
                "amount".to_owned(),
                rule.amount.clone().map_or(Value::Null, Value::from),
            ),
            (
                "custom".to_owned(),
                json!({"expansion_rule": rule.name, "offer": offer}),
            ),
        ]);
        fields.retain(|_, v| !v.is_null());
        let mut activity = Map::from_iter([
            ("activity_type".to_owned(), json!("expansion")),
            (
                "subject".to_owned(),
                json!(format!(
                    "Expansion rule {} opened an opportunity",
                    rule.name
                )),
            ),
            ("channel".to_owned(), json!("system")),
            ("occurred_at".to_owned(), json!(format_timestamp(now))),
            ("account_id".to_owned(), json!(account_id)),
            ("opportunity_id".to_owned(), json!(opportunity)),
            ("owner_id".to_owned(), owner),
            ("data".to_owned(), json!({"rule": rule.name})),
        ]);
        activity.retain(|_, v| !v.is_null());
        apply_journaled(
            conn,
            ctx,
            vec![
                Change::Insert {
                    kind: RecordKind::Opportunity,
                    id: Some(opportunity.clone()),
                    fields,
                },
                Change::Insert {
                    kind: RecordKind::Activity,
                    id: None,
                    fields: activity,
                },
            ],
            journal,
        )
        .await?;
        opened.push(opportunity);
    }
    Ok(opened)
}

/// One pass over every account, a page per transaction; answers the opportunities opened.
pub async fn evaluate(
    store: &Store,
    service: &Service,
    now: DateTime<Utc>,
) -> Result<usize, ServiceError> {
    if service.config.expansion_rules.is_empty() {
        return Ok(0);
    }
    let ctx = Arc::new(WriteContext::new(
        "system:expansion",
        "system",
        RequestMeta::default(),
    ));
    let mut after = String::new();
    let mut opened = 0;
    loop {
        let mut tx = store.begin_write().await?;
        let rows = sqlx::query("SELECT id FROM accounts WHERE id > $1 ORDER BY id LIMIT 200")
            .bind(&after)
            .fetch_all(&mut *tx)
            .await?;
        let Some(last) = rows.last() else {
            break;
        };
        after = last.try_get("id")?;
        let mut journal = Journal::default();
        for row in &rows {
            let id: String = row.try_get("id")?;
            opened += evaluate_account(&mut tx, &mut journal, &ctx, service, &id, now)
                .await?
                .len();
        }
        journal.flush(&mut tx).await?;
        tx.commit().await?;
        if rows.len() < 200 {
            break;
        }
    }
    Ok(opened)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> ExpansionRule {
        ExpansionRule {
            name: "analytics".into(),
            has_products: vec!["CRM".into()],
            lacks_products: vec!["Analytics".into()],
            usage: vec![UsageCondition {
                field: "seats".into(),
                op: ">".into(),
                value: 50.0,
            }],
            min_open_tickets: None,
            max_open_tickets: Some(3),
            offer: None,
            amount: Some("1200.00".into()),
        }
    }

    fn account(products: &[&str], seats: Value, open_tickets: i64) -> AccountView {
        let Value::Object(fields) = json!({"custom": {"usage": {"seats": seats}}}) else {
            unreachable!()
        };
        AccountView {
            fields,
            products: products.iter().map(|p| p.to_lowercase()).collect(),
            open_tickets,
        }
    }

    #[test]
    fn a_rule_holds_only_when_every_condition_does() {
        assert!(rule().holds(&account(&["crm"], json!(51), 0)));
        assert!(
            rule().holds(&account(&["crm"], json!("80"), 3)),
            "text numbers"
        );
        assert!(
            !rule().holds(&account(&["crm"], json!(50), 0)),
            "seats > 50"
        );
        assert!(
            !rule().holds(&account(&["crm", "analytics"], json!(90), 0)),
            "has B"
        );
        assert!(!rule().holds(&account(&[], json!(90), 0)), "lacks A");
        assert!(!rule().holds(&account(&["crm"], json!(90), 4)), "tickets");
        assert!(
            !rule().holds(&account(&["crm"], Value::Null, 0)),
            "no usage"
        );
    }

    #[test]
    fn bad_rules_are_refused() {
        let mut bad = rule();
        bad.usage[0].op = "~".into();
        assert!(bad.check().unwrap_err().contains("op"));
        let mut bad = rule();
        bad.amount = Some("lots".into());
        assert!(bad.check().is_err());
        assert!(rule().check().is_ok());
    }
}
