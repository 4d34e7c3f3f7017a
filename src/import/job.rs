//! Running an import: read the file on a blocking thread, map each row, and hand batches
//! to the group-commit writer; counts are recorded only after each batch is durable.
//! The HTTP endpoint and `leadgate import` both run this.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use chrono::Utc;
use connectors::Inbound;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use utoipa::ToSchema;

use super::columns::ColumnMap;
use super::error::ImportError;
use super::reader::{self, Event, Flow, Format, Limits, ReadOptions, Row};
use super::zoom_report::{Line, ZoomReport};
use crate::pipeline::CHOSEN_MAPPING;
use crate::queue::Accepter;
use crate::store::imports::{RowError, import_source};
use crate::store::inbox::Submission;
use crate::store::{RequestMeta, Store};

/// Rows previewed by a dry run.
pub const PREVIEW_ROWS: usize = 20;
/// Rows a dry run examines at most, looking for errors to show.
const DRY_RUN_SCAN: u64 = 1_000;

/// Per-import choices.
#[derive(Debug, Clone, Default)]
pub struct ImportSettings {
    pub sheet: Option<String>,
    /// Header → canonical field, `custom` or `ignore`.
    pub mapping: BTreeMap<String, String>,
    /// The pipeline mapping the rows are for, when the upload named one (`zoom_attendees`).
    pub profile: Option<String>,
    /// How the file is laid out: the named mapping's `import_layout`.
    pub layout: Option<String>,
    pub limits: Limits,
    pub batch_size: usize,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PreviewRow {
    pub row: u64,
    #[schema(value_type = Object)]
    pub fields: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DryRun {
    #[schema(value_type = String)]
    pub format: Format,
    pub sheet: Option<String>,
    pub header_row: u64,
    pub mapping: ColumnMap,
    /// The first rows as they would be written to the inbox.
    pub rows: Vec<PreviewRow>,
    /// The first rows that would be refused.
    pub errors: Vec<RowError>,
    pub rows_examined: u64,
    /// Every target a column may be given besides `custom:<key>` and `ignore`.
    pub targets: Vec<&'static str>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, ToSchema)]
pub struct ReadOutcome {
    pub rows_read: u64,
    pub rows_accepted: u64,
    pub rows_rejected_at_read: u64,
}

/// SHA-256 of a file, streamed.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0_u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn read_options(settings: &ImportSettings) -> ReadOptions {
    ReadOptions {
        sheet: settings.sheet.clone(),
        limits: settings.limits,
        batch_size: settings.batch_size,
    }
}

/// One read row mapped: the fields it becomes, or why it is refused.
fn map_row(map: &ColumnMap, row: &Row) -> Result<Map<String, Value>, Vec<RowError>> {
    map.row_fields(&row.cells, &row.problems).map_err(|errors| {
        errors
            .into_iter()
            .map(|e| RowError {
                row: row.number as i64,
                column: Some(e.column),
                reason: e.reason,
            })
            .collect()
    })
}

/// Turns the reader's header and rows into mapped rows: a plain table directly, a Zoom
/// attendee report through its sections; stamps a named mapping on every row.
struct RowMapper<'a> {
    settings: &'a ImportSettings,
    map: Option<ColumnMap>,
    report: Option<ZoomReport>,
}

impl<'a> RowMapper<'a> {
    fn new(settings: &'a ImportSettings) -> Self {
        let report =
            (settings.layout.as_deref() == Some("zoom_attendee_report")).then(ZoomReport::default);
        Self {
            settings,
            map: None,
            report,
        }
    }

    fn propose(&mut self, names: &[String]) -> Result<(), ImportError> {
        self.map =
            Some(ColumnMap::propose(names, &self.settings.mapping).map_err(ImportError::Mapping)?);
        Ok(())
    }

    fn header(&mut self, names: &[String]) -> Result<(), ImportError> {
        match self.report.as_mut().map(|report| report.first_row(names)) {
            None => self.propose(names),
            Some(Line::Header(cells)) => self.propose(&reader::header_names(cells)),
            Some(_) => Ok(()),
        }
    }

    /// The row's fields or errors; `None` for rows that are not data (report sections).
    #[allow(clippy::type_complexity)]
    fn row(
        &mut self,
        row: &Row,
    ) -> Result<Option<Result<Map<String, Value>, Vec<RowError>>>, ImportError> {
        if let Some(report) = self.report.as_mut() {
            match report.row(&row.cells) {
                Line::Skip => return Ok(None),
                Line::Header(cells) => {
                    self.propose(&reader::header_names(cells))?;
                    return Ok(None);
                }
                Line::Data => {}
            }
        }
        let map = self.map.as_ref().ok_or(ImportError::Empty)?;
        let mut mapped = map_row(map, row);
        if let Ok(fields) = &mut mapped {
            if let Some(report) = &self.report {
                fields.extend(report.extra_fields(&row.cells));
            }
            if let Some(profile) = &self.settings.profile {
                fields.insert(CHOSEN_MAPPING.into(), Value::from(profile.clone()));
            }
        }
        Ok(Some(mapped))
    }
}

/// Reads the start of the file and answers what an import would do, writing nothing.
pub async fn dry_run(
    path: PathBuf,
    file_name: String,
    settings: ImportSettings,
) -> Result<DryRun, ImportError> {
    tokio::task::spawn_blocking(move || {
        let format = reader::detect_format(&file_name, &path)?;
        let mut mapper = RowMapper::new(&settings);
        let mut preview = Vec::new();
        let mut errors = Vec::new();
        let mut examined = 0_u64;
        let options = ReadOptions {
            batch_size: 100,
            ..read_options(&settings)
        };
        let summary = reader::read(&path, format, &options, &mut |event| {
            match event {
                Event::Header(header) => mapper.header(&header.names)?,
                Event::Rows(rows) => {
                    for row in rows {
                        let Some(mapped) = mapper.row(&row)? else {
                            continue;
                        };
                        examined += 1;
                        match mapped {
                            Ok(fields) if preview.len() < PREVIEW_ROWS => {
                                preview.push(PreviewRow {
                                    row: row.number,
                                    fields,
                                });
                            }
                            Ok(_) => {}
                            Err(row_errors) if errors.len() < PREVIEW_ROWS => {
                                errors.extend(row_errors)
                            }
                            Err(_) => {}
                        }
                    }
                    let enough = preview.len() >= PREVIEW_ROWS
                        && (errors.len() >= PREVIEW_ROWS || examined >= DRY_RUN_SCAN);
                    if enough {
                        return Ok(Flow::Stop);
                    }
                }
            }
            Ok(Flow::Continue)
        })?;
        Ok(DryRun {
            format: summary.format,
            sheet: summary.sheet,
            header_row: summary.header_row,
            mapping: mapper.map.ok_or(ImportError::Empty)?,
            rows: preview,
            errors,
            rows_examined: examined,
            targets: super::columns::canonical_fields().collect(),
        })
    })
    .await
    .map_err(|e| ImportError::Aborted(e.to_string()))?
}

/// What the reading thread hands the submitting task.
struct Batch {
    items: Vec<Inbound>,
    rejected: Vec<RowError>,
    read: u64,
}

/// Reads the whole file into the inbox as `import:<id>` / `row:<n>`. `progress` sees the
/// counts after each durable batch. Marks the import `done` or `failed`.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    store: &Store,
    accepter: &Accepter,
    import_id: &str,
    path: &Path,
    file_name: &str,
    settings: &ImportSettings,
    meta: RequestMeta,
    progress: &(dyn Fn(ReadOutcome) + Sync),
) -> Result<ReadOutcome, ImportError> {
    store.set_import_status(import_id, "reading", None).await?;
    let outcome = read_and_submit(
        store, accepter, import_id, path, file_name, settings, meta, progress,
    )
    .await;
    match &outcome {
        Ok(_) => store.set_import_status(import_id, "done", None).await?,
        Err(error) => {
            let message = format!("{}: {error}", error.code());
            store
                .set_import_status(import_id, "failed", Some(&message))
                .await?;
        }
    }
    outcome
}

#[allow(clippy::too_many_arguments)]
async fn read_and_submit(
    store: &Store,
    accepter: &Accepter,
    import_id: &str,
    path: &Path,
    file_name: &str,
    settings: &ImportSettings,
    meta: RequestMeta,
    progress: &(dyn Fn(ReadOutcome) + Sync),
) -> Result<ReadOutcome, ImportError> {
    let (sender, mut receiver) = mpsc::channel::<Batch>(2);
    let source = import_source(import_id);
    let reading = {
        let path = path.to_owned();
        let file_name = file_name.to_owned();
        let settings = settings.clone();
        tokio::task::spawn_blocking(move || {
            let format = reader::detect_format(&file_name, &path)?;
            let mut mapper = RowMapper::new(&settings);
            reader::read(&path, format, &read_options(&settings), &mut |event| {
                match event {
                    Event::Header(header) => mapper.header(&header.names)?,
                    Event::Rows(rows) => {
                        let received_at = Utc::now();
                        let mut batch = Batch {
                            items: Vec::with_capacity(rows.len()),
                            rejected: Vec::new(),
                            read: 0,
                        };
                        for row in rows {
                            // A report's other sections are not rows of the import.
                            let Some(mapped) = mapper.row(&row)? else {
                                continue;
                            };
                            batch.read += 1;
                            match mapped {
                                Ok(fields) => {
                                    let raw = serde_json::to_vec(&row.cells).unwrap_or_default();
                                    batch.items.push(Inbound {
                                        source: source.clone(),
                                        external_id: Some(format!("row:{}", row.number)),
                                        received_at,
                                        fields,
                                        raw,
                                    });
                                }
                                Err(errors) => batch.rejected.extend(errors),
                            }
                        }
                        sender.blocking_send(batch).map_err(|_| {
                            ImportError::Aborted("the import stopped submitting".into())
                        })?;
                    }
                }
                Ok(Flow::Continue)
            })
        })
    };
    let mut outcome = ReadOutcome::default();
    let mut failure = None;
    while let Some(batch) = receiver.recv().await {
        let rows_rejected = batch
            .rejected
            .iter()
            .map(|e| e.row)
            .collect::<std::collections::HashSet<_>>()
            .len() as u64;
        let count = batch.items.len() as u64;
        if !batch.items.is_empty() {
            let answer = accepter
                .accept(Submission {
                    items: batch.items,
                    meta: meta.clone(),
                    idempotency: None,
                })
                .await;
            // Without an Idempotency-Key the answer is always `New`; rows submitted
            // before (a restarted import) are answered as duplicates, still durable.
            if let Err(error) = answer {
                failure = Some(ImportError::Store(error.to_string()));
                break;
            }
        }
        outcome.rows_read += batch.read;
        outcome.rows_accepted += count;
        outcome.rows_rejected_at_read += rows_rejected;
        store
            .record_import_progress(
                import_id,
                outcome.rows_read as i64,
                outcome.rows_accepted as i64,
                &batch.rejected,
            )
            .await?;
        progress(outcome);
    }
    drop(receiver);
    let read = reading
        .await
        .map_err(|e| ImportError::Aborted(e.to_string()))?;
    if let Some(failure) = failure {
        return Err(failure);
    }
    read?;
    Ok(outcome)
}
