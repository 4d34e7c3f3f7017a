use serde_json::{Map, Value, json};

use super::{Pipeline, PipelineError, Plan};
use crate::domain::{RecordKind, SqlValue};
use crate::store::inbox::InboxRow;
use crate::store::{Change, write::new_id};

/// Lead fields an inbound record may set directly; ownership, links and score are the
/// pipeline's own decisions, never taken from a caller.
const SETTABLE: &[&str] = &[
    "first_name",
    "last_name",
    "email",
    "phone",
    "company",
    "title",
    "website",
    "country",
    "city",
    "source",
    "campaign",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "consent_email",
    "consent_whatsapp",
];

/// Fields that identify a person; a lead needs at least one.
const IDENTIFYING: &[&str] = &["email", "phone", "first_name", "last_name", "company"];

/// Creates a lead from the inbound fields and notes the arrival on its timeline.
/// Fields that are not lead columns, or whose value does not fit, are kept in `custom`.
#[derive(Debug, Default)]
pub struct PassThrough;

impl Pipeline for PassThrough {
    fn plan(&self, row: &InboxRow) -> Result<Plan, PipelineError> {
        let Value::Object(inbound) = &row.fields else {
            return Err(PipelineError("inbound fields are not an object".into()));
        };
        let mut fields = Map::new();
        let mut custom = Map::new();
        for (name, value) in inbound {
            let fits = SETTABLE.contains(&name.as_str())
                && RecordKind::Lead
                    .field(name)
                    .is_some_and(|def| SqlValue::from_json(def, value).is_ok());
            if fits {
                fields.insert(name.clone(), value.clone());
            } else if name != "external_id" {
                custom.insert(name.clone(), value.clone());
            }
        }
        let identified = IDENTIFYING.iter().any(|name| {
            fields
                .get(*name)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.trim().is_empty())
        });
        if !identified {
            return Err(PipelineError(
                "no identifying field: a lead needs an email, phone, name or company".into(),
            ));
        }
        fields
            .entry("source")
            .or_insert_with(|| Value::from(row.source.clone()));
        fields.insert("status".into(), Value::from("new"));
        if !custom.is_empty() {
            fields.insert("custom".into(), Value::Object(custom));
        }
        let lead_id = new_id();
        let activity = json!({
            "activity_type": "inbound",
            "channel": row.source,
            "subject": format!("Received from {}", row.source),
            "direction": "inbound",
            "occurred_at": row.received_at,
            "lead_id": lead_id,
            "inbound_id": row.id,
            "external_id": row.external_id,
        });
        let Value::Object(activity) = activity else {
            return Err(PipelineError("activity is not an object".into()));
        };
        Ok(Plan {
            changes: vec![
                Change::Insert {
                    kind: RecordKind::Lead,
                    id: Some(lead_id.clone()),
                    fields,
                },
                Change::Insert {
                    kind: RecordKind::Activity,
                    id: None,
                    fields: activity,
                },
            ],
            result: json!({ "action": "created", "kind": "leads", "id": lead_id }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RequestMeta;

    fn row(fields: Value) -> InboxRow {
        InboxRow {
            id: "in-1".into(),
            source: "partner:acme".into(),
            external_id: None,
            received_at: "2026-01-01T00:00:00.000000Z".into(),
            fields,
            status: "processing".into(),
            attempts: 1,
            error: None,
            result: Value::Null,
            request_id: None,
            updated_at: String::new(),
            meta: RequestMeta::default(),
        }
    }

    #[test]
    fn unknown_and_unfitting_fields_are_kept_as_custom() {
        let plan = PassThrough
            .plan(&row(json!({
                "email": "a@b.example", "favourite_colour": "teal", "consent_email": "maybe",
                "owner_id": "u-9"
            })))
            .unwrap();
        let Change::Insert { fields, .. } = &plan.changes[0] else {
            panic!("lead insert first")
        };
        assert_eq!(fields["email"], "a@b.example");
        assert_eq!(fields["custom"]["favourite_colour"], "teal");
        assert_eq!(fields["custom"]["consent_email"], "maybe");
        assert_eq!(fields["custom"]["owner_id"], "u-9");
        assert!(!fields.contains_key("owner_id"));
    }

    #[test]
    fn a_row_without_identity_fails_with_the_reason() {
        let error = PassThrough.plan(&row(json!({"note": "hi"}))).unwrap_err();
        assert!(error.0.contains("identifying"));
    }
}
