//! Reads of the outbox: the committed record changes the search index follows.

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

    /// Committed outbox rows after `seq`.
    pub async fn outbox_count_after(&self, seq: i64) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE seq > $1")
                .bind(seq)
                .fetch_one(self.pool())
                .await?,
        )
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
