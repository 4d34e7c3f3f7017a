//! How fast the console's pages render on the embedded store (SQLite + tantivy) with N
//! leads (default 1,000,000): the server's time for `/`, its files and each page's API
//! calls (the calls the page makes, one after another, as measured by a client on the same
//! machine), and, when chromium and chromedriver are installed, Chromium's own time from
//! navigation start to the page rendered with all its data (`performance.mark` set by
//! app.js once a page's calls are done).
//!
//! cargo run --release --example console_bench -- [--records 1000000] [--runs 100]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use leadgate::config::Config;
use leadgate::domain::RecordKind;
use leadgate::startup::Application;
use leadgate::store::{Change, RequestMeta, Store, WriteContext};
use serde_json::{Value, json};

const OWNERS: usize = 500;
const FIRST: [&str; 8] = [
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken",
];

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn object(value: Value) -> serde_json::Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn summary(mut times: Vec<f64>) -> String {
    times.sort_by(f64::total_cmp);
    format!(
        "p50 {:7.2} ms  p95 {:7.2} ms  p99 {:7.2} ms",
        percentile(&times, 0.5),
        percentile(&times, 0.95),
        percentile(&times, 0.99)
    )
}

async fn seed(url: &str, records: usize) -> (String, String) {
    let store = Store::connect(url, 4).await.expect("connect");
    store.migrate().await.expect("migrate");
    let ctx = WriteContext::new("bench", "bench", RequestMeta::default());
    let start = Instant::now();
    let batch = 2_000;
    for offset in (0..records).step_by(batch) {
        let changes: Vec<Change> = (offset..(offset + batch).min(records))
            .map(|n| Change::Insert {
                kind: RecordKind::Lead,
                id: None,
                fields: object(json!({
                    "first_name": FIRST[n % FIRST.len()],
                    "last_name": format!("Surname{}", n % 99_991),
                    "email": format!("person{n}@example.org"),
                    "company": format!("Company {}", n % 50_000),
                    "phone": format!("+4420794{:05}", n % 100_000),
                    "owner_id": format!("user-{}", n % OWNERS),
                })),
            })
            .collect();
        store.write(&ctx, changes).await.expect("insert");
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "seeded {records} leads through the audited write path in {seconds:.1} s ({:.0}/s)",
        records as f64 / seconds
    );
    // The lead the record page shows: an account, 30 activities, a few changes.
    let account_id = uuid::Uuid::now_v7().to_string();
    let lead_id = uuid::Uuid::now_v7().to_string();
    let mut changes = vec![
        Change::Insert {
            kind: RecordKind::Account,
            id: Some(account_id.clone()),
            fields: object(json!({"name": "Benchmark Holdings", "domain": "bench.example"})),
        },
        Change::Insert {
            kind: RecordKind::Lead,
            id: Some(lead_id.clone()),
            fields: object(json!({"first_name": "Rendered", "last_name": "Quickly",
                "email": "rendered@bench.example", "account_id": account_id,
                "owner_id": "user-1"})),
        },
    ];
    for n in 0..30 {
        changes.push(Change::Insert {
            kind: RecordKind::Activity,
            id: None,
            fields: object(
                json!({"activity_type": "email", "subject": format!("Message {n}"),
                "lead_id": lead_id, "occurred_at": format!("2026-01-{:02}T10:00:00Z", n % 28 + 1)}),
            ),
        });
    }
    store
        .write(&ctx, changes)
        .await
        .expect("the record page's lead");
    store.optimize().await.expect("optimize");
    (lead_id, account_id)
}

#[tokio::main]
async fn main() {
    let records: usize = arg("--records")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let runs: usize = arg("--runs").and_then(|n| n.parse().ok()).unwrap_or(100);
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}/leadgate.db?mode=rwc", dir.path().display());
    let (lead, account) = seed(&url, records).await;

    let config = Config {
        listen: "127.0.0.1:0".parse().expect("address"),
        data_dir: dir.path().to_path_buf(),
        http_workers: 2,
        ..Config::default()
    };
    let app = Application::build(config).await.expect("app");
    let port = app.port();
    let store = app.store();
    let handle = app.handle();
    let server = tokio::spawn(app.run_until_stopped());
    let base = format!("http://127.0.0.1:{port}");
    let ctx = WriteContext::new("bench", "bench", RequestMeta::default());
    let admin = store
        .create_token(&ctx, "bench", "admin", "admin", None)
        .await
        .expect("token")
        .secret;
    let client = reqwest::Client::new();

    // The index is rebuilt from the store at start; pages are measured once it caught up.
    let start = Instant::now();
    loop {
        let ready: Value = client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz")
            .json()
            .await
            .expect("json");
        if ready["search"]["lag"] == 0 && ready["search"]["documents"].as_u64() > Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "search index rebuilt from the store in {:.1} s",
        start.elapsed().as_secs_f64()
    );

    let pages: Vec<(&str, Vec<String>)> = vec![
        (
            "shell: / + 7 files + settings + me",
            [
                "/",
                "/console/app.js",
                "/console/api.js",
                "/console/dom.js",
                "/console/state.js",
                "/console/pages.js",
                "/console/import.js",
                "/console/app.css",
                "/console/settings.json",
                "/v1/auth/me",
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
        (
            "search page (\"Surname4242 Ada\", typo-free)",
            vec!["/v1/search?q=Surname4242%20Ada&limit=20".into()],
        ),
        (
            "search page (\"Surnme4242\", one typo)",
            vec!["/v1/search?q=Surnme4242&limit=20".into()],
        ),
        (
            "record page (lead, account, timeline, audit)",
            vec![
                format!("/v1/leads/{lead}"),
                format!("/v1/accounts/{account}"),
                format!("/v1/leads/{lead}/timeline?limit=100"),
                format!("/v1/leads/{lead}/audit?limit=200"),
            ],
        ),
        (
            "account record page (+ 7 related lists)",
            vec![
                format!("/v1/accounts/{account}"),
                format!("/v1/contacts?account_id={account}&limit=20"),
                format!("/v1/opportunities?account_id={account}&limit=20"),
                format!("/v1/tickets?account_id={account}&limit=20"),
                format!("/v1/orders?account_id={account}&limit=20"),
                format!("/v1/invoices?account_id={account}&limit=20"),
                format!("/v1/renewals?account_id={account}&limit=20"),
                format!("/v1/leads?account_id={account}&limit=20"),
                format!("/v1/accounts/{account}/timeline?limit=100"),
                format!("/v1/accounts/{account}/audit?limit=200"),
            ],
        ),
        ("review queue", vec!["/v1/review?limit=200".into()]),
        (
            "inbox health",
            vec![
                "/v1/inbound/channels".into(),
                "/v1/inbound?status=failed&limit=200".into(),
            ],
        ),
        (
            "import page (past imports)",
            vec!["/v1/imports?limit=50".into()],
        ),
    ];
    println!("server time per page, its calls one after another, {runs} runs (2 HTTP workers):");
    for (label, paths) in &pages {
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let started = Instant::now();
            for path in paths {
                let response = client
                    .get(format!("{base}{path}"))
                    .bearer_auth(&admin)
                    .send()
                    .await
                    .expect("request");
                assert!(
                    response.status().is_success(),
                    "{path}: {}",
                    response.status()
                );
                let _ = response.bytes().await.expect("body");
            }
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        println!("  {label:48} {}", summary(times));
    }

    match browser_timings(&base, &store, &lead, runs.min(30)).await {
        Ok(()) => {}
        Err(why) => println!("Chromium timings skipped: {why}"),
    }
    handle.stop(true).await;
    let _ = server.await;
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
}

/// Navigation start → page rendered with its data, as Chromium measures it.
async fn browser_timings(base: &str, store: &Store, lead: &str, runs: usize) -> Result<(), String> {
    let chromium = which("chromium").ok_or("chromium is not installed")?;
    let chromedriver = which("chromedriver").ok_or("chromedriver is not installed")?;
    let ctx = WriteContext::new("bench", "bench", RequestMeta::default());
    let password = "benchmark password";
    store
        .create_user(
            &ctx,
            "bench@example.com",
            None,
            "admin",
            None,
            Some(password.into()),
        )
        .await
        .map_err(|e| e.to_string())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let mut driver = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let profile = tempfile::tempdir().map_err(|e| e.to_string())?;
    let result = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": chromium, "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", format!("--user-data-dir={}", profile.path().display()),
            ]}),
        );
        let b = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .map_err(|e| e.to_string())?;
        b.goto(&format!("{base}/#/sign-in")).await.map_err(|e| e.to_string())?;
        b.wait().for_element(Locator::Css("#email")).await.map_err(|e| e.to_string())?
            .send_keys("bench@example.com").await.map_err(|e| e.to_string())?;
        b.find(Locator::Css("#password")).await.map_err(|e| e.to_string())?
            .send_keys(password).await.map_err(|e| e.to_string())?;
        b.find(Locator::Css("#sign-in")).await.map_err(|e| e.to_string())?
            .click().await.map_err(|e| e.to_string())?;
        b.wait().for_element(Locator::Css("#q")).await.map_err(|e| e.to_string())?;
        println!("Chromium (headless, same machine), navigation start → page rendered with its data, {runs} loads:");
        for (label, hash, mark) in [
            ("search page, query in the URL", "#/search?q=Surnme4242".to_owned(), "search"),
            ("record page", format!("#/record/leads/{lead}"), "record"),
            ("inbox health", "#/inbox".to_owned(), "inbox"),
        ] {
            let mut times = Vec::with_capacity(runs);
            for _ in 0..runs {
                // about:blank first, so each load is a fresh navigation of the whole page.
                b.goto("about:blank").await.map_err(|e| e.to_string())?;
                b.goto(&format!("{base}/{hash}")).await.map_err(|e| e.to_string())?;
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let at = b
                        .execute(
                            "const m = performance.getEntriesByName(arguments[0]); return m.length ? m[0].startTime : null;",
                            vec![json!(format!("lg:rendered:{mark}"))],
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                    if let Some(ms) = at.as_f64() {
                        times.push(ms);
                        break;
                    }
                    if Instant::now() > deadline {
                        return Err(format!("{label} never rendered"));
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            println!("  {label:48} {}", summary(times));
        }
        let _ = b.close().await;
        Ok(())
    }
    .await;
    let _ = driver.kill();
    let _ = driver.wait();
    result
}
