//! Undoing an import from the audit trail: every record the import created is removed,
//! and every field it changed on an existing record is put back — unless someone changed
//! that field since, which the report counts instead of overwriting their work.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::Row;
use utoipa::ToSchema;

use crate::domain::RecordKind;
use crate::store::audit::AuditLookup;
use crate::store::imports::import_source;
use crate::store::{Change, Store, StoreError, WriteContext};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct UndoReport {
    /// Records the import created, now deleted (their snapshots stay in the audit trail).
    pub removed: u64,
    /// Fields the import changed on existing records, now back to their earlier value.
    pub restored: u64,
    /// Fields changed by someone else after the import, left as they are.
    pub kept: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UndoError {
    #[error("import not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the import did to one record, from its audit rows.
#[derive(Default)]
struct Touched {
    created: bool,
    /// field → (value before the import's first change, value after its last change).
    fields: HashMap<String, (Value, Value)>,
}

fn json(text: Option<String>) -> Value {
    text.map(|t| serde_json::from_str(&t).unwrap_or(Value::String(t)))
        .unwrap_or(Value::Null)
}

/// Changes applied per transaction: an undo of a million-row import does not hold the
/// write lock for minutes, and a rerun after an interruption carries on (removed records
/// are gone, restored fields no longer hold the import's value).
const CHANGES_PER_TRANSACTION: usize = 500;

pub async fn undo_import(
    store: &Store,
    ctx: &WriteContext,
    import_id: &str,
) -> Result<UndoReport, UndoError> {
    let import = store.import(import_id).await?.ok_or(UndoError::NotFound)?;
    match import.status.as_str() {
        "done" | "failed" | "undoing" => {}
        "undone" => return Err(UndoError::Conflict("the import was undone already".into())),
        other => {
            return Err(UndoError::Conflict(format!(
                "the import is {other}; undo it once it has finished"
            )));
        }
    }
    if store.import_has_open_rows(import_id).await? {
        return Err(UndoError::Conflict(
            "rows of the import are still being processed; undo it once they are done".into(),
        ));
    }
    store.set_import_status(import_id, "undoing", None).await?;

    let sql = AuditLookup::Actor.query(
        &[
            "action",
            "record_kind",
            "record_id",
            "field",
            "old_value",
            "new_value",
        ],
        "",
        None,
        "ORDER BY seq",
    );
    let rows = sqlx::query(&sql)
        .bind(import_source(import_id))
        .fetch_all(store.pool())
        .await
        .map_err(StoreError::from)?;
    let mut touched: Vec<((RecordKind, String), Touched)> = Vec::new();
    let mut index: HashMap<(RecordKind, String), usize> = HashMap::new();
    for row in rows {
        let kind_path: String = row.try_get("record_kind").map_err(StoreError::from)?;
        let Ok(kind) = kind_path.parse::<RecordKind>() else {
            continue;
        };
        let id: String = row.try_get("record_id").map_err(StoreError::from)?;
        let action: String = row.try_get("action").map_err(StoreError::from)?;
        let field: Option<String> = row.try_get("field").map_err(StoreError::from)?;
        let key = (kind, id);
        let at = *index.entry(key.clone()).or_insert_with(|| {
            touched.push((key.clone(), Touched::default()));
            touched.len() - 1
        });
        let record = &mut touched[at].1;
        match (action.as_str(), field) {
            ("insert", _) => record.created = true,
            ("update" | "merge", Some(field)) => {
                let old = json(row.try_get("old_value").map_err(StoreError::from)?);
                let new = json(row.try_get("new_value").map_err(StoreError::from)?);
                record
                    .fields
                    .entry(field)
                    .and_modify(|(_, last)| *last = new.clone())
                    .or_insert((old, new));
            }
            _ => {}
        }
    }

    let mut report = UndoReport::default();
    let mut changes = Vec::new();
    // Newest first, so activities go before the leads they hang on.
    for ((kind, id), record) in touched.into_iter().rev() {
        let Some(current) = store.get(kind, &id).await? else {
            continue;
        };
        if record.created {
            changes.push(Change::Delete { kind, id });
            report.removed += 1;
        } else {
            let mut restore = Map::new();
            for (field, (before, after)) in record.fields {
                if current.fields.get(&field).unwrap_or(&Value::Null) == &after {
                    restore.insert(field, before);
                    report.restored += 1;
                } else {
                    report.kept += 1;
                }
            }
            if !restore.is_empty() {
                changes.push(Change::Update {
                    kind,
                    id,
                    fields: restore,
                    expected_version: Some(current.version),
                });
            }
        }
        if changes.len() >= CHANGES_PER_TRANSACTION {
            store.write(ctx, std::mem::take(&mut changes)).await?;
        }
    }
    if !changes.is_empty() {
        store.write(ctx, changes).await?;
    }
    store.set_import_status(import_id, "undone", None).await?;
    Ok(report)
}
