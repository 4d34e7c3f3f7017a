//! The cost of access control: list queries with and without the row-reach filter at
//! N records, and the audit trail's cost per change.
//!
//! cargo run --release --example access_bench -- [--records 1000000] [--pg URL]
//!     [--data DIR] [--audit-only] [--rounds N] [--changes N] [--skip N]
//!
//! `--data DIR` keeps the SQLite file in DIR and loads the records only when DIR holds
//! fewer; `--audit-only` then runs just the audit rounds, so they can be repeated (or run
//! under `valgrind --tool=callgrind --dump-before='*callgrind_mark_*'`, where each arm
//! ends in a dump of its own: see `callgrind_mark_arm_ends`) without loading a million
//! records each time. `--skip N` starts the rounds N records further on, so repeated runs
//! on one data dir update records no earlier run touched.

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

fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

fn number(name: &str, default: usize) -> usize {
    arg(name).and_then(|n| n.parse().ok()).unwrap_or(default)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
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
    let records = number("--records", 1_000_000);
    let audit_only = flag("--audit-only");
    let temp = tempfile::tempdir().expect("temp dir");
    let data = arg("--data").map_or_else(|| temp.path().to_owned(), std::path::PathBuf::from);
    std::fs::create_dir_all(&data).expect("data dir");
    let url =
        arg("--pg").unwrap_or_else(|| format!("sqlite://{}/bench.db?mode=rwc", data.display()));
    let store = Store::connect(&url, 4).await.expect("connect");
    store.migrate().await.expect("migrate");
    let ctx = WriteContext::new("bench", "bench", RequestMeta::default());

    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM leads")
        .fetch_one(store.pool())
        .await
        .expect("count");
    if stored as usize >= records {
        println!("reusing {stored} stored leads in {}", data.display());
    } else {
        load(&store, &ctx, records).await;
    }
    // The lookups by record and by actor of what is stored, as the server keeps them.
    let start = Instant::now();
    let indexed = store.index_audit().await.expect("index audit");
    if indexed > 0 {
        println!(
            "audit lookups: {indexed} rows indexed in {:.1}s",
            start.elapsed().as_secs_f64()
        );
    }
    if !audit_only {
        list_queries(&store).await;
    }
    audit_rounds(&store, &ctx, audit_only).await;
    if !audit_only {
        let start = Instant::now();
        let report = store.verify_audit().await.expect("verify");
        println!(
            "audit verify: {} rows in {:.1}s, intact: {}",
            report.rows,
            start.elapsed().as_secs_f64(),
            report.broken.is_none()
        );
    }
}

/// `records` leads over [`OWNERS`] owners, through the audited write path.
async fn load(store: &Store, ctx: &WriteContext, records: usize) {
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
        store.write(ctx, changes).await.expect("insert");
    }
    let seconds = start.elapsed().as_secs_f64();
    // What the server does at start and hourly: fresh planner statistics.
    store.optimize().await.expect("optimize");
    println!(
        "loaded {records} leads through the audited write path in {seconds:.1}s ({:.0}/s)",
        records as f64 / seconds
    );
}

async fn list_queries(store: &Store) {
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
        let (p50, p99) = time_lists(store, &query, 300).await;
        println!("  {label:32} {p50:7.2} / {p99:7.2}");
    }
}

/// Audit cost per change: the write path (read old values, update, audit rows on the
/// hash chain, outbox) and the same statements with and without the audit rows, in
/// interleaved rounds whose order alternates, so drift and a busy moment of the machine
/// cost both arms alike; the figure is the median of the rounds' ratios.
async fn audit_rounds(store: &Store, ctx: &WriteContext, audit_only: bool) {
    let rounds = number("--rounds", if audit_only { 15 } else { 5 });
    let changes = number("--changes", 1_000);
    let skip = number("--skip", 0);
    let write_path = if audit_only { 0 } else { 10_000 };
    // The first round reads the pages the rest find cached; it is run and not counted.
    let (warmup, rounds) = (1, rounds + 1);
    let needed = skip + write_path + rounds * 2 * changes;
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM leads ORDER BY id LIMIT $1")
        .bind(needed as i64)
        .fetch_all(store.pool())
        .await
        .expect("ids");
    assert!(
        ids.len() >= needed,
        "{needed} leads needed, {} stored",
        ids.len()
    );
    let ids = &ids[skip..];
    let per_tx = 20;
    if !audit_only {
        let start = Instant::now();
        for chunk in ids[..write_path].chunks(per_tx) {
            let changes = chunk
                .iter()
                .map(|id| Change::Update {
                    kind: RecordKind::Lead,
                    id: id.clone(),
                    fields: Map::from_iter([("title".to_owned(), json!("Head of Data"))]),
                    expected_version: None,
                })
                .collect();
            store.write(ctx, changes).await.expect("update");
        }
        let audited = start.elapsed().as_secs_f64() / write_path as f64 * 1e6;
        println!("one-field update, {per_tx} per transaction, write path: {audited:.0} µs");
    }
    let (mut bare, mut with_audit, mut overhead) = (Vec::new(), Vec::new(), Vec::new());
    let (mut bare_cpu, mut audit_cpu, mut cpu_overhead) = (Vec::new(), Vec::new(), Vec::new());
    println!(
        "round  order  wall µs without / with  overhead   CPU µs without / with  overhead \
         (round 0 warms the cache, not counted)"
    );
    for round in 0..rounds {
        let at = write_path + round * 2 * changes;
        let (bare_ids, audit_ids) = (&ids[at..at + changes], &ids[at + changes..at + 2 * changes]);
        let (without, with) = if round % 2 == 0 {
            let without = bare_arm(store, bare_ids, per_tx).await;
            (without, audited_arm(store, audit_ids, per_tx).await)
        } else {
            let with = audited_arm(store, audit_ids, per_tx).await;
            (bare_arm(store, bare_ids, per_tx).await, with)
        };
        let ratio = (with.wall - without.wall) / without.wall * 100.0;
        let cpu_ratio = (with.cpu - without.cpu) / without.cpu * 100.0;
        let order = if round % 2 == 0 { "b,a" } else { "a,b" };
        println!(
            "{round:5}  {order:5}  {:8.1} / {:6.1}  {ratio:7.1}%   {:8.1} / {:6.1}  {cpu_ratio:7.1}%",
            without.wall, with.wall, without.cpu, with.cpu
        );
        if round < warmup {
            continue;
        }
        bare.push(without.wall);
        with_audit.push(with.wall);
        overhead.push(ratio);
        bare_cpu.push(without.cpu);
        audit_cpu.push(with.cpu);
        cpu_overhead.push(cpu_ratio);
    }
    // What moved off the write path: the server's indexer, over the rows the audited arms
    // appended (one per change), measured the same way.
    callgrind_mark_indexer_begins();
    let (start, cpu) = (Instant::now(), process_cpu_ns());
    let indexed = store.index_audit().await.expect("index audit");
    let rows = indexed.max(1) as f64;
    let cpu = (process_cpu_ns() - cpu) as f64 / 1e3 / rows;
    callgrind_mark_arm_ends();
    let wall = start.elapsed().as_secs_f64() / rows * 1e6;
    println!(
        "audit lookups brought up to date: {indexed} rows, {wall:.1} µs wall and {cpu:.1} µs \
         CPU a row ({:.1}% and {:.1}% of a change without audit, medians)",
        wall / median(&bare) * 100.0,
        cpu / median(&bare_cpu) * 100.0
    );
    let (bare, with_audit) = (median(&bare), median(&with_audit));
    println!(
        "process CPU per change (medians): without audit {:.1} µs, with {:.1} µs; audit \
         overhead, median of the rounds: {:.1}%",
        median(&bare_cpu),
        median(&audit_cpu),
        median(&cpu_overhead)
    );
    println!(
        "one-field update, {per_tx} per transaction, {} rounds of {changes} changes per \
         arm: same statements without audit {bare:.1} µs, with the audit rows on the hash \
         chain {with_audit:.1} µs (medians); audit overhead, median of the rounds: {:.1}% \
         (of the medians: {:.1}%)",
        rounds - warmup,
        median(&overhead),
        (with_audit - bare) / bare * 100.0
    );
}

// Markers for `valgrind --tool=callgrind --dump-before='*callgrind_mark_*'`: each call
// ends a dump, so the dump triggered by `callgrind_mark_arm_ends` holds exactly the arm
// that the previous dump's marker began (every thread: SQLite runs on sqlx's worker).
// Their bodies differ so that no pass folds them into one function.
#[inline(never)]
fn callgrind_mark_bare_begins() {
    std::hint::black_box(1u8);
}

#[inline(never)]
fn callgrind_mark_audited_begins() {
    std::hint::black_box(2u8);
}

#[inline(never)]
fn callgrind_mark_indexer_begins() {
    std::hint::black_box(4u8);
}

#[inline(never)]
fn callgrind_mark_arm_ends() {
    std::hint::black_box(3u8);
}

/// CPU time of every thread of this process so far (SQLite runs on sqlx's worker
/// threads), in ns, from /proc: unlike the wall clock it leaves out the commits' fsync
/// waits and the time other processes hold the cores.
fn process_cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
            stat.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

/// An arm's cost per change: wall-clock µs and process CPU µs.
struct ArmCost {
    wall: f64,
    cpu: f64,
}

async fn bare_arm(store: &Store, ids: &[String], per_tx: usize) -> ArmCost {
    callgrind_mark_bare_begins();
    let cpu = process_cpu_ns();
    let wall = raw_updates(store, ids, per_tx, false).await;
    let cpu = (process_cpu_ns() - cpu) as f64 / 1e3 / ids.len() as f64;
    callgrind_mark_arm_ends();
    ArmCost { wall, cpu }
}

async fn audited_arm(store: &Store, ids: &[String], per_tx: usize) -> ArmCost {
    callgrind_mark_audited_begins();
    let cpu = process_cpu_ns();
    let wall = raw_updates(store, ids, per_tx, true).await;
    let cpu = (process_cpu_ns() - cpu) as f64 / 1e3 / ids.len() as f64;
    callgrind_mark_arm_ends();
    ArmCost { wall, cpu }
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
