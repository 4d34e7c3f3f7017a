//! Score decay: behaviour points fade by a configured number per day, so last year's
//! webinar does not outrank this week's call. Applied in batches through the write path
//! (audited as `pipeline:decay`); the fit part of the score does not decay.

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value, json};
use sqlx::Row;

use crate::domain::RecordKind;
use crate::domain::value::format_timestamp;
use crate::store::{Change, RequestMeta, Store, StoreError, WriteContext};

/// Leads decayed per transaction.
const BATCH: i64 = 500;

/// Applies the decay due at `now`; answers how many leads changed.
pub async fn decay_once(
    store: &Store,
    per_day: i64,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    if per_day <= 0 {
        return Ok(0);
    }
    let ctx = WriteContext::new("pipeline:decay", "pipeline", RequestMeta::default());
    let due = format_timestamp(now - Duration::days(1));
    let mut changed = 0;
    loop {
        let rows = sqlx::query(
            "SELECT id, fit_score, behaviour_score, behaviour_decayed_at, updated_at FROM leads \
             WHERE behaviour_score > 0 AND COALESCE(behaviour_decayed_at, updated_at) <= $1 \
             ORDER BY id LIMIT $2",
        )
        .bind(&due)
        .bind(BATCH)
        .fetch_all(store.pool())
        .await?;
        if rows.is_empty() {
            return Ok(changed);
        }
        let mut changes = Vec::with_capacity(rows.len());
        for row in &rows {
            let since: Option<String> = row.try_get("behaviour_decayed_at")?;
            let since = since.unwrap_or(row.try_get("updated_at")?);
            let Ok(since) = DateTime::parse_from_rfc3339(&since) else {
                continue;
            };
            let days = (now - since.with_timezone(&Utc)).num_days().max(1);
            let behaviour: i64 = row
                .try_get::<Option<i64>, _>("behaviour_score")?
                .unwrap_or(0);
            let fit: i64 = row.try_get::<Option<i64>, _>("fit_score")?.unwrap_or(0);
            let faded = (behaviour - days * per_day).max(0);
            // Advance by whole days so a remainder is not lost between runs.
            let decayed_at = since.with_timezone(&Utc) + Duration::days(days);
            let fields: Map<String, Value> = Map::from_iter([
                ("behaviour_score".to_owned(), json!(faded)),
                ("score".to_owned(), json!(fit + faded)),
                (
                    "behaviour_decayed_at".to_owned(),
                    json!(format_timestamp(decayed_at)),
                ),
            ]);
            changes.push(Change::Update {
                kind: RecordKind::Lead,
                id: row.try_get("id")?,
                fields,
                expected_version: None,
            });
        }
        if changes.is_empty() {
            return Ok(changed);
        }
        changed += changes.len();
        store.write(&ctx, changes).await?;
        if (rows.len() as i64) < BATCH {
            return Ok(changed);
        }
    }
}

/// Runs the decay hourly until `shutdown`.
pub fn spawn(
    store: Store,
    per_day: i64,
    shutdown: tokio_util::sync::CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    (per_day > 0).then(|| {
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = every.tick() => {}
                }
                match decay_once(&store, per_day, Utc::now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(leads = n, "behaviour scores decayed"),
                    Err(error) => tracing::warn!(%error, "score decay failed; retrying next hour"),
                }
            }
        })
    })
}
