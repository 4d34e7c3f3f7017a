//! The store: one SQL dialect-neutral code path over SQLite (embedded default) and
//! PostgreSQL, through sqlx's `Any` driver. Queries use `$N` parameters, which both
//! backends accept, and only the column types both share (TEXT, BIGINT, BLOB/BYTEA).

pub mod audit;
mod checkpoint;
mod error;
pub mod imports;
pub mod inbox;
pub mod outbound;
pub mod outbox;
pub mod read;
pub mod tokens;
pub mod users;
pub mod write;

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, OwnedMutexGuard};

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::Migrator;
use sqlx::{AnyConnection, AnyPool, Executor};

pub use error::StoreError;
pub use write::{Change, RequestMeta, WriteContext, Written};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite has one writer at a time. Queueing writers here, in order, instead of in
    /// SQLite's busy handler (which sleeps in growing steps) keeps write latency flat.
    write_lock: Arc<Mutex<()>>,
    /// SQLite's WAL checkpoints, run beside the writer (`None` on PostgreSQL).
    checkpointer: Option<checkpoint::Checkpointer>,
}

/// A write transaction; on SQLite it also holds the process's write turn.
pub struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    _turn: Option<OwnedMutexGuard<()>>,
    checkpointer: Option<checkpoint::Checkpointer>,
}

impl WriteTx {
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await?;
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.nudge();
        }
        Ok(())
    }
}

impl Deref for WriteTx {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

impl Store {
    /// Opens the store; a SQLite file (and its directory) is created when missing.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        if backend == Backend::Sqlite {
            create_sqlite_dir(url)?;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            // A local SQLite file cannot go stale; a network database can.
            .test_before_acquire(backend == Backend::Postgres)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the one writer; synchronous=FULL makes
                        // every commit durable, which group commit keeps affordable.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute("PRAGMA busy_timeout = 5000").await?;
                        // Pages through the OS mapping rather than a read() call each.
                        conn.execute("PRAGMA mmap_size = 1073741824").await?;
                        conn.execute("PRAGMA cache_size = -32000").await?;
                        // A multi-row statement inside a transaction keeps a statement
                        // journal; in memory rather than in a temporary file.
                        conn.execute("PRAGMA temp_store = MEMORY").await?;
                        // Checkpoints run beside the writer (checkpoint.rs); a writer
                        // checkpoints itself only past this bound.
                        conn.execute(
                            format!(
                                "PRAGMA wal_autocheckpoint = {}",
                                checkpoint::WRITER_CHECKPOINT_PAGES
                            )
                            .as_str(),
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await
            .map_err(StoreError::from)?;
        let checkpointer = match backend {
            Backend::Sqlite => checkpoint::Checkpointer::spawn(url),
            Backend::Postgres => None,
        };
        Ok(Self {
            pool,
            backend,
            write_lock: Arc::new(Mutex::new(())),
            checkpointer,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    fn migrator(&self) -> &'static Migrator {
        match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        }
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.migrator()
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Migrate(e.to_string()))?;
        // Rows written before the audit chain existed get their links once.
        let filled = self.backfill_audit_chain().await?;
        if filled > 0 {
            tracing::info!(
                rows = filled,
                "linked earlier audit rows into the hash chain"
            );
        }
        Ok(())
    }

    /// Keeps SQLite's query planner statistics current (`PRAGMA optimize`, as SQLite
    /// advises for long-lived connections); PostgreSQL's autovacuum does this itself.
    pub async fn optimize(&self) -> Result<(), StoreError> {
        if self.backend == Backend::Sqlite {
            sqlx::query("PRAGMA optimize=0x10002")
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// True when the store answers and every embedded migration has been applied.
    pub async fn ready(&self) -> Result<bool, StoreError> {
        let applied: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = $1")
                .bind(true)
                .fetch_one(&self.pool)
                .await
                .or_else(|_| Ok::<i64, sqlx::Error>(0))?;
        Ok(applied as usize >= self.migrator().iter().count())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Starts a transaction that will write. SQLite takes the write lock up front, so a
    /// read-then-write transaction never fails midway on another writer's commit.
    pub async fn begin_write(&self) -> Result<WriteTx, StoreError> {
        match self.backend {
            Backend::Sqlite => {
                let turn = self.write_lock.clone().lock_owned().await;
                let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
                Ok(WriteTx {
                    tx,
                    _turn: Some(turn),
                    checkpointer: self.checkpointer.clone(),
                })
            }
            Backend::Postgres => Ok(WriteTx {
                tx: self.pool.begin().await?,
                _turn: None,
                checkpointer: None,
            }),
        }
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn create_sqlite_dir(url: &str) -> Result<(), StoreError> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(dir) = Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
    }
    Ok(())
}
