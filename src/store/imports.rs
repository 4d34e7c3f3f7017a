//! Spreadsheet imports: the `imports` row per file, read-time row errors, and progress:
//! the import's rows are inbox rows of source `import:<id>`, counted by outcome on the
//! import's row as the pipeline settles them.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use utoipa::ToSchema;

use super::inbox::OPEN_ROWS;
use super::write::{Placeholders, new_id, statement_chunks, values_clause};
use super::{Store, StoreError};
use crate::domain::value::now_timestamp;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ImportRow {
    pub id: String,
    pub file_name: String,
    pub content_sha256: String,
    pub sheet: Option<String>,
    /// The per-import column choices (header → field or `ignore`) as JSON text.
    pub mapping: Option<String>,
    /// `queued`, `reading`, `done`, `failed` or `undone`.
    pub status: String,
    pub rows_read: i64,
    pub rows_accepted: i64,
    pub rows_rejected_at_read: i64,
    pub error: Option<String>,
    pub created_by: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

pub struct NewImport<'a> {
    pub file_name: &'a str,
    pub content_sha256: &'a str,
    pub sheet: Option<&'a str>,
    pub mapping: Option<&'a str>,
    pub created_by: &'a str,
}

/// A row refused while reading (or, in listings, by the pipeline).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct RowError {
    pub row: i64,
    pub column: Option<String>,
    pub reason: String,
}

/// How the inbox rows of one import stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct ImportProcessing {
    pub pending: i64,
    pub created: i64,
    pub merged: i64,
    pub review: i64,
    pub failed: i64,
}

impl ImportProcessing {
    pub fn processed(&self) -> i64 {
        self.created + self.merged + self.review + self.failed
    }
}

const COLUMNS: &str = "id, file_name, content_sha256, sheet, mapping, status, rows_read, \
                       rows_accepted, rows_rejected_at_read, error, created_by, created_at, updated_at";

fn decode(row: &AnyRow) -> Result<ImportRow, StoreError> {
    Ok(ImportRow {
        id: row.try_get("id")?,
        file_name: row.try_get("file_name")?,
        content_sha256: row.try_get("content_sha256")?,
        sheet: row.try_get("sheet")?,
        mapping: row.try_get("mapping")?,
        status: row.try_get("status")?,
        rows_read: row.try_get("rows_read")?,
        rows_accepted: row.try_get("rows_accepted")?,
        rows_rejected_at_read: row.try_get("rows_rejected_at_read")?,
        error: row.try_get("error")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// The inbox source of an import's rows.
pub fn import_source(id: &str) -> String {
    format!("import:{id}")
}

/// The import an inbox source belongs to, if it is an import's.
pub fn import_of_source(source: &str) -> Option<&str> {
    source.strip_prefix("import:")
}

/// Outcomes of settled rows, by import, to add to the imports' counters.
#[derive(Debug, Default)]
pub struct ImportTally(BTreeMap<String, ImportProcessing>);

impl ImportTally {
    /// Counts a row of `source` done with the pipeline's `result` (nothing when the row
    /// is not an import's).
    pub fn count_done(&mut self, source: &str, result: &Value) {
        if let Some(counts) = self.counts_of(source) {
            match result.get("action").and_then(Value::as_str) {
                Some("merged") => counts.merged += 1,
                Some("review") => counts.review += 1,
                _ => counts.created += 1,
            }
        }
    }

    /// Counts a failed row of `source`.
    pub fn count_failed(&mut self, source: &str) {
        if let Some(counts) = self.counts_of(source) {
            counts.failed += 1;
        }
    }

    fn counts_of(&mut self, source: &str) -> Option<&mut ImportProcessing> {
        let import = import_of_source(source)?;
        // A batch's rows are mostly of one import: its id is copied once, not per row.
        if !self.0.contains_key(import) {
            self.0
                .insert(import.to_owned(), ImportProcessing::default());
        }
        self.0.get_mut(import)
    }

    /// Adds the counts to the imports' rows, inside the transaction that settles the rows.
    pub async fn add_to(&self, conn: &mut AnyConnection) -> Result<(), StoreError> {
        for (import, counts) in &self.0 {
            sqlx::query(
                "UPDATE imports SET rows_created = rows_created + $1, \
                 rows_merged = rows_merged + $2, rows_review = rows_review + $3, \
                 rows_failed = rows_failed + $4 WHERE id = $5",
            )
            .bind(counts.created)
            .bind(counts.merged)
            .bind(counts.review)
            .bind(counts.failed)
            .bind(import.as_str())
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

impl Store {
    /// Creates the import, or answers the one already made from the same content
    /// (`false`). An earlier attempt that failed before accepting any row is started
    /// afresh with the new sheet and mapping.
    pub async fn create_import(
        &self,
        new: &NewImport<'_>,
    ) -> Result<(ImportRow, bool), StoreError> {
        let now = now_timestamp();
        let id = new_id();
        let inserted = sqlx::query(
            "INSERT INTO imports (id, file_name, content_sha256, sheet, mapping, status, \
             created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, $7) \
             ON CONFLICT (content_sha256) DO NOTHING",
        )
        .bind(&id)
        .bind(new.file_name)
        .bind(new.content_sha256)
        .bind(new.sheet)
        .bind(new.mapping)
        .bind(new.created_by)
        .bind(&now)
        .execute(self.pool())
        .await?;
        if inserted.rows_affected() == 1 {
            let row = self
                .import(&id)
                .await?
                .ok_or_else(|| StoreError::Conflict(format!("import {id} vanished")))?;
            return Ok((row, true));
        }
        let restarted = sqlx::query(
            "UPDATE imports SET status = 'queued', file_name = $1, sheet = $2, mapping = $3, \
             error = NULL, rows_read = 0, rows_rejected_at_read = 0, created_by = $4, updated_at = $5 \
             WHERE content_sha256 = $6 AND status = 'failed' AND rows_accepted = 0",
        )
        .bind(new.file_name)
        .bind(new.sheet)
        .bind(new.mapping)
        .bind(new.created_by)
        .bind(&now)
        .bind(new.content_sha256)
        .execute(self.pool())
        .await?;
        let sql = format!("SELECT {COLUMNS} FROM imports WHERE content_sha256 = $1");
        let row = sqlx::query(&sql)
            .bind(new.content_sha256)
            .fetch_one(self.pool())
            .await?;
        let row = decode(&row)?;
        if restarted.rows_affected() == 1 {
            sqlx::query("DELETE FROM import_row_errors WHERE import_id = $1")
                .bind(&row.id)
                .execute(self.pool())
                .await?;
        }
        Ok((row, restarted.rows_affected() == 1))
    }

    pub async fn import(&self, id: &str) -> Result<Option<ImportRow>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM imports WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(decode).transpose()
    }

    /// The latest imports, newest first.
    pub async fn list_imports(&self, limit: i64) -> Result<Vec<ImportRow>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM imports ORDER BY created_at DESC, id DESC LIMIT $1");
        let rows = sqlx::query(&sql).bind(limit).fetch_all(self.pool()).await?;
        rows.iter().map(decode).collect()
    }

    pub async fn set_import_status(
        &self,
        id: &str,
        status: &str,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE imports SET status = $1, error = $2, updated_at = $3 WHERE id = $4")
            .bind(status)
            .bind(error)
            .bind(now_timestamp())
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Records reading progress: counts so far, and the rows refused in this batch.
    pub async fn record_import_progress(
        &self,
        id: &str,
        rows_read: i64,
        rows_accepted: i64,
        rejected: &[RowError],
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let placeholders = Placeholders::of(&tx);
        for chunk in statement_chunks(rejected, 4) {
            let sql = format!(
                "INSERT INTO import_row_errors (import_id, row_number, column_name, reason) VALUES {}",
                values_clause(placeholders, chunk.len(), 4)
            );
            let mut query = sqlx::query(&sql);
            for error in chunk {
                query = query
                    .bind(id)
                    .bind(error.row)
                    .bind(error.column.as_deref())
                    .bind(error.reason.as_str());
            }
            query.execute(&mut *tx).await?;
        }
        sqlx::query(
            "UPDATE imports SET rows_read = $1, rows_accepted = $2, \
             rows_rejected_at_read = (SELECT COUNT(DISTINCT row_number) FROM import_row_errors WHERE import_id = $3), \
             updated_at = $4 WHERE id = $3",
        )
        .bind(rows_read)
        .bind(rows_accepted)
        .bind(id)
        .bind(now_timestamp())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether any of the import's rows still waits for the pipeline: one step through
    /// the open rows' index, where counting them reads every row of the import.
    pub async fn import_has_open_rows(&self, id: &str) -> Result<bool, StoreError> {
        let sql = format!("SELECT seq FROM inbox WHERE {OPEN_ROWS} AND source = $1 LIMIT 1");
        let open: Option<i64> = sqlx::query_scalar(&sql)
            .bind(import_source(id))
            .fetch_optional(self.pool())
            .await?;
        Ok(open.is_some())
    }

    /// The import's rows by what the pipeline made of them, from the counters kept as
    /// rows settle; `pending` is what was accepted and has not settled yet.
    pub async fn import_processing(&self, id: &str) -> Result<ImportProcessing, StoreError> {
        let row = sqlx::query(
            "SELECT rows_accepted, rows_created, rows_merged, rows_review, rows_failed \
             FROM imports WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else {
            return Ok(ImportProcessing::default());
        };
        let mut counts = ImportProcessing {
            pending: 0,
            created: row.try_get("rows_created")?,
            merged: row.try_get("rows_merged")?,
            review: row.try_get("rows_review")?,
            failed: row.try_get("rows_failed")?,
        };
        // The worker may settle rows before their batch's `rows_accepted` is recorded.
        let accepted: i64 = row.try_get("rows_accepted")?;
        counts.pending = (accepted - counts.processed()).max(0);
        Ok(counts)
    }

    /// Rows refused at read time and rows the pipeline failed, by row number, up to
    /// `limit` (`None`: all).
    pub async fn import_row_errors(
        &self,
        id: &str,
        limit: Option<i64>,
    ) -> Result<Vec<RowError>, StoreError> {
        let limit = limit.unwrap_or(i64::MAX);
        let read = sqlx::query(
            "SELECT row_number, column_name, reason FROM import_row_errors \
             WHERE import_id = $1 ORDER BY row_number LIMIT $2",
        )
        .bind(id)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let failed = sqlx::query(
            "SELECT external_id, error FROM inbox WHERE source = $1 AND status = 'failed' \
             ORDER BY seq LIMIT $2",
        )
        .bind(import_source(id))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        let mut errors = Vec::with_capacity(read.len() + failed.len());
        for row in read {
            errors.push(RowError {
                row: row.try_get("row_number")?,
                column: row.try_get("column_name")?,
                reason: row.try_get("reason")?,
            });
        }
        for row in failed {
            let external_id: Option<String> = row.try_get("external_id")?;
            let error: Option<String> = row.try_get("error")?;
            errors.push(RowError {
                row: external_id
                    .as_deref()
                    .and_then(|e| e.strip_prefix("row:"))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0),
                column: None,
                reason: error.unwrap_or_else(|| "failed in the pipeline".into()),
            });
        }
        errors.sort_by_key(|e| e.row);
        errors.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(errors)
    }
}
