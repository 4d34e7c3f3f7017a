//! Reads and edits of records: every change goes through the audited write path.

mod common;

use common::{Backend, spawn_app};
use leadgate::domain::RecordKind;
use leadgate::store::{Change, RequestMeta, WriteContext};
use serde_json::{Value, json};

on_both_backends!(
    an_edit_records_each_changed_field_with_who_and_where,
    a_stale_or_invalid_edit_is_refused_whole,
    every_kind_reads_back_what_the_write_path_wrote,
    a_merge_keeps_the_merged_record_in_the_audit_trail,
);

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

async fn patch(
    app: &common::TestApp,
    path: &str,
    body: Value,
    if_match: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .client
        .patch(format!("{}{path}", app.base))
        .bearer_auth(&app.admin_token)
        .header("user-agent", "console/1.0")
        .json(&body);
    if let Some(version) = if_match {
        request = request.header("if-match", version);
    }
    request.send().await.unwrap()
}

async fn an_edit_records_each_changed_field_with_who_and_where(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = seed_lead(
        &app,
        json!({"first_name": "Grace", "email": "grace@navy.example", "score": 5}),
    )
    .await;
    let response = patch(
        &app,
        &format!("/v1/leads/{id}"),
        json!({"email": "grace@cobol.example", "score": 40, "first_name": "Grace", "consent_email": true}),
        Some("\"1\""),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"2\"");
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let lead: Value = response.json().await.unwrap();
    assert_eq!(lead["fields"]["email"], "grace@cobol.example");
    assert_eq!(lead["fields"]["consent_email"], true);

    let (_, audit) = app.get_json(&format!("/v1/leads/{id}/audit")).await;
    let updates: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "update")
        .collect();
    let fields: Vec<&str> = updates
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields.len(),
        3,
        "unchanged first_name is not audited: {fields:?}"
    );
    let email = updates.iter().find(|e| e["field"] == "email").unwrap();
    assert_eq!(email["old_value"], "grace@navy.example");
    assert_eq!(email["new_value"], "grace@cobol.example");
    assert!(email["actor"].as_str().unwrap().starts_with("token:"));
    assert_eq!(email["channel"], "api");
    assert_eq!(email["ip"], "127.0.0.1");
    assert_eq!(email["user_agent"], "console/1.0");
    assert_eq!(email["request_id"], request_id.as_str());
    let score = updates.iter().find(|e| e["field"] == "score").unwrap();
    assert_eq!(
        (score["old_value"].clone(), score["new_value"].clone()),
        (json!(5), json!(40))
    );
    app.stop().await;
}

async fn a_stale_or_invalid_edit_is_refused_whole(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = seed_lead(&app, json!({"email": "x@example.org"})).await;
    let path = format!("/v1/leads/{id}");
    let stale = patch(
        &app,
        &path,
        json!({"email": "y@example.org"}),
        Some("\"7\""),
    )
    .await;
    assert_eq!(stale.status(), 409);
    let unknown = patch(
        &app,
        &path,
        json!({"email": "y@example.org", "shoe_size": 44}),
        None,
    )
    .await;
    assert_eq!(unknown.status(), 422);
    assert!(unknown.text().await.unwrap().contains("shoe_size"));
    let bad_type = patch(
        &app,
        &path,
        json!({"email": "y@example.org", "score": "lots"}),
        None,
    )
    .await;
    assert_eq!(bad_type.status(), 422);
    let missing = patch(
        &app,
        "/v1/leads/no-such-id",
        json!({"email": "y@example.org"}),
        None,
    )
    .await;
    assert_eq!(missing.status(), 404);
    let not_a_kind = patch(&app, &format!("/v1/widgets/{id}"), json!({}), None).await;
    assert_eq!(not_a_kind.status(), 404);
    let (_, lead) = app.get_json(&path).await;
    assert_eq!(lead["fields"]["email"], "x@example.org");
    assert_eq!(lead["version"], 1);
    let (_, audit) = app.get_json(&format!("{path}/audit")).await;
    assert_eq!(
        audit["items"].as_array().unwrap().len(),
        1,
        "only the insert"
    );
    app.stop().await;
}

/// Every field of every kind survives a write and a read on this backend, which also
/// proves the migrations and src/domain/kind.rs agree.
async fn every_kind_reads_back_what_the_write_path_wrote(backend: Backend) {
    use leadgate::domain::FieldType;
    let app = spawn_app(backend).await;
    let ctx = WriteContext::new("test", "test", RequestMeta::default());
    for kind in RecordKind::ALL {
        let mut fields = serde_json::Map::new();
        for def in kind.fields() {
            let value = match def.ty {
                FieldType::Text => json!(format!("{}-text", def.name)),
                FieldType::Integer => json!(42),
                FieldType::Decimal => json!("1234.50"),
                FieldType::Bool => json!(true),
                FieldType::Json => json!({"k": [1, 2]}),
                FieldType::Timestamp => json!("2026-03-04T05:06:07.000000Z"),
                FieldType::Date => json!("2026-03-04"),
            };
            fields.insert(def.name.to_owned(), value);
        }
        let written = app
            .store
            .write(
                &ctx,
                vec![Change::Insert {
                    kind: *kind,
                    id: None,
                    fields: fields.clone(),
                }],
            )
            .await
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        let record = app.store.get(*kind, &written[0].id).await.unwrap().unwrap();
        for def in kind.fields().iter().filter(|d| !d.secret) {
            assert_eq!(
                record.fields[def.name], fields[def.name],
                "{kind}.{}",
                def.name
            );
        }
        let audit = app.store.audit_of(*kind, &written[0].id, 10).await.unwrap();
        for def in kind.fields().iter().filter(|d| d.secret) {
            assert_eq!(
                audit[0].new_value[def.name], "[redacted]",
                "{kind}.{}",
                def.name
            );
        }
    }
    app.stop().await;
}

async fn a_merge_keeps_the_merged_record_in_the_audit_trail(backend: Backend) {
    let app = spawn_app(backend).await;
    let survivor = seed_lead(&app, json!({"email": "kim@example.org", "phone": null})).await;
    let merged = seed_lead(
        &app,
        json!({"email": "kim@example.org", "phone": "+15551234567"}),
    )
    .await;
    let ctx = WriteContext::new("pipeline:dedup", "pipeline", RequestMeta::default());
    let Value::Object(fields) = json!({"phone": "+15551234567"}) else {
        unreachable!()
    };
    app.store
        .write(
            &ctx,
            vec![Change::Merge {
                kind: RecordKind::Lead,
                survivor: survivor.clone(),
                merged: merged.clone(),
                fields,
            }],
        )
        .await
        .unwrap();
    assert!(
        app.store
            .get(RecordKind::Lead, &merged)
            .await
            .unwrap()
            .is_none()
    );
    let kept = app
        .store
        .get(RecordKind::Lead, &survivor)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.fields["phone"], "+15551234567");
    let (_, trail) = app.get_json(&format!("/v1/leads/{merged}/audit")).await;
    let last = trail["items"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["action"], "merged_into");
    assert_eq!(last["new_value"], survivor.as_str());
    assert_eq!(last["old_value"]["phone"], "+15551234567");
    assert_eq!(last["actor"], "pipeline:dedup");
    app.stop().await;
}

on_both_backends!(a_lead_converts_once_into_account_contact_and_opportunity);

async fn a_lead_converts_once_into_account_contact_and_opportunity(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = seed_lead(
        &app,
        json!({"first_name": "Hedy", "last_name": "Lamarr", "email": "hedy@spread.example",
               "company": "Spread Spectrum Inc", "owner_id": "u-1"}),
    )
    .await;
    let convert = |body: Option<Value>| {
        let mut request = app
            .client
            .post(format!("{}/v1/leads/{id}/convert", app.base))
            .bearer_auth(&app.admin_token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send()
    };
    let bad = convert(Some(json!({"amount": 5, "colour": "red"})))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let response = convert(Some(json!({"amount": "12500.00", "currency": "EUR"})))
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let converted: Value = response.json().await.unwrap();
    let (_, account) = app
        .get_json(&format!(
            "/v1/accounts/{}",
            converted["account_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(account["fields"]["name"], "Spread Spectrum Inc");
    let (_, contact) = app
        .get_json(&format!(
            "/v1/contacts/{}",
            converted["contact_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(contact["fields"]["email"], "hedy@spread.example");
    assert_eq!(contact["fields"]["owner_id"], "u-1");
    let (_, opportunity) = app
        .get_json(&format!(
            "/v1/opportunities/{}",
            converted["opportunity_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(opportunity["fields"]["amount"], "12500.00");
    assert_eq!(opportunity["fields"]["lead_id"], id.as_str());
    let (_, lead) = app.get_json(&format!("/v1/leads/{id}")).await;
    assert_eq!(lead["fields"]["status"], "converted");
    assert_eq!(lead["fields"]["contact_id"], converted["contact_id"]);
    let (_, timeline) = app.get_json(&format!("/v1/leads/{id}/timeline")).await;
    assert_eq!(
        timeline["items"][0]["fields"]["activity_type"],
        "conversion"
    );
    let again = convert(None).await.unwrap();
    assert_eq!(again.status(), 409);
    let missing = app
        .client
        .post(format!("{}/v1/leads/nope/convert", app.base))
        .bearer_auth(&app.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    app.stop().await;
}

on_both_backends!(answering_bant_qualifies_a_lead_and_says_so_on_its_timeline);

async fn answering_bant_qualifies_a_lead_and_says_so_on_its_timeline(backend: Backend) {
    let app = spawn_app(backend).await;
    let id = seed_lead(
        &app,
        json!({"email": "buyer@bank.example", "budget": "200k"}),
    )
    .await;
    let path = format!("/v1/leads/{id}");
    let partial = patch(&app, &path, json!({"authority": "CFO signs"}), None).await;
    assert_eq!(partial.status(), 200);
    let lead: Value = partial.json().await.unwrap();
    assert_eq!(
        lead["fields"]["qualified"],
        Value::Null,
        "two of four answers"
    );
    let complete = patch(
        &app,
        &path,
        json!({"need": "fraud losses", "timeline": "this quarter"}),
        None,
    )
    .await;
    let lead: Value = complete.json().await.unwrap();
    assert_eq!(lead["fields"]["qualified"], true);
    assert!(lead["fields"]["qualified_at"].is_string());
    let (_, timeline) = app.get_json(&format!("{path}/timeline")).await;
    assert_eq!(
        timeline["items"][0]["fields"]["activity_type"],
        "qualification"
    );
    assert_eq!(timeline["items"][0]["fields"]["subject"], "Qualified");
    let (_, audit) = app.get_json(&format!("{path}/audit")).await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["field"] == "qualified" && e["new_value"] == true)
    );
    app.stop().await;
}
