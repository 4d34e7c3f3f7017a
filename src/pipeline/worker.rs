//! The embedded worker: claims inbox rows, plans them through the pipeline and commits
//! each batch's records together with the rows' new state, so a row is done exactly when
//! its records exist.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use sqlx::AnyConnection;

use super::{Draft, Pipeline, PipelineError, RowError};
use crate::queue::partition::identity_of;
use crate::store::imports::ImportTally;
use crate::store::inbox::{InboxRow, mark_done, mark_failed};
use crate::store::write::Journal;
use crate::store::{Backend, Store, StoreError};
use crate::telemetry::Metrics;

const IDLE_POLL: Duration = Duration::from_millis(500);

pub struct Worker {
    pub store: Store,
    pub pipeline: Arc<Pipeline>,
    /// Rows claimed per transaction when the queue is short.
    pub batch: usize,
    /// The most rows claimed at once while claims come back full.
    pub batch_max: usize,
    pub appended: Arc<Notify>,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
}

impl Worker {
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(self.run())
    }

    async fn run(self) {
        match self.store.requeue_in_flight().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "requeued inbox rows left in flight"),
            Err(error) => tracing::warn!(%error, "could not requeue in-flight inbox rows"),
        }
        let mut ahead = None;
        let mut claim = self.batch;
        loop {
            match self.drain_once(&mut ahead, &mut claim).await {
                Ok(0) => {}
                Ok(_) if !self.shutdown.is_cancelled() => continue,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "inbox worker pass failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            // A batch claimed ahead is finished first, at a stop too (none is claimed
            // once the stop is asked), so a stopped worker holds no rows.
            if ahead.is_some() {
                continue;
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = self.appended.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
            }
        }
        tracing::info!("inbox worker stopped");
    }

    /// Processes one claimed batch; answers how many rows it took. Before writing it,
    /// claims the next batch into `ahead` and prepares that on the other core meanwhile
    /// (mapping, normalising and preparing for dedup need no store). `claim` is the size
    /// of the next claim, grown while claims come back full.
    async fn drain_once(
        &self,
        ahead: &mut Option<Ahead>,
        claim: &mut usize,
    ) -> Result<usize, StoreError> {
        let (rows, prepared) = match ahead.take() {
            Some(claimed) => {
                let prepared = claimed.prepared.await;
                (claimed.rows, prepared)
            }
            None => {
                let rows: Arc<[InboxRow]> = self.store.claim_inbox(*claim).await?.into();
                *claim = next_claim(self.batch, self.batch_max, *claim, rows.len());
                if rows.is_empty() {
                    return Ok(0);
                }
                let prepared = self.prepare(rows.clone()).await;
                (rows, prepared)
            }
        };
        let prepared = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                // The preparing thread panicked: the rows go back and the pass fails.
                self.release(&rows).await;
                return Err(StoreError::Unavailable(format!(
                    "preparing a batch: {error}"
                )));
            }
        };
        if !self.shutdown.is_cancelled() {
            let claimed = self.store.claim_inbox(*claim).await;
            if let Ok(next) = &claimed {
                *claim = next_claim(self.batch, self.batch_max, *claim, next.len());
            }
            match claimed {
                Ok(next) if next.is_empty() => {}
                Ok(next) => {
                    let next: Arc<[InboxRow]> = next.into();
                    *ahead = Some(Ahead {
                        prepared: Box::pin(self.prepare(next.clone())),
                        rows: next,
                    });
                }
                Err(error) => {
                    self.release(&rows).await;
                    return Err(error);
                }
            }
        }
        let timer = self
            .metrics
            .stage_seconds
            .with_label_values(&["batch"])
            .start_timer();
        let committed = self.commit(&rows, Some(prepared), ahead.as_mut()).await;
        timer.observe_duration();
        match committed {
            Ok(outcomes) => {
                for (row, outcome) in rows.iter().zip(outcomes) {
                    self.record(row, outcome);
                }
            }
            Err(StoreError::Unavailable(why)) => {
                self.release(&rows).await;
                if let Some(Ahead { rows, .. }) = ahead.take() {
                    self.release(&rows).await;
                }
                return Err(StoreError::Unavailable(why));
            }
            // One row broke the batch: isolate it by committing rows one at a time.
            Err(error) => {
                tracing::warn!(%error, "batch commit failed; committing rows one by one");
                for row in rows.iter() {
                    match self.commit(std::slice::from_ref(row), None, None).await {
                        Ok(mut outcome) => self.record(row, outcome.remove(0)),
                        Err(error) => {
                            self.record(row, Err(error.to_string()));
                            self.store
                                .mark_inbox_failed(row, &error.to_string())
                                .await?;
                        }
                    }
                }
            }
        }
        Ok(rows.len())
    }

    /// The rows' drafts, prepared on the blocking pool (which rayon spreads over the cores).
    fn prepare(&self, rows: Arc<[InboxRow]>) -> JoinHandle<Prepared> {
        let pipeline = self.pipeline.clone();
        let metrics = self.metrics.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let prepared = pipeline.prepare_batch(&rows);
            observe(&metrics, "map_normalise", started.elapsed());
            prepared
        })
    }

    /// Runs the rows through the pipeline in one transaction (their drafts prepared
    /// already, or here). A row whose own data fails is marked failed in the same
    /// transaction; a store error fails the whole batch. While it commits, the batch
    /// `ahead` has its dedup candidates found and compared on the other core.
    async fn commit(
        &self,
        rows: &[InboxRow],
        prepared: Option<Prepared>,
        ahead: Option<&mut Ahead>,
    ) -> Result<Vec<Result<(), String>>, StoreError> {
        let prepared = prepared.unwrap_or_else(|| self.pipeline.prepare_batch(rows));
        let mut tx = self.store.begin_write().await?;
        let (outcomes, mut journal) = process_prepared(
            &self.store,
            &self.pipeline,
            &self.metrics,
            &mut tx,
            rows,
            prepared,
        )
        .await?;
        // Only SQLite keeps dedup's blocking index in memory; PostgreSQL has nothing to rank.
        if let Some(ahead) = ahead
            && self.store.backend() == Backend::Sqlite
            && let Some(members) = self.pipeline.dedup().ahead_of(&journal)
        {
            let preparing =
                std::mem::replace(&mut ahead.prepared, Box::pin(std::future::pending()));
            let pipeline = self.pipeline.clone();
            let ranking = tokio::spawn(async move {
                let mut prepared = preparing.await?;
                tokio::task::spawn_blocking(move || {
                    pipeline.dedup().rank_ahead(&mut prepared, &members);
                    prepared
                })
                .await
            });
            ahead.prepared = Box::pin(async move { ranking.await? });
        }
        let started = Instant::now();
        tx.commit().await?;
        self.pipeline.dedup().committed(&mut journal).await;
        observe(&self.metrics, "write_commit", started.elapsed());
        Ok(outcomes)
    }

    fn record(&self, row: &InboxRow, outcome: Result<(), String>) {
        let source = source_family(&row.source);
        match outcome {
            Ok(()) => self
                .metrics
                .inbound_processed
                .with_label_values(&[source])
                .inc(),
            Err(error) => {
                tracing::warn!(inbound = %row.id, %error, "inbound row failed");
                self.metrics
                    .inbound_failed
                    .with_label_values(&[source])
                    .inc();
            }
        }
    }

    /// Puts claimed rows back in the queue (only these: other workers' stay theirs).
    async fn release(&self, rows: &[InboxRow]) {
        let ids: Vec<&str> = rows.iter().map(|row| row.id.as_str()).collect();
        if let Err(error) = self.store.release_claimed(&ids).await {
            tracing::warn!(%error, rows = rows.len(), "could not release claimed rows; they are requeued at next start");
        }
    }
}

/// A batch claimed while the one before it is being written, its drafts being prepared
/// (and then ranked for dedup, while that one commits).
struct Ahead {
    rows: Arc<[InboxRow]>,
    prepared: BoxFuture<'static, Result<Prepared, tokio::task::JoinError>>,
}

type Prepared = Vec<Result<Draft, PipelineError>>;

/// `partner:acme` → `partner`: bounded label values for metrics.
pub fn source_family(source: &str) -> &str {
    source.split(':').next().unwrap_or(source)
}

fn observe(metrics: &Metrics, stage: &str, took: Duration) {
    metrics
        .stage_seconds
        .with_label_values(&[stage])
        .observe(took.as_secs_f64());
}

/// The size of the claim after one of `asked` rows brought `got`: twice as large while
/// claims come back full (a backlog, where a larger transaction costs less per row and
/// the rows wait in the queue anyway), back to `base` once the queue runs short.
fn next_claim(base: usize, max: usize, asked: usize, got: usize) -> usize {
    if got >= asked {
        asked.saturating_mul(2).clamp(base, max)
    } else {
        base
    }
}

/// Plans the rows through the pipeline and persists them inside the caller's
/// transaction (which the caller commits). A row whose own data fails is marked failed;
/// a store error fails the whole batch.
///
/// On PostgreSQL the transaction first takes an advisory lock on every identity key of
/// the batch (email, phone, the partition key), in one sorted order: two workers that
/// hold the same person — through one partition handed over, or through an email on one
/// channel and a phone on another — serialise here, and the second one's dedup sees the
/// first one's lead. SQLite has one writer at a time already.
pub(crate) async fn process_rows(
    store: &Store,
    pipeline: &Pipeline,
    metrics: &Metrics,
    tx: &mut AnyConnection,
    rows: &[InboxRow],
) -> Result<Vec<Result<(), String>>, StoreError> {
    let started = Instant::now();
    let prepared = pipeline.prepare_batch(rows);
    observe(metrics, "map_normalise", started.elapsed());
    let (outcomes, _) = process_prepared(store, pipeline, metrics, tx, rows, prepared).await?;
    Ok(outcomes)
}

/// `process_rows` for rows whose drafts are prepared already (in the same order); also
/// answers the flushed journal, for what the caller hands on once it has committed.
async fn process_prepared(
    store: &Store,
    pipeline: &Pipeline,
    metrics: &Metrics,
    tx: &mut AnyConnection,
    rows: &[InboxRow],
    prepared: Prepared,
) -> Result<(Vec<Result<(), String>>, Journal), StoreError> {
    if store.backend() == Backend::Postgres {
        let mut keys: Vec<u64> = prepared
            .iter()
            .flatten()
            .filter(|draft| draft.skipped.is_none())
            .flat_map(|draft| identity_of(pipeline, draft).locks)
            .collect();
        keys.sort_unstable();
        keys.dedup();
        lock_keys(tx, &keys).await?;
    }
    let started = Instant::now();
    let mut journal = Journal::default();
    pipeline.prefetch(tx, &mut journal, &prepared).await?;
    let mut done = Vec::with_capacity(rows.len());
    let mut outcomes = Vec::with_capacity(rows.len());
    let mut tally = ImportTally::default();
    for (row, prepared) in rows.iter().zip(prepared) {
        let processed = match prepared {
            Ok(draft) => pipeline.persist(tx, &mut journal, row, draft).await,
            Err(error) => Err(RowError::Row(error)),
        };
        match processed {
            Ok(result) => {
                tally.count_done(&row.source, &result);
                done.push((row.id.clone(), result));
                outcomes.push(Ok(()));
            }
            Err(RowError::Row(error)) => {
                tally.count_failed(&row.source);
                mark_failed(tx, &row.id, &error.to_string()).await?;
                outcomes.push(Err(error.to_string()));
            }
            Err(RowError::Store(error)) => return Err(error),
        }
    }
    observe(metrics, "dedup_decide", started.elapsed());
    journal.flush(tx).await?;
    mark_done(tx, &done).await?;
    tally.add_to(tx).await?;
    Ok((outcomes, journal))
}

/// Transaction-scoped advisory locks, taken in the order given (sorted by the caller,
/// so two transactions never wait on each other in a cycle).
async fn lock_keys(tx: &mut AnyConnection, keys: &[u64]) -> Result<(), StoreError> {
    for chunk in keys.chunks(1000) {
        let values: Vec<String> = (1..=chunk.len())
            .map(|n| format!("(${n}::BIGINT)"))
            .collect();
        let sql = format!(
            "SELECT pg_advisory_xact_lock(k)::TEXT FROM (VALUES {}) AS v(k)",
            values.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for key in chunk {
            query = query.bind(*key as i64);
        }
        query.fetch_all(&mut *tx).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::next_claim;

    #[test]
    fn claims_double_while_they_come_back_full_and_fall_back_when_the_queue_runs_short() {
        assert_eq!(next_claim(256, 4096, 256, 256), 512);
        assert_eq!(next_claim(256, 4096, 2048, 2048), 4096);
        assert_eq!(next_claim(256, 4096, 4096, 4096), 4096);
        assert_eq!(next_claim(256, 4096, 4096, 4095), 256);
        assert_eq!(next_claim(256, 4096, 512, 0), 256);
        assert_eq!(next_claim(256, 256, 256, 256), 256);
    }
}
