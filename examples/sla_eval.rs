//! The cost of SLA timer evaluation: seeds N open tickets (through the audited write
//! path), a share of them already past a due time, then times evaluator passes — the
//! first records the breaches, the next finds nothing new — and the business-hours
//! arithmetic that computes due times.
//!
//! cargo run --release --example sla_eval -- [--tickets 100000] [--due-percent 1] [--pg URL]

use std::time::Instant;

use chrono::{Duration, Utc};
use leadgate::domain::RecordKind;
use leadgate::domain::value::format_timestamp;
use leadgate::service::evaluator::evaluate_sla;
use leadgate::service::sla::{BusinessHoursConfig, Calendar, SlaTarget, due_times};
use leadgate::store::{Change, RequestMeta, Store, WriteContext};
use leadgate::telemetry::Metrics;
use serde_json::{Value, json};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

const PRIORITIES: [&str; 4] = ["urgent", "high", "normal", "low"];

#[tokio::main]
async fn main() {
    let tickets: usize = arg("--tickets")
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let due_percent: usize = arg("--due-percent")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let url = arg("--pg")
        .unwrap_or_else(|| format!("sqlite://{}/bench.db?mode=rwc", dir.path().display()));
    let store = Store::connect(&url, 4).await.expect("connect");
    store.migrate().await.expect("migrate");
    let ctx = WriteContext::new("bench", "bench", RequestMeta::default());
    let now = Utc::now();
    // Every `every`-th ticket is past its first-response due time; the rest run.
    let every = 100 / due_percent.clamp(1, 100);

    let start = Instant::now();
    let batch = 2_000;
    for offset in (0..tickets).step_by(batch) {
        let changes: Vec<Change> = (offset..(offset + batch).min(tickets))
            .map(|n| {
                let first_due = if n % every == 0 {
                    now - Duration::minutes(5)
                } else {
                    now + Duration::minutes(60 + (n % 5000) as i64)
                };
                let Value::Object(fields) = json!({
                    "subject": format!("Ticket {n}"),
                    "status": if n % 2 == 0 { "new" } else { "open" },
                    "priority": PRIORITIES[n % PRIORITIES.len()],
                    "number": n as i64 + 1,
                    "account_id": format!("account-{}", n % 5000),
                    "owner_id": format!("agent-{}", n % 50),
                    "first_response_due": format_timestamp(first_due),
                    "resolution_due": format_timestamp(now + Duration::days(3)),
                }) else {
                    unreachable!()
                };
                Change::Insert {
                    kind: RecordKind::Ticket,
                    id: None,
                    fields,
                }
            })
            .collect();
        store.write(&ctx, changes).await.expect("seed");
    }
    println!(
        "seeded {tickets} open tickets ({}% past first-response due) in {:.1} s on {}",
        due_percent,
        start.elapsed().as_secs_f64(),
        if url.starts_with("sqlite") {
            "SQLite"
        } else {
            "PostgreSQL"
        }
    );

    let metrics = Metrics::new();
    for label in [
        "first pass (records breaches)",
        "second pass (nothing new)",
        "third pass",
    ] {
        let start = Instant::now();
        let pass = evaluate_sla(&store, &metrics, Utc::now())
            .await
            .expect("evaluate");
        let elapsed = start.elapsed();
        println!(
            "{label}: {:.1} ms, {} first-response + {} resolution breaches; {:.2} µs per open ticket",
            elapsed.as_secs_f64() * 1000.0,
            pass.first_response,
            pass.resolution,
            elapsed.as_secs_f64() * 1e6 / tickets as f64
        );
    }

    // The arithmetic each ticket creation, resume and priority change runs.
    let calendar = Calendar::from_config(Some(&BusinessHoursConfig {
        time_zone: "Europe/London".into(),
        days: ["mon", "tue", "wed", "thu", "fri"]
            .map(str::to_owned)
            .to_vec(),
        start: "09:00".into(),
        end: "17:30".into(),
    }))
    .expect("calendar");
    let target = SlaTarget {
        first_response_minutes: 240,
        resolution_minutes: 3 * 8 * 60,
    };
    let start = Instant::now();
    let mut last = now;
    for n in 0..tickets {
        let created = now + Duration::minutes((n % 20_000) as i64);
        let (_, resolution) = due_times(
            &calendar,
            created,
            target,
            Duration::minutes((n % 90) as i64),
        );
        last = last.max(resolution);
    }
    let elapsed = start.elapsed();
    println!(
        "due times under business hours (Europe/London, Mon–Fri 09:00–17:30): {tickets} tickets in {:.1} ms, {:.2} µs each (latest {last})",
        elapsed.as_secs_f64() * 1000.0,
        elapsed.as_secs_f64() * 1e6 / tickets as f64
    );
}
