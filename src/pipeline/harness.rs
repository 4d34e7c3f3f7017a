//! `leadgate dedup`: a file through mapping, normalisation and dedup in a scratch store,
//! written out as the duplicate pairs it found — the harness for tuning weights and the
//! source of the accuracy figures.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use futures_util::TryStreamExt;
use serde_json::{Map, Value};
use sqlx::Row;

use super::{Draft, Pipeline, PipelineError, RowError};
use crate::store::inbox::InboxRow;
use crate::store::write::Journal;
use crate::store::{RequestMeta, Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Records arrive one by one, each committed before the next.
    Stream,
    /// Records arrive as one upload, committed a thousand at a time.
    Batch,
}

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("reading {file}: {reason}")]
    Read { file: String, reason: String },
    #[error("the file has no column `{0}`")]
    NoIdColumn(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing {file}: {reason}")]
    Write { file: String, reason: String },
}

#[derive(Debug, Default)]
pub struct Report {
    pub rows: usize,
    pub failed: usize,
    pub created: usize,
    pub merged: usize,
    pub review: usize,
    pub pairs: usize,
    pub review_pairs: usize,
    pub seconds: f64,
}

/// Runs `file` (CSV with a header row) through `pipeline` into `store` (a scratch one)
/// and writes `id_a,id_b,score` pairs by the file's `id_column`.
pub async fn run(
    store: &Store,
    pipeline: Arc<Pipeline>,
    file: &Path,
    id_column: &str,
    mode: Mode,
    pairs_out: &Path,
    review_out: &Path,
) -> Result<Report, HarnessError> {
    let read_error = |reason: String| HarnessError::Read {
        file: file.display().to_string(),
        reason,
    };
    let mut reader = csv::Reader::from_path(file).map_err(|e| read_error(e.to_string()))?;
    let headers = reader
        .headers()
        .map_err(|e| read_error(e.to_string()))?
        .clone();
    if !headers.iter().any(|h| h == id_column) {
        return Err(HarnessError::NoIdColumn(id_column.to_owned()));
    }
    let mut report = Report::default();
    let started = Instant::now();
    let chunk = match mode {
        Mode::Stream => 1,
        Mode::Batch => 1000,
    };
    // Read a batch at a time: memory follows the batch, not the file. The next batch is
    // read and prepared on the other core while this one is decided and written.
    let reading = Reading {
        records: reader.into_records().enumerate(),
        headers,
        id_column: id_column.to_owned(),
        chunk,
    };
    let (returned, batch, prepared) = read_ahead(reading, pipeline.clone())
        .await
        .map_err(|e| read_error(format!("reader stopped: {e}")))?;
    let (mut reading, mut batch, mut prepared) = (returned, batch.map_err(read_error)?, prepared);
    while !batch.is_empty() {
        let upcoming = read_ahead(reading, pipeline.clone());
        report.rows += batch.len();
        let mut tx = store.begin_write().await?;
        let mut journal = Journal::default();
        pipeline.prefetch(&mut tx, &mut journal, &prepared).await?;
        for (row, prepared) in batch.iter().zip(prepared) {
            let processed = match prepared {
                Ok(draft) => pipeline.persist(&mut tx, &mut journal, row, draft).await,
                Err(error) => Err(RowError::Row(error)),
            };
            match processed {
                Ok(result) => match result["action"].as_str() {
                    Some("merged") => report.merged += 1,
                    Some("review") => report.review += 1,
                    Some("skipped") => {}
                    _ => report.created += 1,
                },
                Err(RowError::Row(_)) => report.failed += 1,
                Err(RowError::Store(error)) => return Err(error.into()),
            }
        }
        // The next batch's dedup candidates are found and compared on the other core
        // while this one is written: the store's thread writes, the pipeline's waits.
        let (returned, next, mut next_prepared) = upcoming
            .await
            .map_err(|e| read_error(format!("reader stopped: {e}")))?;
        let ahead = pipeline.dedup().ahead_of(&journal);
        let ranker = pipeline.clone();
        let ranking = tokio::task::spawn_blocking(move || {
            if let Some(ahead) = ahead {
                ranker.dedup().rank_ahead(&mut next_prepared, &ahead);
            }
            next_prepared
        });
        journal.flush(&mut tx).await?;
        tx.commit().await?;
        let next_prepared = ranking
            .await
            .map_err(|e| read_error(format!("ranking stopped: {e}")))?;
        pipeline.dedup().committed(&mut journal).await;
        (reading, batch, prepared) = (returned, next.map_err(read_error)?, next_prepared);
    }
    report.seconds = started.elapsed().as_secs_f64();
    write_pairs(store, &pipeline, pairs_out, review_out, &mut report).await?;
    Ok(report)
}

/// The CSV being read, handed to the blocking thread that reads the next batch and back.
struct Reading {
    records: std::iter::Enumerate<csv::StringRecordsIntoIter<std::fs::File>>,
    headers: csv::StringRecord,
    id_column: String,
    chunk: usize,
}

type Prepared = Vec<Result<Draft, PipelineError>>;

/// Reads the next batch (empty at the end of the file) and prepares it, off the async
/// thread; hands the reader back with it.
fn read_ahead(
    mut reading: Reading,
    pipeline: Arc<Pipeline>,
) -> tokio::task::JoinHandle<(Reading, Result<Vec<InboxRow>, String>, Prepared)> {
    tokio::task::spawn_blocking(move || {
        let mut batch = Vec::with_capacity(reading.chunk);
        for (n, record) in reading.records.by_ref().take(reading.chunk) {
            match record {
                Ok(record) => {
                    batch.push(inbox_row(&reading.headers, &record, &reading.id_column, n))
                }
                Err(e) => return (reading, Err(format!("row {}: {e}", n + 2)), Vec::new()),
            }
        }
        let prepared = pipeline.prepare_batch(&batch);
        (reading, Ok(batch), prepared)
    })
}

/// One CSV record as the inbox row the pipeline takes; the id column names it.
fn inbox_row(
    headers: &csv::StringRecord,
    record: &csv::StringRecord,
    id_column: &str,
    n: usize,
) -> InboxRow {
    let mut fields = Map::new();
    let mut id = format!("row-{}", n + 2);
    for (header, value) in headers.iter().zip(record.iter()) {
        if header == id_column {
            id = value.trim().to_owned();
        } else if !value.trim().is_empty() {
            fields.insert(header.to_owned(), Value::String(value.trim().to_owned()));
        }
    }
    InboxRow {
        id,
        source: "dedup:harness".into(),
        external_id: None,
        received_at: crate::domain::value::now_timestamp(),
        fields: Value::Object(fields),
        status: "processing".into(),
        attempts: 1,
        error: None,
        result: Value::Null,
        request_id: None,
        updated_at: String::new(),
        meta: RequestMeta::default(),
    }
}

async fn write_pairs(
    store: &Store,
    pipeline: &Pipeline,
    pairs_out: &Path,
    review_out: &Path,
    report: &mut Report,
) -> Result<(), HarnessError> {
    let write_error = |file: &Path, reason: String| HarnessError::Write {
        file: file.display().to_string(),
        reason,
    };
    let matcher = pipeline.dedup().matcher();
    let mut out =
        csv::Writer::from_path(pairs_out).map_err(|e| write_error(pairs_out, e.to_string()))?;
    out.write_record(["id_a", "id_b", "score"])
        .map_err(|e| write_error(pairs_out, e.to_string()))?;
    // One record's members at a time, in the order of the (record_kind, record_id)
    // index: memory follows the largest cluster, not the store (holding every member
    // was two thirds of the harness's peak at a million rows).
    let mut members = sqlx::query(
        "SELECT record_id, source_id, match_values FROM match_members \
         ORDER BY record_kind, record_id, created_at",
    )
    .fetch(store.pool());
    let mut cluster: Vec<(String, matching::Prepared)> = Vec::new();
    let mut cluster_of = String::new();
    let mut write_cluster = |cluster: &mut Vec<(String, matching::Prepared)>,
                             report: &mut Report|
     -> Result<(), HarnessError> {
        for (i, (a, record_a)) in cluster.iter().enumerate() {
            for (b, record_b) in &cluster[i + 1..] {
                let score = matcher.total(record_a, record_b);
                out.write_record([a.as_str(), b.as_str(), &format!("{score:.2}")])
                    .map_err(|e| write_error(pairs_out, e.to_string()))?;
                report.pairs += 1;
            }
        }
        cluster.clear();
        Ok(())
    };
    while let Some(row) = members.try_next().await.map_err(StoreError::from)? {
        let record_id: String = row.try_get("record_id").map_err(StoreError::from)?;
        let source: String = row.try_get("source_id").map_err(StoreError::from)?;
        let values: String = row.try_get("match_values").map_err(StoreError::from)?;
        if record_id != cluster_of {
            write_cluster(&mut cluster, report)?;
            cluster_of = record_id;
        }
        let record = serde_json::from_str(&values).unwrap_or_default();
        cluster.push((source, matcher.prepare(&record)));
    }
    write_cluster(&mut cluster, report)?;
    drop(members);
    out.flush()
        .map_err(|e| write_error(pairs_out, e.to_string()))?;
    // A record is named by its first member's row id.
    let reviews = sqlx::query(
        "SELECT r.score, \
         (SELECT source_id FROM match_members m WHERE m.record_kind = r.record_kind \
          AND m.record_id = r.record_a ORDER BY m.created_at LIMIT 1) AS a, \
         (SELECT source_id FROM match_members m WHERE m.record_kind = r.record_kind \
          AND m.record_id = r.record_b ORDER BY m.created_at LIMIT 1) AS b \
         FROM review_pairs r",
    )
    .fetch_all(store.pool())
    .await
    .map_err(StoreError::from)?;
    let mut out =
        csv::Writer::from_path(review_out).map_err(|e| write_error(review_out, e.to_string()))?;
    out.write_record(["id_a", "id_b", "score"])
        .map_err(|e| write_error(review_out, e.to_string()))?;
    for row in reviews {
        let a: Option<String> = row.try_get("a").map_err(StoreError::from)?;
        let b: Option<String> = row.try_get("b").map_err(StoreError::from)?;
        let score: f64 = row.try_get("score").map_err(StoreError::from)?;
        if let (Some(a), Some(b)) = (a, b) {
            out.write_record([a, b, format!("{score:.2}")])
                .map_err(|e| write_error(review_out, e.to_string()))?;
            report.review_pairs += 1;
        }
    }
    out.flush()
        .map_err(|e| write_error(review_out, e.to_string()))?;
    Ok(())
}
