//! Nurturing figures:
//!
//!     cargo run --release --example nurture_bench -- [--emails 3000] [--concurrency 8]
//!         [--connections 64] [--seconds 10]
//!
//! 1. Emails rendered (template variables, tracked links, open pixel, signed unsubscribe
//!    link) and handed to a real SMTP server on loopback (aiosmtpd from
//!    fixtures/nurture/smtp_sink.py in discard mode) through the SMTP mailer's connection
//!    pool, per second; and rendering alone, per second.
//! 2. The tracking endpoints of the real server (in-process, port 0, SQLite in a temporary
//!    directory): `GET /t/o/{token}` (open pixel: verify, record the event) and
//!    `GET /t/c/{token}` (verify, allow-list, record, 302) from N keep-alive connections;
//!    requests per second and latency percentiles.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use leadgate::config::Config;
use leadgate::domain::RecordKind;
use leadgate::nurture::config::{NurtureSection, SmtpSection};
use leadgate::nurture::mailer::smtp::SmtpMailer;
use leadgate::nurture::mailer::{Mailer, OutgoingEmail};
use leadgate::nurture::templates::{EmailTemplate, render, rewrite_links};
use leadgate::nurture::tracking::{Token, TrackingKey};
use leadgate::startup::Application;
use leadgate::store::{Change, RequestMeta, WriteContext};
use serde_json::{Map, Value, json};

struct Args {
    emails: usize,
    concurrency: usize,
    connections: usize,
    seconds: u64,
}

fn parse_args() -> Args {
    let mut args = Args {
        emails: 3000,
        concurrency: 8,
        connections: 64,
        seconds: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        match flag.as_str() {
            "--emails" => args.emails = value as usize,
            "--concurrency" => args.concurrency = value.max(1) as usize,
            "--connections" => args.connections = value.max(1) as usize,
            "--seconds" => args.seconds = value.max(1),
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0
}

fn template() -> EmailTemplate {
    EmailTemplate {
        id: "bench".into(),
        name: "bench".into(),
        subject: "Welcome, {{first_name | there}}".into(),
        html: "<html><body><p>Hello {{first_name}} at {{company}},</p><p>Our <a href=\"https://example.com/pricing\">pricing</a> and <a href=\"https://example.com/demo\">a demo</a>.</p><p><a href=\"{{unsubscribe_url}}\">Unsubscribe</a></p></body></html>".into(),
        text: "Hello {{first_name}} at {{company}},\nPricing: https://example.com/pricing\nUnsubscribe: {{unsubscribe_url}}".into(),
        variables: Vec::new(),
        created_at: String::new(),
        updated_at: String::new(),
    }
}

/// One email as the outbox would build it: variables, tracked links, pixel.
fn build(
    n: usize,
    section: &NurtureSection,
    key: &TrackingKey,
    template: &EmailTemplate,
) -> OutgoingEmail {
    let id = format!("bench{n}");
    let mut vars = Map::new();
    vars.insert("first_name".into(), json!(format!("Lead{n}")));
    vars.insert("company".into(), json!("Load & Co"));
    let unsubscribe = format!(
        "{}/u/{}",
        section.base(),
        key.sign(&Token::Unsubscribe {
            outbox_id: id.clone()
        })
    );
    vars.insert("unsubscribe_url".into(), Value::String(unsubscribe.clone()));
    let rendered = render(template, &vars);
    let mut html = rewrite_links(&rendered.html, |url| {
        Some(format!(
            "{}/t/c/{}",
            section.base(),
            key.sign(&Token::Click {
                outbox_id: id.clone(),
                url: url.to_owned()
            })
        ))
    });
    html.push_str(&format!(
        "<img src=\"{}/t/o/{}\">",
        section.base(),
        key.sign(&Token::Open {
            outbox_id: id.clone()
        })
    ));
    OutgoingEmail {
        message_id: format!("<{id}@bench.test>"),
        from: "Sales <sales@bench.test>".into(),
        to: format!("lead{n}@example.org"),
        subject: rendered.subject,
        html,
        text: rendered.text,
        headers: vec![
            ("List-Unsubscribe".into(), format!("<{unsubscribe}>")),
            (
                "List-Unsubscribe-Post".into(),
                "List-Unsubscribe=One-Click".into(),
            ),
        ],
        outbox_id: id,
    }
}

async fn smtp_figures(args: &Args) {
    let section = NurtureSection {
        public_url: "https://crm.bench.test".into(),
        ..NurtureSection::default()
    };
    let key = TrackingKey::new(b"bench");
    let template = template();
    let started = Instant::now();
    for n in 0..args.emails {
        std::hint::black_box(build(n, &section, &key, &template));
    }
    let render_rate = args.emails as f64 / started.elapsed().as_secs_f64();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/nurture/smtp_sink.py");
    let mut sink = Command::new("/usr/bin/python3")
        .args([script, &port.to_string(), "-"])
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 with aiosmtpd (apt-get install python3-aiosmtpd)");
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mailer = Arc::new(
        SmtpMailer::new(&SmtpSection {
            port,
            pool_size: args.concurrency as u32,
            ..SmtpSection::default()
        })
        .expect("mailer"),
    );
    let (section, key, template) = (Arc::new(section), Arc::new(key), Arc::new(template));
    let started = Instant::now();
    let mut tasks = Vec::new();
    let per_task = args.emails / args.concurrency;
    for t in 0..args.concurrency {
        let (mailer, section, key, template) = (
            mailer.clone(),
            section.clone(),
            key.clone(),
            template.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut failed = 0;
            for i in 0..per_task {
                let email = build(t * per_task + i, &section, &key, &template);
                if mailer.send(&email).await.is_err() {
                    failed += 1;
                }
            }
            failed
        }));
    }
    let mut failed = 0;
    for task in tasks {
        failed += task.await.expect("task");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let sent = per_task * args.concurrency - failed;
    let _ = sink.kill();
    let _ = sink.wait();
    println!(
        "smtp emails={sent} failed={failed} concurrency={} seconds={elapsed:.2} rate={:.0}/s (rendering alone: {render_rate:.0}/s)",
        args.concurrency,
        sent as f64 / elapsed
    );
}

async fn load(
    url: String,
    connections: usize,
    seconds: u64,
    expected: u16,
) -> (usize, f64, Vec<u32>, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        let (url, stop, measuring) = (url.clone(), stop.clone(), measuring.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let response = client
                    .get(&url)
                    .header("user-agent", "Mozilla/5.0 (bench)")
                    .send()
                    .await;
                let ok = matches!(&response, Ok(r) if r.status().as_u16() == expected);
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
    tokio::time::sleep(Duration::from_secs(2)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
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
    (latencies.len(), elapsed, latencies, errors)
}

async fn tracking_figures(args: &Args) {
    let data = tempfile::tempdir().expect("temporary directory");
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("address"),
        data_dir: data.path().to_path_buf(),
        log_filter: "warn".into(),
        rate_limit_per_minute: 0,
        ..Config::default()
    };
    config.nurture.tracking_secret = "bench".into();
    config.nurture.public_url = "https://crm.bench.test".into();
    config.nurture.redirect_allow_hosts = vec!["example.com".into()];
    config.nurture.bot_open_secs = 0;
    leadgate::telemetry::init_logging(config.log_format, "warn");
    let section = config.nurture.clone();
    let app = Application::build(config).await.expect("app builds");
    let port = app.port();
    let store = app.store();
    let handle = app.handle();
    let server = tokio::spawn(app.run_until_stopped());
    let ctx = WriteContext::new("bench", "bench", RequestMeta::default());
    let Value::Object(fields) = json!({"first_name": "Bench", "email": "bench@example.org"}) else {
        unreachable!()
    };
    let lead_id = store
        .write(
            &ctx,
            vec![Change::Insert {
                kind: RecordKind::Lead,
                id: None,
                fields,
            }],
        )
        .await
        .expect("lead")[0]
        .id
        .clone();
    let lead = store
        .get(RecordKind::Lead, &lead_id)
        .await
        .expect("read")
        .expect("lead");
    let key = TrackingKey::new(b"bench");
    let mut tx = store.begin_write().await.expect("tx");
    let outbox_id = leadgate::nurture::outbox::enqueue_template(
        &mut tx,
        &ctx,
        &section,
        &key,
        &lead,
        &template(),
        "sales@bench.test",
        None,
    )
    .await
    .expect("queued");
    tx.commit().await.expect("commit");
    let open = key.sign(&Token::Open {
        outbox_id: outbox_id.clone(),
    });
    let click = key.sign(&Token::Click {
        outbox_id,
        url: "https://example.com/pricing".into(),
    });
    for (name, path, expected) in [
        ("open pixel", format!("/t/o/{open}"), 200),
        ("click redirect", format!("/t/c/{click}"), 302),
    ] {
        let (n, elapsed, latencies, errors) = load(
            format!("http://127.0.0.1:{port}{path}"),
            args.connections,
            args.seconds,
            expected,
        )
        .await;
        println!(
            "tracking endpoint=\"{name}\" backend=sqlite connections={} seconds={elapsed:.1} requests={n} rate={:.0}/s p50={:.2}ms p99={:.2}ms max={:.2}ms errors={errors}",
            args.connections,
            n as f64 / elapsed,
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            percentile(&latencies, 1.0),
        );
    }
    handle.stop(true).await;
    let _ = server.await;
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    smtp_figures(&args).await;
    tracking_figures(&args).await;
}
