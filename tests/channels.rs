//! The real-time channels' accept half end to end: forms, WhatsApp, CTI and Zoom, each
//! verified, decoded and durable in the inbox before the answer.

mod common;

use chrono::Utc;
use common::{Backend, TestApp, spawn_app_with_config};
use connectors::signature::hmac_sha256_hex;
use connectors::{cti_generic, twilio};
use leadgate::config::{Config, FormSection};
use leadgate::domain::RecordKind;
use leadgate::store::{Change, RequestMeta, WriteContext};
use serde_json::{Map, Value, json};

const WA_SECRET: &str = "wa-app-secret";
const WA_VERIFY: &str = "wa-verify-token";
const ZOOM_SECRET: &str = "zoom-secret-token";
const TWILIO_TOKEN: &str = "twilio-auth-token";
const TWILIO_BASE: &str = "https://leadgate.example.com";
const CTI_SECRET: &str = "shared-secret";

on_both_backends!(
    a_form_post_is_durable_and_a_double_submit_is_one_row,
    whatsapp_messages_are_stored_and_bad_signatures_refused,
    a_ringing_call_pops_the_lead_with_that_phone,
    generic_cti_events_are_verified_and_stored,
    zoom_validates_and_stores_events,
    a_partner_sees_only_its_own_submissions,
    whatsapp_messages_become_activities_on_the_senders_lead,
    a_missed_call_from_an_unknown_number_becomes_an_inbound_call_lead,
);

fn channels(config: &mut Config) {
    config.whatsapp.app_secret = WA_SECRET.into();
    config.whatsapp.verify_token = WA_VERIFY.into();
    config.zoom.secret_token = ZOOM_SECRET.into();
    config.cti.twilio.auth_token = TWILIO_TOKEN.into();
    config.cti.twilio.public_base_url = TWILIO_BASE.into();
    config.cti.generic.secret = CTI_SECRET.into();
    config.forms.insert(
        "contact".into(),
        FormSection {
            allowed_origins: vec!["https://www.example.com".into()],
            required: vec!["email".into(), "name".into()],
            honeypot_field: Some("website".into()),
            thank_you_url: Some("https://www.example.com/thanks".into()),
            mapping: Some("form".into()),
            dedup_window_seconds: 600,
        },
    );
    config.forms.insert(
        "signup".into(),
        FormSection {
            required: vec!["email".into()],
            ..FormSection::default()
        },
    );
}

async fn spawn(backend: Backend) -> TestApp {
    spawn_app_with_config(backend, channels).await
}

fn fixture(path: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

async fn inbound(app: &TestApp, id: &Value) -> Value {
    let (status, row) = app
        .get_json(&format!("/v1/inbound/{}", id.as_str().expect("id is text")))
        .await;
    assert_eq!(status, 200, "{row}");
    row
}

fn assert_problem(response: &reqwest::Response, status: u16) {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}

// ---------------------------------------------------------------- forms

async fn post_form(app: &TestApp, form: &str, body: Vec<u8>, html: bool) -> reqwest::Response {
    let mut request = app
        .client
        .post(format!("{}/v1/forms/{form}", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", "https://www.example.com")
        .body(body);
    if html {
        request = request
            .header("accept", "text/html,application/xhtml+xml")
            .header("referer", "https://www.example.com/contact?lang=en");
    }
    request.send().await.expect("request sent")
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn a_form_post_is_durable_and_a_double_submit_is_one_row(backend: Backend) {
    let app = spawn(backend).await;
    // JSON from a script: 202 with the inbound id; the same again is the same row.
    let body = fixture("form/contact.json");
    let send_json = || {
        app.client
            .post(format!("{}/v1/forms/contact", app.base))
            .header("content-type", "application/json")
            .header("origin", "https://www.example.com")
            .body(body.clone())
            .send()
    };
    let first = send_json().await.unwrap();
    assert_eq!(first.status(), 202);
    assert_eq!(
        first.headers()["access-control-allow-origin"],
        "https://www.example.com"
    );
    let first: Value = first.json().await.unwrap();
    let second = send_json().await.unwrap();
    assert_eq!(second.status(), 202);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let second: Value = second.json().await.unwrap();
    assert_eq!(first["id"], second["id"]);
    assert_eq!(app.inbox_total().await, 1);
    let row = inbound(&app, &first["id"]).await;
    assert_eq!(row["source"], "form:contact");
    assert_eq!(row["fields"]["email"], "jane.doe@example.org");
    assert_eq!(row["fields"]["interest"], json!(["crm", "api"]));

    // A plain HTML post: 303 to the thank-you page, fields decoded from urlencoded.
    let client = no_redirects();
    let response = client
        .post(format!("{}/v1/forms/contact", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", "https://www.example.com")
        .header("accept", "text/html")
        .body(fixture("form/contact.urlencoded").replace_in("Jane", "Joan"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(
        response.headers()["location"],
        "https://www.example.com/thanks"
    );
    assert_eq!(app.inbox_total().await, 2);

    // Multipart text parts work; a file part is refused.
    let form = reqwest::multipart::Form::new()
        .text("email", "multi@example.org")
        .text("note", "from multipart");
    let response = app
        .client
        .post(format!("{}/v1/forms/signup", app.base))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let receipt: Value = response.json().await.unwrap();
    let row = inbound(&app, &receipt["id"]).await;
    assert_eq!(row["fields"]["email"], "multi@example.org");
    assert_eq!(row["fields"]["note"], "from multipart");
    let file = reqwest::multipart::Part::bytes(b"%PDF".to_vec()).file_name("cv.pdf");
    let form = reqwest::multipart::Form::new()
        .text("email", "file@example.org")
        .part("cv", file);
    let response = app
        .client
        .post(format!("{}/v1/forms/signup", app.base))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_problem(&response, 415);
    assert_eq!(app.inbox_total().await, 3);
    app.stop().await;
}

trait ReplaceIn {
    fn replace_in(self, from: &str, to: &str) -> Vec<u8>;
}

impl ReplaceIn for Vec<u8> {
    fn replace_in(self, from: &str, to: &str) -> Vec<u8> {
        String::from_utf8(self)
            .expect("UTF-8 fixture")
            .replace(from, to)
            .into_bytes()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_refusals_store_nothing_and_are_counted() {
    let app = spawn(Backend::Sqlite).await;
    // Unknown form.
    let response = post_form(&app, "nope", b"email=a%40b.example".to_vec(), false).await;
    assert_problem(&response, 404);
    // 5 MB against a 64 KiB limit.
    let huge = format!("email=a%40b.example&pad={}", "x".repeat(5 * 1024 * 1024));
    let response = app
        .client
        .post(format!("{}/v1/forms/signup", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(huge)
        .send()
        .await
        .expect("the 413 arrives before the connection closes");
    assert_problem(&response, 413);
    // Honeypot filled: answered like a success, nothing stored.
    let spam = fixture("form/contact.json").replace_in(
        "\"company\"",
        "\"website\": \"http://spam.example\", \"company\"",
    );
    let response = app
        .client
        .post(format!("{}/v1/forms/contact", app.base))
        .header("content-type", "application/json")
        .header("origin", "https://www.example.com")
        .body(spam)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let receipt: Value = response.json().await.unwrap();
    assert!(receipt["id"].is_string());
    // Invalid fields: 422 with one entry per field for scripts…
    let response = post_form(&app, "contact", b"email=not-an-address".to_vec(), false).await;
    assert_problem(&response, 422);
    let problem: Value = response.json().await.unwrap();
    let mut fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    fields.sort_unstable();
    assert_eq!(fields, ["email", "name"], "{problem}");
    // …and a 303 back to the page with ?error= for a plain HTML post.
    let response = no_redirects()
        .post(format!("{}/v1/forms/contact", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", "https://www.example.com")
        .header("accept", "text/html")
        .header("referer", "https://www.example.com/contact?lang=en")
        .body("email=not-an-address")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with("https://www.example.com/contact?lang=en&error="),
        "{location}"
    );
    // An origin the form does not list: 403 and no CORS headers.
    let response = app
        .client
        .post(format!("{}/v1/forms/contact", app.base))
        .header("content-type", "application/json")
        .header("origin", "https://evil.example")
        .body(fixture("form/contact.json"))
        .send()
        .await
        .unwrap();
    assert_problem(&response, 403);
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    assert_eq!(app.inbox_total().await, 0);
    let metrics = app.metrics().await;
    for reason in [
        "channel=\"form\",reason=\"unknown_form\"",
        "channel=\"form:contact\",reason=\"honeypot\"",
        "channel=\"form:contact\",reason=\"validation\"",
        "channel=\"form:contact\",reason=\"origin\"",
    ] {
        assert!(metrics.contains(reason), "{reason} not in {metrics}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_allows_listed_origins_only() {
    let app = spawn(Backend::Sqlite).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/v1/forms/contact", app.base),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let allowed = preflight("https://www.example.com").await.unwrap();
    assert_eq!(allowed.status(), 204);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://www.example.com"
    );
    assert!(
        allowed.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let refused = preflight("https://evil.example").await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_endpoints_are_rate_limited_per_client() {
    let app = spawn_app_with_config(Backend::Sqlite, |config| {
        channels(config);
        config.rate_limit_per_minute = 3;
    })
    .await;
    for n in 0..3 {
        let body = format!("email=user{n}%40example.org").into_bytes();
        assert_eq!(post_form(&app, "signup", body, false).await.status(), 202);
    }
    let response = post_form(&app, "signup", b"email=x%40example.org".to_vec(), false).await;
    assert_problem(&response, 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    // Webhooks share the client's allowance.
    let response = app
        .client
        .post(format!("{}/v1/webhooks/whatsapp", app.base))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    // Authenticated endpoints are not limited.
    let (status, _) = app.get_json("/v1/inbound?status=failed").await;
    assert_eq!(status, 200);
    app.stop().await;
}

// ---------------------------------------------------------------- WhatsApp

async fn post_whatsapp(app: &TestApp, body: &[u8], signature: Option<String>) -> reqwest::Response {
    let mut request = app
        .client
        .post(format!("{}/v1/webhooks/whatsapp", app.base))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("x-hub-signature-256", signature);
    }
    request.send().await.expect("request sent")
}

fn wa_sign(body: &[u8]) -> Option<String> {
    Some(format!(
        "sha256={}",
        hmac_sha256_hex(WA_SECRET.as_bytes(), &[body])
    ))
}

async fn whatsapp_messages_are_stored_and_bad_signatures_refused(backend: Backend) {
    let app = spawn(backend).await;
    // Subscription handshake.
    let handshake = |token: &'static str| {
        app.client
            .get(format!("{}/v1/webhooks/whatsapp", app.base))
            .query(&[
                ("hub.mode", "subscribe"),
                ("hub.verify_token", token),
                ("hub.challenge", "1158201444"),
            ])
            .send()
    };
    let ok = handshake(WA_VERIFY).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "1158201444");
    assert_problem(&handshake("wrong").await.unwrap(), 403);

    // The documented text message.
    let body = fixture("whatsapp/text_message.json");
    let response = post_whatsapp(&app, &body, wa_sign(&body)).await;
    assert_eq!(response.status(), 200);
    let receipt: Value = response.json().await.unwrap();
    let id = receipt["items"][0]["id"].clone();
    let row = inbound(&app, &id).await;
    assert_eq!(row["source"], "whatsapp");
    assert_eq!(row["fields"]["message_type"], "text");
    assert_eq!(row["fields"]["text"], "this is a text message");
    assert_eq!(row["fields"]["phone"], "+16315551181");
    // A redelivery answers the same id and stores nothing new.
    let again: Value = post_whatsapp(&app, &body, wa_sign(&body))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["items"][0]["id"], id);
    assert_eq!(app.inbox_total().await, 1);

    // A message type leadgate does not know is stored, not refused.
    let body = fixture("whatsapp/unsupported_message.json");
    let response = post_whatsapp(&app, &body, wa_sign(&body)).await;
    assert_eq!(response.status(), 200);
    let receipt: Value = response.json().await.unwrap();
    let row = inbound(&app, &receipt["items"][0]["id"]).await;
    assert_eq!(row["fields"]["message_type"], "unsupported");
    assert_eq!(app.inbox_total().await, 2);

    // Bad and missing signatures, truncated JSON: refused, nothing stored.
    let body = fixture("whatsapp/status_sent.json");
    let forged = Some(format!(
        "sha256={}",
        hmac_sha256_hex(b"not-the-secret", &[&body])
    ));
    assert_problem(&post_whatsapp(&app, &body, forged).await, 401);
    assert_problem(&post_whatsapp(&app, &body, None).await, 401);
    let truncated = &body[..body.len() / 2];
    assert_problem(
        &post_whatsapp(&app, truncated, wa_sign(truncated)).await,
        400,
    );
    assert_eq!(app.inbox_total().await, 2);
    let metrics = app.metrics().await;
    for reason in [
        "channel=\"whatsapp\",reason=\"bad_signature\"",
        "channel=\"whatsapp\",reason=\"missing_signature\"",
        "channel=\"whatsapp\",reason=\"verify_token\"",
        "channel=\"whatsapp\",reason=\"malformed\"",
    ] {
        assert!(metrics.contains(reason), "{reason} not in {metrics}");
    }
    assert!(
        metrics.contains("leadgate_inbound_replayed_total{source=\"whatsapp\"} 1"),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfigured_channel_answers_404() {
    let app = common::spawn_app(Backend::Sqlite).await;
    let body = fixture("whatsapp/text_message.json");
    assert_problem(&post_whatsapp(&app, &body, wa_sign(&body)).await, 404);
    for path in [
        "/v1/webhooks/zoom",
        "/v1/webhooks/cti/twilio",
        "/v1/webhooks/cti/generic",
        "/v1/forms/contact",
    ] {
        let response = app
            .client
            .post(format!("{}{path}", app.base))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_problem(&response, 404);
    }
    assert_eq!(app.inbox_total().await, 0);
    let (_, doc) = app.get_json("/openapi.json").await;
    for path in [
        "/v1/forms/{form}",
        "/v1/webhooks/whatsapp",
        "/v1/webhooks/cti/{provider}",
        "/v1/webhooks/zoom",
        "/v1/partner/leads/{id}",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} not documented");
    }
    assert!(doc["paths"]["/v1/forms/{form}"].get("options").is_some());
    app.stop().await;
}

// ---------------------------------------------------------------- CTI

async fn post_twilio(app: &TestApp, body: &[u8], signature: Option<String>) -> reqwest::Response {
    let mut request = app
        .client
        .post(format!("{}/v1/webhooks/cti/twilio", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("x-twilio-signature", signature);
    }
    request.send().await.expect("request sent")
}

fn twilio_sign(body: &[u8]) -> Option<String> {
    let url = format!("{TWILIO_BASE}/v1/webhooks/cti/twilio");
    Some(twilio::expected_signature(
        TWILIO_TOKEN,
        &url,
        &twilio::parse_form(body),
    ))
}

async fn a_ringing_call_pops_the_lead_with_that_phone(backend: Backend) {
    let app = spawn(backend).await;
    let ctx = WriteContext::new("test", "test", RequestMeta::default());
    let fields =
        |value: Value| -> Map<String, Value> { value.as_object().expect("an object").clone() };
    let lead = app
        .store
        .write(
            &ctx,
            vec![Change::Insert {
                kind: RecordKind::Lead,
                id: None,
                fields: fields(json!({"first_name": "Jane", "last_name": "Doe",
                    "phone": "+14155551234", "company": "Example GmbH", "owner_id": "user-7"})),
            }],
        )
        .await
        .unwrap()
        .remove(0);
    app.store
        .write(
            &ctx,
            vec![Change::Insert {
                kind: RecordKind::Activity,
                id: None,
                fields: fields(json!({"activity_type": "email", "subject": "Pricing",
                    "occurred_at": "2026-11-20T10:00:00Z", "lead_id": lead.id})),
            }],
        )
        .await
        .unwrap();

    let body = fixture("twilio/call_ringing.form");
    let response = post_twilio(&app, &body, twilio_sign(&body)).await;
    assert_eq!(response.status(), 200);
    let pop: Value = response.json().await.unwrap();
    assert_eq!(pop["match"]["kind"], "lead", "{pop}");
    assert_eq!(pop["match"]["id"], lead.id.as_str());
    assert_eq!(pop["match"]["name"], "Jane Doe");
    assert_eq!(pop["match"]["owner_id"], "user-7");
    assert_eq!(pop["match"]["last_activity"]["subject"], "Pricing");
    let row = inbound(&app, &pop["inbound_id"]).await;
    assert_eq!(row["source"], "cti:twilio");
    assert_eq!(row["fields"]["event"], "ringing");
    assert_eq!(row["fields"]["CallerName"], "Jane Doe");

    // Other statuses are stored and answered 202.
    let body = fixture("twilio/call_completed.form");
    let response = post_twilio(&app, &body, twilio_sign(&body)).await;
    assert_eq!(response.status(), 202);
    // A signature over another URL (or none) is refused.
    let wrong = Some(twilio::expected_signature(
        TWILIO_TOKEN,
        "https://elsewhere.example/v1/webhooks/cti/twilio",
        &twilio::parse_form(&body),
    ));
    let no_answer = fixture("twilio/call_no_answer.form");
    assert_problem(&post_twilio(&app, &no_answer, wrong).await, 401);
    assert_problem(&post_twilio(&app, &no_answer, None).await, 401);
    assert_eq!(app.inbox_total().await, 2);
    app.stop().await;
}

async fn post_generic(
    app: &TestApp,
    body: &[u8],
    timestamp: i64,
    secret: &str,
) -> reqwest::Response {
    let timestamp = timestamp.to_string();
    app.client
        .post(format!("{}/v1/webhooks/cti/generic", app.base))
        .header("content-type", "application/json")
        .header("x-leadgate-timestamp", &timestamp)
        .header(
            "x-leadgate-signature",
            cti_generic::sign(secret, &timestamp, body),
        )
        .body(body.to_vec())
        .send()
        .await
        .expect("request sent")
}

async fn generic_cti_events_are_verified_and_stored(backend: Backend) {
    let app = spawn(backend).await;
    let now = Utc::now().timestamp();
    let body = fixture("cti_generic/call_completed.json");
    let response = post_generic(&app, &body, now, CTI_SECRET).await;
    assert_eq!(response.status(), 202);
    let receipt: Value = response.json().await.unwrap();
    assert_eq!(receipt["external_id"], "pbx-7f3a9c21:completed");
    let row = inbound(&app, &receipt["id"]).await;
    assert_eq!(row["source"], "cti:generic");
    assert_eq!(row["fields"]["duration_seconds"], "312");
    assert_eq!(row["fields"]["agent"], "j.meyer@example.com");

    // Ringing from a number nobody has called from: stored, and no match. (The completed
    // call above becomes an "inbound call" lead for its own caller.)
    let ringing = json!({"call_id": "pbx-1", "event": "ringing", "from": "+4930999999999",
        "direction": "inbound", "occurred_at": "2026-11-24T09:00:00Z"});
    let ringing = serde_json::to_vec(&ringing).unwrap();
    let response = post_generic(&app, &ringing, now, CTI_SECRET).await;
    assert_eq!(response.status(), 200);
    let pop: Value = response.json().await.unwrap();
    assert_eq!(pop["match"], Value::Null);
    assert!(pop.as_object().unwrap().contains_key("match"));

    // Stale, forged, truncated, unknown provider.
    assert_problem(
        &post_generic(&app, &body, now - 3600, CTI_SECRET).await,
        401,
    );
    assert_problem(&post_generic(&app, &body, now, "guess").await, 401);
    let truncated = &body[..body.len() - 10];
    assert_problem(&post_generic(&app, truncated, now, CTI_SECRET).await, 400);
    let response = app
        .client
        .post(format!("{}/v1/webhooks/cti/asterisk", app.base))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_problem(&response, 404);
    assert_eq!(app.inbox_total().await, 2);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("channel=\"cti:generic\",reason=\"stale_timestamp\""),
        "{metrics}"
    );
    app.stop().await;
}

// ---------------------------------------------------------------- Zoom

async fn post_zoom(app: &TestApp, body: &[u8], timestamp: i64, secret: &str) -> reqwest::Response {
    let timestamp = timestamp.to_string();
    let signature = hmac_sha256_hex(
        secret.as_bytes(),
        &[b"v0:", timestamp.as_bytes(), b":", body],
    );
    app.client
        .post(format!("{}/v1/webhooks/zoom", app.base))
        .header("content-type", "application/json")
        .header("x-zm-request-timestamp", &timestamp)
        .header("x-zm-signature", format!("v0={signature}"))
        .body(body.to_vec())
        .send()
        .await
        .expect("request sent")
}

async fn zoom_validates_and_stores_events(backend: Backend) {
    let app = spawn(backend).await;
    let now = Utc::now().timestamp();
    let validation = fixture("zoom/endpoint_url_validation.json");
    let response = post_zoom(&app, &validation, now, ZOOM_SECRET).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["plainToken"], "qgg8vlvZRS6UYooatFL8Aw");
    assert_eq!(
        answer["encryptedToken"],
        hmac_sha256_hex(ZOOM_SECRET.as_bytes(), &[b"qgg8vlvZRS6UYooatFL8Aw"])
    );
    assert_problem(&post_zoom(&app, &validation, now, "guess").await, 401);
    assert_eq!(app.inbox_total().await, 0);

    let body = fixture("zoom/webinar_registration_created.json");
    let response = post_zoom(&app, &body, now, ZOOM_SECRET).await;
    assert_eq!(response.status(), 200);
    let receipt: Value = response.json().await.unwrap();
    let row = inbound(&app, &receipt["items"][0]["id"]).await;
    assert_eq!(row["source"], "zoom");
    assert_eq!(row["fields"]["email"], "jchill@example.com");
    assert_eq!(row["fields"]["campaign"], "My Webinar");

    assert_problem(&post_zoom(&app, &body, now - 3600, ZOOM_SECRET).await, 401);
    let truncated = &body[..body.len() / 3];
    assert_problem(&post_zoom(&app, truncated, now, ZOOM_SECRET).await, 400);
    assert_eq!(app.inbox_total().await, 1);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("channel=\"zoom\",reason=\"stale_timestamp\""),
        "{metrics}"
    );
    app.stop().await;
}

// ---------------------------------------------------------------- partner status

async fn a_partner_sees_only_its_own_submissions(backend: Backend) {
    let app = spawn(backend).await;
    let acme = app.partner_token("acme").await;
    let globex = app.partner_token("globex").await;
    let receipt: Value = app
        .post_json(
            &acme,
            "/v1/partner/leads",
            &json!({"email": "ada@example.org"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = receipt["id"].as_str().unwrap();
    app.settled_inbound(id).await;
    let path = format!("{}/v1/partner/leads/{id}", app.base);
    let own = app
        .client
        .get(&path)
        .bearer_auth(&acme)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    let own: Value = own.json().await.unwrap();
    assert_eq!(own["id"], id);
    assert_eq!(own["status"], "done");
    assert_eq!(own["attempts"], 1);
    assert!(own["result"]["id"].is_string(), "{own}");
    let other = app
        .client
        .get(&path)
        .bearer_auth(&globex)
        .send()
        .await
        .unwrap();
    assert_problem(&other, 404);
    let missing = app
        .client
        .get(format!("{}/v1/partner/leads/no-such-id", app.base))
        .bearer_auth(&acme)
        .send()
        .await
        .unwrap();
    assert_problem(&missing, 404);
    let anonymous = app.client.get(&path).send().await.unwrap();
    assert_problem(&anonymous, 401);
    app.stop().await;
}

// ------------------------------------------------------- through the pipeline

async fn whatsapp_messages_become_activities_on_the_senders_lead(backend: Backend) {
    let app = spawn(backend).await;
    let body = fixture("whatsapp/text_message.json");
    let response = post_whatsapp(&app, &body, wa_sign(&body)).await;
    assert_eq!(response.status(), 200);
    let (_, rows) = app.get_json("/v1/inbound?status=pending&limit=10").await;
    let _ = rows;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let lead = loop {
        let found = app
            .store
            .find_by(
                leadgate::domain::RecordKind::Lead,
                "phone",
                "+16315551181",
                1,
            )
            .await
            .unwrap();
        if let Some(lead) = found.into_iter().next() {
            break lead;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no lead for the sender"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(lead.fields["first_name"], "Test");
    assert_eq!(lead.fields["last_name"], "User Name");
    assert_eq!(lead.fields["consent_whatsapp"], true);
    let timeline = app
        .store
        .timeline(leadgate::domain::RecordKind::Lead, &lead.id, 10)
        .await
        .unwrap();
    let message = timeline
        .iter()
        .find(|a| a.fields["activity_type"] == "message")
        .expect("the message is on the timeline");
    assert_eq!(message.fields["body"], "this is a text message");
    assert_eq!(message.fields["channel"], "whatsapp");

    // A delivery status is acknowledged and kept, and makes no record.
    let status = fixture("whatsapp/status_sent.json");
    let response = post_whatsapp(&app, &status, wa_sign(&status)).await;
    assert_eq!(response.status(), 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (_, done) = app.get_json("/v1/inbound?status=done&limit=10").await;
        let skipped = done["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|row| row["result"]["action"] == "skipped");
        if skipped {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{done}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        app.store
            .count(leadgate::domain::RecordKind::Lead)
            .await
            .unwrap(),
        1
    );

    // A status about the message on the timeline updates that activity.
    let mut read: Value = serde_json::from_slice(&fixture("whatsapp/status_sent.json")).unwrap();
    read["entry"][0]["changes"][0]["value"]["statuses"][0]["id"] = json!("ABGGFlA5Fpa");
    read["entry"][0]["changes"][0]["value"]["statuses"][0]["status"] = json!("read");
    let read = serde_json::to_vec(&read).unwrap();
    assert_eq!(
        post_whatsapp(&app, &read, wa_sign(&read)).await.status(),
        200
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let timeline = app
            .store
            .timeline(leadgate::domain::RecordKind::Lead, &lead.id, 10)
            .await
            .unwrap();
        let message = timeline
            .iter()
            .find(|a| a.fields["activity_type"] == "message")
            .unwrap();
        if message.fields["status"] == "read" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status not applied: {:?}",
            message.fields
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    app.stop().await;
}

async fn a_missed_call_from_an_unknown_number_becomes_an_inbound_call_lead(backend: Backend) {
    let app = spawn(backend).await;
    let now = chrono::Utc::now().timestamp();
    let body = fixture("cti_generic/call_missed.json");
    let response = post_generic(&app, &body, now, CTI_SECRET).await;
    assert_eq!(response.status(), 202);
    let receipt: Value = response.json().await.unwrap();
    let row = app
        .settled_inbound(
            receipt["inbound_id"]
                .as_str()
                .or(receipt["id"].as_str())
                .unwrap(),
        )
        .await;
    assert_eq!(row["status"], "done", "{row}");
    let lead_id = row["result"]["id"].as_str().unwrap();
    let (_, lead) = app.get_json(&format!("/v1/leads/{lead_id}")).await;
    assert_eq!(lead["fields"]["source"], "inbound call");
    assert_eq!(lead["fields"]["phone"], "+4915112345678");
    assert_eq!(lead["fields"]["country"], "DE");
    let (_, timeline) = app.get_json(&format!("/v1/leads/{lead_id}/timeline")).await;
    let call = timeline["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["fields"]["activity_type"] == "call")
        .expect("a call activity")
        .clone();
    assert_eq!(call["fields"]["direction"], "inbound");
    assert!(
        call["fields"]["subject"]
            .as_str()
            .unwrap()
            .starts_with("missed")
    );
    app.stop().await;
}

on_both_backends!(a_missed_call_from_a_known_lead_raises_a_call_back_task_for_its_owner);

async fn a_missed_call_from_a_known_lead_raises_a_call_back_task_for_its_owner(backend: Backend) {
    use leadgate::domain::RecordKind;
    use leadgate::store::{Change, RequestMeta, WriteContext};
    let app = spawn(backend).await;
    let key = app.partner_token("acme").await;
    let receipt: Value = app
        .post_json(
            &key,
            "/v1/partner/leads",
            &json!({"first_name": "Greta", "last_name": "Berg",
            "phone": "+49 151 12345678", "email": "greta@berg.example"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let row = app.settled_inbound(receipt["id"].as_str().unwrap()).await;
    let lead_id = row["result"]["id"].as_str().unwrap().to_owned();
    let ctx = WriteContext::new("test", "test", RequestMeta::default());
    let Value::Object(owner) = json!({"owner_id": "u-9"}) else {
        unreachable!()
    };
    app.store
        .write(
            &ctx,
            vec![Change::Update {
                kind: RecordKind::Lead,
                id: lead_id.clone(),
                fields: owner,
                expected_version: None,
            }],
        )
        .await
        .unwrap();

    let body = fixture("cti_generic/call_missed.json");
    let response = post_generic(&app, &body, Utc::now().timestamp(), CTI_SECRET).await;
    let receipt: Value = response.json().await.unwrap();
    let row = app.settled_inbound(receipt["id"].as_str().unwrap()).await;
    assert_eq!(
        row["result"]["action"], "merged",
        "the caller is the known lead: {row}"
    );
    assert_eq!(row["result"]["id"], lead_id.as_str());
    let (_, timeline) = app.get_json(&format!("/v1/leads/{lead_id}/timeline")).await;
    let task = timeline["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["fields"]["activity_type"] == "task")
        .expect("a call-back task")
        .clone();
    assert_eq!(task["fields"]["owner_id"], "u-9");
    assert_eq!(task["fields"]["status"], "open");
    assert_eq!(task["fields"]["subject"], "Call back +4915112345678");
    app.stop().await;
}
