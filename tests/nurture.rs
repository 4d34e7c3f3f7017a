//! Nurturing end to end: emails rendered from templates, queued in the outbox and sent
//! through a real SMTP server on loopback (aiosmtpd, fixtures/nurture/smtp_sink.py), read
//! back as delivered; a connection dropped mid-send; tracking, unsubscribe and
//! suppression; sequences enrolling by rule; the HTTP providers against local stand-ins
//! checking their documented requests.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::Backend;
use leadgate::config::Config;
use leadgate::domain::RecordKind;
use leadgate::nurture::config::{MailerKind, SmtpTls};
use leadgate::nurture::tracking::{Token, TrackingKey};
use leadgate::store::{Change, RequestMeta, WriteContext};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "test-tracking-secret";
const PUBLIC: &str = "http://tracking.test";

/// A real SMTP server (aiosmtpd) writing what it accepts to a directory.
struct SmtpSink {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn smtp_sink() -> SmtpSink {
    smtp_sink_with(&[]).await
}

/// The sink with extra options (`--starttls CERT KEY`, `--auth USER PASSWORD`).
async fn smtp_sink_with(options: &[&str]) -> SmtpSink {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/nurture/smtp_sink.py");
    let child = Command::new("/usr/bin/python3")
        .arg(script)
        .arg(port.to_string())
        .arg(dir.path())
        .args(options)
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 with aiosmtpd (apt-get install python3-aiosmtpd)");
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "SMTP sink did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    SmtpSink { child, port, dir }
}

impl SmtpSink {
    fn messages(&self) -> Vec<Value> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        paths
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }

    async fn wait_for(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} emails arrived",
                messages.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A TCP proxy to `upstream` that cuts its first connection once the message content
/// has started to flow (after the server's `354` to DATA): the send is interrupted
/// mid-message. Later connections pass through. Answers its port.
async fn dropping_proxy(upstream: u16) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let first = seen.fetch_add(1, Ordering::SeqCst) == 0;
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let data_sent = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let flag = data_sent.clone();
                let upward = tokio::spawn(async move {
                    let mut buffer = vec![0_u8; 16 * 1024];
                    let mut log = Vec::new();
                    loop {
                        let n = match client_read.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if first && flag.load(Ordering::SeqCst) {
                            // Part of the message, then the line goes dead.
                            let _ = server_write.write_all(&buffer[..n / 2]).await;
                            return;
                        }
                        log.extend_from_slice(&buffer[..n]);
                        if server_write.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                        if first && log.windows(6).any(|w| w.eq_ignore_ascii_case(b"DATA\r\n")) {
                            flag.store(true, Ordering::SeqCst);
                        }
                    }
                });
                let mut buffer = vec![0_u8; 16 * 1024];
                loop {
                    tokio::select! {
                        read = server_read.read(&mut buffer) => {
                            let n = match read { Ok(0) | Err(_) => break, Ok(n) => n };
                            if client_write.write_all(&buffer[..n]).await.is_err() { break; }
                        }
                        _ = tokio::time::sleep(Duration::from_millis(20)), if upward.is_finished() => break,
                    }
                }
                upward.abort();
            });
        }
    });
    (port, connections)
}

fn nurture_config(config: &mut Config, smtp_port: u16) {
    let nurture = &mut config.nurture;
    nurture.mailer = MailerKind::Smtp;
    nurture.smtp.host = "127.0.0.1".into();
    nurture.smtp.port = smtp_port;
    nurture.smtp.tls = SmtpTls::None;
    nurture.smtp.timeout_secs = 5;
    nurture.from = "Sales <sales@leadgate.test>".into();
    nurture.public_url = PUBLIC.into();
    nurture.tracking_secret = SECRET.into();
    nurture.redirect_allow_hosts = vec!["example.com".into()];
    nurture.unsubscribe_mailto = "unsubscribe@leadgate.test".into();
    nurture.retry_base_ms = 200;
    nurture.poll_ms = 50;
    nurture.bot_open_secs = 0;
    // Any hour: the window itself is covered by the unit tests of nurture::window.
    nurture.window_start_hour = 0;
    nurture.window_end_hour = 0;
}

async fn seed_lead(app: &common::TestApp, fields: Value) -> String {
    let ctx = WriteContext::new("test", "test", RequestMeta::default());
    let Value::Object(fields) = fields else {
        panic!("object")
    };
    app.store
        .write(
            &ctx,
            vec![Change::Insert {
                kind: RecordKind::Lead,
                id: None,
                fields,
            }],
        )
        .await
        .unwrap()[0]
        .id
        .clone()
}

const WELCOME: &str = r#"<html><body><p>Hello {{first_name | there}} from {{company}}</p>
<p><a href="https://example.com/pricing?plan=pro&amp;ref=mail">Pricing</a></p></body></html>"#;

async fn save_welcome(app: &common::TestApp) {
    let response = app
        .post_json(
            &app.admin_token,
            "/v1/email-templates",
            &json!({"name": "welcome", "subject": "Welcome, {{first_name}}",
                    "html": WELCOME,
                    "text": "Hello {{first_name | there}} from {{company}}\nUnsubscribe: {{unsubscribe_url}}"}),
        )
        .await;
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
}

async fn settled_outbox(app: &common::TestApp, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, row) = app.get_json(&format!("/v1/email-outbox/{id}")).await;
        assert_eq!(status, 200, "{row}");
        if row["status"] != "pending" && row["status"] != "sending" {
            return row;
        }
        assert!(Instant::now() < deadline, "outbox {id} still {row}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first `PUBLIC/<prefix>…` link of a text, moved onto the test app.
fn link(app: &common::TestApp, text: &str, prefix: &str) -> String {
    let start = text
        .find(&format!("{PUBLIC}{prefix}"))
        .unwrap_or_else(|| panic!("no {prefix} link in {text}"));
    let rest = &text[start + PUBLIC.len()..];
    let end = rest
        .find(|c: char| c == '"' || c.is_whitespace() || c == '>')
        .unwrap_or(rest.len());
    format!("{}{}", app.base, &rest[..end])
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn an_email_is_delivered_once_though_smtp_drops_the_first_connection_mid_send(
    backend: Backend,
) {
    let sink = smtp_sink().await;
    let (proxy, connections) = dropping_proxy(sink.port).await;
    let app = common::spawn_app_with_config(backend, |c| nurture_config(c, proxy)).await;

    // A template naming a variable leads do not have is refused when saved.
    let refused = app
        .post_json(
            &app.admin_token,
            "/v1/email-templates",
            &json!({"name": "bad", "subject": "Hi {{favourite_colour}}", "html": "<p>x</p>", "text": "x"}),
        )
        .await;
    assert_eq!(refused.status(), 422);
    assert!(refused.text().await.unwrap().contains("favourite_colour"));
    // So is a link to a host not on the redirect allow-list.
    let foreign = app
        .post_json(
            &app.admin_token,
            "/v1/email-templates",
            &json!({"name": "bad", "subject": "Hi", "html": "<a href=\"https://evil.test/\">x</a>", "text": "x"}),
        )
        .await;
    assert_eq!(foreign.status(), 422);
    save_welcome(&app).await;

    let lead = seed_lead(
        &app,
        json!({"first_name": "Ada", "company": "Analytical <Engines>", "email": "ada@example.org", "score": 10, "behaviour_score": 0}),
    )
    .await;
    let queued = app
        .post_json(
            &app.admin_token,
            &format!("/v1/leads/{lead}/email"),
            &json!({"template": "welcome"}),
        )
        .await;
    assert_eq!(queued.status(), 202);
    let outbox_id = queued.json::<Value>().await.unwrap()["outbox_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let row = settled_outbox(&app, &outbox_id).await;
    assert_eq!(row["status"], "sent", "{row}");
    assert_eq!(
        row["attempts"], 2,
        "the dropped attempt and the delivered one: {row}"
    );
    assert!(connections.load(Ordering::SeqCst) >= 2);
    assert_eq!(
        row["provider_id"], row["message_id"],
        "SMTP keeps our Message-ID"
    );

    // Delivered exactly once, as built.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let messages = sink.wait_for(1).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    let message = &messages[0];
    let headers = &message["headers"];
    assert_eq!(headers["Message-ID"], row["message_id"]);
    assert_eq!(message["rcpt_tos"], json!(["ada@example.org"]));
    assert_eq!(headers["Subject"], "Welcome, Ada");
    let unsubscribe = headers["List-Unsubscribe"].as_str().unwrap();
    assert!(
        unsubscribe.contains("<mailto:unsubscribe@leadgate.test?subject=unsubscribe-"),
        "{unsubscribe}"
    );
    assert!(
        unsubscribe.contains(&format!("<{PUBLIC}/u/")),
        "{unsubscribe}"
    );
    assert_eq!(
        headers["List-Unsubscribe-Post"],
        "List-Unsubscribe=One-Click"
    );
    let text = message["text"].as_str().unwrap();
    assert!(
        text.contains("Hello Ada from Analytical <Engines>"),
        "{text}"
    );
    let html = message["html"].as_str().unwrap();
    assert!(
        html.contains("Analytical &lt;Engines&gt;"),
        "escaped in HTML: {html}"
    );
    assert!(
        !html.contains("https://example.com/pricing"),
        "links go through the redirect: {html}"
    );

    // The timeline shows the sent email.
    let (_, timeline) = app.get_json(&format!("/v1/leads/{lead}/timeline")).await;
    let sent = timeline.to_string();
    assert!(
        sent.contains("\"activity_type\":\"email\"") && sent.contains("\"status\":\"sent\""),
        "{sent}"
    );

    // A scanner fetching the pixel is flagged, a person's open counts once.
    let pixel = link(&app, html, "/t/o/");
    let scanner = app
        .client
        .get(&pixel)
        .header("user-agent", "Barracuda Sentinel")
        .send()
        .await
        .unwrap();
    assert_eq!(scanner.status(), 200);
    assert_eq!(scanner.headers()["content-type"], "image/gif");
    let person = app
        .client
        .get(&pixel)
        .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64)")
        .send()
        .await
        .unwrap();
    assert_eq!(person.status(), 200);
    assert_eq!(
        leadgate::nurture::engagement::counted(&app.store, &outbox_id, "open")
            .await
            .unwrap(),
        1
    );
    let bots: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM email_events WHERE outbox_id = $1 AND bot = $2")
            .bind(&outbox_id)
            .bind(1_i64)
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(bots, 1);

    // The click redirects to the original link and feeds the behaviour score.
    let click = link(&app, html, "/t/c/");
    let redirected = no_redirects()
        .get(&click)
        .header("user-agent", "Mozilla/5.0")
        .send()
        .await
        .unwrap();
    assert_eq!(redirected.status(), 302);
    assert_eq!(
        redirected.headers()["location"],
        "https://example.com/pricing?plan=pro&ref=mail"
    );
    let (_, record) = app.get_json(&format!("/v1/leads/{lead}")).await;
    assert_eq!(
        record["fields"]["behaviour_score"], 7,
        "open 2 + click 5: {record}"
    );
    let (_, timeline) = app.get_json(&format!("/v1/leads/{lead}/timeline")).await;
    let events = timeline.to_string();
    assert!(
        events.contains("email_open") && events.contains("email_click"),
        "{events}"
    );

    let metrics = app.metrics().await;
    for line in [
        r#"leadgate_emails_total{mailer="smtp",outcome="retry"} 1"#,
        r#"leadgate_emails_total{mailer="smtp",outcome="sent"} 1"#,
        r#"leadgate_email_events_total{counted="no",event="open"} 1"#,
        r#"leadgate_email_events_total{counted="yes",event="open"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }

    // A tampered link is refused, not redirected.
    let token = click.rsplit('/').next().unwrap();
    let (payload, tag) = token.split_once('.').unwrap();
    let mut bytes = payload.as_bytes().to_vec();
    bytes[3] = if bytes[3] == b'A' { b'B' } else { b'A' };
    let tampered = format!(
        "{}/t/c/{}.{tag}",
        app.base,
        String::from_utf8(bytes).unwrap()
    );
    let refused = no_redirects().get(&tampered).send().await.unwrap();
    assert_eq!(refused.status(), 400);
    // A correctly signed link to a host off the allow-list is refused too.
    let foreign = TrackingKey::new(SECRET.as_bytes()).sign(&Token::Click {
        outbox_id: outbox_id.clone(),
        url: "https://evil.test/phish".into(),
    });
    let refused = no_redirects()
        .get(format!("{}/t/c/{foreign}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.headers().get("location").is_none());

    // RFC 8058 one-click unsubscribe: the address is suppressed for every later send.
    let unsubscribe_url = link(&app, unsubscribe, "/u/");
    let page = app.client.get(&unsubscribe_url).send().await.unwrap();
    assert_eq!(page.status(), 200, "the GET page only asks");
    let (status, _) = app.get_json("/v1/suppressions/ada@example.org").await;
    assert_eq!(status, 404, "a GET does not unsubscribe");
    let one_click = app
        .client
        .post(&unsubscribe_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(one_click.status(), 200);
    let (status, suppressed) = app.get_json("/v1/suppressions/ADA@example.org").await;
    assert_eq!(status, 200);
    assert_eq!(suppressed["reason"], "unsubscribed");
    let again = app
        .post_json(
            &app.admin_token,
            &format!("/v1/leads/{lead}/email"),
            &json!({"template": "welcome"}),
        )
        .await;
    assert_eq!(again.status(), 409);
    app.stop().await;
}

async fn a_sequence_enrols_by_rule_sends_in_order_and_skips_suppressed_leads(backend: Backend) {
    let sink = smtp_sink().await;
    let app = common::spawn_app_with_config(backend, |c| nurture_config(c, sink.port)).await;
    save_welcome(&app).await;
    let followup = app
        .post_json(
            &app.admin_token,
            "/v1/email-templates",
            &json!({"name": "followup", "subject": "Still interested?", "html": "<p>Hi again</p>", "text": "Hi again"}),
        )
        .await;
    assert_eq!(followup.status(), 201);
    // A sequence naming a template that does not exist is refused.
    let refused = app
        .post_json(
            &app.admin_token,
            "/v1/sequences",
            &json!({"name": "x", "steps": [{"type": "email", "template": "nope"}]}),
        )
        .await;
    assert_eq!(refused.status(), 422);
    let created = app
        .post_json(
            &app.admin_token,
            "/v1/sequences",
            &json!({"name": "webinar follow-up",
            "enrol": {"equals": {"source": "webinar"}, "min_score": 30},
            "steps": [
                {"type": "email", "template": "welcome"},
                {"type": "wait", "seconds": 1},
                {"type": "branch", "on": "clicked", "then": 3, "else": 4},
                {"type": "task", "subject": "Call: clicked the welcome email"},
                {"type": "email", "template": "followup"},
                {"type": "task", "subject": "Call after the sequence", "due_hours": 2}
            ]}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let sequence = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let hot = seed_lead(
        &app,
        json!({"first_name": "Hot", "email": "hot@example.org", "source": "webinar", "score": 45}),
    )
    .await;
    let cold = seed_lead(&app, json!({"first_name": "Cold", "email": "cold@example.org", "source": "webinar", "score": 10})).await;
    let gone = seed_lead(&app, json!({"first_name": "Gone", "email": "gone@example.org", "source": "Webinar", "score": 60})).await;
    let suppressed = app
        .post_json(
            &app.admin_token,
            "/v1/suppressions",
            &json!({"email": "gone@example.org", "reason": "complained"}),
        )
        .await;
    assert_eq!(suppressed.status(), 204);

    let deadline = Instant::now() + Duration::from_secs(30);
    let enrolments = loop {
        let (_, detail) = app.get_json(&format!("/v1/sequences/{sequence}")).await;
        let enrolments = detail["enrolments"].as_array().cloned().unwrap_or_default();
        if enrolments.len() == 2 && enrolments.iter().all(|e| e["status"] != "active") {
            break enrolments;
        }
        assert!(
            Instant::now() < deadline,
            "enrolments still running: {detail}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let of = |lead: &str| enrolments.iter().find(|e| e["lead_id"] == lead).cloned();
    assert!(of(&cold).is_none(), "score 10 is not above 30");
    assert_eq!(of(&hot).unwrap()["status"], "completed");
    let exited = of(&gone).unwrap();
    assert_eq!(exited["status"], "exited");
    assert_eq!(
        exited["exit_reason"], "bounced",
        "a complaint counts as a bounce"
    );

    // Both emails went to the hot lead, in order; nothing to the suppressed address.
    let deadline = Instant::now() + Duration::from_secs(20);
    let messages = loop {
        let messages = sink.messages();
        if messages.len() >= 2 || Instant::now() > deadline {
            break messages;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let subjects: Vec<&str> = messages
        .iter()
        .map(|m| m["headers"]["Subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, ["Welcome, Hot", "Still interested?"]);
    assert!(
        messages
            .iter()
            .all(|m| m["rcpt_tos"] == json!(["hot@example.org"]))
    );
    // Not clicked: the branch skipped the "clicked" task; the last step's task is there.
    let (_, timeline) = app.get_json(&format!("/v1/leads/{hot}/timeline")).await;
    let text = timeline.to_string();
    assert!(text.contains("Call after the sequence"), "{text}");
    assert!(!text.contains("Call: clicked"), "{text}");
    // Turned off, the sequence enrols nobody new.
    let off = app
        .client
        .patch(format!("{}/v1/sequences/{sequence}", app.base))
        .bearer_auth(&app.admin_token)
        .json(&json!({"active": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(off.status(), 200);
    let late = seed_lead(&app, json!({"first_name": "Late", "email": "late@example.org", "source": "webinar", "score": 90})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, detail) = app.get_json(&format!("/v1/sequences/{sequence}")).await;
    assert!(!detail.to_string().contains(&late), "{detail}");
    app.stop().await;
}

on_both_backends!(
    an_email_is_delivered_once_though_smtp_drops_the_first_connection_mid_send,
    a_sequence_enrols_by_rule_sends_in_order_and_skips_suppressed_leads,
);

/// Stand-ins for SendGrid, Mailgun and SES: each checks the documented request (path,
/// auth, body) and answers 400 naming what is wrong, so a wrong request fails the send.
/// SendGrid's first request is answered 429 (rate limited).
async fn provider_stand_in() -> (String, Arc<AtomicUsize>) {
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    let sendgrid_calls = Arc::new(AtomicUsize::new(0));
    let calls = sendgrid_calls.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let header = |req: &HttpRequest, name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let server = HttpServer::new(move || {
        let calls = calls.clone();
        App::new()
            .route(
                "/v3/mail/send",
                web::post().to(move |req: HttpRequest, body: web::Bytes| {
                    let calls = calls.clone();
                    async move {
                        if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                            return HttpResponse::TooManyRequests()
                                .json(json!({"errors": [{"message": "rate limited"}]}));
                        }
                        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let problems = [
                            (header(&req, "authorization") != "Bearer SG.test-key", "auth"),
                            (body["personalizations"][0]["to"][0]["email"] != "ada@example.org", "to"),
                            (body["from"]["email"] != "sales@leadgate.test", "from"),
                            (body["from"]["name"] != "Sales", "from name"),
                            (body["subject"] != "Welcome, Ada", "subject"),
                            (body["content"][0]["type"] != "text/plain", "text first"),
                            (body["content"][1]["type"] != "text/html", "html second"),
                            (body["headers"]["List-Unsubscribe-Post"] != "List-Unsubscribe=One-Click", "headers"),
                        ];
                        match problems.iter().find(|(bad, _)| *bad) {
                            Some((_, what)) => HttpResponse::BadRequest().body(format!("bad {what}: {body}")),
                            None => HttpResponse::Accepted().insert_header(("X-Message-Id", "sg-1")).finish(),
                        }
                    }
                }),
            )
            .route(
                "/v3/mg.leadgate.test/messages",
                web::post().to(move |req: HttpRequest, form: web::Form<Vec<(String, String)>>| async move {
                    let get = |name: &str| {
                        form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or_default()
                    };
                    use base64::Engine;
                    let basic = format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode("api:key-test")
                    );
                    let problems = [
                        (header(&req, "authorization") != basic, "auth"),
                        (!header(&req, "content-type").starts_with("application/x-www-form-urlencoded"), "form"),
                        (get("to") != "ada@example.org", "to"),
                        (get("from") != "Sales <sales@leadgate.test>", "from"),
                        (get("subject") != "Welcome, Ada", "subject"),
                        (!get("text").contains("Hello Ada"), "text"),
                        (!get("html").contains("Hello Ada"), "html"),
                        (get("h:List-Unsubscribe-Post") != "List-Unsubscribe=One-Click", "headers"),
                        (!get("h:Message-Id").starts_with('<'), "message id"),
                    ];
                    match problems.iter().find(|(bad, _)| *bad) {
                        Some((_, what)) => HttpResponse::BadRequest().body(format!("bad {what}")),
                        None => HttpResponse::Ok().json(json!({"id": "<mg-1@mg.leadgate.test>", "message": "Queued. Thank you."})),
                    }
                }),
            )
            .route(
                "/v2/email/outbound-emails",
                web::post().to(move |req: HttpRequest, body: web::Bytes| async move {
                    let auth = header(&req, "authorization");
                    let amz_date = header(&req, "x-amz-date");
                    // Recompute the signature over what arrived (host, path, body).
                    let expected = leadgate::nurture::mailer::ses::authorization(
                        "AKIDTEST", "ses-secret", "us-east-1", "ses", &header(&req, "host"),
                        req.path(), &amz_date, &body,
                    );
                    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    use base64::Engine;
                    let raw = json["Content"]["Raw"]["Data"]
                        .as_str()
                        .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
                        .map(|d| String::from_utf8_lossy(&d).into_owned())
                        .unwrap_or_default();
                    let problems = [
                        (!auth.starts_with(&format!("AWS4-HMAC-SHA256 Credential=AKIDTEST/{}/us-east-1/ses/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=", amz_date.get(..8).unwrap_or("?"))), "auth"),
                        (auth != expected, "signature"),
                        (json["FromEmailAddress"] != "sales@leadgate.test", "from"),
                        (json["Destination"]["ToAddresses"][0] != "ada@example.org", "to"),
                        (!raw.contains("Message-ID: <") || !raw.contains("List-Unsubscribe-Post"), "raw message"),
                    ];
                    match problems.iter().find(|(bad, _)| *bad) {
                        Some((_, what)) => HttpResponse::BadRequest().body(format!("bad {what}")),
                        None => HttpResponse::Ok().json(json!({"MessageId": "ses-1"})),
                    }
                }),
            )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    (format!("http://127.0.0.1:{port}"), sendgrid_calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_providers_get_their_documented_requests_and_a_429_is_retried() {
    // SAFETY: set once, before any app reads them; no other test reads these names.
    unsafe {
        std::env::set_var("LG_TEST_SENDGRID_KEY", "SG.test-key");
        std::env::set_var("LG_TEST_MAILGUN_KEY", "key-test");
        std::env::set_var("LG_TEST_SES_ID", "AKIDTEST");
        std::env::set_var("LG_TEST_SES_SECRET", "ses-secret");
    }
    let (base, sendgrid_calls) = provider_stand_in().await;
    for (kind, provider_id) in [
        (MailerKind::Sendgrid, "sg-1"),
        (MailerKind::Mailgun, "<mg-1@mg.leadgate.test>"),
        (MailerKind::Ses, "ses-1"),
    ] {
        let base = base.clone();
        let app = common::spawn_app_with_config(Backend::Sqlite, move |c| {
            nurture_config(c, 1);
            let n = &mut c.nurture;
            n.mailer = kind;
            n.sendgrid.base_url = base.clone();
            n.sendgrid.api_key_env = "LG_TEST_SENDGRID_KEY".into();
            n.mailgun.base_url = base.clone();
            n.mailgun.domain = "mg.leadgate.test".into();
            n.mailgun.api_key_env = "LG_TEST_MAILGUN_KEY".into();
            n.ses.base_url = base.clone();
            n.ses.api_key_env = "LG_TEST_SES_ID".into();
            n.ses.secret_key_env = "LG_TEST_SES_SECRET".into();
        })
        .await;
        save_welcome(&app).await;
        let lead = seed_lead(
            &app,
            json!({"first_name": "Ada", "email": "ada@example.org"}),
        )
        .await;
        let queued = app
            .post_json(
                &app.admin_token,
                &format!("/v1/leads/{lead}/email"),
                &json!({"template": "welcome"}),
            )
            .await;
        assert_eq!(queued.status(), 202);
        let id = queued.json::<Value>().await.unwrap()["outbox_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let row = settled_outbox(&app, &id).await;
        assert_eq!(row["status"], "sent", "{kind:?}: {row}");
        assert_eq!(row["provider_id"], provider_id, "{kind:?}: {row}");
        if kind == MailerKind::Sendgrid {
            assert_eq!(row["attempts"], 2, "429 first, then accepted: {row}");
            assert_eq!(sendgrid_calls.load(Ordering::SeqCst), 2);
        } else {
            assert_eq!(row["attempts"], 1, "{kind:?}: {row}");
        }
        app.stop().await;
    }
}

async fn whatsapp_steps_send_free_text_only_inside_the_24_hour_window(backend: Backend) {
    let app = common::spawn_app_with_config(backend, |c| nurture_config(c, 1)).await;
    let created = app
        .post_json(
            &app.admin_token,
            "/v1/sequences",
            &json!({"name": "whatsapp nudge", "steps": [
                {"type": "whatsapp", "text": "Thanks for writing, anything else?", "template": "follow_up", "language": "en_GB"}
            ]}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let sequence = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ctx = WriteContext::new("test", "test", RequestMeta::default());
    let mut leads = Vec::new();
    for (name, hours_ago) in [("recent", 1), ("quiet", 30)] {
        let lead = seed_lead(
            &app,
            json!({"first_name": name, "phone": "+44 20 7946 0958"}),
        )
        .await;
        let at = leadgate::domain::value::format_timestamp(
            chrono::Utc::now() - chrono::Duration::hours(hours_ago),
        );
        let Value::Object(fields) = json!({"activity_type": "message", "channel": "whatsapp",
            "direction": "inbound", "occurred_at": at, "lead_id": lead, "body": "hi"})
        else {
            unreachable!()
        };
        app.store
            .write(
                &ctx,
                vec![Change::Insert {
                    kind: RecordKind::Activity,
                    id: None,
                    fields,
                }],
            )
            .await
            .unwrap();
        let enrolled = app
            .post_json(
                &app.admin_token,
                &format!("/v1/sequences/{sequence}/enrolments"),
                &json!({"lead_id": lead}),
            )
            .await;
        assert_eq!(enrolled.status(), 201);
        leads.push(lead);
    }
    let again = app
        .post_json(
            &app.admin_token,
            &format!("/v1/sequences/{sequence}/enrolments"),
            &json!({"lead_id": leads[0]}),
        )
        .await;
    assert_eq!(again.status(), 409, "enrolled once");
    let deadline = Instant::now() + Duration::from_secs(20);
    let queued = loop {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT a.lead_id, m.content FROM outbound_messages m JOIN activities a ON a.id = m.activity_id",
        )
        .fetch_all(app.store.pool())
        .await
        .unwrap();
        if rows.len() == 2 {
            break rows;
        }
        assert!(Instant::now() < deadline, "{rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let content = |lead: &str| -> Value {
        serde_json::from_str(&queued.iter().find(|(l, _)| l == lead).unwrap().1).unwrap()
    };
    assert_eq!(
        content(&leads[0])["type"],
        "text",
        "inside the window: {:?}",
        content(&leads[0])
    );
    assert_eq!(
        content(&leads[1])["type"],
        "template",
        "outside it: {:?}",
        content(&leads[1])
    );
    assert_eq!(content(&leads[1])["template"]["name"], "follow_up");
    app.stop().await;
}

async fn task_rules_create_tasks_for_owners_and_overdue_tasks_go_to_the_manager(backend: Backend) {
    let app = common::spawn_app_with_config(backend, |c| {
        nurture_config(c, 1);
        c.nurture.task_rules = vec![
            leadgate::nurture::config::TaskRule {
                name: "qualified untouched".into(),
                when: "qualified_untouched".into(),
                days: 0,
                hours: 24,
                subject: "Call this qualified lead".into(),
                due_hours: 0,
            },
            leadgate::nurture::config::TaskRule {
                name: "missed".into(),
                when: "missed_call".into(),
                days: 0,
                hours: 24,
                subject: "Call back".into(),
                due_hours: 1,
            },
            leadgate::nurture::config::TaskRule {
                name: "quiet".into(),
                when: "no_contact".into(),
                days: 14,
                hours: 24,
                subject: "Check in: no contact for two weeks".into(),
                due_hours: 24,
            },
        ];
        c.nurture.escalate_overdue_hours = 1;
        // The scheduler's own pass runs the rules at start and then rarely: this test
        // runs them itself.
        c.nurture.poll_ms = 60_000;
    })
    .await;
    let ctx = WriteContext::new("test", "test", RequestMeta::default());
    let manager = app
        .store
        .create_user(&ctx, "boss@leadgate.test", None, "manager", None, None)
        .await
        .unwrap();
    let team = app
        .store
        .save_team(&ctx, None, Some("inside sales"), None, Some(&manager.id))
        .await
        .unwrap();
    let rep = app
        .store
        .create_user(&ctx, "rep@leadgate.test", None, "rep", Some(&team.id), None)
        .await
        .unwrap();
    let day_ago =
        leadgate::domain::value::format_timestamp(chrono::Utc::now() - chrono::Duration::hours(30));
    let stale = seed_lead(&app, json!({"first_name": "Stale", "qualified": true, "qualified_at": day_ago, "owner_id": rep.id})).await;
    let fresh = seed_lead(
        &app,
        json!({"first_name": "Fresh", "qualified": true,
        "qualified_at": leadgate::domain::value::now_timestamp(), "owner_id": rep.id}),
    )
    .await;
    // An open task of the rep, due two hours ago.
    let Value::Object(fields) = json!({"activity_type": "task", "status": "open", "subject": "Send the quote",
        "lead_id": fresh, "owner_id": rep.id,
        "data": {"due_at": leadgate::domain::value::format_timestamp(chrono::Utc::now() - chrono::Duration::hours(2))}})
    else {
        unreachable!()
    };
    let overdue = app
        .store
        .write(
            &ctx,
            vec![Change::Insert {
                kind: RecordKind::Activity,
                id: None,
                fields,
            }],
        )
        .await
        .unwrap()[0]
        .id
        .clone();

    // A missed call from a lead; and a lead nobody has contacted for three weeks.
    let caller = seed_lead(&app, json!({"first_name": "Caller", "owner_id": rep.id})).await;
    let Value::Object(call) = json!({"activity_type": "call", "direction": "inbound",
        "subject": "missed via cti:generic", "channel": "cti:generic", "lead_id": caller})
    else {
        unreachable!()
    };
    app.store
        .write(
            &ctx,
            vec![Change::Insert {
                kind: RecordKind::Activity,
                id: None,
                fields: call,
            }],
        )
        .await
        .unwrap();
    let quiet = seed_lead(&app, json!({"first_name": "Quiet", "owner_id": rep.id})).await;
    let weeks_ago =
        leadgate::domain::value::format_timestamp(chrono::Utc::now() - chrono::Duration::days(21));
    // Test setup only: the lead arrived three weeks ago.
    sqlx::query("UPDATE leads SET created_at = $1 WHERE id = $2")
        .bind(&weeks_ago)
        .bind(&quiet)
        .execute(app.store.pool())
        .await
        .unwrap();
    let section = app.config.nurture.clone();
    leadgate::nurture::tasks::run_rules(&app.store, &section)
        .await
        .unwrap();
    for (lead, subject) in [
        (&caller, "Call back"),
        (&quiet, "Check in: no contact for two weeks"),
    ] {
        let (_, timeline) = app.get_json(&format!("/v1/leads/{lead}/timeline")).await;
        let tasks: Vec<&Value> = timeline["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["fields"]["activity_type"] == "task" && a["fields"]["subject"] == subject)
            .collect();
        assert_eq!(tasks.len(), 1, "{subject}: {timeline}");
        assert_eq!(tasks[0]["fields"]["owner_id"], json!(rep.id));
    }
    // The caller is new: no "no contact" task for it.
    let (_, timeline) = app.get_json(&format!("/v1/leads/{caller}/timeline")).await;
    assert!(!timeline.to_string().contains("no contact for two weeks"));
    // Running again creates nothing twice and escalates nothing twice.
    assert_eq!(
        leadgate::nurture::tasks::run_rules(&app.store, &section)
            .await
            .unwrap(),
        (0, 0)
    );
    let (_, timeline) = app.get_json(&format!("/v1/leads/{stale}/timeline")).await;
    let task = timeline["items"]
        .as_array()
        .or(timeline.as_array())
        .into_iter()
        .flatten()
        .find(|a| {
            a["fields"]["subject"] == "Call this qualified lead"
                || a["subject"] == "Call this qualified lead"
        })
        .cloned()
        .unwrap_or_else(|| panic!("no task on {timeline}"));
    let fields = if task["fields"].is_object() {
        &task["fields"]
    } else {
        &task
    };
    assert_eq!(fields["owner_id"], json!(rep.id));
    assert_eq!(fields["status"], "open");
    let (_, fresh_timeline) = app.get_json(&format!("/v1/leads/{fresh}/timeline")).await;
    assert!(
        !fresh_timeline
            .to_string()
            .contains("Call this qualified lead"),
        "qualified just now"
    );
    let (_, moved) = app.get_json(&format!("/v1/activities/{overdue}")).await;
    assert_eq!(moved["fields"]["owner_id"], json!(manager.id), "{moved}");
    assert_eq!(moved["fields"]["data"]["escalated_from"], json!(rep.id));
    app.stop().await;
}

on_both_backends!(
    whatsapp_steps_send_free_text_only_inside_the_24_hour_window,
    task_rules_create_tasks_for_owners_and_overdue_tasks_go_to_the_manager,
);

async fn a_bounce_found_in_the_mailbox_suppresses_and_a_mailboxs_daily_limit_holds_the_rest(
    backend: Backend,
) {
    let sink = smtp_sink().await;
    let app = common::spawn_app_with_config(backend, |c| {
        nurture_config(c, sink.port);
        c.nurture.daily_limit_per_mailbox = 1;
    })
    .await;
    save_welcome(&app).await;
    // The mailbox connector's bounce detection (a DSN for nobody@unknown.example) ends in
    // the suppression list and ends the lead's enrolments.
    let bounced = seed_lead(
        &app,
        json!({"first_name": "Nobody", "email": "nobody@unknown.example"}),
    )
    .await;
    let created = app
        .post_json(
            &app.admin_token,
            "/v1/sequences",
            &json!({"name": "hold", "steps": [{"type": "wait", "days": 1}]}),
        )
        .await;
    let sequence = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let enrolled = app
        .post_json(
            &app.admin_token,
            &format!("/v1/sequences/{sequence}/enrolments"),
            &json!({"lead_id": bounced}),
        )
        .await;
    assert_eq!(enrolled.status(), 201);
    let dsn =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/email/dsn_bounce.eml"))
            .unwrap();
    let receipt: Value = app
        .client
        .post(format!("{}/v1/inbound/email", app.base))
        .bearer_auth(&app.admin_token)
        .header("content-type", "message/rfc822")
        .body(dsn)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    app.settled_inbound(receipt["id"].as_str().unwrap()).await;
    let (status, suppressed) = app
        .get_json("/v1/suppressions/nobody@unknown.example")
        .await;
    assert_eq!(status, 200, "{suppressed}");
    assert_eq!(suppressed["reason"], "bounced");
    let (_, detail) = app.get_json(&format!("/v1/sequences/{sequence}")).await;
    assert_eq!(detail["enrolments"][0]["status"], "exited", "{detail}");
    assert_eq!(detail["enrolments"][0]["exit_reason"], "bounced");

    // One email per day from this mailbox: the second waits for tomorrow, unsent, though
    // its From names the mailbox differently (no display name, other case).
    let mut ids = Vec::new();
    for (name, from) in [
        ("One", "Sales <sales@leadgate.test>"),
        ("Two", "SALES@LeadGate.test"),
    ] {
        let lead = seed_lead(
            &app,
            json!({"first_name": name, "email": format!("{name}@example.org")}),
        )
        .await;
        let queued = app
            .post_json(
                &app.admin_token,
                &format!("/v1/leads/{lead}/email"),
                &json!({"template": "welcome", "from": from}),
            )
            .await;
        assert_eq!(queued.status(), 202);
        ids.push(
            queued.json::<Value>().await.unwrap()["outbox_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        if ids.len() == 1 {
            assert_eq!(settled_outbox(&app, &ids[0]).await["status"], "sent");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, row) = app.get_json(&format!("/v1/email-outbox/{}", ids[1])).await;
        if row["error"]
            .as_str()
            .is_some_and(|e| e.contains("daily limit"))
        {
            assert_eq!(row["status"], "pending");
            assert_eq!(row["attempts"], 0, "holding is not an attempt");
            break;
        }
        assert!(Instant::now() < deadline, "{row}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sink.messages().len(), 1);
    app.stop().await;
}

on_both_backends!(
    a_bounce_found_in_the_mailbox_suppresses_and_a_mailboxs_daily_limit_holds_the_rest,
);

async fn a_send_interrupted_by_a_crash_is_claimed_again_after_its_lease_and_sent_once(
    backend: Backend,
) {
    let sink = smtp_sink().await;
    let app = common::spawn_app_with_config(backend, |c| nurture_config(c, sink.port)).await;
    save_welcome(&app).await;
    let lead_id = seed_lead(
        &app,
        json!({"first_name": "Ada", "email": "ada@example.org"}),
    )
    .await;
    let lead = app
        .store
        .get(RecordKind::Lead, &lead_id)
        .await
        .unwrap()
        .unwrap();
    let template = leadgate::nurture::templates::by_name(&app.store, "welcome")
        .await
        .unwrap()
        .unwrap();
    // Queued and claimed by another process (lease 2 s) that then died mid-send.
    let ctx = WriteContext::new("test", "test", RequestMeta::default());
    let mut tx = app.store.begin_write().await.unwrap();
    let id = leadgate::nurture::outbox::enqueue_template(
        &mut tx,
        &ctx,
        &app.config.nurture,
        &TrackingKey::new(SECRET.as_bytes()),
        &lead,
        &template,
        "sales@leadgate.test",
        None,
    )
    .await
    .unwrap();
    let lease = leadgate::domain::value::format_timestamp(
        chrono::Utc::now() + chrono::Duration::seconds(2),
    );
    sqlx::query("UPDATE email_outbox SET status = 'sending', lease_until = $1 WHERE id = $2")
        .bind(&lease)
        .bind(&id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // While the lease holds, the live sender leaves it alone (the holder may be sending).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (_, row) = app.get_json(&format!("/v1/email-outbox/{id}")).await;
    assert_eq!(row["status"], "sending", "{row}");
    assert!(sink.messages().is_empty());
    // After it, the email is claimed again and sent, once; that the abandoned attempt
    // may have reached the server too is recorded on the row and its activity.
    let row = settled_outbox(&app, &id).await;
    assert_eq!(row["status"], "sent", "{row}");
    assert_eq!(row["reclaimed"], 1, "{row}");
    let (_, activity) = app
        .get_json(&format!(
            "/v1/activities/{}",
            row["activity_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        activity["fields"]["data"]["possible_duplicate"], true,
        "{activity}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let messages = sink.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0]["headers"]["Message-ID"], row["message_id"]);
    app.stop().await;
}

on_both_backends!(a_send_interrupted_by_a_crash_is_claimed_again_after_its_lease_and_sent_once);

/// A throwaway CA and a server certificate it signed for 127.0.0.1 (openssl), as a
/// relay's private CA would issue. Answers (CA, server certificate, server key).
fn loopback_certificate(dir: &Path) -> (String, String, String) {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let openssl = |args: &str| {
        let ok = Command::new("openssl")
            .current_dir(dir)
            .args(args.split_whitespace())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl (apt-get install openssl)")
            .success();
        assert!(ok, "openssl {args}");
    };
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    openssl(&format!(
        "req -x509 {ec} -days 2 -subj /CN=leadgate-test-ca -keyout ca.key -out ca.crt"
    ));
    openssl(&format!(
        "req {ec} -subj /CN=127.0.0.1 -keyout server.key -out server.csr"
    ));
    openssl(
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
         -extfile server.ext -out server.crt",
    );
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    (path("ca.crt"), path("server.crt"), path("server.key"))
}

fn test_email(to: &str) -> leadgate::nurture::mailer::OutgoingEmail {
    leadgate::nurture::mailer::OutgoingEmail {
        message_id: format!("<{}@leadgate.test>", uuid::Uuid::now_v7()),
        from: "Sales <sales@example.com>".into(),
        to: to.into(),
        subject: "Over TLS".into(),
        html: "<p>Hello</p>".into(),
        text: "Hello".into(),
        headers: Vec::new(),
        outbox_id: "test".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_sends_over_starttls_with_auth_and_refuses_an_untrusted_server() {
    use leadgate::nurture::config::SmtpSection;
    use leadgate::nurture::mailer::{Mailer, smtp::SmtpMailer};
    // SAFETY: set once, before any mailer reads them; no other test reads these names.
    unsafe {
        std::env::set_var("LG_TEST_SMTP_PASSWORD", "relay-s3cret");
    }
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = loopback_certificate(certs.path());
    let sink = smtp_sink_with(&[
        "--starttls",
        &cert,
        &key,
        "--auth",
        "mailer",
        "relay-s3cret",
    ])
    .await;
    let section = |ca_file: &str, password_env: &str| SmtpSection {
        host: "127.0.0.1".into(),
        port: sink.port,
        tls: SmtpTls::Starttls,
        user: "mailer".into(),
        password_env: password_env.into(),
        timeout_secs: 5,
        pool_size: 1,
        ca_file: ca_file.into(),
    };

    // Trusted through ca_file, the right password: delivered over TLS, authenticated.
    let mailer = SmtpMailer::new(&section(&ca, "LG_TEST_SMTP_PASSWORD")).unwrap();
    mailer.send(&test_email("ada@example.org")).await.unwrap();
    let messages = sink.wait_for(1).await;
    assert_eq!(messages[0]["rcpt_tos"][0], "ada@example.org");
    assert_eq!(messages[0]["tls"], true, "{}", messages[0]);
    assert_eq!(messages[0]["authenticated"], true, "{}", messages[0]);

    // A server whose certificate nobody vouches for is refused before anything is sent.
    let untrusted = SmtpMailer::new(&section("", "LG_TEST_SMTP_PASSWORD")).unwrap();
    let refused = untrusted.send(&test_email("grace@example.org")).await;
    assert!(
        format!("{refused:?}").contains("certificate"),
        "{refused:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sink.messages().len(),
        1,
        "only the trusted, authenticated send arrived"
    );
}

/// A server that greets and then never answers: the send gives up after `timeout_secs`.
async fn silent_smtp_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.write_all(b"220 silent.test ESMTP\r\n").await;
            held.push(stream);
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_auth_or_a_silent_server_settles_within_seconds_and_nothing_is_sent() {
    use leadgate::nurture::config::SmtpSection;
    use leadgate::nurture::mailer::{Mailer, smtp::SmtpMailer};
    // SAFETY: set once, before any app reads it; no other test reads this name.
    unsafe {
        std::env::set_var("LG_TEST_SMTP_WRONG_PASSWORD", "not-the-password");
    }
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = loopback_certificate(certs.path());
    let sink = smtp_sink_with(&[
        "--starttls",
        &cert,
        &key,
        "--auth",
        "mailer",
        "relay-s3cret",
    ])
    .await;
    let app = common::spawn_app_with_config(Backend::Sqlite, |c| {
        nurture_config(c, sink.port);
        let n = &mut c.nurture;
        n.smtp.tls = SmtpTls::Starttls;
        n.smtp.ca_file = ca.clone();
        n.smtp.user = "mailer".into();
        n.smtp.password_env = "LG_TEST_SMTP_WRONG_PASSWORD".into();
        n.max_attempts = 2;
    })
    .await;
    save_welcome(&app).await;
    let lead = seed_lead(
        &app,
        json!({"first_name": "Ada", "email": "ada@example.org"}),
    )
    .await;
    let started = Instant::now();
    let queued = app
        .post_json(
            &app.admin_token,
            &format!("/v1/leads/{lead}/email"),
            &json!({"template": "welcome"}),
        )
        .await;
    assert_eq!(queued.status(), 202);
    let id = queued.json::<Value>().await.unwrap()["outbox_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The refusal is a configuration problem, retried per policy (here twice), then failed.
    let row = settled_outbox(&app, &id).await;
    assert_eq!(row["status"], "failed", "{row}");
    assert_eq!(row["attempts"], 2, "{row}");
    assert!(
        row["error"].as_str().unwrap().contains("AUTH refused"),
        "{row}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "settled after {:?}",
        started.elapsed()
    );
    assert!(sink.messages().is_empty());
    app.stop().await;

    // A server that stops answering: the send ends as temporary after timeout_secs.
    let silent = silent_smtp_server().await;
    let mailer = SmtpMailer::new(&SmtpSection {
        host: "127.0.0.1".into(),
        port: silent,
        tls: SmtpTls::None,
        timeout_secs: 1,
        pool_size: 1,
        ..SmtpSection::default()
    })
    .unwrap();
    let started = Instant::now();
    let error = mailer
        .send(&test_email("ada@example.org"))
        .await
        .unwrap_err();
    assert!(error.is_temporary(), "{error}");
    assert!(
        error.to_string().contains("no answer within 1 s"),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_sends_over_implicit_tls_when_the_ca_is_trusted() {
    use leadgate::nurture::config::SmtpSection;
    use leadgate::nurture::mailer::{Mailer, smtp::SmtpMailer};
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = loopback_certificate(certs.path());
    let sink = smtp_sink_with(&["--tls", &cert, &key]).await;
    let section = |ca_file: &str| SmtpSection {
        host: "127.0.0.1".into(),
        port: sink.port,
        tls: SmtpTls::Tls,
        timeout_secs: 5,
        pool_size: 1,
        ca_file: ca_file.into(),
        ..SmtpSection::default()
    };
    let mailer = SmtpMailer::new(&section(&ca)).unwrap();
    mailer.send(&test_email("ada@example.org")).await.unwrap();
    let messages = sink.wait_for(1).await;
    assert_eq!(messages[0]["rcpt_tos"][0], "ada@example.org");
    assert_eq!(messages[0]["tls"], true, "{}", messages[0]);

    let untrusted = SmtpMailer::new(&section("")).unwrap();
    let refused = untrusted.send(&test_email("grace@example.org")).await;
    assert!(
        format!("{refused:?}").contains("certificate"),
        "{refused:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.messages().len(), 1, "only the trusted send arrived");
}

async fn a_missed_call_gets_one_task_whichever_creates_it(backend: Backend) {
    const CTI_SECRET: &str = "cti-test-secret";
    let app = common::spawn_app_with_config(backend, |c| {
        nurture_config(c, 1);
        c.cti.generic.secret = CTI_SECRET.into();
        c.nurture.task_rules = vec![leadgate::nurture::config::TaskRule {
            name: "missed".into(),
            when: "missed_call".into(),
            days: 0,
            hours: 24,
            subject: "Call back (rule)".into(),
            due_hours: 1,
        }];
        c.nurture.escalate_overdue_hours = 0;
        c.nurture.poll_ms = 60_000;
    })
    .await;
    let known = seed_lead(
        &app,
        json!({"first_name": "Greta", "phone": "+4915112345678", "owner_id": "u-9"}),
    )
    .await;
    // A missed call from the known lead: the pipeline raises its call-back task.
    let body = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cti_generic/call_missed.json"),
    )
    .unwrap();
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let receipt: Value = app
        .client
        .post(format!("{}/v1/webhooks/cti/generic", app.base))
        .header("content-type", "application/json")
        .header("x-leadgate-timestamp", &timestamp)
        .header(
            "x-leadgate-signature",
            connectors::cti_generic::sign(CTI_SECRET, &timestamp, &body),
        )
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let row = app.settled_inbound(receipt["id"].as_str().unwrap()).await;
    assert_eq!(row["result"]["id"], known.as_str(), "{row}");
    // A missed call written without the pipeline (no task yet) on another lead.
    let other = seed_lead(&app, json!({"first_name": "Otto", "owner_id": "u-9"})).await;
    let Value::Object(call) = json!({"activity_type": "call", "direction": "inbound",
        "subject": "missed via cti:generic", "channel": "cti:generic", "lead_id": other})
    else {
        unreachable!()
    };
    app.store
        .write(
            &WriteContext::new("test", "test", RequestMeta::default()),
            vec![Change::Insert {
                kind: RecordKind::Activity,
                id: None,
                fields: call,
            }],
        )
        .await
        .unwrap();

    let section = app.config.nurture.clone();
    let (created, _) = leadgate::nurture::tasks::run_rules(&app.store, &section)
        .await
        .unwrap();
    assert_eq!(created, 1, "only the call without a task gets one");
    for (lead, subject) in [
        (&known, "Call back +4915112345678"),
        (&other, "Call back (rule)"),
    ] {
        let (_, timeline) = app.get_json(&format!("/v1/leads/{lead}/timeline")).await;
        let tasks: Vec<&Value> = timeline["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["fields"]["activity_type"] == "task")
            .collect();
        assert_eq!(tasks.len(), 1, "{timeline}");
        assert_eq!(tasks[0]["fields"]["subject"], subject);
    }
    assert_eq!(
        leadgate::nurture::tasks::run_rules(&app.store, &section)
            .await
            .unwrap(),
        (0, 0)
    );
    app.stop().await;
}

on_both_backends!(a_missed_call_gets_one_task_whichever_creates_it);

fn openssl_in(dir: &Path, args: &[&str]) {
    let ok = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl (apt-get install openssl)")
        .success();
    assert!(ok, "openssl {args:?}");
}

/// `data` signed with the private key `key` (PEM in `dir`) by openssl: `digest` is
/// `-sha1` or `-sha256`; ECDSA signatures come out DER-encoded, as SendGrid sends them.
fn openssl_sign(dir: &Path, key: &str, digest: &str, data: &[u8]) -> String {
    use base64::Engine;
    std::fs::write(dir.join("to-sign"), data).unwrap();
    openssl_in(
        dir,
        &["dgst", digest, "-sign", key, "-out", "signature", "to-sign"],
    );
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(dir.join("signature")).unwrap())
}

/// An https server on 127.0.0.1 (certificate `cert`/`key`) answering GETs of the paths in
/// `routes` with their bodies, 404 otherwise; records every path asked for.
async fn https_stand_in(
    cert: &str,
    key: &str,
    routes: Vec<(String, Vec<u8>)>,
) -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let routes = Arc::new(routes);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, log, routes) = (acceptor.clone(), log.clone(), routes.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buffer = [0_u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&request).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                log.lock().unwrap().push(path.clone());
                let found = routes.iter().find(|(p, _)| *p == path);
                let (status, body) = match found {
                    Some((_, body)) => ("200 OK", body.clone()),
                    None => ("404 Not Found", b"no such thing".to_vec()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(head.as_bytes()).await;
                let _ = tls.write_all(&body).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_webhooks_take_only_events_their_provider_signed() {
    use base64::Engine;
    use hmac::Mac;
    const MAILGUN_KEY: &str = "mailgun-signing-key";
    const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:ses-events";
    // SAFETY: set once, before the app reads it; no other test reads this name.
    unsafe {
        std::env::set_var("LG_TEST_MAILGUN_SIGNING_KEY", MAILGUN_KEY);
    }
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path();
    // SendGrid's key pair (SendGrid shows the public half as base64 DER).
    openssl_in(
        keys,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "sendgrid.key",
        ],
    );
    openssl_in(
        keys,
        &[
            "ec",
            "-in",
            "sendgrid.key",
            "-pubout",
            "-outform",
            "DER",
            "-out",
            "sendgrid.der",
        ],
    );
    let sendgrid_public = base64::engine::general_purpose::STANDARD
        .encode(std::fs::read(keys.join("sendgrid.der")).unwrap());
    // SNS's signing certificate, served over https by a stand-in SNS host (127.0.0.1,
    // its TLS certificate from a throwaway CA the app trusts through sns_ca_file).
    openssl_in(
        keys,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=sns.amazonaws.com",
            "-keyout",
            "sns.key",
            "-out",
            "sns.crt",
        ],
    );
    let (ca, tls_cert, tls_key) = loopback_certificate(keys);
    let cert_path = "/SimpleNotificationService-test.pem".to_owned();
    let confirm_path = "/?Action=ConfirmSubscription&TopicArn=ses-events&Token=t-1".to_owned();
    let (sns_port, sns_seen) = https_stand_in(
        &tls_cert,
        &tls_key,
        vec![
            (
                cert_path.clone(),
                std::fs::read(keys.join("sns.crt")).unwrap(),
            ),
            (
                confirm_path.clone(),
                b"<ConfirmSubscriptionResponse/>".to_vec(),
            ),
        ],
    )
    .await;
    let sns_base = format!("https://127.0.0.1:{sns_port}");
    let public = sendgrid_public.clone();
    let app = common::spawn_app_with_config(Backend::Sqlite, move |c| {
        nurture_config(c, 1);
        let n = &mut c.nurture;
        n.webhook_token = "hook-token".into();
        n.mailgun.webhook_signing_key_env = "LG_TEST_MAILGUN_SIGNING_KEY".into();
        n.sendgrid.webhook_public_key = public;
        n.ses.sns_topic_arns = vec![TOPIC.into()];
        n.ses.sns_cert_hosts = vec!["127.0.0.1".into()];
        n.ses.sns_ca_file = ca.clone();
    })
    .await;
    let post =
        |provider: &str, token: &str, body: Vec<u8>, headers: Vec<(&'static str, String)>| {
            let mut request = app
                .client
                .post(format!(
                    "{}/v1/webhooks/email/{provider}?token={token}",
                    app.base
                ))
                .header("content-type", "application/json")
                .body(body);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            request.send()
        };
    let suppressed = |email: &'static str| {
        let app = &app;
        async move { app.get_json(&format!("/v1/suppressions/{email}")).await }
    };
    async fn problem(response: reqwest::Response, status: u16) {
        assert_eq!(response.status(), status);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }

    // ---- Mailgun: HMAC-SHA256 of timestamp + token; a token is good once.
    let now = chrono::Utc::now().timestamp();
    let mailgun = |timestamp: i64, token: &str, recipient: &str, key: &str| {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(format!("{timestamp}{token}").as_bytes());
        serde_json::to_vec(&json!({
            "signature": {"timestamp": timestamp.to_string(), "token": token,
                          "signature": hex::encode(mac.finalize().into_bytes())},
            "event-data": {"event": "failed", "severity": "permanent", "recipient": recipient}
        }))
        .unwrap()
    };
    let good = mailgun(now, "tok-1", "mg-bounce@example.org", MAILGUN_KEY);
    problem(
        post("mailgun", "nope", good.clone(), vec![]).await.unwrap(),
        401,
    )
    .await;
    let ok = post("mailgun", "hook-token", good.clone(), vec![])
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.json::<Value>().await.unwrap()["suppressed"], 1);
    assert_eq!(
        suppressed("mg-bounce@example.org").await.1["reason"],
        "bounced"
    );
    // The same delivery again is acknowledged and not processed twice; the same signed
    // token on another body is refused.
    let again = post("mailgun", "hook-token", good, vec![]).await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let reused = mailgun(now, "tok-1", "mg-other@example.org", MAILGUN_KEY);
    problem(
        post("mailgun", "hook-token", reused, vec![]).await.unwrap(),
        401,
    )
    .await;
    assert_eq!(suppressed("mg-other@example.org").await.0, 404);
    let forged = mailgun(now, "tok-2", "mg-forged@example.org", "guessed-key");
    problem(
        post("mailgun", "hook-token", forged, vec![]).await.unwrap(),
        401,
    )
    .await;
    let stale = mailgun(now - 3600, "tok-3", "mg-stale@example.org", MAILGUN_KEY);
    problem(
        post("mailgun", "hook-token", stale, vec![]).await.unwrap(),
        401,
    )
    .await;
    assert_eq!(suppressed("mg-forged@example.org").await.0, 404);
    assert_eq!(suppressed("mg-stale@example.org").await.0, 404);

    // ---- SendGrid: ECDSA P-256 over timestamp + raw body.
    let events = serde_json::to_vec(&json!([
        {"event": "bounce", "type": "bounce", "email": "SG-Bounce@example.org"},
        {"event": "delivered", "email": "sg-delivered@example.org"}
    ]))
    .unwrap();
    let timestamp = now.to_string();
    let signed = [timestamp.as_bytes(), &events].concat();
    let signature = openssl_sign(keys, "sendgrid.key", "-sha256", &signed);
    let headers = |signature: &str, timestamp: &str| {
        vec![
            (
                "X-Twilio-Email-Event-Webhook-Signature",
                signature.to_owned(),
            ),
            (
                "X-Twilio-Email-Event-Webhook-Timestamp",
                timestamp.to_owned(),
            ),
        ]
    };
    let mut tampered = events.clone();
    let at = tampered.len() - 5;
    tampered[at] = b'X';
    problem(
        post(
            "sendgrid",
            "hook-token",
            tampered,
            headers(&signature, &timestamp),
        )
        .await
        .unwrap(),
        401,
    )
    .await;
    let later = (now + 1).to_string();
    problem(
        post(
            "sendgrid",
            "hook-token",
            events.clone(),
            headers(&signature, &later),
        )
        .await
        .unwrap(),
        401,
    )
    .await;
    problem(
        post("sendgrid", "hook-token", events.clone(), vec![])
            .await
            .unwrap(),
        401,
    )
    .await;
    let ok = post(
        "sendgrid",
        "hook-token",
        events,
        headers(&signature, &timestamp),
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        suppressed("sg-bounce@example.org").await.1["reason"],
        "bounced"
    );
    assert_eq!(
        suppressed("sg-delivered@example.org").await.0,
        404,
        "a delivery is not a bounce"
    );

    // ---- SES through SNS: RSA over the canonical string, certificate from an SNS host.
    let sns = |fields: Value, version: &str, cert_url: &str| {
        let mut message = fields.as_object().unwrap().clone();
        message.insert("SignatureVersion".into(), json!(version));
        message.insert("SigningCertURL".into(), json!(cert_url));
        let canonical = leadgate::nurture::webhooks::sns_string_to_sign(&message).unwrap();
        let digest = if version == "1" { "-sha1" } else { "-sha256" };
        let signature = openssl_sign(keys, "sns.key", digest, canonical.as_bytes());
        message.insert("Signature".into(), json!(signature));
        serde_json::to_vec(&message).unwrap()
    };
    let cert_url = format!("{sns_base}{cert_path}");
    let confirmation = json!({"Type": "SubscriptionConfirmation", "MessageId": "m-1",
        "Token": "t-1", "TopicArn": TOPIC, "Message": "You have chosen to subscribe.",
        "SubscribeURL": format!("{sns_base}{confirm_path}"),
        "Timestamp": "2025-03-04T10:21:07.000Z"});
    let ok = app
        .client
        .post(format!(
            "{}/v1/webhooks/email/ses?token=hook-token",
            app.base
        ))
        .header("content-type", "text/plain; charset=UTF-8")
        .body(sns(confirmation, "1", &cert_url))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.json::<Value>().await.unwrap()["confirmed"], true);
    assert!(
        sns_seen.lock().unwrap().contains(&confirm_path),
        "the subscription was confirmed"
    );
    let bounce = |recipient: &str, topic: &str| {
        json!({"Type": "Notification", "MessageId": "m-2", "TopicArn": topic,
            "Message": json!({"notificationType": "Bounce", "bounce": {"bounceType": "Permanent",
                "bouncedRecipients": [{"emailAddress": recipient}]}}).to_string(),
            "Timestamp": "2025-03-04T10:22:07.000Z",
            "UnsubscribeURL": format!("{sns_base}/?Action=Unsubscribe")})
    };
    let ok = post(
        "ses",
        "hook-token",
        sns(bounce("ses-bounce@example.org", TOPIC), "2", &cert_url),
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        suppressed("ses-bounce@example.org").await.1["reason"],
        "bounced"
    );
    // The certificate was fetched once and then taken from the cache.
    let fetched = sns_seen
        .lock()
        .unwrap()
        .iter()
        .filter(|p| **p == cert_path)
        .count();
    assert_eq!(fetched, 1);
    // Signed, but the Message changed on the way.
    let mut altered: Value =
        serde_json::from_slice(&sns(bounce("ses-a@example.org", TOPIC), "2", &cert_url)).unwrap();
    altered["Message"] = bounce("ses-victim@example.org", TOPIC)["Message"].clone();
    problem(
        post(
            "ses",
            "hook-token",
            serde_json::to_vec(&altered).unwrap(),
            vec![],
        )
        .await
        .unwrap(),
        401,
    )
    .await;
    // Properly signed by SNS, but for somebody else's topic.
    let foreign = "arn:aws:sns:us-east-1:999999999999:theirs";
    problem(
        post(
            "ses",
            "hook-token",
            sns(bounce("ses-b@example.org", foreign), "2", &cert_url),
            vec![],
        )
        .await
        .unwrap(),
        401,
    )
    .await;
    // A certificate anywhere but an allowed https host is not even fetched.
    for url in [
        format!("http://127.0.0.1:{sns_port}{cert_path}"),
        "https://evil.test/SimpleNotificationService-test.pem".to_owned(),
    ] {
        problem(
            post(
                "ses",
                "hook-token",
                sns(bounce("ses-c@example.org", TOPIC), "2", &url),
                vec![],
            )
            .await
            .unwrap(),
            401,
        )
        .await;
    }
    for email in [
        "ses-a@example.org",
        "ses-victim@example.org",
        "ses-b@example.org",
        "ses-c@example.org",
    ] {
        assert_eq!(suppressed(email).await.0, 404, "{email}");
    }
    assert_eq!(
        sns_seen.lock().unwrap().len(),
        2,
        "only the certificate and the confirmation were fetched: {:?}",
        sns_seen.lock().unwrap()
    );
    app.stop().await;

    // A provider without its signature check configured is not served.
    let bare = common::spawn_app_with_config(Backend::Sqlite, |c| nurture_config(c, 1)).await;
    for provider in ["mailgun", "sendgrid", "ses"] {
        let response = bare
            .client
            .post(format!("{}/v1/webhooks/email/{provider}", bare.base))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{provider}");
    }
    bare.stop().await;
}
