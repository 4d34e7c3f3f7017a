//! The review queue: pairs scored between the thresholds, decided by a steward as one
//! record (merge, audited and reversible) or two (remembered, never asked again).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::Row;
use sqlx::any::AnyRow;
use utoipa::ToSchema;

use super::dedup::move_members;
use crate::domain::RecordKind;
use crate::domain::value::now_timestamp;
use crate::store::read::fields_in;
use crate::store::write::apply;
use crate::store::{Change, Store, StoreError, WriteContext};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReviewPair {
    pub id: String,
    pub kind: String,
    /// The record that was there first.
    pub record_a: String,
    /// The arrival that resembled it.
    pub record_b: String,
    pub score: f64,
    /// Each field's comparison and weight, and the total.
    #[schema(value_type = Object)]
    pub breakdown: Value,
    pub status: String,
    pub decided_by: Option<String>,
    pub decided_at: Option<String>,
    pub created_at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// One person: `record_b` merges into `record_a`.
    Merge,
    /// Two people: the pair is not proposed again.
    NotADuplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("review pair not found")]
    NotFound,
    #[error("this pair was already resolved ({0})")]
    AlreadyResolved(String),
    #[error("this pair no longer exists: {0} was merged or deleted")]
    Gone(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn decode(row: &AnyRow) -> Result<ReviewPair, StoreError> {
    let breakdown: String = row.try_get("breakdown")?;
    Ok(ReviewPair {
        id: row.try_get("id")?,
        kind: row.try_get("record_kind")?,
        record_a: row.try_get("record_a")?,
        record_b: row.try_get("record_b")?,
        score: row.try_get("score")?,
        breakdown: serde_json::from_str(&breakdown).unwrap_or(Value::Null),
        status: row.try_get("status")?,
        decided_by: row.try_get("decided_by")?,
        decided_at: row.try_get("decided_at")?,
        created_at: row.try_get("created_at")?,
    })
}

pub async fn open_pairs(store: &Store, limit: i64) -> Result<Vec<ReviewPair>, StoreError> {
    let rows = sqlx::query(
        "SELECT * FROM review_pairs WHERE status = 'open' ORDER BY created_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(store.pool())
    .await?;
    rows.iter().map(decode).collect()
}

pub async fn pair(store: &Store, id: &str) -> Result<Option<ReviewPair>, StoreError> {
    let row = sqlx::query("SELECT * FROM review_pairs WHERE id = $1")
        .bind(id)
        .fetch_optional(store.pool())
        .await?;
    row.as_ref().map(decode).transpose()
}

/// Applies a steward's decision in one transaction.
pub async fn decide(
    store: &Store,
    ctx: &WriteContext,
    id: &str,
    decision: Decision,
) -> Result<ReviewPair, ReviewError> {
    let mut tx = store.begin_write().await?;
    let row = sqlx::query("SELECT * FROM review_pairs WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::from)?
        .ok_or(ReviewError::NotFound)?;
    let pair = decode(&row)?;
    if pair.status != "open" {
        return Err(ReviewError::AlreadyResolved(pair.status));
    }
    let kind: RecordKind = pair.kind.parse().map_err(|_| ReviewError::NotFound)?;
    let status = match decision {
        Decision::NotADuplicate => "not_a_duplicate",
        Decision::Merge => {
            let a = fields_in(&mut tx, kind, &pair.record_a).await?;
            let b = fields_in(&mut tx, kind, &pair.record_b).await?;
            let (Some(a), Some(b)) = (a, b) else {
                let gone = if fields_in(&mut tx, kind, &pair.record_a).await?.is_none() {
                    &pair.record_a
                } else {
                    &pair.record_b
                };
                return Err(ReviewError::Gone(gone.clone()));
            };
            // The later arrival's non-empty values win, as in an automatic merge.
            let mut fields = serde_json::Map::new();
            for (name, value) in &b {
                let empty = value.is_null() || value.as_str().is_some_and(str::is_empty);
                if !empty && a.get(name) != Some(value) && name != "status" && name != "source" {
                    fields.insert(name.clone(), value.clone());
                }
            }
            let mut changes = vec![Change::Merge {
                kind,
                survivor: pair.record_a.clone(),
                merged: pair.record_b.clone(),
                fields,
            }];
            if let Some(column) = kind.timeline_column() {
                let sql = format!("SELECT id FROM activities WHERE {column} = $1");
                let activities: Vec<String> = sqlx::query_scalar(&sql)
                    .bind(&pair.record_b)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(StoreError::from)?;
                for activity in activities {
                    let mut moved = serde_json::Map::new();
                    moved.insert(column.to_owned(), json!(pair.record_a));
                    changes.push(Change::Update {
                        kind: RecordKind::Activity,
                        id: activity,
                        fields: moved,
                        expected_version: None,
                    });
                }
            }
            apply(&mut tx, ctx, changes).await?;
            move_members(&mut tx, kind, &pair.record_b, &pair.record_a).await?;
            "merged"
        }
    };
    sqlx::query(
        "UPDATE review_pairs SET status = $1, decided_by = $2, decided_at = $3 WHERE id = $4",
    )
    .bind(status)
    .bind(&ctx.actor)
    .bind(now_timestamp())
    .bind(id)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::from)?;
    tx.commit().await?;
    pair_after(store, id).await
}

async fn pair_after(store: &Store, id: &str) -> Result<ReviewPair, ReviewError> {
    pair(store, id).await?.ok_or(ReviewError::NotFound)
}
