//! The embedded worker: claims inbox rows, plans them through the pipeline and commits
//! each batch's records together with the rows' new state, so a row is done exactly when
//! its records exist.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Pipeline, Plan};
use crate::store::inbox::{InboxRow, mark_done, mark_failed};
use crate::store::write::Journal;
use crate::store::{Store, StoreError, WriteContext, write};
use crate::telemetry::Metrics;

const IDLE_POLL: Duration = Duration::from_millis(500);

pub struct Worker {
    pub store: Store,
    pub pipeline: Arc<dyn Pipeline>,
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
            .with_label_values(&["plan"])
            .start_timer();
        let planned: Vec<_> = rows
            .iter()
            .map(|row| (row, self.pipeline.plan(row).map_err(|e| e.to_string())))
            .collect();
        timer.observe_duration();
        let timer = self
            .metrics
            .stage_seconds
            .with_label_values(&["persist"])
            .start_timer();
        let committed = self.commit(&planned).await;
        timer.observe_duration();
        match committed {
            Ok(()) => {}
            Err(StoreError::Unavailable(why)) => {
                self.release(&rows).await;
                return Err(StoreError::Unavailable(why));
            }
            // One row broke the batch: isolate it by committing rows one at a time.
            Err(error) => {
                tracing::warn!(%error, "batch commit failed; committing rows one by one");
                for one in &planned {
                    if let Err(error) = self.commit(std::slice::from_ref(one)).await {
                        self.record(one.0, Err(error.to_string()));
                        self.store
                            .mark_inbox_failed(&one.0.id, &error.to_string())
                            .await?;
                    }
                }
                return Ok(rows.len());
            }
        }
        for (row, plan) in &planned {
            self.record(row, plan.as_ref().map(|_| ()).map_err(Clone::clone));
        }
        Ok(rows.len())
    }

    async fn commit(
        &self,
        planned: &[(&InboxRow, Result<Plan, String>)],
    ) -> Result<(), StoreError> {
        let mut tx = self.store.begin_write().await?;
        let mut journal = Journal::default();
        let mut done = Vec::with_capacity(planned.len());
        for (row, plan) in planned {
            match plan {
                Ok(plan) => {
                    let ctx = Arc::new(context_of(row));
                    let written =
                        write::apply_journaled(&mut tx, &ctx, plan.changes.clone(), &mut journal)
                            .await?;
                    let mut result = plan.result.clone();
                    result["written"] = json!(
                        written
                            .iter()
                            .map(|w| json!({"kind": w.kind, "id": w.id, "action": w.action}))
                            .collect::<Vec<_>>()
                    );
                    done.push((row.id.clone(), result));
                }
                Err(error) => mark_failed(&mut tx, &row.id, error).await?,
            }
        }
        journal.flush(&mut tx).await?;
        mark_done(&mut tx, &done).await?;
        tx.commit().await?;
        Ok(())
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

/// Pipeline writes are attributed to the channel that delivered the record, with the
/// delivering request's IP, user agent and request id.
fn context_of(row: &InboxRow) -> WriteContext {
    WriteContext::new(
        row.source.clone(),
        source_family(&row.source),
        row.meta.clone(),
    )
}

/// `partner:acme` → `partner`: bounded label values for metrics.
pub fn source_family(source: &str) -> &str {
    source.split(':').next().unwrap_or(source)
}
