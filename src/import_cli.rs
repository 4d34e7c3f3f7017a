//! `leadgate import FILE`: the same import code as `POST /v1/imports`, against the
//! configured store, with a progress bar; processes the rows in-process unless told not to.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use leadgate::config::Config;
use leadgate::import::job::{self, ImportSettings, ReadOutcome};
use leadgate::pipeline::worker::Worker;
use leadgate::queue::Accepter;
use leadgate::startup::{build_pipeline, open_store};
use leadgate::store::RequestMeta;
use leadgate::store::imports::NewImport;
use leadgate::telemetry::Metrics;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub async fn run(
    config: &Config,
    file: &Path,
    sheet: Option<String>,
    mapping: Option<&Path>,
    dry_run: bool,
    no_wait: bool,
) -> anyhow::Result<()> {
    let mapping: BTreeMap<String, String> = match mapping {
        None => BTreeMap::new(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| {
                format!(
                    "{}: a JSON object of header → field, custom or ignore",
                    path.display()
                )
            })?
        }
    };
    let file_name = file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("upload")
        .to_owned();
    let settings = ImportSettings {
        sheet: sheet.clone(),
        mapping: mapping.clone(),
        ..ImportSettings::default()
    };
    if dry_run {
        let answer = job::dry_run(file.to_owned(), file_name, settings).await?;
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    let started = Instant::now();
    let store = open_store(config).await?;
    let sha256 = {
        let file = file.to_owned();
        tokio::task::spawn_blocking(move || job::file_sha256(&file)).await??
    };
    let mapping_text = (!mapping.is_empty())
        .then(|| serde_json::to_string(&mapping))
        .transpose()?;
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let (import, created) = store
        .create_import(&NewImport {
            file_name: &file_name,
            content_sha256: &sha256,
            sheet: sheet.as_deref(),
            mapping: mapping_text.as_deref(),
            created_by: &format!("cli:{user}"),
        })
        .await?;
    if !created {
        eprintln!(
            "this file was imported before as {} ({}); nothing to do",
            import.id, import.status
        );
        println!("{}", serde_json::to_string_pretty(&import)?);
        return Ok(());
    }
    let pipeline = Arc::new(build_pipeline(config)?);
    let metrics = Arc::new(Metrics::new());
    let appended = Arc::new(Notify::new());
    let shutdown = CancellationToken::new();
    let (accepter, writer) = Accepter::start(
        store.clone(),
        config.group_commit_max,
        appended.clone(),
        metrics.clone(),
    );
    let worker = (!no_wait).then(|| {
        Worker {
            store: store.clone(),
            pipeline: pipeline.clone(),
            batch: config.worker_batch,
            batch_max: config.worker_batch_max,
            appended: appended.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
        }
        .spawn()
    });

    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {elapsed_precise} read {human_pos} rows ({per_sec}) {msg}",
        )
        .expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let meta = RequestMeta {
        request_id: Some(format!("import-{}", import.id)),
        ip: None,
        user_agent: Some(format!("leadgate-cli/{}", env!("CARGO_PKG_VERSION"))),
    };
    let progress = |outcome: ReadOutcome| {
        bar.set_position(outcome.rows_read);
        bar.set_message(format!(
            "accepted {}, rejected {}",
            outcome.rows_accepted, outcome.rows_rejected_at_read
        ));
    };
    let read = job::run(
        &store, &accepter, &import.id, file, &file_name, &settings, meta, &progress,
    )
    .await;
    bar.finish();
    drop(accepter);
    let _ = writer.await;
    let read = read?;
    let read_secs = started.elapsed().as_secs_f64();

    if let Some(worker) = worker {
        let bar = ProgressBar::new(read.rows_accepted);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {elapsed_precise} processed [{wide_bar}] {human_pos}/{human_len} ({per_sec}, eta {eta})",
            )
            .expect("valid template"),
        );
        // Progress from this process's own worker; the store is asked only whether a row
        // is still open (counting the import's rows reads all of them: seconds at a million).
        let settled = || {
            metrics
                .inbound_processed
                .with_label_values(&["import"])
                .get()
                + metrics.inbound_failed.with_label_values(&["import"]).get()
        };
        while store.import_has_open_rows(&import.id).await? {
            bar.set_position(settled());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        bar.set_position(settled());
        bar.finish();
        shutdown.cancel();
        let _ = worker.await;
    }
    let total_secs = started.elapsed().as_secs_f64();
    let processing = store.import_processing(&import.id).await?;
    let summary = json!({
        "import_id": import.id,
        "file": file_name,
        "rows_read": read.rows_read,
        "rows_accepted": read.rows_accepted,
        "rows_rejected_at_read": read.rows_rejected_at_read,
        "processed": processing,
        "read_seconds": (read_secs * 100.0).round() / 100.0,
        "read_rows_per_second": (read.rows_read as f64 / read_secs).round(),
        "total_seconds": (total_secs * 100.0).round() / 100.0,
        "total_rows_per_second": (read.rows_read as f64 / total_secs).round(),
        "errors": store.import_row_errors(&import.id, Some(20)).await?,
    });
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
