//! A lead's conversion: account, contact and opportunity created or linked in one
//! transaction, through the audited write path, with the conversion on the timeline.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sqlx::Row;
use utoipa::ToSchema;

use crate::domain::RecordKind;
use crate::domain::value::now_timestamp;
use crate::store::read::fields_in;
use crate::store::write::{apply, new_id};
use crate::store::{Change, Store, StoreError, WriteContext};

/// What to create besides the account and contact.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Conversion {
    /// Skip the opportunity (a lead that becomes a customer contact only).
    pub without_opportunity: bool,
    pub opportunity_name: Option<String>,
    /// Exact decimal, e.g. "12500.00".
    pub amount: Option<String>,
    pub currency: Option<String>,
    /// YYYY-MM-DD.
    pub close_date: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Converted {
    pub lead_id: String,
    pub account_id: String,
    pub contact_id: String,
    pub opportunity_id: Option<String>,
    /// Which of account and contact already existed and were linked.
    pub linked: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("lead not found")]
    NotFound,
    #[error("lead {0} is already converted")]
    AlreadyConverted(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn text(fields: &Map<String, Value>, name: &str) -> Option<String> {
    fields
        .get(name)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map.into_iter().filter(|(_, v)| !v.is_null()).collect(),
        _ => Map::new(),
    }
}

pub async fn convert(
    store: &Store,
    ctx: &WriteContext,
    lead_id: &str,
    request: &Conversion,
) -> Result<Converted, ConvertError> {
    let mut tx = store.begin_write().await?;
    let lead = fields_in(&mut tx, RecordKind::Lead, lead_id)
        .await?
        .ok_or(ConvertError::NotFound)?;
    if text(&lead, "status").as_deref() == Some("converted") {
        return Err(ConvertError::AlreadyConverted(lead_id.to_owned()));
    }
    let person = [text(&lead, "first_name"), text(&lead, "last_name")]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    let owner = text(&lead, "owner_id");
    let mut changes = Vec::new();
    let mut linked = Vec::new();

    let account_id = match text(&lead, "account_id") {
        Some(id) => {
            linked.push("account".to_owned());
            id
        }
        None => {
            let id = new_id();
            let name = text(&lead, "company").unwrap_or_else(|| person.clone());
            changes.push(Change::Insert {
                kind: RecordKind::Account,
                id: Some(id.clone()),
                fields: object(json!({
                    "name": if name.is_empty() { "Unnamed account".to_owned() } else { name },
                    "country": text(&lead, "country"), "city": text(&lead, "city"),
                    "phone": text(&lead, "phone"), "website": text(&lead, "website"),
                    "owner_id": owner,
                })),
            });
            id
        }
    };

    let existing_contact = match text(&lead, "email") {
        Some(email) => sqlx::query("SELECT id FROM contacts WHERE email = $1 LIMIT 1")
            .bind(email)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::from)?
            .map(|row| row.try_get::<String, _>("id"))
            .transpose()
            .map_err(StoreError::from)?,
        None => None,
    };
    let contact_id = match existing_contact {
        Some(id) => {
            linked.push("contact".to_owned());
            id
        }
        None => {
            let id = new_id();
            changes.push(Change::Insert {
                kind: RecordKind::Contact,
                id: Some(id.clone()),
                fields: object(json!({
                    "account_id": account_id, "first_name": text(&lead, "first_name"),
                    "last_name": text(&lead, "last_name"), "email": text(&lead, "email"),
                    "phone": text(&lead, "phone"), "title": text(&lead, "title"),
                    "country": text(&lead, "country"), "owner_id": owner,
                })),
            });
            id
        }
    };

    let opportunity_id = (!request.without_opportunity).then(new_id);
    if let Some(id) = &opportunity_id {
        let name = request.opportunity_name.clone().unwrap_or_else(|| {
            let who = text(&lead, "company").unwrap_or_else(|| person.clone());
            format!("{who} — new business")
        });
        changes.push(Change::Insert {
            kind: RecordKind::Opportunity,
            id: Some(id.clone()),
            fields: object(json!({
                "name": name, "account_id": account_id, "contact_id": contact_id,
                "lead_id": lead_id, "stage": "qualification", "probability": 10,
                "forecast_category": "pipeline", "amount": request.amount,
                "currency": request.currency, "close_date": request.close_date,
                "owner_id": owner,
            })),
        });
    }
    changes.push(Change::Update {
        kind: RecordKind::Lead,
        id: lead_id.to_owned(),
        fields: object(json!({
            "status": "converted", "account_id": account_id, "contact_id": contact_id,
        })),
        expected_version: None,
    });
    changes.push(Change::Insert {
        kind: RecordKind::Activity,
        id: None,
        fields: object(json!({
            "activity_type": "conversion", "channel": ctx.channel,
            "subject": "Converted", "occurred_at": now_timestamp(),
            "lead_id": lead_id, "account_id": account_id, "contact_id": contact_id,
            "opportunity_id": opportunity_id, "owner_id": owner,
            "data": {"linked": linked},
        })),
    });
    apply(&mut tx, ctx, changes).await?;
    tx.commit().await?;
    Ok(Converted {
        lead_id: lead_id.to_owned(),
        account_id,
        contact_id,
        opportunity_id,
        linked,
    })
}

/// Which qualification framework marks a lead `qualified`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Qualification {
    /// Budget, authority, need, timeline.
    Bant,
    /// Metrics, economic buyer, decision criteria and process, identified pain, champion,
    /// competition.
    Meddicc,
    None,
}

impl Qualification {
    pub fn criteria(self) -> &'static [&'static str] {
        match self {
            Qualification::Bant => &["budget", "authority", "need", "timeline"],
            Qualification::Meddicc => &[
                "metrics",
                "economic_buyer",
                "decision_criteria",
                "decision_process",
                "identified_pain",
                "champion",
                "competition",
            ],
            Qualification::None => &[],
        }
    }

    /// The fields to set on a lead whose view is `fields`, when its qualification changes:
    /// `qualified` (and `qualified_at` when it becomes true).
    pub fn evaluate(self, fields: &Map<String, Value>) -> Option<Map<String, Value>> {
        let criteria = self.criteria();
        if criteria.is_empty() {
            return None;
        }
        let met = criteria.iter().all(|c| text(fields, c).is_some());
        let was = fields
            .get("qualified")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if met == was {
            return None;
        }
        let mut changes = Map::new();
        changes.insert("qualified".into(), Value::Bool(met));
        changes.insert(
            "qualified_at".into(),
            if met {
                Value::from(now_timestamp())
            } else {
                Value::Null
            },
        );
        Some(changes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bant_qualifies_when_all_four_are_answered_and_unqualifies_when_one_is_cleared() {
        let Value::Object(mut lead) = json!({"budget": "50k", "authority": "CFO", "need": "churn"})
        else {
            unreachable!()
        };
        assert_eq!(Qualification::Bant.evaluate(&lead), None);
        lead.insert("timeline".into(), json!("Q3"));
        let raised = Qualification::Bant.evaluate(&lead).unwrap();
        assert_eq!(raised["qualified"], true);
        lead.extend(raised);
        assert_eq!(
            Qualification::Bant.evaluate(&lead),
            None,
            "no change, nothing to write"
        );
        lead.insert("budget".into(), json!(""));
        assert_eq!(
            Qualification::Bant.evaluate(&lead).unwrap()["qualified"],
            false
        );
        lead.remove("qualified");
        assert_eq!(
            Qualification::Meddicc.evaluate(&lead),
            None,
            "MEDDICC asks more"
        );
        assert_eq!(Qualification::None.evaluate(&lead), None);
    }
}
