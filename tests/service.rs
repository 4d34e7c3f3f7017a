//! Post-sales service against the real app: tickets (API, status, replies, threading),
//! SLA pause and breach, contracts and renewals, expansion rules.

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::dovecot::{PASSWORD, eventually, start_dovecot};
use common::{Backend, TestApp, spawn_app, spawn_app_with_config};
use leadgate::domain::RecordKind;
use leadgate::service::ClosedReply;
use leadgate::service::expansion::{ExpansionRule, UsageCondition};
use leadgate::store::{Change, RequestMeta, WriteContext};
use serde_json::{Map, Value, json};

on_both_backends!(
    a_ticket_from_the_api_is_numbered_timed_and_on_the_account_timeline,
    ticket_status_moves_legally_and_refuses_illegal_ones,
    an_agent_reply_is_the_first_response,
    a_customer_reply_to_a_closed_ticket_reopens_it,
    a_customer_reply_to_a_closed_ticket_opens_a_follow_up_when_configured,
    pending_customer_pauses_the_sla_clock_and_resuming_credits_the_pause,
    a_due_timer_breaches_once_on_the_timeline_and_in_metrics,
    a_contract_ending_before_it_starts_is_refused_and_amc_visits_are_scheduled,
    a_renewal_opportunity_opens_once_within_the_notice_period,
    an_expansion_rule_opens_one_opportunity_per_account,
    support_mail_opens_a_ticket_and_replies_thread_onto_it,
    whatsapp_from_a_known_contact_opens_a_ticket_when_configured,
    tickets_are_routed_by_the_rules_and_permission_checked,
);

async fn seed(app: &TestApp, kind: RecordKind, fields: Value) -> String {
    let ctx = WriteContext::new("test", "test", RequestMeta::default());
    let Value::Object(fields) = fields else {
        panic!("object")
    };
    app.store
        .write(
            &ctx,
            vec![Change::Insert {
                kind,
                id: None,
                fields,
            }],
        )
        .await
        .expect("seeded")[0]
        .id
        .clone()
}

/// Sets fields directly, as time passing would have (a due time now in the past).
async fn backdate(app: &TestApp, kind: RecordKind, id: &str, fields: Value) {
    let ctx = WriteContext::new("test:clock", "test", RequestMeta::default());
    let Value::Object(fields) = fields else {
        panic!("object")
    };
    app.store
        .write(
            &ctx,
            vec![Change::Update {
                kind,
                id: id.to_owned(),
                fields,
                expected_version: None,
            }],
        )
        .await
        .expect("updated");
}

async fn send(app: &TestApp, method: reqwest::Method, path: &str, body: &Value) -> (u16, Value) {
    let response = app
        .client
        .request(method, format!("{}{path}", app.base))
        .bearer_auth(&app.admin_token)
        .json(body)
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    send(app, reqwest::Method::POST, path, &body).await
}

async fn ticket(app: &TestApp, id: &str) -> Map<String, Value> {
    let (status, record) = app.get_json(&format!("/v1/tickets/{id}")).await;
    assert_eq!(status, 200, "{record}");
    record["fields"].as_object().cloned().expect("fields")
}

fn instant(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().expect("a timestamp"))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

async fn timeline(app: &TestApp, kind: &str, id: &str) -> Vec<Value> {
    let (status, body) = app.get_json(&format!("/v1/{kind}/{id}/timeline")).await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().cloned().expect("items")
}

fn of_type<'a>(items: &'a [Value], activity_type: &str) -> Vec<&'a Value> {
    items
        .iter()
        .filter(|a| a["fields"]["activity_type"] == activity_type)
        .collect()
}

async fn open_ticket(app: &TestApp, body: Value) -> String {
    let (status, record) = post(app, "/v1/tickets", body).await;
    assert_eq!(status, 201, "{record}");
    record["id"].as_str().expect("id").to_owned()
}

async fn move_to(app: &TestApp, id: &str, status: &str) -> (u16, Value) {
    post(
        app,
        &format!("/v1/tickets/{id}/status"),
        json!({"status": status}),
    )
    .await
}

async fn a_ticket_from_the_api_is_numbered_timed_and_on_the_account_timeline(backend: Backend) {
    let app = spawn_app(backend).await;
    let account = seed(
        &app,
        RecordKind::Account,
        json!({"name": "Acme", "country": "GB"}),
    )
    .await;
    let contact = seed(
        &app,
        RecordKind::Contact,
        json!({"first_name": "Kim", "email": "kim@acme.example", "account_id": account}),
    )
    .await;
    let (status, created) = post(
        &app,
        "/v1/tickets",
        json!({"subject": "Printer on fire", "description": "Smoke", "contact_id": contact}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let fields = &created["fields"];
    assert_eq!(fields["number"], 1);
    assert_eq!(fields["status"], "new");
    assert_eq!(fields["priority"], "normal");
    assert_eq!(
        fields["account_id"],
        account.as_str(),
        "the contact's account"
    );
    // Around the clock by default; normal is 8 h to first response, 3 days to resolve.
    let created_at = instant(&created["created_at"]);
    let first = instant(&fields["first_response_due"]) - created_at;
    let resolution = instant(&fields["resolution_due"]) - created_at;
    assert!(
        (first - chrono::Duration::hours(8)).num_seconds().abs() < 5,
        "{first}"
    );
    assert!(
        (resolution - chrono::Duration::days(3)).num_seconds().abs() < 5,
        "{resolution}"
    );
    let second = open_ticket(&app, json!({"subject": "Second", "priority": "urgent"})).await;
    assert_eq!(ticket(&app, &second).await["number"], 2);

    let items = timeline(&app, "accounts", &account).await;
    let opened = of_type(&items, "ticket_opened");
    assert_eq!(opened.len(), 1, "{items:?}");
    assert!(
        opened[0]["fields"]["subject"]
            .as_str()
            .unwrap()
            .starts_with("T-1 opened")
    );

    let (status, problem) = post(
        &app,
        "/v1/tickets",
        json!({"subject": "x", "priority": "whenever"}),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    let (status, _) = post(
        &app,
        "/v1/tickets",
        json!({"subject": "x", "contact_id": "nobody"}),
    )
    .await;
    assert_eq!(status, 422);
    let (status, _) = post(
        &app,
        "/v1/tickets",
        json!({"subject": "x", "status": "closed"}),
    )
    .await;
    assert_eq!(status, 422, "a ticket starts new");
    let (status, _) = post(
        &app,
        "/v1/tickets",
        json!({"subject": "x", "status": "new"}),
    )
    .await;
    assert_eq!(
        status, 201,
        "clients that send the starting status are served"
    );
    app.stop().await;
}

async fn ticket_status_moves_legally_and_refuses_illegal_ones(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = open_ticket(&app, json!({"subject": "Status flow"})).await;
    for to in ["open", "pending_customer", "open", "resolved", "closed"] {
        let (status, body) = move_to(&app, &id, to).await;
        assert_eq!(status, 200, "to {to}: {body}");
        assert_eq!(body["fields"]["status"], to);
    }
    let closed = ticket(&app, &id).await;
    assert!(closed["resolved_at"].is_string() && closed["closed_at"].is_string());
    assert!(
        closed["sla_paused_at"].is_string(),
        "a closed ticket's clock stands"
    );
    let (status, problem) = move_to(&app, &id, "open").await;
    assert_eq!(status, 409, "closed → open by hand: {problem}");
    assert_eq!(
        ticket(&app, &id).await["status"],
        "closed",
        "nothing written"
    );
    let other = open_ticket(&app, json!({"subject": "Other"})).await;
    assert_eq!(move_to(&app, &other, "new").await.0, 409);
    assert_eq!(move_to(&app, &other, "escalated").await.0, 422);
    let (status, _) = send(
        &app,
        reqwest::Method::PATCH,
        &format!("/v1/tickets/{other}"),
        &json!({"status": "closed"}),
    )
    .await;
    assert_eq!(status, 422, "status moves only through its endpoint");
    // A new priority recomputes the due times.
    let before = ticket(&app, &other).await;
    let (status, after) = send(
        &app,
        reqwest::Method::PATCH,
        &format!("/v1/tickets/{other}"),
        &json!({"priority": "urgent"}),
    )
    .await;
    assert_eq!(status, 200, "{after}");
    assert!(
        instant(&after["fields"]["first_response_due"]) < instant(&before["first_response_due"])
    );
    let moves = of_type(&timeline(&app, "tickets", &id).await, "ticket_status").len();
    assert_eq!(moves, 5);
    app.stop().await;
}

async fn an_agent_reply_is_the_first_response(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = open_ticket(&app, json!({"subject": "Help"})).await;
    let (status, receipt) = post(
        &app,
        &format!("/v1/tickets/{id}/replies"),
        json!({"body": "On it", "message_id": "<agent-1@support.example>"}),
    )
    .await;
    assert_eq!(status, 201, "{receipt}");
    assert_eq!(receipt["action"], "appended");
    let fields = ticket(&app, &id).await;
    assert_eq!(fields["status"], "open");
    let first = fields["first_responded_at"].clone();
    assert!(first.is_string());
    post(
        &app,
        &format!("/v1/tickets/{id}/replies"),
        json!({"body": "More"}),
    )
    .await;
    assert_eq!(
        ticket(&app, &id).await["first_responded_at"],
        first,
        "only the first"
    );
    let messages = of_type(&timeline(&app, "tickets", &id).await, "message").len();
    assert_eq!(messages, 2);
    app.stop().await;
}

async fn a_customer_reply_to_a_closed_ticket_reopens_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = open_ticket(&app, json!({"subject": "Broken"})).await;
    move_to(&app, &id, "resolved").await;
    move_to(&app, &id, "closed").await;
    let (status, receipt) = post(
        &app,
        &format!("/v1/tickets/{id}/replies"),
        json!({"direction": "inbound", "body": "Still broken"}),
    )
    .await;
    assert_eq!(status, 201, "{receipt}");
    assert_eq!(receipt["action"], "reopened");
    assert_eq!(receipt["ticket_id"], id.as_str());
    let fields = ticket(&app, &id).await;
    assert_eq!(fields["status"], "open");
    assert_eq!(fields["reopened_count"], 1);
    assert!(fields["resolved_at"].is_null() && fields["closed_at"].is_null());
    assert!(fields["sla_paused_at"].is_null(), "the clock runs again");
    app.stop().await;
}

async fn a_customer_reply_to_a_closed_ticket_opens_a_follow_up_when_configured(backend: Backend) {
    let app = spawn_app_with_config(backend, |config| {
        config.service.closed_reply = ClosedReply::FollowUp;
    })
    .await;
    let id = open_ticket(&app, json!({"subject": "Broken", "priority": "high"})).await;
    move_to(&app, &id, "closed").await;
    let (status, receipt) = post(
        &app,
        &format!("/v1/tickets/{id}/replies"),
        json!({"direction": "inbound", "body": "Again"}),
    )
    .await;
    assert_eq!(status, 201, "{receipt}");
    assert_eq!(receipt["action"], "follow_up");
    let follow_up = receipt["ticket_id"].as_str().unwrap().to_owned();
    assert_ne!(follow_up, id);
    let fields = ticket(&app, &follow_up).await;
    assert_eq!(fields["follow_up_of"], id.as_str());
    assert_eq!(fields["priority"], "high");
    assert_eq!(fields["status"], "new");
    assert_eq!(
        ticket(&app, &id).await["status"],
        "closed",
        "the old one stays closed"
    );
    // An agent cannot reply on the closed one.
    let (status, _) = post(
        &app,
        &format!("/v1/tickets/{id}/replies"),
        json!({"body": "x"}),
    )
    .await;
    assert_eq!(status, 409);
    app.stop().await;
}

async fn pending_customer_pauses_the_sla_clock_and_resuming_credits_the_pause(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = open_ticket(&app, json!({"subject": "Waiting"})).await;
    let due_before = instant(&ticket(&app, &id).await["resolution_due"]);
    let (status, body) = move_to(&app, &id, "pending_customer").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["fields"]["sla_paused_at"].is_string());
    // Thirty minutes pass while it waits for the customer.
    let paused_at = Utc::now() - chrono::Duration::minutes(30);
    backdate(
        &app,
        RecordKind::Ticket,
        &id,
        json!({"sla_paused_at": leadgate::domain::value::format_timestamp(paused_at)}),
    )
    .await;
    let (status, receipt) = post(
        &app,
        &format!("/v1/tickets/{id}/replies"),
        json!({"direction": "inbound", "body": "Here is the log"}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(receipt["action"], "resumed");
    let fields = ticket(&app, &id).await;
    assert_eq!(fields["status"], "open");
    assert!(fields["sla_paused_at"].is_null());
    let paused = fields["sla_paused_seconds"].as_i64().unwrap();
    assert!((1800..1810).contains(&paused), "{paused}");
    let moved = instant(&fields["resolution_due"]) - due_before;
    assert!((moved.num_seconds() - 1800).abs() < 10, "{moved}");
    app.stop().await;
}

async fn a_due_timer_breaches_once_on_the_timeline_and_in_metrics(backend: Backend) {
    let app = spawn_app_with_config(backend, |config| {
        config.service.evaluate_every_secs = 1;
    })
    .await;
    let account = seed(&app, RecordKind::Account, json!({"name": "Late Ltd"})).await;
    let late = open_ticket(&app, json!({"subject": "Late", "account_id": account})).await;
    let paused = open_ticket(&app, json!({"subject": "Paused", "account_id": account})).await;
    move_to(&app, &paused, "pending_customer").await;
    let past = leadgate::domain::value::format_timestamp(Utc::now() - chrono::Duration::minutes(1));
    for id in [&late, &paused] {
        backdate(
            &app,
            RecordKind::Ticket,
            id,
            json!({"first_response_due": past}),
        )
        .await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while ticket(&app, &late).await["first_response_breached_at"].is_null() {
        assert!(Instant::now() < deadline, "no breach recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Further passes find nothing new.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let breaches = of_type(&timeline(&app, "tickets", &late).await, "sla_breach")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(breaches.len(), 1, "{breaches:?}");
    assert_eq!(breaches[0]["fields"]["data"]["timer"], "first_response");
    assert_eq!(
        of_type(&timeline(&app, "accounts", &account).await, "sla_breach").len(),
        1,
        "on the account's timeline too, and only the running ticket's"
    );
    assert!(ticket(&app, &paused).await["first_response_breached_at"].is_null());
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(
            "leadgate_sla_breaches_total{priority=\"normal\",timer=\"first_response\"} 1"
        ),
        "{metrics}"
    );
    app.stop().await;
}

async fn a_contract_ending_before_it_starts_is_refused_and_amc_visits_are_scheduled(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let account = seed(
        &app,
        RecordKind::Account,
        json!({"name": "Plant", "owner_id": "u-owner"}),
    )
    .await;
    let (status, problem) = post(
        &app,
        "/v1/renewals",
        json!({"account_id": account, "contract_name": "AMC", "start_date": "2026-12-31",
               "end_date": "2026-01-01"}),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("before"),
        "{problem}"
    );
    assert_eq!(
        app.store.count(RecordKind::Renewal).await.unwrap(),
        0,
        "nothing written"
    );
    let (status, contract) = post(
        &app,
        "/v1/renewals",
        json!({"account_id": account, "contract_name": "AMC 2027", "product": "Boiler care",
               "start_date": "2027-01-01", "end_date": "2027-12-31", "value": "4800.00",
               "currency": "EUR", "renewal_terms": "annual, 60 days notice",
               "amc_visits_per_year": 4}),
    )
    .await;
    assert_eq!(status, 201, "{contract}");
    assert_eq!(contract["fields"]["status"], "active");
    assert_eq!(
        contract["fields"]["owner_id"], "u-owner",
        "the account's owner"
    );
    let id = contract["id"].as_str().unwrap();
    let visits = of_type(&timeline(&app, "accounts", &account).await, "amc_visit")
        .into_iter()
        .map(|v| v["fields"]["occurred_at"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    let contracts = of_type(&timeline(&app, "accounts", &account).await, "contract").len();
    assert_eq!(contracts, 1, "the contract is on the account's timeline");
    let mut dates: Vec<&str> = visits.iter().map(|v| &v[..10]).collect();
    dates.sort();
    assert_eq!(dates, ["2027-04-01", "2027-07-01", "2027-10-01"]);
    let (status, _) = send(
        &app,
        reqwest::Method::PATCH,
        &format!("/v1/renewals/{id}"),
        &json!({"end_date": "2026-06-01"}),
    )
    .await;
    assert_eq!(status, 422, "an edit is checked against the stored start");
    app.stop().await;
}

async fn a_renewal_opportunity_opens_once_within_the_notice_period(backend: Backend) {
    let app = spawn_app_with_config(backend, |config| {
        config.service.evaluate_every_secs = 1;
        config.service.renewal_notice_days = 60;
    })
    .await;
    let account = seed(
        &app,
        RecordKind::Account,
        json!({"name": "Renew Co", "owner_id": "u-am"}),
    )
    .await;
    let today = Utc::now().date_naive();
    let (status, soon) = post(
        &app,
        "/v1/renewals",
        json!({"account_id": account, "contract_name": "Support 2026",
               "start_date": (today - chrono::Duration::days(300)).to_string(),
               "end_date": (today + chrono::Duration::days(30)).to_string(),
               "value": "1000.00", "currency": "EUR"}),
    )
    .await;
    assert_eq!(status, 201, "{soon}");
    let soon = soon["id"].as_str().unwrap().to_owned();
    let (_, later) = post(
        &app,
        "/v1/renewals",
        json!({"account_id": account, "contract_name": "Far off",
               "start_date": today.to_string(),
               "end_date": (today + chrono::Duration::days(300)).to_string()}),
    )
    .await;
    let later = later["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    let opportunity = loop {
        let (_, record) = app.get_json(&format!("/v1/renewals/{soon}")).await;
        if let Some(id) = record["fields"]["renewal_opportunity_id"].as_str() {
            break id.to_owned();
        }
        assert!(Instant::now() < deadline, "no renewal opportunity");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, list) = app
        .get_json(&format!("/v1/opportunities?account_id={account}"))
        .await;
    let opportunities = list["items"].as_array().unwrap();
    assert_eq!(opportunities.len(), 1, "once: {list}");
    let opp = &opportunities[0]["fields"];
    assert_eq!(opportunities[0]["id"], opportunity.as_str());
    assert_eq!(opp["owner_id"], "u-am");
    assert_eq!(opp["amount"], "1000.00");
    let (_, far) = app.get_json(&format!("/v1/renewals/{later}")).await;
    assert!(
        far["fields"]["renewal_opportunity_id"].is_null(),
        "outside the notice period"
    );
    let tasks = of_type(&timeline(&app, "accounts", &account).await, "task")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(tasks.len(), 1);
    assert_eq!(
        tasks[0]["fields"]["owner_id"], "u-am",
        "the owner is reminded"
    );

    let (status, renewed) = post(
        &app,
        &format!("/v1/renewals/{soon}/status"),
        json!({"status": "renewed"}),
    )
    .await;
    assert_eq!(status, 200, "{renewed}");
    assert_eq!(renewed["fields"]["status"], "renewed");
    let (_, opp) = app
        .get_json(&format!("/v1/opportunities/{opportunity}"))
        .await;
    assert_eq!(opp["fields"]["stage"], "closed_won");
    let (status, _) = post(
        &app,
        &format!("/v1/renewals/{soon}/status"),
        json!({"status": "lapsed"}),
    )
    .await;
    assert_eq!(status, 409, "already renewed");
    app.stop().await;
}

async fn an_expansion_rule_opens_one_opportunity_per_account(backend: Backend) {
    let app = spawn_app_with_config(backend, |config| {
        config.service.expansion_rules = vec![ExpansionRule {
            name: "analytics-for-big-crm".into(),
            has_products: vec!["CRM".into()],
            lacks_products: vec!["Analytics".into()],
            usage: vec![UsageCondition {
                field: "seats".into(),
                op: ">".into(),
                value: 50.0,
            }],
            min_open_tickets: None,
            max_open_tickets: None,
            offer: Some("Analytics".into()),
            amount: Some("2400.00".into()),
        }];
    })
    .await;
    let fits = seed(
        &app,
        RecordKind::Account,
        json!({"name": "Big", "owner_id": "u-big",
               "custom": {"products": ["CRM"], "usage": {"seats": 80}}}),
    )
    .await;
    let has_both = seed(
        &app,
        RecordKind::Account,
        json!({"name": "Both", "custom": {"products": ["CRM", "analytics"], "usage": {"seats": 80}}}),
    )
    .await;
    let small = seed(
        &app,
        RecordKind::Account,
        json!({"name": "Small", "custom": {"products": ["CRM"], "usage": {"seats": 50}}}),
    )
    .await;
    let (status, first) = post(&app, &format!("/v1/accounts/{fits}/expansion"), json!({})).await;
    assert_eq!(status, 200, "{first}");
    // The background evaluator may pass over the account before this call does (its
    // first pass can start late on a busy machine); either way the rule opens one.
    let items = timeline(&app, "accounts", &fits).await;
    let expansions = of_type(&items, "expansion");
    assert_eq!(expansions.len(), 1, "{items:?}");
    let id = expansions[0]["fields"]["opportunity_id"]
        .as_str()
        .expect("the opportunity opened")
        .to_owned();
    if let Some(opened) = first["opened"][0].as_str() {
        assert_eq!(opened, id);
    }
    let (_, again) = post(&app, &format!("/v1/accounts/{fits}/expansion"), json!({})).await;
    assert_eq!(again["opened"], json!([]), "once per rule and account");
    for other in [&has_both, &small] {
        let (_, none) = post(&app, &format!("/v1/accounts/{other}/expansion"), json!({})).await;
        assert_eq!(none["opened"], json!([]));
    }
    let (_, opp) = app.get_json(&format!("/v1/opportunities/{id}")).await;
    assert_eq!(opp["fields"]["owner_id"], "u-big", "the account owner's");
    assert_eq!(
        opp["fields"]["custom"]["expansion_rule"],
        "analytics-for-big-crm"
    );
    assert_eq!(opp["fields"]["amount"], "2400.00");
    let items = timeline(&app, "accounts", &fits).await;
    assert_eq!(of_type(&items, "expansion").len(), 1);
    app.stop().await;
}

fn mail(
    from: &str,
    subject: &str,
    message_id: &str,
    in_reply_to: Option<&str>,
    body: &str,
) -> Vec<u8> {
    let threading = in_reply_to
        .map(|parent| format!("In-Reply-To: {parent}\r\nReferences: {parent}\r\n"))
        .unwrap_or_default();
    format!(
        "From: {from}\r\nTo: support@service.example\r\nSubject: {subject}\r\n\
         Date: Tue, 24 Nov 2026 10:00:00 +0000\r\nMessage-ID: {message_id}\r\n{threading}\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

async fn settled(app: &TestApp) -> i64 {
    let depth = app.store.inbox_depth().await.expect("inbox depth");
    depth.done + depth.failed
}

async fn support_mail_opens_a_ticket_and_replies_thread_onto_it(backend: Backend) {
    let Some(dovecot) = start_dovecot(module_path!()).await else {
        return;
    };
    let password_env = format!(
        "LEADGATE_TEST_SUPPORT_MAILBOX_PASSWORD_{}",
        if backend == Backend::Sqlite {
            "SQLITE"
        } else {
            "PG"
        }
    );
    // SAFETY: set once, before the app (the only reader) starts; no other test uses the name.
    unsafe { std::env::set_var(&password_env, PASSWORD) };
    let mut mailbox = dovecot.mailbox(&password_env);
    mailbox.name = "support".into();
    mailbox.mapping = Some("support_email".into());
    let app = spawn_app_with_config(backend, |config| {
        config.mailboxes = vec![mailbox];
    })
    .await;
    let account = seed(&app, RecordKind::Account, json!({"name": "Acme"})).await;
    let contact = seed(
        &app,
        RecordKind::Contact,
        json!({"email": "kim@acme.example", "account_id": account}),
    )
    .await;

    dovecot
        .append(&mail(
            "Kim <Kim@acme.example>",
            "Printer on fire",
            "<m1@acme.example>",
            None,
            "Smoke everywhere",
        ))
        .await;
    eventually("the first message processed", || async {
        settled(&app).await == 1
    })
    .await;
    let tickets = app.store.scan(RecordKind::Ticket, None, 10).await.unwrap();
    assert_eq!(tickets.len(), 1, "one ticket");
    let id = tickets[0].id.clone();
    let fields = &tickets[0].fields;
    assert_eq!(fields["subject"], "Printer on fire");
    assert_eq!(fields["channel"], "email");
    assert_eq!(
        fields["contact_id"],
        contact.as_str(),
        "the sender is a known contact"
    );
    assert_eq!(fields["account_id"], account.as_str());
    assert_eq!(fields["description"], "Smoke everywhere");

    // A reply by In-Reply-To lands on the ticket, not a new one.
    dovecot
        .append(&mail(
            "kim@acme.example",
            "Re: Printer on fire",
            "<m2@acme.example>",
            Some("<m1@acme.example>"),
            "Still smoking",
        ))
        .await;
    eventually("the reply processed", || async { settled(&app).await == 2 }).await;
    assert_eq!(app.store.count(RecordKind::Ticket).await.unwrap(), 1);
    let messages = of_type(&timeline(&app, "tickets", &id).await, "message")
        .into_iter()
        .map(|m| m["fields"]["body"].clone())
        .collect::<Vec<_>>();
    assert_eq!(messages, [json!("Still smoking")]);

    // Waiting for the customer; the [#T-1] token threads a message with no headers.
    assert_eq!(move_to(&app, &id, "pending_customer").await.0, 200);
    dovecot
        .append(&mail(
            "kim@acme.example",
            "[#T-1] the log you asked for",
            "<m3@acme.example>",
            None,
            "log.txt",
        ))
        .await;
    eventually("the token reply processed", || async {
        settled(&app).await == 3
    })
    .await;
    assert_eq!(
        ticket(&app, &id).await["status"],
        "open",
        "the customer's reply resumes it"
    );

    // Closed, then answered: reopened (the default).
    assert_eq!(move_to(&app, &id, "closed").await.0, 200);
    dovecot
        .append(&mail(
            "kim@acme.example",
            "Re: Printer on fire",
            "<m4@acme.example>",
            Some("<m2@acme.example>"),
            "It is back",
        ))
        .await;
    eventually("the late reply processed", || async {
        settled(&app).await == 4
    })
    .await;
    let fields = ticket(&app, &id).await;
    assert_eq!(fields["status"], "open");
    assert_eq!(fields["reopened_count"], 1);
    assert_eq!(app.store.count(RecordKind::Ticket).await.unwrap(), 1);
    assert_eq!(
        app.store.count(RecordKind::Lead).await.unwrap(),
        0,
        "support mail makes no leads"
    );
    app.stop().await;
}

async fn whatsapp_from_a_known_contact_opens_a_ticket_when_configured(backend: Backend) {
    const SECRET: &str = "service-wa-secret";
    let app = spawn_app_with_config(backend, |config| {
        config.whatsapp.app_secret = SECRET.into();
        config.whatsapp.verify_token = "verify".into();
        config.service.whatsapp_tickets = true;
    })
    .await;
    let account = seed(&app, RecordKind::Account, json!({"name": "Acme"})).await;
    let contact = seed(
        &app,
        RecordKind::Contact,
        json!({"phone": "+16315551181", "account_id": account}),
    )
    .await;
    let body = std::fs::read(format!(
        "{}/fixtures/whatsapp/text_message.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture");
    let signature = format!(
        "sha256={}",
        connectors::signature::hmac_sha256_hex(SECRET.as_bytes(), &[&body])
    );
    let response = app
        .client
        .post(format!("{}/v1/webhooks/whatsapp", app.base))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature)
        .body(body)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 200);
    let receipt: Value = response.json().await.unwrap();
    let row = app
        .settled_inbound(receipt["items"][0]["id"].as_str().unwrap())
        .await;
    assert_eq!(row["status"], "done", "{row}");
    assert_eq!(row["result"]["kind"], "tickets", "{row}");
    let id = row["result"]["id"].as_str().unwrap();
    let fields = ticket(&app, id).await;
    assert_eq!(fields["contact_id"], contact.as_str());
    assert_eq!(fields["account_id"], account.as_str());
    assert_eq!(fields["channel"], "whatsapp");
    assert_eq!(fields["description"], "this is a text message");
    assert_eq!(
        app.store.count(RecordKind::Lead).await.unwrap(),
        0,
        "no lead for a customer"
    );
    app.stop().await;
}

async fn as_user(app: &TestApp, token: &str, path: &str, body: Value) -> (u16, Value) {
    let response = app
        .client
        .post(format!("{}{path}", app.base))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn user_token(app: &TestApp, email: &str, role: &str) -> String {
    let (status, user) = post(
        app,
        "/v1/admin/users",
        json!({"email": email, "name": email, "role": role}),
    )
    .await;
    assert_eq!(status, 201, "{user}");
    let id = user["id"].as_str().unwrap();
    let (status, token) = post(
        app,
        &format!("/v1/admin/users/{id}/tokens"),
        json!({"name": "t"}),
    )
    .await;
    assert_eq!(status, 201, "{token}");
    token["token"].as_str().unwrap().to_owned()
}

async fn tickets_are_routed_by_the_rules_and_permission_checked(backend: Backend) {
    let app = spawn_app_with_config(backend, |config| {
        config.service.ticket_assignment_rules = vec![
            serde_json::from_value(json!({"name": "dach-support", "country": ["DE", "AT"],
                                          "source": "ticket:*", "to_user": "agent-de"}))
            .expect("rule"),
        ];
    })
    .await;
    let agent = user_token(&app, "agent@service.example", "support_agent").await;
    let rep = user_token(&app, "rep@service.example", "rep").await;
    let german = seed(
        &app,
        RecordKind::Account,
        json!({"name": "GmbH", "country": "DE"}),
    )
    .await;
    let french = seed(
        &app,
        RecordKind::Account,
        json!({"name": "SARL", "country": "FR"}),
    )
    .await;

    let (status, routed) = as_user(
        &app,
        &agent,
        "/v1/tickets",
        json!({"subject": "Hilfe", "account_id": german}),
    )
    .await;
    assert_eq!(status, 201, "{routed}");
    assert_eq!(routed["fields"]["owner_id"], "agent-de");
    assert_eq!(routed["fields"]["assignment_rule"], "dach-support");
    let id = routed["id"].as_str().unwrap();
    let assignments = of_type(&timeline(&app, "tickets", id).await, "assignment").len();
    assert_eq!(assignments, 1, "the rule that fired is on the timeline");
    let (_, unrouted) = as_user(
        &app,
        &agent,
        "/v1/tickets",
        json!({"subject": "Aide", "account_id": french}),
    )
    .await;
    assert!(
        unrouted["fields"]["owner_id"].is_null(),
        "no rule holds: unassigned"
    );

    let (status, _) = as_user(&app, &rep, "/v1/tickets", json!({"subject": "Nope"})).await;
    assert_eq!(status, 403, "a rep reads tickets, does not open them");
    let (status, _) = as_user(
        &app,
        &rep,
        &format!("/v1/tickets/{id}/status"),
        json!({"status": "open"}),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = as_user(
        &app,
        &agent,
        "/v1/renewals",
        json!({"account_id": german, "start_date": "2026-01-01", "end_date": "2026-12-31"}),
    )
    .await;
    assert_eq!(status, 403, "support agents do not sell contracts");
    let (status, moved) = as_user(
        &app,
        &agent,
        &format!("/v1/tickets/{id}/status"),
        json!({"status": "open"}),
    )
    .await;
    assert_eq!(status, 200, "{moved}");
    let audit = app
        .store
        .audit_of(RecordKind::Ticket, id, 50)
        .await
        .unwrap();
    assert!(
        audit
            .iter()
            .any(|row| row.field.as_deref() == Some("status") && row.actor.starts_with("user:")),
        "the move is audited with who made it"
    );
    app.stop().await;
}
