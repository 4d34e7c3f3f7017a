//! Outbound WhatsApp: the Graph API client against a local stand-in that speaks Meta's
//! documented request and answers (success, a 400 error, 429 then success), the first-touch
//! reply to a new lead's first message, and the send API, end to end through the real app.

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use common::{Backend, TestApp, spawn_app_with_config};
use connectors::signature::hmac_sha256_hex;
use leadgate::config::Config;
use leadgate::domain::RecordKind;
use leadgate::outbound::whatsapp::{ClientConfig, SendError};
use leadgate::outbound::{Content, WhatsAppClient};
use serde_json::{Value, json};

const WA_SECRET: &str = "wa-app-secret";
const TOKEN: &str = "EAAG-test-access-token";
const PHONE_NUMBER_ID: &str = "106540352242922";
const VERSION: &str = "v21.0";

on_both_backends!(
    a_new_lead_from_whatsapp_gets_the_first_touch_reply_and_its_status_follows_the_webhooks,
    the_send_api_queues_a_template_and_records_metas_refusal,
    a_message_left_sending_by_a_stopped_process_is_failed_not_sent_twice,
);

/// One request the stand-in received.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: Option<String>,
    body: Value,
}

/// A scripted answer: status, extra headers, body.
type Answer = (u16, Vec<(&'static str, &'static str)>, Value);

#[derive(Default)]
struct Graph {
    seen: Mutex<Vec<Seen>>,
    script: Mutex<VecDeque<Answer>>,
    counter: Mutex<u64>,
}

/// Meta's documented error answer.
fn graph_error(code: i64, subcode: i64, message: &str) -> Value {
    json!({"error": {"message": message, "type": "OAuthException", "code": code,
                     "error_subcode": subcode, "fbtrace_id": "AazL9bOyhS2Qb3VaPv-sbVD"}})
}

/// Checks a request the way the Graph API would, so a wrong shape fails the test loudly.
fn check_request(path: &str, authorization: Option<&str>, body: &Value) -> Result<(), String> {
    if path != format!("/{VERSION}/{PHONE_NUMBER_ID}/messages") {
        return Err(format!("unexpected path {path}"));
    }
    if authorization != Some(&format!("Bearer {TOKEN}")) {
        return Err(format!("bad Authorization {authorization:?}"));
    }
    if body["messaging_product"] != "whatsapp" || body["recipient_type"] != "individual" {
        return Err(format!("not a WhatsApp message: {body}"));
    }
    if !body["to"]
        .as_str()
        .is_some_and(|to| to.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(format!("bad recipient: {body}"));
    }
    match body["type"].as_str() {
        Some("text") if body["text"]["body"].is_string() => Ok(()),
        Some("template")
            if body["template"]["name"].is_string()
                && body["template"]["language"]["code"].is_string() =>
        {
            Ok(())
        }
        _ => Err(format!("bad message body: {body}")),
    }
}

async fn messages(req: HttpRequest, body: web::Bytes, graph: web::Data<Graph>) -> HttpResponse {
    let authorization = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    graph.seen.lock().unwrap().push(Seen {
        path: req.path().to_owned(),
        authorization: authorization.clone(),
        body: body.clone(),
    });
    if let Err(why) = check_request(req.path(), authorization.as_deref(), &body) {
        return HttpResponse::BadRequest().json(graph_error(100, 2494010, &why));
    }
    if let Some((status, headers, answer)) = graph.script.lock().unwrap().pop_front() {
        let mut response = HttpResponse::build(
            actix_web::http::StatusCode::from_u16(status).expect("status code"),
        );
        for header in headers {
            response.insert_header(header);
        }
        return response.json(answer);
    }
    let n = {
        let mut counter = graph.counter.lock().unwrap();
        *counter += 1;
        *counter
    };
    HttpResponse::Ok().json(json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": body["to"], "wa_id": body["to"]}],
        "messages": [{"id": format!("wamid.TEST{n:08}")}],
    }))
}

/// The stand-in Graph API on a free loopback port.
async fn start_graph() -> (String, Arc<Graph>, actix_web::dev::ServerHandle) {
    let graph = web::Data::new(Graph::default());
    let state = graph.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/{version}/{phone}/messages", web::post().to(messages))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .expect("bind stand-in");
    let port = server.addrs()[0].port();
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    (
        format!("http://127.0.0.1:{port}"),
        graph.into_inner(),
        handle,
    )
}

fn client_config(base_url: &str) -> ClientConfig {
    ClientConfig {
        base_url: base_url.to_owned(),
        version: VERSION.to_owned(),
        phone_number_id: PHONE_NUMBER_ID.to_owned(),
        access_token: TOKEN.to_owned(),
        max_attempts: 3,
        backoff: Duration::from_millis(20),
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_sends_the_documented_body_and_reads_the_answers() {
    let (base, graph, handle) = start_graph().await;
    let client = WhatsAppClient::new(client_config(&base)).unwrap();

    // Success: the documented body goes out and messages[0].id comes back.
    let sent = client
        .send("16315551181", &Content::text("Thanks for writing!"))
        .await
        .expect("sent");
    assert_eq!(sent.message_id, "wamid.TEST00000001");
    assert_eq!(sent.wa_id.as_deref(), Some("16315551181"));
    let seen = graph.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v21.0/106540352242922/messages");
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some("Bearer EAAG-test-access-token")
    );
    assert_eq!(
        seen[0].body,
        json!({"messaging_product": "whatsapp", "recipient_type": "individual",
               "to": "16315551181", "type": "text",
               "text": {"body": "Thanks for writing!", "preview_url": false}})
    );

    // A 400 is final: Meta's error comes back typed, and nothing is retried.
    graph.script.lock().unwrap().push_back((
        400,
        vec![],
        graph_error(
            131030,
            2494010,
            "(#131030) Recipient phone number not in allowed list",
        ),
    ));
    let error = client
        .send("16315551181", &Content::template("hello_world", "en_US"))
        .await
        .expect_err("refused");
    match &error {
        SendError::Rejected { status, error } => {
            assert_eq!(*status, 400);
            assert_eq!(error.code, 131030);
            assert_eq!(error.error_subcode, Some(2494010));
            assert_eq!(error.error_type, "OAuthException");
            assert_eq!(error.fbtrace_id.as_deref(), Some("AazL9bOyhS2Qb3VaPv-sbVD"));
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(!error.is_transient());
    assert_eq!(graph.seen.lock().unwrap().len(), 2);

    // 429 (with Retry-After) and then success: retried, and it goes through.
    graph.script.lock().unwrap().push_back((
        429,
        vec![("retry-after", "0")],
        graph_error(130429, 0, "(#130429) Rate limit hit"),
    ));
    let started = Instant::now();
    let sent = client
        .send("16315551181", &Content::text("again"))
        .await
        .expect("sent after a retry");
    assert_eq!(sent.message_id, "wamid.TEST00000002");
    assert_eq!(graph.seen.lock().unwrap().len(), 4);
    assert!(started.elapsed() < Duration::from_secs(5));

    // 5xx every time: tried max_attempts times, then a transient error.
    for _ in 0..3 {
        graph.script.lock().unwrap().push_back((
            503,
            vec![],
            graph_error(2, 0, "Service temporarily unavailable"),
        ));
    }
    let error = client
        .send("16315551181", &Content::text("down"))
        .await
        .expect_err("unavailable");
    assert!(error.is_transient(), "{error:?}");
    assert_eq!(graph.seen.lock().unwrap().len(), 7);
    handle.stop(true).await;
}

fn outbound_config(base: String, first_touch: bool) -> impl FnOnce(&mut Config) {
    move |config: &mut Config| {
        config.whatsapp.app_secret = WA_SECRET.into();
        config.whatsapp.verify_token = "verify".into();
        config.whatsapp.graph_base_url = base;
        config.whatsapp.graph_version = VERSION.into();
        config.whatsapp.phone_number_id = PHONE_NUMBER_ID.into();
        config.whatsapp.access_token = TOKEN.into();
        config.whatsapp.send_backoff_ms = 20;
        if first_touch {
            config.whatsapp.first_touch_text =
                Some("Thanks for your message! A colleague will answer shortly.".into());
        }
    }
}

fn fixture(path: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

async fn post_whatsapp(app: &TestApp, body: &[u8]) -> reqwest::Response {
    app.client
        .post(format!("{}/v1/webhooks/whatsapp", app.base))
        .header("content-type", "application/json")
        .header(
            "x-hub-signature-256",
            format!("sha256={}", hmac_sha256_hex(WA_SECRET.as_bytes(), &[body])),
        )
        .body(body.to_vec())
        .send()
        .await
        .expect("request sent")
}

/// Polls the lead's timeline until an outbound message activity satisfies `done`.
async fn outbound_activity(app: &TestApp, lead_id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, timeline) = app.get_json(&format!("/v1/leads/{lead_id}/timeline")).await;
        assert_eq!(status, 200, "{timeline}");
        let found = timeline["items"].as_array().and_then(|items| {
            items
                .iter()
                .find(|a| a["fields"]["direction"] == "outbound" && done(&a["fields"]))
                .cloned()
        });
        if let Some(activity) = found {
            return activity;
        }
        assert!(Instant::now() < deadline, "no such activity: {timeline}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn lead_with_phone(app: &TestApp, phone: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = app
            .store
            .find_by(RecordKind::Lead, "phone", phone, 1)
            .await
            .unwrap();
        if let Some(lead) = found.into_iter().next() {
            return lead.id;
        }
        assert!(Instant::now() < deadline, "no lead with {phone}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_new_lead_from_whatsapp_gets_the_first_touch_reply_and_its_status_follows_the_webhooks(
    backend: Backend,
) {
    let (base, graph, handle) = start_graph().await;
    let app = spawn_app_with_config(backend, outbound_config(base, true)).await;
    let message = fixture("whatsapp/text_message.json");
    assert_eq!(post_whatsapp(&app, &message).await.status(), 200);
    let lead_id = lead_with_phone(&app, "+16315551181").await;

    // The reply went to the sender's wa_id and its activity carries Meta's message id.
    let reply = outbound_activity(&app, &lead_id, |a| a["status"] == "accepted").await;
    let fields = &reply["fields"];
    assert_eq!(fields["activity_type"], "message");
    assert_eq!(fields["channel"], "whatsapp");
    assert_eq!(fields["external_id"], "wamid.TEST00000001");
    assert_eq!(
        fields["body"],
        "Thanks for your message! A colleague will answer shortly."
    );
    assert_eq!(fields["data"]["purpose"], "first_touch");
    let seen = graph.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].body["to"], "16315551181");
    assert_eq!(seen[0].body["type"], "text");

    // Meta's status webhooks move that activity along, matched on the wamid.
    let mut status: Value = serde_json::from_slice(&fixture("whatsapp/status_sent.json")).unwrap();
    let statuses = &mut status["entry"][0]["changes"][0]["value"]["statuses"];
    statuses[0]["id"] = json!("wamid.TEST00000001");
    statuses[0]["status"] = json!("delivered");
    statuses[1]["id"] = json!("wamid.TEST00000001");
    let status = serde_json::to_vec(&status).unwrap();
    assert_eq!(post_whatsapp(&app, &status).await.status(), 200);
    let read = outbound_activity(&app, &lead_id, |a| a["status"] == "read").await;
    assert_eq!(read["id"], reply["id"]);
    let (_, audit) = app
        .get_json(&format!(
            "/v1/activities/{}/audit",
            reply["id"].as_str().unwrap()
        ))
        .await;
    let status_changes: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| row["field"] == "status")
        .collect();
    assert!(status_changes.len() >= 2, "{audit}");

    // A second message from the same person is not a new lead: no second reply.
    let mut again: Value = serde_json::from_slice(&message).unwrap();
    again["entry"][0]["changes"][0]["value"]["messages"][0]["id"] = json!("ABGGFlA5Fpb");
    let again = serde_json::to_vec(&again).unwrap();
    let receipt: Value = post_whatsapp(&app, &again).await.json().await.unwrap();
    let row = app
        .settled_inbound(receipt["items"][0]["id"].as_str().unwrap())
        .await;
    assert_eq!(row["result"]["action"], "merged", "{row}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(graph.seen.lock().unwrap().len(), 1);
    app.stop().await;
    handle.stop(true).await;
}

async fn the_send_api_queues_a_template_and_records_metas_refusal(backend: Backend) {
    let (base, graph, handle) = start_graph().await;
    let app = spawn_app_with_config(backend, outbound_config(base, false)).await;
    // Without a first touch configured, a new lead gets no reply.
    let message = fixture("whatsapp/text_message.json");
    assert_eq!(post_whatsapp(&app, &message).await.status(), 200);
    let lead_id = lead_with_phone(&app, "+16315551181").await;

    // 429 once, then success: the template goes out on the retry.
    graph.script.lock().unwrap().push_back((
        429,
        vec![("retry-after", "0")],
        graph_error(130429, 0, "(#130429) Rate limit hit"),
    ));
    let path = format!("/v1/leads/{lead_id}/whatsapp");
    let response = app
        .post_json(
            &app.admin_token,
            &path,
            &json!({"template": {"name": "order_update", "language": "de",
                    "components": [{"type": "body", "parameters": [{"type": "text", "text": "A-17"}]}]}}),
        )
        .await;
    assert_eq!(response.status(), 202);
    let queued: Value = response.json().await.unwrap();
    assert_eq!(queued["status"], "queued");
    assert_eq!(queued["to"], "16315551181");
    let sent = outbound_activity(&app, &lead_id, |a| a["status"] == "accepted").await;
    assert_eq!(sent["id"], queued["activity_id"]);
    assert_eq!(sent["fields"]["subject"], "WhatsApp template order_update");
    let seen = graph.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "429 then the retry");
    assert_eq!(
        seen[1].body["template"],
        json!({"name": "order_update", "language": {"code": "de"},
               "components": [{"type": "body", "parameters": [{"type": "text", "text": "A-17"}]}]})
    );

    // A 400 from Meta fails the message at once, with Meta's error on the activity.
    graph.script.lock().unwrap().push_back((
        400,
        vec![],
        graph_error(
            131047,
            2494010,
            "(#131047) Re-engagement message: more than 24 hours have passed",
        ),
    ));
    let response = app
        .post_json(
            &app.admin_token,
            &path,
            &json!({"text": "Still interested?"}),
        )
        .await;
    assert_eq!(response.status(), 202);
    let queued: Value = response.json().await.unwrap();
    let failed = outbound_activity(&app, &lead_id, |a| a["status"] == "failed").await;
    assert_eq!(failed["id"], queued["activity_id"]);
    assert_eq!(
        failed["fields"]["data"]["error"]["provider"]["code"],
        131047
    );
    assert_eq!(
        failed["fields"]["data"]["error"]["provider"]["fbtrace_id"],
        "AazL9bOyhS2Qb3VaPv-sbVD"
    );
    assert_eq!(graph.seen.lock().unwrap().len(), 3, "a 400 is not retried");

    // Bad requests write nothing.
    for body in [
        json!({}),
        json!({"text": "a", "template": {"name": "x"}}),
        json!({"text": " "}),
    ] {
        let response = app.post_json(&app.admin_token, &path, &body).await;
        assert_eq!(response.status(), 422, "{body}");
    }
    let response = app
        .post_json(
            &app.admin_token,
            "/v1/leads/no-such-lead/whatsapp",
            &json!({"text": "hi"}),
        )
        .await;
    assert_eq!(response.status(), 404);
    let partner = app.partner_token("acme").await;
    let response = app.post_json(&partner, &path, &json!({"text": "hi"})).await;
    assert_eq!(response.status(), 403);
    app.stop().await;
    handle.stop(true).await;
}

async fn a_message_left_sending_by_a_stopped_process_is_failed_not_sent_twice(backend: Backend) {
    use leadgate::store::{Change, RequestMeta, WriteContext};
    let (base, graph, handle) = start_graph().await;
    let app = spawn_app_with_config(backend, outbound_config(base, false)).await;
    let ctx = WriteContext::new("test", "test", RequestMeta::default());
    let lead = app
        .store
        .write(
            &ctx,
            vec![Change::Insert {
                kind: RecordKind::Lead,
                id: None,
                fields: serde_json::from_value(
                    json!({"first_name": "Ada", "phone": "+447700900123"}),
                )
                .unwrap(),
            }],
        )
        .await
        .unwrap()
        .remove(0)
        .id;
    let queued: Value = app
        .post_json(
            &app.admin_token,
            &format!("/v1/leads/{lead}/whatsapp"),
            &json!({"text": "hi"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let sent = outbound_activity(&app, &lead, |a| a["status"] == "accepted").await;
    assert_eq!(sent["id"], queued["activity_id"]);
    // Pretend a process claimed the message ten minutes ago and died mid-send.
    sqlx::query("UPDATE outbound_messages SET status = 'sending', updated_at = $1")
        .bind("2020-01-01T00:00:00.000000Z")
        .execute(app.store.pool())
        .await
        .unwrap();
    let cutoff = chrono::Utc::now() - chrono::Duration::minutes(5);
    assert_eq!(
        app.store
            .abandon_stale_outbound(&ctx, cutoff)
            .await
            .unwrap(),
        1
    );
    let failed = outbound_activity(&app, &lead, |a| a["status"] == "failed").await;
    assert_eq!(failed["id"], queued["activity_id"]);
    assert!(
        failed["fields"]["data"]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not sent again"),
        "{failed}"
    );
    let (status, attempts, _) = app
        .store
        .outbound_state(queued["activity_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status, "failed");
    assert_eq!(attempts, 2);
    // A fresh `sending` row (a live sender's) is left alone.
    sqlx::query("UPDATE outbound_messages SET status = 'sending', updated_at = $1")
        .bind(leadgate::domain::value::now_timestamp())
        .execute(app.store.pool())
        .await
        .unwrap();
    assert_eq!(
        app.store
            .abandon_stale_outbound(&ctx, cutoff)
            .await
            .unwrap(),
        0
    );
    assert_eq!(graph.seen.lock().unwrap().len(), 1);
    app.stop().await;
    handle.stop(true).await;
}
