//! The durable inbox: accepted inbound records, their processing state and lineage.

use std::collections::{HashMap, HashSet};

use connectors::Inbound;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use utoipa::ToSchema;

use super::imports::ImportTally;
use super::write::{
    Placeholders, RequestMeta, new_id, rows_per_statement, statement_chunks, values_clause_with,
};
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

/// One channel's inbox rows by state. Spreadsheet imports (`import:<id>`) count as one
/// channel, `import`.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ChannelDepth {
    pub channel: String,
    pub pending: i64,
    pub processing: i64,
    pub failed: i64,
    pub done: i64,
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

/// The condition of the `inbox_open_idx` partial index, word for word: SQLite only uses a
/// partial index whose WHERE terms appear in the query's own.
pub(super) const OPEN_ROWS: &str = "status IN ('pending', 'processing')";

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
        let answers = append_all(&mut tx, submissions).await?;
        tx.commit().await?;
        Ok(answers)
    }

    /// Moves up to `limit` pending rows to `processing` and returns them, oldest first.
    pub async fn claim_inbox(&self, limit: usize) -> Result<Vec<InboxRow>, StoreError> {
        let lock = match self.backend() {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        };
        // Without OPEN_ROWS every claim scanned the done rows from the start of the inbox.
        let sql = format!(
            "UPDATE inbox SET status = 'processing', attempts = attempts + 1, updated_at = $1 \
             WHERE seq IN (SELECT seq FROM inbox WHERE {OPEN_ROWS} AND status = 'pending' \
             ORDER BY seq LIMIT $2{lock}) \
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
        let sql = format!(
            "UPDATE inbox SET status = 'pending', updated_at = $1 \
             WHERE {OPEN_ROWS} AND status = 'processing'"
        );
        let done = sqlx::query(&sql)
            .bind(now_timestamp())
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    /// Claimed rows back to `pending`: a worker that cannot process what it claimed.
    pub async fn release_claimed(&self, ids: &[&str]) -> Result<(), StoreError> {
        // A rare path: numbered parameters on both backends, a few hundred at a time.
        for chunk in ids.chunks(500) {
            let sql = format!(
                "UPDATE inbox SET status = 'pending', updated_at = ${} \
                 WHERE {OPEN_ROWS} AND status = 'processing' AND id IN ({})",
                chunk.len() + 1,
                Placeholders::Numbered.list(chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(*id);
            }
            query.bind(now_timestamp()).execute(self.pool()).await?;
        }
        Ok(())
    }

    pub async fn mark_inbox_failed(&self, row: &InboxRow, error: &str) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        mark_failed(&mut tx, &row.id, error).await?;
        let mut tally = ImportTally::default();
        tally.count_failed(&row.source);
        tally.add_to(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Puts a failed row back in the queue. Answers false when it was not failed.
    pub async fn retry_inbox(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        // An import's row leaves its failed count as it goes back in the queue.
        sqlx::query(
            "UPDATE imports SET rows_failed = rows_failed - 1 \
             WHERE 'import:' || id = (SELECT source FROM inbox WHERE id = $1 AND status = 'failed')",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let done = sqlx::query(
            "UPDATE inbox SET status = 'pending', updated_at = $1 WHERE id = $2 AND status = 'failed'",
        )
        .bind(now_timestamp())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn retry_all_failed(&self) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        // Every failed row goes back in the queue, imports' rows with them.
        sqlx::query("UPDATE imports SET rows_failed = 0 WHERE rows_failed > 0")
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query(
            "UPDATE inbox SET status = 'pending', updated_at = $1 WHERE status = 'failed'",
        )
        .bind(now_timestamp())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
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

    /// Several inbox rows by id (those that exist), for answering on a whole batch.
    pub async fn inbox_rows_by_id(&self, ids: &[String]) -> Result<Vec<InboxRow>, StoreError> {
        let mut rows = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(rows_per_statement(1)) {
            let params: Vec<String> = (1..=chunk.len()).map(|n| format!("${n}")).collect();
            let sql = format!(
                "SELECT {ROW_COLUMNS} FROM inbox WHERE id IN ({})",
                params.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id.as_str());
            }
            for row in query.fetch_all(self.pool()).await? {
                rows.push(decode_row(&row)?);
            }
        }
        Ok(rows)
    }

    pub async fn inbox_rows(&self, status: &str, limit: i64) -> Result<Vec<InboxRow>, StoreError> {
        // The partial indexes' own terms, so a listing of the few open or failed rows
        // among a million done ones reads only those.
        let index_terms = match status {
            "pending" | "processing" => OPEN_ROWS,
            "failed" => "status = 'failed'",
            _ => "TRUE",
        };
        let sql = format!(
            "SELECT {ROW_COLUMNS} FROM inbox WHERE {index_terms} AND status = $1 \
             ORDER BY seq LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(status)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(decode_row).collect()
    }

    /// Inbox rows per channel and state, channels by name.
    pub async fn inbox_channels(&self) -> Result<Vec<ChannelDepth>, StoreError> {
        let rows = sqlx::query(
            "SELECT CASE WHEN source LIKE 'import:%' THEN 'import' ELSE source END AS channel, \
             status, COUNT(*) AS n FROM inbox GROUP BY 1, 2",
        )
        .fetch_all(self.pool())
        .await?;
        let mut channels: std::collections::BTreeMap<String, ChannelDepth> = Default::default();
        for row in rows {
            let channel: String = row.try_get("channel")?;
            let status: String = row.try_get("status")?;
            let n: i64 = row.try_get("n")?;
            let entry = channels
                .entry(channel.clone())
                .or_insert_with(|| ChannelDepth {
                    channel,
                    ..ChannelDepth::default()
                });
            match status.as_str() {
                "pending" => entry.pending += n,
                "processing" => entry.processing += n,
                "failed" => entry.failed += n,
                "done" => entry.done += n,
                _ => {}
            }
        }
        Ok(channels.into_values().collect())
    }

    /// Rows by state, read from the open and failed rows' partial indexes and a count of
    /// the table (SQLite counts it on its smallest index): grouping every row by status
    /// read the whole inbox, payloads included — seconds at a million rows, on every
    /// `/readyz`. One statement, so one snapshot: a row arriving or settling between
    /// separate reads would be counted as done.
    pub async fn inbox_depth(&self) -> Result<InboxDepth, StoreError> {
        let sql = format!(
            "SELECT \
             (SELECT COUNT(*) FROM inbox WHERE {OPEN_ROWS} AND status = 'pending') AS pending, \
             (SELECT COUNT(*) FROM inbox WHERE {OPEN_ROWS} AND status = 'processing') AS processing, \
             (SELECT COUNT(*) FROM inbox WHERE status = 'failed') AS failed, \
             (SELECT COUNT(*) FROM inbox) AS total"
        );
        let row = sqlx::query(&sql).fetch_one(self.pool()).await?;
        let (pending, processing, failed, total): (i64, i64, i64, i64) = (
            row.try_get("pending")?,
            row.try_get("processing")?,
            row.try_get("failed")?,
            row.try_get("total")?,
        );
        Ok(InboxDepth {
            pending,
            processing,
            failed,
            done: total - pending - processing - failed,
        })
    }
}

/// How a submission's Idempotency-Key resolves before anything is inserted.
enum KeyState {
    Fresh,
    Answered(Accepted),
    /// The same key came earlier in this very batch, from submission `.0`.
    SameBatch(usize),
}

async fn append_all(
    conn: &mut AnyConnection,
    submissions: &[Submission],
) -> Result<Vec<Accepted>, StoreError> {
    let mut states = Vec::with_capacity(submissions.len());
    let mut first_of_key: HashMap<(&str, &str), usize> = HashMap::new();
    for (index, submission) in submissions.iter().enumerate() {
        let state = match &submission.idempotency {
            None => KeyState::Fresh,
            Some(key) => match first_of_key.get(&(key.scope.as_str(), key.key.as_str())) {
                Some(first) => KeyState::SameBatch(*first),
                None => {
                    first_of_key.insert((key.scope.as_str(), key.key.as_str()), index);
                    stored_answer(conn, key).await?
                }
            },
        };
        states.push(state);
    }

    // Every item of every fresh submission, in one multi-row insert per chunk.
    let items: Vec<(usize, &Inbound, String)> = submissions
        .iter()
        .enumerate()
        .filter(|(index, _)| matches!(states[*index], KeyState::Fresh))
        .flat_map(|(index, submission)| {
            submission
                .items
                .iter()
                .map(move |item| (index, item, new_id()))
        })
        .collect();
    let inserted = insert_items(conn, submissions, &items).await?;

    let mut receipts: Vec<Vec<Receipt>> = vec![Vec::new(); submissions.len()];
    for (index, item, id) in &items {
        let receipt = if inserted.contains(id.as_str()) {
            Receipt {
                id: id.clone(),
                external_id: item.external_id.clone(),
                duplicate: false,
            }
        } else {
            let first: String =
                sqlx::query_scalar("SELECT id FROM inbox WHERE source = $1 AND external_id = $2")
                    .bind(&item.source)
                    .bind(&item.external_id)
                    .fetch_one(&mut *conn)
                    .await?;
            Receipt {
                id: first,
                external_id: item.external_id.clone(),
                duplicate: true,
            }
        };
        receipts[*index].push(receipt);
    }

    let mut answers = Vec::with_capacity(submissions.len());
    for (index, state) in states.into_iter().enumerate() {
        let answer = match state {
            KeyState::Answered(answer) => answer,
            KeyState::Fresh => {
                if let Some(key) = &submissions[index].idempotency {
                    remember_answer(conn, key, &receipts[index]).await?;
                }
                Accepted::New(std::mem::take(&mut receipts[index]))
            }
            KeyState::SameBatch(first) => {
                let same_body = submissions[first]
                    .idempotency
                    .as_ref()
                    .map(|k| &k.request_sha256)
                    == submissions[index]
                        .idempotency
                        .as_ref()
                        .map(|k| &k.request_sha256);
                match (&answers[first], same_body) {
                    (Accepted::New(first) | Accepted::Replayed(first), true) => {
                        Accepted::Replayed(first.clone())
                    }
                    (Accepted::KeyReused, _) | (_, false) => Accepted::KeyReused,
                }
            }
        };
        answers.push(answer);
    }
    Ok(answers)
}

async fn stored_answer(
    conn: &mut AnyConnection,
    key: &IdempotencyKey,
) -> Result<KeyState, StoreError> {
    let seen = sqlx::query(
        "SELECT request_sha256, response FROM idempotency_keys WHERE scope = $1 AND key = $2",
    )
    .bind(&key.scope)
    .bind(&key.key)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(seen) = seen else {
        return Ok(KeyState::Fresh);
    };
    let hash: String = seen.try_get("request_sha256")?;
    if hash != key.request_sha256 {
        return Ok(KeyState::Answered(Accepted::KeyReused));
    }
    let response: String = seen.try_get("response")?;
    let receipts = serde_json::from_str(&response)
        .map_err(|e| StoreError::Conflict(format!("stored answer unreadable: {e}")))?;
    Ok(KeyState::Answered(Accepted::Replayed(receipts)))
}

async fn remember_answer(
    conn: &mut AnyConnection,
    key: &IdempotencyKey,
    receipts: &[Receipt],
) -> Result<(), StoreError> {
    let response = serde_json::to_string(receipts)
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
    Ok(())
}

/// Inserts the items, skipping `(source, external_id)` pairs already present (or earlier
/// in the same statement); answers the ids that were inserted.
async fn insert_items(
    conn: &mut AnyConnection,
    submissions: &[Submission],
    items: &[(usize, &Inbound, String)],
) -> Result<HashSet<String>, StoreError> {
    const COLUMNS: usize = 11;
    let now = now_timestamp();
    let mut inserted = HashSet::with_capacity(items.len());
    for chunk in statement_chunks(items, COLUMNS) {
        let values =
            values_clause_with(Placeholders::of(conn), chunk.len(), COLUMNS, ", 'pending'");
        let sql = format!(
            "INSERT INTO inbox (id, source, external_id, received_at, fields, raw, request_id, \
             ip, user_agent, updated_at, attempts, status) VALUES {values} \
             ON CONFLICT (source, external_id) DO NOTHING RETURNING id"
        );
        let mut query = sqlx::query_scalar::<_, String>(&sql);
        for (index, item, id) in chunk {
            let meta = &submissions[*index].meta;
            query = query
                .bind(id.as_str())
                .bind(item.source.as_str())
                .bind(item.external_id.as_deref())
                .bind(format_timestamp(item.received_at))
                .bind(Value::Object(item.fields.clone()).to_string())
                .bind(item.raw.clone())
                .bind(meta.request_id.as_deref())
                .bind(meta.ip.as_deref())
                .bind(meta.user_agent.as_deref())
                .bind(now.as_str())
                .bind(0_i64);
        }
        inserted.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(inserted)
}

/// Marks claimed rows done, each with what it became, inside the caller's transaction.
pub async fn mark_done(
    conn: &mut AnyConnection,
    results: &[(String, Value)],
) -> Result<(), StoreError> {
    for chunk in statement_chunks(results, 2) {
        let mut cases = String::new();
        let mut ids = Vec::with_capacity(chunk.len());
        for n in 0..chunk.len() {
            let (id, result) = (2 * n + 2, 2 * n + 3);
            cases.push_str(&format!(" WHEN ${id} THEN ${result}"));
            ids.push(format!("${id}"));
        }
        let sql = format!(
            "UPDATE inbox SET status = 'done', error = NULL, updated_at = $1, \
             result = CASE id{cases} END WHERE id IN ({})",
            ids.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(now_timestamp());
        for (id, result) in chunk {
            query = query.bind(id.as_str()).bind(result.to_string());
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

pub async fn mark_failed(
    conn: &mut AnyConnection,
    id: &str,
    error: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE inbox SET status = 'failed', error = $1, updated_at = $2 WHERE id = $3")
        .bind(error)
        .bind(now_timestamp())
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// An inbound record delivered by an external queue, with the id the gateway gave it.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub id: String,
    pub inbound: Inbound,
    pub meta: RequestMeta,
    /// How many times the queue has delivered it (this delivery included).
    pub attempts: i64,
}

impl Delivered {
    /// The row the worker processes, as if it had been claimed from the inbox.
    pub fn to_row(&self) -> InboxRow {
        let now = now_timestamp();
        InboxRow {
            id: self.id.clone(),
            source: self.inbound.source.clone(),
            external_id: self.inbound.external_id.clone(),
            received_at: format_timestamp(self.inbound.received_at),
            fields: Value::Object(self.inbound.fields.clone()),
            status: "processing".to_owned(),
            attempts: self.attempts,
            error: None,
            result: Value::Null,
            request_id: self.meta.request_id.clone(),
            updated_at: now,
            meta: self.meta.clone(),
        }
    }
}

/// Writes delivered records into the inbox as `processing`, inside the worker's
/// transaction, and answers the ids that are new. A record already there (same id, or
/// same `(source, external_id)`) was processed by an earlier delivery: it is skipped, so
/// a redelivery writes once.
pub async fn insert_delivered(
    conn: &mut AnyConnection,
    items: &[Delivered],
) -> Result<HashSet<String>, StoreError> {
    const COLUMNS: usize = 11;
    let now = now_timestamp();
    let mut inserted = HashSet::with_capacity(items.len());
    for chunk in statement_chunks(items, COLUMNS) {
        let values = values_clause_with(
            Placeholders::of(conn),
            chunk.len(),
            COLUMNS,
            ", 'processing'",
        );
        let sql = format!(
            "INSERT INTO inbox (id, source, external_id, received_at, fields, raw, request_id, \
             ip, user_agent, updated_at, attempts, status) VALUES {values} \
             ON CONFLICT DO NOTHING RETURNING id"
        );
        let mut query = sqlx::query_scalar::<_, String>(&sql);
        for item in chunk {
            query = query
                .bind(item.id.as_str())
                .bind(item.inbound.source.as_str())
                .bind(item.inbound.external_id.as_deref())
                .bind(format_timestamp(item.inbound.received_at))
                .bind(Value::Object(item.inbound.fields.clone()).to_string())
                .bind(item.inbound.raw.clone())
                .bind(item.meta.request_id.as_deref())
                .bind(item.meta.ip.as_deref())
                .bind(item.meta.user_agent.as_deref())
                .bind(now.as_str())
                .bind(item.attempts);
        }
        inserted.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(inserted)
}

impl Store {
    /// The answer stored for an Idempotency-Key, when the key was used before.
    pub async fn idempotent_answer(
        &self,
        key: &IdempotencyKey,
    ) -> Result<Option<Accepted>, StoreError> {
        let mut conn = self.pool().acquire().await?;
        Ok(match stored_answer(&mut conn, key).await? {
            KeyState::Answered(answer) => Some(answer),
            _ => None,
        })
    }

    /// Remembers the answer to an Idempotency-Key; when a concurrent request with the
    /// same key got there first, answers what that one stored instead.
    pub async fn remember_idempotent(
        &self,
        key: &IdempotencyKey,
        receipts: Vec<Receipt>,
    ) -> Result<Accepted, StoreError> {
        let mut tx = self.begin_write().await?;
        if let KeyState::Answered(answer) = stored_answer(&mut tx, key).await? {
            return Ok(answer);
        }
        let remembered = remember_answer(&mut tx, key, &receipts).await;
        match remembered {
            Ok(()) => {
                tx.commit().await?;
                Ok(Accepted::New(receipts))
            }
            Err(error) => {
                drop(tx);
                self.idempotent_answer(key).await?.ok_or(error)
            }
        }
    }
}
