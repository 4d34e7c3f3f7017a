//! The partner endpoint end to end: accepted durably, processed once, audited.

mod common;

use common::{Backend, spawn_app};
use serde_json::{Value, json};

on_both_backends!(
    a_partner_lead_becomes_a_lead_with_timeline_and_audit,
    a_replayed_external_id_is_answered_alike_and_processed_once,
    an_idempotency_key_replays_and_refuses_a_different_body,
    a_batch_is_accepted_item_by_item,
    bad_requests_get_problem_details_and_write_nothing,
    a_failed_row_keeps_its_error_and_can_be_retried,
    waiting_answers_each_items_outcome_and_record,
);

async fn a_partner_lead_becomes_a_lead_with_timeline_and_audit(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.partner_token("acme").await;
    let response = app
        .client
        .post(format!("{}/v1/partner/leads", app.base))
        .bearer_auth(&key)
        .header("user-agent", "acme-sync/2.1")
        .header("x-request-id", "req-partner-1")
        .json(
            &json!({"first_name": "Ada", "last_name": "Lovelace", "email": "ada@analytical.example",
                       "phone": "+44 20 7946 0958", "loyalty_tier": "gold"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["x-request-id"], "req-partner-1");
    let receipt: Value = response.json().await.unwrap();
    let inbound = app.settled_inbound(receipt["id"].as_str().unwrap()).await;
    assert_eq!(inbound["status"], "done", "{inbound}");
    let lead_id = inbound["result"]["id"].as_str().unwrap().to_owned();

    let (status, lead) = app.get_json(&format!("/v1/leads/{lead_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(lead["fields"]["email"], "ada@analytical.example");
    assert_eq!(lead["fields"]["source"], "partner:acme");
    assert_eq!(
        lead["fields"]["custom"]["loyalty_tier"], "gold",
        "unknown fields are kept"
    );

    let (_, timeline) = app.get_json(&format!("/v1/leads/{lead_id}/timeline")).await;
    let items: Vec<&Value> = timeline["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["fields"]["activity_type"] == "inbound")
        .collect();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["fields"]["inbound_id"], receipt["id"]);

    let (_, audit) = app.get_json(&format!("/v1/leads/{lead_id}/audit")).await;
    let entry = &audit["items"][0];
    assert_eq!(entry["action"], "insert");
    assert_eq!(entry["actor"], "partner:acme");
    assert_eq!(entry["ip"], "127.0.0.1");
    assert_eq!(entry["user_agent"], "acme-sync/2.1");
    assert_eq!(entry["request_id"], "req-partner-1");
    assert_eq!(entry["new_value"]["last_name"], "Lovelace");
    app.stop().await;
}

async fn a_replayed_external_id_is_answered_alike_and_processed_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.partner_token("acme").await;
    let lead = json!({"external_id": "crm-77", "email": "bo@example.org"});
    let first = app.post_json(&key, "/v1/partner/leads", &lead).await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let second = app.post_json(&key, "/v1/partner/leads", &lead).await;
    assert_eq!(second.status(), 202);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let second: Value = second.json().await.unwrap();
    assert_eq!(first, second);
    app.settled_inbound(first["id"].as_str().unwrap()).await;
    // Another partner's id space is its own.
    let other = app.partner_token("globex").await;
    let third: Value = app
        .post_json(&other, "/v1/partner/leads", &lead)
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(third["id"], first["id"]);
    app.settled_inbound(third["id"].as_str().unwrap()).await;
    assert_eq!(
        app.store
            .count(leadgate::domain::RecordKind::Lead)
            .await
            .unwrap(),
        2
    );
    app.stop().await;
}

async fn an_idempotency_key_replays_and_refuses_a_different_body(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.partner_token("acme").await;
    let send = |body: Value| {
        app.client
            .post(format!("{}/v1/partner/leads", app.base))
            .bearer_auth(&key)
            .header("idempotency-key", "batch-2026-11-24")
            .json(&body)
            .send()
    };
    let body = json!([{"email": "a@example.org"}, {"email": "b@example.org"}]);
    let first = send(body.clone()).await.unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let again = send(body).await.unwrap();
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    let conflict = send(json!([{"email": "c@example.org"}])).await.unwrap();
    assert_eq!(conflict.status(), 409);
    assert_eq!(
        conflict.headers()["content-type"],
        "application/problem+json"
    );
    for item in first["items"].as_array().unwrap() {
        app.settled_inbound(item["id"].as_str().unwrap()).await;
    }
    assert_eq!(
        app.store
            .count(leadgate::domain::RecordKind::Lead)
            .await
            .unwrap(),
        2
    );
    app.stop().await;
}

async fn a_batch_is_accepted_item_by_item(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.partner_token("acme").await;
    let batch: Vec<Value> = (0..50)
        .map(|n| json!({"email": format!("p{n}@example.org"), "external_id": format!("e{n}")}))
        .collect();
    let response = app
        .post_json(&key, "/v1/partner/leads", &Value::Array(batch))
        .await;
    assert_eq!(response.status(), 202);
    let receipt: Value = response.json().await.unwrap();
    let items = receipt["items"].as_array().unwrap();
    assert_eq!(items.len(), 50);
    assert_eq!(items[7]["external_id"], "e7");
    app.settled_inbound(items[49]["id"].as_str().unwrap()).await;
    app.settled_inbound(items[0]["id"].as_str().unwrap()).await;

    let too_many: Vec<Value> = (0..1001)
        .map(|n| json!({"email": format!("x{n}@e.org")}))
        .collect();
    let mut config_limit_app_body = Value::Array(too_many);
    // 1,001 small leads fit in the body limit; the batch limit refuses them.
    let response = app
        .client
        .post(format!("{}/v1/partner/leads", app.base))
        .bearer_auth(&key)
        .json(&config_limit_app_body.take())
        .send()
        .await
        .unwrap();
    assert!(
        matches!(response.status().as_u16(), 413 | 422),
        "{}",
        response.status()
    );
    app.stop().await;
}

async fn bad_requests_get_problem_details_and_write_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.partner_token("acme").await;
    let url = format!("{}/v1/partner/leads", app.base);
    let raw = |body: &'static str, content_type: &'static str, token: Option<&str>| {
        let mut request = app
            .client
            .post(&url)
            .header("content-type", content_type)
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let cases = [
        (
            raw("{\"email\": ", "application/json", Some(&key))
                .await
                .unwrap(),
            400,
            "line 1",
        ),
        (
            raw(
                "email=a@b.c",
                "application/x-www-form-urlencoded",
                Some(&key),
            )
            .await
            .unwrap(),
            415,
            "application/json",
        ),
        (
            raw("{\"email\":\"a@b.c\"}", "application/json", None)
                .await
                .unwrap(),
            401,
            "credentials",
        ),
        (
            raw(
                "{\"email\":\"a@b.c\"}",
                "application/json",
                Some("lg_wrong"),
            )
            .await
            .unwrap(),
            401,
            "credentials",
        ),
        (
            raw(
                "{\"email\":\"a@b.c\"}",
                "application/json",
                Some(&app.admin_token),
            )
            .await
            .unwrap(),
            403,
            "partner",
        ),
        (
            raw("42", "application/json", Some(&key)).await.unwrap(),
            400,
            "object",
        ),
        (
            raw("[1, 2]", "application/json", Some(&key)).await.unwrap(),
            400,
            "item 0",
        ),
        (
            raw("{}", "application/json", Some(&key)).await.unwrap(),
            422,
            "no fields",
        ),
        (
            raw("[]", "application/json", Some(&key)).await.unwrap(),
            422,
            "1 to 1000",
        ),
    ];
    for (response, status, detail) in cases {
        assert_eq!(response.status().as_u16(), status);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["status"], status);
        assert!(
            problem["detail"].as_str().unwrap().contains(detail),
            "{problem}"
        );
    }
    let oversize = format!(
        "{{\"email\":\"a@b.c\",\"pad\":\"{}\"}}",
        "x".repeat(70 * 1024)
    );
    let response = app
        .client
        .post(&url)
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(oversize)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let depth = app.store.inbox_depth().await.unwrap();
    assert_eq!(
        depth.pending + depth.processing + depth.done + depth.failed,
        0
    );
    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("leadgate_inbound_rejected_total{channel=\"auth\",reason=\"invalid\"} 1"),
        "{metrics}"
    );
    app.stop().await;
}

async fn a_failed_row_keeps_its_error_and_can_be_retried(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.partner_token("acme").await;
    let receipt: Value = app
        .post_json(&key, "/v1/partner/leads", &json!({"note": "call me"}))
        .await
        .json()
        .await
        .unwrap();
    let id = receipt["id"].as_str().unwrap();
    let row = app.settled_inbound(id).await;
    assert_eq!(row["status"], "failed");
    assert!(
        row["error"].as_str().unwrap().contains("identifying"),
        "{row}"
    );
    assert_eq!(row["attempts"], 1);
    let (_, failed) = app.get_json("/v1/inbound?status=failed").await;
    assert_eq!(failed["items"][0]["id"], id);

    let retry = app
        .client
        .post(format!("{}/v1/inbound/{id}/retry", app.base))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 202);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, row) = app.get_json(&format!("/v1/inbound/{id}")).await;
        if row["attempts"] == 2 && row["status"] == "failed" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{row}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let again = app
        .client
        .post(format!("{}/v1/inbound/{}/retry", app.base, "no-such-row"))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
    app.stop().await;
}

async fn waiting_answers_each_items_outcome_and_record(backend: Backend) {
    let app = spawn_app(backend).await;
    let key = app.partner_token("acme").await;
    let ada = json!({"first_name": "Ada", "last_name": "Lovelace",
                     "email": "ada@analytical.example", "phone": "+44 20 7946 0958"});

    // One lead, waited for: its outcome and the lead it became, with 200.
    let response = app
        .post_json(&key, "/v1/partner/leads?wait=true", &ada)
        .await;
    assert_eq!(response.status(), 200);
    let first: Value = response.json().await.unwrap();
    assert_eq!(first["outcome"], "created", "{first}");
    let lead_id = first["record_id"].as_str().expect("record id").to_owned();
    let (status, lead) = app.get_json(&format!("/v1/leads/{lead_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(lead["fields"]["email"], "ada@analytical.example");

    // A batch: the same person again (merged into that lead), one with nothing that
    // identifies a person (rejected, with the reason), and a new person (created).
    let batch = json!([
        {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@analytical.example",
         "title": "Countess"},
        {"notes": "call me maybe"},
        {"first_name": "Grace", "last_name": "Hopper", "email": "grace@navy.example"},
    ]);
    let response = app
        .post_json(&key, "/v1/partner/leads?wait=true", &batch)
        .await;
    assert_eq!(response.status(), 200);
    let results: Value = response.json().await.unwrap();
    assert_eq!(results["complete"], true, "{results}");
    let items = results["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0]["outcome"], "merged", "{results}");
    assert_eq!(items[0]["record_id"], lead_id.as_str());
    assert_eq!(items[1]["outcome"], "rejected", "{results}");
    assert!(
        items[1]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no identifying field")),
        "{results}"
    );
    assert_eq!(items[1]["record_id"], Value::Null);
    assert_eq!(items[2]["outcome"], "created");
    assert_ne!(items[2]["record_id"], lead_id.as_str());

    // The status endpoint reports the same outcome for each item.
    for item in items {
        let response = app
            .client
            .get(format!(
                "{}/v1/partner/leads/{}",
                app.base,
                item["id"].as_str().unwrap()
            ))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let status: Value = response.json().await.unwrap();
        assert_eq!(status["outcome"], item["outcome"], "{status}");
        assert_eq!(status["record_id"], item["record_id"]);
        assert_eq!(status["reason"], item["reason"]);
    }

    // Without waiting: 202 and inbound ids only, at once.
    let response = app
        .post_json(
            &key,
            "/v1/partner/leads",
            &json!([{"email": "lin@example.org"}]),
        )
        .await;
    assert_eq!(response.status(), 202);
    let receipt: Value = response.json().await.unwrap();
    assert!(receipt["items"][0]["id"].is_string());
    assert!(receipt["items"][0].get("outcome").is_none());

    let response = app
        .post_json(&key, "/v1/partner/leads?wait=soon", &ada)
        .await;
    assert_eq!(response.status(), 400);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_has_its_own_mapping_rate_limit_and_scopes() {
    let app = common::spawn_app_with_config(Backend::Sqlite, |config| {
        config.partners.insert(
            "globex".into(),
            leadgate::config::PartnerSection {
                mapping: Some("form".into()),
                rate_limit_per_minute: 3,
                scopes: vec!["submit".into()],
            },
        );
    })
    .await;
    let globex = app.partner_token("globex").await;
    let acme = app.partner_token("acme").await;
    // Globex sends its own field names; its mapping reads them.
    let response = app
        .post_json(
            &globex,
            "/v1/partner/leads",
            &json!({"firstname": "Ada", "surname": "Lovelace", "email": "ada@globex.example"}),
        )
        .await;
    assert_eq!(response.status(), 202);
    let receipt: Value = response.json().await.unwrap();
    let row = app.settled_inbound(receipt["id"].as_str().unwrap()).await;
    let (_, lead) = app
        .get_json(&format!(
            "/v1/leads/{}",
            row["result"]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(lead["fields"]["first_name"], "Ada", "{lead}");
    assert_eq!(lead["fields"]["last_name"], "Lovelace");
    // No `status` scope: it may not read submissions back.
    let status = app
        .client
        .get(format!(
            "{}/v1/partner/leads/{}",
            app.base,
            receipt["id"].as_str().unwrap()
        ))
        .bearer_auth(&globex)
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 403);
    // Three requests a minute: the fourth waits; another partner is not held up.
    for n in 0..2 {
        let lead = json!({"email": format!("n{n}@globex.example")});
        assert_eq!(
            app.post_json(&globex, "/v1/partner/leads", &lead)
                .await
                .status(),
            202
        );
    }
    let limited = app
        .post_json(
            &globex,
            "/v1/partner/leads",
            &json!({"email": "x@globex.example"}),
        )
        .await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    let other = app
        .post_json(
            &acme,
            "/v1/partner/leads",
            &json!({"email": "y@acme.example"}),
        )
        .await;
    assert_eq!(other.status(), 202);
    // The generic records API is not a side door around the partner pipeline.
    let direct = app
        .post_json(&acme, "/v1/leads", &json!({"email": "z@acme.example"}))
        .await;
    assert_eq!(direct.status(), 403);
    app.stop().await;
}
