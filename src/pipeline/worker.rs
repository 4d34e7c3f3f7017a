//! The embedded worker: claims inbox rows, plans them through the pipeline and commits
//! each batch's records together with the rows' new state, so a row is done exactly when
//! its records exist.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Pipeline, RowError};
use crate::store::inbox::{InboxRow, mark_done, mark_failed};
use crate::store::write::Journal;
use crate::store::{Store, StoreError};
use crate::telemetry::Metrics;

const IDLE_POLL: Duration = Duration::from_millis(500);

pub struct Worker {
    pub store: Store,
    pub pipeline: Arc<Pipeline>,
    pub batch: usize,
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
        loop {
            match self.drain_once().await {
                Ok(0) => {}
                Ok(_) if !self.shutdown.is_cancelled() => continue,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "inbox worker pass failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = self.appended.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
            }
        }
        tracing::info!("inbox worker stopped");
    }

    /// Processes one claimed batch; answers how many rows it took.
    pub async fn drain_once(&self) -> Result<usize, StoreError> {
        let rows = self.store.claim_inbox(self.batch).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let timer = self
            .metrics
            .stage_seconds
            .with_label_values(&["batch"])
            .start_timer();
        let committed = self.commit(&rows).await;
        timer.observe_duration();
        match committed {
            Ok(outcomes) => {
                for (row, outcome) in rows.iter().zip(outcomes) {
                    self.record(row, outcome);
                }
            }
            Err(StoreError::Unavailable(why)) => {
                self.release(&rows).await;
                return Err(StoreError::Unavailable(why));
            }
            // One row broke the batch: isolate it by committing rows one at a time.
            Err(error) => {
                tracing::warn!(%error, "batch commit failed; committing rows one by one");
                for row in &rows {
                    match self.commit(std::slice::from_ref(row)).await {
                        Ok(mut outcome) => self.record(row, outcome.remove(0)),
                        Err(error) => {
                            self.record(row, Err(error.to_string()));
                            self.store
                                .mark_inbox_failed(&row.id, &error.to_string())
                                .await?;
                        }
                    }
                }
            }
        }
        Ok(rows.len())
    }

    /// Runs the rows through the pipeline in one transaction. A row whose own data fails
    /// is marked failed in the same transaction; a store error fails the whole batch.
    async fn commit(&self, rows: &[InboxRow]) -> Result<Vec<Result<(), String>>, StoreError> {
        let mut tx = self.store.begin_write().await?;
        let mut journal = Journal::default();
        let mut done = Vec::with_capacity(rows.len());
        let mut outcomes = Vec::with_capacity(rows.len());
        let (mut preparing, mut deduping) = (Duration::ZERO, Duration::ZERO);
        for row in rows {
            let started = Instant::now();
            let prepared = self.pipeline.prepare(row);
            let mapped = Instant::now();
            preparing += mapped - started;
            let processed = match prepared {
                Ok(draft) => {
                    self.pipeline
                        .persist(&mut tx, &mut journal, row, draft)
                        .await
                }
                Err(error) => Err(RowError::Row(error)),
            };
            deduping += mapped.elapsed();
            match processed {
                Ok(result) => {
                    done.push((row.id.clone(), result));
                    outcomes.push(Ok(()));
                }
                Err(RowError::Row(error)) => {
                    mark_failed(&mut tx, &row.id, &error.to_string()).await?;
                    outcomes.push(Err(error.to_string()));
                }
                Err(RowError::Store(error)) => return Err(error),
            }
        }
        let stage = |name: &str, took: Duration| {
            self.metrics
                .stage_seconds
                .with_label_values(&[name])
                .observe(took.as_secs_f64());
        };
        stage("map_normalise", preparing);
        stage("dedup_decide", deduping);
        let started = Instant::now();
        journal.flush(&mut tx).await?;
        mark_done(&mut tx, &done).await?;
        tx.commit().await?;
        stage("write_commit", started.elapsed());
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

    async fn release(&self, rows: &[InboxRow]) {
        if let Err(error) = self.store.requeue_in_flight().await {
            tracing::warn!(%error, rows = rows.len(), "could not release claimed rows; they are requeued at next start");
        }
    }
}

/// `partner:acme` → `partner`: bounded label values for metrics.
pub fn source_family(source: &str) -> &str {
    source.split(':').next().unwrap_or(source)
}
