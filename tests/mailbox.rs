//! Inbound email: `POST /v1/inbound/email` with the fixtures, and IMAP mailboxes against a
//! real Dovecot started for the test (skipped, saying so, when Dovecot is not installed).

mod common;

use common::dovecot::{PASSWORD, eventually, start_dovecot};
use common::{Backend, TestApp, spawn_app_with_config};
use leadgate::config::MailboxTls;
use leadgate::domain::RecordKind;
use serde_json::Value;

on_both_backends!(
    posted_email_is_classified_and_only_leads_become_leads,
    posted_email_refusals,
    mailbox_messages_become_leads_once_across_restarts,
);

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/email/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

async fn post_email(
    app: &TestApp,
    token: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(format!("{}/v1/inbound/email", app.base))
        .header("content-type", content_type)
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request sent")
}

async fn post_fixture(app: &TestApp, name: &str) -> Value {
    let response = post_email(app, Some(&app.admin_token), "message/rfc822", fixture(name)).await;
    assert_eq!(response.status(), 202, "{name}");
    response.json().await.expect("a JSON receipt")
}

fn configure_email(config: &mut leadgate::config::Config) {
    config.email.own_domains = vec!["leadgate.example".to_owned()];
}

async fn posted_email_is_classified_and_only_leads_become_leads(backend: Backend) {
    let app = spawn_app_with_config(backend, configure_email).await;

    let lead = post_fixture(&app, "lead_with_signature.eml").await;
    assert_eq!(lead["classification"], "lead");
    assert_eq!(
        lead["external_id"],
        "CAF3x9q1-lead-0001@mail.northwind-traders.example"
    );
    let row = app.settled_inbound(lead["id"].as_str().unwrap()).await;
    assert_eq!(row["status"], "done", "{row}");
    let lead_id = row["result"]["id"].as_str().expect("a lead").to_owned();
    let (_, record) = app.get_json(&format!("/v1/leads/{lead_id}")).await;
    let fields = &record["fields"];
    assert_eq!(fields["email"], "maria.gonzalez@northwind-traders.example");
    assert_eq!(fields["first_name"], "Maria");
    assert_eq!(fields["last_name"], "Gonzalez");
    assert_eq!(fields["phone"], "+493012345678");
    assert_eq!(fields["company"], "Northwind Traders GmbH");
    assert_eq!(fields["title"], "Head of Sales Operations");
    let (_, timeline) = app.get_json(&format!("/v1/leads/{lead_id}/timeline")).await;
    let email = timeline["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["fields"]["activity_type"] == "email")
        .expect("an email activity")
        .clone();
    assert!(
        email["fields"]["subject"]
            .as_str()
            .is_some_and(|subject| subject.starts_with("Pricing for 40 seats")),
        "{email}"
    );
    assert!(
        email["fields"]["body"]
            .as_str()
            .is_some_and(|body| body.contains("about 40 people")),
        "{email}"
    );

    // The same message again is the same record.
    let again = post_fixture(&app, "lead_with_signature.eml").await;
    assert_eq!(again["id"], lead["id"]);

    let auto = post_fixture(&app, "out_of_office.eml").await;
    assert_eq!(auto["classification"], "auto_reply");
    let row = app.settled_inbound(auto["id"].as_str().unwrap()).await;
    assert_eq!(row["result"]["action"], "skipped", "{row}");

    // A bounce marks the failed address undeliverable on the lead that has it.
    let known = app
        .post_json(
            &app.admin_token,
            "/v1/leads",
            &serde_json::json!({"email": "nobody@unknown.example", "last_name": "Nobody"}),
        )
        .await;
    assert_eq!(known.status(), 201);
    let known: serde_json::Value = known.json().await.unwrap();
    let bounce = post_fixture(&app, "dsn_bounce.eml").await;
    assert_eq!(bounce["classification"], "bounce");
    assert_eq!(
        bounce["bounce_recipients"],
        serde_json::json!(["nobody@unknown.example"])
    );
    let row = app.settled_inbound(bounce["id"].as_str().unwrap()).await;
    assert_eq!(row["result"]["action"], "skipped", "{row}");
    assert_eq!(
        row["result"]["marked_undeliverable"],
        serde_json::json!([known["id"]])
    );
    let lead_path = format!("/v1/leads/{}", known["id"].as_str().unwrap());
    let (_, marked) = app.get_json(&lead_path).await;
    assert_eq!(marked["fields"]["email_undeliverable"], true, "{marked}");
    assert!(marked["fields"]["email_bounced_at"].is_string());
    let (_, timeline) = app.get_json(&format!("{lead_path}/timeline")).await;
    assert_eq!(
        timeline["items"][0]["fields"]["activity_type"],
        "email_bounce"
    );

    // Malformed MIME is stored, not a crash: what could be read is kept.
    let malformed = post_fixture(&app, "malformed_mime.eml").await;
    assert_eq!(malformed["external_id"], "malformed-0005@customer.example");
    let row = app.settled_inbound(malformed["id"].as_str().unwrap()).await;
    assert_eq!(row["status"], "done", "{row}");

    assert_eq!(app.store.count(RecordKind::Lead).await.unwrap(), 3);
    app.stop().await;
}

fn twenty_megabyte_attachment() -> Vec<u8> {
    let mut raw = String::from(
        "From: Big <big@customer.example>\r\nSubject: specs\r\nMessage-ID: <big@customer.example>\r\nContent-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nSpecs attached.\r\n--B\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"specs.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    );
    // 20 MiB of 0xA5 bytes is this base64 line over and over.
    let line = "paWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWl\r\n";
    for _ in 0..(20 * 1024 * 1024 / 57) {
        raw.push_str(line);
    }
    raw.push_str("--B--\r\n");
    raw.into_bytes()
}

async fn posted_email_refusals(backend: Backend) {
    let app = spawn_app_with_config(backend, configure_email).await;
    let lead = fixture("lead_with_signature.eml");

    let response = post_email(&app, None, "message/rfc822", lead.clone()).await;
    assert_eq!(response.status(), 401);
    let partner = app.partner_token("acme").await;
    let response = post_email(&app, Some(&partner), "message/rfc822", lead.clone()).await;
    assert_eq!(response.status(), 403);
    let response = post_email(&app, Some(&app.admin_token), "text/plain", lead.clone()).await;
    assert_eq!(response.status(), 415);
    let response = post_email(
        &app,
        Some(&app.admin_token),
        "message/rfc822",
        b" \r\n".to_vec(),
    )
    .await;
    assert_eq!(response.status(), 400);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["detail"], "message is empty", "{problem}");

    // A 20 MB attachment is stored (listed, not inlined) under the default size limit.
    let big = post_email(
        &app,
        Some(&app.admin_token),
        "application/octet-stream",
        twenty_megabyte_attachment(),
    )
    .await;
    assert_eq!(big.status(), 202);
    let big: Value = big.json().await.unwrap();
    let row = app.settled_inbound(big["id"].as_str().unwrap()).await;
    assert_eq!(row["status"], "done", "{row}");
    app.stop().await;

    let app = spawn_app_with_config(backend, |config| {
        config.email.max_message_bytes = 4096;
    })
    .await;
    let response = post_email(
        &app,
        Some(&app.admin_token),
        "message/rfc822",
        vec![b'a'; 8192],
    )
    .await;
    assert_eq!(response.status(), 413);
    app.stop().await;
}

async fn settled_count(app: &TestApp) -> i64 {
    let depth = app.store.inbox_depth().await.expect("inbox depth");
    depth.done + depth.failed
}

async fn mailbox_messages_become_leads_once_across_restarts(backend: Backend) {
    let Some(dovecot) = start_dovecot(module_path!()).await else {
        return;
    };
    dovecot.append(&fixture("lead_with_signature.eml")).await;
    // Not a message at all: logged and skipped, the mailbox goes on.
    dovecot.append(b"\r\n").await;
    dovecot.append(&fixture("out_of_office.eml")).await;

    let password_env = format!(
        "LEADGATE_TEST_MAILBOX_PASSWORD_{}",
        if backend == Backend::Sqlite {
            "SQLITE"
        } else {
            "PG"
        }
    );
    // SAFETY: set once, before the app (the only reader) starts; no other test uses the name.
    unsafe { std::env::set_var(&password_env, PASSWORD) };
    let mailbox = dovecot.mailbox(&password_env);
    let app = spawn_app_with_config(backend, |config| {
        configure_email(config);
        config.mailboxes = vec![mailbox];
    })
    .await;

    eventually("both messages processed", || async {
        settled_count(&app).await == 2
    })
    .await;
    let leads = app
        .store
        .find_by(
            RecordKind::Lead,
            "email",
            "maria.gonzalez@northwind-traders.example",
            2,
        )
        .await
        .unwrap();
    assert_eq!(leads.len(), 1, "one lead from the enquiry");
    let fields = &leads[0].fields;
    assert_eq!(fields["phone"], "+493012345678");
    assert_eq!(fields["company"], "Northwind Traders GmbH");
    assert_eq!(fields["source"], "email");
    // The out-of-office is stored but makes no lead.
    assert_eq!(app.store.count(RecordKind::Lead).await.unwrap(), 1);
    let (_, done) = app.get_json("/v1/inbound?status=done&limit=10").await;
    let rows = done["items"].as_array().unwrap();
    assert!(
        rows.iter().any(|row| row["result"]["action"] == "skipped"),
        "{done}"
    );

    // after = "flag": every message, the skipped one too, is \\Seen once handled.
    eventually("all three flagged", || async { dovecot.seen().await == 3 }).await;

    // After a restart the mailbox goes on from the remembered UID: only the new message.
    let app = app.restart().await;
    dovecot.append(&fixture("html_only.eml")).await;
    eventually("the new message processed", || async {
        settled_count(&app).await == 3
    })
    .await;
    assert_eq!(app.store.count(RecordKind::Lead).await.unwrap(), 2);
    let metrics = app.metrics().await;
    let line = |name: &str| {
        metrics
            .lines()
            .find(|line| line.starts_with(name) && line.contains("email:sales"))
            .map(str::to_owned)
    };
    assert_eq!(
        line("leadgate_inbound_accepted_total").as_deref(),
        Some("leadgate_inbound_accepted_total{source=\"email:sales\"} 1"),
        "{metrics}"
    );
    assert_eq!(line("leadgate_inbound_replayed_total"), None, "{metrics}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailboxes_over_tls_and_starttls_verify_the_server() {
    let Some(dovecot) = start_dovecot(module_path!()).await else {
        return;
    };
    let password_env = "LEADGATE_TEST_MAILBOX_PASSWORD_TLS";
    // SAFETY: set once, before anything reads it; no other test uses the name.
    unsafe { std::env::set_var(password_env, PASSWORD) };
    let mut tls = dovecot.mailbox(password_env);
    tls.tls = MailboxTls::Tls;
    tls.port = dovecot.tls_port;
    // A server whose CA is private is not trusted by the system's roots alone.
    let refused = leadgate::mailbox::check(&tls).await.expect_err("untrusted");
    assert!(refused.to_string().contains("certificate"), "{refused}");
    tls.ca_file = Some(dovecot.ca.clone());
    leadgate::mailbox::check(&tls)
        .await
        .expect("TLS with the server's CA");
    let mut starttls = dovecot.mailbox(password_env);
    starttls.tls = MailboxTls::Starttls;
    starttls.ca_file = Some(dovecot.ca.clone());
    leadgate::mailbox::check(&starttls).await.expect("STARTTLS");
    starttls.ca_file = None;
    assert!(
        leadgate::mailbox::check(&starttls).await.is_err(),
        "STARTTLS verifies too"
    );

    // End to end over TLS: a message in the mailbox becomes a lead.
    dovecot.append(&fixture("lead_with_signature.eml")).await;
    let app = spawn_app_with_config(Backend::Sqlite, |config| {
        configure_email(config);
        config.mailboxes = vec![tls];
    })
    .await;
    eventually("the message processed over TLS", || async {
        settled_count(&app).await == 1
    })
    .await;
    assert_eq!(app.store.count(RecordKind::Lead).await.unwrap(), 1);
    app.stop().await;
}
