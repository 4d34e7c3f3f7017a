//! The outbox: the committed record changes the search index follows, who follows it
//! (`outbox_consumers`), and pruning of the rows every live consumer has applied.
//!
//! Outbox rows are a queue, not a record of history (that is `audit_log`, which is never
//! pruned): a row only names a record the followers must read again.

use sqlx::Row;

use super::{Backend, Store, StoreError};

/// One committed change: which record, in commit-sequence order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    pub seq: i64,
    pub record_kind: String,
    pub record_id: String,
    pub op: String,
}

impl Store {
    /// Outbox rows after `seq`, oldest first.
    pub async fn outbox_after(&self, seq: i64, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, record_kind, record_id, op FROM outbox WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(seq)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(OutboxRow {
                    seq: row.try_get(0)?,
                    record_kind: row.try_get(1)?,
                    record_id: row.try_get(2)?,
                    op: row.try_get(3)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::from)
    }

    /// The newest outbox seq, 0 when there is none.
    pub async fn outbox_max_seq(&self) -> Result<i64, StoreError> {
        let max: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM outbox")
            .fetch_one(self.pool())
            .await?;
        Ok(max.unwrap_or(0))
    }

    /// Committed changes after `seq`: outbox rows, and the seqs pruned above it (an index
    /// that missed them is behind until it is rebuilt).
    pub async fn outbox_count_after(&self, seq: i64) -> Result<i64, StoreError> {
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE seq > $1")
            .bind(seq)
            .fetch_one(self.pool())
            .await?;
        let missed = (self.outbox_pruned_through().await? - seq).max(0);
        Ok(rows + missed)
    }

    /// Records how far consumer `name` has applied the outbox, and answers the highest seq
    /// pruned so far: when it is above `checkpoint`, rows this consumer had not applied
    /// are gone (it was not seen for longer than pruning waits) and it must rebuild.
    ///
    /// Serialised with [`Store::outbox_prune`] on the `outbox_pruned` row, so a prune
    /// either sees this registration or has finished before the answer is read.
    pub async fn outbox_report(
        &self,
        name: &str,
        checkpoint: i64,
        now_unix: i64,
    ) -> Result<i64, StoreError> {
        let mut tx = self.begin_write().await?;
        let through = lock_pruned(&mut tx).await?;
        sqlx::query(
            "INSERT INTO outbox_consumers (name, checkpoint, seen_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET checkpoint = excluded.checkpoint, \
             seen_at = excluded.seen_at",
        )
        .bind(name)
        .bind(checkpoint)
        .bind(now_unix)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(through)
    }

    /// Forgets a consumer that will not come back under this name (a process that
    /// followed a shared index and is stopping).
    pub async fn outbox_forget(&self, name: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM outbox_consumers WHERE name = $1")
            .bind(name)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The highest outbox seq pruned so far (0 before the first prune).
    pub async fn outbox_pruned_through(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT through FROM outbox_pruned WHERE id = 1")
                .fetch_optional(self.pool())
                .await?
                .unwrap_or(0),
        )
    }

    /// Deletes outbox rows every consumer seen since `seen_since_unix` has applied, up to
    /// `batch` rows per transaction and `max_batches` transactions (so the one SQLite
    /// writer is never held long); answers how many rows went. Nothing goes while no
    /// consumer has reported: an outbox nobody follows yet is kept for whoever comes.
    pub async fn outbox_prune(
        &self,
        seen_since_unix: i64,
        batch: i64,
        max_batches: usize,
    ) -> Result<u64, StoreError> {
        let mut deleted = 0u64;
        for _ in 0..max_batches {
            let mut tx = self.begin_write().await?;
            let through = lock_pruned(&mut tx).await?;
            let applied: Option<i64> = sqlx::query_scalar(
                "SELECT MIN(checkpoint) FROM outbox_consumers WHERE seen_at >= $1",
            )
            .bind(seen_since_unix)
            .fetch_one(&mut *tx)
            .await?;
            // Never past the newest row: the mark says which seqs are gone, and seqs not
            // yet taken are not.
            let newest: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM outbox")
                .fetch_one(&mut *tx)
                .await?;
            let Some(applied) = applied
                .zip(newest)
                .map(|(applied, newest)| applied.min(newest))
                .filter(|seq| *seq > through)
            else {
                tx.commit().await?;
                break;
            };
            let target = applied.min(through.saturating_add(batch.max(1)));
            // No lower bound: a row that committed late below the mark (PostgreSQL takes a
            // seq before commit) goes with the next batch instead of staying forever.
            let done = sqlx::query("DELETE FROM outbox WHERE seq <= $1")
                .bind(target)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            sqlx::query("UPDATE outbox_pruned SET through = $1 WHERE id = 1")
                .bind(target)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            deleted += done;
            if target == applied {
                break;
            }
        }
        Ok(deleted)
    }

    /// The database's clock in seconds since the epoch (PostgreSQL), to compare with
    /// transaction start times; SQLite has no concurrent writers and answers 0.
    pub async fn outbox_clock(&self) -> Result<f64, StoreError> {
        match self.backend() {
            Backend::Sqlite => Ok(0.0),
            Backend::Postgres => Ok(sqlx::query_scalar(
                "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)",
            )
            .fetch_one(self.pool())
            .await?),
        }
    }

    /// True when a transaction that began before `clock` (from [`Store::outbox_clock`]) may
    /// still commit an outbox row: on PostgreSQL, one is still open; on SQLite never, as
    /// its single writer commits in seq order.
    pub async fn writers_open_since(&self, clock: f64) -> Result<bool, StoreError> {
        match self.backend() {
            Backend::Sqlite => Ok(false),
            Backend::Postgres => {
                let open: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
                     AND xact_start IS NOT NULL \
                     AND CAST(EXTRACT(EPOCH FROM xact_start) AS DOUBLE PRECISION) < $1",
                )
                .bind(clock)
                .fetch_one(self.pool())
                .await?;
                Ok(open > 0)
            }
        }
    }
}

/// Takes the `outbox_pruned` row for the rest of the transaction (PostgreSQL: a row
/// lock; SQLite: the transaction already holds the one write lock) and reads it.
async fn lock_pruned(tx: &mut super::WriteTx) -> Result<i64, StoreError> {
    let through: Option<i64> = sqlx::query_scalar(
        "UPDATE outbox_pruned SET through = through WHERE id = 1 RETURNING through",
    )
    .fetch_optional(&mut **tx)
    .await?;
    through.ok_or_else(|| StoreError::Migrate("outbox_pruned has no row".into()))
}
