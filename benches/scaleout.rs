//! End to end, from HTTP accept to committed record: the embedded single process against
//! a NATS JetStream gateway with 1, 2 and 4 worker processes, all on this machine, in one
//! run; and a NATS restart in the middle of a load (acknowledged vs stored).
//!
//!     cargo bench --bench scaleout -- --pg postgres://postgres@127.0.0.1:5432/test \
//!         [--leads 5000] [--workers 1,2,4] [--concurrency 32] [--restart-nats] [--restart-pg]
//!         [--pause-ms 0]
//! `--restart-pg` restarts this machine's PostgreSQL cluster mid-load (`pg_ctlcluster`):
//! run it only where nothing else uses that server.
//!
//! Every configuration gets a fresh PostgreSQL database. NATS is a nats-server of the
//! run's own (a free port, a temporary store directory), so the run can restart it
//! without disturbing anything else on the machine. The gateway runs in-process; the
//! workers are `leadgate serve --role worker` child processes. Leads are unique people
//! posted one per request to `POST /v1/partner/leads` from N keep-alive connections as
//! fast as they are answered. Throughput is leads / (last commit − first send); latency
//! is each inbox row's commit time minus its accept time (`updated_at − received_at`).

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use leadgate::config::{Config, NatsSection, QueueKind, Role};
use leadgate::startup::Application;
use leadgate::store::{RequestMeta, Store, WriteContext};
use support::fresh_pg;

struct Args {
    pg: String,
    leads: usize,
    workers: Vec<usize>,
    concurrency: usize,
    restart: bool,
    restart_pg: bool,
    /// Pause after each answer, per connection: a paced load for latency at low rate.
    pause_ms: u64,
}

fn parse_args() -> Args {
    let mut args = Args {
        pg: std::env::var("LEADGATE_TEST_PG").unwrap_or_default(),
        leads: 5000,
        workers: vec![1, 2, 4],
        concurrency: 32,
        restart: false,
        restart_pg: false,
        pause_ms: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--pg" => args.pg = it.next().unwrap_or_default(),
            "--leads" => args.leads = it.next().and_then(|v| v.parse().ok()).unwrap_or(5000),
            "--concurrency" => {
                args.concurrency = it.next().and_then(|v| v.parse().ok()).unwrap_or(32)
            }
            "--workers" => {
                args.workers = it
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|w| w.parse().ok())
                    .collect()
            }
            "--restart-nats" => args.restart = true,
            "--restart-pg" => args.restart_pg = true,
            "--pause-ms" => args.pause_ms = it.next().and_then(|v| v.parse().ok()).unwrap_or(0),
            _ => {} // cargo bench passes --bench
        }
    }
    assert!(
        !args.pg.is_empty(),
        "--pg postgres://…/test (or LEADGATE_TEST_PG)"
    );
    args
}

/// The run's own nats-server.
struct OwnNats {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl OwnNats {
    fn start(&mut self) {
        let binary = [
            "/usr/sbin/nats-server",
            "/usr/bin/nats-server",
            "/usr/local/bin/nats-server",
        ]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("nats-server is installed");
        self.child = Some(
            Command::new(binary)
                .args([
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-js",
                    "-sd",
                ])
                .arg(self.dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nats-server starts"),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Report {
    acked: usize,
    refused: usize,
    stored: i64,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn count(store: &Store, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(store.pool())
        .await
        .unwrap_or(0)
}

async fn run(
    args: &Args,
    workers: Option<usize>,
    nats: &Arc<std::sync::Mutex<OwnNats>>,
    restart: Restart,
) -> Report {
    let database_url = fresh_pg(&args.pg).await;
    let data = tempfile::tempdir().expect("temporary directory");
    let port = nats.lock().expect("nats").port;
    let section = NatsSection {
        url: format!("nats://127.0.0.1:{port}"),
        stream: format!("bench_{}", uuid::Uuid::now_v7().simple()),
        ..NatsSection::default()
    };
    let config = Config {
        listen: "127.0.0.1:0".parse().expect("address"),
        data_dir: data.path().to_path_buf(),
        database_url: database_url.clone(),
        log_filter: "warn".into(),
        role: if workers.is_some() {
            Role::Gateway
        } else {
            Role::All
        },
        queue: if workers.is_some() {
            QueueKind::Nats
        } else {
            QueueKind::Embedded
        },
        nats: section.clone(),
        rate_limit_per_minute: 0,
        ..Config::default()
    };
    let app = Application::build(config).await.expect("app builds");
    let base = format!("http://127.0.0.1:{}", app.port());
    let store = app.store();
    let handle = app.handle();
    let served = tokio::spawn(app.run_until_stopped());
    let ctx = WriteContext::new("bench", "bench", RequestMeta::default());
    let key = store
        .create_token(&ctx, "bench", "partner:bench", "partner", None)
        .await
        .expect("token")
        .secret;
    let mut children: Vec<Child> = (0..workers.unwrap_or(0))
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_leadgate"))
                .args(["serve", "--role", "worker", "--listen", "127.0.0.1:0"])
                .env("LEADGATE_QUEUE", "nats")
                .env("LEADGATE_DATABASE_URL", &database_url)
                .env("LEADGATE_DATA_DIR", data.path())
                .env("LEADGATE_NATS__URL", &section.url)
                .env("LEADGATE_NATS__STREAM", &section.stream)
                .env("LEADGATE_LOG_FILTER", "warn")
                .stdout(Stdio::null())
                // Workers' warnings (NATS gone, retries) show in the run's output.
                .stderr(Stdio::inherit())
                .spawn()
                .expect("worker process starts")
        })
        .collect();
    if workers.is_some() {
        // The workers take their partition leases.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }

    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (next, acked, refused) = (next.clone(), acked.clone(), refused.clone());
        let (base, key, leads, pause) = (
            base.clone(),
            key.clone(),
            args.leads,
            Duration::from_millis(args.pause_ms),
        );
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= leads {
                    break;
                }
                let lead = serde_json::json!({
                    "external_id": format!("b-{n}"), "first_name": format!("First{n}"),
                    "last_name": format!("Last{}", n * 7919 % 100_003),
                    "email": format!("person{n}@bench{}.example", n % 97),
                    "phone": format!("+1415{:07}", n)});
                tokio::time::sleep(pause).await;
                // A client as the 503 asks: wait Retry-After, send the same lead again.
                for _ in 0..60 {
                    match client
                        .post(format!("{base}/v1/partner/leads"))
                        .bearer_auth(&key)
                        .json(&lead)
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_success() => {
                            acked.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Ok(r) if r.status() == 503 => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            let wait = r
                                .headers()
                                .get("retry-after")
                                .and_then(|v| v.to_str().ok()?.parse().ok())
                                .unwrap_or(1);
                            tokio::time::sleep(Duration::from_secs(wait)).await;
                        }
                        _ => break,
                    }
                }
            }
        }));
    }
    if restart == Restart::Postgres {
        // PostgreSQL is restarted a third of the way in: workers' transactions fail and
        // their messages are delivered again once it is back.
        let (next, leads) = (next.clone(), args.leads);
        tasks.push(tokio::spawn(async move {
            while next.load(Ordering::Relaxed) < leads / 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let cluster = std::fs::read_dir("/etc/postgresql")
                .ok()
                .and_then(|mut d| d.next())
                .and_then(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .unwrap_or_else(|| "15".into());
            let status = std::process::Command::new("pg_ctlcluster")
                .args(["--skip-systemctl-redirect", &cluster, "main", "restart"])
                .status();
            eprintln!("  postgresql restarted: {status:?}");
        }));
    }
    if restart == Restart::Nats {
        // NATS is killed a third of the way in and back two seconds later.
        let (nats, next, leads) = (nats.clone(), next.clone(), args.leads);
        tasks.push(tokio::spawn(async move {
            while next.load(Ordering::Relaxed) < leads / 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            nats.lock().expect("nats").kill();
            eprintln!("  nats-server killed (SIGKILL)");
            tokio::time::sleep(Duration::from_secs(2)).await;
            nats.lock().expect("nats").start();
            eprintln!("  nats-server started again");
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let acked = acked.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut stored = 0;
    while Instant::now() < deadline {
        stored = count(&store, "SELECT COUNT(*) FROM inbox WHERE status = 'done'").await;
        if stored as usize >= acked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT received_at, updated_at FROM inbox WHERE status = 'done'")
            .fetch_all(store.pool())
            .await
            .expect("latencies");
    let mut latencies: Vec<f64> = rows
        .iter()
        .filter_map(|(accepted, committed)| {
            let a = chrono::DateTime::parse_from_rfc3339(accepted).ok()?;
            let c = chrono::DateTime::parse_from_rfc3339(committed).ok()?;
            Some((c - a).num_microseconds()? as f64 / 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let pick = |p: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let report = Report {
        acked,
        refused: refused.load(Ordering::Relaxed),
        stored,
        seconds,
        p50_ms: pick(0.5),
        p99_ms: pick(0.99),
    };
    for child in &mut children {
        let _ = child.kill();
        let _ = child.wait();
    }
    handle.stop(true).await;
    let _ = served.await;
    report
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restart {
    None,
    Nats,
    Postgres,
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    leadgate::telemetry::init_logging(leadgate::config::LogFormat::Text, "error");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let nats = Arc::new(std::sync::Mutex::new(OwnNats {
        port,
        dir: tempfile::tempdir().expect("temporary directory"),
        child: None,
    }));
    nats.lock().expect("nats").start();
    println!(
        "{} leads, {} connections, PostgreSQL; nats-server on port {port}",
        args.leads, args.concurrency
    );
    println!(
        "| setup | leads/s end to end | accept→committed p50 | p99 | acknowledged | 503 answers (retried) | stored |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let mut setups: Vec<(String, Option<usize>, Restart)> = vec![(
        "embedded, one process (role all)".into(),
        None,
        Restart::None,
    )];
    for w in &args.workers {
        setups.push((
            format!("NATS gateway + {w} worker process(es)"),
            Some(*w),
            Restart::None,
        ));
    }
    if args.restart {
        let w = args.workers.first().copied().unwrap_or(1);
        setups.push((
            format!("NATS + {w} worker(s), nats-server killed and restarted"),
            Some(w),
            Restart::Nats,
        ));
    }
    if args.restart_pg {
        let w = args.workers.first().copied().unwrap_or(1);
        setups.push((
            format!("NATS + {w} worker(s), PostgreSQL restarted"),
            Some(w),
            Restart::Postgres,
        ));
    }
    for (label, workers, restart) in setups {
        let r = run(&args, workers, &nats, restart).await;
        println!(
            "| {label} | {:.0} | {:.1} ms | {:.1} ms | {} | {} | {} |",
            r.stored as f64 / r.seconds,
            r.p50_ms,
            r.p99_ms,
            r.acked,
            r.refused,
            r.stored
        );
    }
}
