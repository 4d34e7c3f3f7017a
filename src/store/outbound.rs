//! The outbound message queue (`outbound_messages`): one row per message to send, beside
//! the message activity that shows it on the timeline. Enqueueing happens in the caller's
//! transaction together with that activity; settling a send updates the row and the
//! activity (through the audited write path) in one transaction.

use serde_json::{Map, Value, json};
use sqlx::{AnyConnection, Row};

use super::write::{apply, new_id};
use super::{Backend, Change, Store, StoreError, WriteContext};
use crate::domain::RecordKind;
use crate::domain::value::{format_timestamp, now_timestamp};

/// One claimed message.
#[derive(Debug, Clone)]
pub struct OutboundMessage {
    pub id: String,
    pub channel: String,
    pub activity_id: String,
    pub recipient: String,
    pub content: Value,
    /// Attempts before this one.
    pub attempts: i64,
}

/// How a send ended.
#[derive(Debug, Clone)]
pub enum Settlement {
    /// The provider accepted it; `provider_id` is what its status webhooks name.
    Sent { provider_id: String, detail: Value },
    /// Not now: try again at `at`.
    Retry {
        at: chrono::DateTime<chrono::Utc>,
        error: String,
    },
    /// Never: the provider refused it, or it was given up.
    Failed { error: String, detail: Value },
}

/// Queues a message in the caller's transaction; answers the queue row's id.
pub async fn enqueue(
    conn: &mut AnyConnection,
    channel: &str,
    activity_id: &str,
    recipient: &str,
    content: &Value,
) -> Result<String, StoreError> {
    let id = new_id();
    let now = now_timestamp();
    sqlx::query(
        "INSERT INTO outbound_messages (id, channel, activity_id, recipient, content, status, \
         attempts, next_attempt_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, $9)",
    )
    .bind(&id)
    .bind(channel)
    .bind(activity_id)
    .bind(recipient)
    .bind(content.to_string())
    .bind(0_i64)
    .bind(&now)
    .bind(&now)
    .bind(&now)
    .execute(&mut *conn)
    .await?;
    Ok(id)
}

impl Store {
    /// Moves up to `limit` due messages of `channel` to `sending` and returns them.
    pub async fn claim_outbound(
        &self,
        channel: &str,
        limit: usize,
    ) -> Result<Vec<OutboundMessage>, StoreError> {
        let lock = match self.backend() {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        };
        let now = now_timestamp();
        let sql = format!(
            "UPDATE outbound_messages SET status = 'sending', updated_at = $1 \
             WHERE id IN (SELECT id FROM outbound_messages WHERE status = 'pending' \
             AND channel = $2 AND next_attempt_at <= $3 ORDER BY next_attempt_at LIMIT $4{lock}) \
             RETURNING id, channel, activity_id, recipient, content, attempts"
        );
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(&sql)
            .bind(&now)
            .bind(channel)
            .bind(&now)
            .bind(limit as i64)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                let content: String = row.try_get("content")?;
                Ok(OutboundMessage {
                    id: row.try_get("id")?,
                    channel: row.try_get("channel")?,
                    activity_id: row.try_get("activity_id")?,
                    recipient: row.try_get("recipient")?,
                    content: serde_json::from_str(&content).unwrap_or(Value::Null),
                    attempts: row.try_get("attempts")?,
                })
            })
            .collect()
    }

    /// Messages left `sending` since before `cutoff` belong to a process that stopped (a
    /// live sender settles each within its client timeout and retries). They may or may
    /// not have gone out; they are failed rather than sent again, so nobody gets the same
    /// message twice.
    pub async fn abandon_stale_outbound(
        &self,
        ctx: &WriteContext,
        cutoff: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, StoreError> {
        let rows = sqlx::query(
            "SELECT id, channel, activity_id, recipient, content, attempts \
             FROM outbound_messages WHERE status = 'sending' AND updated_at < $1",
        )
        .bind(format_timestamp(cutoff))
        .fetch_all(self.pool())
        .await?;
        let mut abandoned = 0;
        for row in rows {
            let message = OutboundMessage {
                id: row.try_get("id")?,
                channel: row.try_get("channel")?,
                activity_id: row.try_get("activity_id")?,
                recipient: row.try_get("recipient")?,
                content: Value::Null,
                attempts: row.try_get("attempts")?,
            };
            let error = "interrupted while sending; not sent again so it cannot arrive twice";
            self.settle_outbound(
                ctx,
                &message,
                Settlement::Failed {
                    error: error.into(),
                    detail: Value::Null,
                },
            )
            .await?;
            abandoned += 1;
        }
        Ok(abandoned)
    }

    /// Records how a send ended on the queue row and on its activity, in one transaction.
    pub async fn settle_outbound(
        &self,
        ctx: &WriteContext,
        message: &OutboundMessage,
        settlement: Settlement,
    ) -> Result<(), StoreError> {
        let now = now_timestamp();
        let mut tx = self.begin_write().await?;
        let (status, next, provider_id, error) = match &settlement {
            Settlement::Sent { provider_id, .. } => ("sent", now.clone(), Some(provider_id), None),
            Settlement::Retry { at, error } => {
                ("pending", format_timestamp(*at), None, Some(error.as_str()))
            }
            Settlement::Failed { error, .. } => ("failed", now.clone(), None, Some(error.as_str())),
        };
        sqlx::query(
            "UPDATE outbound_messages SET status = $1, attempts = attempts + 1, \
             next_attempt_at = $2, provider_id = $3, error = $4, updated_at = $5 WHERE id = $6",
        )
        .bind(status)
        .bind(next)
        .bind(provider_id.map(String::as_str))
        .bind(error)
        .bind(&now)
        .bind(&message.id)
        .execute(&mut *tx)
        .await?;
        let activity = super::read::fields_in(&mut tx, RecordKind::Activity, &message.activity_id)
            .await?
            .unwrap_or_default();
        let mut data = activity
            .get("data")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut fields = Map::new();
        match settlement {
            Settlement::Sent {
                provider_id,
                detail,
            } => {
                fields.insert("status".into(), json!("accepted"));
                fields.insert("external_id".into(), json!(provider_id));
                data.insert("provider".into(), detail);
                data.remove("error");
            }
            Settlement::Retry { error, .. } => {
                data.insert("last_error".into(), json!(error));
                data.insert("attempts".into(), json!(message.attempts + 1));
            }
            Settlement::Failed { error, detail } => {
                fields.insert("status".into(), json!("failed"));
                data.insert(
                    "error".into(),
                    json!({"message": error, "provider": detail}),
                );
            }
        }
        fields.insert("data".into(), Value::Object(data));
        if !activity.is_empty() {
            apply(
                &mut tx,
                ctx,
                vec![Change::Update {
                    kind: RecordKind::Activity,
                    id: message.activity_id.clone(),
                    fields,
                    expected_version: None,
                }],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The queue row of an activity's message: `(status, attempts, error)`.
    pub async fn outbound_state(
        &self,
        activity_id: &str,
    ) -> Result<Option<(String, i64, Option<String>)>, StoreError> {
        let row = sqlx::query(
            "SELECT status, attempts, error FROM outbound_messages WHERE activity_id = $1",
        )
        .bind(activity_id)
        .fetch_optional(self.pool())
        .await?;
        row.map(|row| {
            Ok((
                row.try_get("status")?,
                row.try_get("attempts")?,
                row.try_get("error")?,
            ))
        })
        .transpose()
    }
}
