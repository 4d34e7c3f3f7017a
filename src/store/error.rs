use crate::domain::{InvalidValue, RecordKind};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is too busy to answer now; retrying may work.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("{kind} {id} not found")]
    NotFound { kind: RecordKind, id: String },
    #[error("{kind} has no field `{field}`")]
    UnknownField { kind: RecordKind, field: String },
    #[error(transparent)]
    InvalidValue(#[from] InvalidValue),
    #[error("{kind} {id} is at version {actual}, not {expected}")]
    VersionConflict {
        kind: RecordKind,
        id: String,
        expected: i64,
        actual: i64,
    },
    #[error("{0}")]
    Conflict(String),
    #[error("migration failed: {0}")]
    Migrate(String),
    #[error("database error: {0}")]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if is_unavailable(&error) {
            StoreError::Unavailable(error.to_string())
        } else {
            StoreError::Database(error)
        }
    }
}

/// Errors that say "not now" rather than "never": the caller answers 503.
fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // SQLite: BUSY (5), LOCKED (6), and their extended codes; IOERR (10); FULL (13).
            // PostgreSQL: connection exceptions (08…), shutdown (57P…), no database (3D000).
            matches!(code.as_ref(), "5" | "6" | "10" | "13" | "3D000")
                || code.starts_with("08")
                || code.starts_with("57P")
                || code
                    .parse::<i64>()
                    .is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 10 | 13))
        }
        _ => false,
    }
}
