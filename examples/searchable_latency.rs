//! Accept → searchable: how long after a partner's lead is acknowledged a rep can find it
//! by name, one lead at a time on an otherwise quiet system.
//!
//! cargo run --release --example searchable_latency -- [--leads 200] [--pg URL] [--nats URL]

#[path = "../benches/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use leadgate::config::{Config, QueueKind, Role};
use leadgate::startup::Application;
use leadgate::store::{RequestMeta, WriteContext};
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
    let leads: usize = arg("--leads").and_then(|n| n.parse().ok()).unwrap_or(200);
    let data = tempfile::tempdir().expect("temporary directory");
    let database_url = match arg("--pg") {
        None => String::new(),
        Some(base) => support::fresh_pg(&base).await,
    };
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("address"),
        data_dir: data.path().to_path_buf(),
        database_url,
        role: Role::All,
        rate_limit_per_minute: 0,
        ..Config::default()
    };
    if let Some(url) = arg("--nats") {
        config.queue = QueueKind::Nats;
        config.nats.url = url;
        config.nats.stream = format!("lgbench_{}", uuid::Uuid::now_v7().simple());
    }
    leadgate::telemetry::init_logging(config.log_format, "error");
    let app = Application::build(config).await.expect("app builds");
    let (port, store, handle) = (app.port(), app.store(), app.handle());
    let server = tokio::spawn(app.run_until_stopped());
    let ctx = WriteContext::new("bench", "bench", RequestMeta::default());
    let key = store
        .create_token(&ctx, "bench", "partner:bench", "partner", None)
        .await
        .expect("partner key")
        .secret;
    let admin = store
        .create_token(&ctx, "bench", "admin", "admin", None)
        .await
        .expect("admin token")
        .secret;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut latencies = Vec::with_capacity(leads);
    for n in 0..leads {
        // A surname no other lead has, so the first hit is this lead.
        let surname = format!("Zyx{}", n * 7919 % 1_000_003);
        let lead = json!({"first_name": "Bench", "last_name": surname,
                          "email": format!("lat{n}@latency.example")});
        let accepted = client
            .post(format!("{base}/v1/partner/leads"))
            .bearer_auth(&key)
            .json(&lead)
            .send()
            .await
            .expect("accept");
        assert!(accepted.status().is_success(), "{}", accepted.status());
        let started = Instant::now();
        loop {
            let answer: Value = client
                .get(format!("{base}/v1/search?q={surname}&kind=leads&limit=1"))
                .bearer_auth(&admin)
                .send()
                .await
                .expect("search")
                .json()
                .await
                .unwrap_or(Value::Null);
            if answer["hits"].as_array().is_some_and(|h| !h.is_empty()) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "never searchable"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "accept → searchable, {leads} leads one at a time: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    );
    handle.stop(true).await;
    let _ = server.await;
}
