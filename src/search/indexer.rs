//! The indexer: follows the store's outbox after commit and keeps the index in step.
//!
//! Each outbox row only names a record; the indexer reads the record as it is now and
//! writes it (or removes it when it is gone), so replaying a row is harmless and the index
//! never holds a value the store rolled back. The checkpoint (last seq applied) is stored
//! by the backend with the documents; an index without one is rebuilt from the store.
//!
//! On PostgreSQL a sequence value is taken before commit, so a row with a lower seq can
//! become visible after a higher one. The checkpoint therefore only advances over seqs
//! without gaps; rows above a gap are applied at once and remembered. A gap is settled
//! once no transaction that began before it was seen is still open (its row is then
//! visible, or it rolled back and never will be), or after [`GAP_GRACE`] at the latest.
//!
//! Every few seconds the indexer reports its checkpoint in `outbox_consumers` and prunes
//! the rows every consumer seen lately has applied. The report answers how far pruning
//! has gone; an index whose checkpoint is below that (its consumer was not seen for
//! longer than pruning waits) has missed rows and is rebuilt from the store.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{IndexBatch, SearchDoc, SearchError, SearchIndex, indexed_kinds, spec};
use crate::domain::RecordKind;
use crate::store::{Store, StoreError};

/// Outbox rows read per step.
const BATCH: i64 = 1000;
/// Records read per page when rebuilding.
const REBUILD_PAGE: i64 = 20_000;
/// How long a hole in the outbox sequence may stay open before it is skipped.
pub const GAP_GRACE: Duration = Duration::from_secs(30);
/// Outbox rows replayed after a rebuild: transactions in flight while it started.
const REPLAY_AFTER_REBUILD: i64 = 1000;
/// How often the checkpoint is reported when pruning is off.
const REPORT_EVERY: Duration = Duration::from_secs(30);
/// Outbox rows deleted per transaction, and transactions per prune.
const PRUNE_BATCH: i64 = 5000;
const PRUNE_BATCHES: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum IndexerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Search(#[from] SearchError),
    #[error(
        "outbox rows after seq {checkpoint} were pruned (through {pruned}) before this index applied them"
    )]
    Pruned { checkpoint: i64, pruned: i64 },
}

/// Where the indexer is in the outbox.
#[derive(Debug, Default)]
struct Position {
    checkpoint: i64,
    /// Seqs above the checkpoint already applied (past a gap).
    applied_above: BTreeSet<i64>,
    /// The first missing seq and since when it has been missing.
    gap: Option<(i64, Instant)>,
    /// The database clock when the gap was seen, and whether every transaction older than
    /// that has ended since.
    gap_clock: Option<f64>,
    gap_settled: bool,
    /// When the checkpoint was last reported (and the outbox pruned).
    reported: Option<Instant>,
}

pub struct Indexer {
    pub store: Store,
    pub index: Arc<dyn SearchIndex>,
    pub poll: Duration,
    pub shutdown: CancellationToken,
    pub outbox: OutboxUpkeep,
}

/// How the indexer reports itself and prunes the outbox.
#[derive(Debug, Clone, Copy)]
pub struct OutboxUpkeep {
    /// How often to report and prune; `None` reports every [`REPORT_EVERY`] and never prunes.
    pub prune_every: Option<Duration>,
    /// Consumers not seen for this long do not hold pruning back.
    pub consumer_ttl: Duration,
}

impl OutboxUpkeep {
    pub fn from_config(config: &super::SearchConfig) -> Self {
        Self {
            prune_every: (config.outbox_prune_secs > 0)
                .then(|| Duration::from_secs(config.outbox_prune_secs)),
            consumer_ttl: Duration::from_secs(config.outbox_consumer_ttl_hours.max(1) * 3600),
        }
    }

    fn every(&self) -> Duration {
        self.prune_every.unwrap_or(REPORT_EVERY)
    }
}

impl Indexer {
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(async move { self.run().await })
    }

    async fn run(self) {
        let mut position: Option<Position> = None;
        let mut backoff = Duration::from_millis(500);
        loop {
            let result = match position.as_mut() {
                None => start(&self.store, self.index.as_ref()).await.map(|p| {
                    position = Some(p);
                    true
                }),
                Some(at) => match self.upkeep(at).await {
                    Ok(()) => step(&self.store, self.index.as_ref(), at).await,
                    Err(error) => Err(error),
                },
            };
            let wait = match result {
                Ok(true) => {
                    backoff = Duration::from_millis(500);
                    Duration::ZERO
                }
                Ok(false) => self.poll,
                Err(error @ IndexerError::Pruned { .. }) => {
                    // `start` finds the index's checkpoint below the pruned mark and rebuilds.
                    tracing::warn!(%error, "search indexer: rebuilding the index from the store");
                    position = None;
                    Duration::ZERO
                }
                Err(error) => {
                    tracing::warn!(%error, "search indexer: will retry");
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    backoff
                }
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        let consumer = self.index.outbox_consumer();
        if !consumer.durable
            && let Err(error) = self.store.outbox_forget(&consumer.name).await
        {
            tracing::warn!(%error, consumer = consumer.name, "search indexer: could not leave outbox_consumers; it expires on its own");
        }
    }

    /// Reports the checkpoint and prunes the outbox when it is time.
    async fn upkeep(&self, position: &mut Position) -> Result<(), IndexerError> {
        if position
            .reported
            .is_some_and(|at| at.elapsed() < self.outbox.every())
        {
            return Ok(());
        }
        report(&self.store, self.index.as_ref(), position.checkpoint).await?;
        position.reported = Some(Instant::now());
        if self.outbox.prune_every.is_some() {
            let seen_since = unix_now() - self.outbox.consumer_ttl.as_secs() as i64;
            let pruned = self
                .store
                .outbox_prune(seen_since, PRUNE_BATCH, PRUNE_BATCHES)
                .await?;
            if pruned > 0 {
                tracing::debug!(rows = pruned, "outbox rows every consumer applied pruned");
            }
        }
        Ok(())
    }
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Tells the store how far this index has applied the outbox; an error when rows it had
/// not applied were pruned meanwhile.
async fn report(
    store: &Store,
    index: &dyn SearchIndex,
    checkpoint: i64,
) -> Result<(), IndexerError> {
    let consumer = index.outbox_consumer();
    let pruned = store
        .outbox_report(&consumer.name, checkpoint, unix_now())
        .await?;
    if pruned > checkpoint {
        return Err(IndexerError::Pruned { checkpoint, pruned });
    }
    Ok(())
}

/// The position to follow from: the index's checkpoint, after a rebuild when it has none
/// or when outbox rows after it have been pruned.
async fn start(store: &Store, index: &dyn SearchIndex) -> Result<Position, IndexerError> {
    let resume = match index.stats().await?.checkpoint {
        Some(seq) => match report(store, index, seq).await {
            Ok(()) => Some(seq),
            Err(IndexerError::Pruned { checkpoint, pruned }) => {
                tracing::warn!(
                    backend = index.backend(),
                    checkpoint,
                    pruned,
                    "search index missed outbox rows that were pruned while it was away: rebuilding it from the store"
                );
                None
            }
            Err(other) => return Err(other),
        },
        None => {
            tracing::warn!(
                backend = index.backend(),
                "search index has no checkpoint (new, missing or damaged): rebuilding it from the store"
            );
            None
        }
    };
    let checkpoint = match resume {
        Some(seq) => seq,
        None => {
            // Holds pruning back while the rebuild reads the store.
            report(store, index, 0).await.or_else(|error| match error {
                IndexerError::Pruned { .. } => Ok(()),
                other => Err(other),
            })?;
            let checkpoint = rebuild(store, index).await?.checkpoint;
            report(store, index, checkpoint).await?;
            checkpoint
        }
    };
    Ok(Position {
        checkpoint,
        reported: Some(Instant::now()),
        ..Default::default()
    })
}

/// Applies the next outbox rows; true when there may be more right away.
async fn step(
    store: &Store,
    index: &dyn SearchIndex,
    position: &mut Position,
) -> Result<bool, IndexerError> {
    // Settled before reading, so a row its transaction committed meanwhile is read now.
    if let Some(clock) = position.gap_clock {
        position.gap_settled = !store.writers_open_since(clock).await?;
    }
    let rows = store.outbox_after(position.checkpoint, BATCH).await?;
    if rows.is_empty() {
        return Ok(false);
    }
    let full = rows.len() as i64 == BATCH;
    let mut records: Vec<(RecordKind, String)> = Vec::new();
    let mut seqs = position.applied_above.clone();
    for row in &rows {
        if !seqs.insert(row.seq) {
            continue;
        }
        let Ok(kind) = row.record_kind.parse::<RecordKind>() else {
            continue;
        };
        if spec(kind).is_some() && !records.contains(&(kind, row.record_id.clone())) {
            records.push((kind, row.record_id.clone()));
        }
    }
    let (upserts, deletes) = current(store, records).await?;
    let gap_before = position.gap.map(|(seq, _)| seq);
    let checkpoint = advance(position, &seqs);
    if position
        .gap
        .is_some_and(|(missing, _)| missing <= checkpoint)
    {
        position.gap = None;
    }
    match position.gap {
        None => {
            position.gap_clock = None;
            position.gap_settled = false;
        }
        Some((missing, _)) if Some(missing) != gap_before => {
            position.gap_clock = Some(store.outbox_clock().await?);
            position.gap_settled = false;
        }
        Some(_) => {}
    }
    let moved = checkpoint != position.checkpoint;
    if !upserts.is_empty() || !deletes.is_empty() || moved {
        index
            .apply(IndexBatch {
                upserts,
                deletes,
                checkpoint: Some(checkpoint),
            })
            .await?;
    }
    position.checkpoint = checkpoint;
    position.applied_above = seqs.into_iter().filter(|s| *s > checkpoint).collect();
    Ok(full && moved)
}

/// The highest seq reached without an open gap.
fn advance(position: &mut Position, seqs: &BTreeSet<i64>) -> i64 {
    let mut checkpoint = position.checkpoint;
    for &seq in seqs {
        if seq <= checkpoint {
            continue;
        }
        if seq == checkpoint + 1 {
            checkpoint = seq;
            continue;
        }
        let missing = checkpoint + 1;
        let since = match position.gap {
            Some((at, since)) if at == missing => since,
            _ => {
                position.gap = Some((missing, Instant::now()));
                position.gap_settled = false;
                break;
            }
        };
        if !position.gap_settled && since.elapsed() < GAP_GRACE {
            break;
        }
        position.gap = None;
        position.gap_settled = false;
        tracing::info!(
            from = missing,
            to = seq - 1,
            "outbox seqs never committed; skipping them"
        );
        checkpoint = seq;
    }
    checkpoint
}

/// Documents for the records that exist now, and the keys of those that do not.
async fn current(
    store: &Store,
    records: Vec<(RecordKind, String)>,
) -> Result<(Vec<SearchDoc>, Vec<(RecordKind, String)>), IndexerError> {
    let mut upserts = Vec::new();
    let mut deletes = Vec::new();
    for (kind, id) in records {
        match store.get(kind, &id).await? {
            Some(record) => upserts.extend(SearchDoc::from_record(&record)),
            None => deletes.push((kind, id)),
        }
    }
    Ok((upserts, deletes))
}

#[derive(Debug, Clone, Copy)]
pub struct RebuildReport {
    pub documents: u64,
    pub checkpoint: i64,
    pub seconds: f64,
}

/// Empties the index and writes every indexed record from the store. The outbox position
/// is taken first (less a margin for transactions in flight), so every change after it is
/// applied again by the indexer.
pub async fn rebuild(
    store: &Store,
    index: &dyn SearchIndex,
) -> Result<RebuildReport, IndexerError> {
    let started = Instant::now();
    // Pruned rows were applied by every consumer, so committed before the prune, before
    // this read, before the scan below: the scan sees them and the replay need not.
    let pruned = store.outbox_pruned_through().await?;
    let checkpoint = (store.outbox_max_seq().await? - REPLAY_AFTER_REBUILD)
        .max(0)
        .max(pruned);
    index.clear().await?;
    let mut documents = 0u64;
    let mut counts: HashMap<RecordKind, u64> = HashMap::new();
    for kind in indexed_kinds() {
        let mut after: Option<String> = None;
        loop {
            let page = store.scan(kind, after.as_deref(), REBUILD_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.clone());
            let docs: Vec<SearchDoc> = page.iter().filter_map(SearchDoc::from_record).collect();
            documents += docs.len() as u64;
            *counts.entry(kind).or_default() += docs.len() as u64;
            index
                .apply(IndexBatch {
                    upserts: docs,
                    deletes: Vec::new(),
                    checkpoint: None,
                })
                .await?;
            if (page.len() as i64) < REBUILD_PAGE {
                break;
            }
        }
    }
    index
        .apply(IndexBatch {
            checkpoint: Some(checkpoint),
            ..Default::default()
        })
        .await?;
    index.compact().await?;
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        documents,
        checkpoint,
        seconds,
        "search index rebuilt from the store"
    );
    Ok(RebuildReport {
        documents,
        checkpoint,
        seconds,
    })
}

/// Outbox rows not yet in the index; `None` when the index has never been built.
pub async fn lag(store: &Store, index: &dyn SearchIndex) -> Result<Option<i64>, IndexerError> {
    match index.stats().await?.checkpoint {
        Some(checkpoint) => Ok(Some(store.outbox_count_after(checkpoint).await?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkpoint_stops_at_a_gap_until_it_is_old() {
        let mut position = Position {
            checkpoint: 10,
            ..Default::default()
        };
        let seqs: BTreeSet<i64> = [11, 12, 14, 15].into_iter().collect();
        assert_eq!(advance(&mut position, &seqs), 12);
        position.checkpoint = 12;
        assert_eq!(advance(&mut position, &seqs), 12, "13 may still commit");
        position.gap = Some((13, Instant::now() - GAP_GRACE - Duration::from_secs(1)));
        assert_eq!(advance(&mut position, &seqs), 15);
        position.checkpoint = 10;
        assert_eq!(advance(&mut position, &seqs), 12, "a new gap");
        position.checkpoint = 12;
        position.gap_settled = true;
        assert_eq!(
            advance(&mut position, &seqs),
            15,
            "no writer left that could fill it"
        );
    }
}
