//! The cost of access control: list queries with and without the row-reach filter at
//! N records, and the audit trail's cost per change.
//!
//! cargo run --release --example access_bench -- [--records 1000000] [--pg URL]

use std::time::Instant;

use leadgate::domain::RecordKind;
use leadgate::store::read::ListQuery;
use leadgate::store::{Change, RequestMeta, Store, WriteContext};
use serde_json::{Map, Value, json};

const OWNERS: usize = 500;
const STATUSES: [&str; 4] = ["new", "working", "nurturing", "qualified"];

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn time_lists(store: &Store, query: &ListQuery, runs: usize) -> (f64, f64) {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let page = store.list(RecordKind::Lead, query).await.expect("list");
        assert!(!page.is_empty());
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

#[tokio::main]
async fn main() {
    let records: usize = arg("--records")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let url = arg("--pg")
        .unwrap_or_else(|| format!("sqlite://{}/bench.db?mode=rwc", dir.path().display()));
    let store = Store::connect(&url, 4).await.expect("connect");
    store.migrate().await.expect("migrate");
    let ctx = WriteContext::new("bench", "bench", RequestMeta::default());

    let start = Instant::now();
    let batch = 2_000;
    for offset in (0..records).step_by(batch) {
        let changes: Vec<Change> = (offset..(offset + batch).min(records))
            .map(|n| {
                let Value::Object(fields) = json!({
                    "first_name": format!("First{n}"), "last_name": format!("Last{}", n % 9973),
                    "email": format!("person{n}@example.org"),
                    "status": STATUSES[(n / 7) % STATUSES.len()],
                    "owner_id": format!("user-{}", n % OWNERS),
                }) else {
                    unreachable!("a JSON object literal")
                };
                Change::Insert {
                    kind: RecordKind::Lead,
                    id: None,
                    fields,
                }
            })
            .collect();
        store.write(&ctx, changes).await.expect("insert");
    }
    let seconds = start.elapsed().as_secs_f64();
    // What the server does at start and hourly: fresh planner statistics.
    store.optimize().await.expect("optimize");
    println!(
        "loaded {records} leads through the audited write path in {seconds:.1}s ({:.0}/s)",
        records as f64 / seconds
    );

    // A rep owns 1/500 of the leads; a manager's team of 20 owns 4%.
    let rep = vec!["user-7".to_owned()];
    let team: Vec<String> = (0..20).map(|n| format!("user-{n}")).collect();
    let page = |owners: Option<Vec<String>>, status: Option<&'static str>| ListQuery {
        filters: status
            .map(|s| {
                vec![(
                    RecordKind::Lead.field("status").expect("status"),
                    s.to_owned(),
                )]
            })
            .unwrap_or_default(),
        owners,
        sort: "updated_at",
        descending: true,
        limit: 50,
        offset: 0,
    };
    println!("list query (50 newest leads), 300 runs each: p50 / p99 ms");
    for (label, query) in [
        ("no permission filter (admin)", page(None, None)),
        ("rep: own records", page(Some(rep.clone()), None)),
        ("manager: team of 20", page(Some(team.clone()), None)),
        ("status filter, admin", page(None, Some("qualified"))),
        (
            "status filter, rep",
            page(Some(rep.clone()), Some("qualified")),
        ),
        (
            "status filter, manager",
            page(Some(team.clone()), Some("qualified")),
        ),
    ] {
        let (p50, p99) = time_lists(&store, &query, 300).await;
        println!("  {label:32} {p50:7.2} / {p99:7.2}");
    }

    // Audit cost per change: the write path (read old values, update, audit rows on the
    // hash chain, outbox) against the same statements without the audit rows.
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM leads ORDER BY id LIMIT 20000")
        .fetch_all(store.pool())
        .await
        .expect("ids");
    let per_tx = 20;
    let start = Instant::now();
    for chunk in ids[..10_000].chunks(per_tx) {
        let changes = chunk
            .iter()
            .map(|id| Change::Update {
                kind: RecordKind::Lead,
                id: id.clone(),
                fields: Map::from_iter([("title".to_owned(), json!("Head of Data"))]),
                expected_version: None,
            })
            .collect();
        store.write(&ctx, changes).await.expect("update");
    }
    let audited = start.elapsed().as_secs_f64() / 10_000.0 * 1e6;
    // Interleaved rounds, so a busy moment of the machine costs both arms alike.
    let (mut bare, mut with_audit) = (0.0, 0.0);
    for round in 0..5 {
        let at = 10_000 + round * 2_000;
        bare += raw_updates(&store, &ids[at..at + 1_000], per_tx, false).await / 5.0;
        with_audit += raw_updates(&store, &ids[at + 1_000..at + 2_000], per_tx, true).await / 5.0;
    }
    println!(
        "one-field update, {per_tx} per transaction: write path {audited:.0} µs; \
         same statements without audit {bare:.0} µs, with the audit row on the hash chain \
         {with_audit:.0} µs: audit overhead {:.1}%",
        (with_audit - bare) / bare * 100.0
    );
    let start = Instant::now();
    let report = store.verify_audit().await.expect("verify");
    println!(
        "audit verify: {} rows in {:.1}s, intact: {}",
        report.rows,
        start.elapsed().as_secs_f64(),
        report.broken.is_none()
    );
}

/// Load, update and outbox row per change, one statement each, with or without the
/// change's audit row appended to the hash chain by the write path's own
/// `audit::append` (chain head read once per transaction, SHA-256, one multi-row
/// insert): the difference is what auditing costs.
async fn raw_updates(store: &Store, ids: &[String], per_tx: usize, audit: bool) -> f64 {
    use leadgate::store::audit::{AuditContent, append};
    use leadgate::store::write::{Placeholders, values_clause};
    let start = Instant::now();
    for chunk in ids.chunks(per_tx) {
        let mut tx = store.begin_write().await.expect("tx");
        let mut changed = Vec::new();
        let mut outbox = Vec::new();
        for id in chunk {
            let now = leadgate::domain::value::now_timestamp();
            let old: Option<String> = sqlx::query_scalar("SELECT title FROM leads WHERE id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await
                .expect("load");
            sqlx::query(
                "UPDATE leads SET title = $1, version = version + 1, updated_at = $2 WHERE id = $3",
            )
            .bind("Head of Data")
            .bind(&now)
            .bind(id)
            .execute(&mut *tx)
            .await
            .expect("update");
            outbox.push((id.clone(), now.clone()));
            if audit {
                changed.push((now, id, old.map(|t| json!(t).to_string())));
            }
        }
        // As the write path does: the transaction's outbox and audit rows, one statement each.
        let placeholders = Placeholders::of(&tx);
        let sql = format!(
            "INSERT INTO outbox (record_kind, record_id, op, created_at) VALUES {}",
            values_clause(placeholders, outbox.len(), 4)
        );
        let mut query = sqlx::query(&sql);
        for (id, now) in outbox {
            query = query.bind("leads").bind(id).bind("update").bind(now);
        }
        query.execute(&mut *tx).await.expect("outbox");
        let rows: Vec<AuditContent> = changed
            .iter()
            .map(|(now, id, old)| AuditContent {
                at: now,
                actor: "bench",
                channel: "bench",
                action: "update",
                record_kind: "leads",
                record_id: id,
                field: Some("title"),
                old_value: old.as_deref(),
                new_value: Some("\"Head of Data\""),
                ip: Some("127.0.0.1"),
                user_agent: Some("bench"),
                request_id: None,
            })
            .collect();
        append(&mut tx, &rows).await.expect("audit rows");
        tx.commit().await.expect("commit");
    }
    start.elapsed().as_secs_f64() / ids.len() as f64 * 1e6
}
