//! Durable accepts per second on `POST /v1/partner/leads`, a website form or the WhatsApp
//! webhook.
//!
//!     cargo bench --bench accept -- [--target partner|form|whatsapp] [--pg postgres://…/test]
//!         [--gateway] [--concurrency 64] [--seconds 10] [--worker-batch-max N]
//!
//! Starts the real server in-process on port 0 (SQLite in a temporary directory, or a
//! fresh PostgreSQL database), then posts unique records from N keep-alive connections and
//! prints throughput and latency percentiles. By default the inbox worker runs as it does
//! in a single process, competing for the same cores; `--gateway` measures acceptance
//! alone, as a gateway process does when workers run elsewhere.
//!
//! Targets: `partner` posts single JSON leads with a partner key; `form` posts urlencoded
//! fields to a configured form (`[forms.bench]`, required email); `whatsapp` posts the
//! documented text-message payload with a unique message id, signed with
//! `X-Hub-Signature-256`. The rate limit is off for the run.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use connectors::signature::hmac_sha256_hex;
use leadgate::config::{Config, FormSection, PartnerSection, Role};
use leadgate::startup::Application;
use leadgate::store::{RequestMeta, WriteContext};
use support::fresh_pg;

const WA_SECRET: &str = "bench-app-secret";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Partner,
    Form,
    WhatsApp,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Partner => "partner",
            Target::Form => "form",
            Target::WhatsApp => "whatsapp",
        }
    }
}

struct Args {
    target: Target,
    pg: Option<String>,
    gateway: bool,
    concurrency: usize,
    seconds: u64,
    /// `worker_batch_max` (the default when absent).
    worker_batch_max: Option<usize>,
}

fn parse_args() -> Args {
    let mut args = Args {
        target: Target::Partner,
        pg: None,
        gateway: false,
        concurrency: 64,
        seconds: 10,
        worker_batch_max: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--pg" => args.pg = it.next(),
            "--target" => {
                args.target = match it.next().as_deref() {
                    Some("partner") => Target::Partner,
                    Some("form") => Target::Form,
                    Some("whatsapp") => Target::WhatsApp,
                    other => panic!("--target partner|form|whatsapp, not {other:?}"),
                }
            }
            "--gateway" => args.gateway = true,
            "--concurrency" => {
                args.concurrency = it.next().and_then(|v| v.parse().ok()).unwrap_or(64)
            }
            "--seconds" => args.seconds = it.next().and_then(|v| v.parse().ok()).unwrap_or(10),
            "--worker-batch-max" => args.worker_batch_max = it.next().and_then(|v| v.parse().ok()),
            _ => {} // cargo bench passes --bench
        }
    }
    args
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let data = tempfile::tempdir().expect("temporary directory");
    let (backend, database_url) = match &args.pg {
        Some(base) => ("postgres", fresh_pg(base).await),
        None => ("sqlite", String::new()),
    };
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("address"),
        data_dir: data.path().to_path_buf(),
        database_url,
        log_filter: "warn".into(),
        role: if args.gateway {
            Role::Gateway
        } else {
            Role::All
        },
        rate_limit_per_minute: 0,
        ..Config::default()
    };
    // The partner's own limit (6,000 a minute by default) would answer most posts 429.
    config.partners.insert(
        "bench".into(),
        PartnerSection {
            rate_limit_per_minute: 0,
            ..PartnerSection::default()
        },
    );
    if let Some(max) = args.worker_batch_max {
        config.worker_batch_max = max;
    }
    config.whatsapp.app_secret = WA_SECRET.into();
    config.whatsapp.verify_token = "bench".into();
    config.forms.insert(
        "bench".into(),
        FormSection {
            required: vec!["email".into()],
            honeypot_field: Some("website".into()),
            ..FormSection::default()
        },
    );
    leadgate::telemetry::init_logging(config.log_format, "warn");
    let app = Application::build(config).await.expect("app builds");
    let port = app.port();
    let store = app.store();
    let handle = app.handle();
    let server = tokio::spawn(app.run_until_stopped());
    let ctx = WriteContext::new("bench", "bench", RequestMeta::default());
    let key = store
        .create_token(&ctx, "bench", "partner:bench", "partner", None)
        .await
        .expect("token")
        .secret;

    let target = args.target;
    let (path, expected) = match target {
        Target::Partner => ("/v1/partner/leads", 202),
        Target::Form => ("/v1/forms/bench", 202),
        Target::WhatsApp => ("/v1/webhooks/whatsapp", 200),
    };
    let url = format!("http://127.0.0.1:{port}{path}");
    let whatsapp_template = Arc::new(
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/whatsapp/text_message.json"
        ))
        .expect("whatsapp fixture"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for conn in 0..args.concurrency {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()
            .expect("client");
        let (url, key, stop, measuring, template) = (
            url.clone(),
            key.clone(),
            stop.clone(),
            measuring.clone(),
            whatsapp_template.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let request = match target {
                    Target::Partner => client
                        .post(&url)
                        .bearer_auth(&key)
                        .header("content-type", "application/json")
                        .body(format!(
                            r#"{{"external_id":"b{conn}-{n}","first_name":"Bench","last_name":"User {n}","email":"b{conn}-{n}@bench.example","company":"Load Ltd"}}"#
                        )),
                    Target::Form => client
                        .post(&url)
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(format!(
                            "name=Bench+User+{n}&email=b{conn}-{n}%40bench.example&company=Load+Ltd&utm_source=bench&page_url=https%3A%2F%2Fwww.example.com%2Fpricing&website="
                        )),
                    Target::WhatsApp => {
                        let body = template.replace("ABGGFlA5Fpa", &format!("wamid.b{conn}-{n}"));
                        let signature = hmac_sha256_hex(WA_SECRET.as_bytes(), &[body.as_bytes()]);
                        client
                            .post(&url)
                            .header("content-type", "application/json")
                            .header("x-hub-signature-256", format!("sha256={signature}"))
                            .body(body)
                    }
                };
                let started = Instant::now();
                let response = request.send().await;
                let ok = matches!(&response, Ok(r) if r.status() == expected);
                if let Ok(response) = response {
                    let _ = response.bytes().await;
                }
                if measuring.load(Ordering::Relaxed) {
                    if ok {
                        latencies.push(started.elapsed().as_micros() as u32);
                    } else {
                        errors += 1;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // warm-up
    let before = store.inbox_depth().await.expect("depth");
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await.expect("task");
        latencies.extend(l);
        errors += e;
    }
    latencies.sort_unstable();
    let after = store.inbox_depth().await.expect("depth");
    let processed = after.done - before.done;
    println!(
        "accept target={} backend={backend} role={} concurrency={} seconds={elapsed:.1} accepted={} rate={:.0}/s p50={:.2}ms p99={:.2}ms max={:.2}ms errors={errors} processed_during={processed} ({:.0}/s) backlog_after={}",
        target.name(),
        if args.gateway { "gateway" } else { "all" },
        args.concurrency,
        latencies.len(),
        latencies.len() as f64 / elapsed,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
        processed as f64 / elapsed,
        after.pending + after.processing,
    );
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let value = |name: &str| {
        metrics
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let commits = value("leadgate_group_commit_seconds_count");
    let batches = value("leadgate_stage_seconds_count{stage=\"batch\"}");
    println!(
        "  group commits={commits:.0} mean_items={:.1} mean_commit={:.2}ms | worker batches={batches:.0} mean_persist={:.2}ms",
        value("leadgate_group_commit_items_sum") / commits.max(1.0),
        1000.0 * value("leadgate_group_commit_seconds_sum") / commits.max(1.0),
        1000.0 * value("leadgate_stage_seconds_sum{stage=\"batch\"}") / batches.max(1.0),
    );
    handle.stop(true).await;
    let _ = server.await;
}
