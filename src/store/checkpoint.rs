//! SQLite's WAL checkpoints on a connection of their own, off the writer's path.
//!
//! By default the connection that commits past `wal_autocheckpoint` pages copies the
//! WAL back into the database file inside its `COMMIT`, while the next batch waits: at a
//! million leads that copying was a sixth of the writer thread's time. Here every commit
//! nudges a task that runs `PRAGMA wal_checkpoint(PASSIVE)` on its own connection (its
//! own sqlx thread, so the other core), which copies committed frames while the writer
//! goes on appending. A passive checkpoint never blocks the writer nor waits for it.
//!
//! The writers keep a high `wal_autocheckpoint` as the bound: a writer-side checkpoint
//! finds the frames already copied, and only it (nothing appending meanwhile) lets the
//! WAL start over from its beginning, so the file stays near that size.

use std::time::Duration;

use sqlx::{AnyConnection, Connection, Executor};
use tokio::sync::mpsc;

/// WAL pages (4 KiB) after which a committing writer checkpoints itself: the bound on
/// the WAL file when the checkpointer falls behind, and when the WAL starts over.
pub(super) const WRITER_CHECKPOINT_PAGES: u32 = 16_384;

/// Commits arriving within this pause share one checkpoint.
const PAUSE: Duration = Duration::from_millis(100);

/// Wakes the checkpointing task; it ends when the last store handle is dropped.
#[derive(Clone)]
pub(super) struct Checkpointer {
    wake: mpsc::Sender<()>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `url`; `None` for an in-memory database,
    /// which has no WAL.
    pub(super) fn spawn(url: &str) -> Option<Self> {
        if url.contains(":memory:") || url.contains("mode=memory") {
            return None;
        }
        let (wake, woken) = mpsc::channel(1);
        tokio::spawn(run(url.to_owned(), woken));
        Some(Self { wake })
    }

    /// After a commit: a checkpoint is due (one already asked for covers it).
    pub(super) fn nudge(&self) {
        let _ = self.wake.try_send(());
    }
}

async fn run(url: String, mut woken: mpsc::Receiver<()>) {
    let mut conn: Option<AnyConnection> = None;
    while woken.recv().await.is_some() {
        tokio::time::sleep(PAUSE).await;
        // Nudges from the commits during the pause are this checkpoint's too.
        while woken.try_recv().is_ok() {}
        if let Err(error) = checkpoint(&mut conn, &url).await {
            // The writers' own checkpoints still bound the WAL; try again next time.
            tracing::warn!(%error, "WAL checkpoint failed");
            conn = None;
        }
    }
    if let Some(conn) = conn {
        let _ = conn.close().await;
    }
}

async fn checkpoint(conn: &mut Option<AnyConnection>, url: &str) -> Result<(), sqlx::Error> {
    let conn = match conn {
        Some(conn) => conn,
        None => conn.insert(AnyConnection::connect(url).await?),
    };
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").await?;
    Ok(())
}
