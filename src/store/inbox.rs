//! The durable inbox: accepted inbound records, their processing state and lineage.

use connectors::Inbound;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use utoipa::ToSchema;

use super::write::{RequestMeta, new_id};
use super::{Backend, Store, StoreError};
use crate::domain::value::{format_timestamp, now_timestamp};

/// One request's worth of inbound records, accepted (or refused) as a unit.
#[derive(Debug, Clone)]
pub struct Submission {
    pub items: Vec<Inbound>,
    pub meta: RequestMeta,
    pub idempotency: Option<IdempotencyKey>,
}

#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    /// Whose key space this is, e.g. `partner:acme`; keys of different callers never clash.
    pub scope: String,
    pub key: String,
    /// SHA-256 of the request body: the same key with another body is a client error.
    pub request_sha256: String,
}

/// What the inbox answered for one accepted item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Receipt {
    /// The inbound id, the handle for lineage (`GET /v1/inbound/{id}`).
    pub id: String,
    pub external_id: Option<String>,
    /// True when this `(source, external_id)` had been accepted before. Not part of the
    /// answer: a replay is answered exactly as the first delivery was.
    #[serde(skip)]
    pub duplicate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    New(Vec<Receipt>),
    /// The Idempotency-Key was seen with the same body: the first answer, again.
    Replayed(Vec<Receipt>),
    /// The Idempotency-Key was seen with a different body.
    KeyReused,
}

/// An inbox row as the worker and the lineage endpoint see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InboxRow {
    pub id: String,
    pub source: String,
    pub external_id: Option<String>,
    pub received_at: String,
    #[schema(value_type = Object)]
    pub fields: Value,
    pub status: String,
    pub attempts: i64,
    pub error: Option<String>,
    #[schema(value_type = Object)]
    pub result: Value,
    pub request_id: Option<String>,
    pub updated_at: String,
    #[serde(skip)]
    pub meta: RequestMeta,
}

#[derive(Debug, Clone, Copy, Default, Serialize, ToSchema)]
pub struct InboxDepth {
    pub pending: i64,
    pub processing: i64,
    pub failed: i64,
    pub done: i64,
}

const ROW_COLUMNS: &str = "id, source, external_id, received_at, fields, status, attempts, \
                           error, result, request_id, ip, user_agent, updated_at";

fn decode_row(row: &AnyRow) -> Result<InboxRow, StoreError> {
    let json = |text: Option<String>| {
        text.and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    };
    Ok(InboxRow {
        id: row.try_get("id")?,
        source: row.try_get("source")?,
        external_id: row.try_get("external_id")?,
        received_at: row.try_get("received_at")?,
        fields: json(row.try_get("fields")?),
        status: row.try_get("status")?,
        attempts: row.try_get("attempts")?,
        error: row.try_get("error")?,
        result: json(row.try_get("result")?),
        request_id: row.try_get("request_id")?,
        updated_at: row.try_get("updated_at")?,
        meta: RequestMeta {
            request_id: row.try_get("request_id")?,
            ip: row.try_get("ip")?,
            user_agent: row.try_get("user_agent")?,
        },
    })
}

impl Store {
    /// Appends many submissions in one transaction: one commit, one fsync, for all of them.
    pub async fn append_inbox(
        &self,
        submissions: &[Submission],
    ) -> Result<Vec<Accepted>, StoreError> {
        let mut tx = self.begin_write().await?;
        let mut answers = Vec::with_capacity(submissions.len());
        for submission in submissions {
            answers.push(append_one(&mut tx, submission).await?);
        }
        tx.commit().await?;
        Ok(answers)
    }

    /// Moves up to `limit` pending rows to `processing` and returns them, oldest first.
    pub async fn claim_inbox(&self, limit: usize) -> Result<Vec<InboxRow>, StoreError> {
        let lock = match self.backend() {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        };
        let sql = format!(
            "UPDATE inbox SET status = 'processing', attempts = attempts + 1, updated_at = $1 \
             WHERE seq IN (SELECT seq FROM inbox WHERE status = 'pending' ORDER BY seq LIMIT $2{lock}) \
             RETURNING seq, {ROW_COLUMNS}"
        );
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(&sql)
            .bind(now_timestamp())
            .bind(limit as i64)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut rows: Vec<(i64, InboxRow)> = rows
            .iter()
            .map(|row| Ok((row.try_get("seq")?, decode_row(row)?)))
            .collect::<Result<_, StoreError>>()?;
        rows.sort_by_key(|(seq, _)| *seq);
        Ok(rows.into_iter().map(|(_, row)| row).collect())
    }

    /// Rows left `processing` by a process that died go back to `pending`.
    pub async fn requeue_in_flight(&self) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE inbox SET status = 'pending', updated_at = $1 WHERE status = 'processing'",
        )
        .bind(now_timestamp())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    pub async fn mark_inbox_failed(&self, id: &str, error: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        mark_failed(&mut tx, id, error).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Puts a failed row back in the queue. Answers false when it was not failed.
    pub async fn retry_inbox(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE inbox SET status = 'pending', updated_at = $1 WHERE id = $2 AND status = 'failed'",
        )
        .bind(now_timestamp())
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn retry_all_failed(&self) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE inbox SET status = 'pending', updated_at = $1 WHERE status = 'failed'",
        )
        .bind(now_timestamp())
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected())
    }

    pub async fn inbox_row(&self, id: &str) -> Result<Option<InboxRow>, StoreError> {
        let sql = format!("SELECT {ROW_COLUMNS} FROM inbox WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(decode_row).transpose()
    }

    pub async fn inbox_rows(&self, status: &str, limit: i64) -> Result<Vec<InboxRow>, StoreError> {
        let sql =
            format!("SELECT {ROW_COLUMNS} FROM inbox WHERE status = $1 ORDER BY seq LIMIT $2");
        let rows = sqlx::query(&sql)
            .bind(status)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(decode_row).collect()
    }

    pub async fn inbox_depth(&self) -> Result<InboxDepth, StoreError> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM inbox GROUP BY status")
            .fetch_all(self.pool())
            .await?;
        let mut depth = InboxDepth::default();
        for row in rows {
            let status: String = row.try_get("status")?;
            let n: i64 = row.try_get("n")?;
            match status.as_str() {
                "pending" => depth.pending = n,
                "processing" => depth.processing = n,
                "failed" => depth.failed = n,
                "done" => depth.done = n,
                _ => {}
            }
        }
        Ok(depth)
    }
}

async fn append_one(
    conn: &mut AnyConnection,
    submission: &Submission,
) -> Result<Accepted, StoreError> {
    if let Some(key) = &submission.idempotency {
        let seen = sqlx::query(
            "SELECT request_sha256, response FROM idempotency_keys WHERE scope = $1 AND key = $2",
        )
        .bind(&key.scope)
        .bind(&key.key)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(seen) = seen {
            let hash: String = seen.try_get("request_sha256")?;
            if hash != key.request_sha256 {
                return Ok(Accepted::KeyReused);
            }
            let response: String = seen.try_get("response")?;
            let receipts = serde_json::from_str(&response)
                .map_err(|e| StoreError::Conflict(format!("stored answer unreadable: {e}")))?;
            return Ok(Accepted::Replayed(receipts));
        }
    }
    let mut receipts = Vec::with_capacity(submission.items.len());
    for item in &submission.items {
        receipts.push(append_item(conn, item, &submission.meta).await?);
    }
    if let Some(key) = &submission.idempotency {
        let response = serde_json::to_string(&receipts)
            .map_err(|e| StoreError::Conflict(format!("answer not serialisable: {e}")))?;
        sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, request_sha256, response, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&key.scope)
        .bind(&key.key)
        .bind(&key.request_sha256)
        .bind(response)
        .bind(now_timestamp())
        .execute(&mut *conn)
        .await?;
    }
    Ok(Accepted::New(receipts))
}

async fn append_item(
    conn: &mut AnyConnection,
    item: &Inbound,
    meta: &RequestMeta,
) -> Result<Receipt, StoreError> {
    let id = new_id();
    let fields = Value::Object(item.fields.clone()).to_string();
    let inserted: Option<String> = sqlx::query_scalar(
        "INSERT INTO inbox (id, source, external_id, received_at, fields, raw, request_id, ip, \
         user_agent, status, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10) \
         ON CONFLICT (source, external_id) DO NOTHING RETURNING id",
    )
    .bind(&id)
    .bind(&item.source)
    .bind(&item.external_id)
    .bind(format_timestamp(item.received_at))
    .bind(fields)
    .bind(item.raw.clone())
    .bind(&meta.request_id)
    .bind(&meta.ip)
    .bind(&meta.user_agent)
    .bind(now_timestamp())
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(id) = inserted {
        return Ok(Receipt {
            id,
            external_id: item.external_id.clone(),
            duplicate: false,
        });
    }
    let first: String =
        sqlx::query_scalar("SELECT id FROM inbox WHERE source = $1 AND external_id = $2")
            .bind(&item.source)
            .bind(&item.external_id)
            .fetch_one(&mut *conn)
            .await?;
    Ok(Receipt {
        id: first,
        external_id: item.external_id.clone(),
        duplicate: true,
    })
}

/// Marks a claimed row done, with what it became, inside the caller's transaction.
pub async fn mark_done(
    conn: &mut AnyConnection,
    id: &str,
    result: &Value,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE inbox SET status = 'done', error = NULL, result = $1, updated_at = $2 WHERE id = $3",
    )
    .bind(result.to_string())
    .bind(now_timestamp())
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn mark_failed(conn: &mut AnyConnection, id: &str, error: &str) -> Result<(), StoreError> {
    sqlx::query("UPDATE inbox SET status = 'failed', error = $1, updated_at = $2 WHERE id = $3")
        .bind(error)
        .bind(now_timestamp())
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
