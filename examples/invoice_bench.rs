//! Invoice creation with gapless numbering under concurrent writers: W tasks each create
//! N invoices (one line, 20% tax) through the audited write path, each in its own
//! transaction that also takes the series counter. Asserts the numbers are exactly
//! 1..=W×N (no gap, no duplicate) and prints invoices/s and the latency percentiles.
//!
//! cargo run --release --example invoice_bench -- [--writers 16] [--per-writer 250] [--pg URL]

#[path = "../benches/support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::time::Instant;

use leadgate::billing::BillingConfig;
use leadgate::billing::invoices::{self, NewInvoice};
use leadgate::billing::lines::LineInput;
use leadgate::domain::RecordKind;
use leadgate::store::{Change, RequestMeta, Store, WriteContext};
use serde_json::{Value, json};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let writers: usize = arg("--writers").and_then(|n| n.parse().ok()).unwrap_or(16);
    let per_writer: usize = arg("--per-writer")
        .and_then(|n| n.parse().ok())
        .unwrap_or(250);
    let dir = tempfile::tempdir().expect("temp dir");
    let (url, backend) = match arg("--pg") {
        Some(base) => (support::fresh_pg(&base).await, "PostgreSQL"),
        None => (
            format!("sqlite://{}/bench.db?mode=rwc", dir.path().display()),
            "SQLite",
        ),
    };
    let store = Store::connect(&url, writers as u32 + 2)
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let ctx = WriteContext::new("bench", "bench", RequestMeta::default());
    let Value::Object(fields) = json!({"name": "Bench account"}) else {
        unreachable!("an object literal")
    };
    let account = store
        .write(
            &ctx,
            vec![Change::Insert {
                kind: RecordKind::Account,
                id: None,
                fields,
            }],
        )
        .await
        .expect("account")[0]
        .id
        .clone();
    let config = BillingConfig::default();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let (store, ctx, config, account) =
            (store.clone(), ctx.clone(), config.clone(), account.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_writer);
            let mut ids = Vec::with_capacity(per_writer);
            for n in 0..per_writer {
                let began = Instant::now();
                let new = NewInvoice {
                    account_id: Some(account.clone()),
                    currency: "EUR".into(),
                    lines: vec![LineInput {
                        product: Some(format!("Item {writer}-{n}")),
                        description: None,
                        quantity: json!("2"),
                        unit_price: json!(format!("{writer}.{n:02}")),
                        discount: None,
                        tax_rate: Some(json!("20")),
                    }],
                    series: None,
                    issue_date: Some("2026-06-01".into()),
                    payment_terms_days: None,
                    owner_id: None,
                    custom: None,
                    issue: true,
                };
                let mut tx = store.begin_write().await.expect("begin");
                let id = invoices::create(&mut tx, &ctx, &config, new)
                    .await
                    .expect("invoice");
                tx.commit().await.expect("commit");
                latencies.push(began.elapsed().as_secs_f64() * 1000.0);
                ids.push(id);
            }
            (latencies, ids)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        let (times, _) = task.await.expect("writer");
        latencies.extend(times);
    }
    let seconds = start.elapsed().as_secs_f64();
    let total = writers * per_writer;
    let sequences: Vec<i64> =
        sqlx::query_scalar("SELECT sequence FROM invoices WHERE series = $1 AND year = $2")
            .bind("INV")
            .bind(2026_i64)
            .fetch_all(store.pool())
            .await
            .expect("sequences");
    let distinct: BTreeSet<i64> = sequences.iter().copied().collect();
    assert_eq!(sequences.len(), total, "one number per invoice");
    assert_eq!(
        distinct,
        (1..=total as i64).collect::<BTreeSet<i64>>(),
        "numbers are 1..={total} without gaps or duplicates"
    );
    latencies.sort_by(f64::total_cmp);
    println!(
        "{backend}: {total} invoices by {writers} concurrent writers in {seconds:.2}s = {:.0} invoices/s; \
         latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; numbers INV-2026-000001..{total:06}, gapless",
        total as f64 / seconds,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default(),
    );
    store.close().await;
}
