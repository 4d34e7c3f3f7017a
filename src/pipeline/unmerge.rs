//! Undoing a merge from the audit trail. A merge of two stored leads is undone by putting
//! back the survivor's fields the merge changed (where nobody changed them since), the
//! merged lead from its snapshot under its own id, its activities and its match members.
//! An arrival merged into a lead is undone by putting back the fields it changed and
//! giving it a lead of its own. Either way the pair is remembered as two people.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sqlx::{AnyConnection, Row};
use utoipa::ToSchema;

use super::Pipeline;
use crate::domain::RecordKind;
use crate::domain::value::now_timestamp;
use crate::store::audit::AuditLookup;
use crate::store::inbox::InboxRow;
use crate::store::read::fields_in;
use crate::store::write::{apply, new_id};
use crate::store::{Change, Store, StoreError, WriteContext};

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnmergeRequest {
    /// A lead merged into this one by a steward (review queue).
    pub merged_id: Option<String>,
    /// An inbound record that merged into this lead on arrival.
    pub inbound_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Unmerged {
    /// The lead that was merged in, back on its own.
    pub restored_id: String,
    /// Fields of this lead put back to their values before the merge.
    pub restored_fields: Vec<String>,
    /// Fields changed again since the merge, left as they are now.
    pub kept_fields: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum UnmergeError {
    #[error("say which merge: merged_id or inbound_id")]
    Ambiguous,
    #[error("{0}")]
    NotMerged(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn parse(text: Option<String>) -> Value {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

/// Field changes of one merge (`action = 'merge'` rows of `id` written at `at`), put back
/// where the field still holds what the merge wrote.
async fn reverse_fields(
    conn: &mut AnyConnection,
    id: &str,
    at: &str,
) -> Result<(Map<String, Value>, Vec<String>, Vec<String>), StoreError> {
    let sql = AuditLookup::Record.query(
        &["field", "old_value", "new_value"],
        " AND a.action = 'merge' AND a.at = $3 AND a.field IS NOT NULL",
        None,
        "",
    );
    let rows = sqlx::query(&sql)
        .bind(RecordKind::Lead.path())
        .bind(id)
        .bind(at)
        .fetch_all(&mut *conn)
        .await?;
    let current = fields_in(conn, RecordKind::Lead, id)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            kind: RecordKind::Lead,
            id: id.to_owned(),
        })?;
    let (mut restore, mut restored, mut kept) = (Map::new(), Vec::new(), Vec::new());
    for row in rows {
        let field: String = row.try_get("field")?;
        let old = parse(row.try_get("old_value")?);
        let new = parse(row.try_get("new_value")?);
        if current.get(&field).unwrap_or(&Value::Null) == &new {
            restore.insert(field.clone(), old);
            restored.push(field);
        } else {
            kept.push(field);
        }
    }
    Ok((restore, restored, kept))
}

fn move_activities(ids: Vec<String>, to: &str, changes: &mut Vec<Change>) {
    for activity in ids {
        let mut fields = Map::new();
        fields.insert("lead_id".into(), json!(to));
        changes.push(Change::Update {
            kind: RecordKind::Activity,
            id: activity,
            fields,
            expected_version: None,
        });
    }
}

pub async fn unmerge(
    store: &Store,
    pipeline: &Pipeline,
    ctx: &WriteContext,
    id: &str,
    request: &UnmergeRequest,
) -> Result<Unmerged, UnmergeError> {
    let mut tx = store.begin_write().await?;
    let (restored_id, restored_fields, kept_fields, mut changes, members_from) = match (
        &request.merged_id,
        &request.inbound_id,
    ) {
        (Some(merged), None) => {
            let sql = AuditLookup::Record.query(
                &["at", "old_value", "new_value"],
                " AND a.action = 'merged_into'",
                None,
                "ORDER BY seq DESC LIMIT 1",
            );
            let row = sqlx::query(&sql)
                .bind(RecordKind::Lead.path())
                .bind(merged)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::from)?
                .ok_or_else(|| UnmergeError::NotMerged(format!("{merged} was never merged")))?;
            let at: String = row.try_get("at").map_err(StoreError::from)?;
            let into = parse(row.try_get("new_value").map_err(StoreError::from)?);
            if into != json!(id) {
                return Err(UnmergeError::NotMerged(format!(
                    "{merged} was not merged into {id}"
                )));
            }
            if fields_in(&mut tx, RecordKind::Lead, merged)
                .await?
                .is_some()
            {
                return Err(UnmergeError::NotMerged(format!(
                    "{merged} is already on its own"
                )));
            }
            let Value::Object(snapshot) =
                parse(row.try_get("old_value").map_err(StoreError::from)?)
            else {
                return Err(UnmergeError::NotMerged(
                    "the merged lead left no snapshot".into(),
                ));
            };
            let (restore, restored, kept) = reverse_fields(&mut tx, id, &at).await?;
            let sql = AuditLookup::Kind.query(
                &["record_id"],
                " AND a.action = 'update' AND a.field = 'lead_id' AND a.at = $2 AND a.old_value = $3",
                None,
                "",
            );
            let moved: Vec<String> = sqlx::query(&sql)
                .bind(RecordKind::Activity.path())
                .bind(&at)
                .bind(json!(merged).to_string())
                .fetch_all(&mut *tx)
                .await
                .map_err(StoreError::from)?
                .iter()
                .map(|row| row.try_get("record_id"))
                .collect::<Result<_, _>>()
                .map_err(StoreError::from)?;
            let mut changes = vec![Change::Insert {
                kind: RecordKind::Lead,
                id: Some(merged.clone()),
                fields: snapshot,
            }];
            if !restore.is_empty() {
                changes.push(Change::Update {
                    kind: RecordKind::Lead,
                    id: id.to_owned(),
                    fields: restore,
                    expected_version: None,
                });
            }
            let mut inbound = Vec::with_capacity(moved.len());
            for activity in &moved {
                let source: Option<String> =
                    sqlx::query_scalar("SELECT inbound_id FROM activities WHERE id = $1")
                        .bind(activity)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(StoreError::from)?
                        .flatten();
                inbound.extend(source);
            }
            move_activities(moved, merged, &mut changes);
            (merged.clone(), restored, kept, changes, inbound)
        }
        (None, Some(inbound_id)) => {
            let at: Option<String> = sqlx::query_scalar(
                "SELECT created_at FROM activities WHERE lead_id = $1 AND inbound_id = $2 \
                     AND activity_type <> 'score_change' ORDER BY created_at LIMIT 1",
            )
            .bind(id)
            .bind(inbound_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::from)?;
            let at = at.ok_or_else(|| {
                UnmergeError::NotMerged(format!("{inbound_id} did not arrive on {id}"))
            })?;
            let (restore, restored, kept) = reverse_fields(&mut tx, id, &at).await?;
            let row = store
                .inbox_row(inbound_id)
                .await?
                .ok_or_else(|| UnmergeError::NotMerged(format!("no inbound {inbound_id}")))?;
            if row.result["action"] != "merged" {
                return Err(UnmergeError::NotMerged(format!(
                    "{inbound_id} did not merge"
                )));
            }
            let new_lead = arrival_as_lead(pipeline, &row)?;
            let lead_id = new_id();
            let mut changes = vec![Change::Insert {
                kind: RecordKind::Lead,
                id: Some(lead_id.clone()),
                fields: new_lead,
            }];
            if !restore.is_empty() {
                changes.push(Change::Update {
                    kind: RecordKind::Lead,
                    id: id.to_owned(),
                    fields: restore,
                    expected_version: None,
                });
            }
            let moved: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM activities WHERE lead_id = $1 AND inbound_id = $2",
            )
            .bind(id)
            .bind(inbound_id)
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::from)?;
            move_activities(moved, &lead_id, &mut changes);
            (lead_id, restored, kept, changes, vec![inbound_id.clone()])
        }
        _ => return Err(UnmergeError::Ambiguous),
    };
    changes.push(super::activity_insert(json!({
        "activity_type": "unmerge", "channel": ctx.channel, "occurred_at": now_timestamp(),
        "subject": format!("Unmerged {restored_id}"), "lead_id": id,
        "data": {"restored_id": restored_id, "restored_fields": restored_fields, "kept_fields": kept_fields},
    })));
    apply(&mut tx, ctx, changes).await?;
    for source in &members_from {
        sqlx::query(
            "UPDATE match_members SET record_id = $1 WHERE record_kind = 'leads' AND record_id = $2 AND source_id = $3",
        )
        .bind(&restored_id)
        .bind(id)
        .bind(source)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
    }
    super::dedup::remember_distinct(&mut tx, RecordKind::Lead, id, &restored_id, &ctx.actor)
        .await?;
    tx.commit().await?;
    Ok(Unmerged {
        restored_id,
        restored_fields,
        kept_fields,
    })
}

/// The arrival's own values, as the pipeline maps and normalises them.
fn arrival_as_lead(
    pipeline: &Pipeline,
    row: &InboxRow,
) -> Result<Map<String, Value>, UnmergeError> {
    let draft = pipeline
        .prepare(row)
        .map_err(|e| UnmergeError::NotMerged(format!("the arrival cannot be re-read: {e}")))?;
    let mut fields = draft.fields;
    fields.insert("status".into(), json!("new"));
    fields.entry("source").or_insert_with(|| json!(row.source));
    if !draft.custom.is_empty() {
        fields.insert("custom".into(), Value::Object(draft.custom));
    }
    Ok(fields)
}
